//! A cluster for one measurement: a real load balancer (in this process, on a port the kernel
//! picks) over real replicas (child processes or containers), started from a generated manifest
//! in a directory of its own, and removed completely afterwards.

use super::AnalyzeError;
use crate::balancer::{self, Balancer};
use crate::manifest::source::ManifestSource;
use crate::runtime::Runtime;
use crate::snapshot::Snapshots;
use crate::trigger::Trigger;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a cluster may take to have every replica in the ring.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A running analysis cluster.
pub struct Cluster<R: Runtime> {
    /// What runs its replicas (killing one is part of an experiment).
    pub runtime: Arc<R>,
    balancer: Balancer,
    dir: PathBuf,
}

impl<R: Runtime> Cluster<R> {
    /// Starts a load balancer over `runtime` from `manifest` and waits until `replicas` replicas
    /// are in the ring.
    ///
    /// # Errors
    /// The manifest is invalid, the port cannot be bound, or the replicas do not become ready.
    pub async fn start(
        runtime: Arc<R>,
        trigger: Trigger,
        manifest: &str,
        replicas: usize,
    ) -> Result<Self, AnalyzeError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("ringlb-analyze-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(AnalyzeError::io("create", &dir))?;
        let path = dir.join("cluster.yaml");
        std::fs::write(&path, manifest).map_err(AnalyzeError::io("write", &path))?;
        let source = ManifestSource::open(&path)
            .map_err(|source| AnalyzeError::Manifest { path: path.clone(), source })?;
        let balancer =
            Balancer::start(Arc::clone(&runtime), source, trigger, balancer::Options::default()).await?;
        let cluster = Cluster { runtime, balancer, dir };
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while cluster.snapshots().load().members.len() != replicas {
            if tokio::time::Instant::now() >= deadline {
                let problems = cluster.snapshots().load().problems.clone();
                cluster.stop().await;
                return Err(AnalyzeError::NotReady {
                    wanted: replicas,
                    within: READY_TIMEOUT,
                    problems: format!("{problems:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(cluster)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.balancer.addr)
    }

    /// The load balancer's routing snapshots (to watch the ring during an experiment).
    pub fn snapshots(&self) -> &Arc<Snapshots> {
        &self.balancer.snapshots
    }

    /// Stops the load balancer, then every replica, and removes the cluster's files.
    pub async fn stop(self) {
        self.balancer.stop().await;
        if let Ok(instances) = self.runtime.list().await {
            for instance in instances {
                if let Err(error) = self.runtime.stop(&instance.id, Duration::from_secs(2)).await {
                    tracing::warn!(%error, "cannot stop an analysis replica");
                }
            }
        }
        self.runtime.shutdown(Duration::from_secs(2)).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
