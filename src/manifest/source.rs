//! The manifest as the rest of ringlb sees it: the last good version, numbered, on a channel.
//!
//! Every way the desired state changes (the file watcher, the admin API after it rewrote the
//! file) goes through [`ManifestSource::apply_text`], which parses, validates, refuses changes to
//! fields that cannot change live, and only then publishes. A rejected text changes nothing and is
//! remembered as the last error, so it can be reported.

use super::{Manifest, ManifestError, RuntimeKind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

/// A validated manifest and the version number under which it was published.
#[derive(Clone, Debug)]
pub struct Desired {
    /// The manifest.
    pub manifest: Arc<Manifest>,
    /// Increases by one each time a manifest with a different meaning is applied.
    pub version: u64,
}

/// What [`ManifestSource::apply_text`] did.
#[derive(Debug)]
pub enum Applied {
    /// A new version was published.
    Changed(u64),
    /// The text means the same as the current version (comments or spacing changed, or nothing).
    Same(u64),
}

impl Applied {
    /// The version in effect afterwards.
    pub fn version(&self) -> u64 {
        match self {
            Applied::Changed(v) | Applied::Same(v) => *v,
        }
    }
}

struct State {
    /// The text last seen (good or bad), to skip re-parsing an unchanged file.
    last_text: String,
    /// Why the last text was rejected, if it was.
    last_error: Option<String>,
}

/// Owner of the desired state: the only code that publishes a new manifest.
pub struct ManifestSource {
    path: PathBuf,
    /// `ringlb run --runtime`: the runtime every version runs on, whatever the file says.
    runtime: Option<RuntimeKind>,
    state: Mutex<State>,
    tx: watch::Sender<Desired>,
    /// The desired state of each service (`Manifest::services`; the one cluster without
    /// `services:`), sent only when that service's part changed. Their number cannot change
    /// while ringlb runs (`Manifest::immutable_changes`).
    services: Vec<watch::Sender<Desired>>,
}

impl ManifestSource {
    /// Loads the manifest at `path`; it must be valid, since there is no last good one yet.
    ///
    /// # Errors
    /// Any [`ManifestError`].
    pub fn open(path: &Path) -> Result<Arc<ManifestSource>, ManifestError> {
        ManifestSource::open_as(path, None)
    }

    /// As [`ManifestSource::open`], every version of the file run on `runtime` when given
    /// ([`Manifest::parse_as`]).
    ///
    /// # Errors
    /// Any [`ManifestError`].
    pub fn open_as(path: &Path, runtime: Option<RuntimeKind>) -> Result<Arc<ManifestSource>, ManifestError> {
        let (manifest, text) = Manifest::load_as(path, runtime)?;
        let services = manifest
            .services()
            .into_iter()
            .map(|service| watch::channel(Desired { manifest: Arc::new(service.manifest), version: 1 }).0)
            .collect();
        let (tx, _) = watch::channel(Desired { manifest: Arc::new(manifest), version: 1 });
        Ok(Arc::new(ManifestSource {
            path: path.to_path_buf(),
            runtime,
            state: Mutex::new(State { last_text: text, last_error: None }),
            tx,
            services,
        }))
    }

    /// The manifest file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A receiver that sees every published version.
    pub fn subscribe(&self) -> watch::Receiver<Desired> {
        self.tx.subscribe()
    }

    /// A receiver of the desired state of `services[index]` (index 0: the cluster, for a manifest
    /// without `services:`): the service as a cluster of its own, with the version under which it
    /// last changed; an edit of another service sends it nothing. `None` past the last service.
    pub fn service(&self, index: usize) -> Option<watch::Receiver<Desired>> {
        self.services.get(index).map(watch::Sender::subscribe)
    }

    /// The version in effect.
    pub fn current(&self) -> Desired {
        self.tx.borrow().clone()
    }

    /// Why the last text was rejected, if the file is currently invalid.
    pub fn last_error(&self) -> Option<String> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).last_error.clone()
    }

    /// Re-reads the file and applies it if it changed.
    ///
    /// # Errors
    /// The file cannot be read or is invalid; the last good manifest stays in effect.
    pub fn reload(&self) -> Result<Applied, ManifestError> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|source| ManifestError::Read { path: self.path.display().to_string(), source })?;
        self.apply_text(&text)
    }

    /// Parses `text` and publishes it if it is valid and means something new.
    ///
    /// # Errors
    /// The text is invalid or changes a field that cannot change live; nothing is published and
    /// the error is kept as [`ManifestSource::last_error`].
    pub fn apply_text(&self, text: &str) -> Result<Applied, ManifestError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.tx.borrow().clone();
        if text == state.last_text && state.last_error.is_none() {
            return Ok(Applied::Same(current.version));
        }
        state.last_text = text.to_owned();
        let parsed = Manifest::parse_as(text, self.runtime).and_then(|next| {
            let frozen = current.manifest.immutable_changes(&next);
            if frozen.is_empty() {
                Ok(next)
            } else {
                Err(ManifestError::Invalid(
                    frozen
                        .into_iter()
                        .map(|mut e| {
                            e.position = super::locate::locate(text, &e.field);
                            e
                        })
                        .collect(),
                ))
            }
        });
        let next = match parsed {
            Ok(next) => next,
            Err(error) => {
                metrics::counter!(crate::telemetry::MANIFEST_RELOADS, "result" => "rejected").increment(1);
                state.last_error = Some(error.to_string());
                return Err(error);
            }
        };
        state.last_error = None;
        if next == *current.manifest {
            metrics::counter!(crate::telemetry::MANIFEST_RELOADS, "result" => "unchanged").increment(1);
            return Ok(Applied::Same(current.version));
        }
        metrics::counter!(crate::telemetry::MANIFEST_RELOADS, "result" => "applied").increment(1);
        let version = current.version + 1;
        for (tx, service) in self.services.iter().zip(next.services()) {
            tx.send_if_modified(|desired| {
                let changed = *desired.manifest != service.manifest;
                if changed {
                    *desired = Desired { manifest: Arc::new(service.manifest), version };
                }
                changed
            });
        }
        self.tx.send_replace(Desired { manifest: Arc::new(next), version });
        Ok(Applied::Changed(version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> (tempfile::TempDir, Arc<ManifestSource>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.yaml");
        std::fs::write(&path, text).unwrap();
        let source = ManifestSource::open(&path).unwrap();
        (dir, source)
    }

    #[test]
    fn each_service_hears_only_of_its_own_changes() {
        let text = |web: u32, api: u32| {
            format!(
                "name: shop\nservices:\n  - name: web\n    match: {{host: web.example}}\n    replicas: {web}\n    \
                 replica: {{runtime: process, command: [web, '{{port}}']}}\n  - name: api\n    replicas: {api}\n    \
                 replica: {{runtime: process, command: [api, '{{port}}']}}\n"
            )
        };
        let (_dir, shop) = source(&text(2, 3));
        let (mut web, mut api) = (shop.service(0).unwrap(), shop.service(1).unwrap());
        assert!(shop.service(2).is_none());
        assert_eq!((web.borrow().manifest.name.as_str(), web.borrow().manifest.replicas), ("web", 2));
        shop.apply_text(&text(2, 5)).unwrap();
        assert!(!web.has_changed().unwrap(), "web did not change");
        assert!(api.has_changed().unwrap());
        let seen = api.borrow_and_update().clone();
        assert_eq!((seen.manifest.replicas, seen.version), (5, 2));
        shop.apply_text(&text(4, 5)).unwrap();
        assert!(!api.has_changed().unwrap(), "api did not change");
        let seen = web.borrow_and_update().clone();
        assert_eq!((seen.manifest.replicas, seen.version), (4, 3));
        // Without `services:`, service 0 is the cluster, every change its own.
        let (_dir, cluster) = source("name: demo\nreplicas: 3\n");
        let mut only = cluster.service(0).unwrap();
        cluster.apply_text("name: demo\nreplicas: 4\n").unwrap();
        assert_eq!(*only.borrow_and_update().manifest, *cluster.current().manifest);
        assert!(cluster.service(1).is_none());
    }

    #[test]
    fn a_new_meaning_is_published_with_the_next_version() {
        let (_dir, source) = source("name: demo\nreplicas: 3\n");
        let mut rx = source.subscribe();
        let applied = source.apply_text("name: demo\nreplicas: 5\n").unwrap();
        assert!(matches!(applied, Applied::Changed(2)));
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().manifest.replicas, 5);
    }

    #[test]
    fn a_runtime_given_on_the_command_line_holds_for_every_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.yaml");
        std::fs::write(&path, "name: demo\nreplica: {runtime: docker}\n").unwrap();
        let source = ManifestSource::open_as(&path, Some(RuntimeKind::Process)).unwrap();
        assert_eq!(source.current().manifest.replica.runtime, RuntimeKind::Process);
        source.apply_text("name: demo\nreplicas: 2\nreplica: {runtime: docker}\n").unwrap();
        assert_eq!(source.current().manifest.replica.runtime, RuntimeKind::Process, "and no live change");
        assert_eq!("swarm".parse::<RuntimeKind>(), Ok(RuntimeKind::Swarm));
        assert!("kubernetes".parse::<RuntimeKind>().unwrap_err().contains("not a runtime"));
    }

    #[test]
    fn a_comment_only_change_publishes_nothing() {
        let (_dir, source) = source("name: demo\nreplicas: 3\n");
        let applied = source.apply_text("# hello\nname: demo\nreplicas: 3\n").unwrap();
        assert!(matches!(applied, Applied::Same(1)));
    }

    #[test]
    fn an_invalid_text_keeps_the_last_good_and_is_remembered_until_fixed() {
        let (_dir, source) = source("name: demo\nreplicas: 3\n");
        assert!(source.apply_text("name: demo\nreplicas: three\n").is_err());
        assert_eq!(source.current().manifest.replicas, 3);
        assert!(source.last_error().is_some());
        source.apply_text("name: demo\nreplicas: 4\n").unwrap();
        assert_eq!(source.current().manifest.replicas, 4);
        assert!(source.last_error().is_none());
    }

    #[test]
    fn fields_that_cannot_change_live_are_refused_with_their_position() {
        let (_dir, source) = source("name: demo\n");
        let err = source.apply_text("name: other\n").unwrap_err();
        assert!(err.to_string().contains("line 1, column 7: name: cannot change"), "{err}");
        assert_eq!(source.current().manifest.name, "demo");
    }
}
