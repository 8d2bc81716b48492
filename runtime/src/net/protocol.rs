//! The sp2a request-response protocols. Every message is CBOR, versioned by
//! its protocol name, size-bounded by the codec and validated on receipt:
//! nothing from a peer is trusted.
//!
//! * `/sp2a/advert/1`: fetch the signed adverts a provider holds for a
//!   service name or a content id. Request ≤ [`MAX_ADVERT_REQUEST`] bytes,
//!   response ≤ [`MAX_ADVERT_RESPONSE`] bytes, at most [`MAX_ADVERTS`]
//!   adverts. The receiver parses and signature-checks each advert itself.
//! * `/sp2a/transfer/1`: ask which 16 KiB blocks of a component a peer holds
//!   (a bitmap; peers serve blocks while still downloading), or fetch a range
//!   of blocks as a BLAKE3 verified-streaming (bao) encoding against the
//!   component hash of the advert. A provider with upload slots serves one
//!   download per slot and queues the other requests; `Leave` gives a slot
//!   (or a place in the queue) back. Bitmaps (`bitmap`, `wanted`) are in the
//!   wire format of [`Bitmap`](crate::blocks::Bitmap): `ceil(blocks / 8)` bytes, block `i` at bit
//!   `i % 8` of byte `i / 8`, zero padding; anything else is refused. Answers may name a few other peers
//!   fetching the same package (peer exchange), which the receiver treats as
//!   hints, like any other unverified provider. Request ≤ [`MAX_TRANSFER_REQUEST`] bytes, at most
//!   [`MAX_BLOCKS_PER_REQUEST`] blocks; response ≤ [`MAX_TRANSFER_RESPONSE`]
//!   bytes. The response repeats the component size it serves; a size other
//!   than the advert's ends the attempt.
//! * `/sp2a/invoke/1`: call a function of a service the peer provides.
//!   Request ≤ [`MAX_INVOKE_REQUEST`] bytes, response ≤
//!   [`MAX_INVOKE_RESPONSE`] bytes. `Busy` when the provider is at its
//!   concurrency limit, `Denied` when the caller is not on the service's
//!   allow-list: explicit answers, never silent drops.
//!
//! * `/sp2a/solicit/1`: a provider of a service asks a standby node to pull
//!   one package of it and provide it (the paper's solicited pull). The
//!   request is authenticated by the connection it comes on (noise: the
//!   sender is the peer id the standby sees), and the standby checks that id
//!   against the service's provider records. Request ≤
//!   [`MAX_SOLICIT_REQUEST`] bytes, response ≤ [`MAX_SOLICIT_RESPONSE`]
//!   bytes. `Accepted` only once the standby's pull has passed its policy's
//!   admission; `Refused` with the reason; `Busy` beyond the standby's rate.
//!
//! * `/sp2a/advice/1`: ask an advisor (a consumer that announced itself
//!   under [`advice_key`](super::keys::advice_key)) for its evaluations of
//!   a provider of a service: at most [`MAX_ADVICE_EVALUATIONS`] signed
//!   evaluations (see [`evidence`](super::evidence)), newest last. Request
//!   ≤ [`MAX_ADVICE_REQUEST`] bytes, response ≤ [`MAX_ADVICE_RESPONSE`]
//!   bytes. The receiver opens and checks every evaluation and refuses the
//!   whole answer if one is not the advisor's own, with a valid receipt
//!   from that provider for that service.
//!
//! * Load reports, over gossipsub: the providers of a service publish a
//!   [`LoadReport`] about once a second on the service's topic
//!   ([`load_topic`]: `/sp2a/load/1/<service>/<publisher key hex>`).
//!   Gossipsub signs each message with its author's peer key and refuses
//!   unsigned or badly signed ones (strict validation); the receiving node
//!   then checks each report before it is delivered or forwarded (see the
//!   node's replication role). A report is CBOR, at most
//!   [`MAX_LOAD_REPORT`] bytes, its numbers finite and in range
//!   ([`LoadReport::decode`]). A gossip message is at most
//!   [`MAX_GOSSIP_MESSAGE`] bytes.
//!
//! Lists are bounded while they are decoded ([`at_most`]), not after: a
//! response of a million empty byte strings is refused at the first one too
//! many, before it becomes a million vectors.

use serde::{Deserialize, Serialize};

pub use crate::blocks::{BLOCK_SIZE, MAX_BLOCKS_PER_REQUEST};

/// Most adverts one advert response may carry.
pub const MAX_ADVERTS: usize = 16;

pub const MAX_ADVERT_REQUEST: u64 = 1024;
pub const MAX_ADVERT_RESPONSE: u64 = (MAX_ADVERTS as u64) * (80 * 1024);
/// Room for a `Want` bitmap of the largest component (256 MiB in 16 KiB
/// blocks: 2 KiB) and framing.
pub const MAX_TRANSFER_REQUEST: u64 = 4096;
/// Data plus proof (at most 64 bytes per tree level per block) plus framing.
pub const MAX_TRANSFER_RESPONSE: u64 =
    (MAX_BLOCKS_PER_REQUEST as u64) * (BLOCK_SIZE + 64 * 48) + 4096;
pub const MAX_INVOKE_REQUEST: u64 = 256 * 1024;
pub const MAX_INVOKE_RESPONSE: u64 = 1024 * 1024;
pub const MAX_SOLICIT_REQUEST: u64 = 1024;
pub const MAX_SOLICIT_RESPONSE: u64 = (MAX_TEXT as u64) + 64;
/// Longest a provider holds a request that waits in line for an upload
/// slot (a request may ask for less).
pub const MAX_QUEUE_HOLD: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest service name or error text accepted in a message.
pub const MAX_TEXT: usize = 4096;

/// Largest gossipsub message sent or accepted.
pub const MAX_GOSSIP_MESSAGE: usize = 64 * 1024;
/// Largest load report accepted.
pub const MAX_LOAD_REPORT: usize = 256;
/// Largest limit L a report may state.
pub const MAX_REPORTED_LIMIT: u32 = 1 << 16;

pub const ADVERT_PROTOCOL: &str = "/sp2a/advert/1";
pub const TRANSFER_PROTOCOL: &str = "/sp2a/transfer/1";
pub const INVOKE_PROTOCOL: &str = "/sp2a/invoke/1";
pub const SOLICIT_PROTOCOL: &str = "/sp2a/solicit/1";
pub const ADVICE_PROTOCOL: &str = "/sp2a/advice/1";

/// Most evaluations one advice answer may carry.
pub const MAX_ADVICE_EVALUATIONS: usize = 32;
pub const MAX_ADVICE_REQUEST: u64 = 1024;
pub const MAX_ADVICE_RESPONSE: u64 =
    (MAX_ADVICE_EVALUATIONS as u64) * (super::evidence::MAX_EVALUATION as u64 + 16) + 64;

/// Asks an advisor what it has seen of `provider` serving `service`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdviceRequest {
    pub service: String,
    /// The provider's peer id bytes.
    #[serde(with = "serde_bytes")]
    pub provider: Vec<u8>,
}

/// An advisor's answer to an [`AdviceRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdviceResponse {
    /// Its signed evaluations of that provider, oldest first (none when it
    /// has none).
    Evaluations(
        #[serde(deserialize_with = "at_most::<_, _, MAX_ADVICE_EVALUATIONS>")]
        Vec<serde_bytes::ByteBuf>,
    ),
    /// Asked too often by this peer, or the advisor's queue of peers'
    /// requests is full: ask later.
    Busy,
}

/// A provider asks a standby node to pull package `content_id` of service
/// `service` and provide it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SolicitRequest {
    pub service: String,
    #[serde(with = "serde_bytes")]
    pub content_id: [u8; 32],
}

/// A standby's answer to a [`SolicitRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SolicitResponse {
    /// Pulling it (its policy admits it), or providing it already.
    Accepted,
    /// Not done, and why.
    Refused(String),
    /// Asked too often; ask later or another standby.
    Busy,
}

/// Every live feed's gossipsub topic starts with this.
pub const FEED_TOPIC_PREFIX: &str = "/sp2a/feed/1/";

/// The gossipsub topic of live feed `feed` by the source with key bytes
/// `publisher`: `/sp2a/feed/1/<feed>/<publisher key hex>`. Its messages
/// are [`crate::feed::Segment`]s.
pub fn feed_topic(feed: &str, publisher: &[u8; 32]) -> String {
    format!("{FEED_TOPIC_PREFIX}{feed}/{}", hex::encode(publisher))
}

/// The gossipsub topic on which the providers of `service` by the
/// publisher with key bytes `publisher` share their load.
pub fn load_topic(service: &str, publisher: &[u8; 32]) -> String {
    format!("/sp2a/load/1/{service}/{}", hex::encode(publisher))
}

/// What a provider says about its load over the last second (see
/// [`crate::replication::Load`], which it becomes once checked).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The package it runs.
    #[serde(with = "serde_bytes")]
    pub content_id: [u8; 32],
    /// When it was made, in milliseconds since the Unix epoch (replays and
    /// reordering are told apart by it).
    pub at_ms: u64,
    pub calls_per_s: f32,
    pub in_flight: u32,
    pub limit: u32,
    pub busy_per_s: f32,
    pub p95_us: u64,
    /// Fraction of its upload limit in use.
    pub upload: f32,
    pub pinned: bool,
}

impl LoadReport {
    pub fn encode(&self) -> Vec<u8> {
        cbor4ii::serde::to_vec(Vec::new(), self).expect("a report always encodes")
    }

    /// Decodes a report, refusing one that is too long, malformed, or has
    /// numbers out of range (negative or not finite rates, more calls in
    /// flight than its limit, a limit beyond [`MAX_REPORTED_LIMIT`], an
    /// upload fraction outside 0..=1).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_LOAD_REPORT {
            return Err(format!(
                "a load report of {} bytes (at most {MAX_LOAD_REPORT})",
                bytes.len()
            ));
        }
        let report: LoadReport =
            cbor4ii::serde::from_slice(bytes).map_err(|e| format!("not a load report: {e}"))?;
        let rate = |x: f32| x.is_finite() && (0.0..=1e9).contains(&x);
        if !rate(report.calls_per_s) || !rate(report.busy_per_s) {
            return Err("a load report with an impossible rate".into());
        }
        if report.limit > MAX_REPORTED_LIMIT || report.in_flight > report.limit {
            return Err(format!(
                "a load report of {} calls in flight against a limit of {}",
                report.in_flight, report.limit
            ));
        }
        if !(report.upload.is_finite() && (0.0..=1.0).contains(&report.upload)) {
            return Err("a load report with an upload fraction outside 0..=1".into());
        }
        Ok(report)
    }
}

/// What adverts a peer is asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdvertRequest {
    /// Every version of the named service the peer provides.
    Name(String),
    /// The advert of one package.
    ContentId(#[serde(with = "serde_bytes")] [u8; 32]),
}

/// Adverts a peer provides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdvertResponse {
    Adverts(#[serde(deserialize_with = "at_most::<_, _, MAX_ADVERTS>")] Vec<serde_bytes::ByteBuf>),
    NotFound,
    /// The peer is overloaded; try later or elsewhere.
    Busy,
}

/// A request about a package's component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferRequest {
    /// Blocks `first_block .. first_block + blocks` (1 to
    /// [`MAX_BLOCKS_PER_REQUEST`] blocks of [`BLOCK_SIZE`] bytes).
    Blocks {
        #[serde(with = "serde_bytes")]
        content_id: [u8; 32],
        first_block: u64,
        blocks: u32,
        /// How long the provider may hold this request while the sender
        /// waits in line for an upload slot, in milliseconds (0: answer
        /// `Queued` at once). The provider holds it for at most
        /// [`MAX_QUEUE_HOLD`].
        #[serde(default)]
        queue_ms: u32,
    },
    /// Which blocks the peer holds (it may still be downloading).
    Have {
        #[serde(with = "serde_bytes")]
        content_id: [u8; 32],
    },
    /// The sender is done with this package here (it has what it came
    /// for, or gives up waiting): its upload slot, or its place in the
    /// queue for one, goes to the next peer at once. Answered `Left`.
    Leave {
        #[serde(with = "serde_bytes")]
        content_id: [u8; 32],
    },
    /// Any run of up to `blocks` of the blocks marked in `wanted` (a
    /// [`Bitmap`](crate::blocks::Bitmap) like `Have`'s) that the peer holds, of its choosing: one
    /// round trip where `Have` then `Blocks` would take two.
    Want {
        #[serde(with = "serde_bytes")]
        content_id: [u8; 32],
        #[serde(with = "serde_bytes")]
        wanted: Vec<u8>,
        blocks: u32,
    },
}

/// Answer to a [`TransferRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferResponse {
    /// The bao encoding of blocks `first_block .. first_block + blocks`
    /// (proof and data interleaved).
    Data {
        /// The component size the provider serves; must equal the advert's.
        size: u64,
        first_block: u64,
        blocks: u32,
        #[serde(with = "serde_bytes")]
        encoded: Vec<u8>,
        /// The blocks the provider holds now, as in `Have` (empty when it
        /// holds them all or does not say): saves a `Have` round trip.
        #[serde(default, with = "serde_bytes")]
        bitmap: Vec<u8>,
        /// Other peers fetching this package (peer exchange).
        #[serde(default, deserialize_with = "at_most::<_, _, MAX_PEX_PEERS>")]
        peers: Vec<PeerInfo>,
    },
    /// The blocks held, as a [`Bitmap`](crate::blocks::Bitmap).
    Have {
        size: u64,
        #[serde(with = "serde_bytes")]
        bitmap: Vec<u8>,
        /// Other peers fetching this package (peer exchange).
        #[serde(default, deserialize_with = "at_most::<_, _, MAX_PEX_PEERS>")]
        peers: Vec<PeerInfo>,
    },
    /// The peer does not have (all of) those blocks.
    NotFound,
    /// The peer is at its transfer limit, or its queue for an upload slot
    /// is full; try another, such as `peers` (others fetching this package).
    Busy {
        #[serde(default, deserialize_with = "at_most::<_, _, MAX_PEX_PEERS>")]
        peers: Vec<PeerInfo>,
    },
    /// The sender is in line for an upload slot behind `ahead` peers, and
    /// keeps its place if it asks again within `retry_ms` plus the
    /// provider's idle time. Its turn goes to the first peer in line that is
    /// asking when a slot frees.
    Queued { ahead: u32, retry_ms: u32 },
    /// The answer to `Leave`.
    Left,
}

impl TransferResponse {
    /// The answer's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            TransferResponse::Data { .. } => "data",
            TransferResponse::Have { .. } => "have",
            TransferResponse::NotFound => "not-found",
            TransferResponse::Busy { .. } => "busy",
            TransferResponse::Queued { .. } => "queued",
            TransferResponse::Left => "left",
        }
    }
}

/// A peer, as passed on in peer exchange: its id and listen addresses, both
/// in their binary encodings. At most [`MAX_PEX_PEERS`] per message and
/// [`MAX_PEX_ADDRESSES`] addresses each; entries that do not parse are
/// dropped by the receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    #[serde(with = "serde_bytes")]
    pub id: Vec<u8>,
    #[serde(deserialize_with = "at_most::<_, _, MAX_PEX_ADDRESSES>")]
    pub addresses: Vec<serde_bytes::ByteBuf>,
}

pub const MAX_PEX_PEERS: usize = 8;
pub const MAX_PEX_ADDRESSES: usize = 4;

impl PeerInfo {
    pub fn new(peer: &libp2p::PeerId, addresses: &[libp2p::Multiaddr]) -> Self {
        Self {
            id: peer.to_bytes(),
            addresses: addresses
                .iter()
                .take(MAX_PEX_ADDRESSES)
                .map(|a| serde_bytes::ByteBuf::from(a.to_vec()))
                .collect(),
        }
    }

    /// The peer id and addresses, if they parse.
    pub fn decode(&self) -> Option<(libp2p::PeerId, Vec<libp2p::Multiaddr>)> {
        let peer = libp2p::PeerId::from_bytes(&self.id).ok()?;
        let addresses = self
            .addresses
            .iter()
            .take(MAX_PEX_ADDRESSES)
            .filter_map(|a| libp2p::Multiaddr::try_from(a.to_vec()).ok())
            .collect();
        Some((peer, addresses))
    }
}

/// A remote call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeRequest {
    /// Service name.
    pub service: String,
    /// A specific package, or `None` for the newest version the peer runs.
    #[serde(default, with = "serde_bytes")]
    pub content_id: Option<[u8; 32]>,
    /// Only a service of this publisher: its key text, or 8 to 64 leading
    /// hex digits of its key. Anything else is answered `NotFound`.
    #[serde(default)]
    pub publisher: Option<String>,
    /// The call in WAVE syntax, e.g. `greet("x")`.
    pub call: String,
}

/// Answer to an [`InvokeRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum InvokeResponse {
    Ok {
        /// Results as WAVE text.
        value: String,
        fuel: u64,
        micros: u64,
        #[serde(with = "serde_bytes")]
        content_id: [u8; 32],
        /// How busy the provider was with this service when it answered:
        /// calls in flight over its limit L, 0 to 1 (callers use it to
        /// choose among providers).
        #[serde(default)]
        load: Option<f32>,
        /// The provider's signed [`Receipt`](super::evidence::Receipt) for
        /// this call and result, at most
        /// [`MAX_RECEIPT`](super::evidence::MAX_RECEIPT) bytes: what lets
        /// the caller publish an evaluation of it.
        #[serde(default, with = "serde_bytes")]
        receipt: Option<Vec<u8>>,
    },
    /// The call ran and failed (trap, bad arguments, ...).
    Failed { kind: String, message: String },
    /// The provider is at its concurrency limit for this service.
    Busy,
    /// The caller may not invoke this service here.
    Denied(String),
    /// The peer does not provide this service.
    NotFound,
}

/// Deserializes a list of at most `N` items, failing at item `N + 1`
/// (whatever length the encoding announced, nothing is reserved for more).
pub fn at_most<'de, D, T, const N: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const N: usize>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const N: usize> serde::de::Visitor<'de> for Bounded<T, N> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {N} items")
        }

        fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<Vec<T>, S::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(N));
            while let Some(item) = seq.next_element()? {
                if items.len() == N {
                    return Err(serde::de::Error::invalid_length(N + 1, &self));
                }
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_seq(Bounded::<T, N>(std::marker::PhantomData))
}

/// Clips peer-supplied text for logs and errors.
pub fn clip(text: &str) -> String {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(value: &T) -> Result<T, String> {
        let bytes = cbor4ii::serde::to_vec(Vec::new(), value).unwrap();
        cbor4ii::serde::from_slice(&bytes).map_err(|e| e.to_string())
    }

    #[test]
    fn lists_are_bounded_while_decoding() {
        // A response within the size limit, made of empty byte strings.
        let flood = AdvertResponse::Adverts(vec![ByteBuf::new(); 400_000]);
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &flood).unwrap();
        assert!((bytes.len() as u64) < MAX_ADVERT_RESPONSE);
        let refused = round_trip(&flood).unwrap_err();
        assert!(refused.contains("at most 16"), "{refused}");
        let fine = AdvertResponse::Adverts(vec![ByteBuf::from(vec![1]); MAX_ADVERTS]);
        assert_eq!(round_trip(&fine).unwrap(), fine);

        let peer = PeerInfo {
            id: vec![0],
            addresses: vec![ByteBuf::new(); MAX_PEX_ADDRESSES],
        };
        let busy = TransferResponse::Busy {
            peers: vec![peer.clone(); MAX_PEX_PEERS],
        };
        assert_eq!(round_trip(&busy).unwrap(), busy);
        let too_many = TransferResponse::Busy {
            peers: vec![peer.clone(); MAX_PEX_PEERS + 1],
        };
        assert!(round_trip(&too_many).is_err());
        let mut crowded = peer;
        crowded.addresses.push(ByteBuf::new());
        let have = TransferResponse::Have {
            size: 1,
            bitmap: vec![1],
            peers: vec![crowded],
        };
        assert!(round_trip(&have).is_err());
        // Empty lists decode as before.
        let data = TransferResponse::Data {
            size: 1,
            first_block: 0,
            blocks: 1,
            encoded: vec![0; 8],
            bitmap: Vec::new(),
            peers: Vec::new(),
        };
        assert_eq!(round_trip(&data).unwrap(), data);
    }

    fn report() -> LoadReport {
        LoadReport {
            content_id: [7; 32],
            at_ms: 1_800_000_000_000,
            calls_per_s: 120.5,
            in_flight: 3,
            limit: 4,
            busy_per_s: 0.0,
            p95_us: 12_000,
            upload: 0.25,
            pinned: true,
        }
    }

    #[test]
    fn a_load_report_round_trips_within_its_bound() {
        let bytes = report().encode();
        assert!(bytes.len() <= MAX_LOAD_REPORT, "{}", bytes.len());
        assert_eq!(LoadReport::decode(&bytes).unwrap(), report());
    }

    #[test]
    fn hostile_load_reports_are_refused() {
        let mut long = report().encode();
        long.resize(MAX_LOAD_REPORT + 1, 0);
        assert!(LoadReport::decode(&long).unwrap_err().contains("bytes"));
        assert!(LoadReport::decode(b"\xff\x00garbage").is_err());
        let broken: [fn(&mut LoadReport); 7] = [
            |r| r.calls_per_s = f32::NAN,
            |r| r.calls_per_s = -1.0,
            |r| r.busy_per_s = f32::INFINITY,
            |r| r.in_flight = 5,
            |r| {
                r.limit = MAX_REPORTED_LIMIT + 1;
                r.in_flight = 0
            },
            |r| r.upload = 1.5,
            |r| r.upload = f32::NAN,
        ];
        for (i, breaks) in broken.iter().enumerate() {
            let mut bad = report();
            breaks(&mut bad);
            assert!(LoadReport::decode(&bad.encode()).is_err(), "case {i}");
        }
    }

    #[test]
    fn a_load_topic_names_the_service_and_its_publisher() {
        let topic = load_topic("echo", &[0xab; 32]);
        assert_eq!(topic, format!("/sp2a/load/1/echo/{}", "ab".repeat(32)));
    }
}
