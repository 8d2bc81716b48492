//! Components move between peers in verified blocks: the block size and
//! block arithmetic, the [`Bitmap`] of the blocks a peer holds (with its wire
//! format), and the BLAKE3 verified-streaming encoding that lets a receiver
//! check every block against the signed advert's component hash
//! ([`verify`]).
//!
//! Pure data handling: no I/O, no network, no clock.

mod bitmap;
pub mod verify;

pub use bitmap::Bitmap;
pub use verify::{Accepted, BadData, Download, Rejected, encode, outboard};

/// Size of one verified block of a component (a bao chunk group, 16 KiB).
pub const BLOCK_SIZE: u64 = 16 * 1024;
/// `BLOCK_SIZE` as bao-tree's chunk log (2^4 BLAKE3 chunks of 1 KiB).
pub const BLOCK_CHUNK_LOG: u8 = 4;
/// Largest number of blocks one transfer request may ask for (1 MiB).
pub const MAX_BLOCKS_PER_REQUEST: u32 = 64;

/// Number of blocks of a component of `size` bytes (an empty component is
/// one empty block).
pub fn block_count(size: u64) -> u64 {
    size.div_ceil(BLOCK_SIZE).max(1)
}
