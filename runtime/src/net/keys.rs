//! Kademlia keys for services and packages.
//!
//! Every item is named by a CIDv1 (raw codec, BLAKE3 multihash):
//! * a service name: `CIDv1(raw, blake3-256("sp2a:rps:" + name))`, so
//!   consumers find providers of every version of a service;
//! * a package: `CIDv1(raw, blake3-256 multihash whose digest is the content
//!   id)`, the content id being BLAKE3 of the package's advert.
//!
//! A CIDv1 is `varint(1) varint(codec) multihash`; with the raw codec
//! (0x55) and the BLAKE3 multihash (code 0x1e, 32-byte digest) every field
//! fits one varint byte: `01 55 1e 20 <32 bytes>`.
//!
//! Provider records are keyed, like in go-libp2p, js-libp2p and IPFS, by
//! the CID's **multihash bytes** (`1e 20 <32 bytes>`), not the whole CID:
//! a standard Kademlia client that asks for the providers of the CID (on
//! the `/sp2a/kad/1.0.0` protocol) finds sp2a nodes. People see the CID
//! ([`key_text`]).

use libp2p::kad::RecordKey;

const CID_V1: u8 = 0x01;
const RAW_CODEC: u8 = 0x55;
const BLAKE3_MULTIHASH: u8 = 0x1e;
const DIGEST_LEN: u8 = 32;
const NAME_DOMAIN: &[u8] = b"sp2a:rps:";
const STANDBY_DOMAIN: &[u8] = b"sp2a:standby:";
const FEED_DOMAIN: &[u8] = b"sp2a:feed:";
const ADVICE_DOMAIN: &[u8] = b"sp2a:advice:";

/// CIDv1 bytes for a BLAKE3 digest.
pub fn cid_bytes(digest: &[u8; 32]) -> [u8; 36] {
    let mut out = [0u8; 36];
    out[..4].copy_from_slice(&[CID_V1, RAW_CODEC, BLAKE3_MULTIHASH, DIGEST_LEN]);
    out[4..].copy_from_slice(digest);
    out
}

/// The multihash bytes of a BLAKE3 digest: the CID without its version
/// and codec.
pub fn multihash_bytes(digest: &[u8; 32]) -> [u8; 34] {
    let mut out = [0u8; 34];
    out[..2].copy_from_slice(&[BLAKE3_MULTIHASH, DIGEST_LEN]);
    out[2..].copy_from_slice(digest);
    out
}

/// The provider-record key of a service name.
pub fn service_key(name: &str) -> RecordKey {
    let mut hasher = blake3::Hasher::new();
    hasher.update(NAME_DOMAIN);
    hasher.update(name.as_bytes());
    RecordKey::new(&multihash_bytes(hasher.finalize().as_bytes()))
}

/// The provider-record key under which standby nodes of service `name`
/// announce themselves: nodes that offer to host it when its providers ask
/// (`CIDv1(raw, blake3-256("sp2a:standby:" + name))`).
pub fn standby_key(name: &str) -> RecordKey {
    let mut hasher = blake3::Hasher::new();
    hasher.update(STANDBY_DOMAIN);
    hasher.update(name.as_bytes());
    RecordKey::new(&multihash_bytes(hasher.finalize().as_bytes()))
}

/// The provider-record key under which a live feed's source and the nodes
/// holding the feed announce themselves
/// (`CIDv1(raw, blake3-256("sp2a:feed:" + source key + name))`).
pub fn feed_key(name: &str, publisher: &[u8; 32]) -> RecordKey {
    let mut hasher = blake3::Hasher::new();
    hasher.update(FEED_DOMAIN);
    hasher.update(publisher);
    hasher.update(name.as_bytes());
    RecordKey::new(&multihash_bytes(hasher.finalize().as_bytes()))
}

/// The provider-record key under which the consumers that evaluated
/// `provider` as a provider of service `name` announce themselves as its
/// advisors (`CIDv1(raw, blake3-256("sp2a:advice:" + provider id bytes +
/// name))`; a peer id's bytes are self-delimiting).
pub fn advice_key(name: &str, provider: &libp2p::PeerId) -> RecordKey {
    let mut hasher = blake3::Hasher::new();
    hasher.update(ADVICE_DOMAIN);
    hasher.update(&provider.to_bytes());
    hasher.update(name.as_bytes());
    RecordKey::new(&multihash_bytes(hasher.finalize().as_bytes()))
}

/// The provider-record key of a package content id.
pub fn package_key(content_id: &[u8; 32]) -> RecordKey {
    RecordKey::new(&multihash_bytes(content_id))
}

/// A provider-record key as people see it: the CID text for sp2a keys
/// (BLAKE3 multihashes), hexadecimal for any other key.
pub fn key_text(key: &RecordKey) -> String {
    let bytes = key.as_ref();
    match <&[u8; 34]>::try_from(bytes) {
        Ok(multihash) if multihash[..2] == [BLAKE3_MULTIHASH, DIGEST_LEN] => {
            let digest: &[u8; 32] = multihash[2..].try_into().expect("34 - 2 bytes");
            cid_text(&cid_bytes(digest))
        }
        _ => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
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

    /// The key bytes are exactly the multihash that the multiformats
    /// implementation libp2p uses computes for the digest, which is how
    /// other Kademlia implementations key the providers of a CID.
    #[test]
    fn keys_are_the_multihash_of_the_cid() {
        let digest = *blake3::hash(b"sp2a:rps:hello").as_bytes();
        let independent = libp2p::multihash::Multihash::<64>::wrap(0x1e, &digest)
            .unwrap()
            .to_bytes();
        assert_eq!(service_key("hello").as_ref(), independent.as_slice());
        assert_eq!(service_key("hello").as_ref().len(), 34);
        assert_ne!(service_key("hello"), service_key("hellO"));
        let id = [7u8; 32];
        let independent = libp2p::multihash::Multihash::<64>::wrap(0x1e, &id)
            .unwrap()
            .to_bytes();
        assert_eq!(package_key(&id).as_ref(), independent.as_slice());
        // The CID people see wraps the same multihash.
        assert_eq!(&cid_bytes(&id)[2..], package_key(&id).as_ref());
        assert!(key_text(&package_key(&id)).starts_with("bafkr4i"));
        assert_eq!(key_text(&RecordKey::new(&[0xab, 0x01])), "ab01");
    }

    #[test]
    fn base32_text() {
        // CIDv1 raw of the BLAKE3 multihash of "" as IPFS tools print it.
        let digest = blake3::hash(b"");
        let text = cid_text(&cid_bytes(digest.as_bytes()));
        assert!(text.starts_with("bafkr4i"), "{text}");
    }
}
