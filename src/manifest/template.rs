//! Templates in `replica.command`, `replica.entrypoint` and `replica.env`: `{name}` (the
//! replica's name), `{id}` (its integer id, as in the exercise) and `{port}` (the port it is to
//! listen on). `{{` and `}}` stand for literal braces. The manifest is checked with [`check`], so
//! [`expand`] never meets an unknown placeholder.

use std::fmt::Write;

/// What the placeholders of one replica stand for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Values<'a> {
    /// `{name}`.
    pub name: &'a str,
    /// `{id}`.
    pub id: u32,
    /// `{port}`.
    pub port: u16,
}

/// Why a template is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{...}` that is not one of the known placeholders.
    #[error(
        "unknown placeholder {{{found}}} (known: {{name}}, {{id}}, {{port}}; write {{{{ for a literal brace)"
    )]
    Unknown {
        /// What stood between the braces.
        found: String,
    },
    /// A `{` without its `}`, or a lone `}`.
    #[error("unbalanced brace (write {{{{ or }}}} for a literal brace)")]
    Unbalanced,
}

/// One piece of a template.
enum Piece<'t> {
    Text(&'t str),
    Name,
    Id,
    Port,
}

/// Splits a template into its pieces, or says why it is not one.
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        out.push(Piece::Text(&rest[..at]));
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push(Piece::Text("{"));
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push(Piece::Text("}"));
            rest = after;
        } else if tail.starts_with('}') {
            return Err(TemplateError::Unbalanced);
        } else {
            let close = tail.find('}').ok_or(TemplateError::Unbalanced)?;
            out.push(match &tail[1..close] {
                "name" => Piece::Name,
                "id" => Piece::Id,
                "port" => Piece::Port,
                other if other.contains('{') => return Err(TemplateError::Unbalanced),
                other => return Err(TemplateError::Unknown { found: other.to_owned() }),
            });
            rest = &tail[close + 1..];
        }
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

/// Checks a template.
///
/// # Errors
/// [`TemplateError`] for an unknown placeholder or an unbalanced brace.
pub fn check(template: &str) -> Result<(), TemplateError> {
    pieces(template).map(drop)
}

/// True when the template mentions `{port}` (the process runtime must then pick a port).
pub fn mentions_port(template: &str) -> bool {
    pieces(template).is_ok_and(|p| p.iter().any(|piece| matches!(piece, Piece::Port)))
}

/// The template with its placeholders replaced. An invalid template (which a checked manifest
/// never holds) comes back as written.
pub fn expand(template: &str, values: Values<'_>) -> String {
    let Ok(pieces) = pieces(template) else { return template.to_owned() };
    let mut out = String::with_capacity(template.len() + 8);
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Name => out.push_str(values.name),
            // Writing to a String cannot fail.
            Piece::Id => drop(write!(out, "{}", values.id)),
            Piece::Port => drop(write!(out, "{}", values.port)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Values<'static> = Values { name: "web-1", id: 7, port: 8080 };

    #[test]
    fn placeholders_are_replaced_and_braces_escaped() {
        assert_eq!(expand("{name}:{port} #{id}", V), "web-1:8080 #7");
        assert_eq!(expand("{{\"a\": {id}}}", V), "{\"a\": 7}");
        assert_eq!(expand("plain", V), "plain");
        assert!(mentions_port("-p {port}") && !mentions_port("-p {{port}}"));
    }

    #[test]
    fn unknown_placeholders_and_lone_braces_are_errors() {
        assert_eq!(check("{host}"), Err(TemplateError::Unknown { found: "host".into() }));
        assert_eq!(check("{name"), Err(TemplateError::Unbalanced));
        assert_eq!(check("a}b"), Err(TemplateError::Unbalanced));
        assert_eq!(check("{{name}}"), Ok(()));
        assert_eq!(
            check("{host}").unwrap_err().to_string(),
            "unknown placeholder {host} (known: {name}, {id}, {port}; write {{ for a literal brace)"
        );
    }
}
