//! Live feeds: numbered segments that a feed source publishes, each signed
//! with the source's ed25519 key, which nodes receive over gossipsub
//! ([`crate::net::protocol::feed_topic`]), verify and keep in a bounded
//! buffer for the services that read them (the `sp2a:rps/feed` capability).
//! Imported by the sandbox (guests read) and the node (which fills them);
//! it imports neither, nor the network.
//!
//! A feed is named by its name and its source's key together ([`FeedId`]):
//! two sources cannot feed one another's viewers, whatever names they pick.
//! The manifest of a service that reads a feed declares both
//! (`<feed name="live" publisher="ed25519:…"/>`), so the key a segment must
//! verify against is signed into the package by the service's publisher.
//!
//! A segment's signature covers a domain tag, the feed's name, its number,
//! its time and the BLAKE3 of its data ([`Segment::verify`]): a segment of
//! one feed cannot pass for another feed's, nor its data be swapped. A
//! segment that does not verify is never stored, so a guest never sees it.
//!
//! The buffer ([`FeedBuffer`]) keeps the newest segments only: at most
//! [`KEEP_SEGMENTS`] of them and [`KEEP_BYTES`] bytes. A segment older than
//! what it holds is stale (a replay, or a straggler nobody will ask for),
//! one it holds already a duplicate; neither changes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::package::{PublisherKey, SecretKey};

/// Longest feed name.
pub const MAX_FEED_NAME: usize = 64;
/// Most data one segment may carry (a gossip message is at most 64 KiB,
/// envelope and signatures included).
pub const MAX_SEGMENT_DATA: usize = 60 * 1024;
/// Longest encoded segment accepted.
pub const MAX_SEGMENT_MESSAGE: usize = MAX_SEGMENT_DATA + 1024;
/// Segments a node keeps per feed ...
pub const KEEP_SEGMENTS: usize = 64;
/// ... and bytes of segment data.
pub const KEEP_BYTES: usize = 2 << 20;

const SIGNATURE_DOMAIN: &[u8] = b"sp2a-feed-segment-v1\0";

/// Whether `name` may name a feed: 1 to [`MAX_FEED_NAME`] lowercase ASCII
/// letters, digits, `-`, `_` and `.`, starting with a letter or digit.
pub fn is_feed_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FEED_NAME
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// A feed: its name and its source's key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FeedId {
    name: String,
    publisher: PublisherKey,
}

impl FeedId {
    /// The feed `name` by the source with key `publisher`; `None` when the
    /// name is not a feed name ([`is_feed_name`]).
    pub fn new(name: &str, publisher: &PublisherKey) -> Option<Self> {
        is_feed_name(name).then(|| Self {
            name: name.to_owned(),
            publisher: *publisher,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The source's key.
    pub fn publisher(&self) -> &PublisherKey {
        &self.publisher
    }
}

impl std::fmt::Display for FeedId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} from {}", self.name, self.publisher.short())
    }
}

/// Why a segment was not made or not accepted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("{0:?} is not a feed name (1-64 of a-z, 0-9, '-', '_', '.')")]
    Name(String),
    #[error("a segment of {0} bytes (at most {MAX_SEGMENT_DATA})")]
    TooLarge(usize),
    #[error("not a feed segment: {0}")]
    Malformed(String),
}

/// One segment of a feed, as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The feed's name.
    pub feed: String,
    /// Its number: the source counts up from 0.
    pub index: u64,
    /// When the source published it, in milliseconds since the Unix epoch.
    pub published_ms: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// The source's signature (see the module documentation).
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
}

fn signed_message(feed: &str, index: u64, published_ms: u64, data: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 1 + feed.len() + 16 + 32);
    message.extend_from_slice(SIGNATURE_DOMAIN);
    message.push(feed.len() as u8);
    message.extend_from_slice(feed.as_bytes());
    message.extend_from_slice(&index.to_be_bytes());
    message.extend_from_slice(&published_ms.to_be_bytes());
    message.extend_from_slice(blake3::hash(data).as_bytes());
    message
}

impl Segment {
    /// Segment `index` of feed `feed`, signed with the source's key.
    pub fn sign(
        key: &SecretKey,
        feed: &str,
        index: u64,
        published_ms: u64,
        data: Vec<u8>,
    ) -> Result<Self, SegmentError> {
        if !is_feed_name(feed) {
            return Err(SegmentError::Name(feed.to_owned()));
        }
        if data.len() > MAX_SEGMENT_DATA {
            return Err(SegmentError::TooLarge(data.len()));
        }
        let signature = key.sign(&signed_message(feed, index, published_ms, &data));
        Ok(Self {
            feed: feed.to_owned(),
            index,
            published_ms,
            data,
            signature,
        })
    }

    /// Whether the source with key `publisher` signed this segment.
    pub fn verify(&self, publisher: &PublisherKey) -> bool {
        is_feed_name(&self.feed)
            && publisher.verify(
                &signed_message(&self.feed, self.index, self.published_ms, &self.data),
                &self.signature,
            )
    }

    pub fn encode(&self) -> Vec<u8> {
        cbor4ii::serde::to_vec(Vec::new(), self).expect("a segment always encodes")
    }

    /// Decodes a segment, refusing one longer than a gossip message, with a
    /// bad feed name or too much data. (The signature is checked by
    /// [`Segment::verify`], against the key the reader expects.)
    pub fn decode(bytes: &[u8]) -> Result<Self, SegmentError> {
        if bytes.len() > MAX_SEGMENT_MESSAGE {
            return Err(SegmentError::TooLarge(bytes.len()));
        }
        let segment: Segment = cbor4ii::serde::from_slice(bytes)
            .map_err(|e| SegmentError::Malformed(e.to_string()))?;
        if !is_feed_name(&segment.feed) {
            return Err(SegmentError::Name(segment.feed));
        }
        if segment.data.len() > MAX_SEGMENT_DATA {
            return Err(SegmentError::TooLarge(segment.data.len()));
        }
        Ok(segment)
    }
}

/// What [`FeedBuffer::insert`] did with a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Kept (older segments may have made room for it).
    Kept,
    /// Held already.
    Duplicate,
    /// Older than every segment held while the buffer is full.
    Stale,
}

/// The newest segments of one feed, bounded in count and bytes.
#[derive(Debug, Default)]
pub struct FeedBuffer {
    segments: BTreeMap<u64, Arc<Segment>>,
    bytes: usize,
}

impl FeedBuffer {
    /// Keeps a verified segment, dropping the oldest ones beyond
    /// [`KEEP_SEGMENTS`] or [`KEEP_BYTES`].
    pub fn insert(&mut self, segment: Segment) -> Inserted {
        if self.segments.contains_key(&segment.index) {
            return Inserted::Duplicate;
        }
        let full =
            self.segments.len() >= KEEP_SEGMENTS || self.bytes + segment.data.len() > KEEP_BYTES;
        if full && self.oldest().is_some_and(|oldest| segment.index < oldest) {
            return Inserted::Stale;
        }
        self.bytes += segment.data.len();
        self.segments.insert(segment.index, Arc::new(segment));
        while self.segments.len() > KEEP_SEGMENTS || self.bytes > KEEP_BYTES {
            let Some((_, dropped)) = self.segments.pop_first() else {
                break;
            };
            self.bytes -= dropped.data.len();
        }
        Inserted::Kept
    }

    pub fn latest(&self) -> Option<u64> {
        self.segments.last_key_value().map(|(index, _)| *index)
    }

    pub fn oldest(&self) -> Option<u64> {
        self.segments.first_key_value().map(|(index, _)| *index)
    }

    pub fn get(&self, index: u64) -> Option<Arc<Segment>> {
        self.segments.get(&index).cloned()
    }

    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes of segment data held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The feeds one node holds: a cheap handle, shared by the node that fills
/// them and the sandbox that lets granted guests read them.
#[derive(Clone, Debug, Default)]
pub struct Feeds {
    buffers: Arc<Mutex<HashMap<FeedId, FeedBuffer>>>,
}

/// One feed's state, for status and tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FeedState {
    pub segments: usize,
    pub bytes: usize,
    pub oldest: Option<u64>,
    pub latest: Option<u64>,
}

impl Feeds {
    /// Checks a segment received for `feed` against its source's key and
    /// keeps it. A segment that does not verify, or names another feed, is
    /// refused and never stored.
    pub fn receive(&self, feed: &FeedId, segment: Segment) -> Result<Inserted, SegmentError> {
        if segment.feed != feed.name() {
            return Err(SegmentError::Malformed(format!(
                "a segment of feed {:?} on the topic of {:?}",
                segment.feed,
                feed.name()
            )));
        }
        if !segment.verify(feed.publisher()) {
            return Err(SegmentError::Malformed(format!(
                "segment {} of {feed} is not signed by its source",
                segment.index
            )));
        }
        Ok(self
            .buffers
            .lock()
            .expect("feeds lock")
            .entry(feed.clone())
            .or_default()
            .insert(segment))
    }

    /// Stops holding `feed` (no service here reads it any more).
    pub fn forget(&self, feed: &FeedId) {
        self.buffers.lock().expect("feeds lock").remove(feed);
    }

    /// Reads one feed's buffer.
    pub fn read<T>(&self, feed: &FeedId, read: impl FnOnce(Option<&FeedBuffer>) -> T) -> T {
        read(self.buffers.lock().expect("feeds lock").get(feed))
    }

    /// The state of one feed (`None`: nothing received).
    pub fn state(&self, feed: &FeedId) -> Option<FeedState> {
        self.read(feed, |buffer| {
            buffer.map(|b| FeedState {
                segments: b.len(),
                bytes: b.bytes(),
                oldest: b.oldest(),
                latest: b.latest(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(key: &SecretKey, index: u64, len: usize) -> Segment {
        Segment::sign(
            key,
            "live",
            index,
            1_700_000_000_000 + index,
            vec![index as u8; len],
        )
        .expect("signs")
    }

    #[test]
    fn a_segment_verifies_only_as_it_was_signed() {
        let source = SecretKey::generate();
        let other = SecretKey::generate();
        let good = segment(&source, 7, 100);
        let decoded = Segment::decode(&good.encode()).unwrap();
        assert_eq!(decoded, good);
        assert!(decoded.verify(&source.public()));
        assert!(!decoded.verify(&other.public()), "another source's key");
        for tamper in [
            |s: &mut Segment| s.index += 1,
            |s: &mut Segment| s.published_ms += 1,
            |s: &mut Segment| s.data[0] ^= 1,
            |s: &mut Segment| s.feed = "live2".into(),
            |s: &mut Segment| s.signature[5] ^= 1,
        ] {
            let mut bad = good.clone();
            tamper(&mut bad);
            assert!(!bad.verify(&source.public()), "{bad:?}");
        }
    }

    #[test]
    fn hostile_encodings_are_refused() {
        let source = SecretKey::generate();
        assert_eq!(
            Segment::sign(&source, "Live!", 0, 0, vec![]),
            Err(SegmentError::Name("Live!".into()))
        );
        assert_eq!(
            Segment::sign(&source, "live", 0, 0, vec![0; MAX_SEGMENT_DATA + 1]),
            Err(SegmentError::TooLarge(MAX_SEGMENT_DATA + 1))
        );
        assert!(Segment::decode(b"\xff\x00garbage").is_err());
        assert!(Segment::decode(&vec![0u8; MAX_SEGMENT_MESSAGE + 1]).is_err());
        let mut named = segment(&source, 0, 1);
        named.feed = "../etc".into();
        assert!(matches!(
            Segment::decode(&named.encode()),
            Err(SegmentError::Name(_))
        ));
    }

    #[test]
    fn a_feed_keeps_only_segments_its_source_signed() {
        let source = SecretKey::generate();
        let forger = SecretKey::generate();
        let feeds = Feeds::default();
        let feed = FeedId::new("live", &source.public()).unwrap();
        assert!(feeds.receive(&feed, segment(&forger, 0, 10)).is_err());
        let mut swapped = segment(&source, 1, 10);
        swapped.data = vec![0xee; 10];
        assert!(feeds.receive(&feed, swapped).is_err());
        let mut other = Segment::sign(&source, "other", 2, 0, vec![1]).unwrap();
        assert!(
            feeds.receive(&feed, other.clone()).is_err(),
            "another feed's"
        );
        other.feed = "live".into();
        assert!(feeds.receive(&feed, other).is_err(), "renamed");
        assert_eq!(feeds.state(&feed), None, "nothing stored");
        assert_eq!(
            feeds.receive(&feed, segment(&source, 3, 10)),
            Ok(Inserted::Kept)
        );
        assert_eq!(
            feeds.receive(&feed, segment(&source, 3, 10)),
            Ok(Inserted::Duplicate)
        );
        let state = feeds.state(&feed).unwrap();
        assert_eq!((state.segments, state.latest), (1, Some(3)));
    }

    #[test]
    fn the_buffer_stays_bounded_in_count_and_bytes() {
        let source = SecretKey::generate();
        let mut buffer = FeedBuffer::default();
        for index in 0..1000 {
            buffer.insert(segment(&source, index, 1000));
            assert!(buffer.len() <= KEEP_SEGMENTS);
        }
        assert_eq!(buffer.len(), KEEP_SEGMENTS);
        assert_eq!(buffer.latest(), Some(999));
        assert_eq!(buffer.oldest(), Some(1000 - KEEP_SEGMENTS as u64));
        assert_eq!(buffer.insert(segment(&source, 3, 1000)), Inserted::Stale);
        assert!(buffer.get(3).is_none());
        // Large segments: the byte bound holds first.
        let mut buffer = FeedBuffer::default();
        for index in 0..200 {
            buffer.insert(segment(&source, index, MAX_SEGMENT_DATA));
            assert!(buffer.bytes() <= KEEP_BYTES, "{}", buffer.bytes());
        }
        assert_eq!(buffer.len(), KEEP_BYTES / MAX_SEGMENT_DATA);
        assert_eq!(buffer.latest(), Some(199));
        // A late segment that fits among the held ones is kept.
        let mut buffer = FeedBuffer::default();
        buffer.insert(segment(&source, 10, 1));
        assert_eq!(buffer.insert(segment(&source, 8, 1)), Inserted::Kept);
        assert_eq!((buffer.oldest(), buffer.latest()), (Some(8), Some(10)));
    }

    #[test]
    fn feed_ids_tell_sources_apart() {
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        let live_a = FeedId::new("live", &a).unwrap();
        assert_ne!(live_a, FeedId::new("live", &b).unwrap());
        assert_eq!(live_a.name(), "live");
        assert_eq!(live_a.publisher(), &a);
        assert!(FeedId::new("", &a).is_none());
        assert!(FeedId::new(&"x".repeat(65), &a).is_none());
        assert!(FeedId::new("Live", &a).is_none());
        assert!(FeedId::new("-live", &a).is_none());
    }
}
