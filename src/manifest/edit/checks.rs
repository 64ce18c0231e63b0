//! What the editor refuses to touch: text that is not one YAML document with a block mapping at
//! its top, duplicated or merged keys, and `replicas`/`hostnames` values it cannot rewrite safely
//! (aliases, anchors, tags, the wrong kind of node).

use super::{EditError, HOSTNAMES, REPLICAS, SERVICES};
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

/// The entries of `root`, the document's top: a block mapping without a merge key.
pub(super) fn top_level_entries(root: &Node) -> Result<&[(Node, Node)], EditError> {
    mapping_entries(root)
}

/// The entries of `mapping`, which must be a block mapping without a merge key (the top, or a
/// service of `services:`).
pub(super) fn mapping_entries(mapping: &Node) -> Result<&[(Node, Node)], EditError> {
    match &mapping.kind {
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
        _ => Err(EditError::NotAMapping { found: mapping.describe() }),
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

/// The mapping of `services[index]` in the top-level `entries`.
pub(super) fn service_mapping(entries: &[(Node, Node)], index: usize) -> Result<&Node, EditError> {
    let (key, list) = find_unique(entries, SERVICES)?.ok_or(EditError::NoSuchService { index, count: 0 })?;
    let Kind::Sequence { items, .. } = &list.kind else {
        return Err(EditError::UnsupportedLayout {
            key: SERVICES,
            line: key.line,
            reason: "it is not a list",
        });
    };
    if list.anchor != 0
        || list.tag.is_some()
        || items.iter().any(|item| item.anchor != 0 || item.tag.is_some())
    {
        return Err(EditError::AnchorTagOrAlias {
            key: SERVICES,
            line: list.line,
            what: "an anchor or a tag",
        });
    }
    let item = items.get(index).ok_or(EditError::NoSuchService { index, count: items.len() })?;
    match &item.kind {
        Kind::Mapping { style: StructureStyle::Block, .. } => Ok(item),
        _ => Err(EditError::UnsupportedLayout {
            key: SERVICES,
            line: item.line,
            reason: "the service is not written as a block mapping (`- name: ...` with a key per line)",
        }),
    }
}
