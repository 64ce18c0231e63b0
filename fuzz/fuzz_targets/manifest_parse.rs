//! The manifest parser and validator on arbitrary text.
//!
//! Input: UTF-8 manifest text; an optional `\0` followed by a dotted field path (`hashing.slots`,
//! `hostnames[2]`) that is also looked up with `locate`.
//!
//! Checks: nothing panics; an accepted manifest validates, is parsed the same way twice, can grow
//! to what it promises (`replicas`, `autoscale.max`, and `/add`'s ring capacity: the ring builds with
//! that many members), and changes no immutable field against itself; a refused one says why,
//! with positions inside the text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlb::manifest::locate::{Position, locate, path_at};
use ringlb::manifest::{Manifest, ManifestError};
use ringlb::ring::{Algorithm, Member, Ring, Selector};

/// Rings larger than this are not built here (the ring target covers building; this keeps the
/// fuzzer fast on manifests asking for the biggest tables).
const BUILD_LIMIT: u32 = 1 << 18;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (text, path) = match input.split_once('\0') {
        Some((text, path)) => (text, Some(path)),
        None => (input, None),
    };
    if let Some(path) = path {
        check_position(text, locate(text, path));
    }
    match Manifest::parse(text) {
        Ok(manifest) => accepted(text, &manifest),
        Err(error) => refused(text, &error),
    }
});

/// A position points into the text: a line that exists, a column from 1 to the line's length + 1.
fn check_position(text: &str, position: Option<Position>) {
    let Some(p) = position else { return };
    assert!(p.line >= 1 && p.column >= 1, "{p:?}");
    let lines = yaml_lines(text);
    assert!(p.line <= lines.len(), "{p:?} past the last line ({})", lines.len());
    let line = lines[p.line - 1];
    assert!(p.column <= line.chars().count() + 1, "{p:?} past the end of {line:?}");
}

/// The text's lines as YAML counts them: broken by LF, CRLF or a lone CR.
fn yaml_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['\n', '\r']) {
        lines.push(&rest[..i]);
        let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
    }
    lines.push(rest);
    lines
}

fn accepted(text: &str, manifest: &Manifest) {
    let errors = manifest.validate();
    assert!(errors.is_empty(), "parse accepted a manifest that does not validate: {errors:?}");
    let again = Manifest::parse(text).expect("the same text parses again");
    assert_eq!(&again, manifest, "parsing is deterministic");
    assert!(manifest.immutable_changes(manifest).is_empty());
    let _ = manifest.summary();
    let max = manifest.limits.max_replicas;
    assert!(manifest.replicas <= max);
    let initial = manifest.initial_replicas();
    assert!(initial <= max, "initial replicas {initial} above limits.max_replicas {max}");
    if let Some(a) = &manifest.autoscale {
        assert!(a.min <= initial && initial <= a.max, "initial {initial} outside [{}, {}]", a.min, a.max);
    }
    let capacity = manifest.ring_capacity();
    assert!(
        manifest.replicas <= capacity,
        "replicas {} above the ring capacity {capacity}",
        manifest.replicas
    );
    assert!(capacity <= max);

    // The ring builds for every member count the manifest lets the cluster reach.
    let config = manifest.ring_config();
    let size = match config.algorithm {
        Algorithm::Maglev => config.table_size,
        Algorithm::Ring => config.slots,
    };
    if size > BUILD_LIMIT {
        return;
    }
    let mut counts = vec![manifest.replicas, initial, capacity];
    if let Some(a) = &manifest.autoscale {
        counts.push(a.max);
    }
    for count in counts {
        let members: Vec<Member> = (0..count)
            .map(|i| Member {
                name: manifest
                    .hostnames
                    .get(i as usize)
                    .cloned()
                    .unwrap_or_else(|| format!("{}-{i}", manifest.name)),
                id: i + 1,
            })
            .collect();
        let ring = Ring::build(&config, &members).unwrap_or_else(|e| {
            panic!("a valid manifest's ring does not build with {count} members: {e} ({config:?})")
        });
        assert_eq!(ring.len(), members.len());
        if count > 0 {
            assert_eq!(ring.candidates(0x1234_5678).count(), members.len());
        }
    }
}

fn refused(text: &str, error: &ManifestError) {
    let rendered = error.to_string();
    assert!(!rendered.is_empty());
    match error {
        ManifestError::Read { .. } => panic!("parse does not read files"),
        ManifestError::Syntax { position, .. } => {
            if let Some(p) = position {
                // The parser's own position: it may point just past the end of the text.
                assert!(p.line >= 1, "{p:?}");
                let _ = path_at(text, *p);
            }
        }
        ManifestError::Invalid(errors) => {
            assert!(!errors.is_empty(), "an invalid manifest names at least one field");
            for e in errors {
                assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}");
                check_position(text, e.position);
            }
        }
    }
    let _ = error.position();
}
