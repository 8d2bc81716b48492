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

pub const ADVERT_PROTOCOL: &str = "/sp2a/advert/1";
pub const TRANSFER_PROTOCOL: &str = "/sp2a/transfer/1";
pub const INVOKE_PROTOCOL: &str = "/sp2a/invoke/1";
pub const SOLICIT_PROTOCOL: &str = "/sp2a/solicit/1";

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvokeResponse {
    Ok {
        /// Results as WAVE text.
        value: String,
        fuel: u64,
        micros: u64,
        #[serde(with = "serde_bytes")]
        content_id: [u8; 32],
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
}
