//! `replica.resources`: the CPU and memory limits of a replica's container, with memory sizes as
//! people write them (`64MiB`, `1GiB`, `512Mi`).

use serde::{Deserialize, Deserializer, de};
use std::fmt;

/// Limits passed to Docker's host config and to Swarm's task resources; unset means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// CPUs the replica may use, a decimal (`0.5` is half a core).
    pub cpus: Option<f64>,
    /// Memory the replica may use, with a unit.
    pub memory: Option<ByteSize>,
}

impl Resources {
    /// True when neither limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.cpus.is_none() && self.memory.is_none()
    }

    /// `cpus` in the engine's unit: billionths of a CPU.
    pub fn nano_cpus(&self) -> Option<i64> {
        // Validation keeps cpus within (0, 1024]; the cast cannot overflow.
        self.cpus.map(|cpus| (cpus * 1e9).round() as i64)
    }

    /// `memory` in bytes, as the engine takes it.
    pub fn memory_bytes(&self) -> Option<i64> {
        self.memory.map(|m| i64::try_from(m.0).unwrap_or(i64::MAX))
    }
}

/// A number of bytes that deserialises from `<number><unit>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// Why a text is not a size.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    /// No unit, or one this parser does not know.
    #[error("expected a size with a unit like 64MiB, 512Mi or 1GiB, found {text:?}")]
    NotASize {
        /// The text, without surrounding blanks.
        text: String,
    },
    /// More than an engine could take.
    #[error("size {text:?} is too large")]
    TooLarge {
        /// The text, without surrounding blanks.
        text: String,
    },
}

/// The units a size may have, with their factor. Binary units only, with the short forms
/// Kubernetes users write; `B` for plain bytes.
const UNITS: [(&str, u64); 7] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("Ki", 1 << 10),
    ("MiB", 1 << 20),
    ("Mi", 1 << 20),
    ("GiB", 1 << 30),
    ("Gi", 1 << 30),
];

/// Parses `<number><unit>`; the number may have a fraction (`1.5GiB`).
///
/// # Errors
/// [`ByteSizeError`], saying what was expected, for the manifest error.
pub fn parse(text: &str) -> Result<ByteSize, ByteSizeError> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected = || ByteSizeError::NotASize { text: text.to_owned() };
    let value: f64 = number.parse().map_err(|_| expected())?;
    let factor = UNITS.iter().find(|(name, _)| *name == unit.trim()).map(|(_, f)| *f).ok_or_else(expected)?;
    let bytes = value * factor as f64;
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        return Err(ByteSizeError::TooLarge { text: text.to_owned() });
    }
    Ok(ByteSize(bytes.round() as u64))
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like 64MiB or 1GiB")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Err(E::custom(format!("a size needs a unit: write {v}MiB, {v}GiB or {v}B")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                Err(E::custom(format!("a size needs a unit: write {v}MiB, {v}GiB or {v}B")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
                Err(E::custom(format!("a size needs a unit: write {v}GiB")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_units_long_and_short() {
        assert_eq!(parse("64MiB").unwrap(), ByteSize(64 << 20));
        assert_eq!(parse("64Mi").unwrap(), ByteSize(64 << 20));
        assert_eq!(parse("1GiB").unwrap(), ByteSize(1 << 30));
        assert_eq!(parse("1.5Gi").unwrap(), ByteSize(3 << 29));
        assert_eq!(parse("512KiB").unwrap(), ByteSize(512 << 10));
        assert_eq!(parse("4096B").unwrap(), ByteSize(4096));
    }

    #[test]
    fn a_size_without_a_known_unit_says_what_was_expected() {
        for bad in ["64", "64MB", "lots", "", "-1Mi"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse(" 64 mb ").unwrap_err().to_string(),
            "expected a size with a unit like 64MiB, 512Mi or 1GiB, found \"64 mb\""
        );
        assert!(matches!(parse("99999999999GiB"), Err(ByteSizeError::TooLarge { .. })));
    }

    #[test]
    fn engine_units() {
        let r = Resources { cpus: Some(0.5), memory: Some(ByteSize(64 << 20)) };
        assert_eq!(r.nano_cpus(), Some(500_000_000));
        assert_eq!(r.memory_bytes(), Some(67_108_864));
        assert!(Resources::default().is_unlimited());
    }
}
