//! Which blocks of a component a peer holds (or wants).
//!
//! Wire format (the `bitmap` and `wanted` fields of `/sp2a/transfer/1`):
//! exactly `ceil(blocks / 8)` bytes; block `i` is bit `i % 8` (least
//! significant first) of byte `i / 8`; the padding bits of the last byte are
//! zero. A bitmap of another length, or with a padding bit set, is invalid.

use std::fmt;

/// A fixed-length set of block numbers, stored in its wire layout.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Bitmap {
    bytes: Vec<u8>,
    len: u64,
}

impl Bitmap {
    /// No block of `len`.
    pub fn empty(len: u64) -> Self {
        Self {
            bytes: vec![0; Self::wire_len(len)],
            len,
        }
    }

    /// Every block of `len`.
    pub fn full(len: u64) -> Self {
        let mut bitmap = Self {
            bytes: vec![0xff; Self::wire_len(len)],
            len,
        };
        bitmap.clear_padding();
        bitmap
    }

    /// The blocks in `range` (clipped to `len`).
    pub fn from_range(len: u64, range: std::ops::Range<u64>) -> Self {
        let mut bitmap = Self::empty(len);
        for block in range.start..range.end.min(len) {
            bitmap.insert(block);
        }
        bitmap
    }

    /// Bytes on the wire for a bitmap of `len` blocks.
    pub fn wire_len(len: u64) -> usize {
        usize::try_from(len.div_ceil(8)).unwrap_or(usize::MAX)
    }

    /// Parses the wire form of a bitmap of `len` blocks; `None` if the
    /// length is not `ceil(len / 8)` or a padding bit is set.
    pub fn decode(bytes: &[u8], len: u64) -> Option<Self> {
        if bytes.len() != Self::wire_len(len) {
            return None;
        }
        let bitmap = Self {
            bytes: bytes.to_vec(),
            len,
        };
        let mut cleared = bitmap.clone();
        cleared.clear_padding();
        (cleared == bitmap).then_some(bitmap)
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    /// The wire form, without copying.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of blocks the bitmap describes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `block` is in the set (false beyond `len`).
    pub fn contains(&self, block: u64) -> bool {
        block < self.len && self.bytes[(block / 8) as usize] & (1 << (block % 8)) != 0
    }

    /// Adds `block` (ignored beyond `len`).
    pub fn insert(&mut self, block: u64) {
        if block < self.len {
            self.bytes[(block / 8) as usize] |= 1 << (block % 8);
        }
    }

    /// Removes `block`.
    pub fn remove(&mut self, block: u64) {
        if block < self.len {
            self.bytes[(block / 8) as usize] &= !(1 << (block % 8));
        }
    }

    /// Blocks in the set.
    pub fn count(&self) -> u64 {
        self.bytes.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    /// Whether every block is in the set.
    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// Whether no block is in the set.
    pub fn is_clear(&self) -> bool {
        self.bytes.iter().all(|b| *b == 0)
    }

    /// Whether some block is in both sets.
    pub fn intersects(&self, other: &Bitmap) -> bool {
        self.bytes.iter().zip(&other.bytes).any(|(a, b)| a & b != 0)
    }

    /// Adds every block of `other` (of the same length).
    pub fn union_with(&mut self, other: &Bitmap) {
        for (a, b) in self.bytes.iter_mut().zip(&other.bytes) {
            *a |= b;
        }
    }

    /// The blocks not in the set.
    pub fn complement(&self) -> Bitmap {
        let mut out = Self {
            bytes: self.bytes.iter().map(|b| !b).collect(),
            len: self.len,
        };
        out.clear_padding();
        out
    }

    /// The blocks in the set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len).filter(|b| self.contains(*b))
    }

    fn clear_padding(&mut self) {
        let tail = self.len % 8;
        if tail != 0
            && let Some(last) = self.bytes.last_mut()
        {
            *last &= (1u8 << tail) - 1;
        }
    }
}

impl fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitmap({}/{}: ", self.count(), self.len)?;
        for block in 0..self.len.min(128) {
            f.write_str(if self.contains(block) { "1" } else { "0" })?;
        }
        if self.len > 128 {
            f.write_str("...")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_layout_is_lsb_first_with_zero_padding() {
        let mut bitmap = Bitmap::empty(11);
        bitmap.insert(0);
        bitmap.insert(9);
        assert_eq!(bitmap.encode(), vec![0b0000_0001, 0b0000_0010]);
        assert_eq!(Bitmap::full(11).encode(), vec![0xff, 0b0000_0111]);
        assert_eq!(Bitmap::full(16).encode(), vec![0xff, 0xff]);
        assert_eq!(Bitmap::decode(&bitmap.encode(), 11), Some(bitmap.clone()));
        assert_eq!(bitmap.iter().collect::<Vec<_>>(), [0, 9]);
        assert_eq!(bitmap.count(), 2);
    }

    #[test]
    fn hostile_wire_forms_are_refused() {
        // Too short, too long, a padding bit set.
        assert_eq!(Bitmap::decode(&[0xff], 11), None);
        assert_eq!(Bitmap::decode(&[0xff, 0x07, 0], 11), None);
        assert_eq!(Bitmap::decode(&[0xff, 0x08], 11), None);
        // Out-of-range blocks are never in the set and cannot be added.
        let mut bitmap = Bitmap::empty(3);
        bitmap.insert(99);
        assert!(!bitmap.contains(99) && bitmap.is_clear());
    }

    #[test]
    fn set_operations() {
        let mut a = Bitmap::from_range(20, 4..8);
        let b = Bitmap::from_range(20, 7..12);
        assert!(a.intersects(&b));
        a.remove(7);
        assert!(!a.intersects(&b));
        assert!(Bitmap::full(20).is_full());
        let mut both = Bitmap::from_range(20, 0..3);
        both.union_with(&Bitmap::from_range(20, 18..20));
        assert_eq!(both.iter().collect::<Vec<_>>(), [0, 1, 2, 18, 19]);
        assert_eq!(both.complement(), Bitmap::from_range(20, 3..18));
        assert_eq!(Bitmap::full(11).complement(), Bitmap::empty(11));
        assert!(!a.is_full() && !a.is_clear());
    }
}
