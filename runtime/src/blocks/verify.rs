//! Verified block transfer: serving ranges of a component as BLAKE3
//! verified-streaming (bao) encodings, and assembling a download block by
//! block, each block checked against the component hash of the signed advert
//! the moment it arrives.
//!
//! Blocks are [`BLOCK_SIZE`] bytes (the last one may be shorter). The parent
//! hashes that arrive with each block are kept, so a partial download can
//! already serve the blocks it holds.

use std::io::Cursor;

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::sync::{DecodeResponseIter, OutboardMut, encode_ranges_validated};
use bao_tree::io::{BaoContentItem, Leaf, Parent};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};

use super::{BLOCK_CHUNK_LOG, BLOCK_SIZE, Bitmap, block_count};

/// What was wrong with a peer's response; each one ends the attempt with
/// that peer for this package.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadData {
    #[error("declared a component of {declared} bytes; the signed advert says {expected}")]
    SizeMismatch { declared: u64, expected: u64 },
    #[error("sent block {block}, which does not match the component hash")]
    Corrupt { block: u64 },
    #[error("sent {0} bytes more than requested")]
    TrailingBytes(usize),
    #[error("sent {got} of the {asked} requested blocks")]
    Incomplete { asked: u32, got: u32 },
    #[error("sent data outside the requested range")]
    OutOfRange,
}

/// Blocks that cannot be encoded from the data at hand.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode blocks {first}..{end}: {reason}")]
pub struct EncodeError {
    pub first: u64,
    pub end: u64,
    reason: String,
}

fn tree(size: u64) -> BaoTree {
    BaoTree::new(size, BlockSize::from_chunk_log(BLOCK_CHUNK_LOG))
}

fn ranges(first: u64, count: u32) -> ChunkRanges {
    let per_block = 1u64 << BLOCK_CHUNK_LOG;
    ChunkRanges::from(ChunkNum(first * per_block)..ChunkNum((first + u64::from(count)) * per_block))
}

/// The outboard (tree of hashes) of a complete component.
pub fn outboard(component: &[u8]) -> PreOrderMemOutboard {
    PreOrderMemOutboard::create(component, BlockSize::from_chunk_log(BLOCK_CHUNK_LOG))
}

/// Encodes blocks `first .. first + count` of a complete component.
pub fn encode(
    component: &[u8],
    outboard: &PreOrderMemOutboard,
    first: u64,
    count: u32,
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(count as usize * (BLOCK_SIZE as usize + 256));
    encode_ranges_validated(component, outboard, &ranges(first, count), &mut out).map_err(|e| {
        EncodeError {
            first,
            end: first + u64::from(count),
            reason: e.to_string(),
        }
    })?;
    Ok(out)
}

/// What one response added to a download.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Blocks from the first one asked that verified (held before or new).
    pub verified: u32,
    /// Bytes of data this response added.
    pub new_bytes: u64,
}

/// A response that did not verify in full: the blocks before the bad one
/// were kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub reason: BadData,
    pub kept: Accepted,
}

/// A component being downloaded: the verified blocks so far.
#[derive(Debug)]
pub struct Download {
    size: u64,
    data: Vec<u8>,
    have: Bitmap,
    received: u64,
    outboard: PreOrderMemOutboard,
}

impl Download {
    /// An empty download of a component with this hash and size (from a
    /// verified advert).
    pub fn new(root: blake3::Hash, size: u64) -> Self {
        let tree = tree(size);
        Self {
            size,
            data: vec![0; size as usize],
            have: Bitmap::empty(block_count(size)),
            received: 0,
            outboard: PreOrderMemOutboard {
                root,
                tree,
                data: vec![0; tree.outboard_size() as usize],
            },
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn blocks(&self) -> u64 {
        self.have.len()
    }

    pub fn has(&self, block: u64) -> bool {
        self.have.contains(block)
    }

    /// Bytes of verified data held.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    /// The blocks held.
    pub fn bitmap(&self) -> &Bitmap {
        &self.have
    }

    /// The first run of missing blocks, at most `max` long.
    pub fn next_missing(&self, max: u32) -> Option<(u64, u32)> {
        self.next_missing_except(max, |_| false)
    }

    /// The first run of missing blocks that are not `skip`ped (asked for
    /// already, say), at most `max` long.
    pub fn next_missing_except(&self, max: u32, skip: impl Fn(u64) -> bool) -> Option<(u64, u32)> {
        let wanted = |b: &u64| !self.has(*b) && !skip(*b);
        let first = (0..self.blocks()).find(wanted)?;
        let run = (first..self.blocks())
            .take(max as usize)
            .take_while(wanted)
            .count();
        Some((first, run as u32))
    }

    /// Verifies a response for blocks `first .. first + count` and keeps every
    /// block that checks out. Blocks before a corrupt one are kept; the
    /// corrupt block and everything after it are not.
    pub fn accept(
        &mut self,
        first: u64,
        count: u32,
        declared_size: u64,
        encoded: &[u8],
    ) -> Result<Accepted, Rejected> {
        let mut accepted = Accepted::default();
        let reject = |reason, kept| Err(Rejected { reason, kept });
        if declared_size != self.size {
            let reason = BadData::SizeMismatch {
                declared: declared_size,
                expected: self.size,
            };
            return reject(reason, accepted);
        }
        let requested = ranges(first, count);
        let mut cursor = Cursor::new(encoded);
        let root = self.outboard.root;
        let tree = self.outboard.tree;
        for item in DecodeResponseIter::new(root, tree, &mut cursor, &requested) {
            match item {
                Ok(BaoContentItem::Parent(Parent { node, pair })) => {
                    let _ = self.outboard.save(node, &pair);
                }
                Ok(BaoContentItem::Leaf(Leaf { offset, data })) => {
                    let block = offset / BLOCK_SIZE;
                    let end = offset + data.len() as u64;
                    if offset % BLOCK_SIZE != 0
                        || block != first + u64::from(accepted.verified)
                        || end > self.size
                    {
                        return reject(BadData::OutOfRange, accepted);
                    }
                    if !self.have.contains(block) {
                        self.data[offset as usize..end as usize].copy_from_slice(&data);
                        self.have.insert(block);
                        self.received += data.len() as u64;
                        accepted.new_bytes += data.len() as u64;
                    }
                    accepted.verified += 1;
                }
                Err(e) => {
                    let block = match e {
                        bao_tree::io::DecodeError::LeafHashMismatch(chunk)
                        | bao_tree::io::DecodeError::LeafNotFound(chunk) => {
                            chunk.0 >> BLOCK_CHUNK_LOG
                        }
                        _ => first + u64::from(accepted.verified),
                    };
                    return reject(BadData::Corrupt { block }, accepted);
                }
            }
        }
        let consumed = cursor.position() as usize;
        if consumed < encoded.len() {
            return reject(BadData::TrailingBytes(encoded.len() - consumed), accepted);
        }
        let expected = count.min((self.blocks() - first.min(self.blocks())) as u32);
        if accepted.verified < expected {
            let reason = BadData::Incomplete {
                asked: expected,
                got: accepted.verified,
            };
            return reject(reason, accepted);
        }
        Ok(accepted)
    }

    /// Encodes blocks this (possibly partial) download holds, for serving;
    /// `None` unless it holds all of them.
    pub fn encode(&self, first: u64, count: u32) -> Option<Vec<u8>> {
        let last = first.checked_add(u64::from(count))?;
        if last > self.blocks() || !(first..last).all(|b| self.has(b)) {
            return None;
        }
        let mut out = Vec::new();
        bao_tree::io::sync::encode_ranges(
            &self.data[..],
            &self.outboard,
            &ranges(first, count),
            &mut out,
        )
        .ok()?;
        Some(out)
    }

    /// The component, once every block is verified.
    pub fn bytes(&self) -> Option<&[u8]> {
        self.is_complete().then_some(&self.data[..])
    }

    /// What a saved download consists of: the data buffer (held blocks in
    /// place, zeros elsewhere) and the hash-tree nodes verified so far.
    pub fn parts(&self) -> (&[u8], &[u8]) {
        (&self.data, &self.outboard.data)
    }

    /// A download resumed from saved parts, keeping only the blocks in
    /// `held` that verify again against `root`: each run of them is encoded
    /// from the saved data and tree and checked as if a peer had sent it.
    /// Parts of the wrong size resume nothing.
    pub fn restore(
        root: blake3::Hash,
        size: u64,
        data: Vec<u8>,
        tree_nodes: Vec<u8>,
        held: &Bitmap,
    ) -> Self {
        let mut fresh = Self::new(root, size);
        if data.len() as u64 != size
            || tree_nodes.len() != fresh.outboard.data.len()
            || held.len() != fresh.blocks()
        {
            return fresh;
        }
        let saved = Self {
            size,
            data,
            have: held.clone(),
            received: 0,
            outboard: PreOrderMemOutboard {
                root,
                tree: fresh.outboard.tree,
                data: tree_nodes,
            },
        };
        let mut block = 0;
        while block < saved.blocks() {
            if !saved.has(block) {
                block += 1;
                continue;
            }
            let run = (block..saved.blocks())
                .take(super::MAX_BLOCKS_PER_REQUEST as usize)
                .take_while(|b| saved.has(*b))
                .count() as u32;
            // A run that does not verify as a whole is retried block by block.
            let whole = saved
                .encode(block, run)
                .and_then(|encoded| fresh.accept(block, run, size, &encoded).ok());
            if whole.is_none() {
                for one in block..block + u64::from(run) {
                    if let Some(encoded) = saved.encode(one, 1) {
                        let _ = fresh.accept(one, 1, size, &encoded);
                    }
                }
            }
            block += u64::from(run);
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    #[test]
    fn download_in_ranges_verifies_and_completes() {
        let data = component(200_000);
        let root = blake3::hash(&data);
        let ob = outboard(&data);
        assert_eq!(ob.root, root, "the bao root is the plain BLAKE3 hash");
        let mut download = Download::new(root, data.len() as u64);
        assert_eq!(download.blocks(), 13);
        while let Some((first, count)) = download.next_missing(4) {
            let encoded = encode(&data, &ob, first, count).unwrap();
            let accepted = download
                .accept(first, count, data.len() as u64, &encoded)
                .unwrap();
            assert_eq!(accepted.verified, count);
        }
        assert!(download.is_complete());
        assert_eq!(download.bytes(), Some(&data[..]));
    }

    #[test]
    fn a_saved_download_resumes_with_exactly_the_blocks_that_verify_again() {
        let data = component(300_000);
        let root = blake3::hash(&data);
        let ob = outboard(&data);
        let size = data.len() as u64;
        let mut download = Download::new(root, size);
        // Blocks 0..4, 6..9 and 15 arrive.
        for (first, count) in [(0, 4), (6, 3), (15, 1)] {
            let encoded = encode(&data, &ob, first, count).unwrap();
            download.accept(first, count, size, &encoded).unwrap();
        }
        let (saved, tree) = download.parts();
        let (saved, tree) = (saved.to_vec(), tree.to_vec());
        let held = download.bitmap().clone();

        let resumed = Download::restore(root, size, saved.clone(), tree.clone(), &held);
        assert_eq!(resumed.bitmap(), &held);
        assert_eq!(resumed.received(), download.received());

        // A byte changed on disk: that block, and only it, is fetched again.
        let mut damaged = saved.clone();
        damaged[7 * BLOCK_SIZE as usize + 5] ^= 1;
        let resumed = Download::restore(root, size, damaged, tree.clone(), &held);
        let mut expected = held.clone();
        expected.remove(7);
        assert_eq!(resumed.bitmap(), &expected);

        // A claim to hold a block that was never received is not believed.
        let mut claimed = held.clone();
        claimed.insert(10);
        let resumed = Download::restore(root, size, saved.clone(), tree.clone(), &claimed);
        assert_eq!(resumed.bitmap(), &held);

        // Parts of another size, or of another component, resume nothing.
        let other = blake3::hash(b"another component");
        assert_eq!(
            Download::restore(other, size, saved.clone(), tree.clone(), &held).received(),
            0
        );
        assert_eq!(
            Download::restore(root, size, saved[1..].to_vec(), tree, &held).received(),
            0
        );
    }

    #[test]
    fn a_flipped_byte_is_caught_at_its_block() {
        let data = component(300_000);
        let root = blake3::hash(&data);
        let ob = outboard(&data);
        // A provider whose copy has one flipped byte in block 5 (encoded
        // without validation, as a lying peer would).
        let mut bad = data.clone();
        bad[5 * BLOCK_SIZE as usize + 1234] ^= 1;
        let mut encoded = Vec::new();
        bao_tree::io::sync::encode_ranges(&bad[..], &ob, &ranges(0, 8), &mut encoded).unwrap();
        let mut download = Download::new(root, data.len() as u64);
        let err = download
            .accept(0, 8, data.len() as u64, &encoded)
            .unwrap_err();
        assert_eq!(err.reason, BadData::Corrupt { block: 5 });
        assert_eq!(err.kept.verified, 5, "the blocks before it were kept");
        assert!((0..5).all(|b| download.has(b)));
        assert!((5..8).all(|b| !download.has(b)));
        assert_eq!(download.bytes(), None, "incomplete");
    }

    #[test]
    fn lies_about_size_extra_bytes_and_short_answers() {
        let data = component(100_000);
        let root = blake3::hash(&data);
        let ob = outboard(&data);
        let encoded = encode(&data, &ob, 0, 2).unwrap();
        let mut download = Download::new(root, data.len() as u64);
        let size_lie = download.accept(0, 2, 10_000_000, &encoded).unwrap_err();
        assert!(matches!(size_lie.reason, BadData::SizeMismatch { .. }));
        let mut longer = encoded.clone();
        longer.extend_from_slice(b"junk");
        let err = download
            .accept(0, 2, data.len() as u64, &longer)
            .unwrap_err();
        assert_eq!(err.reason, BadData::TrailingBytes(4));
        // One block where two were asked: the first is kept, the missing
        // one is where the data ends.
        let short = encode(&data, &ob, 0, 1).unwrap();
        let err = download
            .accept(0, 2, data.len() as u64, &short)
            .unwrap_err();
        assert_eq!(err.reason, BadData::Corrupt { block: 1 });
        assert_eq!(err.kept.verified, 1);
        // Another file's blocks do not verify.
        let other = component(100_001);
        let wrong = encode(&other, &outboard(&other), 0, 2).unwrap();
        let mut fresh = Download::new(root, data.len() as u64);
        assert!(matches!(
            fresh.accept(0, 2, data.len() as u64, &wrong),
            Err(Rejected {
                reason: BadData::Corrupt { .. },
                ..
            })
        ));
    }

    #[test]
    fn blocks_other_than_the_ones_asked_are_refused() {
        let data = component(100_000);
        let root = blake3::hash(&data);
        let ob = outboard(&data);
        // Valid data for blocks 2..4, presented as the answer for 0..2.
        let elsewhere = encode(&data, &ob, 2, 2).unwrap();
        let mut download = Download::new(root, data.len() as u64);
        let err = download
            .accept(0, 2, data.len() as u64, &elsewhere)
            .unwrap_err();
        assert_eq!(err.reason, BadData::Corrupt { block: 0 });
        assert_eq!(download.received(), 0);
    }

    #[test]
    fn a_partial_download_serves_what_it_holds() {
        let data = component(150_000);
        let root = blake3::hash(&data);
        let ob = outboard(&data);
        let mut partial = Download::new(root, data.len() as u64);
        partial
            .accept(2, 3, data.len() as u64, &encode(&data, &ob, 2, 3).unwrap())
            .unwrap();
        assert!(partial.encode(0, 1).is_none());
        let served = partial.encode(3, 2).unwrap();
        let mut other = Download::new(root, data.len() as u64);
        other.accept(3, 2, data.len() as u64, &served).unwrap();
        assert!(other.has(3) && other.has(4));
        assert_eq!(partial.bitmap().iter().collect::<Vec<_>>(), [2, 3, 4]);
    }
}
