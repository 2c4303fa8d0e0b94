//! `[log] file`: the daemon's log in a file instead of on stderr, rotated daily and
//! pruned after `keep_days` (the Integration Client's "Log File Removal").
//!
//! The file named in the pipeline file is always today's log, so `tail -F` follows it.
//! The first line written on a new UTC day first renames it `FILE.YYYY-MM-DD` (the day
//! it holds; `FILE.YYYY-MM-DD.1` and so on if that name is taken) and starts a new
//! `FILE`; a `FILE` left from an earlier day is renamed the same way when the daemon
//! starts. After each rotation, and at start, rotated files whose day is more than
//! `keep_days` before today are removed; nothing else in the directory is touched.
//!
//! tracing-appender's rolling appender was the first choice, but it writes to a dated
//! name from the start (no stable path to follow), its retention counts files rather
//! than days and sorts them by creation time, and its clock cannot be set, so neither
//! rotation nor retention could be tested without waiting for midnight. This writer is
//! small and takes its clock as a parameter.
//!
//! Each log event is one `write` under a lock (the fmt layer formats a whole line and
//! writes it at once), so lines from different threads never interleave.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Days, NaiveDate, Utc};
use tracing_subscriber::fmt::MakeWriter;

/// The time source: `Utc::now` in the daemon, a hand-set clock in tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The daily log file (a tracing `MakeWriter`).
pub struct DailyFile {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for DailyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        write!(f, "DailyFile({})", inner.path.display())
    }
}

struct Inner {
    path: PathBuf,
    keep_days: Option<u32>,
    clock: Clock,
    file: File,
    /// The UTC day whose lines `file` holds.
    day: NaiveDate,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `FILE.YYYY-MM-DD`, or the first of `FILE.YYYY-MM-DD.1`, `.2`, ... that is free.
fn rotated_name(path: &Path, day: NaiveDate) -> PathBuf {
    let base = format!("{}.{}", path.display(), day.format("%Y-%m-%d"));
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

/// The day of a rotated file of `name` (`name.YYYY-MM-DD` or `name.YYYY-MM-DD.N`).
fn rotated_day(name: &str, candidate: &str) -> Option<NaiveDate> {
    let rest = candidate.strip_prefix(name)?.strip_prefix('.')?;
    let (date, tail) = rest.split_at_checked(10)?;
    let numbered = tail.is_empty()
        || tail
            .strip_prefix('.')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !numbered {
        return None;
    }
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

impl DailyFile {
    /// Opens (creating it and its directory if need be) the log file at `path`.
    pub fn open(path: &Path, keep_days: Option<u32>) -> io::Result<DailyFile> {
        DailyFile::with_clock(path, keep_days, Arc::new(Utc::now))
    }

    /// Like `open`, with the time taken from `clock`.
    pub fn with_clock(path: &Path, keep_days: Option<u32>, clock: Clock) -> io::Result<DailyFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let today = clock().date_naive();
        // A file from an earlier day is that day's log: rotate it before writing today's.
        if let Ok(meta) = std::fs::metadata(path)
            && meta.len() > 0
            && let Ok(modified) = meta.modified()
        {
            let day = DateTime::<Utc>::from(modified).date_naive();
            if day < today {
                std::fs::rename(path, rotated_name(path, day))?;
            }
        }
        let inner = Inner {
            file: open_append(path)?,
            path: path.to_path_buf(),
            keep_days,
            clock,
            day: today,
        };
        inner.prune(today);
        Ok(DailyFile {
            inner: Mutex::new(inner),
        })
    }

    fn write_line(&self, buf: &[u8]) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let today = (inner.clock)().date_naive();
        // A clock that steps back keeps writing to today's file rather than rotating.
        if today > inner.day {
            inner.rotate(today)?;
        }
        inner.file.write_all(buf)
    }
}

impl Inner {
    fn rotate(&mut self, today: NaiveDate) -> io::Result<()> {
        self.file.flush()?;
        std::fs::rename(&self.path, rotated_name(&self.path, self.day))?;
        self.file = open_append(&self.path)?;
        self.day = today;
        self.prune(today);
        Ok(())
    }

    /// Removes rotated files of days before `today - keep_days`.
    fn prune(&self, today: NaiveDate) {
        let Some(keep) = self.keep_days else {
            return;
        };
        let Some(oldest_kept) = today.checked_sub_days(Days::new(u64::from(keep))) else {
            return;
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let Some(name) = self.path.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(day) = file_name.to_str().and_then(|f| rotated_day(name, f)) else {
                continue;
            };
            if day < oldest_kept
                && entry.file_type().is_ok_and(|t| t.is_file())
                && let Err(e) = std::fs::remove_file(entry.path())
            {
                // The log itself is where this would go; stderr is all there is.
                eprintln!(
                    "btic: removing old log file {}: {e}",
                    entry.path().display()
                );
            }
        }
    }
}

/// One log event's writer.
#[derive(Debug)]
pub struct DailyWriter<'a>(&'a DailyFile);

impl Write for DailyWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_line(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for DailyFile {
    type Writer = DailyWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        DailyWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A clock the test sets.
    fn clock(start: &str) -> (Arc<Mutex<DateTime<Utc>>>, Clock) {
        let now = Arc::new(Mutex::new(day(start)));
        let read = now.clone();
        (now, Arc::new(move || *read.lock().unwrap()))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn line(log: &DailyFile, text: &str) {
        log.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn the_first_line_of_a_new_day_rotates_the_file_under_the_day_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/btic.log");
        let (now, clock) = clock("2024-06-03T23:59:58Z");
        let log = DailyFile::with_clock(&path, None, clock).unwrap();
        line(&log, "one\n");
        *now.lock().unwrap() = day("2024-06-03T23:59:59Z");
        line(&log, "two\n");
        *now.lock().unwrap() = day("2024-06-04T00:00:01Z");
        line(&log, "three\n");
        *now.lock().unwrap() = day("2024-06-06T08:00:00Z");
        line(&log, "four\n");
        let logs = dir.path().join("logs");
        assert_eq!(
            names(&logs),
            ["btic.log", "btic.log.2024-06-03", "btic.log.2024-06-04"]
        );
        let read = |n: &str| std::fs::read_to_string(logs.join(n)).unwrap();
        assert_eq!(read("btic.log.2024-06-03"), "one\ntwo\n");
        assert_eq!(read("btic.log.2024-06-04"), "three\n");
        assert_eq!(read("btic.log"), "four\n");
    }

    #[test]
    fn keep_days_removes_rotated_files_older_than_that_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("btic.log");
        for name in [
            "btic.log.2024-05-01",
            "btic.log.2024-05-28",
            "btic.log.2024-05-29",
            "btic.log.2024-05-30.1",
            "btic.log.2024-05-31",
            "btic.log.2024-01-01.old",
            "btic.log.not-a-date",
            "other.log.2024-01-01",
        ] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        let (now, clock) = clock("2024-06-01T10:00:00Z");
        let log = DailyFile::with_clock(&path, Some(3), clock).unwrap();
        // Opening prunes: kept are the three days before today.
        assert_eq!(
            names(dir.path()),
            [
                "btic.log",
                "btic.log.2024-01-01.old",
                "btic.log.2024-05-29",
                "btic.log.2024-05-30.1",
                "btic.log.2024-05-31",
                "btic.log.not-a-date",
                "other.log.2024-01-01",
            ]
        );
        line(&log, "june first\n");
        *now.lock().unwrap() = day("2024-06-03T00:00:00Z");
        line(&log, "june third\n");
        assert_eq!(
            names(dir.path()),
            [
                "btic.log",
                "btic.log.2024-01-01.old",
                "btic.log.2024-05-31",
                "btic.log.2024-06-01",
                "btic.log.not-a-date",
                "other.log.2024-01-01",
            ]
        );
    }

    #[test]
    fn a_file_left_from_an_earlier_day_is_rotated_at_start_without_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("btic.log");
        std::fs::write(dir.path().join("btic.log.2024-06-02"), "taken\n").unwrap();
        std::fs::write(&path, "from the second\n").unwrap();
        let modified = day("2024-06-02T18:00:00Z");
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified.into())
            .unwrap();
        let (_, clock) = clock("2024-06-03T09:00:00Z");
        let log = DailyFile::with_clock(&path, None, clock).unwrap();
        line(&log, "today\n");
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert_eq!(read("btic.log.2024-06-02"), "taken\n");
        assert_eq!(read("btic.log.2024-06-02.1"), "from the second\n");
        assert_eq!(read("btic.log"), "today\n");
    }

    #[test]
    fn rotated_names_are_recognised_exactly() {
        let d = NaiveDate::from_ymd_opt(2024, 6, 3);
        let cases = [
            ("btic.log.2024-06-03", d),
            ("btic.log.2024-06-03.12", d),
            ("btic.log.2024-06-03.", None),
            ("btic.log.2024-06-03.gz", None),
            ("btic.log.2024-13-03", None),
            ("btic.log2024-06-03", None),
            ("btic.log", None),
            ("xbtic.log.2024-06-03", None),
        ];
        for (name, expected) in cases {
            assert_eq!(rotated_day("btic.log", name), expected, "{name}");
        }
    }
}
