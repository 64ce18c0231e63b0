//! Which service a request belongs to: the `match:` of each service (a host name, exact or
//! `*.suffix`, and a path prefix) compiled off the request path into a [`RouteTable`] that answers
//! with the index of the service, or none. Pure data, like `ring/`.
//!
//! The most specific match wins, in this order:
//! 1. the host: an exact name before a wildcard, a longer wildcard suffix before a shorter one, and
//!    either before a service with no `host` (which matches every host);
//! 2. then the path: a longer `path_prefix` before a shorter one, and either before no prefix.
//!
//! A request whose most specific host has no route for its path falls through to the next host
//! that has one (a service for `*.example` takes `web.example/other` when the service for
//! `web.example` only matches `/api`). Two routes with the same host pattern and the same prefix
//! would match the very same requests; [`RouteTable::new`] refuses them.
//!
//! Hosts compare without ASCII case, without a `:port` and without a final dot. Paths compare
//! byte for byte as the client sent them, and a prefix ends at a segment: `/api` matches `/api`,
//! `/api/orders` and `/api?x=1`, not `/apiary` (a prefix that ends in `/` matches what is under
//! it).

use std::fmt;

/// The longest host name there is (RFC 1035): longer ones match no route.
const MAX_HOST: usize = 253;

/// The host part of a service's `match:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// One name, lower case.
    Exact(String),
    /// `*.example`: any name under `.example` (kept with its leading dot), at any depth, not
    /// `example` itself.
    Subdomains(String),
}

impl HostPattern {
    /// Parses `web.example` or `*.example`.
    ///
    /// # Errors
    /// The text is not a host name, or a wildcard in another place than the first label.
    pub fn parse(text: &str) -> Result<HostPattern, MatchError> {
        let (wildcard, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        // A request's host is at most MAX_HOST long, and a wildcard's needs a label before it.
        let longest = if wildcard { MAX_HOST - 2 } else { MAX_HOST };
        let labels_ok = !name.is_empty()
            && name.len() <= longest
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !labels_ok {
            return Err(MatchError::Host(text.to_owned()));
        }
        Ok(if wildcard { HostPattern::Subdomains(format!(".{name}")) } else { HostPattern::Exact(name) })
    }

    /// How specific it is: an exact name above any wildcard, a longer wildcard above a shorter.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(_) => (2, 0),
            HostPattern::Subdomains(suffix) => (1, suffix.len()),
        }
    }

    /// Whether `host` (lower case, no port, no final dot) matches.
    fn matches(&self, host: &[u8]) -> bool {
        match self {
            HostPattern::Exact(name) => host == name.as_bytes(),
            HostPattern::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_bytes()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// What a service's `match:` selects: requests to `host` (any host when `None`) whose path starts
/// with `path_prefix` (any path when `None`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Match {
    /// The host the request names.
    pub host: Option<HostPattern>,
    /// The path's first segments; `/` is the same as none.
    pub path_prefix: Option<String>,
}

impl Match {
    /// A match of `host` and `path_prefix`, as the manifest writes them.
    ///
    /// # Errors
    /// The host is not a host name or a `*.` wildcard, or the prefix does not start with `/` or
    /// holds a space, `?` or `#`.
    pub fn new(host: Option<&str>, path_prefix: Option<&str>) -> Result<Match, MatchError> {
        let host = host.map(HostPattern::parse).transpose()?;
        let path_prefix = match path_prefix {
            None | Some("/") => None,
            Some(prefix) => {
                let well_formed = prefix.starts_with('/')
                    && prefix.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
                if !well_formed {
                    return Err(MatchError::PathPrefix(prefix.to_owned()));
                }
                Some(prefix.to_owned())
            }
        };
        Ok(Match { host, path_prefix })
    }

    /// Whether `path` (the request target as sent) starts with the prefix, ending at a segment.
    fn matches_path(&self, path: &[u8]) -> bool {
        let Some(prefix) = &self.path_prefix else { return true };
        let prefix = prefix.as_bytes();
        if !path.starts_with(prefix) {
            return false;
        }
        prefix.ends_with(b"/") || matches!(path.get(prefix.len()), None | Some(b'/' | b'?' | b'#'))
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, &self.path_prefix) {
            (None, None) => f.write_str("every request"),
            (Some(host), None) => write!(f, "host {host}"),
            (None, Some(prefix)) => write!(f, "path prefix {prefix}"),
            (Some(host), Some(prefix)) => write!(f, "host {host} and path prefix {prefix}"),
        }
    }
}

/// A `match:` that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// Not a host name.
    #[error(
        "host {0:?} is not a host name (letters, digits, '-' and '.', or '*.' and a name for its subdomains)"
    )]
    Host(String),
    /// Not a path prefix.
    #[error("path_prefix {0:?} must start with '/' and hold no space, '?' or '#'")]
    PathPrefix(String),
    /// Two routes match the same requests.
    #[error("services {first} and {second} both match {what}; one request can go to one service only")]
    Ambiguous {
        /// The index of the route given first.
        first: usize,
        /// The index of the other.
        second: usize,
        /// What both match.
        what: String,
    },
}

/// The routes of every service, most specific first.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// `(match, service index)`, in the order of the module docs.
    ordered: Vec<(Match, usize)>,
    /// One route for every request: the table always answers with it.
    everything: Option<usize>,
}

impl RouteTable {
    /// The table of `routes`, the service index of each being its position.
    ///
    /// # Errors
    /// [`MatchError::Ambiguous`] when two routes have the same host pattern and prefix.
    pub fn new(routes: impl IntoIterator<Item = Match>) -> Result<RouteTable, MatchError> {
        let mut ordered: Vec<(Match, usize)> = routes.into_iter().enumerate().map(|(i, m)| (m, i)).collect();
        for (i, (a, first)) in ordered.iter().enumerate() {
            if let Some((_, second)) = ordered[i + 1..].iter().find(|(b, _)| b == a) {
                return Err(MatchError::Ambiguous { first: *first, second: *second, what: a.to_string() });
            }
        }
        // Stable: routes of equal rank keep the order they were given in (they never overlap).
        ordered.sort_by(|(a, _), (b, _)| {
            let rank = |m: &Match| {
                let host = m.host.as_ref().map_or((0, 0), HostPattern::rank);
                (host, m.path_prefix.as_ref().map_or(0, String::len))
            };
            rank(b).cmp(&rank(a))
        });
        let everything = match ordered.as_slice() {
            [(only, index)] if *only == Match::default() => Some(*index),
            _ => None,
        };
        Ok(RouteTable { ordered, everything })
    }

    /// The service of a request to `host` for `path`, or `None` when no route matches.
    ///
    /// `host` is the host the request names, as sent: the `Host` header or `:authority`, or the
    /// authority of an absolute-form target (`GET http://host/path`); `None` without one. `path`
    /// is the origin-form target (`/path?query`), as sent: dot segments are not resolved, so a
    /// service's path prefix selects where a request goes, not what a client may reach.
    pub fn route(&self, host: Option<&[u8]>, path: &[u8]) -> Option<usize> {
        if let Some(index) = self.everything {
            return Some(index);
        }
        let mut lowered = [0u8; MAX_HOST];
        let host = host.and_then(|host| normalize(host, &mut lowered));
        self.ordered.iter().find_map(|(route, index)| {
            let host_matches = match (&route.host, host) {
                (None, _) => true,
                (Some(pattern), Some(host)) => pattern.matches(host),
                (Some(_), None) => false,
            };
            (host_matches && route.matches_path(path)).then_some(*index)
        })
    }

    /// How many routes it holds.
    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    /// Whether it holds none (every request is unmatched).
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }
}

/// `host` without its port and final dot, in lower case, written into `into`; `None` when it is
/// longer than a host name can be.
fn normalize<'a>(host: &[u8], into: &'a mut [u8; MAX_HOST]) -> Option<&'a [u8]> {
    let name = if host.starts_with(b"[") {
        // An IPv6 literal: `[::1]:5000`; the brackets stay, no route names one anyway.
        host.iter().position(|&b| b == b']').map_or(host, |end| &host[..=end])
    } else {
        host.iter().position(|&b| b == b':').map_or(host, |colon| &host[..colon])
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    let out = into.get_mut(..name.len())?;
    for (to, from) in out.iter_mut().zip(name) {
        *to = from.to_ascii_lowercase();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(host: Option<&str>, prefix: Option<&str>) -> Match {
        Match::new(host, prefix).expect("a valid match")
    }

    fn table(routes: &[(Option<&str>, Option<&str>)]) -> RouteTable {
        RouteTable::new(routes.iter().map(|(h, p)| m(*h, *p))).expect("no overlap")
    }

    #[test]
    fn one_route_for_everything_answers_every_request_even_without_a_host() {
        let table = table(&[(None, None)]);
        assert_eq!(table.route(None, b"/"), Some(0));
        assert_eq!(table.route(Some(b"anything:80"), b"/x?y"), Some(0));
        assert_eq!(table.route(Some(&[b'a'; 400]), b"/"), Some(0));
    }

    #[test]
    fn hosts_match_without_case_port_or_final_dot_and_wildcards_only_below_their_name() {
        let table = table(&[(Some("web.example"), None), (Some("*.example"), None)]);
        for host in [&b"web.example"[..], b"WEB.Example", b"web.example:5000", b"web.example."] {
            assert_eq!(table.route(Some(host), b"/"), Some(0), "{}", String::from_utf8_lossy(host));
        }
        assert_eq!(table.route(Some(b"api.example"), b"/"), Some(1));
        assert_eq!(table.route(Some(b"a.b.example:80"), b"/"), Some(1));
        assert_eq!(table.route(Some(b"example"), b"/"), None);
        assert_eq!(table.route(Some(b"notexample"), b"/"), None);
        assert_eq!(table.route(None, b"/"), None);
        assert_eq!(table.route(Some(b"[::1]:5000"), b"/"), None);
    }

    #[test]
    fn the_longest_prefix_wins_and_a_prefix_ends_at_a_segment() {
        let table =
            table(&[(None, Some("/api")), (None, Some("/api/v2")), (None, None), (None, Some("/static/"))]);
        assert_eq!(table.route(None, b"/api"), Some(0));
        assert_eq!(table.route(None, b"/api/orders"), Some(0));
        assert_eq!(table.route(None, b"/api?page=2"), Some(0));
        assert_eq!(table.route(None, b"/api/v2"), Some(1));
        assert_eq!(table.route(None, b"/api/v2/x"), Some(1));
        assert_eq!(table.route(None, b"/api/v20"), Some(0));
        assert_eq!(table.route(None, b"/apiary"), Some(2));
        assert_eq!(table.route(None, b"/static/app.js"), Some(3));
        assert_eq!(table.route(None, b"/static"), Some(2));
    }

    #[test]
    fn the_most_specific_host_wins_and_falls_through_when_it_has_no_route_for_the_path() {
        let table = table(&[
            (None, None),
            (Some("*.example"), None),
            (Some("*.shop.example"), None),
            (Some("web.shop.example"), Some("/api")),
        ]);
        assert_eq!(table.route(Some(b"web.shop.example"), b"/api/x"), Some(3));
        assert_eq!(table.route(Some(b"web.shop.example"), b"/home"), Some(2));
        assert_eq!(table.route(Some(b"cart.shop.example"), b"/api"), Some(2));
        assert_eq!(table.route(Some(b"blog.example"), b"/"), Some(1));
        assert_eq!(table.route(Some(b"other.test"), b"/"), Some(0));
    }

    #[test]
    fn routes_that_match_the_same_requests_are_refused_with_both_services() {
        let same = RouteTable::new([
            m(Some("web.example"), Some("/api")),
            m(None, None),
            m(Some("WEB.example."), Some("/api")),
        ]);
        let error = same.expect_err("the same match twice");
        assert_eq!(
            error,
            MatchError::Ambiguous {
                first: 0,
                second: 2,
                what: "host web.example and path prefix /api".into()
            }
        );
        // `/` is no prefix at all.
        assert!(RouteTable::new([m(None, Some("/")), m(None, None)]).is_err());
        // Overlapping but not the same: the more specific one wins, so both are fine.
        assert!(RouteTable::new([m(None, Some("/api")), m(None, Some("/api/"))]).is_ok());
        assert!(RouteTable::new([m(Some("*.example"), None), m(Some("a.example"), None)]).is_ok());
    }

    #[test]
    fn malformed_hosts_and_prefixes_are_refused_by_name() {
        let long_wildcard = format!("*.{}", "a".repeat(252));
        for host in
            ["", "*", "*.", "a..b", "-a.example", "web.*.example", "a b", "web.example:80", "ä.example"]
                .into_iter()
                .chain([long_wildcard.as_str()])
        {
            assert_eq!(Match::new(Some(host), None), Err(MatchError::Host(host.into())), "{host:?}");
        }
        for prefix in ["api", "", "/a b", "/a?b", "/a#b"] {
            assert_eq!(
                Match::new(None, Some(prefix)),
                Err(MatchError::PathPrefix(prefix.into())),
                "{prefix:?}"
            );
        }
        assert_eq!(m(Some("*.Example."), None).host, Some(HostPattern::Subdomains(".example".into())));
    }

    #[test]
    fn no_route_matches_an_empty_table() {
        let table = RouteTable::new([]).expect("empty");
        assert!(table.is_empty());
        assert_eq!(table.route(Some(b"a"), b"/"), None);
    }

    /// The most specific match by the module's rules, found the slow way: every route that
    /// matches, ranked, the best kept.
    fn most_specific(routes: &[Match], host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(|h| h.split(':').next().unwrap_or(h).trim_end_matches('.').to_ascii_lowercase());
        let matching = routes.iter().enumerate().filter(|(_, r)| {
            let host_ok = match (&r.host, &host) {
                (None, _) => true,
                (Some(HostPattern::Exact(name)), Some(h)) => name == h,
                (Some(HostPattern::Subdomains(suffix)), Some(h)) => {
                    h.ends_with(suffix.as_str()) && h != &suffix[1..]
                }
                (Some(_), None) => false,
            };
            let path_ok = match &r.path_prefix {
                None => true,
                Some(p) => {
                    path == p
                        || (p.ends_with('/') && path.starts_with(p.as_str()))
                        || [format!("{p}/"), format!("{p}?"), format!("{p}#")]
                            .iter()
                            .any(|s| path.starts_with(s.as_str()))
                }
            };
            host_ok && path_ok
        });
        let rank = |r: &Match| {
            let host = match &r.host {
                None => (0, 0),
                Some(HostPattern::Exact(_)) => (2, 0),
                Some(HostPattern::Subdomains(s)) => (1, s.len()),
            };
            (host, r.path_prefix.as_ref().map_or(0, String::len))
        };
        matching.max_by(|(i, a), (j, b)| rank(a).cmp(&rank(b)).then(j.cmp(i))).map(|(i, _)| i)
    }

    #[test]
    fn the_table_agrees_with_the_slow_most_specific_match_on_generated_routes() {
        let hosts = [None, Some("a.example"), Some("*.example"), Some("b.a.example"), Some("*.a.example")];
        let prefixes = [None, Some("/x"), Some("/x/"), Some("/x/y"), Some("/y")];
        let requests_hosts = [
            None,
            Some("a.example"),
            Some("B.A.example:1"),
            Some("c.a.example"),
            Some("example"),
            Some("z.example."),
        ];
        let requests_paths = ["/", "/x", "/x/", "/x/y", "/x/yz", "/xy", "/x?q", "/y/x", "/z"];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..400 {
            let mut routes: Vec<Match> = Vec::new();
            let count = 1 + (seed % 6) as usize;
            for _ in 0..count {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let candidate = m(hosts[(seed % 5) as usize], prefixes[((seed >> 8) % 5) as usize]);
                if !routes.contains(&candidate) {
                    routes.push(candidate);
                }
            }
            let table = RouteTable::new(routes.clone()).expect("distinct routes");
            for host in requests_hosts {
                for path in requests_paths {
                    assert_eq!(
                        table.route(host.map(str::as_bytes), path.as_bytes()),
                        most_specific(&routes, host, path),
                        "{routes:?} {host:?} {path}"
                    );
                }
            }
        }
    }
}
