//! What the editor refuses to touch: text that is not one YAML document with a block mapping at
//! its top, duplicated or merged keys, and `replicas`/`hostnames` values it cannot rewrite safely
//! (aliases, anchors, tags, the wrong kind of node).

use super::{EditError, HOSTNAMES, REPLICAS};
use crate::manifest::yaml_tree::{self, Cut, Kind, Node};
use serde_saphyr::granit_parser::{ScalarStyle, StructureStyle};

/// Parses `source`, which must hold exactly one document, into its root node.
pub(super) fn parse_single_document(source: &str) -> Result<Node, EditError> {
    let tree = yaml_tree::build(source);
    match tree.cut {
        Some(Cut::Syntax { line, column, message }) => {
            return Err(EditError::InvalidYaml { line, column, message });
        }
        Some(Cut::Malformed(what)) => return Err(EditError::Internal(what)),
        None => {}
    }
    let count = tree.documents.len();
    if count > 1 {
        return Err(EditError::MultipleDocuments { count });
    }
    tree.documents.into_iter().next().ok_or(EditError::NotAMapping { found: "empty" })
}

pub(super) fn top_level_entries(root: &Node) -> Result<&[(Node, Node)], EditError> {
    match &root.kind {
        Kind::Mapping { style: StructureStyle::Block, entries, .. } => {
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
        _ => Err(EditError::NotAMapping { found: root.describe() }),
    }
}

/// The entry whose key is the scalar `name`, if any; an error if there are several.
pub(super) fn find_unique<'n>(
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

pub(super) fn check_replicas(value: &Node) -> Result<(), EditError> {
    check_properties(REPLICAS, value)?;
    match value.kind {
        Kind::Scalar { style: ScalarStyle::Plain, .. } if value.end > value.start => Ok(()),
        _ => Err(EditError::ReplicasNotPlainScalar { line: value.line, found: value.describe() }),
    }
}

pub(super) fn check_hostnames(value: &Node) -> Result<(), EditError> {
    check_properties(HOSTNAMES, value)?;
    let Kind::Sequence { items, .. } = &value.kind else {
        return Err(EditError::HostnamesNotSequence { line: value.line, found: value.describe() });
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
