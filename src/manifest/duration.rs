//! Durations as people write them in a manifest: `500ms`, `1s`, `2m`, `1h`, `1.5s`.

use serde::{Deserialize, Deserializer, de};
use std::fmt;
use std::time::Duration;

/// A `std::time::Duration` that deserialises from a string with a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// A duration of `ms` milliseconds (for defaults).
    pub const fn from_millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }

    /// A duration of `s` seconds (for defaults).
    pub const fn from_secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }

    /// The wrapped duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) { write!(f, "{}s", ms / 1000) } else { write!(f, "{ms}ms") }
    }
}

/// Why a text is not a duration. The text is what the manifest error shows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not `<number><unit>` with a known unit.
    #[error("expected a duration like 500ms, 1s or 2m, found {text:?}")]
    NotADuration {
        /// The text, without surrounding blanks.
        text: String,
    },
    /// Longer than a year (or not finite).
    #[error("duration {text:?} is too long")]
    TooLong {
        /// The text, without surrounding blanks.
        text: String,
    },
}

/// Parses `<number><unit>` with unit `ms`, `s`, `m` or `h`; the number may have a fraction.
///
/// # Errors
/// [`DurationError`], saying what was expected, for the manifest error.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected = || DurationError::NotADuration { text: text.to_owned() };
    let value: f64 = number.parse().map_err(|_| expected())?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(expected()),
    };
    if !seconds.is_finite() || seconds > 365.0 * 24.0 * 3600.0 {
        return Err(DurationError::TooLong { text: text.to_owned() });
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like 500ms, 1s or 2m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                parse(v).map(HumanDuration).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs a unit: write {v}s or {v}ms")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs a unit: write {v}s or {v}ms")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs a unit: write {v}s")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_units() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        assert!(parse("5").is_err());
        assert!(parse("5 parsecs").is_err());
        assert!(parse("").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("1e400s").is_err());
    }

    #[test]
    fn errors_say_what_was_expected() {
        assert_eq!(
            parse(" 5 parsecs ").unwrap_err().to_string(),
            "expected a duration like 500ms, 1s or 2m, found \"5 parsecs\""
        );
        assert_eq!(parse("9999h").unwrap_err(), DurationError::TooLong { text: "9999h".into() });
        assert_eq!(parse("9999h").unwrap_err().to_string(), "duration \"9999h\" is too long");
    }

    #[test]
    fn displays_whole_seconds_and_milliseconds() {
        assert_eq!(HumanDuration::from_secs(2).to_string(), "2s");
        assert_eq!(HumanDuration::from_millis(250).to_string(), "250ms");
    }
}
