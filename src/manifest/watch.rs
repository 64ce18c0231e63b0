//! Follows the manifest file and applies every saved change.
//!
//! The watcher listens to the file's *directory* (editors that save by writing a new file and
//! renaming it replace the inode, so a watch on the file itself would go deaf), waits for a burst
//! of writes to settle (debounce), and applies the text once. A slow poll runs beside it as a safety
//! net for file systems that deliver no events (some bind mounts). An invalid text is logged with
//! its line and column and changes nothing; the next good save applies.

use super::source::{Applied, ManifestSource};
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Quiet time after the last file event before the text is read.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest a steady stream of events can delay a read.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// How often the file is read even without events.
const POLL_EVERY: Duration = Duration::from_secs(2);

/// Watches the manifest until `shutdown`; see the module docs.
pub async fn run(source: Arc<ManifestSource>, shutdown: CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    // Kept alive for as long as this loop runs; dropping it stops the OS watch.
    let _watcher = start_os_watch(source.path(), tx);
    let mut last_seen = std::fs::read_to_string(source.path()).ok();
    let mut missing_reported = false;
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(()) = rx.recv() => settle(&mut rx).await,
            _ = poll.tick() => {}
        }
        let text = match std::fs::read_to_string(source.path()) {
            Ok(text) => {
                missing_reported = false;
                text
            }
            Err(error) => {
                if !missing_reported {
                    tracing::warn!(path = %source.path().display(), %error,
                        "cannot read the manifest; keeping the last good one");
                    missing_reported = true;
                }
                continue;
            }
        };
        if last_seen.as_deref() == Some(text.as_str()) {
            continue;
        }
        last_seen = Some(text.clone());
        match source.apply_text(&text) {
            Ok(Applied::Changed(version)) => {
                let desired = source.current();
                tracing::info!(
                    event = "manifest_applied",
                    version,
                    replicas = desired.manifest.replicas,
                    "manifest changed; applying it"
                );
            }
            Ok(Applied::Same(_)) => tracing::debug!("manifest saved without a change in meaning"),
            Err(error) => {
                tracing::error!(event = "manifest_rejected", path = %source.path().display(),
                "invalid manifest, keeping the last good one: {error}")
            }
        }
    }
}

/// Waits until no event came for [`DEBOUNCE`], or [`DEBOUNCE_MAX`] passed.
async fn settle(rx: &mut mpsc::Receiver<()>) {
    let deadline = tokio::time::Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet = tokio::time::Instant::now() + DEBOUNCE;
        tokio::select! {
            () = tokio::time::sleep_until(quiet.min(deadline)) => return,
            event = rx.recv() => if event.is_none() { return },
        }
    }
}

/// Whether a file event of `kind` may have changed the text. Opening and reading the file do not:
/// they are the watcher's own reads, and waking on them would read the file again and again.
fn may_change_the_text(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Starts an OS-level watch on the manifest's directory that sends `()` on changes to the file.
/// Without one (unsupported, out of watches) the poll alone keeps the manifest current.
fn start_os_watch(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name()?.to_owned();
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && may_change_the_text(&event.kind)
            && event.paths.iter().any(|p| p.file_name() == Some(name.as_os_str()))
        {
            // A full channel already holds a wake-up; dropping this one loses nothing.
            let _ = tx.try_send(());
        }
    };
    let started = notify::recommended_watcher(handler)
        .and_then(|mut watcher| watcher.watch(&dir, RecursiveMode::NonRecursive).map(|()| watcher));
    match started {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, dir = %dir.display(),
                "cannot watch the manifest's directory; polling it every {}s", POLL_EVERY.as_secs());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode};

    #[test]
    fn reading_the_file_is_no_change_and_writing_renaming_or_removing_it_is() {
        for read in [
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert!(!may_change_the_text(&read), "{read:?}");
        }
        for change in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
        ] {
            assert!(may_change_the_text(&change), "{change:?}");
        }
    }
}
