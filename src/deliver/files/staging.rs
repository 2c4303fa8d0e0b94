//! The staging directory: where every file is written before it gets its final name.
//!
//! Temporaries live in `<directory>/.btic-tmp/`, on the same file system as the final
//! names, so that giving a temporary its final name is one atomic `link` or `rename`.
//! A temporary is named `<pid>.<run>.<n>.tmp`, where `run` is random per process: at start,
//! every temporary of another run whose process is gone (or whose pid is ours, as after a
//! restart in a container where btic is always pid 1) is a leftover of a crash and is
//! removed. Temporaries of live processes are left alone, and one process never removes
//! its own.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Name of the staging directory inside a destination directory.
pub const STAGING_DIR: &str = ".btic-tmp";

/// A random tag for this process, so that its temporaries can be told from a crashed
/// predecessor's even when both had the same pid.
fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| format!("{:016x}", rand::random::<u64>()))
}

/// Temporaries made by this process, across all staging directories.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The staging directory of one destination.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
}

/// A temporary file that is removed when dropped unless it was handed on.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Once linked or renamed, the temporary name is only a leftover (or gone); an
        // error here changes nothing about the delivered file.
        let _ = fs::remove_file(&self.path);
    }
}

impl Staging {
    /// Creates the staging directory inside `root` when needed.
    pub fn open(root: &Path) -> io::Result<Staging> {
        let dir = root.join(STAGING_DIR);
        match fs::create_dir(&dir) {
            Ok(()) => sync_dir(root)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        Ok(Staging { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh temporary name (the file is not created).
    pub fn temp(&self) -> TempFile {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}.{}.{n}.tmp", std::process::id(), run_id());
        TempFile {
            path: self.dir.join(name),
        }
    }

    /// Removes the temporaries crashed runs left behind; returns how many.
    pub fn clean_stale(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if is_stale(name) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

fn is_stale(name: &str) -> bool {
    let mut parts = name.split('.');
    let (Some(pid), Some(run), Some(_), Some("tmp"), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        // Not a name this module makes: nobody else should write here, but it is not ours
        // to delete either.
        return false;
    };
    if run == run_id() {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    pid == std::process::id() || !process_alive(pid)
}

/// Whether a process runs with this pid. Where `/proc` is not available every other run
/// counts as gone: one process per destination directory is the supported setup.
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    proc.join("self").exists() && proc.join(pid.to_string()).exists()
}

pub use crate::durable::sync_dir;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_temporaries_of_gone_runs_are_stale() {
        let me = std::process::id();
        assert!(!is_stale(&format!("{me}.{}.3.tmp", run_id())));
        assert!(is_stale(&format!("{me}.0000000000000001.3.tmp")));
        // pid 1 always runs (unless we are it, which the line above covers).
        if me != 1 {
            assert!(!is_stale("1.0000000000000001.3.tmp"));
        }
        assert!(is_stale("4294967295.0000000000000001.0.tmp"));
        assert!(!is_stale("notes.txt"));
        assert!(!is_stale("x.y.z.tmp"));
    }

    #[test]
    fn clean_stale_removes_leftovers_and_keeps_live_ones() {
        let root = tempfile::tempdir().unwrap();
        let staging = Staging::open(root.path()).unwrap();
        let live = staging.temp();
        fs::write(live.path(), b"in flight").unwrap();
        let dead = staging.dir().join("4294967295.00000000000000ff.7.tmp");
        fs::write(&dead, b"left by a crash").unwrap();
        let other = staging.dir().join("readme");
        fs::write(&other, b"not ours").unwrap();
        assert_eq!(staging.clean_stale().unwrap(), 1);
        assert!(live.path().exists());
        assert!(!dead.exists());
        assert!(other.exists());
    }
}
