//! The power-cut file system's own tests: what survives a cut is exactly what was
//! fsynced (a file's bytes by its fsync, a name by its directory's fsync), and after a
//! cut nothing works. Needs root and /dev/fuse: elsewhere each test reports itself
//! skipped, and under `CI` a missing FUSE fails.

mod powercut;
mod skip;

use std::fs::File;
use std::io::Write;
use std::path::Path;

use powercut::PowerCut;

/// A fresh backing directory and mount point, or `None` (skipped) without FUSE.
fn setup(test: &str) -> Option<(tempfile::TempDir, std::path::PathBuf, std::path::PathBuf)> {
    if let Err(why) = PowerCut::available() {
        skip::missing(test, &why);
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    let mnt = dir.path().join("mnt");
    Some((dir, backing, mnt))
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

fn cut_and_remount(fs: PowerCut, backing: &Path, mnt: &Path) -> PowerCut {
    fs.cut();
    fs.unmount().unwrap();
    PowerCut::mount(backing, mnt).unwrap()
}

#[test]
fn a_write_survives_with_its_fsync_and_not_without() {
    let Some((_dir, backing, mnt)) = setup("a_write_survives_with_its_fsync_and_not_without")
    else {
        return;
    };
    let fs = PowerCut::mount(&backing, &mnt).unwrap();
    let mut synced = File::create(mnt.join("synced")).unwrap();
    synced.write_all(b"first").unwrap();
    synced.sync_all().unwrap();
    let mut unsynced = File::create(mnt.join("unsynced")).unwrap();
    unsynced.write_all(b"lost").unwrap();
    sync_dir(&mnt);
    // Written after the fsync: gone, the fsynced part stays.
    synced.write_all(b" second").unwrap();
    drop((synced, unsynced));
    assert_eq!(
        std::fs::read(mnt.join("synced")).unwrap(),
        b"first second",
        "reads see everything before the cut"
    );

    let fs = cut_and_remount(fs, &backing, &mnt);
    assert_eq!(std::fs::read(mnt.join("synced")).unwrap(), b"first");
    assert_eq!(
        std::fs::read(mnt.join("unsynced")).unwrap(),
        b"",
        "the name was durable, the bytes were not"
    );
    fs.unmount().unwrap();
}

#[test]
fn a_new_name_needs_its_directorys_fsync() {
    let Some((_dir, backing, mnt)) = setup("a_new_name_needs_its_directorys_fsync") else {
        return;
    };
    let fs = PowerCut::mount(&backing, &mnt).unwrap();
    std::fs::create_dir(mnt.join("d")).unwrap();
    sync_dir(&mnt);
    let mut file = File::create(mnt.join("d/file")).unwrap();
    file.write_all(b"data").unwrap();
    file.sync_all().unwrap();
    drop(file);
    // The file's own fsync does not make its name durable.
    let fs = cut_and_remount(fs, &backing, &mnt);
    assert!(mnt.join("d").is_dir());
    assert!(!mnt.join("d/file").exists());

    let mut file = File::create(mnt.join("d/file")).unwrap();
    file.write_all(b"data").unwrap();
    file.sync_all().unwrap();
    drop(file);
    sync_dir(&mnt.join("d"));
    let fs = cut_and_remount(fs, &backing, &mnt);
    assert_eq!(std::fs::read(mnt.join("d/file")).unwrap(), b"data");
    // A directory that was never named durably is gone with everything in it.
    std::fs::create_dir(mnt.join("e")).unwrap();
    File::create(mnt.join("e/x")).unwrap().sync_all().unwrap();
    sync_dir(&mnt.join("e"));
    let fs = cut_and_remount(fs, &backing, &mnt);
    assert!(!mnt.join("e").exists());
    fs.unmount().unwrap();
}

#[test]
fn a_rename_is_undone_without_the_directorys_fsync_and_kept_with_it() {
    let Some((_dir, backing, mnt)) =
        setup("a_rename_is_undone_without_the_directorys_fsync_and_kept_with_it")
    else {
        return;
    };
    let fs = PowerCut::mount(&backing, &mnt).unwrap();
    for (name, body) in [("a.part", "A"), ("b.part", "B")] {
        let mut f = File::create(mnt.join(name)).unwrap();
        f.write_all(body.as_bytes()).unwrap();
        f.sync_all().unwrap();
    }
    sync_dir(&mnt);
    std::fs::rename(mnt.join("a.part"), mnt.join("a")).unwrap();
    std::fs::rename(mnt.join("b.part"), mnt.join("b")).unwrap();
    let fs = cut_and_remount(fs, &backing, &mnt);
    assert!(mnt.join("a.part").exists() && !mnt.join("a").exists());
    assert!(mnt.join("b.part").exists() && !mnt.join("b").exists());

    std::fs::rename(mnt.join("a.part"), mnt.join("a")).unwrap();
    sync_dir(&mnt);
    std::fs::remove_file(mnt.join("b.part")).unwrap();
    let fs = cut_and_remount(fs, &backing, &mnt);
    assert!(!mnt.join("a.part").exists());
    assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"A");
    assert!(
        mnt.join("b.part").exists(),
        "an unlink is undone without the directory's fsync"
    );
    fs.unmount().unwrap();
}

#[test]
fn after_a_cut_every_operation_fails_and_a_clean_unmount_keeps_everything() {
    let Some((_dir, backing, mnt)) =
        setup("after_a_cut_every_operation_fails_and_a_clean_unmount_keeps_everything")
    else {
        return;
    };
    let fs = PowerCut::mount(&backing, &mnt).unwrap();
    let mut open = File::create(mnt.join("open")).unwrap();
    open.write_all(b"x").unwrap();
    std::fs::create_dir(mnt.join("d")).unwrap();
    std::fs::write(mnt.join("d/kept"), b"clean").unwrap();
    std::fs::hard_link(mnt.join("d/kept"), mnt.join("link")).unwrap();
    fs.cut();
    let failed = open.write_all(b"y").and_then(|()| open.sync_all());
    assert_eq!(failed.unwrap_err().raw_os_error(), Some(5), "EIO");
    assert!(File::create(mnt.join("new")).is_err());
    assert!(fs.counts().refused_after_cut >= 2);
    drop(open);
    fs.unmount().unwrap();
    assert!(
        std::fs::read_dir(&backing).unwrap().next().is_none(),
        "nothing was durable"
    );

    // Without a cut, an unmount keeps everything, hard links as links.
    let fs = PowerCut::mount(&backing, &mnt).unwrap();
    std::fs::create_dir(mnt.join("d")).unwrap();
    std::fs::write(mnt.join("d/kept"), b"clean").unwrap();
    std::fs::hard_link(mnt.join("d/kept"), mnt.join("link")).unwrap();
    fs.unmount().unwrap();
    let fs = PowerCut::mount(&backing, &mnt).unwrap();
    assert_eq!(std::fs::read(mnt.join("d/kept")).unwrap(), b"clean");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(mnt.join("link")).unwrap().nlink(), 2);
    fs.unmount().unwrap();
}
