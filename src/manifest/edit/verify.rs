//! The editor's last safety net: the rewritten text, parsed again, must be the original document
//! with only `replicas` and `hostnames` changed, to exactly the requested values.

use super::checks::{find_unique, parse_single_document, top_level_entries};
use super::quote::is_plain_safe;
use super::{EditError, HOSTNAMES, REPLICAS};
use crate::manifest::yaml_tree::{Kind, Node};
use serde_saphyr::granit_parser::ScalarStyle;

/// Checks `output`, the rewrite of the document whose root was `before`, against the request.
pub(super) fn verify(
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
