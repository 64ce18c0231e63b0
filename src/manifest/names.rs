//! The rules for names the manifest hands to Docker and the replicas: replica, cluster and network
//! names, and image references.

/// The rule that [`is_valid_name`] checks, for error messages.
pub const NAME_RULE: &str = "[a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 63 characters";

/// True if `name` is a valid replica (container) name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 63
/// characters.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// True if `image` looks like a Docker image reference (`name[:tag][@digest]`, lowercase path
/// components, an optional registry host with a port): enough to refuse obvious mistakes and
/// anything with spaces or shell characters.
pub fn is_valid_image(image: &str) -> bool {
    let (name, digest) = image.split_once('@').map_or((image, None), |(n, d)| (n, Some(d)));
    let (path, tag) = match name.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, Some(t)),
        _ => (name, None),
    };
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.len() <= 128
            && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    });
    let digest_ok =
        digest.is_none_or(|d| d.split_once(':').is_some_and(|(a, h)| !a.is_empty() && !h.is_empty()));
    let mut parts = path.split('/').peekable();
    let mut path_ok = !path.is_empty();
    let mut first = true;
    while let Some(part) = parts.next() {
        let is_registry = first
            && parts.peek().is_some()
            && (part.contains('.') || part.contains(':') || part == "localhost");
        let allowed = |c: char| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, '_' | '.' | '-')
                || (is_registry && (c == ':' || c.is_ascii_uppercase()))
        };
        path_ok &= !part.is_empty() && part.chars().all(allowed);
        first = false;
    }
    path_ok && tag_ok && digest_ok && image.len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_container_name_rule() {
        assert!(is_valid_name("server1"));
        assert!(is_valid_name("S5.a_b-c"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("-x"));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name(&"a".repeat(64)));
        assert!(is_valid_name(&"a".repeat(63)));
    }

    #[test]
    fn image_references_are_checked() {
        for ok in [
            "ringlb:latest",
            "ringlb",
            "registry.local:5000/team/ringlb:v1.2",
            "a/b@sha256:abc",
            "x_y.z-1:T_1",
        ] {
            assert!(is_valid_image(ok), "{ok}");
        }
        for bad in ["", "Ringlb", "ringlb:", "ring lb", "ringlb;rm -rf /", "a//b", ":tag", "a@", "a:b:c"] {
            assert!(!is_valid_image(bad), "{bad}");
        }
    }
}
