//! Rewrites the manifest's `replicas:` and `hostnames:` in place, leaving every other byte alone.
//!
//! The admin API scales by editing the user's file, so the edit must be surgical: the YAML event
//! stream gives the exact byte span of the two top-level values, and only those spans are replaced.
//! Comments, key order, quoting and blank lines elsewhere stay as written, and so does a comment
//! after the value on the same line (`replicas: 3   # N`). A flow list (`[a, b]`) stays a one-line
//! flow list; a block list stays a block list with the same indentation (comments *between* its
//! items are not kept: the items are written anew). A missing key is inserted (`replicas` before
//! the first key, `hostnames` after `replicas`). Anchors, aliases and tags on these two values are
//! refused rather than guessed at.

use serde_saphyr::granit_parser::{Event, Marker, Parser, ScanError, Span, StructureStyle};

/// Why the manifest text could not be edited.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    /// The text is not YAML.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The document is not a block mapping of keys.
    #[error("the manifest's top level must be a block mapping of keys")]
    NotAMapping,
    /// More than one YAML document.
    #[error("the manifest holds more than one YAML document")]
    MultipleDocuments,
    /// A value ringlb will not rewrite (wrong shape, anchor, alias or tag).
    #[error("cannot rewrite `{key}`: {reason}")]
    Unsupported {
        /// `replicas` or `hostnames`.
        key: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl From<ScanError> for EditError {
    fn from(error: ScanError) -> Self {
        let marker = error.marker();
        EditError::Syntax { line: marker.line(), column: marker.col() + 1, message: error.info().to_owned() }
    }
}

/// Where a top-level key and its value sit in the text (byte offsets).
#[derive(Debug)]
struct Entry {
    key_end: usize,
    value: Value,
}

#[derive(Debug)]
enum Value {
    /// A scalar, possibly empty (a null written as nothing).
    Scalar { start: usize, end: usize },
    /// A flow sequence from `[` to `]`.
    Flow { start: usize, end: usize },
    /// A block sequence: the first dash, and the end of its last item.
    Block { first_dash: usize, last_end: usize },
    /// Anything else (mapping, alias, tagged or anchored node).
    Other(&'static str),
}

/// Rewrites the top-level `replicas` value to `replicas` and the top-level `hostnames` list to
/// `hostnames`; see the module docs for what is kept.
///
/// # Errors
/// The text is not a single YAML block mapping, or one of the two values has a shape that cannot
/// be rewritten safely.
pub fn rewrite_scale(source: &str, replicas: u32, hostnames: &[String]) -> Result<String, EditError> {
    let (first_key, entries) = top_level(source)?;
    let newline = if source.contains("\r\n") { "\r\n" } else { "\n" };
    let find = |name: &str| entries.iter().find(|(k, _)| k == name).map(|(_, e)| e);
    // Edits as (start, end, replacement), applied back to front so offsets stay valid.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();

    match find("replicas") {
        Some(Entry { value: Value::Scalar { start, end }, key_end, .. }) => {
            edits.push(scalar_edit(source, *key_end, *start, *end, &replicas.to_string()));
        }
        Some(Entry { value: Value::Other(reason), .. }) => {
            return Err(EditError::Unsupported { key: "replicas", reason });
        }
        Some(_) => {
            return Err(EditError::Unsupported { key: "replicas", reason: "it is not a number" });
        }
        None => {
            let at = first_key.unwrap_or(source.len());
            edits.push((at, at, format!("replicas: {replicas}{newline}")));
        }
    }

    let flow = flow_list(hostnames);
    match find("hostnames") {
        Some(entry) => match &entry.value {
            Value::Flow { start, end } => edits.push((*start, *end, flow)),
            Value::Scalar { start, end } => {
                edits.push(scalar_edit(source, entry.key_end, *start, *end, &flow))
            }
            Value::Block { first_dash, last_end } => {
                let line_start = source[..*first_dash].rfind('\n').map_or(0, |i| i + 1);
                let indent = &source[line_start..*first_dash];
                let last_line_end = line_end(source, *last_end);
                if hostnames.is_empty() || !indent.chars().all(|c| c == ' ' || c == '\t') {
                    // A block list cannot be empty: switch to `[]` right after the key.
                    edits.push((entry.key_end, last_line_end, format!(": {flow}")));
                } else {
                    let lines: Vec<String> =
                        hostnames.iter().map(|n| format!("{indent}- {}", scalar(n))).collect();
                    edits.push((line_start, last_line_end, lines.join(newline)));
                }
            }
            Value::Other(reason) => {
                return Err(EditError::Unsupported { key: "hostnames", reason });
            }
        },
        None if hostnames.is_empty() => {}
        None => {
            let line = format!("hostnames: {flow}{newline}");
            match find("replicas") {
                Some(entry) => {
                    let end = line_end(source, entry.key_end);
                    let after =
                        if source[end..].starts_with("\r\n") { end + 2 } else { (end + 1).min(source.len()) };
                    if after == end {
                        // The replicas line is the last line and has no newline.
                        edits.push((end, end, format!("{newline}hostnames: {flow}")));
                    } else {
                        edits.push((after, after, line));
                    }
                }
                None => {
                    let at = first_key.unwrap_or(source.len());
                    edits.push((at, at, line));
                }
            }
        }
    }

    // Back to front; two insertions at one offset go in the order they were planned.
    let mut ordered: Vec<(usize, (usize, usize, String))> = edits.into_iter().enumerate().collect();
    ordered.sort_by_key(|(seq, (start, _, _))| std::cmp::Reverse((*start, *seq)));
    let mut out = source.to_owned();
    for (_, (start, end, text)) in ordered {
        out.replace_range(start..end, &text);
    }
    Ok(out)
}

/// The edit that puts `text` as the value of a scalar entry (an empty scalar gets a space first).
fn scalar_edit(source: &str, key_end: usize, start: usize, end: usize, text: &str) -> (usize, usize, String) {
    if start < end {
        return (start, end, text.to_owned());
    }
    // `key:` with nothing after it: the value goes right after the colon.
    let colon = source[key_end..].find(':').map_or(key_end, |i| key_end + i + 1);
    (colon, colon, format!(" {text}"))
}

/// The offset of the end of the line holding `offset` (before its `\r\n` or `\n`).
fn line_end(source: &str, offset: usize) -> usize {
    let end = source[offset..].find('\n').map_or(source.len(), |i| offset + i);
    if end > offset && source[..end].ends_with('\r') { end - 1 } else { end }
}

/// `[a, b, c]`.
fn flow_list(names: &[String]) -> String {
    format!("[{}]", names.iter().map(|n| scalar(n)).collect::<Vec<_>>().join(", "))
}

/// A name as a YAML scalar: plain when YAML reads it back as that exact string, else single-quoted.
fn scalar(name: &str) -> String {
    const SPECIAL: [&str; 13] =
        ["true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf", "~", ""];
    let lower = name.to_ascii_lowercase();
    let plain_safe = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && !SPECIAL.contains(&lower.as_str())
        && !lower.starts_with(".");
    if plain_safe { name.to_owned() } else { format!("'{}'", name.replace('\'', "''")) }
}

fn byte_offset(source: &str, marker: &Marker) -> usize {
    marker
        .byte_offset()
        .unwrap_or_else(|| source.char_indices().nth(marker.index()).map_or(source.len(), |(i, _)| i))
}

/// The offset of the first top-level key and every top-level `key: value` entry.
#[allow(clippy::type_complexity)]
fn top_level(source: &str) -> Result<(Option<usize>, Vec<(String, Entry)>), EditError> {
    let events: Vec<(Event<'_>, Span)> = Parser::new_from_str(source).collect::<Result<_, _>>()?;
    let mut i = 0;
    let mut documents = 0;
    let mut mapping = None;
    while i < events.len() {
        match &events[i].0 {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(EditError::MultipleDocuments);
                }
            }
            Event::MappingStart(StructureStyle::Block, ..) if mapping.is_none() => mapping = Some(i),
            Event::MappingStart(..) | Event::SequenceStart(..) | Event::Scalar(..) | Event::Alias(..)
                if mapping.is_none() =>
            {
                return Err(EditError::NotAMapping);
            }
            _ => {}
        }
        if mapping.is_some() {
            break;
        }
        i += 1;
    }
    let Some(start) = mapping else {
        return Err(EditError::NotAMapping);
    };
    // Nothing after the mapping may start a second document.
    if events.iter().filter(|(e, _)| matches!(e, Event::DocumentStart(..))).count() > 1 {
        return Err(EditError::MultipleDocuments);
    }
    let mut entries = Vec::new();
    let mut first_key = None;
    let mut i = start + 1;
    while i < events.len() {
        let (key, key_span) = &events[i];
        let key_name = match key {
            Event::MappingEnd => break,
            Event::Scalar(text, ..) => text.to_string(),
            _ => String::new(),
        };
        let key_start = byte_offset(source, &key_span.start);
        first_key.get_or_insert(key_start);
        let key_end = byte_offset(source, &key_span.end);
        i = node_end(&events, i) + 1;
        let value_index = i;
        let value = describe(source, &events, value_index);
        i = node_end(&events, value_index) + 1;
        entries.push((key_name, Entry { key_end, value }));
    }
    Ok((first_key, entries))
}

/// The index of the last event of the node starting at `i`.
fn node_end(events: &[(Event<'_>, Span)], i: usize) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < events.len() {
        match events[j].0 {
            Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth == 0 {
            return j;
        }
        j += 1;
    }
    events.len().saturating_sub(1)
}

fn describe(source: &str, events: &[(Event<'_>, Span)], i: usize) -> Value {
    let Some((event, span)) = events.get(i) else {
        return Value::Other("it has no value");
    };
    match event {
        Event::Scalar(_, _, anchor, tag) => {
            if *anchor != 0 || tag.is_some() {
                return Value::Other("it has an anchor or a tag");
            }
            Value::Scalar { start: byte_offset(source, &span.start), end: byte_offset(source, &span.end) }
        }
        Event::SequenceStart(style, anchor, tag) => {
            if *anchor != 0 || tag.is_some() {
                return Value::Other("it has an anchor or a tag");
            }
            let end = node_end(events, i);
            let items = &events[i + 1..end];
            if items.iter().any(|(e, _)| !matches!(e, Event::Scalar(_, _, 0, None))) {
                return Value::Other("its items are not plain names");
            }
            match style {
                StructureStyle::Flow => Value::Flow {
                    start: byte_offset(source, &span.start),
                    end: byte_offset(source, &events[end].1.end),
                },
                StructureStyle::Block => Value::Block {
                    first_dash: byte_offset(source, &span.start),
                    last_end: items
                        .last()
                        .map_or(byte_offset(source, &span.start), |(_, s)| byte_offset(source, &s.end)),
                },
            }
        }
        Event::Alias(..) => Value::Other("it is an alias"),
        _ => Value::Other("it is a mapping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MANIFEST: &str = "# ringlb cluster: edit and save; the running load balancer applies it.
name: demo                  # cluster name
replicas: 3                 # N: replicas to keep alive
hostnames: [server1, server2, server3]  # preferred names; the rest are generated
listen: 0.0.0.0:5000
replica:
  runtime: docker           # docker | process | static
  image: ringlb:latest
  port: 5000
hashing:
  algorithm: maglev
";

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// The parsed values of the two keys, and the rest of the document as JSON.
    fn parsed(text: &str) -> (u64, Vec<String>, serde_json::Value) {
        let mut value: serde_json::Value = serde_saphyr::from_str(text).unwrap();
        let map = value.as_object_mut().unwrap();
        let replicas = map.remove("replicas").and_then(|v| v.as_u64()).unwrap();
        let hostnames = match map.remove("hostnames") {
            Some(serde_json::Value::Array(items)) => {
                items.into_iter().map(|v| v.as_str().unwrap().to_string()).collect()
            }
            _ => vec![],
        };
        (replicas, hostnames, value)
    }

    #[test]
    fn a_flow_list_is_rewritten_and_every_comment_stays() {
        let out = rewrite_scale(MANIFEST, 5, &names(&["server1", "server2", "server3", "S5", "S4"])).unwrap();
        let expected = MANIFEST
            .replace("replicas: 3     ", "replicas: 5     ")
            .replace("[server1, server2, server3]", "[server1, server2, server3, S5, S4]");
        assert_eq!(out, expected);
    }

    #[test]
    fn a_block_list_stays_a_block_list_with_its_indentation() {
        let text = "name: demo\nreplicas: 2 # N\nhostnames:   # names\n    - a   # first\n    - b\nlisten: 0.0.0.0:1\n";
        let out = rewrite_scale(text, 3, &names(&["a", "c", "d"])).unwrap();
        assert_eq!(
            out,
            "name: demo\nreplicas: 3 # N\nhostnames:   # names\n    - a\n    - c\n    - d\nlisten: 0.0.0.0:1\n"
        );
        let empty = rewrite_scale(text, 0, &[]).unwrap();
        assert_eq!(empty, "name: demo\nreplicas: 0 # N\nhostnames: []\nlisten: 0.0.0.0:1\n");
    }

    #[test]
    fn missing_keys_are_inserted() {
        let text = "# head\nname: demo\nreplicas: 1\n# tail\n";
        assert_eq!(
            rewrite_scale(text, 2, &names(&["x", "z"])).unwrap(),
            "# head\nname: demo\nreplicas: 2\nhostnames: [x, z]\n# tail\n"
        );
        assert_eq!(rewrite_scale(text, 2, &[]).unwrap(), "# head\nname: demo\nreplicas: 2\n# tail\n");
        let bare = "name: demo\n";
        assert_eq!(
            rewrite_scale(bare, 1, &names(&["x"])).unwrap(),
            "replicas: 1\nhostnames: [x]\nname: demo\n"
        );
        let last = "name: demo\nreplicas: 1";
        assert_eq!(
            rewrite_scale(last, 1, &names(&["x"])).unwrap(),
            "name: demo\nreplicas: 1\nhostnames: [x]"
        );
    }

    #[test]
    fn crlf_and_a_missing_final_newline_are_kept() {
        let text = "name: demo\r\nreplicas: 1\r\nhostnames:\r\n  - a\r\nport: 1";
        assert_eq!(
            rewrite_scale(text, 2, &names(&["a", "b"])).unwrap(),
            "name: demo\r\nreplicas: 2\r\nhostnames:\r\n  - a\r\n  - b\r\nport: 1"
        );
    }

    #[test]
    fn names_yaml_would_misread_are_quoted() {
        let tricky = names(&["true", "No", "null", "123", "1e3", "0x10", "y", "a.b", "inf"]);
        let out = rewrite_scale("name: demo\nreplicas: 1\nhostnames: []\n", 9, &tricky).unwrap();
        let (_, back, _) = parsed(&out);
        assert_eq!(back, tricky);
        assert!(out.contains("'true', 'No', 'null', '123', '1e3', '0x10', 'y', a.b, 'inf'"), "{out}");
    }

    #[test]
    fn nested_keys_with_the_same_names_are_left_alone() {
        let text = "name: demo\nreplica:\n  replicas: 9\n  hostnames: [q]\nreplicas: 1\n";
        let out = rewrite_scale(text, 4, &names(&["z"])).unwrap();
        assert_eq!(
            out,
            "name: demo\nreplica:\n  replicas: 9\n  hostnames: [q]\nreplicas: 4\nhostnames: [z]\n"
        );
    }

    #[test]
    fn a_flow_list_over_several_lines_becomes_one_line() {
        let text = "name: demo\nreplicas: 2\nhostnames: [a,\n   b]   # two\nport: 1\n";
        assert_eq!(
            rewrite_scale(text, 1, &names(&["a"])).unwrap(),
            "name: demo\nreplicas: 1\nhostnames: [a]   # two\nport: 1\n"
        );
    }

    #[test]
    fn an_explicit_document_start_and_a_leading_comment_block_are_kept() {
        let text = "# one\n# two\n---\nname: demo\nreplicas: 1\nhostnames:\n";
        assert_eq!(
            rewrite_scale(text, 1, &names(&["a"])).unwrap(),
            "# one\n# two\n---\nname: demo\nreplicas: 1\nhostnames: [a]\n"
        );
    }

    #[test]
    fn invalid_yaml_and_unsupported_shapes_are_errors() {
        let err = rewrite_scale("name: demo\nreplicas: [1\n", 1, &[]).unwrap_err();
        assert!(matches!(err, EditError::Syntax { .. }), "{err:?}");
        assert_eq!(rewrite_scale("- a\n", 1, &[]).unwrap_err(), EditError::NotAMapping);
        assert!(matches!(
            rewrite_scale("name: d\nreplicas: {a: 1}\n", 1, &[]),
            Err(EditError::Unsupported { key: "replicas", .. })
        ));
        assert!(matches!(
            rewrite_scale("a: &x [q]\nhostnames: *x\n", 1, &[]),
            Err(EditError::Unsupported { key: "hostnames", .. })
        ));
        assert_eq!(
            rewrite_scale("name: a\n---\nname: b\n", 1, &[]).unwrap_err(),
            EditError::MultipleDocuments
        );
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,12}",
            Just("true".to_string()),
            Just("null".to_string()),
            Just("007".to_string()),
            Just("1.5".to_string()),
            Just("NO".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn output_parses_back_to_the_values_and_keeps_the_rest(
            list in proptest::collection::vec(name_strategy(), 0..8),
            count in 0u32..100,
            block in any::<bool>(),
        ) {
            let input = if block {
                MANIFEST.replace("hostnames: [server1, server2, server3]", "hostnames:\n  - server1\n  - server2")
            } else {
                MANIFEST.to_string()
            };
            let out = rewrite_scale(&input, count, &list).unwrap();
            let (replicas, hostnames, rest) = parsed(&out);
            prop_assert_eq!(replicas, u64::from(count));
            prop_assert_eq!(&hostnames, &list);
            prop_assert_eq!(rest, parsed(&input).2);
            prop_assert!(out.contains("# N: replicas to keep alive"));
            prop_assert!(out.contains("# docker | process | static"));
            // Applying the same edit again changes nothing.
            prop_assert_eq!(rewrite_scale(&out, count, &list).unwrap(), out);
        }
    }
}
