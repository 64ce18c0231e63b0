//! Crash-safe replacement of the manifest file.
//!
//! The new text goes to a temporary file in the same directory, is flushed to disk, and is renamed
//! over the manifest; the directory is flushed too. A reader (the watcher, a restart, an editor)
//! sees the old file or the new one, never a half-written one, even if ringlb is killed midway.
//! The file keeps its permissions and, where allowed, its owner.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Replaces the file at `path` with `contents`, atomically.
///
/// # Errors
/// Any I/O error; the original file is then unchanged (a leftover temporary file is removed).
pub fn write_atomic(path: &Path, contents: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the manifest path has no file name"))?;
    let temp = dir.join(format!(
        ".{}.ringlb-{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&temp)?;
        if let Ok(meta) = fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
            // Keep the owner too (ringlb in a container runs as root and must not leave the
            // user's file owned by root); without the right to, the file keeps ours.
            let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
        }
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Removes temporary files that an earlier ringlb, killed in the middle of [`write_atomic`], left
/// next to the manifest at `path`. Called at start-up, before this process writes anything; a
/// file whose process still runs (another ringlb on the same manifest) is left alone. Returns how
/// many were removed.
pub fn remove_stale_temporaries(path: &Path) -> io::Result<usize> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let Some(file_name) = path.file_name() else { return Ok(0) };
    let prefix = format!(".{}.ringlb-", file_name.to_string_lossy());
    let own = std::process::id();
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".tmp")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|pid| pid.parse::<u32>().ok()) else { continue };
        let writer_alive = pid != own && Path::new(&format!("/proc/{pid}")).exists();
        if !writer_alive && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temporaries_of_dead_writers_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.yaml");
        fs::write(&path, "manifest\n").unwrap();
        let own = dir.path().join(format!(".cluster.yaml.ringlb-{}-1.tmp", std::process::id()));
        // No process has this pid (above the kernel's maximum).
        let dead = dir.path().join(".cluster.yaml.ringlb-4194305-2.tmp");
        // pid 1 always runs (in a container, that may be us: then it is ours and stale).
        let alive = dir.path().join(".cluster.yaml.ringlb-1-3.tmp");
        let unrelated = dir.path().join(".other.yaml.ringlb-4194305-4.tmp");
        for file in [&own, &dead, &alive, &unrelated] {
            fs::write(file, "partial").unwrap();
        }
        let expected = if std::process::id() == 1 { 3 } else { 2 };
        assert_eq!(remove_stale_temporaries(&path).unwrap(), expected);
        assert!(!own.exists() && !dead.exists());
        assert!(unrelated.exists() && path.exists());
    }

    #[test]
    fn replaces_the_contents_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.yaml");
        fs::write(&path, "old\n").unwrap();
        write_atomic(&path, "new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_missing_directory_is_an_error_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("cluster.yaml");
        assert!(write_atomic(&path, "x").is_err());
        assert!(!path.exists());
    }
}
