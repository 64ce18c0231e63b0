//! The `health:` section: how replicas are checked, and which answers count as healthy.

use super::duration::HumanDuration;
use serde::{Deserialize, Deserializer, de};
use std::fmt;

/// How replicas are checked (defaults in `defaults.rs`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// What a heartbeat is: an HTTP request of `path`, a TCP connect, or a gRPC health check.
    pub kind: HealthKind,
    /// The heartbeat path (`kind: http`).
    pub path: String,
    /// The answers that count as healthy (`kind: http`).
    pub status: StatusSet,
    /// Time between heartbeats.
    pub interval: HumanDuration,
    /// How long a heartbeat may take.
    pub timeout: HumanDuration,
    /// Consecutive failed heartbeats after which a replica that still runs is replaced.
    /// (It leaves the ring at the first failure and comes back at the next success.)
    pub replace_after: u32,
}

/// What a heartbeat is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthKind {
    /// `GET <path>`, healthy when the status is in `status`.
    #[default]
    Http,
    /// A TCP connect to the replica's port, for applications without an HTTP health path.
    Tcp,
    /// The standard gRPC health check (`grpc.health.v1.Health/Check` over h2c, for the whole
    /// server), healthy when the answer is `SERVING`.
    Grpc,
}

/// Sets of HTTP statuses: `200`, `"200-399"`, or a list of either (`[200, "300-302"]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet {
    /// Inclusive ranges, as written.
    ranges: Vec<(u16, u16)>,
}

impl Default for StatusSet {
    /// 200-399: a redirect from a health path (to a login page, say) still means the
    /// application answers.
    fn default() -> Self {
        StatusSet { ranges: vec![(200, 399)] }
    }
}

impl StatusSet {
    /// True when `status` counts as healthy.
    pub fn contains(&self, status: u16) -> bool {
        self.ranges.iter().any(|&(low, high)| (low..=high).contains(&status))
    }

    /// True for the default set.
    pub fn is_default(&self) -> bool {
        *self == StatusSet::default()
    }

    /// Parses `200`, `200-399`, or a comma-separated list of those (the form
    /// [`Display`](fmt::Display) writes, for `ringlb probe --status`).
    ///
    /// # Errors
    /// A message saying what was expected.
    pub fn parse(text: &str) -> Result<StatusSet, String> {
        let ranges = text.split(',').map(parse_range).collect::<Result<Vec<_>, _>>()?;
        Ok(StatusSet { ranges })
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (low, high)) in self.ranges.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if low == high { write!(f, "{sep}{low}")? } else { write!(f, "{sep}{low}-{high}")? }
        }
        Ok(())
    }
}

/// One status (`204`) or range (`200-399`) of statuses 100-599.
fn parse_range(text: &str) -> Result<(u16, u16), String> {
    let expected = || format!("expected a status like 200 or a range like 200-399, found {:?}", text.trim());
    let status = |t: &str| t.trim().parse::<u16>().ok().filter(|s| (100..=599).contains(s));
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (status(low).ok_or_else(expected)?, status(high).ok_or_else(expected)?),
        None => {
            let one = status(text).ok_or_else(expected)?;
            (one, one)
        }
    };
    if low > high {
        return Err(format!("the range {low}-{high} is empty: write the lower status first"));
    }
    Ok((low, high))
}

impl<'de> Deserialize<'de> for StatusSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = StatusSet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status like 200, a range like 200-399, or a list of them")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusSet, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusSet, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusSet, E> {
                parse_range(v).map(|r| StatusSet { ranges: vec![r] }).map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<StatusSet, A::Error> {
                let mut ranges = Vec::new();
                while let Some(one) = seq.next_element::<StatusSet>()? {
                    ranges.extend(one.ranges);
                }
                if ranges.is_empty() {
                    return Err(de::Error::custom("an empty list: no answer would count as healthy"));
                }
                Ok(StatusSet { ranges })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_ranges_and_lists() {
        assert!(StatusSet::default().contains(200) && StatusSet::default().contains(302));
        assert!(!StatusSet::default().contains(404) && !StatusSet::default().contains(199));
        let set = StatusSet::parse("204,300-302").unwrap();
        assert!(set.contains(204) && set.contains(301) && !set.contains(200));
        assert_eq!(set.to_string(), "204,300-302");
        assert_eq!(StatusSet::parse(&set.to_string()).unwrap(), set);
        assert!(StatusSet::parse("399-200").unwrap_err().contains("empty"));
        assert!(StatusSet::parse("2xx").unwrap_err().contains("expected a status"));
        assert!(StatusSet::parse("700").is_err());
    }
}
