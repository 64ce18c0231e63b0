//! Finds where a field sits in the manifest's text, so that a validation error can name a line and
//! a column like a parse error does; and the other way round, which field a parse error is about.
//!
//! Validation runs on the typed manifest, which has forgotten the text; both questions are answered
//! from the text's span tree (`yaml_tree.rs`, the one the editor reads too), following a dotted
//! path (`hashing.slots`, `hostnames[2]`) down it or finding the node at a position.

use super::yaml_tree::{self, Kind, Node};

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
    let tree = yaml_tree::build(text);
    find(tree.documents.first()?, &steps(path))
}

/// Whether the text writes the field at `path` itself (not only a key above it).
pub fn is_written(text: &str, path: &str) -> bool {
    let tree = yaml_tree::build(text);
    tree.documents.first().is_some_and(|document| find_exact(document, &steps(path)))
}

/// Whether `steps` lead from `node` to a node, all the way.
fn find_exact(node: &Node, steps: &[Step<'_>]) -> bool {
    let Some((step, rest)) = steps.split_first() else { return true };
    match (&node.kind, step) {
        (Kind::Mapping { entries, .. }, Step::Key(wanted)) => entries
            .iter()
            .find(|(key, _)| key.scalar() == Some(*wanted))
            .is_some_and(|(_, value)| find_exact(value, rest)),
        (Kind::Sequence { items, .. }, Step::Index(wanted)) => {
            items.get(*wanted).is_some_and(|item| find_exact(item, rest))
        }
        _ => false,
    }
}

fn position(node: &Node) -> Position {
    Position { line: node.line, column: node.column }
}

/// Finds `steps` inside `node`: the first entry of a mapping with the key, the item of a sequence
/// at the index; the key's own position when the rest of the path is not inside its value.
fn find(node: &Node, steps: &[Step<'_>]) -> Option<Position> {
    let Some((step, rest)) = steps.split_first() else {
        return Some(position(node));
    };
    match (&node.kind, step) {
        (Kind::Mapping { entries, .. }, Step::Key(wanted)) => {
            let (key, value) = entries.iter().find(|(key, _)| key.scalar() == Some(*wanted))?;
            find(value, rest).or(Some(position(key)))
        }
        (Kind::Sequence { items, .. }, Step::Index(wanted)) => find(items.get(*wanted)?, rest),
        _ => None,
    }
}

/// The dotted path of the node at `at` (or, failing an exact match, of the last node that starts
/// before it): what a parse error at that position is about.
pub fn path_at(text: &str, at: Position) -> Option<String> {
    let tree = yaml_tree::build(text);
    let mut best: Option<(Position, String)> = None;
    visit(tree.documents.first()?, String::new(), at, &mut best);
    best.map(|(_, path)| path).filter(|p| !p.is_empty())
}

/// Visits `node` at `path` and everything inside it in text order (a key before its value),
/// keeping in `best` the latest-starting node that does not start after `at`.
fn visit(node: &Node, path: String, at: Position, best: &mut Option<(Position, String)>) {
    let here = position(node);
    let before = (here.line, here.column) <= (at.line, at.column);
    if before && best.as_ref().is_none_or(|(p, _)| (p.line, p.column) <= (here.line, here.column)) {
        *best = Some((here, path.clone()));
    }
    match &node.kind {
        Kind::Mapping { entries, cut_key, .. } => {
            let child = |key: &Node| {
                let name = key.scalar().unwrap_or("?");
                if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
            };
            for (key, value) in entries {
                let child = child(key);
                visit(key, child.clone(), at, best);
                visit(value, child, at, best);
            }
            if let Some(key) = cut_key {
                visit(key, child(key), at, best);
            }
        }
        Kind::Sequence { items, .. } => {
            for (index, item) in items.iter().enumerate() {
                visit(item, format!("{path}[{index}]"), at, best);
            }
        }
        Kind::Scalar { .. } | Kind::Alias(_) => {}
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
    fn a_field_is_written_only_when_the_whole_path_is_there() {
        assert!(is_written(TEXT, "replicas"));
        assert!(is_written(TEXT, "list[1].deep"));
        assert!(!is_written(TEXT, "list[1].shallow"));
        assert!(!is_written(TEXT, "list[2]"));
        assert!(!is_written(TEXT, "hashing.slots.x"));
        assert!(!is_written("", "replicas"));
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

    /// A key the text is cut short after (a syntax error before its value) is not a field that
    /// can be located, but a position after it is about it.
    #[test]
    fn a_key_cut_short_before_its_value_still_names_its_position() {
        let text = "name: d\nhashing: {algorithm: ring, slots: ";
        assert_eq!(path_at(text, Position { line: 2, column: 34 }).as_deref(), Some("hashing.slots"));
        assert_eq!(locate(text, "hashing.slots"), Some(Position { line: 2, column: 1 }));
    }
}
