//! The JSON bodies of `POST /add` and `DELETE /rm` (`admin::parse_scale_body` and
//! `admin::check_scale_request`), then what `/add` does with an accepted body: rewrite the manifest.
//!
//! Input: a request body (any bytes).
//!
//! Checks: nothing panics; an accepted body has `n` >= 1 and exactly the strings of its
//! `hostnames`, and reads back the same after being written out again; a refusal is a sentence;
//! a body that passes the shared checks has at most `n` valid, distinct names, and adding them
//! (plus generated names up to `n`) to the shipped manifests rewrites each into a valid manifest
//! with exactly those replicas, as `/add` requires before it writes anything.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlb::fuzzing::{ScaleRequest, check_scale_request, generate_name, parse_scale_body};
use ringlb::manifest::edit::rewrite_scale;
use ringlb::manifest::{Manifest, is_valid_name};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const TOO_MANY: &str = "Length of hostname list is more than newly added instances";

/// The shipped manifests, and the default one with its names as a block list.
const MANIFESTS: [&str; 4] = [
    include_str!("../../manifests/cluster.yaml"),
    include_str!("../../manifests/assignment.yaml"),
    include_str!("../../manifests/local.yaml"),
    "name: demo   # block list\nreplicas: 2\nhostnames:\n  # first\n  - server1\n  - server2   # last\n",
];

fuzz_target!(|data: &[u8]| {
    let request = match parse_scale_body(data) {
        Ok(request) => request,
        Err(refusal) => {
            assert!(!refusal.to_string().is_empty());
            return;
        }
    };
    accepted(data, &request);
    match check_scale_request(&request, TOO_MANY) {
        Ok(()) => {
            assert!(request.hostnames.len() <= request.n as usize);
            let distinct: BTreeSet<&String> = request.hostnames.iter().collect();
            assert_eq!(distinct.len(), request.hostnames.len(), "names are distinct");
            assert!(request.hostnames.iter().all(|n| is_valid_name(n)));
            for text in MANIFESTS {
                add(text, &request);
            }
        }
        Err(refusal) => assert!(!refusal.to_string().is_empty()),
    }
});

/// The accepted body says what the request holds.
fn accepted(data: &[u8], request: &ScaleRequest) {
    assert!(request.n >= 1);
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(data) else {
        panic!("accepted a body that is not a JSON object");
    };
    assert!(fields.keys().all(|k| k == "n" || k == "hostnames"), "unknown field accepted");
    assert_eq!(fields.get("n").and_then(Value::as_u64), Some(u64::from(request.n)));
    match fields.get("hostnames") {
        None | Some(Value::Null) => assert!(request.hostnames.is_empty()),
        Some(Value::Array(items)) => {
            let strings: Vec<&str> = items.iter().map(|v| v.as_str().expect("a string")).collect();
            assert_eq!(strings, request.hostnames);
        }
        Some(other) => panic!("accepted hostnames {other}"),
    }
    let written = json!({"n": request.n, "hostnames": request.hostnames}).to_string();
    assert_eq!(parse_scale_body(written.as_bytes()).ok().as_ref(), Some(request), "{written}");
}

/// What `/add` does with the request on a cluster running the manifest `text`: the current
/// replicas, then the listed names, then generated names up to `n` more; the rewritten manifest
/// must be valid and hold exactly that list.
fn add(text: &str, request: &ScaleRequest) {
    let manifest = Manifest::parse(text).expect("a shipped manifest is valid");
    let current: Vec<String> = (0..manifest.replicas as usize)
        .map(|i| manifest.hostnames.get(i).cloned().unwrap_or_else(|| format!("{}-{}", manifest.name, i + 1)))
        .collect();
    if request.hostnames.iter().any(|n| current.contains(n)) {
        return; // `/add` answers 409: already a replica.
    }
    let total = current.len() + request.n as usize;
    if total > manifest.ring_capacity() as usize {
        return; // `/add` answers 400: over the limit.
    }
    let mut taken: BTreeSet<String> = current.iter().cloned().collect();
    taken.extend(request.hostnames.iter().cloned());
    let mut names = current.clone();
    names.extend(request.hostnames.iter().cloned());
    while names.len() < total {
        let name = generate_name(&manifest.name, &taken);
        taken.insert(name.clone());
        names.push(name);
    }
    let count = u32::try_from(names.len()).expect("at most the ring capacity");
    let out = rewrite_scale(text, count, &names).unwrap_or_else(|e| panic!("cannot rewrite: {e}"));
    let after =
        Manifest::parse(&out).unwrap_or_else(|e| panic!("the rewritten manifest is invalid: {e}\n{out}"));
    assert_eq!(after.replicas, count);
    assert_eq!(after.hostnames, names);
    let mut expected = manifest.clone();
    expected.replicas = count;
    expected.hostnames = names;
    assert_eq!(after, expected, "other fields changed:\n{out}");
}
