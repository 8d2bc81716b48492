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

use crate::net::protocol::{BLOCK_CHUNK_LOG, BLOCK_SIZE};

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

fn tree(size: u64) -> BaoTree {
    BaoTree::new(size, BlockSize::from_chunk_log(BLOCK_CHUNK_LOG))
}

/// Number of blocks of a component of `size` bytes.
pub fn block_count(size: u64) -> u64 {
    size.div_ceil(BLOCK_SIZE).max(1)
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
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(count as usize * (BLOCK_SIZE as usize + 256));
    encode_ranges_validated(component, outboard, &ranges(first, count), &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// A component being downloaded: the verified blocks so far.
#[derive(Debug)]
pub struct Download {
    size: u64,
    data: Vec<u8>,
    have: Vec<bool>,
    received: u64,
    outboard: PreOrderMemOutboard,
}

impl Download {
    /// An empty download of a component with this hash and size (from a
    /// verified advert).
    pub fn new(root: blake3::Hash, size: u64) -> Self {
        let tree = tree(size);
        let blocks = block_count(size) as usize;
        Self {
            size,
            data: vec![0; size as usize],
            have: vec![false; blocks],
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
        self.have.len() as u64
    }

    pub fn has(&self, block: u64) -> bool {
        self.have.get(block as usize).copied().unwrap_or(false)
    }

    /// Bytes of verified data held.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn is_complete(&self) -> bool {
        self.have.iter().all(|h| *h)
    }

    /// The first run of missing blocks, at most `max` long.
    pub fn next_missing(&self, max: u32) -> Option<(u64, u32)> {
        let first = self.have.iter().position(|h| !h)?;
        let run = self.have[first..]
            .iter()
            .take(max as usize)
            .take_while(|h| !**h)
            .count();
        Some((first as u64, run as u32))
    }

    /// Blocks held, as a bitmap (bit `i` of byte `i / 8`).
    pub fn bitmap(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.have.len().div_ceil(8)];
        for (i, have) in self.have.iter().enumerate() {
            if *have {
                out[i / 8] |= 1 << (i % 8);
            }
        }
        out
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
    ) -> Result<u64, BadData> {
        if declared_size != self.size {
            return Err(BadData::SizeMismatch {
                declared: declared_size,
                expected: self.size,
            });
        }
        let requested = ranges(first, count);
        let mut cursor = Cursor::new(encoded);
        let mut got = 0u32;
        let mut added = 0u64;
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
                        || block < first
                        || block >= first + u64::from(count)
                        || end > self.size
                    {
                        return Err(BadData::OutOfRange);
                    }
                    if !self.have[block as usize] {
                        self.data[offset as usize..end as usize].copy_from_slice(&data);
                        self.have[block as usize] = true;
                        self.received += data.len() as u64;
                        added += data.len() as u64;
                    }
                    got += 1;
                }
                Err(e) => {
                    let block = match e {
                        bao_tree::io::DecodeError::LeafHashMismatch(chunk)
                        | bao_tree::io::DecodeError::LeafNotFound(chunk) => {
                            chunk.0 >> BLOCK_CHUNK_LOG
                        }
                        _ => first + u64::from(got),
                    };
                    return Err(BadData::Corrupt { block });
                }
            }
        }
        let consumed = cursor.position() as usize;
        if consumed < encoded.len() {
            return Err(BadData::TrailingBytes(encoded.len() - consumed));
        }
        let expected = count.min((self.blocks() - first.min(self.blocks())) as u32);
        if got < expected {
            return Err(BadData::Incomplete {
                asked: expected,
                got,
            });
        }
        Ok(added)
    }

    /// Encodes blocks this (possibly partial) download holds, for serving.
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

    /// The complete component. Call only when [`Download::is_complete`].
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    /// Moves the data out (for a download shared with serving tasks);
    /// the download is empty afterwards.
    pub fn take_bytes(&mut self) -> Vec<u8> {
        self.have.iter_mut().for_each(|h| *h = false);
        self.received = 0;
        std::mem::take(&mut self.data)
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
            download
                .accept(first, count, data.len() as u64, &encoded)
                .unwrap();
        }
        assert!(download.is_complete());
        assert_eq!(download.into_bytes(), data);
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
        assert_eq!(err, BadData::Corrupt { block: 5 });
        // Blocks before the bad one were kept and verified.
        assert!((0..5).all(|b| download.has(b)));
        assert!((5..8).all(|b| !download.has(b)));
    }

    #[test]
    fn lies_about_size_extra_bytes_and_short_answers() {
        let data = component(100_000);
        let root = blake3::hash(&data);
        let ob = outboard(&data);
        let encoded = encode(&data, &ob, 0, 2).unwrap();
        let mut download = Download::new(root, data.len() as u64);
        assert!(matches!(
            download.accept(0, 2, 10_000_000, &encoded),
            Err(BadData::SizeMismatch { .. })
        ));
        let mut longer = encoded.clone();
        longer.extend_from_slice(b"junk");
        assert_eq!(
            download.accept(0, 2, data.len() as u64, &longer),
            Err(BadData::TrailingBytes(4))
        );
        let short = encode(&data, &ob, 0, 1).unwrap();
        assert!(download.accept(0, 2, data.len() as u64, &short).is_err());
        // Another file's blocks do not verify.
        let other = component(100_001);
        let wrong = encode(&other, &outboard(&other), 0, 2).unwrap();
        let mut fresh = Download::new(root, data.len() as u64);
        assert!(matches!(
            fresh.accept(0, 2, data.len() as u64, &wrong),
            Err(BadData::Corrupt { .. })
        ));
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
    }
}
