//! Writing files so that a crash or a concurrent reader never sees half of
//! one, and so that secrets are private from their first byte:
//! [`write_atomic`], [`write_new`] and [`create_private_dir`].

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
/// only (mode `0o700` on Unix).
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
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
