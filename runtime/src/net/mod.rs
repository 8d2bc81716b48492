//! The peer-to-peer layer: rust-libp2p on tokio.
//!
//! One task (the [`event_loop`]) owns the `Swarm`; everything else talks to
//! it through a cloneable [`Client`] over bounded channels with oneshot
//! replies, and receives peers' requests as [`InboundRequest`]s to answer
//! through the client. Transports: TCP (noise, yamux) and QUIC; identify,
//! Kademlia (provider records), ping, optional mDNS, connection limits and
//! the sp2a request-response protocols of [`protocol`].
//!
//! Service discovery uses standard Kademlia provider records keyed by the
//! multihash of a CID (see [`keys`]), so any libp2p Kademlia implementation
//! speaking the `/sp2a/kad/1.0.0` protocol can look them up. The record
//! store ([`records`]) bounds what other peers can store here.

pub mod address;
pub mod behaviour;
pub mod client;
pub mod event_loop;
pub mod evidence;
pub mod keys;
pub mod protocol;
pub mod records;
pub mod upkeep;

use std::path::Path;
use std::time::Duration;

pub use client::{
    Announcement, AnnouncementState, Client, DialError, InboundRequest, MessageAcceptance,
    MessageId, NetInfo, RequestError,
};
pub use libp2p::kad::RecordKey;
pub use libp2p::{Multiaddr, PeerId, multiaddr};

/// Errors starting the network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot build the libp2p swarm: {0}")]
    Build(String),
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: String, reason: String },
    #[error("node identity {path}: {reason}")]
    Identity { path: String, reason: String },
    #[error("bootstrap address {0} has no /p2p/<peer id> suffix")]
    BootstrapWithoutPeer(String),
}

/// Network settings. Defaults: listen on TCP and QUIC on every interface
/// (ports chosen by the system), no bootstrap peers, mDNS
/// off, only global addresses from peer exchange, 512 connections (2 per peer), 30 s request timeout, 256 queued
/// inbound requests, provider records from others held within
/// [`records::ProviderLimits`]' defaults,
/// 10 s Kademlia query timeout, 64 concurrent streams per protocol per
/// connection, idle connections closed after 60 s, Kademlia k = 20 and
/// DHT server mode.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub mdns: bool,
    /// Dial loopback and private addresses that other peers pass on (peer
    /// exchange). Off by default: a remote peer could otherwise make this
    /// node dial its own host or network. For nodes on one host or LAN.
    pub local_addresses: bool,
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    pub request_timeout: Duration,
    pub inbound_queue: usize,
    /// Quotas and local TTL of the provider records other peers store here.
    pub provider_records: records::ProviderLimits,
    pub query_timeout: Duration,
    /// Concurrent inbound streams per connection per protocol.
    pub max_concurrent_streams: usize,
    /// Close a connection after this long without streams.
    pub idle_timeout: Duration,
    /// Kademlia's k: peers per routing-table bucket, and how many of the
    /// closest peers a lookup visits.
    pub kad_bucket_size: usize,
    /// Answer Kademlia requests (store records, route lookups). Nodes that
    /// are not (clients) still look up and announce through servers.
    pub dht_server: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("a valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("a valid multiaddr"),
            ],
            bootstrap: Vec::new(),
            mdns: false,
            local_addresses: false,
            max_connections: 512,
            max_connections_per_peer: 2,
            request_timeout: Duration::from_secs(30),
            inbound_queue: 256,
            provider_records: records::ProviderLimits::default(),
            query_timeout: Duration::from_secs(10),
            max_concurrent_streams: 64,
            idle_timeout: Duration::from_secs(60),
            kad_bucket_size: 20,
            dht_server: true,
        }
    }
}

/// Loads the node's libp2p identity from `path`, creating it (mode 0600) on
/// first start, so that a node keeps its peer id across restarts.
pub fn load_or_create_identity(path: &Path) -> Result<libp2p::identity::Keypair, NetError> {
    let err = |reason: String| NetError::Identity {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => libp2p::identity::Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = libp2p::identity::Keypair::generate_ed25519();
            let bytes = keypair
                .to_protobuf_encoding()
                .map_err(|e| err(e.to_string()))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            crate::files::write_new(path, &bytes, 0o600).map_err(|e| err(e.to_string()))?;
            Ok(keypair)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// A fresh, random node identity (for short-lived and test nodes).
pub fn libp2p_identity() -> libp2p::identity::Keypair {
    libp2p::identity::Keypair::generate_ed25519()
}

/// Splits `/ip4/.../tcp/.../p2p/<id>` into the peer id and the address.
pub fn split_peer_address(address: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut address = address.clone();
    match address.pop() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some((peer, address)),
        _ => None,
    }
}
