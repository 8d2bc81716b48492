//! The cloneable handle to the network event loop, and the requests peers
//! send us.

use std::collections::HashSet;

pub use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::kad::RecordKey;
pub use libp2p::request_response::InboundRequestId;
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use super::protocol::*;

/// Why a request to a peer got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("cannot reach the peer")]
    Dial,
    #[error("the peer did not answer in time")]
    Timeout,
    #[error("the connection closed before the peer answered")]
    Closed,
    #[error("the peer does not speak the protocol")]
    Unsupported,
    #[error("{0}")]
    Io(String),
    #[error("the network is shutting down")]
    Shutdown,
    /// Only a relayed connection reaches the peer, hole punching did not
    /// make it direct, and the download is larger than this node takes
    /// through relays.
    #[error(
        "no direct connection to the peer (it is reachable only through a relay, and hole punching failed); the download ({size} bytes) is larger than this node takes through relays ({limit} bytes)"
    )]
    RelayOnly { size: u64, limit: u64 },
}

/// Why a dial failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("{0} has no /p2p/<peer id> suffix")]
    NoPeerId(Multiaddr),
    #[error("cannot reach {peer}: {reason}")]
    Unreachable { peer: PeerId, reason: String },
    #[error("the network is shutting down")]
    Shutdown,
}

/// A request from a peer, to be answered through [`Client`]. `span` is
/// the request's tracing span, inside the span of its connection.
#[derive(Debug)]
pub enum InboundRequest {
    Advert {
        peer: PeerId,
        request: AdvertRequest,
        channel: ResponseChannel<AdvertResponse>,
        span: tracing::Span,
    },
    Transfer {
        peer: PeerId,
        /// It came through a relay.
        relayed: bool,
        /// Names the request in [`Client::respond_transfer_holding`].
        id: InboundRequestId,
        request: TransferRequest,
        channel: ResponseChannel<TransferResponse>,
        span: tracing::Span,
    },
    Invoke {
        peer: PeerId,
        request: InvokeRequest,
        channel: ResponseChannel<InvokeResponse>,
        span: tracing::Span,
    },
    Solicit {
        peer: PeerId,
        request: SolicitRequest,
        channel: ResponseChannel<SolicitResponse>,
        span: tracing::Span,
    },
    Advice {
        peer: PeerId,
        /// The IP address the request's connection comes from (`None`
        /// through a relay), for limits per network.
        origin: Option<std::net::IpAddr>,
        request: AdviceRequest,
        channel: ResponseChannel<AdviceResponse>,
        span: tracing::Span,
    },
    /// A gossip message on a topic this node subscribed to, signed by
    /// `source`, relayed by `via`. It is neither delivered to others nor
    /// forwarded until the node gives its verdict ([`Client::validate`]).
    Gossip {
        source: PeerId,
        via: PeerId,
        id: MessageId,
        topic: String,
        data: Vec<u8>,
        span: tracing::Span,
    },
}

impl InboundRequest {
    /// The request's tracing span.
    pub fn span(&self) -> &tracing::Span {
        match self {
            InboundRequest::Advert { span, .. }
            | InboundRequest::Transfer { span, .. }
            | InboundRequest::Invoke { span, .. }
            | InboundRequest::Solicit { span, .. }
            | InboundRequest::Advice { span, .. }
            | InboundRequest::Gossip { span, .. } => span,
        }
    }
}

/// A snapshot of the network's state.
#[derive(Clone, Debug)]
pub struct NetInfo {
    pub peer_id: PeerId,
    pub listen_addrs: Vec<Multiaddr>,
    pub connected: Vec<PeerId>,
    pub routing_table: usize,
    /// Provider records from other peers held in this node's store.
    pub provider_records: usize,
    /// This node's own announcements, by key (CID text).
    pub announcements: Vec<Announcement>,
    pub reachability: super::reach::Reachability,
    /// Kademlia answers requests (server mode), as it does only while the
    /// node is reachable.
    pub dht_server: bool,
    /// Direct addresses confirmed, and how (`autonat`, `upnp`, `declared`,
    /// `local`).
    pub confirmed: Vec<(Multiaddr, &'static str)>,
    /// Addresses a server could not dial back, and its answer.
    pub refuted: Vec<(Multiaddr, String)>,
    /// Relayed addresses: this node's reservations on relays.
    pub relayed: Vec<Multiaddr>,
    /// Every open connection.
    pub connections: Vec<ConnectionInfo>,
    /// As a relay for others: reservations and circuits held now, and
    /// circuits ended (by their limits or otherwise).
    pub relay_reservations: usize,
    pub relay_circuits: usize,
    pub relay_circuits_closed: u64,
    /// Connected peers whose gossipsub score is negative, lowest first:
    /// pruned from the meshes, and below
    /// [`super::scoring::thresholds`]' graylist threshold not heard at all.
    pub gossip_penalised: Vec<(PeerId, f64)>,
}

/// One open connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub peer: PeerId,
    pub remote: Multiaddr,
    /// Through a circuit relay.
    pub relayed: bool,
    /// This node dialled it.
    pub outbound: bool,
}

/// One key this node provides and how announcing it went.
#[derive(Clone, Debug)]
pub struct Announcement {
    pub key: String,
    pub state: AnnouncementState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnnouncementState {
    /// Stored locally; the announcement to the closest peers is under way.
    /// `failures` attempts failed before.
    Pending { failures: u32 },
    /// The last announcement reached `peers` DHT peers.
    Announced { peers: u32, at: std::time::Instant },
    /// The last announcement failed; it is retried at `retry_at`.
    Failed {
        failures: u32,
        error: String,
        retry_at: std::time::Instant,
    },
}

pub(crate) type Reply<T> = oneshot::Sender<T>;

/// Something a response holds on to until its bytes are written to the
/// peer, such as an upload permit: dropped then, or when sending fails.
pub type Hold = Box<dyn std::any::Any + Send>;

#[derive(Debug)]
pub(crate) enum Command {
    StartProviding {
        key: RecordKey,
        reply: Reply<()>,
    },
    StopProviding {
        key: RecordKey,
    },
    GetProviders {
        key: RecordKey,
        limit: Option<usize>,
        /// Run the query to the end instead of shortly after two answers
        /// named providers.
        exhaustive: bool,
        reply: Reply<HashSet<PeerId>>,
    },
    Dial {
        address: Multiaddr,
        reply: Reply<Result<PeerId, DialError>>,
    },
    Advert {
        peer: PeerId,
        request: AdvertRequest,
        reply: Reply<Result<AdvertResponse, RequestError>>,
    },
    Transfer {
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: TransferRequest,
        /// The size of the whole download the request is part of: whether
        /// it may go through a relay.
        download: u64,
        reply: Reply<Result<TransferResponse, RequestError>>,
    },
    Invoke {
        peer: PeerId,
        request: InvokeRequest,
        reply: Reply<Result<InvokeResponse, RequestError>>,
    },
    RespondAdvert {
        channel: ResponseChannel<AdvertResponse>,
        response: AdvertResponse,
    },
    RespondTransfer {
        channel: ResponseChannel<TransferResponse>,
        response: TransferResponse,
        /// Kept until the response is written (or fails), then dropped.
        hold: Option<(InboundRequestId, Hold)>,
    },
    RespondInvoke {
        channel: ResponseChannel<InvokeResponse>,
        response: InvokeResponse,
    },
    Solicit {
        peer: PeerId,
        request: SolicitRequest,
        reply: Reply<Result<SolicitResponse, RequestError>>,
    },
    RespondSolicit {
        channel: ResponseChannel<SolicitResponse>,
        response: SolicitResponse,
    },
    Advice {
        peer: PeerId,
        request: AdviceRequest,
        reply: Reply<Result<AdviceResponse, RequestError>>,
    },
    RespondAdvice {
        channel: ResponseChannel<AdviceResponse>,
        response: AdviceResponse,
    },
    Subscribe {
        topic: String,
    },
    Unsubscribe {
        topic: String,
    },
    Publish {
        topic: String,
        data: Vec<u8>,
    },
    Validate {
        id: MessageId,
        via: PeerId,
        verdict: MessageAcceptance,
    },
    Connect {
        peer: PeerId,
    },
    Info {
        reply: Reply<NetInfo>,
    },
    Shutdown {
        reply: Reply<()>,
    },
}

/// Listen addresses peers reported through identify, bounded.
#[derive(Debug, Default)]
pub(crate) struct AddressBook {
    pub(crate) entries: std::collections::HashMap<PeerId, Vec<Multiaddr>>,
}

/// Peers remembered in the address book.
pub(crate) const ADDRESS_BOOK_SIZE: usize = 4096;

impl AddressBook {
    pub(crate) fn insert(&mut self, peer: PeerId, addresses: Vec<Multiaddr>) {
        if self.entries.len() >= ADDRESS_BOOK_SIZE
            && !self.entries.contains_key(&peer)
            && let Some(evict) = self.entries.keys().next().copied()
        {
            self.entries.remove(&evict);
        }
        self.entries.insert(peer, addresses);
    }
}

/// Talks to the event loop that owns the swarm. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) peer_id: PeerId,
    pub(crate) addresses: std::sync::Arc<std::sync::Mutex<AddressBook>>,
    pub(crate) local_addresses: bool,
}

impl Client {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.ok()?;
        answer.await.ok()
    }

    async fn tell(&self, command: Command) {
        let _ = self.commands.send(command).await;
    }

    /// Announces this node as a provider of `key` (a provider record in the DHT).
    pub async fn start_providing(&self, key: RecordKey) {
        self.ask(|reply| Command::StartProviding { key, reply })
            .await;
    }

    /// Withdraws this node's provider record for `key`.
    pub async fn stop_providing(&self, key: RecordKey) {
        self.tell(Command::StopProviding { key }).await;
    }

    /// The peers that provide `key` (this node excluded): those found until
    /// shortly after two answers named providers, or the query ends.
    pub async fn get_providers(&self, key: RecordKey) -> HashSet<PeerId> {
        self.ask(|reply| Command::GetProviders {
            key,
            limit: None,
            exhaustive: false,
            reply,
        })
        .await
        .unwrap_or_default()
    }

    /// Every provider the DHT query can find: it runs until it has asked
    /// the peers closest to the key (slower on a busy network).
    pub async fn get_all_providers(&self, key: RecordKey) -> HashSet<PeerId> {
        self.ask(|reply| Command::GetProviders {
            key,
            limit: None,
            exhaustive: true,
            reply,
        })
        .await
        .unwrap_or_default()
    }

    /// Like [`Client::get_providers`], but ends the query once `limit`
    /// providers are known (cheap enough to repeat often).
    pub async fn get_providers_limited(&self, key: RecordKey, limit: usize) -> HashSet<PeerId> {
        self.ask(|reply| Command::GetProviders {
            key,
            limit: Some(limit),
            exhaustive: false,
            reply,
        })
        .await
        .unwrap_or_default()
    }

    /// Dials an address ending in `/p2p/<peer id>` and waits for the connection.
    pub async fn dial(&self, address: Multiaddr) -> Result<PeerId, DialError> {
        self.ask(|reply| Command::Dial { address, reply })
            .await
            .unwrap_or(Err(DialError::Shutdown))
    }

    pub async fn request_advert(
        &self,
        peer: PeerId,
        request: AdvertRequest,
    ) -> Result<AdvertResponse, RequestError> {
        self.ask(|reply| Command::Advert {
            peer,
            request,
            reply,
        })
        .await
        .unwrap_or(Err(RequestError::Shutdown))
    }

    /// A transfer request, part of a download of `download` bytes:
    /// over a direct connection (waiting briefly for a relayed one to be
    /// made direct), or through a relay when the download is small enough.
    pub async fn request_transfer(
        &self,
        peer: PeerId,
        request: TransferRequest,
        download: u64,
    ) -> Result<TransferResponse, RequestError> {
        self.request_transfer_at(peer, Vec::new(), request, download)
            .await
    }

    /// Like [`Client::request_transfer`], dialing `addresses` if the peer is
    /// not connected (addresses learned from peer exchange).
    pub async fn request_transfer_at(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: TransferRequest,
        download: u64,
    ) -> Result<TransferResponse, RequestError> {
        self.ask(|reply| Command::Transfer {
            peer,
            addresses,
            request,
            download,
            reply,
        })
        .await
        .unwrap_or(Err(RequestError::Shutdown))
    }

    /// The listen addresses `peer` reported to this node, if any.
    /// Of addresses another peer passed on, those this node may dial: global
    /// ones, and loopback or private ones only in local mode
    /// ([`NetConfig::local_addresses`](super::NetConfig::local_addresses)).
    pub fn dialable_hints(&self, hinted: Vec<Multiaddr>) -> Vec<Multiaddr> {
        hinted
            .into_iter()
            .filter(|a| {
                self.local_addresses || super::address::scope(a) == super::address::Scope::Global
            })
            .collect()
    }

    pub fn known_addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.addresses
            .lock()
            .expect("address book lock")
            .entries
            .get(peer)
            .cloned()
            .unwrap_or_default()
    }

    pub async fn request_invoke(
        &self,
        peer: PeerId,
        request: InvokeRequest,
    ) -> Result<InvokeResponse, RequestError> {
        self.ask(|reply| Command::Invoke {
            peer,
            request,
            reply,
        })
        .await
        .unwrap_or(Err(RequestError::Shutdown))
    }

    pub async fn respond_advert(
        &self,
        channel: ResponseChannel<AdvertResponse>,
        response: AdvertResponse,
    ) {
        self.tell(Command::RespondAdvert { channel, response })
            .await;
    }

    pub async fn respond_transfer(
        &self,
        channel: ResponseChannel<TransferResponse>,
        response: TransferResponse,
    ) {
        self.tell(Command::RespondTransfer {
            channel,
            response,
            hold: None,
        })
        .await;
    }

    /// Like [`Client::respond_transfer`], keeping `hold` until the response
    /// to request `id` is written to the peer or fails: a peer that does
    /// not read its answers keeps what they hold (an upload permit) taken,
    /// not just memory.
    pub async fn respond_transfer_holding(
        &self,
        id: InboundRequestId,
        channel: ResponseChannel<TransferResponse>,
        response: TransferResponse,
        hold: Hold,
    ) {
        self.tell(Command::RespondTransfer {
            channel,
            response,
            hold: Some((id, hold)),
        })
        .await;
    }

    pub async fn respond_invoke(
        &self,
        channel: ResponseChannel<InvokeResponse>,
        response: InvokeResponse,
    ) {
        self.tell(Command::RespondInvoke { channel, response })
            .await;
    }

    /// Asks standby `peer` to pull a package and provide it.
    pub async fn request_solicit(
        &self,
        peer: PeerId,
        request: SolicitRequest,
    ) -> Result<SolicitResponse, RequestError> {
        self.ask(|reply| Command::Solicit {
            peer,
            request,
            reply,
        })
        .await
        .unwrap_or(Err(RequestError::Shutdown))
    }

    pub async fn respond_solicit(
        &self,
        channel: ResponseChannel<SolicitResponse>,
        response: SolicitResponse,
    ) {
        self.tell(Command::RespondSolicit { channel, response })
            .await;
    }

    /// Asks advisor `peer` for its evaluations of a provider.
    pub async fn request_advice(
        &self,
        peer: PeerId,
        request: AdviceRequest,
    ) -> Result<AdviceResponse, RequestError> {
        self.ask(|reply| Command::Advice {
            peer,
            request,
            reply,
        })
        .await
        .unwrap_or(Err(RequestError::Shutdown))
    }

    pub async fn respond_advice(
        &self,
        channel: ResponseChannel<AdviceResponse>,
        response: AdviceResponse,
    ) {
        self.tell(Command::RespondAdvice { channel, response })
            .await;
    }

    /// Receives the gossip of `topic` (as [`InboundRequest::Gossip`]).
    pub async fn subscribe(&self, topic: String) {
        self.tell(Command::Subscribe { topic }).await;
    }

    pub async fn unsubscribe(&self, topic: String) {
        self.tell(Command::Unsubscribe { topic }).await;
    }

    /// Publishes `data` on `topic`, signed with this node's key, to the
    /// subscribers it is connected to (none connected is not an error:
    /// gossip is best effort).
    pub async fn publish(&self, topic: String, data: Vec<u8>) {
        self.tell(Command::Publish { topic, data }).await;
    }

    /// The node's verdict on a gossip message: `Accept` delivers and
    /// forwards it, `Reject` drops it as invalid (its relay is penalised),
    /// `Ignore` drops it.
    pub async fn validate(&self, id: MessageId, via: PeerId, verdict: MessageAcceptance) {
        self.tell(Command::Validate { id, via, verdict }).await;
    }

    /// Connects to `peer` at the addresses the DHT knows, unless connected.
    pub async fn connect(&self, peer: PeerId) {
        self.tell(Command::Connect { peer }).await;
    }

    /// Peer id, listen addresses, connected peers.
    pub async fn info(&self) -> Option<NetInfo> {
        self.ask(|reply| Command::Info { reply }).await
    }

    /// Stops the event loop (connections close).
    pub async fn shutdown(&self) {
        self.ask(|reply| Command::Shutdown { reply }).await;
    }
}
