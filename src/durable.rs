//! File-system changes that survive a power cut.
//!
//! A power cut keeps only what was fsynced: a file's bytes need an fsync of the file,
//! and a name (a created, renamed, linked or removed file, a new directory) needs an
//! fsync of the directory that holds it. These helpers make each change and then the
//! fsyncs it needs, so a caller that goes on to record the change somewhere durable
//! (the queue) never records something a cut can undo. `tests/power_cut.rs` runs the
//! daemon on a file system that forgets exactly what these fsyncs do not cover.

use std::fs::File;
use std::io;
use std::path::Path;

/// Makes the names in `dir` durable (fsync of the directory).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes `path`'s name durable: fsync of the directory that holds it.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    sync_dir(parent_of(path))
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `create_dir_all`, with every directory it creates made durable in its parent.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_of(dir);
    if parent != dir {
        create_dir_all(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Renames `from` to `to` and makes both names' changes durable.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    sync_parent(to)?;
    if parent_of(from) != parent_of(to) {
        sync_parent(from)?;
    }
    Ok(())
}

/// Removes a file and makes the removal durable. A file already gone is no error.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// [`remove_file`] on a blocking thread, for async callers that drop a file nobody
/// refers to any more (a spool file after its hand-off): a failure is logged, not
/// returned, since the next start's sweep of the spool removes what is left.
pub async fn discard(path: &Path) {
    let owned = path.to_path_buf();
    let removed = tokio::task::spawn_blocking(move || remove_file(&owned))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
    if let Err(e) = removed {
        tracing::warn!("removing {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helpers_do_what_their_plain_versions_do() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        std::fs::write(deep.join("x"), b"1").unwrap();
        rename(&deep.join("x"), &dir.path().join("a/y")).unwrap();
        assert!(!deep.join("x").exists());
        assert_eq!(std::fs::read(dir.path().join("a/y")).unwrap(), b"1");
        remove_file(&dir.path().join("a/y")).unwrap();
        remove_file(&dir.path().join("a/y")).unwrap();
        assert!(!dir.path().join("a/y").exists());
        std::fs::write(dir.path().join("file"), b"").unwrap();
        assert!(create_dir_all(&dir.path().join("file")).is_err());
    }
}
