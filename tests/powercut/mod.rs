//! A power-cut file system for tests: a FUSE file system, served by the test process,
//! that forgets at a cut whatever a real power cut may forget.
//!
//! # The model (strict POSIX)
//!
//! A file's bytes are durable only as far as its last `fsync`/`fdatasync`; a name is
//! durable only as far as its directory's last `fsync`. Concretely, every inode keeps
//! two states, the live one every operation reads and writes, and the durable one:
//!
//! - a **file's data** (its bytes and so its size) is copied from live to durable by an
//!   `fsync` or `fdatasync` of that file, and by nothing else;
//! - a **directory's entries** (the names in it and the inodes they name) are copied
//!   from live to durable by an `fsync` of that directory, and by nothing else. So a
//!   created, linked, renamed or removed name, and a new subdirectory, are undone by a
//!   cut unless the directory that holds the name was fsynced after the change; a
//!   rename between two directories is durable in each one separately (fsyncing only
//!   the target keeps the old name too, as a second link to the file);
//! - attributes other than the size (mode, owner, times) are not modelled: they are
//!   kept as they are.
//!
//! Where file systems differ, this is the strictest reading: ext4 and XFS make a new
//! file's name durable with the file's own `fsync` in practice, POSIX does not promise
//! it, and neither does this.
//!
//! A **cut** ([`PowerCut::cut`]) drops every live state that is not durable, answers
//! `EIO` to every later operation, and [`PowerCut::unmount`] then unmounts and writes
//! what survived to the backing directory; the next [`PowerCut::mount`] of that
//! directory shows only that. A clean unmount without a cut keeps everything, as a
//! clean shutdown does. Between mounts the state lives in the backing directory (plain
//! files and directories, hard links kept); while mounted it lives in memory, which is
//! fine for the megabytes a test writes.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

const ROOT: u64 = fuser::FUSE_ROOT_ID;
const TTL: Duration = Duration::from_secs(1);
/// Dirty data is tracked in pages of this size, so an fsync copies only what changed.
const PAGE: usize = 4096;

const EIO: i32 = 5;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const EINVAL: i32 = 22;
const ENOTEMPTY: i32 = 39;
const ENOSYS: i32 = 38;
const EOPNOTSUPP: i32 = 95;

const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;

#[derive(Debug, Clone)]
enum Body {
    File {
        data: Vec<u8>,
        durable: Vec<u8>,
        /// Pages written since the last fsync.
        dirty: BTreeSet<usize>,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
        parent: u64,
    },
    Symlink {
        target: PathBuf,
    },
}

#[derive(Debug, Clone)]
struct Inode {
    body: Body,
    mode: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Live names of this inode.
    nlink: u32,
}

impl Inode {
    fn new(body: Body, mode: u16, uid: u32, gid: u32) -> Inode {
        let now = SystemTime::now();
        Inode {
            body,
            mode,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            nlink: 1,
        }
    }

    fn kind(&self) -> FileType {
        match self.body {
            Body::File { .. } => FileType::RegularFile,
            Body::Dir { .. } => FileType::Directory,
            Body::Symlink { .. } => FileType::Symlink,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let size = match &self.body {
            Body::File { data, .. } => data.len() as u64,
            Body::Dir { entries, .. } => entries.len() as u64,
            Body::Symlink { target } => target.as_os_str().len() as u64,
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.ctime,
            kind: self.kind(),
            perm: self.mode,
            nlink: match self.body {
                Body::Dir { .. } => 2,
                _ => self.nlink,
            },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        }
    }
}

/// What the file system counted while mounted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub file_fsyncs: u64,
    pub dir_fsyncs: u64,
    pub writes: u64,
    pub refused_after_cut: u64,
}

#[derive(Debug)]
struct State {
    nodes: HashMap<u64, Inode>,
    next_ino: u64,
    next_fh: u64,
    cut: bool,
    counts: Counts,
    /// fsyncs per inode, to tell when a given file was last made durable.
    fsyncs_by_ino: HashMap<u64, u64>,
}

impl State {
    fn node(&mut self, ino: u64) -> Result<&mut Inode, i32> {
        self.nodes.get_mut(&ino).ok_or(ENOENT)
    }

    fn entries(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, i32> {
        match &mut self.node(ino)?.body {
            Body::Dir { entries, .. } => Ok(entries),
            _ => Err(ENOTDIR),
        }
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<u64, i32> {
        self.entries(parent)?.get(name).copied().ok_or(ENOENT)
    }

    /// Adds a new inode under `parent/name`.
    fn add(&mut self, parent: u64, name: &OsStr, inode: Inode) -> Result<FileAttr, i32> {
        if self.entries(parent)?.contains_key(name) {
            return Err(EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let attr = inode.attr(ino);
        self.nodes.insert(ino, inode);
        self.entries(parent)?.insert(name.to_owned(), ino);
        self.touch(parent);
        Ok(attr)
    }

    fn touch(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            let now = SystemTime::now();
            node.mtime = now;
            node.ctime = now;
        }
    }

    fn is_empty_dir(&self, ino: u64) -> Option<bool> {
        match &self.nodes.get(&ino)?.body {
            Body::Dir { entries, .. } => Some(entries.is_empty()),
            _ => None,
        }
    }

    /// Removes `parent/name`; `dir` says whether a directory is expected.
    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), i32> {
        let ino = self.lookup(parent, name)?;
        match (dir, self.is_empty_dir(ino)) {
            (true, None) => return Err(ENOTDIR),
            (true, Some(false)) => return Err(ENOTEMPTY),
            (false, Some(_)) => return Err(EISDIR),
            _ => {}
        }
        self.entries(parent)?.remove(name);
        let node = self.node(ino)?;
        node.nlink = node.nlink.saturating_sub(1);
        node.ctime = SystemTime::now();
        self.touch(parent);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), i32> {
        let ino = self.lookup(parent, name)?;
        let existing = self.entries(newparent)?.get(newname).copied();
        if flags & RENAME_EXCHANGE != 0 {
            let other = existing.ok_or(ENOENT)?;
            self.entries(parent)?.insert(name.to_owned(), other);
            self.entries(newparent)?.insert(newname.to_owned(), ino);
            self.set_parent(other, parent);
            self.set_parent(ino, newparent);
            self.touch(parent);
            self.touch(newparent);
            return Ok(());
        }
        if let Some(target) = existing {
            if target == ino {
                return Ok(());
            }
            if flags & RENAME_NOREPLACE != 0 {
                return Err(EEXIST);
            }
            match (self.is_empty_dir(ino), self.is_empty_dir(target)) {
                (Some(_), None) => return Err(ENOTDIR),
                (None, Some(_)) => return Err(EISDIR),
                (Some(_), Some(false)) => return Err(ENOTEMPTY),
                _ => {}
            }
            let node = self.node(target)?;
            node.nlink = node.nlink.saturating_sub(1);
        }
        self.entries(parent)?.remove(name);
        self.entries(newparent)?.insert(newname.to_owned(), ino);
        self.set_parent(ino, newparent);
        self.node(ino)?.ctime = SystemTime::now();
        self.touch(parent);
        self.touch(newparent);
        Ok(())
    }

    fn set_parent(&mut self, ino: u64, new: u64) {
        if let Some(Inode {
            body: Body::Dir { parent, .. },
            ..
        }) = self.nodes.get_mut(&ino)
        {
            *parent = new;
        }
    }

    fn write(&mut self, ino: u64, offset: usize, bytes: &[u8]) -> Result<(), i32> {
        self.counts.writes += 1;
        let node = self.node(ino)?;
        let Body::File { data, dirty, .. } = &mut node.body else {
            return Err(EISDIR);
        };
        let end = offset + bytes.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset..end].copy_from_slice(bytes);
        dirty.extend(offset / PAGE..end.div_ceil(PAGE));
        node.mtime = SystemTime::now();
        Ok(())
    }

    fn truncate(&mut self, ino: u64, size: usize) -> Result<(), i32> {
        let node = self.node(ino)?;
        let Body::File { data, dirty, .. } = &mut node.body else {
            return Err(EISDIR);
        };
        let from = data.len().min(size);
        data.resize(size, 0);
        dirty.extend(from / PAGE..size.div_ceil(PAGE).max(from / PAGE + 1));
        node.mtime = SystemTime::now();
        Ok(())
    }

    fn fsync_file(&mut self, ino: u64) -> Result<(), i32> {
        self.counts.file_fsyncs += 1;
        *self.fsyncs_by_ino.entry(ino).or_default() += 1;
        match &mut self.node(ino)?.body {
            Body::File {
                data,
                durable,
                dirty,
            } => {
                durable.resize(data.len(), 0);
                for page in std::mem::take(dirty) {
                    let start = page * PAGE;
                    if start >= data.len() {
                        break;
                    }
                    let end = (start + PAGE).min(data.len());
                    durable[start..end].copy_from_slice(&data[start..end]);
                }
                Ok(())
            }
            // An fsync of a directory through an ordinary descriptor.
            Body::Dir {
                entries, durable, ..
            } => {
                durable.clone_from(entries);
                Ok(())
            }
            Body::Symlink { .. } => Ok(()),
        }
    }

    fn fsync_dir(&mut self, ino: u64) -> Result<(), i32> {
        self.counts.dir_fsyncs += 1;
        match &mut self.node(ino)?.body {
            Body::Dir {
                entries, durable, ..
            } => {
                durable.clone_from(entries);
                Ok(())
            }
            _ => Err(ENOTDIR),
        }
    }

    /// Every live state made durable: what a clean shutdown leaves.
    fn sync_all(&mut self) {
        let inos: Vec<u64> = self.nodes.keys().copied().collect();
        for ino in inos {
            let _ = self.fsync_file(ino);
        }
    }

    /// The tree a cut leaves: from the root, durable entries and durable data only.
    fn durable_tree(&self) -> Tree {
        let mut tree = Tree::default();
        let mut stack = vec![(PathBuf::new(), ROOT)];
        let mut seen = HashMap::new();
        while let Some((path, ino)) = stack.pop() {
            let Some(node) = self.nodes.get(&ino) else {
                continue;
            };
            match &node.body {
                Body::Dir { durable, .. } => {
                    if !path.as_os_str().is_empty() {
                        tree.dirs.push((path.clone(), node.mode));
                    }
                    for (name, child) in durable {
                        stack.push((path.join(name), *child));
                    }
                }
                Body::File { durable, .. } => {
                    if let Some(first) = seen.get(&ino) {
                        tree.links.push((path, PathBuf::clone(first)));
                    } else {
                        seen.insert(ino, path.clone());
                        tree.files.push((path, node.mode, durable.clone()));
                    }
                }
                Body::Symlink { target } => tree.symlinks.push((path, target.clone())),
            }
        }
        tree.dirs.sort();
        tree
    }
}

/// A file system image as written to the backing directory.
#[derive(Debug, Default)]
struct Tree {
    dirs: Vec<(PathBuf, u16)>,
    files: Vec<(PathBuf, u16, Vec<u8>)>,
    /// A second name of an inode already written: (name, first name).
    links: Vec<(PathBuf, PathBuf)>,
    symlinks: Vec<(PathBuf, PathBuf)>,
}

impl Tree {
    fn write(&self, root: &Path) -> std::io::Result<()> {
        if root.exists() {
            std::fs::remove_dir_all(root)?;
        }
        std::fs::create_dir_all(root)?;
        for (dir, mode) in &self.dirs {
            std::fs::create_dir_all(root.join(dir))?;
            std::fs::set_permissions(
                root.join(dir),
                std::fs::Permissions::from_mode(*mode as u32),
            )?;
        }
        for (file, mode, data) in &self.files {
            std::fs::write(root.join(file), data)?;
            std::fs::set_permissions(
                root.join(file),
                std::fs::Permissions::from_mode(*mode as u32),
            )?;
        }
        for (link, first) in &self.links {
            std::fs::hard_link(root.join(first), root.join(link))?;
        }
        for (link, target) in &self.symlinks {
            std::os::unix::fs::symlink(target, root.join(link))?;
        }
        Ok(())
    }
}

/// Reads a backing directory into a fresh state, every part of it durable.
fn load(root: &Path) -> std::io::Result<State> {
    let meta = std::fs::metadata(root)?;
    let mut state = State {
        nodes: HashMap::new(),
        next_ino: ROOT + 1,
        next_fh: 1,
        cut: false,
        counts: Counts::default(),
        fsyncs_by_ino: HashMap::new(),
    };
    let mut root_node = Inode::new(
        Body::Dir {
            entries: BTreeMap::new(),
            durable: BTreeMap::new(),
            parent: ROOT,
        },
        (meta.mode() & 0o7777) as u16,
        meta.uid(),
        meta.gid(),
    );
    root_node.nlink = 2;
    state.nodes.insert(ROOT, root_node);
    let mut by_backing: HashMap<(u64, u64), u64> = HashMap::new();
    let mut stack = vec![(root.to_path_buf(), ROOT)];
    while let Some((dir, ino)) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = std::fs::symlink_metadata(entry.path())?;
            let mode = (meta.mode() & 0o7777) as u16;
            let key = (meta.dev(), meta.ino());
            let child = if meta.is_file() && by_backing.contains_key(&key) {
                let child = by_backing[&key];
                state
                    .node(child)
                    .map_err(std::io::Error::from_raw_os_error)?
                    .nlink += 1;
                child
            } else {
                let body = if meta.is_dir() {
                    stack.push((entry.path(), state.next_ino));
                    Body::Dir {
                        entries: BTreeMap::new(),
                        durable: BTreeMap::new(),
                        parent: ino,
                    }
                } else if meta.file_type().is_symlink() {
                    Body::Symlink {
                        target: std::fs::read_link(entry.path())?,
                    }
                } else {
                    let data = std::fs::read(entry.path())?;
                    Body::File {
                        durable: data.clone(),
                        data,
                        dirty: BTreeSet::new(),
                    }
                };
                let child = state.next_ino;
                state.next_ino += 1;
                state
                    .nodes
                    .insert(child, Inode::new(body, mode, meta.uid(), meta.gid()));
                by_backing.insert(key, child);
                child
            };
            if let Ok(Body::Dir {
                entries, durable, ..
            }) = state.node(ino).map(|n| &mut n.body)
            {
                entries.insert(entry.file_name(), child);
                durable.insert(entry.file_name(), child);
            }
        }
    }
    Ok(state)
}

/// The FUSE side: every operation locks the shared state.
#[derive(Debug)]
struct Fs {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fs {
    /// The state, or EIO once the power is cut.
    fn live(&self) -> Result<MutexGuard<'_, State>, i32> {
        let mut state = lock(&self.state);
        if state.cut {
            state.counts.refused_after_cut += 1;
            return Err(EIO);
        }
        Ok(state)
    }
}

macro_rules! answer {
    ($reply:expr, $result:expr, $ok:ident => $body:expr) => {
        match $result {
            Ok($ok) => $body,
            Err(code) => $reply.error(code),
        }
    };
}

impl Filesystem for Fs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let result = self.live().and_then(|mut s| {
            let ino = s.lookup(parent, name)?;
            Ok(s.node(ino)?.attr(ino))
        });
        answer!(reply, result, attr => reply.entry(&TTL, &attr, 0));
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let result = self.live().and_then(|mut s| Ok(s.node(ino)?.attr(ino)));
        answer!(reply, result, attr => reply.attr(&TTL, &attr));
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let result = self.live().and_then(|mut s| {
            if let Some(size) = size {
                s.truncate(ino, size as usize)?;
            }
            let node = s.node(ino)?;
            let time = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            };
            if let Some(mode) = mode {
                node.mode = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                node.uid = uid;
            }
            if let Some(gid) = gid {
                node.gid = gid;
            }
            if let Some(t) = atime {
                node.atime = time(t);
            }
            if let Some(t) = mtime {
                node.mtime = time(t);
            }
            node.ctime = SystemTime::now();
            Ok(node.attr(ino))
        });
        answer!(reply, result, attr => reply.attr(&TTL, &attr));
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        let result = self.live().and_then(|mut s| match &s.node(ino)?.body {
            Body::Symlink { target } => Ok(target.as_os_str().as_encoded_bytes().to_vec()),
            _ => Err(EINVAL),
        });
        answer!(reply, result, target => reply.data(&target));
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc_s_ifmt() != libc_s_ifreg() {
            reply.error(ENOSYS);
            return;
        }
        let result = self
            .live()
            .and_then(|mut s| s.add(parent, name, new_file(req, mode & !umask)));
        answer!(reply, result, attr => reply.entry(&TTL, &attr, 0));
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.live().and_then(|mut s| {
            let mut dir = Inode::new(
                Body::Dir {
                    entries: BTreeMap::new(),
                    durable: BTreeMap::new(),
                    parent,
                },
                ((mode & !umask) & 0o7777) as u16,
                req.uid(),
                req.gid(),
            );
            dir.nlink = 2;
            s.add(parent, name, dir)
        });
        answer!(reply, result, attr => reply.entry(&TTL, &attr, 0));
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let result = self.live().and_then(|mut s| s.remove(parent, name, false));
        answer!(reply, result, _done => reply.ok());
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let result = self.live().and_then(|mut s| s.remove(parent, name, true));
        answer!(reply, result, _done => reply.ok());
    }

    fn symlink(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let result = self.live().and_then(|mut s| {
            s.add(
                parent,
                link_name,
                Inode::new(
                    Body::Symlink {
                        target: target.to_path_buf(),
                    },
                    0o777,
                    req.uid(),
                    req.gid(),
                ),
            )
        });
        answer!(reply, result, attr => reply.entry(&TTL, &attr, 0));
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let result = self
            .live()
            .and_then(|mut s| s.rename(parent, name, newparent, newname, flags));
        answer!(reply, result, _done => reply.ok());
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let result = self.live().and_then(|mut s| {
            if matches!(s.node(ino)?.body, Body::Dir { .. }) {
                return Err(EISDIR);
            }
            if s.entries(newparent)?.contains_key(newname) {
                return Err(EEXIST);
            }
            s.entries(newparent)?.insert(newname.to_owned(), ino);
            s.touch(newparent);
            let node = s.node(ino)?;
            node.nlink += 1;
            node.ctime = SystemTime::now();
            Ok(node.attr(ino))
        });
        answer!(reply, result, attr => reply.entry(&TTL, &attr, 0));
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let result = self.live().and_then(|mut s| {
            s.node(ino)?;
            s.next_fh += 1;
            Ok(s.next_fh)
        });
        answer!(reply, result, fh => reply.opened(fh, 0));
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let result = self.live().and_then(|mut s| match &s.node(ino)?.body {
            Body::File { data, .. } => {
                let start = (offset.max(0) as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                Ok(data[start..end].to_vec())
            }
            _ => Err(EISDIR),
        });
        answer!(reply, result, bytes => reply.data(&bytes));
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let result = self
            .live()
            .and_then(|mut s| s.write(ino, offset.max(0) as usize, data));
        answer!(reply, result, _done => reply.written(data.len() as u32));
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lo: u64, reply: ReplyEmpty) {
        answer!(reply, self.live(), _s => reply.ok());
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _data: bool, reply: ReplyEmpty) {
        let result = self.live().and_then(|mut s| s.fsync_file(ino));
        answer!(reply, result, _done => reply.ok());
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let result = self.live().and_then(|mut s| {
            s.entries(ino)?;
            s.next_fh += 1;
            Ok(s.next_fh)
        });
        answer!(reply, result, fh => reply.opened(fh, 0));
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.live().and_then(|mut s| {
            let Body::Dir {
                entries, parent, ..
            } = &s.node(ino)?.body
            else {
                return Err(ENOTDIR);
            };
            let mut list = vec![(ino, OsString::from(".")), (*parent, OsString::from(".."))];
            list.extend(entries.iter().map(|(n, i)| (*i, n.clone())));
            Ok(list
                .into_iter()
                .map(|(i, n)| {
                    let kind = s.nodes.get(&i).map_or(FileType::Directory, Inode::kind);
                    (i, kind, n)
                })
                .collect::<Vec<_>>())
        });
        answer!(reply, result, list => {
            for (index, (i, kind, name)) in list.into_iter().enumerate().skip(offset.max(0) as usize) {
                if reply.add(i, index as i64 + 1, kind, name) {
                    break;
                }
            }
            reply.ok()
        });
    }

    fn releasedir(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _f: i32, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _d: bool, reply: ReplyEmpty) {
        let result = self.live().and_then(|mut s| s.fsync_dir(ino));
        answer!(reply, result, _done => reply.ok());
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        answer!(reply, self.live(), _s => reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, PAGE as u32, 255, PAGE as u32));
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.live().and_then(|mut s| {
            let attr = s.add(parent, name, new_file(req, mode & !umask))?;
            s.next_fh += 1;
            Ok((attr, s.next_fh))
        });
        answer!(reply, result, done => reply.created(&TTL, &done.0, 0, done.1, 0));
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            reply.error(EOPNOTSUPP);
            return;
        }
        let result = self.live().and_then(|mut s| {
            let end = (offset + length).max(0) as usize;
            let len = match &s.node(ino)?.body {
                Body::File { data, .. } => data.len(),
                _ => return Err(EISDIR),
            };
            if end > len {
                s.truncate(ino, end)?;
            }
            Ok(())
        });
        answer!(reply, result, _done => reply.ok());
    }
}

fn libc_s_ifmt() -> u32 {
    0o170000
}

fn libc_s_ifreg() -> u32 {
    0o100000
}

fn new_file(req: &Request<'_>, mode: u32) -> Inode {
    Inode::new(
        Body::File {
            data: Vec::new(),
            durable: Vec::new(),
            dirty: BTreeSet::new(),
        },
        (mode & 0o7777) as u16,
        req.uid(),
        req.gid(),
    )
}

/// A mounted power-cut file system.
#[derive(Debug)]
pub struct PowerCut {
    pub mountpoint: PathBuf,
    backing: PathBuf,
    state: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
}

impl PowerCut {
    /// Whether FUSE mounts can be made here: `Err` says why not (so a test can report
    /// itself skipped, or fail under `CI`).
    pub fn available() -> Result<(), String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("/dev/fuse is missing".into());
        }
        let uid = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("running id -u: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("mounting needs root".into());
        }
        Ok(())
    }

    /// Mounts `backing`'s contents at `mountpoint` (both directories; `backing` may be
    /// empty).
    pub fn mount(backing: &Path, mountpoint: &Path) -> std::io::Result<PowerCut> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let state = Arc::new(Mutex::new(load(backing)?));
        let fs = Fs {
            state: state.clone(),
        };
        let options = [
            MountOption::FSName("powercut".into()),
            MountOption::AllowOther,
            MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount2(fs, mountpoint, &options)?;
        Ok(PowerCut {
            mountpoint: mountpoint.to_path_buf(),
            backing: backing.to_path_buf(),
            state,
            session: Some(session),
        })
    }

    /// Cuts the power: from now on every operation fails with EIO, and what was not
    /// durable is gone. Kill the processes using the mount, then [`PowerCut::unmount`].
    pub fn cut(&self) {
        lock(&self.state).cut = true;
    }

    /// What the file system counted since it was mounted.
    pub fn counts(&self) -> Counts {
        lock(&self.state).counts
    }

    /// How many fsyncs of the file at `path` (on this mount) completed so far; 0 if it
    /// does not exist. Used to tell whether something seen in a file before was made
    /// durable since.
    pub fn fsyncs_of(&self, path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return 0;
        };
        let state = lock(&self.state);
        state.fsyncs_by_ino.get(&meta.ino()).copied().unwrap_or(0)
    }

    /// Unmounts and writes to the backing directory what survives: after a cut only the
    /// durable state, else everything (a clean shutdown). Nothing may have files open on
    /// the mount any more.
    pub fn unmount(mut self) -> std::io::Result<Counts> {
        self.finish()
    }

    fn finish(&mut self) -> std::io::Result<Counts> {
        let Some(session) = self.session.take() else {
            return Ok(lock(&self.state).counts);
        };
        let (tree, counts) = {
            let mut state = lock(&self.state);
            if !state.cut {
                state.sync_all();
            }
            state.cut = true;
            (state.durable_tree(), state.counts)
        };
        // A lazy unmount cannot fail with EBUSY (a plain one would leave the session
        // thread serving forever); once nothing uses the mount the session ends.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
        session.join();
        tree.write(&self.backing)?;
        Ok(counts)
    }
}

impl Drop for PowerCut {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
