//! YAML text as a tree of nodes that remember where they sit in it: what the editor splices by, and
//! what the locator looks paths and positions up in.
//!
//! Built in one walk of the event stream of serde-saphyr's parser ([`serde_saphyr::granit_parser`]).
//! The text need not be valid YAML: the tree then holds what was read before the first syntax
//! error, the collections open there closed where it stopped, and says why it stopped. It keeps
//! data and positions only; comments carry no data and are not in it.

use serde_saphyr::granit_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Span, StructureStyle};

/// The documents of a text, as far as they could be read.
#[derive(Debug)]
pub(super) struct Tree {
    /// The root node of each document, in order.
    pub(super) documents: Vec<Node>,
    /// Why reading stopped before the end of the text, if it did; the last document is then cut
    /// short there.
    pub(super) cut: Option<Cut>,
}

/// Why a [`Tree`] stops before the end of its text.
#[derive(Debug)]
pub(super) enum Cut {
    /// The text is not valid YAML there.
    Syntax {
        /// Line of the problem, counted from 1.
        line: usize,
        /// Column of the problem, counted from 1 (in characters).
        column: usize,
        /// The parser's description of the problem.
        message: String,
    },
    /// The parser's events did not nest as YAML's grammar promises; not expected to happen.
    Malformed(String),
}

/// One YAML node with its position in the source.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) kind: Kind,
    /// Anchor id defined on this node, 0 for none.
    pub(super) anchor: usize,
    /// The node's explicit tag, rendered, if any.
    pub(super) tag: Option<String>,
    /// Byte offset where the node's content starts (after any tag or anchor). For a block
    /// sequence, the offset of its first `-`, or of the first item's content when the sequence
    /// is not indented more than its key.
    pub(super) start: usize,
    /// Byte offset just past the node's last source character; for a block collection, the end
    /// of its last child (possibly followed by blank space). Equal to `start` for an empty
    /// (null) scalar.
    pub(super) end: usize,
    /// Line of `start`, counted from 1.
    pub(super) line: usize,
    /// Column of `start`, counted from 1 (in characters).
    pub(super) column: usize,
}

/// What a node is, with its children.
#[derive(Debug)]
pub(super) enum Kind {
    /// A scalar: its value after escapes and folding, and how it was written.
    Scalar { value: String, style: ScalarStyle },
    /// A sequence and its items, in order.
    Sequence { style: StructureStyle, items: Vec<Node> },
    /// A mapping and its entries (key, value), in the text's order.
    Mapping {
        style: StructureStyle,
        entries: Vec<(Node, Node)>,
        /// A key read just before the text was cut short, whose value never came; only in a tree
        /// with a [`Cut`]. It is not an entry, but it is where a syntax error after it is.
        cut_key: Option<Box<Node>>,
    },
    /// An alias (`*name`) of the anchor with this id.
    Alias(usize),
}

impl Node {
    /// The scalar's text, if the node is a scalar.
    pub(super) fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// What the node is, for error messages.
    pub(super) fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.end == self.start => "empty (null)",
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
}

/// Reads `source` into the tree of each of its documents, up to the first syntax error.
pub(super) fn build(source: &str) -> Tree {
    let mut builder = Builder { events: Parser::new_from_str(source), source, cut: None };
    let mut documents = Vec::new();
    while let Some((event, span)) = builder.next_event() {
        match builder.node(event, span) {
            Some(root) => documents.push(root),
            None => break,
        }
    }
    Tree { documents, cut: builder.cut }
}

/// Offset of the `:` after a key ending at `key_end`, if only spaces or tabs come between.
pub(super) fn colon_after(source: &str, key_end: usize) -> Option<usize> {
    let rest = &source[key_end..];
    let skipped = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    (rest.as_bytes().get(skipped) == Some(&b':')).then_some(key_end + skipped)
}

/// Reads the parser's events (`E`) over `source` into nodes.
struct Builder<'s, E> {
    events: E,
    source: &'s str,
    /// Set when reading stops early; no event is read after it.
    cut: Option<Cut>,
}

impl<'s, E> Builder<'s, E>
where
    E: Iterator<Item = Result<(Event<'s>, Span), ScanError>>,
{
    /// The next event that makes up the tree; `None` at the end of the stream or once cut.
    fn next_event(&mut self) -> Option<(Event<'s>, Span)> {
        if self.cut.is_some() {
            return None;
        }
        for item in self.events.by_ref() {
            match item {
                Err(error) => {
                    self.cut = Some(syntax_cut(&error));
                    return None;
                }
                // Document and stream boundaries, and anything else presentation-only, carry no
                // data: each document's events are its root node's.
                Ok((event, span))
                    if matches!(
                        event,
                        Event::Scalar(..)
                            | Event::Alias(..)
                            | Event::SequenceStart(..)
                            | Event::SequenceEnd
                            | Event::MappingStart(..)
                            | Event::MappingEnd
                    ) =>
                {
                    return Some((event, span));
                }
                Ok(_) => {}
            }
        }
        None
    }

    /// The next event inside a collection; its absence cuts the tree (the parser stopped at a
    /// syntax error, or, unexpectedly, the stream ended).
    fn next_inside(&mut self) -> Option<(Event<'s>, Span)> {
        let next = self.next_event();
        if next.is_none() && self.cut.is_none() {
            self.cut = Some(Cut::Malformed("the YAML event stream ended inside a collection".to_owned()));
        }
        next
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

    /// Builds the node that starts with `event`, consuming its children (those read before a cut,
    /// if the text is cut short inside it). `None` if `event` does not start a node.
    fn node(&mut self, event: Event<'s>, span: Span) -> Option<Node> {
        let start = self.offset(span.start);
        let own_end = self.offset(span.end);
        let (line, column) = (span.start.line(), span.start.col() + 1);
        let node =
            |kind, anchor, tag: Option<String>, end| Node { kind, anchor, tag, start, end, line, column };
        match event {
            Event::Scalar(value, style, anchor, tag) => Some(node(
                Kind::Scalar { value: value.into_owned(), style },
                anchor,
                tag.map(|t| t.to_string()),
                own_end,
            )),
            Event::Alias(id) => Some(node(Kind::Alias(id), 0, None, own_end)),
            Event::SequenceStart(style, anchor, tag) => {
                let mut items = Vec::new();
                let mut content_end = own_end;
                let end = loop {
                    let Some((event, span)) = self.next_inside() else { break content_end };
                    if matches!(event, Event::SequenceEnd) {
                        break self.collection_end(style, content_end, span);
                    }
                    let Some(item) = self.node(event, span) else { break content_end };
                    content_end = content_end.max(item.end);
                    items.push(item);
                };
                Some(node(Kind::Sequence { style, items }, anchor, tag.map(|t| t.to_string()), end))
            }
            Event::MappingStart(style, anchor, tag) => {
                let mut entries = Vec::new();
                let mut cut_key = None;
                let mut content_end = own_end;
                let end = loop {
                    let Some((event, span)) = self.next_inside() else { break content_end };
                    if matches!(event, Event::MappingEnd) {
                        break self.collection_end(style, content_end, span);
                    }
                    let Some(key) = self.node(event, span) else { break content_end };
                    let Some(value) = self.next_inside().and_then(|(event, span)| self.node(event, span))
                    else {
                        cut_key = Some(Box::new(key));
                        break content_end;
                    };
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
                Some(node(Kind::Mapping { style, entries, cut_key }, anchor, tag.map(|t| t.to_string()), end))
            }
            other => {
                self.cut = Some(Cut::Malformed(format!("unexpected YAML event {other:?}")));
                None
            }
        }
    }
}

fn syntax_cut(error: &ScanError) -> Cut {
    let marker = error.marker();
    let info = error.info();
    Cut::Syntax {
        line: marker.line(),
        column: marker.col() + 1,
        message: if info.is_empty() { "syntax error".to_owned() } else { info },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_know_their_spans_lines_and_columns() {
        let text = "a: 1\nb: [x, 'y']\n";
        let tree = build(text);
        assert!(tree.cut.is_none());
        let [root] = &tree.documents[..] else { panic!("{tree:?}") };
        let Kind::Mapping { entries, cut_key: None, .. } = &root.kind else { panic!("{root:?}") };
        let (key, value) = &entries[1];
        assert_eq!((key.scalar(), key.line, key.column), (Some("b"), 2, 1));
        assert_eq!(&text[value.start..value.end], "[x, 'y']");
        let Kind::Sequence { items, .. } = &value.kind else { panic!("{value:?}") };
        assert_eq!((items[1].line, items[1].column, items[1].describe()), (2, 8, "a quoted scalar"));
    }

    #[test]
    fn a_syntax_error_cuts_the_tree_where_it_is() {
        let tree = build("a: 1\nb: [x,\n");
        assert!(matches!(tree.cut, Some(Cut::Syntax { .. })), "{tree:?}");
        let Kind::Mapping { entries, .. } = &tree.documents[0].kind else { panic!("{tree:?}") };
        let Kind::Sequence { items, .. } = &entries[1].1.kind else { panic!("{tree:?}") };
        assert_eq!(items.iter().map(Node::scalar).collect::<Vec<_>>(), [Some("x")]);
        assert!(build("").documents.is_empty());
        assert_eq!(build("a: 1\n---\nb\n").documents.len(), 2);
    }
}
