//! The byte-level edits: replacements of spans of the source, the line helpers they are placed
//! with, and the edits that rewrite a `hostnames` sequence in place.

use super::quote::{flow_sequence, scalar};
use super::{EditError, HOSTNAMES};
use crate::manifest::yaml_tree::{Kind, Node, colon_after};
use serde_saphyr::granit_parser::StructureStyle;

/// A replacement of `source[start..end]` by `text` (an insertion when `start == end`).
pub(super) struct Edit {
    start: usize,
    end: usize,
    text: String,
}

impl Edit {
    pub(super) fn replace(start: usize, end: usize, text: impl Into<String>) -> Self {
        Edit { start, end, text: text.into() }
    }
}

pub(super) fn apply_edits(source: &str, mut edits: Vec<Edit>) -> Result<String, EditError> {
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
pub(super) fn line_ending(source: &str) -> &'static str {
    match source.find(['\n', '\r']) {
        Some(i) if source[i..].starts_with("\r\n") => "\r\n",
        Some(i) if source[i..].starts_with('\r') => "\r",
        _ => "\n",
    }
}

/// Offset of the first byte of the line holding `pos` (after a LF, a CRLF or a lone CR).
pub(super) fn line_start(source: &str, pos: usize) -> usize {
    source[..pos].rfind(['\n', '\r']).map_or(0, |i| i + 1)
}

/// Offset of the line break (`\n`, `\r\n` or a lone `\r`) ending the line that holds `pos`, or the
/// end of the text.
pub(super) fn line_end(source: &str, pos: usize) -> usize {
    source[pos..].find(['\n', '\r']).map_or(source.len(), |i| pos + i)
}

/// `end` moved back over the blank space (spaces, tabs, line breaks) before it: where a block
/// value's text ends, as its span reaches into the next lines.
pub(super) fn trimmed_end(source: &str, end: usize) -> usize {
    let bytes = source.as_bytes();
    let mut end = end.min(bytes.len());
    while end > 0 && matches!(bytes[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
        end -= 1;
    }
    end
}

/// The spaces before `pos` on its line, if only spaces precede it.
pub(super) fn indentation(source: &str, pos: usize) -> Option<&str> {
    let prefix = &source[line_start(source, pos)..pos];
    prefix.bytes().all(|b| b == b' ').then_some(prefix)
}

pub(super) fn hostnames_edits(
    source: &str,
    key: &Node,
    value: &Node,
    names: &[String],
    eol: &str,
    edits: &mut Vec<Edit>,
) -> Result<(), EditError> {
    let Kind::Sequence { style, items } = &value.kind else {
        return Err(EditError::HostnamesNotSequence { line: value.line, found: value.describe() });
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
    let end = trimmed_end(source, value.end.max(dash + 1)).max(dash + 1);
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
