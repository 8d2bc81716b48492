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

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::blocks::{BLOCK_SIZE, Bitmap, Download};
use crate::package::ContentId;

pub(crate) struct Partials {
    dir: PathBuf,
}

impl Partials {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn dir_of(&self, id: &ContentId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// The saved download of package `id` (component hash `root`, `size`
    /// bytes), with the blocks that verify again; a fresh one otherwise.
    pub(crate) fn resume(&self, id: &ContentId, root: blake3::Hash, size: u64) -> Download {
        let dir = self.dir_of(id);
        let read = |name: &str| std::fs::read(dir.join(name)).ok();
        let (Some(data), Some(held), Some(tree)) = (read("data"), read("held"), read("tree"))
        else {
            return Download::new(root, size);
        };
        let blocks = crate::blocks::block_count(size);
        let Some(held) = Bitmap::decode(&held, blocks) else {
            return Download::new(root, size);
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
}
