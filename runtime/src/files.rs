//! Writing files so that a crash or a concurrent reader never sees half of
//! one, and so that secrets are private from their first byte:
//! [`write_atomic`], [`write_new`]; and trusting only what this process's
//! user owns and nobody else can change: [`create_private_dir`],
//! [`open_trusted_dir`], [`read_secret`].

use std::io::Write;
use std::path::Path;

/// Writes `parts` (concatenated) to `path` atomically: into a temporary file
/// in `temp_dir` (on the same file system as `path`), fsynced, renamed over
/// `path`, then the directory fsynced. A crash leaves the old file or the
/// new one, and at worst a temporary file in `temp_dir`.
pub fn write_atomic(path: &Path, temp_dir: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut file = tempfile::NamedTempFile::new_in(temp_dir)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        dir.sync_all()?;
    }
    Ok(())
}

/// Creates `path` with `bytes` (never overwriting an existing file), with
/// permission `mode` on Unix. The file appears whole or not at all: it is
/// written and fsynced under a temporary name, then linked into place, so a
/// concurrent reader never sees it half-written. Keys and other secrets use
/// mode `0o600`, so no other user can read them even for an instant.
/// An existing `path` is an error of kind `AlreadyExists`.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist_noclobber(path).map_err(|e| e.error)?;
    if let Ok(dir) = std::fs::File::open(dir) {
        dir.sync_all()?;
    }
    Ok(())
}

/// Creates `path` and its parents, and makes `path` accessible to its owner
/// only (mode `0o700` on Unix). An existing `path` must be a directory (not
/// a symbolic link) that this process's user or root owns and that neither
/// its group nor others can write: one that another user owns could be
/// opened again by them at any time, and one that others could write may
/// hold files they planted (check it, then `chmod 700` it). Read and search
/// bits for others are taken away.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let dir = open_trusted_dir(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = dir.metadata()?;
        if meta.mode() & 0o077 != 0 && meta.uid() == own_uid() {
            dir.set_permissions(std::fs::Permissions::from_mode(0o700))?;
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Creates `path` (mode `0o700`) and its parents unless it exists, and
/// opens it, refusing one that this process may not trust with what it
/// keeps there: a symbolic link, or a directory that another user owns
/// (root excepted) or that group or others can write. Ancestors that anyone
/// may write without the sticky bit are refused too, since anyone could
/// swap the directory there for their own.
pub fn open_trusted_dir(path: &Path) -> std::io::Result<std::fs::File> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)?;
    let dir = open_no_follow(path, true)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = dir.metadata()?;
        if !meta.is_dir() {
            return Err(untrusted(path, "is not a directory".into()));
        }
        check_owner(path, meta.uid())?;
        if meta.mode() & 0o022 != 0 {
            return Err(untrusted(
                path,
                format!(
                    "its group or others can write it (mode {:o}): check what is in it, then chmod 700 it",
                    meta.mode() & 0o777
                ),
            ));
        }
        let absolute = std::path::absolute(path)?;
        for ancestor in absolute.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(ancestor) else {
                continue;
            };
            if meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0 {
                return Err(untrusted(
                    path,
                    format!(
                        "anyone may replace it: {} is writable by all without the sticky bit",
                        ancestor.display()
                    ),
                ));
            }
        }
    }
    Ok(dir)
}

/// Reads a secret (a key) that this process keeps at `path`: `None` if
/// there is none. Refuses a symbolic link, a file another user owns (root
/// excepted), and one its group or others may read or write: a secret
/// anyone else could have read or planted is no secret.
pub fn read_secret(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut file = match open_no_follow(path, false) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(untrusted(path, "is not a regular file".into()));
        }
        check_owner(path, meta.uid())?;
        if meta.mode() & 0o077 != 0 {
            return Err(untrusted(
                path,
                format!(
                    "its group or others may read or write it (mode {:o}): a key must be mode 600",
                    meta.mode() & 0o777
                ),
            ));
        }
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Opens `path` for reading without following a symbolic link in its last
/// component (a link there is refused, saying so).
fn open_no_follow(path: &Path, directory: bool) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC;
        if directory {
            flags |= rustix::fs::OFlags::DIRECTORY;
        }
        options.custom_flags(flags.bits() as i32);
    }
    #[cfg(not(unix))]
    let _ = directory;
    options.open(path).map_err(|e| {
        let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        match link {
            true => untrusted(
                path,
                "is a symbolic link: give the path it points to".into(),
            ),
            false => e,
        }
    })
}

#[cfg(unix)]
fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The owner of something this process keeps private must be its own
/// user or root.
#[cfg(unix)]
fn check_owner(path: &Path, owner: u32) -> std::io::Result<()> {
    let us = own_uid();
    match owner == us || owner == 0 {
        true => Ok(()),
        false => Err(untrusted(
            path,
            format!("it is owned by uid {owner}, not by this user (uid {us}) or root"),
        )),
    }
}

fn untrusted(path: &Path, why: String) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("{} cannot be trusted: {why}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_creators_agree_and_readers_never_see_half_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let writers: Vec<_> = (0..8u8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let ours = [i; 4096];
                    match write_new(&path, &ours, 0o600) {
                        Ok(()) => {}
                        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists),
                    }
                    // Whoever won, the file is whole.
                    let read = std::fs::read(&path).unwrap();
                    assert_eq!(read.len(), 4096);
                    assert!(read.iter().all(|b| *b == read[0]));
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, dir.path(), &[b"hello ", b"world"]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        write_atomic(&path, dir.path(), &[b"second"]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    /// Another user's uid (`nobody`): making a file theirs needs root,
    /// which `./run test` has.
    #[cfg(unix)]
    const OTHER_UID: u32 = 65534;

    #[cfg(unix)]
    fn give_away(path: &Path) {
        std::os::unix::fs::chown(path, Some(OTHER_UID), Some(OTHER_UID))
            .expect("this test makes files another user's, which needs root");
    }

    #[cfg(unix)]
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_private_dir_another_user_owns_or_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        // Theirs, open to all: chmodding it would not keep them out.
        let theirs = root.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        set_mode(&theirs, 0o777);
        give_away(&theirs);
        let refused = create_private_dir(&theirs).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(
            refused.to_string().contains("owned by uid 65534"),
            "{refused}"
        );
        // Ours, but others could have put files in it.
        let loose = root.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        set_mode(&loose, 0o770);
        let refused = create_private_dir(&loose).unwrap_err();
        assert!(refused.to_string().contains("chmod 700"), "{refused}");
        // Ours and only readable by others: made private.
        let readable = root.path().join("readable");
        std::fs::create_dir(&readable).unwrap();
        set_mode(&readable, 0o755);
        create_private_dir(&readable).unwrap();
        let mode = std::fs::metadata(&readable).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A link to a directory of ours is not followed.
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&readable, &link).unwrap();
        let refused = create_private_dir(&link).unwrap_err();
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
        // Under a directory anyone may write, without the sticky bit.
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        set_mode(&open, 0o777);
        let refused = create_private_dir(&open.join("data")).unwrap_err();
        assert!(refused.to_string().contains("writable by all"), "{refused}");
        set_mode(&open, 0o1777);
        create_private_dir(&open.join("data")).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_others_can_read_or_own_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        assert_eq!(read_secret(&path).unwrap(), None);
        write_new(&path, b"k", 0o600).unwrap();
        assert_eq!(read_secret(&path).unwrap().as_deref(), Some(&b"k"[..]));
        set_mode(&path, 0o644);
        let refused = read_secret(&path).unwrap_err();
        assert!(refused.to_string().contains("mode 600"), "{refused}");
        set_mode(&path, 0o600);
        give_away(&path);
        let refused = read_secret(&path).unwrap_err();
        assert!(
            refused.to_string().contains("owned by uid 65534"),
            "{refused}"
        );
        let planted = dir.path().join("planted");
        write_new(&planted, b"theirs", 0o600).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&planted, &link).unwrap();
        let refused = read_secret(&link).unwrap_err();
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
    }

    #[cfg(unix)]
    #[test]
    fn new_files_are_never_overwritten_and_keep_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_new(&path, b"k", 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = write_new(&path, b"other", 0o600).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"k");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        let private = dir.path().join("a/b");
        create_private_dir(&private).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
