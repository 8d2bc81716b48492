//! Kademlia keys for services and packages, as CIDv1 bytes.
//!
//! * a service name: `CIDv1(raw, blake3-256("sp2a:rps:" + name))`, so
//!   consumers find providers of every version of a service;
//! * a package: `CIDv1(raw, blake3-256 multihash whose digest is the content
//!   id)`, the content id being BLAKE3 of the package's advert.
//!
//! A CIDv1 is `varint(1) varint(codec) multihash`; with the raw codec
//! (0x55) and the BLAKE3 multihash (code 0x1e, 32-byte digest) every field
//! fits one varint byte: `01 55 1e 20 <32 bytes>`.

use libp2p::kad::RecordKey;

const CID_V1: u8 = 0x01;
const RAW_CODEC: u8 = 0x55;
const BLAKE3_MULTIHASH: u8 = 0x1e;
const DIGEST_LEN: u8 = 32;
const NAME_DOMAIN: &[u8] = b"sp2a:rps:";

/// CIDv1 bytes for a BLAKE3 digest.
pub fn cid_bytes(digest: &[u8; 32]) -> [u8; 36] {
    let mut out = [0u8; 36];
    out[..4].copy_from_slice(&[CID_V1, RAW_CODEC, BLAKE3_MULTIHASH, DIGEST_LEN]);
    out[4..].copy_from_slice(digest);
    out
}

/// The provider-record key of a service name.
pub fn service_key(name: &str) -> RecordKey {
    let mut hasher = blake3::Hasher::new();
    hasher.update(NAME_DOMAIN);
    hasher.update(name.as_bytes());
    RecordKey::new(&cid_bytes(hasher.finalize().as_bytes()))
}

/// The provider-record key of a package content id.
pub fn package_key(content_id: &[u8; 32]) -> RecordKey {
    RecordKey::new(&cid_bytes(content_id))
}

/// The CID as text (multibase base32, lowercase, `b` prefix), for display.
pub fn cid_text(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::from("b");
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_cidv1_raw_blake3() {
        let key = service_key("hello");
        let bytes = key.as_ref();
        assert_eq!(&bytes[..4], &[0x01, 0x55, 0x1e, 0x20]);
        assert_eq!(bytes.len(), 36);
        let mut expected = blake3::Hasher::new();
        expected.update(b"sp2a:rps:hello");
        assert_eq!(&bytes[4..], expected.finalize().as_bytes());
        assert_ne!(service_key("hello"), service_key("hellO"));
        let id = [7u8; 32];
        assert_eq!(&package_key(&id).as_ref()[4..], &id);
    }

    #[test]
    fn base32_text() {
        // CIDv1 raw of the BLAKE3 multihash of "" as IPFS tools print it.
        let digest = blake3::hash(b"");
        let text = cid_text(&cid_bytes(digest.as_bytes()));
        assert!(text.starts_with("bafkr4i"), "{text}");
    }
}
