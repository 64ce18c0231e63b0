//! Comment-preserving rewrite of the scale settings (`replicas` and `hostnames`) in a ringlb
//! manifest.
//!
//! The manifest is a YAML file that people edit by hand, with comments, blank lines and their own
//! key order. When ringlb itself has to change the desired scale (for example from the admin API
//! or the command line), re-serialising the whole document would throw all of that away. Instead,
//! [`rewrite_scale`] does textual surgery guided by the byte spans reported by serde-saphyr's
//! event parser ([`serde_saphyr::granit_parser`]): only the bytes of the two values are
//! replaced (or a line is inserted when a key is missing) and every other byte is copied as it
//! was.
//!
//! The edit refuses rather than guesses: anchors, aliases and tags on the two values, several
//! documents, a top level that is not a block mapping, and unusual layouts are reported as an
//! [`EditError`]. As a last safety net the rewritten text is parsed again and compared with the
//! original: every other top-level entry must have exactly the same value, and the two edited
//! keys must hold exactly the requested values; otherwise [`EditError::Internal`] is returned
//! and nothing should be written.

use serde_saphyr::granit_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Span, StructureStyle};

const REPLICAS: &str = "replicas";
const HOSTNAMES: &str = "hostnames";

/// Why [`rewrite_scale`] refused to rewrite a manifest. The input is never partially edited: on
/// any error the caller should leave the file as it is.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The manifest is not valid YAML.
    #[error("manifest is not valid YAML: {message} (line {line}, column {column})")]
    InvalidYaml {
        /// Line of the problem, counted from 1.
        line: usize,
        /// Column of the problem, counted from 1 (in characters).
        column: usize,
        /// The parser's description of the problem.
        message: String,
    },
    /// The file holds more than one YAML document (`---` separated).
    #[error("manifest holds {count} YAML documents; expected exactly one")]
    MultipleDocuments {
        /// How many documents the file holds.
        count: usize,
    },
    /// The document's top-level node is not a mapping (or the document is empty).
    #[error("top level of the manifest is {found}, not a mapping")]
    NotAMapping {
        /// What the top level is instead, e.g. `"a sequence"`.
        found: &'static str,
    },
    /// The top-level mapping is written in flow style (`{name: demo, ...}`), which this module
    /// does not edit.
    #[error(
        "the top-level mapping of the manifest is written in flow style (`{{...}}`); only block style can be edited"
    )]
    FlowMapping,
    /// `replicas` or `hostnames` appears more than once at the top level.
    #[error("top-level key `{key}` appears more than once (lines {first_line} and {second_line})")]
    DuplicateKey {
        /// The duplicated key.
        key: &'static str,
        /// Line of the first occurrence, counted from 1.
        first_line: usize,
        /// Line of the second occurrence, counted from 1.
        second_line: usize,
    },
    /// The value of `replicas` is not a plain (unquoted, non-empty) scalar.
    #[error("`replicas` (line {line}) is {found}, not a plain scalar")]
    ReplicasNotPlainScalar {
        /// Line of the value, counted from 1.
        line: usize,
        /// What the value is instead, e.g. `"a quoted scalar"`.
        found: &'static str,
    },
    /// The value of `hostnames` is not a sequence.
    #[error("`hostnames` (line {line}) is {found}, not a sequence")]
    HostnamesNotSequence {
        /// Line of the value, counted from 1.
        line: usize,
        /// What the value is instead, e.g. `"a plain scalar"`.
        found: &'static str,
    },
    /// The value of `replicas` or `hostnames` is an alias, or carries an anchor or a tag (or, for
    /// `hostnames`, one of its items defines an anchor that other nodes may refer to).
    #[error("`{key}` (line {line}) carries {what}; refusing to rewrite it")]
    AnchorTagOrAlias {
        /// `replicas` or `hostnames`.
        key: &'static str,
        /// Line of the value, counted from 1.
        line: usize,
        /// What was found, e.g. `"an anchor"`.
        what: &'static str,
    },
    /// The top-level mapping merges another one in (`<<: ...`): where `replicas` and `hostnames`
    /// come from is then not the file's own top level.
    #[error(
        "the manifest merges a mapping into its top level with `<<` (line {line}); refusing to rewrite it"
    )]
    MergeKey {
        /// Line of the `<<` key, counted from 1.
        line: usize,
    },
    /// The value is laid out in a way this module does not know how to edit safely.
    #[error("cannot rewrite `{key}` (line {line}): {reason}")]
    UnsupportedLayout {
        /// `replicas` or `hostnames`.
        key: &'static str,
        /// Line of the node concerned, counted from 1.
        line: usize,
        /// What is unusual about it.
        reason: &'static str,
    },
    /// The edit could not be verified: the parser produced an unexpected event stream, or the
    /// rewritten text did not parse back to the original document with the two values changed.
    /// Not expected to happen; the manifest must be left unchanged.
    #[error("internal error while rewriting the manifest: {0}; the manifest was left unchanged")]
    Internal(String),
}

/// Rewrites the top-level `replicas:` value and the top-level `hostnames:` sequence of a manifest,
/// leaving every other byte of the document (comments, key order, quoting, blank lines, other keys) as it was.
///
/// * `replicas` must already be a plain scalar (`replicas: 3`); only the scalar's own bytes are
///   replaced, so a comment after it on the same line stays. If the key is missing,
///   `replicas: N` is inserted as a new line just before the first top-level key (that is, after
///   any leading comment block and `---` marker), at the same indentation.
/// * A flow `hostnames` sequence (`[a, b]`, possibly spread over several lines) is replaced by a
///   one-line flow sequence `[x, y, z]`. A block sequence is replaced by a block sequence whose
///   items sit on consecutive lines with the indentation and dash spacing of the old first item.
///   **Comments inside a replaced block list are dropped**: comment lines (and blank lines)
///   between the old items, and end-of-line comments of all old items but the last, cannot be
///   matched to the new items and are removed. The end-of-line comment of the old last item
///   stays, after the new last item; comment lines between `hostnames:` and the first item, and
///   after the last item, stay where they are. Comments inside a flow list spread over several
///   lines go the same way; a comment after its closing `]` stays.
/// * An empty list is written as `[]` (a block sequence cannot be empty): for a block list,
///   `hostnames: []` is written on the key's line (before its comment, if any) and the item lines,
///   with their comments and the blank lines right above them, are removed; comment lines between
///   the key and the first item stay. Once flow style, the list stays flow style.
/// * If `hostnames` is missing and the list is not empty, `hostnames: [..]` is inserted as a new
///   line right after the `replicas` line (after its trailing comment), at the same indentation;
///   if the list is empty, nothing is inserted.
/// * Names that YAML would read as something other than that exact string (`true`, `null`, `~`,
///   `1e3`, `0x10`, `123`, `yes`, `no`, `on`, `off`, names with spaces or YAML indicators, ...)
///   are written double-quoted; other names are written plain.
/// * Inserted and rewritten lines use the file's line ending (that of its first line break:
///   LF or CRLF). Whether the file ends with a line break is kept.
/// * Keys with the same names nested deeper (`replica: {replicas: 1}`) are never touched.
///
/// The result is parsed again and checked: it must be one document whose top-level entries, other
/// than `replicas` and `hostnames`, are exactly those of `source`, and whose `replicas` and
/// `hostnames` hold exactly the requested values. Applying the function twice with the same
/// arguments gives the same text as applying it once.
///
/// # Errors
///
/// Returns an [`EditError`] when `source` is not valid YAML, holds several documents, has a top
/// level that is not a block mapping, has a duplicated `replicas`/`hostnames` key, has a
/// `replicas` value that is not a plain scalar or a `hostnames` value that is not a sequence,
/// has an anchor, alias or tag on either value (or an anchor inside the `hostnames` list), or is
/// laid out in a way that cannot be edited safely (e.g. `? key` explicit-key syntax where a line
/// would have to be inserted).
pub fn rewrite_scale(source: &str, replicas: u32, hostnames: &[String]) -> Result<String, EditError> {
    let root = parse_single_document(source)?;
    let entries = top_level_entries(&root)?;
    let replicas_entry = find_unique(entries, REPLICAS)?;
    let hostnames_entry = find_unique(entries, HOSTNAMES)?;
    let eol = line_ending(source);
    let insert_hostnames = hostnames_entry.is_none() && !hostnames.is_empty();
    let mut edits = Vec::new();

    if let Some((_, value)) = hostnames_entry {
        check_hostnames(value)?;
    }
    match replicas_entry {
        Some((key, value)) => {
            check_replicas(value)?;
            edits.push(Edit::replace(value.start, value.end, replicas.to_string()));
            if insert_hostnames {
                let indent = indentation(source, key.start).ok_or(EditError::UnsupportedLayout {
                    key: REPLICAS,
                    line: key.line,
                    reason: "the key does not start its own line",
                })?;
                let at = line_end(source, value.end);
                let text = format!("{eol}{indent}{HOSTNAMES}: {}", flow_sequence(hostnames));
                edits.push(Edit::replace(at, at, text));
            }
        }
        None => {
            // A block mapping always has at least one entry.
            let (first_key, _) =
                entries.first().ok_or_else(|| EditError::Internal("empty block mapping".to_owned()))?;
            // The key must be where the mapping starts (not, say, inside `? |` explicit-key
            // syntax) and alone on its line before it.
            let indent = indentation(source, first_key.start)
                .filter(|_| first_key.start == root.start)
                .ok_or(EditError::UnsupportedLayout {
                key: REPLICAS,
                line: first_key.line,
                reason: "the first top-level key does not start its own line, so `replicas` cannot be inserted before it",
            })?;
            let mut text = format!("{indent}{REPLICAS}: {replicas}{eol}");
            if insert_hostnames {
                text.push_str(&format!("{indent}{HOSTNAMES}: {}{eol}", flow_sequence(hostnames)));
            }
            let at = line_start(source, first_key.start);
            edits.push(Edit::replace(at, at, text));
        }
    }
    if let Some((key, value)) = hostnames_entry {
        hostnames_edits(source, key, value, hostnames, eol, &mut edits)?;
    }

    let output = apply_edits(source, edits)?;
    verify(&root, &output, replicas, hostnames, hostnames_entry.is_some())?;
    Ok(output)
}

// ---------------------------------------------------------------------------------------------
// Parsing into a small node tree with byte positions.

/// One YAML node with its position in the source.
#[derive(Debug)]
struct Node {
    kind: Kind,
    /// Anchor id defined on this node, 0 for none.
    anchor: usize,
    /// The node's explicit tag, rendered, if any.
    tag: Option<String>,
    /// Byte offset where the node's content starts (after any tag or anchor). For a block
    /// sequence, the offset of its first `-`, or of the first item's content when the sequence
    /// is not indented more than its key.
    start: usize,
    /// Byte offset just past the node's last source character; for a block collection, the end
    /// of its last child (possibly followed by blank space). Equal to `start` for an empty
    /// (null) scalar.
    end: usize,
    /// Line of `start`, counted from 1.
    line: usize,
}

#[derive(Debug)]
enum Kind {
    Scalar { value: String, style: ScalarStyle },
    Sequence { style: StructureStyle, items: Vec<Node> },
    Mapping { style: StructureStyle, entries: Vec<(Node, Node)> },
    Alias(usize),
}

/// Parses `source`, which must hold exactly one document, into its root node.
fn parse_single_document(source: &str) -> Result<Node, EditError> {
    let mut events = Vec::new();
    for item in Parser::new_from_str(source) {
        let (event, span) = item.map_err(|e| yaml_error(&e))?;
        // Comments (and any other presentation-only events) carry no data.
        if matches!(
            event,
            Event::DocumentStart(..)
                | Event::Scalar(..)
                | Event::Alias(..)
                | Event::SequenceStart(..)
                | Event::SequenceEnd
                | Event::MappingStart(..)
                | Event::MappingEnd
        ) {
            events.push((event, span));
        }
    }
    let mut builder = Builder { events: events.into_iter(), source };
    let mut documents = 0;
    let mut root = None;
    while let Some((event, span)) = builder.events.next() {
        if matches!(event, Event::DocumentStart(..)) {
            documents += 1;
        } else {
            root = Some(builder.node(event, span)?);
        }
    }
    if documents > 1 {
        return Err(EditError::MultipleDocuments { count: documents });
    }
    root.ok_or(EditError::NotAMapping { found: "empty" })
}

fn yaml_error(error: &ScanError) -> EditError {
    let marker = error.marker();
    let info = error.info();
    EditError::InvalidYaml {
        line: marker.line(),
        column: marker.col() + 1,
        message: if info.is_empty() { "syntax error".to_owned() } else { info },
    }
}

struct Builder<'s> {
    events: std::vec::IntoIter<(Event<'s>, Span)>,
    source: &'s str,
}

impl<'s> Builder<'s> {
    fn next_event(&mut self) -> Result<(Event<'s>, Span), EditError> {
        self.events
            .next()
            .ok_or_else(|| EditError::Internal("the YAML event stream ended inside a collection".to_owned()))
    }

    fn offset(&self, marker: Marker) -> usize {
        marker.byte_offset().unwrap_or_else(|| {
            self.source.char_indices().nth(marker.index()).map_or(self.source.len(), |(byte, _)| byte)
        })
    }

    /// Where a collection's source text ends: after its closing bracket in flow style; in block
    /// style (whose end event is an empty span at the next token, after any comments) at
    /// `content_end`, the end of its last child. An empty (null) child sits where its text would
    /// be (a null mapping value at its `:`), or in a few cases (`? key` without a value) at the
    /// next token, so users of a block collection's end trim blank space back from it.
    fn collection_end(&self, style: StructureStyle, content_end: usize, end_event: Span) -> usize {
        if style == StructureStyle::Flow { self.offset(end_event.end) } else { content_end }
    }

    /// Builds the node that starts with `event`, consuming its children.
    fn node(&mut self, event: Event<'s>, span: Span) -> Result<Node, EditError> {
        let start = self.offset(span.start);
        let own_end = self.offset(span.end);
        let line = span.start.line();
        let node = |kind, anchor, tag: Option<String>, end| Node { kind, anchor, tag, start, end, line };
        match event {
            Event::Scalar(value, style, anchor, tag) => Ok(node(
                Kind::Scalar { value: value.into_owned(), style },
                anchor,
                tag.map(|t| t.to_string()),
                own_end,
            )),
            Event::Alias(id) => Ok(node(Kind::Alias(id), 0, None, own_end)),
            Event::SequenceStart(style, anchor, tag) => {
                let mut items = Vec::new();
                let mut content_end = own_end;
                let end = loop {
                    let (event, span) = self.next_event()?;
                    if matches!(event, Event::SequenceEnd) {
                        break self.collection_end(style, content_end, span);
                    }
                    let item = self.node(event, span)?;
                    content_end = content_end.max(item.end);
                    items.push(item);
                };
                Ok(node(Kind::Sequence { style, items }, anchor, tag.map(|t| t.to_string()), end))
            }
            Event::MappingStart(style, anchor, tag) => {
                let mut entries = Vec::new();
                let mut content_end = own_end;
                let end = loop {
                    let (event, span) = self.next_event()?;
                    if matches!(event, Event::MappingEnd) {
                        break self.collection_end(style, content_end, span);
                    }
                    let key = self.node(event, span)?;
                    let (event, span) = self.next_event()?;
                    let value = self.node(event, span)?;
                    content_end = content_end.max(key.end).max(value.end);
                    if value.start == value.end {
                        // A null value is reported at (or before) its entry's `:`, which is part
                        // of the mapping's text too.
                        if let Some(colon) = colon_after(self.source, content_end) {
                            content_end = colon + 1;
                        }
                    }
                    entries.push((key, value));
                };
                Ok(node(Kind::Mapping { style, entries }, anchor, tag.map(|t| t.to_string()), end))
            }
            other => Err(EditError::Internal(format!("unexpected YAML event {other:?}"))),
        }
    }
}

/// What a node is, for error messages.
fn describe(node: &Node) -> &'static str {
    match &node.kind {
        Kind::Scalar { .. } if node.end == node.start => "empty (null)",
        Kind::Scalar { style: ScalarStyle::Plain, .. } => "a plain scalar",
        Kind::Scalar { style: ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted, .. } => {
            "a quoted scalar"
        }
        Kind::Scalar { .. } => "a block scalar",
        Kind::Sequence { .. } => "a sequence",
        Kind::Mapping { .. } => "a mapping",
        Kind::Alias(_) => "an alias",
    }
}

fn top_level_entries(root: &Node) -> Result<&[(Node, Node)], EditError> {
    match &root.kind {
        Kind::Mapping { style: StructureStyle::Block, entries } => {
            // Found by fuzz/fuzz_targets/manifest_edit.rs: a merged mapping could bring its own
            // `hostnames` that the rewritten top-level value does not override.
            if let Some((key, _)) = entries
                .iter()
                .find(|(key, _)| matches!(&key.kind, Kind::Scalar { value, .. } if value == "<<"))
            {
                return Err(EditError::MergeKey { line: key.line });
            }
            Ok(entries)
        }
        Kind::Mapping { .. } => Err(EditError::FlowMapping),
        _ => Err(EditError::NotAMapping { found: describe(root) }),
    }
}

/// The entry whose key is the scalar `name`, if any; an error if there are several.
fn find_unique<'n>(
    entries: &'n [(Node, Node)],
    name: &'static str,
) -> Result<Option<&'n (Node, Node)>, EditError> {
    let mut found: Option<&(Node, Node)> = None;
    for entry in entries {
        if matches!(&entry.0.kind, Kind::Scalar { value, .. } if value == name) {
            if let Some(first) = found {
                return Err(EditError::DuplicateKey {
                    key: name,
                    first_line: first.0.line,
                    second_line: entry.0.line,
                });
            }
            found = Some(entry);
        }
    }
    Ok(found)
}

fn check_properties(key: &'static str, value: &Node) -> Result<(), EditError> {
    let what = if matches!(value.kind, Kind::Alias(_)) {
        "an alias"
    } else if value.anchor != 0 {
        "an anchor"
    } else if value.tag.is_some() {
        "a tag"
    } else {
        return Ok(());
    };
    Err(EditError::AnchorTagOrAlias { key, line: value.line, what })
}

fn check_replicas(value: &Node) -> Result<(), EditError> {
    check_properties(REPLICAS, value)?;
    match value.kind {
        Kind::Scalar { style: ScalarStyle::Plain, .. } if value.end > value.start => Ok(()),
        _ => Err(EditError::ReplicasNotPlainScalar { line: value.line, found: describe(value) }),
    }
}

fn check_hostnames(value: &Node) -> Result<(), EditError> {
    check_properties(HOSTNAMES, value)?;
    let Kind::Sequence { items, .. } = &value.kind else {
        return Err(EditError::HostnamesNotSequence { line: value.line, found: describe(value) });
    };
    if items.iter().any(defines_anchor) {
        return Err(EditError::AnchorTagOrAlias {
            key: HOSTNAMES,
            line: value.line,
            what: "an anchor on one of its items (other nodes may refer to it)",
        });
    }
    Ok(())
}

fn defines_anchor(node: &Node) -> bool {
    node.anchor != 0
        || match &node.kind {
            Kind::Sequence { items, .. } => items.iter().any(defines_anchor),
            Kind::Mapping { entries, .. } => {
                entries.iter().any(|(k, v)| defines_anchor(k) || defines_anchor(v))
            }
            Kind::Scalar { .. } | Kind::Alias(_) => false,
        }
}

// ---------------------------------------------------------------------------------------------
// Text helpers and the edits themselves.

/// A replacement of `source[start..end]` by `text` (an insertion when `start == end`).
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

impl Edit {
    fn replace(start: usize, end: usize, text: impl Into<String>) -> Self {
        Edit { start, end, text: text.into() }
    }
}

fn apply_edits(source: &str, mut edits: Vec<Edit>) -> Result<String, EditError> {
    edits.sort_by_key(|e| (e.start, e.end));
    let mut out = String::with_capacity(source.len() + 64);
    let mut pos = 0;
    for edit in edits {
        let kept = source
            .get(pos..edit.start)
            .filter(|_| edit.end >= edit.start && edit.end <= source.len())
            .ok_or_else(|| EditError::Internal("overlapping or out-of-range edits".to_owned()))?;
        out.push_str(kept);
        out.push_str(&edit.text);
        pos = edit.end;
    }
    let rest =
        source.get(pos..).ok_or_else(|| EditError::Internal("edit ends inside a character".to_owned()))?;
    out.push_str(rest);
    Ok(out)
}

/// The file's line ending: that of its first line break (LF, CRLF, or a lone CR, which YAML reads
/// as a line break too), LF when it has none.
fn line_ending(source: &str) -> &'static str {
    match source.find(['\n', '\r']) {
        Some(i) if source[i..].starts_with("\r\n") => "\r\n",
        Some(i) if source[i..].starts_with('\r') => "\r",
        _ => "\n",
    }
}

/// Offset of the first byte of the line holding `pos` (after a LF, a CRLF or a lone CR).
fn line_start(source: &str, pos: usize) -> usize {
    source[..pos].rfind(['\n', '\r']).map_or(0, |i| i + 1)
}

/// Offset of the line break (`\n`, `\r\n` or a lone `\r`) ending the line that holds `pos`, or the
/// end of the text.
fn line_end(source: &str, pos: usize) -> usize {
    source[pos..].find(['\n', '\r']).map_or(source.len(), |i| pos + i)
}

/// The spaces before `pos` on its line, if only spaces precede it.
fn indentation(source: &str, pos: usize) -> Option<&str> {
    let prefix = &source[line_start(source, pos)..pos];
    prefix.bytes().all(|b| b == b' ').then_some(prefix)
}

/// Offset of the `:` after a key ending at `key_end`, if only spaces or tabs come between.
fn colon_after(source: &str, key_end: usize) -> Option<usize> {
    let rest = &source[key_end..];
    let skipped = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    (rest.as_bytes().get(skipped) == Some(&b':')).then_some(key_end + skipped)
}

fn hostnames_edits(
    source: &str,
    key: &Node,
    value: &Node,
    names: &[String],
    eol: &str,
    edits: &mut Vec<Edit>,
) -> Result<(), EditError> {
    let Kind::Sequence { style, items } = &value.kind else {
        return Err(EditError::HostnamesNotSequence { line: value.line, found: describe(value) });
    };
    if *style == StructureStyle::Flow {
        edits.push(Edit::replace(value.start, value.end, flow_sequence(names)));
        return Ok(());
    }
    let unsupported = |reason| EditError::UnsupportedLayout { key: HOSTNAMES, line: value.line, reason };
    let bytes = source.as_bytes();
    // The parser reports a block sequence at its first `-`, or, for a sequence at the key's own
    // indentation, at the first item's content; either way the first `-` starts its line.
    let first_line = line_start(source, value.start);
    let indent_len = bytes[first_line..value.start].iter().take_while(|&&b| b == b' ').count();
    let dash = first_line + indent_len;
    if bytes.get(dash) != Some(&b'-') {
        return Err(unsupported("the first list item does not start its own line with `-`"));
    }
    let indent = &source[first_line..dash];
    // The old items' text, without trailing blank space (block scalars reach into the next line).
    let mut end = value.end.max(dash + 1);
    while end > dash + 1 && matches!(bytes[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
        end -= 1;
    }
    if names.is_empty() {
        // `hostnames: []` on the key's line; the lines of the old items go, from the end of the
        // last non-blank line before the first one to the end of the last one's line (so a
        // missing final newline stays missing, and comment lines above the list stay).
        let colon = colon_after(source, key.end).ok_or_else(|| unsupported("no `:` right after the key"))?;
        if first_line <= colon + 1 {
            return Err(unsupported("the list starts on the key's line"));
        }
        let mut delete_from = first_line;
        while delete_from > colon + 1 && matches!(bytes[delete_from - 1], b' ' | b'\t' | b'\r' | b'\n') {
            delete_from -= 1;
        }
        edits.push(Edit::replace(colon + 1, colon + 1, " []"));
        edits.push(Edit::replace(delete_from, line_end(source, end), ""));
        return Ok(());
    }
    let dash_style = match items.first() {
        Some(first) if first.start > dash + 1 && bytes[dash + 1..first.start].iter().all(|&b| b == b' ') => {
            &source[dash..first.start]
        }
        _ => "- ",
    };
    let separator = format!("{eol}{indent}");
    let text =
        names.iter().map(|name| format!("{dash_style}{}", scalar(name))).collect::<Vec<_>>().join(&separator);
    edits.push(Edit::replace(dash, end, text));
    Ok(())
}

/// `[a, b, c]`, with names quoted where needed.
fn flow_sequence(names: &[String]) -> String {
    let items: Vec<String> = names.iter().map(|name| scalar(name)).collect();
    format!("[{}]", items.join(", "))
}

/// A name as a YAML scalar that reads back as exactly that string: plain when that is
/// unambiguous, double-quoted otherwise.
fn scalar(name: &str) -> String {
    if is_plain_safe(name) { name.to_owned() } else { double_quoted(name) }
}

/// Whether `name`, written plain, is read back by YAML 1.1 and 1.2 readers as that very string.
/// Conservative: it only admits `[a-zA-Z0-9][a-zA-Z0-9_.-]*` that is not a null/bool/special
/// word and does not look like a number or a date.
fn is_plain_safe(name: &str) -> bool {
    const WORDS: [&str; 12] =
        ["y", "yes", "n", "no", "true", "false", "on", "off", "null", "nan", "inf", "infinity"];
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    if !first.is_ascii_alphanumeric()
        || !bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return false;
    }
    if WORDS.iter().any(|word| name.eq_ignore_ascii_case(word)) {
        return false;
    }
    // Integers, floats, hex/octal/binary literals, 1.1 underscores and dates all start with a
    // digit and use only these characters.
    let numeric_looking =
        |b: &u8| b.is_ascii_hexdigit() || matches!(b, b'x' | b'X' | b'o' | b'O' | b'_' | b'.' | b'-' | b'+');
    !(first.is_ascii_digit() && bytes.iter().all(numeric_looking))
}

fn double_quoted(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{0}'..='\u{1F}'
            | '\u{7F}'..='\u{9F}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{FEFF}'
            | '\u{FFFE}'
            | '\u{FFFF}' => {
                out.push_str(&format!("\\u{:04X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Verification of the result.

fn verify(
    before: &Node,
    output: &str,
    replicas: u32,
    hostnames: &[String],
    had_hostnames: bool,
) -> Result<(), EditError> {
    let fail = |what: String| EditError::Internal(format!("the rewritten manifest {what}"));
    let after = parse_single_document(output).map_err(|e| fail(format!("does not parse back ({e})")))?;
    if before.anchor != after.anchor || before.tag != after.tag {
        return Err(fail("changed the top-level node's anchor or tag".to_owned()));
    }
    let before_entries = top_level_entries(before).map_err(|e| fail(e.to_string()))?;
    let after_entries = top_level_entries(&after).map_err(|e| fail(e.to_string()))?;
    let (kept_before, kept_after) = (others(before_entries), others(after_entries));
    if kept_before.len() != kept_after.len()
        || kept_before
            .iter()
            .zip(&kept_after)
            .any(|(b, a)| !same_value(&b.0, &a.0) || !same_value(&b.1, &a.1))
    {
        return Err(fail("changed keys other than `replicas` and `hostnames`".to_owned()));
    }

    let replicas_ok = find_unique(after_entries, REPLICAS)
        .map_err(|e| fail(e.to_string()))?
        .is_some_and(|(_, value)| {
            value.anchor == 0
                && value.tag.is_none()
                && matches!(&value.kind, Kind::Scalar { value, style: ScalarStyle::Plain } if *value == replicas.to_string())
        });
    if !replicas_ok {
        return Err(fail("does not hold the requested `replicas`".to_owned()));
    }
    let hostnames_ok = match find_unique(after_entries, HOSTNAMES).map_err(|e| fail(e.to_string()))? {
        None => !had_hostnames && hostnames.is_empty(),
        Some((_, value)) => {
            value.anchor == 0
                && value.tag.is_none()
                && matches!(&value.kind, Kind::Sequence { items, .. }
                    if items.len() == hostnames.len() && items.iter().zip(hostnames).all(|(item, name)| is_string_scalar(item, name)))
        }
    };
    if !hostnames_ok {
        return Err(fail("does not hold the requested `hostnames`".to_owned()));
    }
    Ok(())
}

/// The entries other than `replicas` and `hostnames`.
fn others(entries: &[(Node, Node)]) -> Vec<&(Node, Node)> {
    entries
        .iter()
        .filter(|(key, _)| !matches!(&key.kind, Kind::Scalar { value, .. } if value == REPLICAS || value == HOSTNAMES))
        .collect()
}

/// Whether `node` is an untagged scalar that reads as the string `expected`.
fn is_string_scalar(node: &Node, expected: &str) -> bool {
    node.anchor == 0
        && node.tag.is_none()
        && matches!(&node.kind, Kind::Scalar { value, style } if value == expected && (*style != ScalarStyle::Plain || is_plain_safe(value)))
}

/// Whether two nodes have the same YAML value (positions and collection styles aside).
fn same_value(a: &Node, b: &Node) -> bool {
    a.anchor == b.anchor
        && a.tag == b.tag
        && match (&a.kind, &b.kind) {
            (Kind::Scalar { value: va, style: sa }, Kind::Scalar { value: vb, style: sb }) => {
                va == vb && sa == sb
            }
            (Kind::Sequence { items: ia, .. }, Kind::Sequence { items: ib, .. }) => {
                ia.len() == ib.len() && ia.iter().zip(ib).all(|(x, y)| same_value(x, y))
            }
            (Kind::Mapping { entries: ea, .. }, Kind::Mapping { entries: eb, .. }) => {
                ea.len() == eb.len()
                    && ea.iter().zip(eb).all(|((ka, va), (kb, vb))| same_value(ka, kb) && same_value(va, vb))
            }
            (Kind::Alias(x), Kind::Alias(y)) => x == y,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const DEFAULT: &str = "\
# ringlb cluster: edit and save; the running load balancer applies it.
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

    const DEFAULT_BLOCK: &str = "\
# ringlb cluster: edit and save; the running load balancer applies it.
name: demo                  # cluster name
replicas: 3                 # N: replicas to keep alive
hostnames:                  # preferred names; the rest are generated
  # the first one is the seed
  - server1                 # seed
  # spare
  - server2
  - server3                 # last
listen: 0.0.0.0:5000
replica:
  runtime: docker           # docker | process | static
  image: ringlb:latest
  port: 5000
hashing:
  algorithm: maglev
";

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn parse(text: &str) -> Value {
        serde_saphyr::from_str::<Value>(text).unwrap_or_else(|e| panic!("does not parse: {e}\n{text}"))
    }

    /// `after` has the value of `before` except for `replicas` and `hostnames`, which hold the
    /// requested values (`hostnames` absent when it was absent and the list is empty).
    fn assert_same_except_scale(before: &str, after: &str, replicas: u32, hostnames: &[String]) {
        let mut b = parse(before);
        let mut a = parse(after);
        let (b, a) = (b.as_object_mut().expect("mapping"), a.as_object_mut().expect("mapping"));
        let had = b.remove(HOSTNAMES).is_some();
        b.remove(REPLICAS);
        assert_eq!(a.remove(REPLICAS), Some(json!(replicas)), "{after}");
        let got = a.remove(HOSTNAMES);
        if had || !hostnames.is_empty() {
            assert_eq!(got, Some(json!(hostnames)), "{after}");
        } else {
            assert_eq!(got, None, "{after}");
        }
        assert_eq!(a, b, "other keys changed:\n{after}");
    }

    fn rewrite(source: &str, replicas: u32, list: &[&str]) -> String {
        let list = names(list);
        let out = rewrite_scale(source, replicas, &list).unwrap_or_else(|e| panic!("{e}\n{source}"));
        assert_same_except_scale(source, &out, replicas, &list);
        assert_eq!(rewrite_scale(&out, replicas, &list).expect("second pass"), out, "not idempotent");
        out
    }

    #[test]
    fn default_manifest_flow_style() {
        let out = rewrite(DEFAULT, 5, &["alpha", "beta"]);
        let expected = DEFAULT
            .replace("replicas: 3 ", "replicas: 5 ")
            .replace("[server1, server2, server3]", "[alpha, beta]");
        assert_eq!(out, expected);
    }

    #[test]
    fn default_manifest_block_style_keeps_indent_and_last_comment() {
        let out = rewrite(DEFAULT_BLOCK, 12, &["alpha", "beta", "gamma", "delta"]);
        let expected = "\
# ringlb cluster: edit and save; the running load balancer applies it.
name: demo                  # cluster name
replicas: 12                 # N: replicas to keep alive
hostnames:                  # preferred names; the rest are generated
  # the first one is the seed
  - alpha
  - beta
  - gamma
  - delta                 # last
listen: 0.0.0.0:5000
replica:
  runtime: docker           # docker | process | static
  image: ringlb:latest
  port: 5000
hashing:
  algorithm: maglev
";
        assert_eq!(out, expected);
    }

    #[test]
    fn block_style_keeps_dash_spacing_and_zero_indent() {
        let source = "replicas: 1\nhostnames:\n-   a\n-   b\nport: 1\n";
        assert_eq!(
            rewrite(source, 2, &["web", "api", "db"]),
            "replicas: 2\nhostnames:\n-   web\n-   api\n-   db\nport: 1\n"
        );
    }

    #[test]
    fn same_values_reproduce_the_file() {
        assert_eq!(rewrite(DEFAULT, 3, &["server1", "server2", "server3"]), DEFAULT);
        let block = "replicas: 3 # n\nhostnames:\n  - server1\n  - server2 # two\n\nlisten: x\n";
        assert_eq!(rewrite(block, 3, &["server1", "server2"]), block);
    }

    #[test]
    fn comments_and_other_lines_are_byte_identical() {
        let out = rewrite(DEFAULT, 7, &["one", "two", "three", "four"]);
        let changed: Vec<(&str, &str)> = DEFAULT.lines().zip(out.lines()).filter(|(a, b)| a != b).collect();
        assert_eq!(
            changed,
            [
                (
                    "replicas: 3                 # N: replicas to keep alive",
                    "replicas: 7                 # N: replicas to keep alive"
                ),
                (
                    "hostnames: [server1, server2, server3]  # preferred names; the rest are generated",
                    "hostnames: [one, two, three, four]  # preferred names; the rest are generated"
                ),
            ]
        );
        assert_eq!(DEFAULT.lines().count(), out.lines().count());
    }

    #[test]
    fn crlf_line_endings_are_kept() {
        for source in [DEFAULT, DEFAULT_BLOCK] {
            let crlf = source.replace('\n', "\r\n");
            let out = rewrite(&crlf, 4, &["a", "b", "c", "d", "e"]);
            assert!(!out.replace("\r\n", "").contains('\n'), "bare LF in {out:?}");
            assert_eq!(out.replace("\r\n", "\n"), rewrite(source, 4, &["a", "b", "c", "d", "e"]));
            let emptied = rewrite(&crlf, 4, &[]);
            assert!(!emptied.replace("\r\n", "").contains('\n'), "bare LF in {emptied:?}");
        }
        let missing = "name: demo\r\nreplicas: 1\r\nport: 2\r\n";
        assert_eq!(rewrite(missing, 2, &["a"]), "name: demo\r\nreplicas: 2\r\nhostnames: [a]\r\nport: 2\r\n");
        let no_replicas = "name: demo\r\n";
        assert_eq!(rewrite(no_replicas, 2, &["a"]), "replicas: 2\r\nhostnames: [a]\r\nname: demo\r\n");
    }

    /// Found by `fuzz/fuzz_targets/manifest_edit.rs`: YAML also breaks lines at a lone CR, but the
    /// edit only knew LF and CRLF, so it inserted `hostnames:` a line too late, inside the next
    /// entry (and then refused its own result as an internal error).
    /// Found by `fuzz/fuzz_targets/manifest_edit.rs`: a top-level merge key (`<<`) can bring a
    /// `hostnames` of its own that the rewrite would not override; such a file is refused.
    #[test]
    fn a_top_level_merge_key_is_refused() {
        let merged = "<<:  \n- hostnames: scal\n";
        let error = rewrite_scale(merged, 0, &[]).unwrap_err();
        assert!(matches!(error, EditError::MergeKey { line: 1 }), "{error}");
        let text = "base: &b {port: 5000}\nname: demo\n<<: *b\nreplicas: 2\n";
        assert!(matches!(rewrite_scale(text, 3, &[]).unwrap_err(), EditError::MergeKey { line: 3 }));
    }

    #[test]
    fn a_lone_cr_is_a_line_break_too() {
        let mixed = "name: demo\r\nreplicas: 2\rother:\r\n  - a\r\n";
        assert_eq!(
            rewrite(mixed, 3, &["x"]),
            "name: demo\r\nreplicas: 3\r\nhostnames: [x]\rother:\r\n  - a\r\n"
        );
        assert_eq!(
            rewrite("name: demo\rreplicas: 2\r", 3, &["x"]),
            "name: demo\rreplicas: 3\rhostnames: [x]\r"
        );
        assert_eq!(
            rewrite("name: demo\rport: 1\r", 3, &["x"]),
            "replicas: 3\rhostnames: [x]\rname: demo\rport: 1\r"
        );
        let block = "replicas: 2\rhostnames:\r  - a\r  - b\rport: 1\r";
        assert_eq!(rewrite(block, 1, &["c"]), "replicas: 1\rhostnames:\r  - c\rport: 1\r");
        assert_eq!(rewrite(block, 0, &[]), "replicas: 0\rhostnames: []\rport: 1\r");
    }

    #[test]
    fn missing_trailing_newline_is_kept() {
        let flow = "replicas: 3\nhostnames: [a, b]";
        assert_eq!(rewrite(flow, 1, &["c"]), "replicas: 1\nhostnames: [c]");
        let block = "replicas: 3\nhostnames:\n  - a\n  - b";
        assert_eq!(rewrite(block, 1, &["c", "d"]), "replicas: 1\nhostnames:\n  - c\n  - d");
        assert_eq!(rewrite(block, 1, &[]), "replicas: 1\nhostnames: []");
        assert_eq!(rewrite("replicas: 3", 4, &["x"]), "replicas: 4\nhostnames: [x]");
        assert_eq!(rewrite("replicas: 3 # n", 4, &["x"]), "replicas: 4 # n\nhostnames: [x]");
    }

    #[test]
    fn missing_hostnames_is_inserted_after_the_replicas_line() {
        let source = "# top\nname: demo\nreplicas: 3   # N\n# about listen\nlisten: x\n";
        assert_eq!(
            rewrite(source, 3, &["a", "true"]),
            "# top\nname: demo\nreplicas: 3   # N\nhostnames: [a, \"true\"]\n# about listen\nlisten: x\n"
        );
        // Indented top-level mapping.
        let indented = "---\n  name: demo\n  replicas: 3\n";
        assert_eq!(rewrite(indented, 3, &["a"]), "---\n  name: demo\n  replicas: 3\n  hostnames: [a]\n");
    }

    #[test]
    fn missing_hostnames_with_empty_list_inserts_nothing() {
        let source = "name: demo\nreplicas: 3   # N\nlisten: x\n";
        assert_eq!(rewrite(source, 6, &[]), "name: demo\nreplicas: 6   # N\nlisten: x\n");
    }

    #[test]
    fn missing_replicas_is_inserted_before_the_first_key() {
        let source = "# leading\n# comment block\n\nname: demo # n\nhostnames: [a]\n";
        assert_eq!(
            rewrite(source, 2, &["b"]),
            "# leading\n# comment block\n\nreplicas: 2\nname: demo # n\nhostnames: [b]\n"
        );
        assert_eq!(rewrite("name: demo\n", 2, &[]), "replicas: 2\nname: demo\n");
        assert_eq!(rewrite("name: demo\n", 2, &["a"]), "replicas: 2\nhostnames: [a]\nname: demo\n");
    }

    #[test]
    fn empty_list() {
        assert_eq!(rewrite(DEFAULT, 3, &[]), DEFAULT.replace("[server1, server2, server3]", "[]"));
        let out = rewrite(DEFAULT_BLOCK, 3, &[]);
        assert_eq!(
            out,
            DEFAULT_BLOCK.replace(
                "hostnames:                  # preferred names; the rest are generated\n  # the first one is the seed\n  - server1                 # seed\n  # spare\n  - server2\n  - server3                 # last\n",
                "hostnames: []                  # preferred names; the rest are generated\n  # the first one is the seed\n",
            )
        );
        // From empty: flow style it is.
        let empty = "replicas: 1\nhostnames: []   # none yet\nport: 2\n";
        assert_eq!(rewrite(empty, 1, &["a", "b"]), "replicas: 1\nhostnames: [a, b]   # none yet\nport: 2\n");
        assert_eq!(rewrite(empty, 1, &[]), empty);
    }

    #[test]
    fn names_that_need_quoting_read_back_as_strings() {
        let tricky = [
            "true",
            "false",
            "True",
            "null",
            "Null",
            "~",
            "1e3",
            "0x10",
            "0o17",
            "123",
            "1_000",
            "12.5",
            "yes",
            "no",
            "on",
            "off",
            "Y",
            "n",
            "nan",
            ".inf",
            "2001-12-14",
            "",
            "a b",
            "x: y",
            "# c",
            "- x",
            "[a]",
            "{a}",
            "quo\"te",
            "back\\slash",
            "tab\there",
            "new\nline",
            "&anchor",
            "*alias",
            "!tag",
            "%pct",
            "@at",
            "`bt",
            "'sq",
            "ünï",
            "-",
            "?",
            "<<",
            "=",
        ];
        let out = rewrite(DEFAULT, 3, &tricky);
        for plain in ["server1", "web-1", "a.b_c", "3server"] {
            assert!(is_plain_safe(plain), "{plain}");
        }
        let block = rewrite(DEFAULT_BLOCK, 3, &tricky);
        assert!(out.contains("\"true\", \"false\""), "{out}");
        assert!(block.contains("  - \"0x10\"\n"), "{block}");
        let plain = rewrite(DEFAULT, 3, &["web-1", "3server", "a.b_c"]);
        assert!(plain.contains("[web-1, 3server, a.b_c]"), "{plain}");
    }

    #[test]
    fn nested_keys_with_the_same_names_are_left_alone() {
        let source = "\
replica:
  replicas: 1          # not this one
  hostnames: [x, y]    # nor this
autoscale: {hostnames: [p], replicas: 9}
replicas: 3
";
        let out = rewrite(source, 5, &["a"]);
        assert_eq!(
            out,
            "\
replica:
  replicas: 1          # not this one
  hostnames: [x, y]    # nor this
autoscale: {hostnames: [p], replicas: 9}
replicas: 5
hostnames: [a]
"
        );
        let no_top = "replica: {replicas: 1}\nhostnames: [a]\n";
        assert_eq!(rewrite(no_top, 2, &["b"]), "replicas: 2\nreplica: {replicas: 1}\nhostnames: [b]\n");
    }

    #[test]
    fn flow_list_spanning_lines_becomes_one_line() {
        let source = "replicas: 3\nhostnames: [\n  server1,   # first\n  server2,\n]  # tail\nport: 5\n";
        assert_eq!(rewrite(source, 3, &["a", "b"]), "replicas: 3\nhostnames: [a, b]  # tail\nport: 5\n");
    }

    #[test]
    fn document_start_marker_and_leading_comment_block() {
        let source = format!(
            "# header one\n# header two\n\n---\n{}",
            DEFAULT.lines().skip(1).collect::<Vec<_>>().join("\n")
        );
        let out = rewrite(&source, 8, &["z"]);
        assert!(out.starts_with("# header one\n# header two\n\n---\nname: demo"), "{out}");
        assert!(out.contains("\nreplicas: 8                 # N"), "{out}");
        assert!(out.contains("\nhostnames: [z]  # preferred"), "{out}");
        assert!(!out.ends_with('\n'));

        let without_replicas = "# header\n---\n# about name\nname: demo\n...\n";
        assert_eq!(
            rewrite(without_replicas, 1, &["a"]),
            "# header\n---\n# about name\nreplicas: 1\nhostnames: [a]\nname: demo\n...\n"
        );
    }

    #[test]
    fn block_scalar_and_nested_items_are_replaced_whole() {
        let source =
            "replicas: 1\nhostnames:\n  - |\n    literal\n\n  - {a: 1}\n  - - x\n    - y\n# after\nport: 2\n";
        assert_eq!(rewrite(source, 1, &["a"]), "replicas: 1\nhostnames:\n  - a\n# after\nport: 2\n");
    }

    #[test]
    fn block_list_layout_variants() {
        // Item content on the line after its dash: the new items use `- `.
        let split = "replicas: 3\nhostnames:\n  -\n    a\n  - b\n";
        assert_eq!(rewrite(split, 3, &["p", "q"]), "replicas: 3\nhostnames:\n  - p\n  - q\n");
        // Blank lines between the items go; those around the list stay.
        let spaced = "replicas: 3\nhostnames:\n\n  - a\n\n  - b\n\nx: 1\n";
        assert_eq!(rewrite(spaced, 3, &["p", "q"]), "replicas: 3\nhostnames:\n\n  - p\n  - q\n\nx: 1\n");
        // Emptied: blank lines right above the first item go with it, comment lines stay.
        assert_eq!(rewrite(spaced, 3, &[]), "replicas: 3\nhostnames: []\n\nx: 1\n");
        let commented =
            "replicas: 3\nhostnames:   # names\n  # about the list\n\n  - a   # a\n  - b   # b\n# end\n";
        assert_eq!(
            rewrite(commented, 3, &[]),
            "replicas: 3\nhostnames: []   # names\n  # about the list\n# end\n"
        );
        // Null items, and a last item that is an explicit key without a value.
        let nulls = "replicas: 3\nhostnames:\n  -\n  # c\n  -\nx: 1\n";
        let null_values = "  replicas: 3\n  hostnames:\n    - a:   # c\n    - b:\n";
        assert_eq!(rewrite(null_values, 3, &["p"]), "  replicas: 3\n  hostnames:\n    - p\n");
        assert_eq!(rewrite(nulls, 3, &["p", "q"]), "replicas: 3\nhostnames:\n  - p\n  - q\nx: 1\n");
        assert_eq!(rewrite(nulls, 3, &[]), "replicas: 3\nhostnames: []\nx: 1\n");
        let explicit = "replicas: 3\nhostnames:\n  - ? a\n    # c\n\nx: 1\n";
        assert_eq!(rewrite(explicit, 3, &["p"]), "replicas: 3\nhostnames:\n  - p\n\nx: 1\n");
        // Followed by an explicit document end.
        let ended = "replicas: 3\nhostnames:\n  - a\n...\n";
        assert_eq!(rewrite(ended, 3, &["b"]), "replicas: 3\nhostnames:\n  - b\n...\n");
    }

    #[test]
    fn odd_but_valid_layouts() {
        // Tabs as separators, a byte-order mark, non-ASCII text elsewhere, a %YAML directive.
        assert_eq!(
            rewrite("replicas:\t3\t# c\nhostnames:\t[a]\n", 4, &["b"]),
            "replicas:\t4\t# c\nhostnames:\t[b]\n"
        );
        assert_eq!(
            rewrite("\u{FEFF}# c\nname: x\n", 4, &["b"]),
            "\u{FEFF}# c\nreplicas: 4\nhostnames: [b]\nname: x\n"
        );
        assert_eq!(
            rewrite("name: \"ünïcödé\"  # ü\nreplicas: 3\nhostnames: [ä]\n", 4, &["b"]),
            "name: \"ünïcödé\"  # ü\nreplicas: 4\nhostnames: [b]\n"
        );
        assert_eq!(
            rewrite("%YAML 1.2\n---\nreplicas: 3\n", 4, &["b"]),
            "%YAML 1.2\n---\nreplicas: 4\nhostnames: [b]\n"
        );
        // A value on the line after its key.
        assert_eq!(
            rewrite("replicas:\n  3\nport: 1\n", 4, &["b"]),
            "replicas:\n  4\nhostnames: [b]\nport: 1\n"
        );
    }

    #[test]
    fn invalid_yaml_reports_line_and_column() {
        let err = rewrite_scale("name: demo\nhostnames: [a, b\nlisten: x: y\n", 1, &[]).expect_err("invalid");
        match &err {
            EditError::InvalidYaml { line, column, message } => {
                assert_eq!(*line, 3, "{err}");
                assert!(*column >= 1, "{err}");
                assert!(!message.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("line 3, column"), "{err}");

        let err = rewrite_scale("a: 1\n  b: 2\n", 1, &[]).expect_err("invalid");
        assert!(matches!(err, EditError::InvalidYaml { line: 2, column: 4, .. }), "{err:?}");
    }

    #[test]
    fn refuses_what_it_cannot_edit_safely() {
        type Check = fn(&EditError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("a: 1\n---\nb: 2\n", |e| matches!(e, EditError::MultipleDocuments { count: 2 })),
            ("- a\n- b\n", |e| matches!(e, EditError::NotAMapping { found: "a sequence" })),
            ("just text\n", |e| matches!(e, EditError::NotAMapping { .. })),
            ("", |e| matches!(e, EditError::NotAMapping { found: "empty" })),
            ("# only a comment\n", |e| matches!(e, EditError::NotAMapping { .. })),
            ("{replicas: 1}\n", |e| matches!(e, EditError::FlowMapping)),
            ("replicas: 1\nreplicas: 2\n", |e| {
                matches!(e, EditError::DuplicateKey { key: "replicas", first_line: 1, second_line: 2 })
            }),
            ("replicas: \"3\"\n", |e| {
                matches!(e, EditError::ReplicasNotPlainScalar { found: "a quoted scalar", .. })
            }),
            ("replicas:\n", |e| matches!(e, EditError::ReplicasNotPlainScalar { found: "empty (null)", .. })),
            ("replicas: {n: 1}\n", |e| {
                matches!(e, EditError::ReplicasNotPlainScalar { found: "a mapping", .. })
            }),
            ("replicas: 1\nhostnames: a\n", |e| {
                matches!(e, EditError::HostnamesNotSequence { line: 2, found: "a plain scalar" })
            }),
            ("replicas: 1\nhostnames:\n", |e| matches!(e, EditError::HostnamesNotSequence { .. })),
            ("n: &n 3\nreplicas: *n\n", |e| {
                matches!(e, EditError::AnchorTagOrAlias { key: "replicas", what: "an alias", .. })
            }),
            ("replicas: &n 3\nother: *n\n", |e| {
                matches!(e, EditError::AnchorTagOrAlias { key: "replicas", what: "an anchor", .. })
            }),
            ("replicas: !!int 3\n", |e| matches!(e, EditError::AnchorTagOrAlias { what: "a tag", .. })),
            ("replicas: 1\nhostnames: !!seq [a]\n", |e| {
                matches!(e, EditError::AnchorTagOrAlias { key: "hostnames", what: "a tag", .. })
            }),
            ("replicas: 1\nhostnames: [&h a]\nx: *h\n", |e| {
                matches!(e, EditError::AnchorTagOrAlias { key: "hostnames", .. })
            }),
            ("replicas: 1\nh: &h [a]\nhostnames: *h\n", |e| {
                matches!(e, EditError::AnchorTagOrAlias { key: "hostnames", what: "an alias", .. })
            }),
        ];
        for (source, expected) in cases {
            match rewrite_scale(source, 1, &names(&["a"])) {
                Err(e) => assert!(expected(&e), "{source:?}: unexpected {e:?}"),
                Ok(out) => panic!("{source:?}: accepted, gave {out:?}"),
            }
        }
    }

    #[test]
    fn quoted_keys_count_as_the_keys() {
        assert_eq!(
            rewrite("\"replicas\": 3\n'hostnames': [a]\n", 4, &["b"]),
            "\"replicas\": 4\n'hostnames': [b]\n"
        );
        assert_eq!(rewrite("replicas: 3\nhostnames :\n  - a\n", 4, &[]), "replicas: 4\nhostnames : []\n");
        assert_eq!(rewrite("\"name\": demo\n", 4, &["b"]), "replicas: 4\nhostnames: [b]\n\"name\": demo\n");
        // An explicit `? key` first: there is no line to put `replicas:` before.
        let explicit = rewrite_scale("? |\n    t\n", 1, &[]).expect_err("explicit key");
        assert!(matches!(explicit, EditError::UnsupportedLayout { key: "replicas", .. }), "{explicit:?}");
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,12}",
            1 => prop::sample::select(vec![
                "true", "false", "TRUE", "null", "NULL", "yes", "No", "on", "OFF", "y", "n", "nan", "inf",
                "123", "0", "007", "1e3", "1E-3", "0x10", "0o17", "0b101", "1_000", "1.5", "10.0.0.1",
                "2001-12-14", "12e", "3server", "infinity",
            ])
            .prop_map(str::to_owned),
            1 => "[0-9][0-9eE.x_-]{0,6}",
            // Not container names, but they must survive too (quoted).
            1 => any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn rewritten_manifest_parses_back_to_the_requested_values(
            list in prop::collection::vec(name_strategy(), 0..7),
            replicas in any::<u32>(),
            base in prop::sample::select(vec![0usize, 1, 2, 3, 4]),
        ) {
            let no_hostnames = DEFAULT.replace("hostnames: [server1, server2, server3]  # preferred names; the rest are generated\n", "");
            let no_replicas = DEFAULT.replace("replicas: 3                 # N: replicas to keep alive\n", "");
            let sources = [DEFAULT.to_owned(), DEFAULT_BLOCK.to_owned(), no_hostnames, no_replicas, DEFAULT_BLOCK.replace('\n', "\r\n")];
            let source = &sources[base];
            let out = rewrite_scale(source, replicas, &list).map_err(|e| TestCaseError::fail(e.to_string()))?;
            assert_same_except_scale(source, &out, replicas, &list);
            let again = rewrite_scale(&out, replicas, &list).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&again, &out);
            // Going through another value and back also lands on the same text.
            let other = rewrite_scale(&out, replicas / 2, &[]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = rewrite_scale(&other, replicas, &list).map_err(|e| TestCaseError::fail(e.to_string()))?;
            assert_same_except_scale(source, &back, replicas, &list);
        }
    }
}
