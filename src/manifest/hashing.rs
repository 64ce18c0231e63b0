//! The `hashing:` section: which ring spreads requests over the replicas, and what is hashed.

use crate::ring::maglev::default_table_size;
use crate::ring::{Algorithm, HashFunction, Probing, RingConfig};
use serde::{Deserialize, Deserializer, de};
use std::fmt;

/// What part of a request is hashed to pick its replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeySource {
    /// The `X-Request-Id` header if present, else a random 6-digit id made for the request.
    #[default]
    RequestId,
    /// The client's IP address.
    ClientIp,
    /// The request path (without the query).
    Path,
    /// The value of this header (absent: an empty key).
    Header(http::HeaderName),
}

/// Why a `hashing.key` is not a [`KeySource`]. The text is what the manifest error shows.
#[derive(Debug, thiserror::Error)]
pub enum KeySourceError {
    /// `header:<Name>` with a name that is not a valid HTTP header name.
    #[error("{name:?} is not a valid header name")]
    InvalidHeader {
        /// The name as written after `header:`.
        name: String,
        /// What `http` says is wrong with it.
        #[source]
        source: http::header::InvalidHeaderName,
    },
    /// None of the known keys.
    #[error("unknown key {text:?}: expected request-id, client-ip, path or header:<Name>")]
    Unknown {
        /// The key as written.
        text: String,
    },
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::RequestId => f.write_str("request-id"),
            KeySource::ClientIp => f.write_str("client-ip"),
            KeySource::Path => f.write_str("path"),
            KeySource::Header(name) => write!(f, "header:{name}"),
        }
    }
}

impl std::str::FromStr for KeySource {
    type Err = KeySourceError;
    fn from_str(text: &str) -> Result<Self, KeySourceError> {
        match text {
            "request-id" => Ok(KeySource::RequestId),
            "client-ip" => Ok(KeySource::ClientIp),
            "path" => Ok(KeySource::Path),
            _ => match text.strip_prefix("header:") {
                Some(name) => http::HeaderName::try_from(name.trim())
                    .map(KeySource::Header)
                    .map_err(|source| KeySourceError::InvalidHeader { name: name.to_owned(), source }),
                None => Err(KeySourceError::Unknown { text: text.to_owned() }),
            },
        }
    }
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// How requests are spread over replicas (see DESIGN.md for the exercise's functions; defaults in
/// `defaults.rs`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hashing {
    /// `maglev` (the default) or `ring` (slots and virtual nodes).
    pub algorithm: Algorithm,
    /// ring: M, the number of slots.
    pub slots: u32,
    /// ring: K, virtual nodes per replica.
    pub virtual_nodes: u32,
    /// ring: `assignment` (the exercise's H and Phi) or `xxh3`.
    pub function: HashFunction,
    /// ring: how colliding virtual nodes find a free slot.
    pub probing: Probing,
    /// maglev: the lookup table's size, a prime; unset: 65537, or larger when `limits.max_replicas`
    /// exceeds 65 (see [`crate::ring::maglev::default_table_size`]).
    pub table_size: Option<u32>,
    /// What is hashed.
    pub key: KeySource,
    /// Bounded loads: a replica whose in-flight count would exceed `ceil(factor x mean)` is
    /// skipped for the next candidate (e.g. 1.25); unset: off.
    pub balance_factor: Option<f64>,
}

impl Hashing {
    /// The ring's own configuration, for a cluster of at most `max_replicas`.
    pub fn ring_config(&self, max_replicas: u32) -> RingConfig {
        RingConfig {
            algorithm: self.algorithm,
            slots: self.slots,
            virtual_nodes: self.virtual_nodes,
            function: self.function,
            probing: self.probing,
            table_size: self.table_size.unwrap_or_else(|| default_table_size(max_replicas)),
        }
    }

    /// True when ring ids are the exercise's integer server ids (ring + assignment).
    pub fn uses_assignment_ids(&self) -> bool {
        self.algorithm == Algorithm::Ring && self.function == HashFunction::Assignment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_their_names() {
        assert_eq!("client-ip".parse::<KeySource>().ok(), Some(KeySource::ClientIp));
        assert_eq!(
            "header:X-User".parse::<KeySource>().ok(),
            Some(KeySource::Header(http::HeaderName::from_static("x-user")))
        );
        assert!("header:bad name".parse::<KeySource>().is_err());
        assert!("cookie".parse::<KeySource>().is_err());
    }

    #[test]
    fn key_errors_say_what_was_expected() {
        let message = |text: &str| text.parse::<KeySource>().map(|_| ()).unwrap_err().to_string();
        assert_eq!(message("header: bad name"), "\" bad name\" is not a valid header name");
        assert_eq!(
            message("cookie"),
            "unknown key \"cookie\": expected request-id, client-ip, path or header:<Name>"
        );
        assert!(matches!(
            "header:a b".parse::<KeySource>(),
            Err(KeySourceError::InvalidHeader { ref name, .. }) if name == "a b"
        ));
    }
}
