//! The editor's last safety net: the rewritten text, parsed again, must be the original document
//! with only `replicas` and `hostnames` changed (at the top, or in one service of `services:`),
//! to exactly the requested values.

use super::checks::{find_unique, mapping_entries, parse_single_document};
use super::quote::is_plain_safe;
use super::{EditError, HOSTNAMES, REPLICAS, SERVICES, Scope};
use crate::manifest::yaml_tree::{Kind, Node};
use serde_saphyr::granit_parser::ScalarStyle;

/// Checks `output`, the rewrite of the document whose root was `before`, against the request for
/// the keys of `scope`.
pub(super) fn verify(
    before: &Node,
    output: &str,
    scope: Scope,
    replicas: u32,
    hostnames: &[String],
    had_hostnames: bool,
) -> Result<(), EditError> {
    let after = parse_single_document(output).map_err(|e| fail(format!("does not parse back ({e})")))?;
    if before.anchor != after.anchor || before.tag != after.tag {
        return Err(fail("changed the top-level node's anchor or tag".to_owned()));
    }
    let Scope::Service(index) = scope else {
        return verify_mapping(before, &after, replicas, hostnames, had_hostnames);
    };
    // Everything but `services` as it was; in it, every service but this one as it was.
    let (before_top, after_top) = (entries_of(before)?, entries_of(&after)?);
    let is_services =
        |entry: &&(Node, Node)| matches!(&entry.0.kind, Kind::Scalar { value, .. } if value == SERVICES);
    if !same_entries(
        before_top.iter().filter(|e| !is_services(e)),
        after_top.iter().filter(|e| !is_services(e)),
    ) {
        return Err(fail("changed top-level keys other than `services`".to_owned()));
    }
    let (Some(before_items), Some(after_items)) = (services_of(before_top), services_of(after_top)) else {
        return Err(fail("lost its `services` list".to_owned()));
    };
    if before_items.len() != after_items.len()
        || before_items.iter().zip(after_items).enumerate().any(|(i, (b, a))| i != index && !same_value(b, a))
    {
        return Err(fail("changed another service".to_owned()));
    }
    match (before_items.get(index), after_items.get(index)) {
        (Some(b), Some(a)) => verify_mapping(b, a, replicas, hostnames, had_hostnames),
        _ => Err(fail("lost the service".to_owned())),
    }
}

/// The items of the top-level `services` list among `entries`.
fn services_of(entries: &[(Node, Node)]) -> Option<&[Node]> {
    let (_, list) = entries
        .iter()
        .find(|(key, _)| matches!(&key.kind, Kind::Scalar { value, .. } if value == SERVICES))?;
    match &list.kind {
        Kind::Sequence { items, .. } => Some(items),
        _ => None,
    }
}

/// An [`EditError::Internal`] saying what the rewrite did wrong.
fn fail(what: String) -> EditError {
    EditError::Internal(format!("the rewritten manifest {what}"))
}

/// The entries of a mapping of the rewrite, or why it has none.
fn entries_of(node: &Node) -> Result<&[(Node, Node)], EditError> {
    mapping_entries(node).map_err(|e| fail(e.to_string()))
}

/// Whether two lists of entries are the same, key by key and value by value.
fn same_entries<'a>(
    before: impl Iterator<Item = &'a (Node, Node)>,
    after: impl Iterator<Item = &'a (Node, Node)>,
) -> bool {
    let (before, after): (Vec<_>, Vec<_>) = (before.collect(), after.collect());
    before.len() == after.len()
        && before.iter().zip(&after).all(|(b, a)| same_value(&b.0, &a.0) && same_value(&b.1, &a.1))
}

/// The mapping `after` is `before` with only `replicas` and `hostnames` changed, to exactly the
/// requested values.
fn verify_mapping(
    before: &Node,
    after: &Node,
    replicas: u32,
    hostnames: &[String],
    had_hostnames: bool,
) -> Result<(), EditError> {
    let (before_entries, after_entries) = (entries_of(before)?, entries_of(after)?);
    if !same_entries(others(before_entries).into_iter(), others(after_entries).into_iter()) {
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
