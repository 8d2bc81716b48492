//! sp2a service for the live-streaming scenario: it carries a 2 MiB media
//! sample and serves it in segments. Every peer that pulls the service can
//! serve the stream to viewers, so the stream scales with its audience.

sp2a_guest::service!({
    path: ["../../wit", "wit"],
    world: "sp2a:live/channel",
});

use exports::sp2a::live::segments::{Guest, StreamInfo};

static SAMPLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sample.wav"));
const SEGMENT_BYTES: usize = 64 * 1024;

struct Stream;

fn segment_bytes(index: u32) -> Result<&'static [u8], String> {
    let start = index as usize * SEGMENT_BYTES;
    if start >= SAMPLE.len() {
        return Err(format!(
            "segment {index} is out of range (the stream has {} segments)",
            SAMPLE.len().div_ceil(SEGMENT_BYTES)
        ));
    }
    Ok(&SAMPLE[start..(start + SEGMENT_BYTES).min(SAMPLE.len())])
}

fn u32_at(offset: usize) -> u32 {
    u32::from_le_bytes(SAMPLE[offset..offset + 4].try_into().expect("4 bytes"))
}

impl Guest for Stream {
    fn info() -> StreamInfo {
        let sample_rate = u32_at(24);
        let data_bytes = u32_at(40);
        StreamInfo {
            title: "sp2a test card: I-vi-IV-V in C".into(),
            format: "RIFF WAVE, PCM 16-bit".into(),
            sample_rate,
            channels: u32::from(u16::from_le_bytes([SAMPLE[22], SAMPLE[23]])),
            duration_ms: (u64::from(data_bytes) * 1000 / (u64::from(sample_rate) * 2)) as u32,
            bytes: SAMPLE.len() as u32,
            segment_bytes: SEGMENT_BYTES as u32,
            segments: SAMPLE.len().div_ceil(SEGMENT_BYTES) as u32,
            blake3: blake3::hash(SAMPLE).to_hex().to_string(),
        }
    }

    fn segment(index: u32) -> Result<Vec<u8>, String> {
        segment_bytes(index).map(<[u8]>::to_vec)
    }

    fn segment_digest(index: u32) -> Result<String, String> {
        segment_bytes(index).map(|s| blake3::hash(s).to_hex().to_string())
    }

    fn segment_hex(index: u32, len: u32) -> Result<String, String> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        segment_bytes(index).map(|s| {
            let s = &s[..s.len().min(len as usize)];
            let mut text = String::with_capacity(s.len() * 2);
            for byte in s {
                text.push(HEX[usize::from(byte >> 4)] as char);
                text.push(HEX[usize::from(byte & 15)] as char);
            }
            text
        })
    }
}

export!(Stream);
