//! The paths ringlb answers itself instead of forwarding: the exercise's `/rep`, `/add` and `/rm`,
//! and everything under [`RESERVED_PREFIX`]. A leaf: the listener hands this test to whichever
//! engine serves a connection, so the data path never imports the admin API.

/// Every path of ringlb's own beyond `/rep`, `/add` and `/rm` starts with this; no replica path is
/// ever hidden by anything else.
pub const RESERVED_PREFIX: &str = "/_ringlb/";

/// True for paths the admin router answers; everything else goes to the replicas.
pub fn is_reserved(path: &str) -> bool {
    matches!(path, "/rep" | "/add" | "/rm") || path.starts_with(RESERVED_PREFIX) || path == "/_ringlb"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_paths_are_exactly_the_admin_ones() {
        for p in ["/rep", "/add", "/rm", "/_ringlb/status", "/_ringlb/x"] {
            assert!(is_reserved(p), "{p}");
        }
        for p in ["/", "/home", "/rep/x", "/reps", "/_ringlbx", "/heartbeat"] {
            assert!(!is_reserved(p), "{p}");
        }
    }
}
