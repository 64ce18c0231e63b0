//! Heartbeats: one small task per replica instance that sends `GET <health.path>` and reports
//! every result to the controller.
//!
//! A new instance is probed every 50 ms until its first good heartbeat, so it joins the ring as
//! soon as it can serve; after that, every `health.interval`. An HTTP heartbeat succeeds on an
//! answer whose status is in `health.status` (200-399 unless set) within `health.timeout`, on a
//! new connection each time; a TCP heartbeat (`health.kind: tcp`) on a connect; a gRPC one
//! (`health.kind: grpc`) on `SERVING` from `grpc.health.v1.Health/Check` (`grpc_health.rs`).
//! The probe task only observes; what a result means (leave the ring, come back, be replaced)
//! is the controller's decision.

use crate::ids::InstanceId;
use crate::manifest::{HealthKind, StatusSet};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Probe period while an instance has not yet answered.
const STARTUP_PERIOD: Duration = Duration::from_millis(50);

/// What the probes need from the manifest; updated live by the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    /// An HTTP request or a TCP connect.
    pub kind: HealthKind,
    /// Heartbeat path.
    pub path: String,
    /// The statuses that count as healthy.
    pub status: StatusSet,
    /// Time between heartbeats once the instance answered.
    pub interval: Duration,
    /// How long one heartbeat may take.
    pub timeout: Duration,
}

/// Why a heartbeat failed. Its text (through [`crate::error_chain`]) is what the log and the
/// status show.
#[derive(Debug, Error)]
pub enum HeartbeatError {
    /// The manifest's heartbeat path does not make a URI with the replica's address.
    #[error("bad heartbeat URI")]
    BadUri(#[source] http::uri::InvalidUri),
    /// No answer within `health.timeout`.
    #[error("no answer within {after:?}")]
    TimedOut {
        /// The timeout that passed.
        after: Duration,
    },
    /// No connection: refused, unreachable, or the connect itself timed out.
    #[error(transparent)]
    Connect(hyper_util::client::legacy::Error),
    /// A TCP heartbeat's connect failed.
    #[error("cannot connect")]
    Refused(#[source] std::io::Error),
    /// Connected, but the request failed before an answer (the connection closed or broke).
    #[error(transparent)]
    Request(hyper_util::client::legacy::Error),
    /// The gRPC health check failed (`health.kind: grpc`).
    #[error(transparent)]
    Grpc(crate::grpc_health::GrpcHealthError),
    /// An answer outside `health.status`.
    #[error("answered {status}")]
    BadStatus {
        /// The status it answered.
        status: http::StatusCode,
    },
}

/// One heartbeat's result.
#[derive(Debug)]
pub struct HealthReport {
    /// Which instance.
    pub instance: InstanceId,
    /// `Ok` for a 2xx within the timeout, else why not.
    pub result: Result<(), HeartbeatError>,
}

/// Starts probe tasks; holds the HTTP client they share.
#[derive(Clone)]
pub struct Prober {
    client: Client<HttpConnector, Empty<Bytes>>,
    settings: watch::Receiver<ProbeSettings>,
    reports: mpsc::Sender<HealthReport>,
}

/// Stops its probe task when dropped.
#[derive(Debug)]
pub struct ProbeHandle(JoinHandle<()>);

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Prober {
    /// A prober that follows `settings` and sends every result to `reports`.
    pub fn new(settings: watch::Receiver<ProbeSettings>, reports: mpsc::Sender<HealthReport>) -> Prober {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        let client = Client::builder(TokioExecutor::new())
            // A fresh connection per heartbeat: a pooled one could outlive a replica that no
            // longer accepts connections, and one connect a second per replica costs nothing.
            .pool_max_idle_per_host(0)
            .build(connector);
        Prober { client, settings, reports }
    }

    /// Starts probing `instance` at `addr` until the handle is dropped.
    pub fn spawn(&self, instance: InstanceId, addr: SocketAddr) -> ProbeHandle {
        let prober = self.clone();
        ProbeHandle(tokio::spawn(async move { prober.probe_loop(instance, addr).await }))
    }

    async fn probe_loop(mut self, instance: InstanceId, addr: SocketAddr) {
        let mut answered = false;
        loop {
            let settings = self.settings.borrow_and_update().clone();
            let result = self.probe(addr, &settings).await;
            answered |= result.is_ok();
            let report = HealthReport { instance: instance.clone(), result };
            if self.reports.send(report).await.is_err() {
                return; // the controller is gone
            }
            let period = if answered { settings.interval } else { STARTUP_PERIOD.min(settings.interval) };
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                changed = self.settings.changed() => if changed.is_err() { return },
            }
        }
    }

    async fn probe(&self, addr: SocketAddr, settings: &ProbeSettings) -> Result<(), HeartbeatError> {
        if settings.kind == HealthKind::Tcp {
            return match tokio::time::timeout(settings.timeout, tokio::net::TcpStream::connect(addr)).await {
                Err(_) => Err(HeartbeatError::TimedOut { after: settings.timeout }),
                Ok(Err(source)) => Err(HeartbeatError::Refused(source)),
                Ok(Ok(_)) => Ok(()),
            };
        }
        if settings.kind == HealthKind::Grpc {
            return match tokio::time::timeout(settings.timeout, crate::grpc_health::check(addr)).await {
                Err(_) => Err(HeartbeatError::TimedOut { after: settings.timeout }),
                Ok(result) => result.map_err(HeartbeatError::Grpc),
            };
        }
        let uri: http::Uri =
            format!("http://{addr}{}", settings.path).parse().map_err(HeartbeatError::BadUri)?;
        match tokio::time::timeout(settings.timeout, self.client.get(uri)).await {
            Err(_) => Err(HeartbeatError::TimedOut { after: settings.timeout }),
            Ok(Err(error)) if error.is_connect() => Err(HeartbeatError::Connect(error)),
            Ok(Err(error)) => Err(HeartbeatError::Request(error)),
            Ok(Ok(response)) if settings.status.contains(response.status().as_u16()) => Ok(()),
            Ok(Ok(response)) => Err(HeartbeatError::BadStatus { status: response.status() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProbeSettings {
        ProbeSettings {
            kind: HealthKind::Http,
            status: StatusSet::default(),
            path: "/heartbeat".into(),
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn a_live_replica_reports_ok_and_a_closed_port_reports_why() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            crate::replica::serve(listener, "t", None, std::future::pending(), Duration::from_secs(1)).await
        });
        let (_keep, settings_rx) = watch::channel(settings());
        let (tx, mut rx) = mpsc::channel(16);
        let prober = Prober::new(settings_rx, tx);
        let handle = prober.spawn(InstanceId("i".into()), addr);
        assert!(rx.recv().await.unwrap().result.is_ok());
        server.abort();
        let _ = server.await;
        let failed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Err(why) = rx.recv().await.unwrap().result {
                    return why;
                }
            }
        })
        .await
        .unwrap();
        assert!(!crate::error_chain(&failed).is_empty());
        drop(handle);
    }

    #[test]
    fn a_failed_heartbeat_reads_as_it_always_did() {
        let timed_out = HeartbeatError::TimedOut { after: Duration::from_millis(500) };
        assert_eq!(crate::error_chain(&timed_out), "no answer within 500ms");
        let refused = HeartbeatError::BadStatus { status: http::StatusCode::SERVICE_UNAVAILABLE };
        assert_eq!(crate::error_chain(&refused), "answered 503 Service Unavailable");
        let bad_uri = HeartbeatError::BadUri("http://a b".parse::<http::Uri>().unwrap_err());
        let cause = "http://a b".parse::<http::Uri>().unwrap_err().to_string();
        assert_eq!(crate::error_chain(&bad_uri), format!("bad heartbeat URI: {cause}"));
    }
}
