//! sp2a service for the live-streaming scenario with a real live feed: a
//! feed source publishes signed segments, the host of every peer running
//! this service verifies and buffers them (the `sp2a:rps/feed`
//! capability), and the service serves the newest ones and a playlist to
//! viewers. When viewers grow, peers pull the service and serve the feed
//! too.

sp2a_guest::service!({
    path: ["../../wit", "wit"],
    world: "sp2a:live-feed/live",
});

use exports::sp2a::live_feed::channel::Guest;
use sp2a_guest::feed;

/// The feed this channel serves, as its manifest declares it.
const FEED: &str = "live";
/// Segments listed in the playlist (a live window).
const WINDOW: u64 = 6;

struct Live;

fn fail(e: feed::Error) -> String {
    match e {
        feed::Error::NotGranted => format!("this node does not grant the feed {FEED}"),
    }
}

fn latest() -> Result<u64, String> {
    feed::latest(FEED)
        .map_err(fail)?
        .ok_or_else(|| format!("no segment of feed {FEED} yet"))
}

fn segment(index: u64) -> Result<feed::Segment, String> {
    feed::segment(FEED, index)
        .map_err(fail)?
        .ok_or_else(|| format!("segment {index} of feed {FEED} is not held"))
}

impl Guest for Live {
    fn playlist() -> Result<String, String> {
        let latest = latest()?;
        let oldest = feed::oldest(FEED).map_err(fail)?.unwrap_or(latest);
        let first = oldest.max(latest.saturating_sub(WINDOW - 1));
        let segments: Vec<feed::Segment> = (first..=latest)
            .filter_map(|i| feed::segment(FEED, i).ok().flatten())
            .collect();
        // Each segment lasts until the next one's time; the newest as
        // long as the one before it (1 s when alone).
        let mut durations: Vec<f64> = segments
            .windows(2)
            .map(|w| w[1].published_ms.saturating_sub(w[0].published_ms) as f64 / 1000.0)
            .collect();
        durations.push(durations.last().copied().unwrap_or(1.0));
        let target = durations.iter().fold(1.0f64, |a, &b| a.max(b)).ceil() as u64;
        let mut text = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
            segments.first().map_or(first, |s| s.index)
        );
        for (segment, duration) in segments.iter().zip(durations) {
            text.push_str(&format!("#EXTINF:{duration:.3},\nsegment/{}\n", segment.index));
        }
        Ok(text)
    }

    fn latest() -> Result<u64, String> {
        latest()
    }

    fn segment(index: u64) -> Result<Vec<u8>, String> {
        segment(index).map(|s| s.data)
    }

    fn segment_hex(index: u64, len: u32) -> Result<String, String> {
        hex(&segment(index)?.data, len)
    }

    fn newest_hex(len: u32) -> Result<String, String> {
        hex(&segment(latest()?)?.data, len)
    }
}

/// The first `len` bytes of `data` as lowercase hex.
fn hex(data: &[u8], len: u32) -> Result<String, String> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let data = &data[..data.len().min(len as usize)];
    let mut text = String::with_capacity(data.len() * 2);
    for byte in data {
        text.push(HEX[usize::from(byte >> 4)] as char);
        text.push(HEX[usize::from(byte & 15)] as char);
    }
    Ok(text)
}

export!(Live);
