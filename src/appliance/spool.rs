//! Spool files: every answer body goes to disk as it arrives, hashed on the way, and is
//! fsynced before anyone is told about it. A body is never held whole in memory: at most
//! `CHANNEL_CHUNKS` network chunks wait between the socket and the file.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Chunks in flight between the network task and the writer thread; bounds memory
/// whatever the body size, and makes a slow disk slow the download down. A chunk is a
/// view into the HTTP client's read buffer, which grows to about 400 KiB on a fast
/// connection and cannot be reused while a view of it waits here, so each chunk waiting
/// can hold that much: with 16, four downloads at once held 7.9 MB (a heap profile of
/// the daemon building a backlog); the writer thread only hashes and copies into its
/// buffer, so a few are enough to keep it busy.
const CHANNEL_CHUNKS: usize = 4;

/// A body safely on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    /// The file, under the spool directory the client was given. The caller owns it.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its content, lowercase hex.
    pub sha256: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique file name in `dir` for a body of `what` from `site`.
pub(crate) fn new_path(dir: &Path, site: &str, what: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    dir.join(format!(
        "{}-{}-{}-{nanos}-{n}.part",
        safe(site),
        safe(what),
        std::process::id()
    ))
}

/// Writes chunks to a file on a blocking thread while the caller keeps reading the network.
#[derive(Debug)]
pub(crate) struct SpoolWriter {
    /// Closed (dropped) to tell the writer the body is complete.
    tx: Option<mpsc::Sender<Bytes>>,
    /// The writer thread; ends when `tx` is dropped or a write fails. Taken when it is
    /// waited for, so it is never waited for twice (after a failed write, `discard`).
    task: Option<tokio::task::JoinHandle<io::Result<(u64, String)>>>,
    path: PathBuf,
    /// The first bytes of the body, kept for sniffing the file type and `<error>` bodies.
    head: Vec<u8>,
}

/// How many leading bytes `SpoolWriter::head` keeps.
pub(crate) const HEAD_BYTES: usize = 512;

impl SpoolWriter {
    /// Creates the file (and the directory) and starts the writer thread.
    pub(crate) async fn create(path: PathBuf) -> io::Result<Self> {
        let file = tokio::task::spawn_blocking({
            let path = path.clone();
            move || {
                if let Some(dir) = path.parent() {
                    crate::durable::create_dir_all(dir)?;
                }
                File::create(path)
            }
        })
        .await
        .map_err(io::Error::other)??;
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let task = tokio::task::spawn_blocking({
            let path = path.clone();
            move || {
                let mut file = io::BufWriter::with_capacity(256 * 1024, file);
                let mut hasher = Sha256::new();
                let mut bytes = 0u64;
                while let Some(chunk) = rx.blocking_recv() {
                    hasher.update(&chunk);
                    file.write_all(&chunk)?;
                    bytes += chunk.len() as u64;
                }
                let file = file.into_inner().map_err(|e| e.into_error())?;
                // The bytes, then the name: a hand-off may name this file once it is told.
                file.sync_all()?;
                crate::durable::sync_parent(&path)?;
                Ok((bytes, hex::encode(hasher.finalize())))
            }
        });
        Ok(SpoolWriter {
            tx: Some(tx),
            task: Some(task),
            path,
            head: Vec::new(),
        })
    }

    /// Queues one chunk; waits when the writer is behind.
    pub(crate) async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        let Some(tx) = &self.tx else {
            return Err(io::Error::other("spool writer already finished"));
        };
        if tx.send(chunk).await.is_err() {
            // The writer stopped early: its result carries the real IO error.
            self.tx = None;
            return match self.join().await {
                Err(e) => Err(e),
                Ok(_) => Err(io::Error::other("spool writer stopped")),
            };
        }
        Ok(())
    }

    /// The first bytes written so far.
    pub(crate) fn head(&self) -> &[u8] {
        &self.head
    }

    /// Flushes, fsyncs and reports the file.
    pub(crate) async fn finish(mut self) -> io::Result<Spooled> {
        self.tx = None;
        let (bytes, sha256) = self.join().await?;
        Ok(Spooled {
            path: self.path.clone(),
            bytes,
            sha256,
        })
    }

    /// Stops writing and removes the partial file.
    pub(crate) async fn discard(mut self) {
        self.tx = None;
        let _ = self.join().await;
        crate::durable::discard(&self.path).await;
    }

    /// Waits for the writer thread's result (once; later calls say it is gone).
    async fn join(&mut self) -> io::Result<(u64, String)> {
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Err(io::Error::other("spool writer already finished")),
        }
    }
}

/// Renames a finished spool file to its final extension and returns the new description.
pub(crate) async fn with_extension(spooled: Spooled, extension: &str) -> io::Result<Spooled> {
    let path = spooled.path.with_extension(extension);
    tokio::task::spawn_blocking({
        let (from, to) = (spooled.path.clone(), path.clone());
        move || crate::durable::rename(&from, &to)
    })
    .await
    .map_err(io::Error::other)??;
    Ok(Spooled { path, ..spooled })
}

/// The file type of a recording or backup: the `Content-Disposition` file name's extension,
/// else the magic bytes (FLV, MP4 `ftyp`), else `fallback`.
pub fn extension_for(
    content_type: Option<&str>,
    content_disposition: Option<&str>,
    head: &[u8],
    fallback: &str,
) -> String {
    if let Some(ext) = content_type.and_then(extension_of_type) {
        return ext.into();
    }
    if let Some(ext) = content_disposition
        .and_then(disposition_file_name)
        .and_then(|name| {
            Path::new(&name)
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
        })
        .filter(|e| !e.is_empty() && e.len() <= 8 && e.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return ext;
    }
    if head.starts_with(b"FLV") {
        return "flv".into();
    }
    if head.len() >= 8 && &head[4..8] == b"ftyp" {
        return "mp4".into();
    }
    fallback.into()
}

/// The extension a specific media type names (`video/x-flv` -> `flv`); `None` for a
/// generic one (`application/octet-stream`) or one btic does not know.
pub fn extension_of_type(content_type: &str) -> Option<&'static str> {
    let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
    Some(match essence.as_str() {
        "video/x-flv" | "video/flv" => "flv",
        "video/mp4" | "application/mp4" => "mp4",
        "video/webm" => "webm",
        "application/zip" => "zip",
        "application/gzip" | "application/x-gzip" => "gz",
        _ => return None,
    })
}

/// The `filename` of a `Content-Disposition` value (`filename*=UTF-8''...` preferred).
pub fn disposition_file_name(value: &str) -> Option<String> {
    let mut plain = None;
    for part in value.split(';').map(str::trim) {
        let Some((key, val)) = part.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let val = val.trim();
        if key == "filename*" {
            let encoded = val.rsplit('\'').next().unwrap_or(val);
            return Some(percent_decode(encoded));
        }
        if key == "filename" {
            plain = Some(val.trim_matches('"').to_string());
        }
    }
    plain
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_come_from_the_content_type_then_the_file_name_then_the_magic_bytes() {
        type Case<'a> = (Option<&'a str>, Option<&'a str>, &'a [u8], &'a str);
        let cases: [Case; 11] = [
            (None, Some("attachment; filename=\"rec.flv\""), b"", "flv"),
            (None, Some("attachment; filename=x.MP4"), b"FLV", "mp4"),
            (
                None,
                Some("attachment; filename*=UTF-8''a%20b.nsb"),
                b"",
                "nsb",
            ),
            (None, Some("attachment"), b"FLV\x01", "flv"),
            (None, None, b"\0\0\0\x20ftypisom", "mp4"),
            (None, None, b"hello", "bin"),
            (None, Some("attachment; filename=\"noext\""), b"", "bin"),
            // A specific media type wins over the name and the bytes.
            (
                Some("video/x-flv"),
                Some("attachment; filename=a.mp4"),
                b"\0\0\0\x20ftyp",
                "flv",
            ),
            (Some("Video/MP4; charset=binary"), None, b"FLV", "mp4"),
            // A generic one says nothing.
            (Some("application/octet-stream"), None, b"FLV", "flv"),
            (
                Some("application/octet-stream"),
                Some("attachment; filename=b.nsb"),
                b"",
                "nsb",
            ),
        ];
        for (content_type, disposition, head, expected) in cases {
            assert_eq!(
                extension_for(content_type, disposition, head, "bin"),
                expected,
                "{content_type:?} {disposition:?}"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_write_that_fails_is_an_error_and_discarding_after_it_does_not_panic() {
        // /dev/full answers every write with ENOSPC, as a full disk does.
        let mut w = SpoolWriter {
            tx: None,
            task: None,
            path: PathBuf::from("/nonexistent/never-created"),
            head: Vec::new(),
        };
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let file = File::options().write(true).open("/dev/full").unwrap();
        w.tx = Some(tx);
        w.task = Some(tokio::task::spawn_blocking(move || {
            let mut file = io::BufWriter::with_capacity(16, file);
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
            }
            file.flush()?;
            Ok((0, String::new()))
        }));
        let mut failed = None;
        for _ in 0..1000 {
            if let Err(e) = w.write(Bytes::from(vec![0u8; 4096])).await {
                failed = Some(e);
                break;
            }
        }
        let e = failed.expect("a full device fails a write");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        w.discard().await;
    }

    #[tokio::test]
    async fn spooled_files_report_size_and_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::create(dir.path().join("a.part"))
            .await
            .unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        let s = w.finish().await.unwrap();
        assert_eq!(s.bytes, 11);
        assert_eq!(
            s.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(std::fs::read(&s.path).unwrap(), b"hello world");
    }
}
