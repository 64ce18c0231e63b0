//! The status JSON at `/_ringlb/status`: the published snapshot, the controller's recent events
//! and the manifest's last error, in one document. The dashboard (`dashboard.rs`) is drawn from the
//! same status, and `ringlb status` reads it.

use super::AdminState;
use crate::events::{self, Recorded};
use crate::ring::Selector;
use crate::snapshot::{LastReconcile, Problem, ReplicaState, Snapshot};
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderValue, header};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The status JSON.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The manifest version in effect.
    pub manifest_version: u64,
    /// The snapshot's generation.
    pub generation: u64,
    /// Replicas wanted.
    pub desired: usize,
    /// Replicas in the ring.
    pub ready: usize,
    /// The wanted names, in order (what `/rep` lists).
    pub names: Vec<String>,
    /// The ring's members.
    pub ring: Vec<String>,
    /// How requests are hashed.
    pub hashing: Hashing,
    /// The ring's members with their live counters.
    pub members: Vec<Member>,
    /// Every replica the controller tracks, with its state.
    pub replicas: Vec<Replica>,
    /// The slot ring's virtual nodes (slot, replica), for drawing it; empty for maglev.
    pub ring_positions: Vec<(u32, String)>,
    /// Replicas that cannot start, and why.
    pub problems: Vec<Problem>,
    /// The last reconcile pass that did something.
    pub last_reconcile: Option<LastReconcile>,
    /// Recent controller events, oldest first.
    pub events: Vec<Recorded>,
    /// The replicas that answered the last requests, oldest first.
    pub recent_answers: Vec<String>,
    /// Why the manifest on disk was refused, if it is.
    pub last_manifest_error: Option<String>,
}

/// The hashing in effect.
#[derive(Debug, Serialize)]
pub struct Hashing {
    /// `maglev` or `ring`.
    pub algorithm: String,
    /// Maglev's table size, or the ring's slots.
    pub positions: u32,
    /// The request key.
    pub key: String,
    /// Bounded loads' factor, when on.
    pub balance_factor: Option<f64>,
}

/// A ring member.
#[derive(Debug, Serialize)]
pub struct Member {
    /// Name.
    pub name: String,
    /// Exercise id.
    pub id: u32,
    /// Address.
    pub address: SocketAddr,
    /// Share of the key space.
    pub share: f64,
    /// Requests in flight now.
    pub inflight: u64,
    /// Requests forwarded since it started.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Ejected by the proxy until its next good heartbeat.
    pub ejected: bool,
}

/// A replica and its state.
#[derive(Debug, Serialize)]
pub struct Replica {
    /// Name.
    pub name: String,
    /// The runtime's instance id.
    pub instance: String,
    /// Exercise id.
    pub id: u32,
    /// Address, when it runs.
    pub address: Option<SocketAddr>,
    /// starting, ready, failing, draining or exited.
    pub state: ReplicaState,
    /// Started at (Unix seconds).
    pub started_at: u64,
    /// Seconds since it started.
    pub age_seconds: u64,
    /// False while a rolling replacement is due.
    pub current_spec: bool,
    /// Requests in flight (ring members only).
    pub inflight: u64,
    /// Requests forwarded (ring members only).
    pub requests: u64,
    /// Share of the key space (0 outside the ring).
    pub share: f64,
}

/// Builds the status from the current snapshot.
pub fn status(state: &AdminState) -> Status {
    let snapshot: Arc<Snapshot> = state.snapshots.load();
    let shares = snapshot.ring.shares();
    let members: Vec<Member> = snapshot
        .members
        .iter()
        .zip(shares.iter().copied().chain(std::iter::repeat(0.0)))
        .map(|(b, share)| Member {
            name: b.name.clone(),
            id: b.id,
            address: b.addr,
            share,
            inflight: b.inflight(),
            requests: b.requests(),
            errors: b.errors(),
            ejected: b.is_ejected(),
        })
        .collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let replicas = snapshot
        .replicas
        .iter()
        .map(|r| {
            let member = members.iter().find(|m| Some(m.address) == r.address && m.name == r.name);
            Replica {
                name: r.name.clone(),
                instance: r.instance.clone(),
                id: r.id,
                address: r.address,
                state: r.state,
                started_at: r.started_at,
                age_seconds: now.saturating_sub(r.started_at),
                current_spec: r.current_spec,
                inflight: member.map_or(0, |m| m.inflight),
                requests: member.map_or(0, |m| m.requests),
                share: member.map_or(0.0, |m| m.share),
            }
        })
        .collect();
    let ring_positions = snapshot
        .ring
        .as_slots()
        .map(|ring| {
            ring.virtual_nodes()
                .iter()
                .filter_map(|v| snapshot.members.get(v.member).map(|b| (v.slot, b.name.clone())))
                .collect()
        })
        .unwrap_or_default();
    let config = snapshot.ring.config();
    let by_id: BTreeMap<u32, &str> = snapshot.members.iter().map(|b| (b.id, b.name.as_str())).collect();
    Status {
        manifest_version: snapshot.manifest_version,
        generation: snapshot.generation,
        desired: snapshot.replica_names.len(),
        ready: snapshot.members.len(),
        names: snapshot.replica_names.clone(),
        ring: snapshot.members.iter().map(|b| b.name.clone()).collect(),
        hashing: Hashing {
            algorithm: if snapshot.ring.as_slots().is_some() { "ring".into() } else { "maglev".into() },
            positions: if snapshot.ring.as_slots().is_some() { config.slots } else { config.table_size },
            key: snapshot.routing.key.to_string(),
            balance_factor: snapshot.routing.balance_factor,
        },
        members,
        replicas,
        ring_positions,
        problems: snapshot.problems.clone(),
        last_reconcile: snapshot.last_reconcile.clone(),
        events: events::recent(),
        recent_answers: state
            .snapshots
            .recent_answers()
            .into_iter()
            .filter_map(|id| by_id.get(&id).map(|n| (*n).to_owned()))
            .collect(),
        last_manifest_error: state.source.last_error(),
    }
}

/// `GET /_ringlb/status`.
pub async fn status_json(State(state): State<Arc<AdminState>>) -> Response {
    let body = serde_json::to_vec(&status(&state)).unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
