//! Comment-preserving rewrite of the scale settings (`replicas` and `hostnames`) in a ringlb
//! manifest: the cluster's at the top, or one service's in `services:` ([`Scope`]).
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
//!
//! This file holds the entry point and its error; beside it: `checks.rs` what the editor refuses,
//! `splice.rs` the byte-level edits, `quote.rs` how names are written, `verify.rs` the final
//! check. The span tree they read is the manifest's `yaml_tree.rs`.

mod checks;
mod quote;
mod splice;
mod verify;

use checks::{
    check_hostnames, check_replicas, find_unique, mapping_entries, parse_single_document, service_mapping,
    top_level_entries,
};
use quote::flow_sequence;
use splice::{
    Edit, apply_edits, hostnames_edits, indentation, line_end, line_ending, line_start, trimmed_end,
};
use verify::verify;

const REPLICAS: &str = "replicas";
const HOSTNAMES: &str = "hostnames";
const SERVICES: &str = "services";

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
    /// `services[index]` is not in the file, which lists `count` services.
    #[error("the manifest lists {count} services; there is no services[{index}]")]
    NoSuchService {
        /// The service asked for.
        index: usize,
        /// How many the file lists.
        count: usize,
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
    rewrite_scale_in(source, Scope::Cluster, replicas, hostnames)
}

/// Whose `replicas:` and `hostnames:` [`rewrite_scale_in`] rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The cluster's, at the top of a manifest without `services:`.
    Cluster,
    /// Those of `services[i]`: the service's own mapping, the rest of the file as it was.
    Service(usize),
}

/// As [`rewrite_scale`], for the keys of `scope`. For a service, `replicas:` when missing is
/// inserted at the indentation of the service's keys, before its first key when that key starts
/// its own line, else (`- name: web`) after the first key's entry; `hostnames:` goes after
/// `replicas:` as at the top. The check after the rewrite holds every other byte's meaning: the
/// other services, the top-level keys, and the service's other keys.
///
/// # Errors
/// As [`rewrite_scale`]; for a service also [`EditError::NoSuchService`], and
/// [`EditError::UnsupportedLayout`] when `services` is not a block list of block mappings.
pub fn rewrite_scale_in(
    source: &str,
    scope: Scope,
    replicas: u32,
    hostnames: &[String],
) -> Result<String, EditError> {
    let root = parse_single_document(source)?;
    let top = top_level_entries(&root)?;
    let mapping = match scope {
        Scope::Cluster => &root,
        Scope::Service(index) => service_mapping(top, index)?,
    };
    let entries = mapping_entries(mapping)?;
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
            let (first_key, first_value) =
                entries.first().ok_or_else(|| EditError::Internal("empty block mapping".to_owned()))?;
            // `replicas: N`, and `hostnames: [..]` on a line of its own at `indent`.
            let lines = |indent: &str| {
                let mut text = format!("{REPLICAS}: {replicas}");
                if insert_hostnames {
                    text.push_str(&format!("{eol}{indent}{HOSTNAMES}: {}", flow_sequence(hostnames)));
                }
                text
            };
            // The key must be where the mapping starts (not, say, inside `? |` explicit-key
            // syntax) and alone on its line before it.
            match indentation(source, first_key.start).filter(|_| first_key.start == mapping.start) {
                Some(indent) => {
                    let text = format!("{indent}{}{eol}", lines(indent));
                    let at = line_start(source, first_key.start);
                    edits.push(Edit::replace(at, at, text));
                }
                None if scope != Scope::Cluster && first_key.start == mapping.start => {
                    // `- name: web`: after the first entry, at the column of its key.
                    let indent = " ".repeat(first_key.start - line_start(source, first_key.start));
                    let at = line_end(source, trimmed_end(source, first_value.end));
                    let text = format!("{eol}{indent}{}", lines(&indent));
                    edits.push(Edit::replace(at, at, text));
                }
                None => {
                    return Err(EditError::UnsupportedLayout {
                        key: REPLICAS,
                        line: first_key.line,
                        reason: "the first key does not start its own line, so `replicas` cannot be inserted before it",
                    });
                }
            }
        }
    }
    if let Some((key, value)) = hostnames_entry {
        hostnames_edits(source, key, value, hostnames, eol, &mut edits)?;
    }

    let output = apply_edits(source, edits)?;
    verify(&root, &output, scope, replicas, hostnames, hostnames_entry.is_some())?;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::quote::is_plain_safe;
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
        assert_scaled_at(before, after, |doc| doc, replicas, hostnames);
    }

    /// As [`assert_same_except_scale`], for the mapping `at` picks in the document.
    fn assert_scaled_at(
        before: &str,
        after: &str,
        at: impl Fn(&mut Value) -> &mut Value,
        replicas: u32,
        hostnames: &[String],
    ) {
        let (mut b, mut a) = (parse(before), parse(after));
        let (bm, am) =
            (at(&mut b).as_object_mut().expect("a mapping"), at(&mut a).as_object_mut().expect("a mapping"));
        let had = bm.remove(HOSTNAMES).is_some();
        bm.remove(REPLICAS);
        assert_eq!(am.remove(REPLICAS), Some(json!(replicas)), "{after}");
        let got = am.remove(HOSTNAMES);
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

    const SERVICES_MANIFEST: &str = "\
# two services behind one listener
name: shop
services:
  - name: web            # the front end
    match: {host: web.example}
    replicas: 2          # keep two
    hostnames: [w1, w2]
    replica: {runtime: process, command: [web, '{port}']}
  - name: api
    match:
      path_prefix: /api  # longest prefix wins
    replica:
      runtime: process
      command: [api, '{port}']
listen: 127.0.0.1:5000
";

    /// `after` is `before` with `services[index]`'s scale set to `replicas` and `hostnames`,
    /// and every other value as it was.
    fn assert_service_scaled(before: &str, after: &str, index: usize, replicas: u32, hostnames: &[String]) {
        assert_scaled_at(before, after, |doc| &mut doc["services"][index], replicas, hostnames);
    }

    fn rewrite_service(source: &str, index: usize, replicas: u32, list: &[&str]) -> String {
        let list = names(list);
        let out = rewrite_scale_in(source, Scope::Service(index), replicas, &list)
            .unwrap_or_else(|e| panic!("{e}\n{source}"));
        assert_service_scaled(source, &out, index, replicas, &list);
        let again = rewrite_scale_in(&out, Scope::Service(index), replicas, &list).expect("second pass");
        assert_eq!(again, out, "not idempotent");
        out
    }

    #[test]
    fn a_service_is_scaled_in_place_and_every_other_byte_stays() {
        let out = rewrite_service(SERVICES_MANIFEST, 0, 3, &["w1", "w2", "w3"]);
        let changed: Vec<(&str, &str)> =
            SERVICES_MANIFEST.lines().zip(out.lines()).filter(|(a, b)| a != b).collect();
        assert_eq!(
            changed,
            [
                ("    replicas: 2          # keep two", "    replicas: 3          # keep two"),
                ("    hostnames: [w1, w2]", "    hostnames: [w1, w2, w3]")
            ]
        );
        let manifest = crate::manifest::Manifest::parse(&out).expect("still valid");
        let services = manifest.services();
        assert_eq!((services[0].manifest.replicas, services[1].manifest.replicas), (3, 3));
    }

    #[test]
    fn a_service_without_scale_keys_gets_them_after_its_first_entry() {
        let out = rewrite_service(SERVICES_MANIFEST, 1, 4, &["a1"]);
        assert!(out.contains("  - name: api\n    replicas: 4\n    hostnames: [a1]\n    match:\n"), "{out}");
        assert!(out.starts_with(&SERVICES_MANIFEST[..SERVICES_MANIFEST.find("  - name: api").expect("api")]));
        let manifest = crate::manifest::Manifest::parse(&out).expect("still valid");
        assert_eq!(manifest.services()[1].manifest.hostnames, ["a1"]);
        // A first entry that is a block: after the block, not inside it.
        let block_first = SERVICES_MANIFEST.replace(
            "  - name: api\n    match:\n      path_prefix: /api  # longest prefix wins\n",
            "  - match:\n      path_prefix: /api  # longest prefix wins\n\n    name: api\n",
        );
        let out = rewrite_service(&block_first, 1, 2, &[]);
        assert!(out.contains("prefix wins\n    replicas: 2\n\n    name: api\n"), "{out}");
        // A key on its own line after the dash: before it, as at the top.
        let own_line = SERVICES_MANIFEST.replace("  - name: api\n", "  -\n    name: api\n");
        let out = rewrite_service(&own_line, 1, 5, &[]);
        assert!(out.contains("  -\n    replicas: 5\n    name: api\n"), "{out}");
    }

    #[test]
    fn a_service_that_is_not_there_or_not_a_block_mapping_is_refused() {
        let missing = rewrite_scale_in(SERVICES_MANIFEST, Scope::Service(2), 1, &[]);
        assert!(matches!(missing, Err(EditError::NoSuchService { index: 2, count: 2 })), "{missing:?}");
        let none = rewrite_scale_in("name: shop\nreplicas: 1\n", Scope::Service(0), 1, &[]);
        assert!(matches!(none, Err(EditError::NoSuchService { index: 0, count: 0 })), "{none:?}");
        let flow = SERVICES_MANIFEST.replace(
            "  - name: web            # the front end\n    match: {host: web.example}\n    replicas: 2          # keep two\n    hostnames: [w1, w2]\n    replica: {runtime: process, command: [web, '{port}']}\n",
            "  - {name: web, replicas: 2}\n",
        );
        let refused = rewrite_scale_in(&flow, Scope::Service(0), 1, &[]);
        assert!(matches!(refused, Err(EditError::UnsupportedLayout { key: "services", .. })), "{refused:?}");
        // The other service of that file is still block style, and can be scaled.
        rewrite_service(&flow, 1, 2, &["x"]);
    }

    #[test]
    fn the_check_after_a_service_rewrite_refuses_any_other_change() {
        let before = parse_single_document(SERVICES_MANIFEST).expect("one document");
        let scaled = SERVICES_MANIFEST.replace("replicas: 2 ", "replicas: 3 ");
        let check = |output: &str| verify(&before, output, Scope::Service(0), 3, &names(&["w1", "w2"]), true);
        assert!(check(&scaled).is_ok());
        for (what, output) in [
            ("another service", scaled.replace("/api ", "/v2 ")),
            ("a top-level key", scaled.replace("127.0.0.1:5000", "127.0.0.1:5001")),
            ("another key of the service", scaled.replace("web.example", "www.example")),
            ("a service more", scaled.replace("listen:", "  - name: extra\nlisten:")),
            ("the requested value", SERVICES_MANIFEST.to_owned()),
        ] {
            assert!(matches!(check(&output), Err(EditError::Internal(_))), "{what}: {output}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn a_rewritten_service_parses_back_to_the_requested_values(
            list in prop::collection::vec(name_strategy(), 0..5),
            replicas in any::<u32>(),
            index in 0usize..2,
            crlf in any::<bool>(),
        ) {
            let source = if crlf { SERVICES_MANIFEST.replace('\n', "\r\n") } else { SERVICES_MANIFEST.to_owned() };
            let out = rewrite_scale_in(&source, Scope::Service(index), replicas, &list)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            assert_service_scaled(&source, &out, index, replicas, &list);
            let again = rewrite_scale_in(&out, Scope::Service(index), replicas, &list)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&again, &out);
        }
    }
}
