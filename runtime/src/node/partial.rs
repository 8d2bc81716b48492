//! Downloads in progress, kept on disk so that a node killed in the middle
//! of one resumes from the blocks it had, instead of starting over.
//!
//! Layout: `<data dir>/partial/<content id>/` with `data` (the component's
//! bytes at their offsets, zeros where nothing arrived yet), `held` (the
//! bitmap of verified blocks) and `tree` (the hash-tree nodes received). They
//! are written as blocks arrive, without syncing: the files are not trusted
//! on the way back. [`Download::restore`] keeps only the blocks that verify
//! again against the advert's component hash, so a torn write or a changed
//! byte costs that block, never an unverified activation.
//!
//! Saved downloads of packages that are never pulled again do not stay for
//! ever: [`Partials::sweep`] (at start, then hourly) removes those untouched
//! for `[pull] keep-partial` (7 days), then the least recently touched ones
//! beyond `[pull] max-partial` bytes on disk (1 GiB) in all, sparing any
//! written in the last 10 minutes (a download under way) in both passes.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::blocks::{BLOCK_SIZE, Bitmap, Download};
use crate::package::ContentId;

/// A saved download written this recently is not evicted for space.
const ACTIVE: Duration = Duration::from_secs(600);

pub(crate) struct Partials {
    dir: PathBuf,
    keep: Duration,
    max_bytes: u64,
}

/// What a sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Swept {
    pub(crate) removed: usize,
    pub(crate) bytes: u64,
}

/// One saved download on disk: its directory, bytes and last write.
struct Saved {
    dir: PathBuf,
    bytes: u64,
    touched: SystemTime,
}

impl Saved {
    fn read(dir: PathBuf) -> std::io::Result<Self> {
        // The files' last writes (the directory's own time only changes
        // when a file is first made).
        use std::os::unix::fs::MetadataExt;
        let mut bytes = 0;
        let mut touched = None;
        for entry in std::fs::read_dir(&dir)? {
            let meta = entry?.metadata()?;
            // What it takes on disk: `data` is sparse until complete.
            bytes += meta.blocks() * 512;
            touched = touched.max(Some(meta.modified()?));
        }
        let touched = match touched {
            Some(t) => t,
            None => std::fs::metadata(&dir)?.modified()?,
        };
        Ok(Self {
            dir,
            bytes,
            touched,
        })
    }
}

impl Partials {
    pub(crate) fn new(dir: PathBuf, keep: Duration, max_bytes: u64) -> Self {
        Self {
            dir,
            keep,
            max_bytes,
        }
    }

    fn dir_of(&self, id: &ContentId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// The saved download of package `id` (component hash `root`, `size`
    /// bytes), with the blocks that verify again; a fresh one otherwise.
    /// Each saved file is read only if it has the length a download of
    /// this package gives it (a huge or truncated file costs nothing).
    pub(crate) fn resume(&self, id: &ContentId, root: blake3::Hash, size: u64) -> Download {
        let fresh = Download::new(root, size);
        let dir = self.dir_of(id);
        let blocks = crate::blocks::block_count(size);
        let tree_len = fresh.parts().1.len() as u64;
        let held_len = Bitmap::wire_len(blocks) as u64;
        let read = |name: &str, len: u64| read_exactly(&dir.join(name), len);
        let (Some(data), Some(held), Some(tree)) = (
            read("data", size),
            read("held", held_len),
            read("tree", tree_len),
        ) else {
            return fresh;
        };
        let Some(held) = Bitmap::decode(&held, blocks) else {
            return fresh;
        };
        let download = Download::restore(root, size, data, tree, &held);
        if download.received() > 0 {
            tracing::info!(
                package = %id.short(),
                bytes = download.received(),
                "resuming a download from the blocks saved before"
            );
        }
        download
    }

    /// Saves the blocks `first .. first + count` that `download` now holds,
    /// with its bitmap and hash tree. Failures are logged: the download goes
    /// on, it would only resume from less.
    pub(crate) fn save(&self, id: &ContentId, download: &Download, first: u64, count: u32) {
        if let Err(e) = self.try_save(id, download, first, count) {
            tracing::debug!(package = %id.short(), error = %e, "cannot save download progress");
        }
    }

    fn try_save(
        &self,
        id: &ContentId,
        download: &Download,
        first: u64,
        count: u32,
    ) -> std::io::Result<()> {
        let dir = self.dir_of(id);
        std::fs::create_dir_all(&dir)?;
        let (data, tree) = download.parts();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("data"))?;
        if file.metadata()?.len() != download.size() {
            file.set_len(download.size())?;
        }
        let start = (first * BLOCK_SIZE).min(download.size());
        let end = ((first + u64::from(count)) * BLOCK_SIZE).min(download.size());
        file.write_all_at(&data[start as usize..end as usize], start)?;
        std::fs::File::create(dir.join("tree"))?.write_all(tree)?;
        std::fs::File::create(dir.join("held"))?.write_all(&download.bitmap().encode())?;
        Ok(())
    }

    /// Forgets the saved download of `id` (it completed).
    pub(crate) fn remove(&self, id: &ContentId) {
        let _ = std::fs::remove_dir_all(self.dir_of(id));
    }

    /// Removes the saved downloads that are too old, then the least
    /// recently written beyond the size bound (see the module
    /// documentation). Only directories named by a content id are touched.
    pub(crate) fn sweep(&self, now: SystemTime) -> Swept {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Swept::default();
        };
        let mut saved: Vec<Saved> = entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|name| name.parse::<ContentId>().is_ok())
            })
            .filter_map(|e| Saved::read(e.path()).ok())
            .collect();
        let age = |s: &Saved| now.duration_since(s.touched).unwrap_or_default();
        let mut swept = Swept::default();
        let mut forget = |s: &Saved, why: &str| {
            if remove_dir(&s.dir) {
                tracing::info!(dir = %s.dir.display(), bytes = s.bytes, why, "saved download removed");
                swept.removed += 1;
                swept.bytes += s.bytes;
            }
        };
        saved.retain(|s| {
            let old = age(s) > self.keep.max(ACTIVE);
            if old {
                forget(s, "not resumed in time");
            }
            !old
        });
        // Least recently written first.
        saved.sort_by_key(|s| s.touched);
        let mut total: u64 = saved.iter().map(|s| s.bytes).sum();
        for s in &saved {
            if total <= self.max_bytes {
                break;
            }
            if age(s) >= ACTIVE {
                forget(s, "saved downloads over their size bound");
                total -= s.bytes;
            }
        }
        swept
    }
}

/// The bytes of `path` if it is a regular file of exactly `len` bytes
/// (checked on the open file before anything is read).
fn read_exactly(path: &Path, len: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() != len {
        return None;
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).ok()?);
    Read::take(&mut file, len).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 == len).then_some(bytes)
}

fn remove_dir(dir: &Path) -> bool {
    std::fs::remove_dir_all(dir).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(root: &Path, id: u8, bytes: usize, touched: SystemTime) -> PathBuf {
        let dir = root.join(ContentId([id; 32]).to_string());
        std::fs::create_dir_all(&dir).unwrap();
        for (name, len) in [("data", bytes), ("held", 1), ("tree", 0)] {
            std::fs::write(dir.join(name), vec![1u8; len]).unwrap();
            let file = std::fs::File::options()
                .write(true)
                .open(dir.join(name))
                .unwrap();
            file.set_modified(touched).unwrap();
        }
        dir
    }

    /// Bytes this process has read so far (`rchar` of `/proc/self/io`).
    fn bytes_read() -> u64 {
        std::fs::read_to_string("/proc/self/io")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A saved download is read only if its files have the lengths this
    /// package gives them: a `data` file grown to 2 GiB (sparse: it costs
    /// no disk) is not read into memory, and nothing resumes.
    #[test]
    fn a_saved_download_with_files_of_the_wrong_length_is_not_read() {
        let root = tempfile::tempdir().unwrap();
        let partials = Partials::new(root.path().to_owned(), Duration::from_secs(60), u64::MAX);
        let component: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let hash = blake3::hash(&component);
        let size = component.len() as u64;
        let tree = crate::blocks::outboard(&component);
        let id = ContentId([9; 32]);
        let mut download = Download::new(hash, size);
        let encoded = crate::blocks::encode(&component, &tree, 0, 3).unwrap();
        download.accept(0, 3, size, &encoded).unwrap();
        partials.save(&id, &download, 0, 3);
        assert_eq!(partials.resume(&id, hash, size).received(), 3 * BLOCK_SIZE);

        let data = partials.dir_of(&id).join("data");
        std::fs::File::options()
            .write(true)
            .open(&data)
            .unwrap()
            .set_len(2 << 30)
            .unwrap();
        let before = bytes_read();
        assert_eq!(partials.resume(&id, hash, size).received(), 0);
        let read = bytes_read() - before;
        // (Other tests of this process read meanwhile, but not gigabytes.)
        assert!(read < 256 << 20, "{read} bytes read");
        // Too short a tree or bitmap resumes nothing either.
        std::fs::File::options()
            .write(true)
            .open(&data)
            .unwrap()
            .set_len(size)
            .unwrap();
        assert_eq!(partials.resume(&id, hash, size).received(), 3 * BLOCK_SIZE);
        std::fs::write(partials.dir_of(&id).join("held"), [0xff; 1000]).unwrap();
        assert_eq!(partials.resume(&id, hash, size).received(), 0);
    }

    #[test]
    fn old_saved_downloads_go_then_the_least_recent_beyond_the_bound() {
        let root = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let hours = |h: u64| now - Duration::from_secs(h * 3600);
        const KIB: usize = 1024;
        let week_old = saved(root.path(), 1, 100 * KIB, hours(24 * 8));
        let older = saved(root.path(), 2, 600 * KIB, hours(5));
        let newer = saved(root.path(), 3, 600 * KIB, hours(2));
        // Under way: written a minute ago, spared even though over the bound.
        let active = saved(root.path(), 4, 600 * KIB, now - Duration::from_secs(60));
        // Not a saved download: never touched.
        let other = root.path().join("notes.txt");
        std::fs::write(&other, b"x").unwrap();

        let bound = 1000 * KIB as u64;
        let partials = Partials::new(
            root.path().to_owned(),
            Duration::from_secs(7 * 86400),
            bound,
        );
        let swept = partials.sweep(now);
        assert!(!week_old.exists());
        assert!(
            !older.exists() && !newer.exists(),
            "over 1000 KiB: oldest first"
        );
        assert!(active.exists());
        assert!(other.exists());
        assert_eq!(swept.removed, 3);
        // Bytes on disk: at least what was written.
        assert!(swept.bytes >= (100 + 2 * 600) * KIB as u64, "{swept:?}");

        // Within the bound, nothing more goes.
        assert_eq!(partials.sweep(now), Swept::default());
    }
}
