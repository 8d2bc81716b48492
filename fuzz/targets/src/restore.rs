//! A saved download resumed from its files (`<data dir>/partial/<id>/`):
//! the held-blocks bitmap decoded, then every block it claims re-verified
//! against the advert's hash ([`sp2a::blocks::Download::restore`]).
//!
//! Input: the saved `held` bitmap (its first bytes, as many as its encoding
//! takes), then edits to the saved data and hash tree, each 5 bytes: a
//! big-endian offset into `data ++ tree` and a byte to XOR there.
//! Oracle: every block the resumed download holds is the real component's.

use std::sync::OnceLock;

use sp2a::blocks::{BLOCK_SIZE, Bitmap, Download, block_count, encode, outboard};

/// A component of 9 blocks and a bit, and its complete saved parts.
struct Saved {
    component: Vec<u8>,
    root: blake3::Hash,
    data: Vec<u8>,
    tree: Vec<u8>,
    held: Bitmap,
}

const SIZE: u64 = 9 * BLOCK_SIZE + 1234;

fn saved() -> &'static Saved {
    static SAVED: OnceLock<Saved> = OnceLock::new();
    SAVED.get_or_init(|| {
        let component: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
        let root = blake3::hash(&component);
        let tree = outboard(&component);
        let mut download = Download::new(root, SIZE);
        // Blocks 0..3, 4..7 and 9 arrived; 3 and 8 did not.
        for (first, count) in [(0, 3), (4, 3), (9, 1)] {
            let encoded = encode(&component, &tree, first, count).expect("encodes");
            download
                .accept(first, count, SIZE, &encoded)
                .expect("verifies");
        }
        let (data, tree) = download.parts();
        Saved {
            component: component.clone(),
            root,
            data: data.to_vec(),
            tree: tree.to_vec(),
            held: download.bitmap().clone(),
        }
    })
}

pub fn seeds() -> Vec<Vec<u8>> {
    let saved = saved();
    let held = saved.held.encode();
    let mut flipped = held.clone();
    // A block claimed that never arrived, and a byte of block 5 changed.
    flipped[0] ^= 0b1000;
    flipped.extend_from_slice(&(5 * BLOCK_SIZE as u32 + 7).to_be_bytes());
    flipped.push(1);
    let mut tree_edit = held.clone();
    tree_edit.extend_from_slice(&(SIZE as u32 + 40).to_be_bytes());
    tree_edit.push(0x80);
    vec![held, flipped, tree_edit, Vec::new()]
}

pub fn run(bytes: &[u8]) -> String {
    let saved = saved();
    let blocks = block_count(SIZE);
    let held_len = saved.held.encode().len().min(bytes.len());
    let (held, edits) = bytes.split_at(held_len);
    let Some(held) = Bitmap::decode(held, blocks) else {
        return "bad bitmap".into();
    };
    let (mut data, mut tree) = (saved.data.clone(), saved.tree.clone());
    for edit in edits.chunks_exact(5) {
        let at = u32::from_be_bytes([edit[0], edit[1], edit[2], edit[3]]) as usize;
        match at.checked_sub(data.len()) {
            None => data[at] ^= edit[4],
            Some(in_tree) if in_tree < tree.len() => tree[in_tree] ^= edit[4],
            Some(_) => {}
        }
    }
    let resumed = Download::restore(saved.root, SIZE, data, tree, &held);
    let (kept, _) = resumed.parts();
    let mut count = 0;
    for block in 0..blocks {
        if !resumed.has(block) {
            continue;
        }
        count += 1;
        let start = (block * BLOCK_SIZE) as usize;
        let end = ((block + 1) * BLOCK_SIZE).min(SIZE) as usize;
        assert_eq!(
            &kept[start..end],
            &saved.component[start..end],
            "block {block} was kept but is not the component's"
        );
        assert!(held.contains(block), "block {block} kept but never claimed");
    }
    format!("kept {count}")
}
