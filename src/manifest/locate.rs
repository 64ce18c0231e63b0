//! Finds where a field sits in the manifest's text, so that a validation error can name a line and
//! a column like a parse error does.
//!
//! Validation runs on the typed manifest, which has forgotten the text; this walks the YAML event
//! stream once more, following a dotted path (`hashing.slots`, `hostnames[2]`).

use serde_saphyr::granit_parser::{Event, Parser, Span};

/// A 1-based line and column in the manifest's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One step of a field path: a mapping key or a sequence index.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[2].c` into steps.
fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some(close) = rest.find(']') {
            // `rest` starts with `[` the first time round; `get` also copes with a stray `]`.
            if let Some(index) = rest.get(1..close).and_then(|digits| digits.parse().ok()) {
                out.push(Step::Index(index));
            }
            rest = &rest[close + 1..];
        }
    }
    out
}

/// The position of the value at `path` (or of its key when the value cannot be found), if the
/// text parses far enough to reach it.
pub fn locate(text: &str, path: &str) -> Option<Position> {
    let mut events = Parser::new_from_str(text).filter_map(Result::ok).filter(|(event, _)| {
        !matches!(event, Event::StreamStart | Event::DocumentStart(..) | Event::Anchor(..))
    });
    let steps = steps(path);
    let (first, span) = events.next()?;
    find(&mut events, first, span, &steps)
}

fn position(span: &Span) -> Position {
    Position { line: span.start.line(), column: span.start.col() + 1 }
}

/// With `event` the start of a node, finds `steps` inside it.
fn find<'a>(
    events: &mut impl Iterator<Item = (Event<'a>, Span)>,
    event: Event<'a>,
    span: Span,
    steps: &[Step<'_>],
) -> Option<Position> {
    let Some((step, rest)) = steps.split_first() else {
        return Some(position(&span));
    };
    match (event, step) {
        (Event::MappingStart(..), Step::Key(wanted)) => loop {
            let (key, key_span) = events.next()?;
            match key {
                Event::MappingEnd => return None,
                Event::Scalar(ref name, ..) if name == wanted => {
                    let (value, value_span) = events.next()?;
                    return find(events, value, value_span, rest).or(Some(position(&key_span)));
                }
                other => {
                    skip(events, other)?;
                    let (value, _) = events.next()?;
                    skip(events, value)?;
                }
            }
        },
        (Event::SequenceStart(..), Step::Index(wanted)) => {
            let mut index = 0;
            loop {
                let (item, item_span) = events.next()?;
                if matches!(item, Event::SequenceEnd) {
                    return None;
                }
                if index == *wanted {
                    return find(events, item, item_span, rest);
                }
                skip(events, item)?;
                index += 1;
            }
        }
        _ => None,
    }
}

/// With `event` the start of a node, consumes the rest of that node.
fn skip<'a>(events: &mut impl Iterator<Item = (Event<'a>, Span)>, event: Event<'a>) -> Option<()> {
    let mut depth = match event {
        Event::MappingStart(..) | Event::SequenceStart(..) => 1usize,
        _ => return Some(()),
    };
    while depth > 0 {
        match events.next()?.0 {
            Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
            Event::MappingEnd | Event::SequenceEnd => depth -= 1,
            _ => {}
        }
    }
    Some(())
}

/// The dotted path of the node at `at` (or, failing an exact match, of the last node that starts
/// before it): what a parse error at that position is about.
pub fn path_at(text: &str, at: Position) -> Option<String> {
    let mut events = Parser::new_from_str(text).filter_map(Result::ok).filter(|(event, _)| {
        !matches!(event, Event::StreamStart | Event::DocumentStart(..) | Event::Anchor(..))
    });
    let (first, span) = events.next()?;
    let mut best: Option<(Position, String)> = None;
    walk(&mut events, first, span, String::new(), at, &mut best);
    best.map(|(_, path)| path).filter(|p| !p.is_empty())
}

/// Visits the node starting with `event` at `path`, keeping in `best` the latest-starting node
/// that does not start after `at`.
fn walk<'a>(
    events: &mut impl Iterator<Item = (Event<'a>, Span)>,
    event: Event<'a>,
    span: Span,
    path: String,
    at: Position,
    best: &mut Option<(Position, String)>,
) -> Option<()> {
    let here = position(&span);
    let before = (here.line, here.column) <= (at.line, at.column);
    if before && best.as_ref().is_none_or(|(p, _)| (p.line, p.column) <= (here.line, here.column)) {
        *best = Some((here, path.clone()));
    }
    match event {
        Event::MappingStart(..) => loop {
            let (key, key_span) = events.next()?;
            if matches!(key, Event::MappingEnd) {
                return Some(());
            }
            let name = match &key {
                Event::Scalar(name, ..) => name.to_string(),
                _ => String::from("?"),
            };
            let child = if path.is_empty() { name } else { format!("{path}.{name}") };
            walk(events, key, key_span, child.clone(), at, best)?;
            let (value, value_span) = events.next()?;
            walk(events, value, value_span, child, at, best)?;
        },
        Event::SequenceStart(..) => {
            let mut index = 0;
            loop {
                let (item, item_span) = events.next()?;
                if matches!(item, Event::SequenceEnd) {
                    return Some(());
                }
                walk(events, item, item_span, format!("{path}[{index}]"), at, best)?;
                index += 1;
            }
        }
        _ => Some(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name: demo\nreplicas: 3\nhostnames: [a, b, c]\nhashing:\n  algorithm: ring\n  slots: 12\nlist:\n  - x\n  - {deep: 1}\n";

    #[test]
    fn finds_top_level_and_nested_values() {
        assert_eq!(locate(TEXT, "replicas"), Some(Position { line: 2, column: 11 }));
        assert_eq!(locate(TEXT, "hashing.slots"), Some(Position { line: 6, column: 10 }));
        assert_eq!(locate(TEXT, "hostnames[2]"), Some(Position { line: 3, column: 19 }));
        assert_eq!(locate(TEXT, "list[1].deep"), Some(Position { line: 9, column: 12 }));
    }

    #[test]
    fn positions_map_back_to_paths() {
        assert_eq!(path_at(TEXT, Position { line: 2, column: 11 }).as_deref(), Some("replicas"));
        assert_eq!(path_at(TEXT, Position { line: 6, column: 10 }).as_deref(), Some("hashing.slots"));
        assert_eq!(path_at(TEXT, Position { line: 3, column: 19 }).as_deref(), Some("hostnames[2]"));
        assert_eq!(path_at(TEXT, Position { line: 9, column: 12 }).as_deref(), Some("list[1].deep"));
        assert_eq!(path_at(TEXT, Position { line: 1, column: 1 }).as_deref(), Some("name"));
    }

    #[test]
    fn missing_paths_give_none_or_the_parent_key() {
        assert_eq!(locate(TEXT, "nope"), None);
        assert_eq!(locate(TEXT, "hostnames[7]"), Some(Position { line: 3, column: 1 }));
        // A text cut short still locates what was parsed before the error.
        assert_eq!(locate("a: [", "a"), Some(Position { line: 1, column: 4 }));
        assert_eq!(locate("a: [", "b"), None);
    }

    /// Found by `fuzz/fuzz_targets/manifest_parse.rs`: a `]` right after an index (`a[0]]`), or
    /// one without its `[`, panicked slicing the path.
    #[test]
    fn stray_brackets_in_a_path_do_not_panic() {
        assert_eq!(locate(TEXT, "hostnames[1]]"), Some(Position { line: 3, column: 16 }));
        assert_eq!(locate(TEXT, "]"), None);
        assert_eq!(locate(TEXT, "hostnames]"), None);
        assert_eq!(locate(TEXT, "hostnames[é]"), Some(Position { line: 3, column: 12 }));
        assert_eq!(locate("] !#]!#]] ", "] !#]!#]] "), None);
    }
}
