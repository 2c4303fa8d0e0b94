//! The `files` destination: session data, recordings and site backups in a directory tree,
//! named and de-duplicated by the Integration Client's rules ("File system plugin
//! settings", "File Name Conflict Handling", "Special replacement values").
//!
//! [`FilesSink`] is synchronous `std::fs` code: every call blocks on the disk (and fsyncs),
//! so the async pipeline runs it on `tokio::task::spawn_blocking`. One sink serves one
//! destination and may be shared between threads.
//!
//! # What goes where
//! - Session data: one file per session. `format = "xml"` writes the `<session>` element
//!   exactly as the appliance sent it (the bytes the parser captured), inside a
//!   `<session_list>` root with an XML declaration that repeats the report root's prefix
//!   and namespace declarations ([`ReportRoot`]); `format = "json"` writes the session
//!   as the JSON object `btic inspect` prints. Extension `xml` or `json`.
//! - Recordings and backups arrive as spool files from the fetch stage. They are never
//!   read into memory: on the same file system the delivered file is a hard link to the
//!   spool (no bytes copied), otherwise the spool is copied by the kernel or through a
//!   small fixed buffer. The sink never changes or removes a spool: its owner removes it
//!   once every destination has it, and must not rewrite it in place afterwards.
//!
//! # Names
//! `file_name_format` with `%LSEQ% %LSID% %EXTERNAL_KEY% %SESSION_TYPE%
//! %SUPPORT_SITE_HOST% %INSTANCE% %EXTENSION%`, sanitised as `naming` describes (nothing
//! can land outside `directory`). A literal `/` in the format makes subdirectories, created
//! on demand. Without a format each kind has its default ([`default_format`]):
//!
//! | data | default format |
//! |---|---|
//! | session data | `%SUPPORT_SITE_HOST%-%SESSION_TYPE%-%LSID%.%EXTENSION%` |
//! | screen and presentation recordings | `%SUPPORT_SITE_HOST%-%SESSION_TYPE%-%LSID%.%EXTENSION%` |
//! | Show My Screen recordings | `%SUPPORT_SITE_HOST%-%SESSION_TYPE%-%LSID%-show_my_screen-%INSTANCE%.%EXTENSION%` |
//! | command shell recordings | `%SUPPORT_SITE_HOST%-%SESSION_TYPE%-%LSID%-command_shell-%INSTANCE%.%EXTENSION%` |
//! | backups | `%SUPPORT_SITE_HOST%-backup.%EXTENSION%` |
//!
//! For a backup `%SESSION_TYPE%` is `backup` and the session values are empty (`_`); for a
//! screen or presentation recording `%INSTANCE%` is empty. The guide's values carry no
//! date, so backups of different days share a base name and `append_number` (the default
//! `on_conflict`) gives each its own: `host-backup.nsb`, `host-backup.1.nsb`, ... while an
//! unchanged backup is recognised and not stored twice. With `overwrite` only the latest
//! backup is kept, with `skip` only the first.
//!
//! # Conflicts and redelivery
//! - `overwrite` replaces the file (atomically), unless it already holds the same bytes.
//! - `skip` keeps an existing file and writes nothing.
//! - `append_number` inserts the smallest number before the last period that makes the
//!   name unique (`x.flv`, `x.1.flv`, `x.2.flv`). A redelivery is harmless: if the base
//!   name or a numbered one already holds the same content (same size, then same SHA-256,
//!   both read streaming) the item counts as delivered and no file appears. Numbered names
//!   are probed in order up to the first free one; for backups with a `retention_count`,
//!   whose deletions leave gaps, the directory is listed instead.
//!
//! # The write path, in order
//! 1. Render the name; create missing directories (each new one fsynced into its parent).
//! 2. Apply the conflict rule's pre-check (above); most redeliveries stop here.
//! 3. Stage the content under `<directory>/.btic-tmp/` (same file system): write and fsync
//!    it, or hard-link or copy the spool and fsync it.
//! 4. Give it its final name: `rename` for `overwrite`; `link` for the others, which never
//!    replaces a name that appeared in the meantime (then the next number is tried).
//! 5. fsync the final name's directory; only now is the item delivered.
//! 6. Backups with a `retention_count`: delete the oldest beyond the count (below).
//!
//! A crash at any point leaves either nothing or the complete file under its final name,
//! plus at most a temporary in `.btic-tmp/` that the next start removes.
//!
//! # Retention
//! After a backup is written, the files of that site's backup name in its directory (the
//! rendered name and its numbered variants: exactly what this rule writes) are ordered by
//! modification time, then number, and all but the newest `retention_count` are deleted.
//! Each delivered backup gets the delivery time as its modification time, so "newest"
//! means "delivered most recently" whether the spool was linked or copied.
//!
//! # Errors
//! See [`FilesError`]: a missing destination is created when its parent exists; permission
//! problems, a full disk and other IO failures are retryable; a name that cannot be made
//! valid or collides with a directory is permanent for that item.

mod naming;
mod staging;
mod xml;

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::config::{FileNameFormat, FilesDestination, OnConflict, SessionFormat};
use crate::model::{Naming, Recording, ReportRoot, Session};

pub use naming::{
    EMPTY_VALUE, MAX_COMPONENT_BYTES, MAX_FILE_NAME_BYTES, MAX_RELATIVE_PATH_BYTES, NameValues,
    numbered,
};
pub use staging::STAGING_DIR;

use staging::{Staging, TempFile, sync_dir};

/// Default name of session data files.
pub const DEFAULT_SESSION_FORMAT: &str = "%SUPPORT_SITE_HOST%-%SESSION_TYPE%-%LSID%.%EXTENSION%";
/// Default name of screen and presentation recordings (the guide's own example).
pub const DEFAULT_RECORDING_FORMAT: &str = "%SUPPORT_SITE_HOST%-%SESSION_TYPE%-%LSID%.%EXTENSION%";
/// Default name of Show My Screen recordings.
pub const DEFAULT_SHOW_MY_SCREEN_FORMAT: &str =
    "%SUPPORT_SITE_HOST%-%SESSION_TYPE%-%LSID%-show_my_screen-%INSTANCE%.%EXTENSION%";
/// Default name of command shell recordings.
pub const DEFAULT_COMMAND_SHELL_FORMAT: &str =
    "%SUPPORT_SITE_HOST%-%SESSION_TYPE%-%LSID%-command_shell-%INSTANCE%.%EXTENSION%";
/// Default name of site backups.
pub const DEFAULT_BACKUP_FORMAT: &str = "%SUPPORT_SITE_HOST%-backup.%EXTENSION%";

/// `%SESSION_TYPE%` of a backup.
pub const BACKUP_SESSION_TYPE: &str = "backup";
/// `%EXTENSION%` of a backup.
pub const BACKUP_EXTENSION: &str = "nsb";

/// Buffer for hashing existing files (and spools) when comparing content.
const HASH_BUFFER_BYTES: usize = 64 * 1024;
/// The file-name values of a session, presentation or recording.
fn values_of(naming: &Naming, instance: Option<u32>, extension: &str) -> NameValues {
    NameValues {
        lseq: naming.lseq.map(|n| n.to_string()),
        lsid: Some(naming.lsid.clone()),
        external_key: naming.external_key.clone(),
        session_type: Some(naming.session_type.clone()),
        support_site_host: Some(naming.host.clone()),
        instance: instance.map(|n| n.to_string()),
        extension: Some(extension.to_string()),
    }
}

/// One thing to deliver, as far as its name is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    /// A session's data file.
    Session(&'a Naming),
    /// A presentation's data file (always XML).
    Presentation(&'a Naming),
    /// A recording of a session, with the file's extension (`flv`, `mp4`, `bin`).
    Recording(&'a Naming, Recording, &'a str),
    /// A site backup from this host (no port).
    Backup(&'a str),
}

/// The default `file_name_format` of an item's kind (see the module doc's table).
pub fn default_format(item: &Item<'_>) -> &'static str {
    match item {
        Item::Session(_) | Item::Presentation(_) => DEFAULT_SESSION_FORMAT,
        Item::Recording(_, Recording::Screen | Recording::Presentation, _) => {
            DEFAULT_RECORDING_FORMAT
        }
        Item::Recording(_, Recording::ShowMyScreen(_), _) => DEFAULT_SHOW_MY_SCREEN_FORMAT,
        Item::Recording(_, Recording::CommandShell(_), _) => DEFAULT_COMMAND_SHELL_FORMAT,
        Item::Backup(_) => DEFAULT_BACKUP_FORMAT,
    }
}

/// How a spool file gets into the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpoolTransfer {
    /// Hard-link it when on the same file system (O(1), no bytes copied), else copy it.
    #[default]
    Link,
    /// Always copy it (through the kernel, or a fixed-size buffer).
    Copy,
}

/// What a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new file was written.
    Written,
    /// An existing file with other content was replaced (`overwrite`).
    Replaced,
    /// A file with exactly this content was already there; nothing was written.
    AlreadyPresent,
    /// The name existed and `skip` kept it; nothing was written.
    Skipped,
}

/// The result of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The file that holds (or, for `Skipped`, blocked) the item.
    pub path: PathBuf,
    /// What happened.
    pub outcome: Outcome,
    /// Size of the item's content in bytes.
    pub bytes: u64,
    /// Old backups deleted by `retention_count` after this one was written.
    pub retired: Vec<PathBuf>,
}

/// A failed delivery or check.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The destination directory is missing and so is its parent, so it was not created.
    #[error(
        "destination directory {} does not exist and neither does its parent; create it or mount it",
        directory.display()
    )]
    DirectoryMissing {
        /// The configured directory.
        directory: PathBuf,
    },
    /// The destination directory exists but is not a directory.
    #[error("destination directory {} is not a directory", directory.display())]
    NotADirectory {
        /// The configured directory.
        directory: PathBuf,
    },
    /// The operating system refused access.
    #[error("{action} {}: permission denied ({source})", path.display())]
    PermissionDenied {
        /// What was being done.
        action: &'static str,
        /// With which path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The disk (or the quota) is full.
    #[error("{action} {}: no space left ({source})", path.display())]
    DiskFull {
        /// What was being done.
        action: &'static str,
        /// With which path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The item's name cannot be made into a valid file name.
    #[error("naming {item}: {reason}")]
    InvalidName {
        /// The item (kind and identifiers).
        item: String,
        /// Why.
        reason: String,
    },
    /// The final name is taken by a directory, or a directory on the way is a file.
    #[error("{action} {}: the name is taken by something that is not a file ({source})", path.display())]
    NameTaken {
        /// What was being done.
        action: &'static str,
        /// With which path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The spool file to deliver does not exist.
    #[error("reading spool file {}: it does not exist", path.display())]
    SpoolMissing {
        /// The spool file.
        path: PathBuf,
    },
    /// A subdirectory is a mount point of another file system, so no atomic rename is possible.
    #[error(
        "{} is on another file system than the destination directory; a files destination must be one file system",
        path.display()
    )]
    SplitFileSystem {
        /// The final name that could not be linked.
        path: PathBuf,
    },
    /// Any other IO failure.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// With which path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl FilesError {
    /// Whether trying again later can succeed: the directory, permissions, space and IO can
    /// be fixed while the item waits; a name, a collision or a lost spool cannot.
    pub fn is_retryable(&self) -> bool {
        match self {
            FilesError::DirectoryMissing { .. }
            | FilesError::PermissionDenied { .. }
            | FilesError::DiskFull { .. }
            | FilesError::Io { .. } => true,
            FilesError::NotADirectory { .. }
            | FilesError::InvalidName { .. }
            | FilesError::NameTaken { .. }
            | FilesError::SpoolMissing { .. }
            | FilesError::SplitFileSystem { .. } => false,
        }
    }

    fn io(action: &'static str, path: &Path, source: io::Error) -> FilesError {
        let path = path.to_path_buf();
        use io::ErrorKind as K;
        match source.kind() {
            K::PermissionDenied | K::ReadOnlyFilesystem => FilesError::PermissionDenied {
                action,
                path,
                source,
            },
            K::StorageFull | K::QuotaExceeded => FilesError::DiskFull {
                action,
                path,
                source,
            },
            K::NotADirectory | K::IsADirectory | K::InvalidFilename => FilesError::NameTaken {
                action,
                path,
                source,
            },
            K::CrossesDevices => FilesError::SplitFileSystem { path },
            _ => FilesError::Io {
                action,
                path,
                source,
            },
        }
    }
}

type CommitHook = Arc<dyn Fn(&Path) + Send + Sync>;

/// Writes session data, recordings and backups into one `files` destination.
pub struct FilesSink {
    root: PathBuf,
    format: Option<FileNameFormat>,
    on_conflict: OnConflict,
    retention_count: Option<u32>,
    session_format: SessionFormat,
    transfer: SpoolTransfer,
    staging: Staging,
    before_commit: Option<CommitHook>,
}

impl fmt::Debug for FilesSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilesSink")
            .field("root", &self.root)
            .field("format", &self.format.as_ref().map(|n| &n.text))
            .field("on_conflict", &self.on_conflict)
            .field("retention_count", &self.retention_count)
            .field("session_format", &self.session_format)
            .field("transfer", &self.transfer)
            .finish_non_exhaustive()
    }
}

/// The content of one item.
#[derive(Debug, Clone, Copy)]
enum Content<'a> {
    Bytes(&'a [u8]),
    Spool(&'a Path),
}

/// Size, identity and (lazily) hash of the content being delivered.
#[derive(Debug)]
struct Fingerprint<'a> {
    content: Content<'a>,
    len: u64,
    file_id: Option<(u64, u64)>,
    sha256: OnceLock<[u8; 32]>,
}

impl FilesSink {
    /// Opens the destination: creates `directory` when only it is missing, prepares the
    /// staging directory and removes temporaries a crashed run left there.
    pub fn open(destination: &FilesDestination) -> Result<FilesSink, FilesError> {
        let root = destination.directory.clone();
        ensure_root(&root)?;
        let staging = Staging::open(&root)
            .map_err(|e| FilesError::io("creating", &root.join(STAGING_DIR), e))?;
        let removed = staging
            .clean_stale()
            .map_err(|e| FilesError::io("cleaning stale temporaries in", staging.dir(), e))?;
        if removed > 0 {
            tracing::info!(
                directory = %root.display(),
                removed,
                "removed temporaries left by an interrupted run"
            );
        }
        Ok(FilesSink {
            root,
            format: destination.file_name_format.clone(),
            on_conflict: destination.on_conflict,
            retention_count: destination.retention_count,
            session_format: destination.format,
            transfer: SpoolTransfer::default(),
            staging,
            before_commit: None,
        })
    }

    /// Chooses how spool files are brought in (default: [`SpoolTransfer::Link`]).
    pub fn with_spool_transfer(mut self, transfer: SpoolTransfer) -> FilesSink {
        self.transfer = transfer;
        self
    }

    /// Calls `hook` with the temporary's path once it is written and synced, just before
    /// it gets its final name: the instant crash tests stop the process at.
    pub fn with_before_commit(mut self, hook: impl Fn(&Path) + Send + Sync + 'static) -> FilesSink {
        self.before_commit = Some(Arc::new(hook));
        self
    }

    /// The destination directory.
    pub fn directory(&self) -> &Path {
        &self.root
    }

    /// The path, relative to the directory, that `item` gets before conflict handling.
    pub fn file_name(&self, item: &Item<'_>) -> Result<PathBuf, FilesError> {
        let default;
        let format = match &self.format {
            Some(f) => f,
            None => {
                default = FileNameFormat::parse(default_format(item))
                    .expect("the default formats are valid");
                &default
            }
        };
        let values = match item {
            Item::Session(naming) => values_of(naming, None, self.session_extension()),
            Item::Presentation(naming) => values_of(naming, None, "xml"),
            Item::Recording(naming, kind, extension) => {
                values_of(naming, kind.instance(), extension)
            }
            Item::Backup(host) => NameValues {
                support_site_host: Some(host.to_string()),
                session_type: Some(BACKUP_SESSION_TYPE.into()),
                extension: Some(BACKUP_EXTENSION.into()),
                ..NameValues::default()
            },
        };
        naming::render(format, &values).map_err(|p| FilesError::InvalidName {
            item: describe(item),
            reason: p.0,
        })
    }

    fn session_extension(&self) -> &'static str {
        match self.session_format {
            SessionFormat::Xml => "xml",
            SessionFormat::Json => "json",
        }
    }

    /// Writes one session's data file. For `xml`, `raw_xml` is the `<session>` element
    /// exactly as the parser captured it and `root` the report's root element
    /// (read with the sessions by `parse`): the wrapping `<session_list>` repeats its prefix and
    /// namespace declarations, so the fragment means what it meant in the report. For
    /// `json`, `session` is written.
    pub fn deliver_session(
        &self,
        naming: &Naming,
        session: &Session,
        raw_xml: &[u8],
        root: &ReportRoot,
    ) -> Result<Delivered, FilesError> {
        let rel = self.file_name(&Item::Session(naming))?;
        let bytes = match self.session_format {
            SessionFormat::Xml => xml::session_file(raw_xml, root),
            SessionFormat::Json => {
                let mut json = serde_json::to_vec(session).map_err(|e| FilesError::Io {
                    action: "encoding session as JSON for",
                    path: rel.clone(),
                    source: io::Error::other(e),
                })?;
                json.push(b'\n');
                json
            }
        };
        self.deliver(&rel, Content::Bytes(&bytes), false)
    }

    /// Writes one presentation's data file: `raw` is its element exactly as the parser
    /// captured it, wrapped in a `<presentation_session_list>` that repeats `root`'s
    /// prefix and namespace declarations. Always XML (a presentation has no typed model
    /// to write as JSON), named like session data with `naming.session_type`
    /// `presentation`.
    pub fn deliver_presentation(
        &self,
        naming: &Naming,
        raw: &[u8],
        root: &ReportRoot,
    ) -> Result<Delivered, FilesError> {
        let rel = self.file_name(&Item::Presentation(naming))?;
        let bytes = xml::list_file(raw, root, xml::PRESENTATION_LIST);
        self.deliver(&rel, Content::Bytes(&bytes), false)
    }

    /// Brings one recording in from its spool file.
    pub fn deliver_recording(
        &self,
        naming: &Naming,
        kind: Recording,
        extension: &str,
        spool: &Path,
    ) -> Result<Delivered, FilesError> {
        let rel = self.file_name(&Item::Recording(naming, kind, extension))?;
        self.deliver(&rel, Content::Spool(spool), false)
    }

    /// Brings one site backup (`.nsb`) in from its spool file, then applies
    /// `retention_count`. `host` is the site's host name without a port.
    pub fn deliver_backup(&self, host: &str, spool: &Path) -> Result<Delivered, FilesError> {
        let rel = self.file_name(&Item::Backup(host))?;
        self.deliver(&rel, Content::Spool(spool), true)
    }

    /// Checks that the directory is writable: writes a probe file through the staging
    /// directory, gives it a name in the directory, and removes both.
    pub fn probe(&self) -> Result<(), FilesError> {
        let temp = self.staging.temp();
        write_synced(temp.path(), b"btic probe\n")?;
        let name = self.root.join(format!(
            ".btic-probe-{}",
            temp.path()
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("0")
        ));
        place_no_clobber(temp.path(), &name).map_err(|e| FilesError::io("naming", &name, e))?;
        fs::remove_file(&name).map_err(|e| FilesError::io("removing probe file", &name, e))?;
        Ok(())
    }

    fn deliver(
        &self,
        rel: &Path,
        content: Content<'_>,
        is_backup: bool,
    ) -> Result<Delivered, FilesError> {
        let target = self.root.join(rel);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        self.create_dirs(rel)?;
        let fingerprint = Fingerprint::of(content)?;
        let delivered = |path: PathBuf, outcome| Delivered {
            path,
            outcome,
            bytes: fingerprint.len,
            retired: Vec::new(),
        };

        // Pre-checks: most redeliveries end here without writing anything.
        let listing = is_backup && self.retention_count.is_some();
        let mut checked = HashSet::new();
        if let Some((path, outcome)) =
            self.already_there(&target, &fingerprint, listing, &mut checked)?
        {
            return Ok(delivered(path, outcome));
        }

        let temp = self.stage(content)?;
        if is_backup {
            // Retention orders by modification time: make it the delivery time.
            set_modified_now(temp.path())?;
        }
        if let Some(hook) = &self.before_commit {
            hook(temp.path());
        }

        let (path, outcome) = self.place(temp.path(), &target, rel, &fingerprint, &checked)?;
        if matches!(outcome, Outcome::Skipped | Outcome::AlreadyPresent) {
            // A concurrent writer of the same item got there first.
            return Ok(delivered(path, outcome));
        }
        sync_dir(&dir).map_err(|e| FilesError::io("syncing directory", &dir, e))?;
        drop(temp);

        let mut result = delivered(path, outcome);
        if is_backup && let Some(keep) = self.retention_count {
            result.retired = retire_old_backups(&target, &result.path, keep)?;
        }
        Ok(result)
    }

    /// The pre-checks of `deliver`: where the content already is, or the name to leave
    /// alone, without writing anything. Candidates compared on the way are `checked`.
    fn already_there(
        &self,
        target: &Path,
        fingerprint: &Fingerprint,
        listing: bool,
        checked: &mut HashSet<PathBuf>,
    ) -> Result<Option<(PathBuf, Outcome)>, FilesError> {
        match self.on_conflict {
            OnConflict::Skip => {
                if exists(target)? {
                    return Ok(Some((target.to_path_buf(), Outcome::Skipped)));
                }
            }
            OnConflict::Overwrite => {
                if fingerprint.matches(target)? {
                    return Ok(Some((target.to_path_buf(), Outcome::AlreadyPresent)));
                }
            }
            OnConflict::AppendNumber => {
                for candidate in candidates(target, listing)? {
                    if fingerprint.matches(&candidate)? {
                        return Ok(Some((candidate, Outcome::AlreadyPresent)));
                    }
                    checked.insert(candidate);
                }
            }
        }
        Ok(None)
    }

    /// Gives the staged file `temp` its name by `on_conflict`: `Written` or `Replaced`
    /// when it was placed; `Skipped` or `AlreadyPresent` when a concurrent writer of the
    /// same item got there first.
    fn place(
        &self,
        temp: &Path,
        target: &Path,
        rel: &Path,
        fingerprint: &Fingerprint,
        checked: &HashSet<PathBuf>,
    ) -> Result<(PathBuf, Outcome), FilesError> {
        let dir = target.parent().unwrap_or(&self.root);
        let placed = match self.on_conflict {
            OnConflict::Overwrite => {
                let replaced = exists(target)?;
                fs::rename(temp, target).map_err(|e| FilesError::io("renaming into", target, e))?;
                let outcome = if replaced {
                    Outcome::Replaced
                } else {
                    Outcome::Written
                };
                (target.to_path_buf(), outcome)
            }
            OnConflict::Skip => {
                if !place_no_clobber(temp, target)
                    .map_err(|e| FilesError::io("naming", target, e))?
                {
                    return Ok((target.to_path_buf(), Outcome::Skipped));
                }
                (target.to_path_buf(), Outcome::Written)
            }
            OnConflict::AppendNumber => {
                let name = target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .expect("rendered names are UTF-8")
                    .to_string();
                let mut number = 0u32;
                loop {
                    let candidate = if number == 0 {
                        target.to_path_buf()
                    } else {
                        dir.join(numbered(&name, number))
                    };
                    if place_no_clobber(temp, &candidate)
                        .map_err(|e| FilesError::io("naming", &candidate, e))?
                    {
                        break (candidate, Outcome::Written);
                    }
                    // Taken, possibly just now by a concurrent writer of the same item.
                    if !checked.contains(&candidate) && fingerprint.matches(&candidate)? {
                        return Ok((candidate, Outcome::AlreadyPresent));
                    }
                    number = number
                        .checked_add(1)
                        .ok_or_else(|| FilesError::InvalidName {
                            item: rel.display().to_string(),
                            reason: "every numbered name is taken".into(),
                        })?;
                }
            }
        };
        Ok(placed)
    }

    /// Creates the directories of `rel` below the root, each made durable in its parent.
    fn create_dirs(&self, rel: &Path) -> Result<(), FilesError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut dir = self.root.clone();
        for component in parent.components() {
            let above = dir.clone();
            dir.push(component);
            match fs::create_dir(&dir) {
                Ok(()) => sync_dir(&above).map_err(|e| FilesError::io("syncing", &above, e))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !dir.is_dir() {
                        return Err(FilesError::NameTaken {
                            action: "creating directory",
                            path: dir,
                            source: e,
                        });
                    }
                }
                Err(e) => return Err(FilesError::io("creating directory", &dir, e)),
            }
        }
        Ok(())
    }

    /// Puts the content into a synced temporary in the staging directory.
    fn stage(&self, content: Content<'_>) -> Result<TempFile, FilesError> {
        let temp = self.staging.temp();
        match content {
            Content::Bytes(bytes) => write_synced(temp.path(), bytes)?,
            Content::Spool(spool) => {
                if self.transfer == SpoolTransfer::Link {
                    let source = open_spool(spool)?;
                    // The link makes the spool's inode a delivered file: its data must be
                    // on disk before the name is.
                    source
                        .sync_all()
                        .map_err(|e| FilesError::io("syncing spool file", spool, e))?;
                    match fs::hard_link(spool, temp.path()) {
                        Ok(()) => return Ok(temp),
                        Err(e) => tracing::debug!(
                            spool = %spool.display(),
                            error = %e,
                            "cannot link the spool file into the destination; copying it"
                        ),
                    }
                }
                copy_synced(spool, temp.path())?;
            }
        }
        Ok(temp)
    }
}

fn describe(item: &Item<'_>) -> String {
    match item {
        Item::Session(n) => format!("session {} from {}", n.lsid, n.host),
        Item::Presentation(n) => format!("presentation {} from {}", n.lsid, n.host),
        Item::Recording(n, kind, _) => {
            format!("{kind:?} recording of session {} from {}", n.lsid, n.host)
        }
        Item::Backup(host) => format!("backup of {host}"),
    }
}

fn ensure_root(root: &Path) -> Result<(), FilesError> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(FilesError::NotADirectory {
            directory: root.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = root
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(FilesError::DirectoryMissing {
                    directory: root.to_path_buf(),
                });
            }
            match fs::create_dir(root) {
                Ok(()) => {
                    tracing::info!(directory = %root.display(), "created the destination directory");
                    sync_dir(parent).map_err(|e| FilesError::io("syncing", parent, e))
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(FilesError::io("creating destination directory", root, e)),
            }
        }
        Err(e) => Err(FilesError::io("reading destination directory", root, e)),
    }
}

fn exists(path: &Path) -> Result<bool, FilesError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FilesError::io("reading", path, e)),
    }
}

fn open_spool(spool: &Path) -> Result<File, FilesError> {
    File::open(spool).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            FilesError::SpoolMissing {
                path: spool.to_path_buf(),
            }
        } else {
            FilesError::io("opening spool file", spool, e)
        }
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), FilesError> {
    let mut file = File::create_new(path).map_err(|e| FilesError::io("creating", path, e))?;
    file.write_all(bytes)
        .map_err(|e| FilesError::io("writing", path, e))?;
    file.sync_all()
        .map_err(|e| FilesError::io("syncing", path, e))
}

/// Copies a spool with bounded memory: `io::copy` lets the kernel move the bytes
/// (`copy_file_range`/`sendfile`) or uses a fixed 8 KiB buffer.
fn copy_synced(spool: &Path, temp: &Path) -> Result<(), FilesError> {
    let mut source = open_spool(spool)?;
    let mut file = File::create_new(temp).map_err(|e| FilesError::io("creating", temp, e))?;
    io::copy(&mut source, &mut file)
        .map_err(|e| FilesError::io("copying spool file into", temp, e))?;
    file.sync_all()
        .map_err(|e| FilesError::io("syncing", temp, e))
}

/// Sets the modification time through a read-only handle where that works (on Unix the
/// owner may set times without write permission, and a linked spool may be read-only),
/// else through a writable one.
fn set_modified_now(path: &Path) -> Result<(), FilesError> {
    let now = SystemTime::now();
    File::open(path)
        .and_then(|f| f.set_modified(now))
        .or_else(|_| {
            File::options()
                .write(true)
                .open(path)
                .and_then(|f| f.set_modified(now))
        })
        .map_err(|e| FilesError::io("setting the modification time of", path, e))
}

/// Gives `temp` the name `target` unless the name exists; returns whether it did.
/// `link` is atomic and never replaces; where links are not supported (some network and
/// FAT file systems) a checked `rename` does the same for a single writer.
fn place_no_clobber(temp: &Path, target: &Path) -> io::Result<bool> {
    match fs::hard_link(temp, target) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied | io::ErrorKind::Other
            ) =>
        {
            if fs::symlink_metadata(target).is_ok() {
                return Ok(false);
            }
            fs::rename(temp, target).map(|()| true)
        }
        Err(e) => Err(e),
    }
}

/// The base name and its numbered variants that exist: probed in order up to the first
/// gap, or (`list`) every one the directory holds.
fn candidates(target: &Path, list: bool) -> Result<Vec<PathBuf>, FilesError> {
    let dir = target.parent().expect("a target has a directory");
    let base = target
        .file_name()
        .and_then(|n| n.to_str())
        .expect("rendered names are UTF-8");
    let mut found = Vec::new();
    if list {
        let entries = fs::read_dir(dir).map_err(|e| FilesError::io("listing", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| FilesError::io("listing", dir, e))?;
            if let Some(name) = entry.file_name().to_str()
                && naming::number_of(base, name).is_some()
            {
                found.push(entry.path());
            }
        }
        found.sort();
        return Ok(found);
    }
    let mut number = 0u32;
    loop {
        let candidate = if number == 0 {
            target.to_path_buf()
        } else {
            dir.join(numbered(base, number))
        };
        if !exists(&candidate)? {
            return Ok(found);
        }
        found.push(candidate);
        number += 1;
    }
}

impl<'a> Fingerprint<'a> {
    fn of(content: Content<'a>) -> Result<Fingerprint<'a>, FilesError> {
        let (len, file_id) = match content {
            Content::Bytes(bytes) => (bytes.len() as u64, None),
            Content::Spool(spool) => {
                let meta = open_spool(spool)?
                    .metadata()
                    .map_err(|e| FilesError::io("reading spool file", spool, e))?;
                (meta.len(), file_id(&meta))
            }
        };
        Ok(Fingerprint {
            content,
            len,
            file_id,
            sha256: OnceLock::new(),
        })
    }

    /// Whether `path` is a regular file with exactly this content.
    fn matches(&self, path: &Path) -> Result<bool, FilesError> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(FilesError::io("reading", path, e)),
        };
        if !meta.is_file() || meta.len() != self.len {
            return Ok(false);
        }
        if self.file_id.is_some() && self.file_id == file_id(&meta) {
            // The spool was linked here by an earlier delivery: the same inode.
            return Ok(true);
        }
        let existing = hash_file(path)?;
        Ok(existing == self.sha256()?)
    }

    fn sha256(&self) -> Result<[u8; 32], FilesError> {
        if let Some(hash) = self.sha256.get() {
            return Ok(*hash);
        }
        let hash = match self.content {
            Content::Bytes(bytes) => Sha256::digest(bytes).into(),
            Content::Spool(spool) => hash_file(spool)?,
        };
        Ok(*self.sha256.get_or_init(|| hash))
    }
}

#[cfg(unix)]
fn file_id(meta: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

fn hash_file(path: &Path) -> Result<[u8; 32], FilesError> {
    let mut file = File::open(path).map_err(|e| FilesError::io("opening", path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FilesError::io("reading", path, e)),
        };
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().into())
}

/// Deletes all but the newest `keep` files of the backup name `target` (and its numbered
/// variants) in its directory; never the one just written. Returns what it deleted.
fn retire_old_backups(
    target: &Path,
    written: &Path,
    keep: u32,
) -> Result<Vec<PathBuf>, FilesError> {
    let dir = target.parent().expect("a target has a directory");
    let base = target
        .file_name()
        .and_then(|n| n.to_str())
        .expect("rendered names are UTF-8");
    let mut backups = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| FilesError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| FilesError::io("listing", dir, e))?;
        let Some(number) = entry
            .file_name()
            .to_str()
            .and_then(|n| naming::number_of(base, n))
        else {
            continue;
        };
        let path = entry.path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FilesError::io("reading", &path, e)),
        };
        let modified = meta
            .modified()
            .map_err(|e| FilesError::io("reading the modification time of", &path, e))?;
        backups.push((modified, number, path));
    }
    backups.sort();
    let excess = backups.len().saturating_sub(keep as usize);
    let mut retired = Vec::new();
    for (_, _, path) in backups
        .into_iter()
        .filter(|(_, _, p)| p != written)
        .take(excess)
    {
        match fs::remove_file(&path) {
            Ok(()) => retired.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FilesError::io("deleting old backup", &path, e)),
        }
    }
    if !retired.is_empty() {
        sync_dir(dir).map_err(|e| FilesError::io("syncing directory", dir, e))?;
        tracing::info!(
            directory = %dir.display(),
            deleted = retired.len(),
            keep,
            "deleted backups beyond the retention count"
        );
    }
    Ok(retired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_sorted_into_retryable_and_permanent() {
        let path = Path::new("/srv/btic/x.xml");
        let cases = [
            (io::Error::from_raw_os_error(28), "no space left", true), // ENOSPC
            (io::Error::from_raw_os_error(122), "no space left", true), // EDQUOT
            (io::Error::from_raw_os_error(13), "permission denied", true), // EACCES
            (io::Error::from_raw_os_error(30), "permission denied", true), // EROFS
            (
                io::Error::from_raw_os_error(5),
                "writing /srv/btic/x.xml",
                true,
            ), // EIO
            (io::Error::from_raw_os_error(21), "not a file", false),   // EISDIR
            (io::Error::from_raw_os_error(20), "not a file", false),   // ENOTDIR
            (
                io::Error::from_raw_os_error(18),
                "another file system",
                false,
            ), // EXDEV
        ];
        for (source, text, retryable) in cases {
            let kind = source.kind();
            let e = FilesError::io("writing", path, source);
            assert_eq!(e.is_retryable(), retryable, "{kind:?}: {e}");
            assert!(e.to_string().contains(text), "{kind:?}: {e}");
        }
    }
}
