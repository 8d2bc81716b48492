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
pub mod paths;
pub mod protocol;
pub mod reach;
pub mod records;
pub mod scoring;
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
/// off, only global addresses from peer exchange, 512 connections (4 per peer: a
/// relayed one, direct ones and AutoNAT's dial-backs), 30 s request timeout, 256 queued
/// inbound requests, provider records from others held within
/// [`records::ProviderLimits`]' defaults,
/// 10 s Kademlia query timeout, 64 concurrent streams per protocol per
/// connection, idle connections closed after 60 s, Kademlia k = 20,
/// DHT server mode while reachable and [`NatConfig`]'s defaults.
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
    /// Answer Kademlia requests (store records, route lookups) while this
    /// node is reachable ([`reach`]). Nodes that do not (clients) still
    /// look up and announce through servers.
    pub dht_server: bool,
    /// Reachability, relays, hole punching and port mapping.
    pub nat: NatConfig,
}

/// How a node finds out whether it can be reached, and what it does when it
/// cannot. Defaults: no declared addresses, AutoNAT on, relaying for others
/// on (within [`RelayLimits`]' defaults, and only while reachable), relay
/// reservations on 2 relays while not reachable, UPnP off, transfers wait
/// 3 s for a relayed connection to become direct, downloads of at most
/// 128 KiB through a relay.
#[derive(Clone, Debug)]
pub struct NatConfig {
    /// Addresses the operator says this node is reachable at (a forwarded
    /// port, a public host): advertised at once, and withdrawn when an
    /// AutoNAT server cannot dial them back.
    pub external: Vec<Multiaddr>,
    /// Ask peers to dial back the addresses this node is seen at (AutoNAT
    /// v2), and answer their requests.
    pub autonat: bool,
    /// Relay for others (circuit relay v2) while reachable.
    pub relay_server: bool,
    pub relay: RelayLimits,
    /// Hold a reservation on this many relays while not reachable, and
    /// advertise the relayed addresses (0: none).
    pub relays: usize,
    /// Ask the router to forward the listen ports (UPnP IGD).
    pub upnp: bool,
    /// How long a transfer waits for a relayed connection to become direct
    /// (hole punching) before it goes through the relay or gives up.
    pub direct_wait: Duration,
    /// The largest download that may go through a relay (bytes).
    pub max_relayed_download: u64,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            external: Vec::new(),
            autonat: true,
            relay_server: true,
            relay: RelayLimits::default(),
            relays: 2,
            upnp: false,
            direct_wait: Duration::from_secs(3),
            max_relayed_download: 128 * 1024,
        }
    }
}

/// What a relay grants. Defaults (libp2p's): 128 reservations, 4 per peer,
/// each for 1 hour; 16 circuits, 4 per peer, each for 2 minutes and
/// 128 KiB.
#[derive(Clone, Debug)]
pub struct RelayLimits {
    pub max_reservations: usize,
    pub max_reservations_per_peer: usize,
    pub reservation_duration: Duration,
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    pub max_circuit_duration: Duration,
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        let libp2p = libp2p::relay::Config::default();
        Self {
            max_reservations: libp2p.max_reservations,
            max_reservations_per_peer: libp2p.max_reservations_per_peer,
            reservation_duration: libp2p.reservation_duration,
            max_circuits: libp2p.max_circuits,
            max_circuits_per_peer: libp2p.max_circuits_per_peer,
            max_circuit_duration: libp2p.max_circuit_duration,
            max_circuit_bytes: libp2p.max_circuit_bytes,
        }
    }
}

impl RelayLimits {
    /// libp2p's relay configuration with these limits (and its rate
    /// limits per peer and per address).
    pub fn to_libp2p(&self) -> libp2p::relay::Config {
        libp2p::relay::Config {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            reservation_duration: self.reservation_duration,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.max_circuit_duration,
            max_circuit_bytes: self.max_circuit_bytes,
            ..libp2p::relay::Config::default()
        }
    }
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
            max_connections_per_peer: 4,
            request_timeout: Duration::from_secs(30),
            inbound_queue: 256,
            provider_records: records::ProviderLimits::default(),
            query_timeout: Duration::from_secs(10),
            max_concurrent_streams: 64,
            idle_timeout: Duration::from_secs(60),
            kad_bucket_size: 20,
            dht_server: true,
            nat: NatConfig::default(),
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
    match crate::files::read_secret(path) {
        Ok(Some(bytes)) => libp2p::identity::Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| err(e.to_string())),
        Ok(None) => {
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
