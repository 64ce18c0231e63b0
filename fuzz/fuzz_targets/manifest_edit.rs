//! The in-place editor of `replicas:` and `hostnames:` (`manifest::edit::rewrite_scale`) on
//! arbitrary text.
//!
//! Input: UTF-8 YAML text; optionally `\0` and then the edit to make: a first line with the
//! replica count, then one name per line. Without it, a few edits are tried (one more replica
//! with one more name, one fewer, none, three tricky-but-valid names).
//!
//! Checks, whenever an edit succeeds:
//! - the result, edited again the same way, is the same text (idempotence);
//! - read as YAML data, the result has the requested `replicas` and `hostnames` and every other
//!   top-level entry unchanged;
//! - if the text was a valid manifest and the requested values are valid for it, the result is a
//!   valid manifest equal to it but for the two values;
//! - every line outside the `replicas` and `hostnames` entries is still there.
//!
//! And the edit never reports an internal error (a rewrite it produced but could not verify).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlb::manifest::Manifest;
use ringlb::manifest::edit::{EditError, rewrite_scale};
use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser};
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let manifest = |text: &str| Manifest::parse(text).ok();
    match input.split_once('\0') {
        Some((text, edit)) => {
            let mut lines = edit.split('\n');
            let first = lines.next().unwrap_or_default();
            let names: Vec<String> = lines.map(str::to_owned).collect();
            let replicas = first.trim().parse().unwrap_or(names.len() as u32);
            check(text, manifest(text).as_ref(), replicas, &names);
        }
        None => {
            let text = input;
            let parsed = manifest(text);
            let (replicas, mut names) = match &parsed {
                Some(m) => (m.replicas, m.hostnames.clone()),
                None => (3, vec!["server1".to_owned(), "server2".to_owned()]),
            };
            names.push("fuzz-extra".to_owned());
            check(text, parsed.as_ref(), replicas.saturating_add(1), &names);
            names.truncate(names.len().saturating_sub(2));
            check(text, parsed.as_ref(), replicas.saturating_sub(1), &names);
            check(text, parsed.as_ref(), 0, &[]);
            let tricky = ["1e3", "true", "0x10"].map(str::to_owned);
            check(text, parsed.as_ref(), 3, &tricky);
        }
    }
});

fn check(text: &str, manifest: Option<&Manifest>, replicas: u32, names: &[String]) {
    let out = match rewrite_scale(text, replicas, names) {
        Ok(out) => out,
        Err(EditError::Internal(why)) => panic!("internal error: {why}"),
        Err(_) => return,
    };
    let again = rewrite_scale(&out, replicas, names).expect("the result can be edited again");
    assert_eq!(again, out, "editing twice the same way changes the text again");

    let before = serde_saphyr::from_str::<Value>(text).ok();
    let after = serde_saphyr::from_str::<Value>(&out).ok();
    if let (Some(Value::Object(mut before)), Some(after)) = (before, after) {
        let Value::Object(mut after) = after else { panic!("the result is not a mapping: {after:?}") };
        let had_hostnames = before.remove("hostnames").is_some();
        before.remove("replicas");
        assert_eq!(after.remove("replicas"), Some(Value::from(replicas)), "replicas of {out:?}");
        let expected = (had_hostnames || !names.is_empty()).then(|| Value::from(names.to_vec()));
        assert_eq!(after.remove("hostnames"), expected, "hostnames of {out:?}");
        assert_eq!(after, before, "other entries changed: {out:?}");
    }

    if let Some(m) = manifest {
        let mut wanted = m.clone();
        wanted.replicas = replicas;
        wanted.hostnames = names.to_vec();
        if wanted.validate().is_empty() {
            let got = Manifest::parse(&out).unwrap_or_else(|e| panic!("the result is invalid: {e}\n{out}"));
            assert_eq!(got, wanted, "the result means something else:\n{out}");
        }
    }

    kept_lines(text, &out);
}

/// Every line of `text` outside the top-level `replicas` and `hostnames` entries (from the key's
/// line to the line before the next top-level key) is in `out` as often as in `text`.
fn kept_lines(text: &str, out: &str) {
    let keys = top_level_keys(text);
    let lines = yaml_lines(text);
    let mut edited = vec![false; lines.len() + 1];
    for (i, (name, line)) in keys.iter().enumerate() {
        if name == "replicas" || name == "hostnames" {
            let end = keys.get(i + 1).map_or(lines.len() + 1, |(_, next)| *next);
            for l in *line..end {
                if let Some(e) = edited.get_mut(l - 1) {
                    *e = true;
                }
            }
        }
    }
    let mut available: HashMap<&str, usize> = HashMap::new();
    for line in yaml_lines(out) {
        *available.entry(line).or_default() += 1;
    }
    for (i, line) in lines.iter().enumerate() {
        if edited[i] {
            continue;
        }
        let left = available.get_mut(line).unwrap_or_else(|| {
            panic!("line {} ({line:?}) is gone:\n--- before\n{text}\n--- after\n{out}", i + 1)
        });
        assert!(*left > 0, "line {} ({line:?}) is gone:\n--- before\n{text}\n--- after\n{out}", i + 1);
        *left -= 1;
    }
}

/// The top-level keys of the document's root mapping with their 1-based lines, in order.
fn top_level_keys(text: &str) -> Vec<(String, usize)> {
    let mut keys = Vec::new();
    let mut depth = 0usize;
    let mut nodes_at_depth_one = 0usize;
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        let starts_node = matches!(
            event,
            Event::Scalar(..)
                | Event::Alias(..)
                | Event::UnresolvedAlias(..)
                | Event::MappingStart(..)
                | Event::SequenceStart(..)
        );
        if starts_node && depth == 1 {
            if nodes_at_depth_one % 2 == 0 {
                let name = match &event {
                    Event::Scalar(value, ..) => value.to_string(),
                    _ => String::from("?"),
                };
                keys.push((name, span.start.line()));
            }
            nodes_at_depth_one += 1;
        }
        match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    keys
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
