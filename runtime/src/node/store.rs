//! The node's package store: verified packages under their content id.
//!
//! Layout: `<dir>/<content id>.rps` for complete packages, `<dir>/retired/`
//! for packages of services this node retired (kept, not restored at start,
//! activated again without a download when pulled again), `<dir>/pinned/`
//! with an empty file per package its operator shared (it never retires,
//! also after a restart), `<dir>/tmp/` for files being written. Every package is written to a temporary file,
//! fsynced, renamed into place and the directory fsynced, so a crash leaves
//! either the whole package or nothing; `tmp/` is emptied on open. Nothing is
//! stored before it verified, and everything is verified again when loaded.

use std::path::{Path, PathBuf};

use crate::package::{ContentId, Package, PackageError, VerifiedPackage};

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A stored package as loaded: verified, or the file and what is wrong with it.
pub type Loaded = Result<VerifiedPackage, (PathBuf, PackageError)>;

/// A directory of verified packages.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) the store and discards leftovers of interrupted writes.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let tmp = dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        for sub in ["retired", "pinned"] {
            let sub = dir.join(sub);
            std::fs::create_dir_all(&sub).map_err(io(&sub))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: &ContentId) -> PathBuf {
        self.dir.join(format!("{id}.rps"))
    }

    /// Writes a verified package atomically (temp file, fsync, rename, fsync dir).
    pub fn save(&self, package: &VerifiedPackage) -> Result<PathBuf, StoreError> {
        let path = self.write(package, self.path(&package.content_id()))?;
        // Active again: the kept copy goes only once this one is written.
        let _ = std::fs::remove_file(self.retired_path(&package.content_id()));
        Ok(path)
    }

    /// Writes `package` to `path` atomically, unless it is there already.
    fn write(&self, package: &VerifiedPackage, path: PathBuf) -> Result<PathBuf, StoreError> {
        if path.exists() {
            return Ok(path);
        }
        let header = package.header();
        crate::files::write_atomic(
            &path,
            &self.dir.join("tmp"),
            &[&header, package.component()],
        )
        .map_err(io(&path))?;
        Ok(path)
    }

    fn retired_path(&self, id: &ContentId) -> PathBuf {
        self.dir.join("retired").join(format!("{id}.rps"))
    }

    /// Keeps a verified package aside without running it (a standby's
    /// prefetch): like a retired one, it is not restored at start, and a
    /// pull of it later activates it without a download.
    pub fn keep(&self, package: &VerifiedPackage) -> Result<PathBuf, StoreError> {
        self.write(package, self.retired_path(&package.content_id()))
    }

    /// Moves a package aside: kept, but no longer restored at start.
    pub fn retire(&self, id: &ContentId) -> Result<(), StoreError> {
        let (from, to) = (self.path(id), self.retired_path(id));
        std::fs::rename(&from, &to).map_err(io(&from))?;
        // The rename is durable once both directories are.
        for dir in [self.dir.clone(), self.dir.join("retired")] {
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&dir))?;
        }
        Ok(())
    }

    /// A retired package, verified again, if this store kept one (it stays
    /// there until it is saved again).
    pub fn retired(&self, id: &ContentId) -> Option<VerifiedPackage> {
        let package = Package::read_file(&self.retired_path(id))
            .and_then(Package::verify)
            .ok()?;
        (package.content_id() == *id).then_some(package)
    }

    fn pin_path(&self, id: &ContentId) -> PathBuf {
        self.dir.join("pinned").join(id.to_string())
    }

    /// Records that the operator shared package `id` here.
    pub fn pin(&self, id: &ContentId) -> Result<(), StoreError> {
        let path = self.pin_path(id);
        std::fs::write(&path, b"").map_err(io(&path))
    }

    /// Whether the operator shared package `id` here.
    pub fn pinned(&self, id: &ContentId) -> bool {
        self.pin_path(id).exists()
    }

    /// Removes a package (no longer acceptable).
    pub fn remove(&self, id: &ContentId) -> Result<(), StoreError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Every stored package, verified again; files that fail are reported
    /// with their path and left for the operator.
    pub fn load_all(&self) -> Result<Vec<Loaded>, StoreError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            if path.extension().is_none_or(|e| e != "rps") {
                continue;
            }
            let loaded = Package::read_file(&path)
                .and_then(Package::verify)
                .and_then(|p| {
                    let expected = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or_default();
                    if p.content_id().to_string() == expected {
                        Ok(p)
                    } else {
                        Err(PackageError::Io(std::io::Error::other(
                            "file name does not match its content id",
                        )))
                    }
                });
            out.push(loaded.map_err(|e| (path, e)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{Manifest, SecretKey, pack};

    #[test]
    fn save_load_and_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let manifest =
            Manifest::parse(b"<rps><name>a</name><version>1.0.0</version></rps>").unwrap();
        let package = pack(
            vec![0, 97, 115, 109, 13, 0, 1, 0],
            &manifest,
            &SecretKey::generate(),
        )
        .unwrap();
        store.save(&package).unwrap();
        // A crash mid-write leaves a temp file; a partial file in place of a
        // package fails verification.
        std::fs::write(dir.path().join("tmp/partial"), b"half").unwrap();
        std::fs::write(
            dir.path().join(format!("{}.rps", ContentId([9; 32]))),
            b"SP2APKG1 torn",
        )
        .unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!dir.path().join("tmp/partial").exists());
        let loaded = store.load_all().unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded.iter().filter(|r| r.is_ok()).count(), 1);
        let good = loaded.into_iter().find_map(Result::ok).unwrap();
        assert_eq!(good.content_id(), package.content_id());
    }
}
