//! Why a manifest was not accepted: the error types, and the parser's error turned into one that
//! names the field, the line and the column.

use super::locate::{self, Position};
use std::fmt;

/// One thing wrong with a manifest, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The dotted path of the field (`hashing.slots`, `hostnames[2]`).
    pub field: String,
    /// What is wrong, in a sentence.
    pub message: String,
    /// Where the field is in the text, when known.
    pub position: Option<Position>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.position {
            write!(f, "line {}, column {}: ", p.line, p.column)?;
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a manifest was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The manifest's path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML, or does not have the manifest's shape (wrong type, unknown key).
    #[error("{}{message}", position.map(|p| format!("line {}, column {}: ", p.line, p.column)).unwrap_or_default())]
    Syntax {
        /// What is wrong, starting with the field when known (`replicas: invalid u32`).
        message: String,
        /// Where, when the parser knows.
        position: Option<Position>,
        /// The offending lines with a caret under the spot, for people.
        snippet: String,
    },
    /// The manifest parses but asks for something invalid.
    #[error("{}", display_list(.0))]
    Invalid(Vec<FieldError>),
}

/// A parser error as a [`ManifestError::Syntax`]: the field it is about, a one-line message and
/// the parser's snippet.
pub(super) fn syntax_error(text: &str, error: &serde_saphyr::Error) -> ManifestError {
    let position = error.location().map(|l| Position {
        line: usize::try_from(l.line()).unwrap_or(usize::MAX),
        column: usize::try_from(l.column()).unwrap_or(usize::MAX),
    });
    let rendered = error.to_string();
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or_default();
    // The parser's first line reads "error: line L column C: <what>"; keep <what>.
    let what =
        first
            .strip_prefix("error: ")
            .map(|rest| {
                if rest.starts_with("line ") { rest.split_once(": ").map_or(rest, |(_, w)| w) } else { rest }
            })
            .unwrap_or(first)
            .trim();
    let message = match position.and_then(|p| locate::path_at(text, p)) {
        Some(field) if !what.contains(&format!("`{field}`")) => format!("{field}: {what}"),
        _ => what.to_owned(),
    };
    ManifestError::Syntax { message, position, snippet: lines.collect::<Vec<_>>().join("\n") }
}

fn display_list(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl ManifestError {
    /// Where the (first) error is, if known.
    pub fn position(&self) -> Option<Position> {
        match self {
            ManifestError::Read { .. } => None,
            ManifestError::Syntax { position, .. } => *position,
            ManifestError::Invalid(list) => list.iter().find_map(|e| e.position),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Manifest;
    use super::*;

    #[test]
    fn a_wrong_type_names_its_line_and_column() {
        let err = Manifest::parse("name: demo\nreplicas: three\n").unwrap_err();
        let ManifestError::Syntax { position, message, snippet } = &err else { panic!("{err:?}") };
        assert_eq!(position.map(|p| (p.line, p.column)), Some((2, 11)), "{message}");
        assert!(message.starts_with("replicas: "), "{message}");
        assert!(snippet.contains("replicas: three"), "{snippet}");
        assert_eq!(err.to_string(), format!("line 2, column 11: {message}"));
    }

    #[test]
    fn an_unknown_key_is_an_error_not_silence() {
        let err = Manifest::parse("name: demo\nreplcias: 3\n").unwrap_err();
        assert!(err.to_string().contains("replcias"), "{err}");
    }
}
