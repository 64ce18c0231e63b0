//! Prometheus metrics: every metric's name and meaning in one place, the recorder that renders them
//! for `GET /_ringlb/metrics`, and the per-replica handles the data path keeps.
//!
//! The proxy records each request through handles registered once per replica (no label lookups
//! and no allocation per request); gauges that mirror atomics (requests in flight) are set when a
//! scrape renders. Without an installed recorder (tests, `ringlb analyze`) every handle is a no-op.
//! Names follow Prometheus conventions: `ringlb_` prefix, `_total` for counters, base units.

use http::{Method, StatusCode};
use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Requests answered by a replica, by method class and status class.
pub const REQUESTS: &str = "ringlb_requests_total";
/// Time from sending a request to a replica to its response head.
pub const REQUEST_DURATION: &str = "ringlb_request_duration_seconds";
/// Requests being forwarded to a replica now.
pub const INFLIGHT: &str = "ringlb_inflight_requests";
/// Requests the load balancer answered itself because no replica could take them.
pub const UNROUTED: &str = "ringlb_unrouted_requests_total";
/// Requests retried on the next replica after a failure before any answer.
pub const RETRIES: &str = "ringlb_retries_total";
/// Replicas ejected by the proxy after a refused connection.
pub const EJECTIONS: &str = "ringlb_ejections_total";
/// Failed heartbeats.
pub const HEARTBEAT_FAILURES: &str = "ringlb_heartbeat_failures_total";
/// Replicas by state (desired is the wanted count).
pub const REPLICAS: &str = "ringlb_replicas";
/// Reconcile passes of the controller.
pub const RECONCILE_PASSES: &str = "ringlb_reconcile_passes_total";
/// Actions the controller took, by kind.
pub const RECONCILE_ACTIONS: &str = "ringlb_reconcile_actions_total";
/// Manifest texts seen, by result.
pub const MANIFEST_RELOADS: &str = "ringlb_manifest_reloads_total";
/// The autoscaler's last decision.
pub const AUTOSCALER_DESIRED: &str = "ringlb_autoscaler_desired_replicas";
/// Requests in flight the autoscaler observed at its last decision.
pub const AUTOSCALER_OBSERVED: &str = "ringlb_autoscaler_observed_inflight_requests";

/// Client connections the fast path passed to the hyper path, by reason.
pub const HANDOVERS: &str = "ringlb_fast_path_handovers_total";
/// Tunnels (upgraded connections: WebSocket and the like) open now.
pub const TUNNELS_OPEN: &str = "ringlb_tunnels_open";
/// Certificate replacements after their files changed, by result (`loaded`, `refused`).
pub const TLS_RELOADS: &str = "ringlb_tls_certificate_reloads_total";
/// Client connections cut off for abuse, by reason (`rapid_reset`).
pub const CONNECTIONS_CUT: &str = "ringlb_client_connections_cut_total";
/// Tunnels closed, by why (`closed`, `idle`, `drained`, `error`).
pub const TUNNELS_CLOSED: &str = "ringlb_tunnels_closed_total";

/// Buckets of the duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Method classes, as label values.
pub const METHOD_CLASSES: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OTHER"];
/// Status classes, as label values.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index of a method's class in [`METHOD_CLASSES`].
pub fn method_class(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        _ => 5,
    }
}

/// The index of a status's class in [`STATUS_CLASSES`].
pub fn status_class(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// How often [`keep_up`] folds the recorded samples into their histograms.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds the samples recorded since the last time into their histograms' buckets, every
/// [`UPKEEP_EVERY`], until `stop`. The recorder keeps every sample of a histogram until it is
/// folded (a scrape folds them too): without this, a load balancer that nobody scrapes grows by
/// about 16 bytes per request, without end.
pub async fn keep_up(handle: PrometheusHandle, stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

/// Installs the global recorder and describes every metric; returns the handle that renders
/// (run [`keep_up`] beside it).
///
/// # Errors
/// A recorder is already installed.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &DURATION_BUCKETS)?
        .install_recorder()?;
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "Requests answered by a replica, by service, replica, method class and status class."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from forwarding a request to the replica's response head."
    );
    describe_gauge!(INFLIGHT, Unit::Count, "Requests being forwarded to the replica now.");
    describe_counter!(
        UNROUTED,
        Unit::Count,
        "Requests answered by the load balancer itself (503) because no replica could take them, by reason."
    );
    describe_counter!(
        TLS_RELOADS,
        Unit::Count,
        "Certificate replacements after their files changed: loaded, or refused (the old ones keep serving)."
    );
    describe_counter!(
        CONNECTIONS_CUT,
        Unit::Count,
        "Client connections cut off for abuse, by reason (rapid_reset: an HTTP/2 client resetting most of its streams)."
    );
    describe_gauge!(TUNNELS_OPEN, Unit::Count, "Tunnels (upgraded connections, such as WebSocket) open now.");
    describe_counter!(
        TUNNELS_CLOSED,
        Unit::Count,
        "Tunnels closed, by why: closed (by an end), idle, drained (their replica left), error."
    );
    describe_counter!(
        HANDOVERS,
        Unit::Count,
        "Client connections the fast path passed to the hyper path (HTTP/1.0, chunked upload, upgrade, admin route, ...), by reason."
    );
    describe_counter!(
        RETRIES,
        Unit::Count,
        "Requests sent again to the next replica after a failure before any answer."
    );
    describe_counter!(
        EJECTIONS,
        Unit::Count,
        "Replicas taken out of rotation by the proxy after a refused connection (until their next good heartbeat)."
    );
    describe_counter!(HEARTBEAT_FAILURES, Unit::Count, "Failed heartbeats, by service and replica.");
    describe_gauge!(
        REPLICAS,
        Unit::Count,
        "Replicas by service and state: desired, ready, starting, failing, draining, exited."
    );
    describe_counter!(RECONCILE_PASSES, Unit::Count, "Reconcile passes of the controller.");
    describe_counter!(
        RECONCILE_ACTIONS,
        Unit::Count,
        "Actions the controller took, by kind: start, drain, stop, retire."
    );
    describe_counter!(
        MANIFEST_RELOADS,
        Unit::Count,
        "Manifest texts seen, by result: applied, unchanged, rejected."
    );
    describe_gauge!(AUTOSCALER_DESIRED, Unit::Count, "The autoscaler's last decision (replicas).");
    describe_gauge!(
        AUTOSCALER_OBSERVED,
        Unit::Count,
        "Requests in flight the autoscaler observed at its last decision."
    );
    Ok(handle)
}

/// One replica's handles. The request counter of a (method class, status class) pair is
/// registered the first time it is used, so the scrape lists only pairs that happened; after that
/// a request costs one atomic increment, without a label lookup.
#[derive(Debug)]
pub struct ReplicaMetrics {
    service: String,
    name: String,
    requests: [OnceLock<Counter>; METHOD_CLASSES.len() * STATUS_CLASSES.len()],
    duration: Histogram,
    inflight: Gauge,
}

impl ReplicaMetrics {
    /// The handles of replica `name` of `service`.
    pub fn new(service: &str, name: &str) -> ReplicaMetrics {
        ReplicaMetrics {
            service: service.to_owned(),
            name: name.to_owned(),
            requests: std::array::from_fn(|_| OnceLock::new()),
            duration: histogram!(REQUEST_DURATION, "service" => service.to_owned(), "replica" => name.to_owned()),
            inflight: gauge!(INFLIGHT, "service" => service.to_owned(), "replica" => name.to_owned()),
        }
    }

    /// The service of the replica.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Counts one answered request and its time to the response head.
    pub fn record(&self, method: &Method, status: StatusCode, elapsed: Duration) {
        let (m, s) = (method_class(method), status_class(status));
        if let Some(slot) = self.requests.get(m * STATUS_CLASSES.len() + s) {
            slot.get_or_init(|| {
                counter!(REQUESTS, "service" => self.service.clone(), "replica" => self.name.clone(), "method" => METHOD_CLASSES[m], "status" => STATUS_CLASSES[s])
            })
            .increment(1);
        }
        self.duration.record(elapsed.as_secs_f64());
    }

    /// Sets the in-flight gauge (at scrape time, from the replica's atomic).
    pub fn set_inflight(&self, inflight: u64) {
        self.inflight.set(inflight as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_method_and_status() {
        assert_eq!(METHOD_CLASSES[method_class(&Method::GET)], "GET");
        assert_eq!(METHOD_CLASSES[method_class(&Method::PATCH)], "OTHER");
        assert_eq!(STATUS_CLASSES[status_class(StatusCode::OK)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class(StatusCode::NOT_FOUND)], "4xx");
        assert_eq!(STATUS_CLASSES[status_class(StatusCode::GATEWAY_TIMEOUT)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(StatusCode::CONTINUE)], "1xx");
    }

    #[tokio::test(start_paused = true)]
    async fn upkeep_loses_no_sample_and_ends_when_told() {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &DURATION_BUCKETS)
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..3 {
                metrics::histogram!(REQUEST_DURATION).record(0.002);
            }
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let upkeep = tokio::spawn(keep_up(handle.clone(), stop.clone()));
        // Two periods: the first tick comes at once, the second after UPKEEP_EVERY.
        tokio::time::sleep(UPKEEP_EVERY * 2).await;
        metrics::with_local_recorder(&recorder, || metrics::histogram!(REQUEST_DURATION).record(0.002));
        tokio::time::sleep(UPKEEP_EVERY).await;
        stop.cancel();
        upkeep.await.expect("upkeep ends when told");
        let rendered = handle.render();
        let count = format!("{REQUEST_DURATION}_count 4");
        assert!(rendered.contains(&count), "{rendered}");
    }
}
