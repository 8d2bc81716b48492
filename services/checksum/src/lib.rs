//! sp2a service computing BLAKE3 and SHA-256 digests.

use sha2::Digest as _;

sp2a_guest::service!({
    path: ["../../wit", "wit"],
    world: "sp2a:checksum/checksum",
});

struct Checksum;

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn sha256_hex(data: &[u8]) -> String {
    to_hex(&sha2::Sha256::digest(data))
}

impl exports::sp2a::checksum::digest::Guest for Checksum {
    fn blake3(data: Vec<u8>) -> String {
        blake3::hash(&data).to_hex().to_string()
    }

    fn sha256(data: Vec<u8>) -> String {
        sha256_hex(&data)
    }

    fn blake3_text(text: String) -> String {
        blake3::hash(text.as_bytes()).to_hex().to_string()
    }

    fn sha256_text(text: String) -> String {
        sha256_hex(text.as_bytes())
    }

    fn blake3_chain(data: Vec<u8>, rounds: u32) -> String {
        let mut digest = blake3::hash(&data);
        for _ in 0..rounds {
            digest = blake3::hash(digest.as_bytes());
        }
        digest.to_hex().to_string()
    }
}

export!(Checksum);
