//! The composed libp2p behaviour of an sp2a node.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport, cbor};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, autonat, connection_limits, dcutr, gossipsub, identify, kad,
    mdns, ping, relay, upnp,
};

use super::NetConfig;
use super::paths::{Connections, DialScope, Scoped};
use super::protocol::*;
use super::records::NodeStore;

/// The Kademlia protocol of sp2a networks.
pub const KAD_PROTOCOL: &str = "/sp2a/kad/1.0.0";
/// Identify's protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/sp2a/1.0.0";

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub kad: ScopedKad,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// The client side of circuit relays: reservations on relays while
    /// this node is not reachable, and dials through them.
    pub relay_client: relay::client::Behaviour,
    /// Relaying for others, active only while this node has a confirmed
    /// direct address (libp2p's relay server enables itself then).
    pub relay: Toggle<Scoped<relay::Behaviour>>,
    /// Hole punching: upgrades relayed connections to direct ones,
    /// dialling only addresses this node may dial (the peer names them).
    pub dcutr: Scoped<dcutr::Behaviour>,
    /// AutoNAT v2: peers dial back the addresses this node was seen at.
    pub autonat: Toggle<autonat::v2::client::Behaviour>,
    /// AutoNAT v2 for others, dialling back only addresses this node may
    /// dial.
    pub autonat_server: Toggle<Scoped<autonat::v2::server::Behaviour>>,
    /// Port mapping on the router (UPnP IGD), opt-in.
    pub upnp: Toggle<upnp::tokio::Behaviour>,
    /// The operator's declared addresses, put forward for AutoNAT to test;
    /// providers' addresses from lookups, for dialling them.
    pub hints: AddressHints,
    pub adverts: cbor::Behaviour<AdvertRequest, AdvertResponse>,
    /// Bulk transfer on direct connections.
    pub transfer: Scoped<cbor::Behaviour<TransferRequest, TransferResponse>>,
    /// The same protocol on relayed connections, for small downloads only.
    pub transfer_relayed: Scoped<cbor::Behaviour<TransferRequest, TransferResponse>>,
    pub invoke: cbor::Behaviour<InvokeRequest, InvokeResponse>,
    pub solicit: cbor::Behaviour<SolicitRequest, SolicitResponse>,
    pub advice: cbor::Behaviour<AdviceRequest, AdviceResponse>,
    /// Providers' load reports (and, later, feeds): signed by their
    /// authors, checked by the node before they are forwarded.
    pub gossip: gossipsub::Behaviour,
}

fn request_response<Req, Resp>(
    protocol: &'static str,
    max_request: u64,
    max_response: u64,
    config: &NetConfig,
) -> cbor::Behaviour<Req, Resp>
where
    Req: Send + Clone + serde::Serialize + serde::de::DeserializeOwned + 'static,
    Resp: Send + Clone + serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    let codec = cbor::codec::Codec::<Req, Resp>::default()
        .set_request_size_maximum(max_request)
        .set_response_size_maximum(max_response);
    let rr_config = request_response::Config::default()
        .with_request_timeout(config.request_timeout)
        .with_max_concurrent_streams(config.max_concurrent_streams);
    cbor::Behaviour::with_codec(
        codec,
        [(StreamProtocol::new(protocol), ProtocolSupport::Full)],
        rr_config,
    )
}

/// Kademlia, except that it dials only addresses this node may dial: the
/// ones it was given or saw a peer use ([`ScopedKad::add_address`]: the
/// bootstrap list, explicit dials, identify and mDNS, all filtered before),
/// and global ones. A private, loopback or link-local address that another
/// peer named in a lookup answer is not dialled outside local mode
/// ([`NetConfig::local_addresses`]): a peer cannot make this node probe its
/// own host or network.
pub struct ScopedKad {
    inner: kad::Behaviour<NodeStore>,
    local_addresses: bool,
    /// Addresses added by this node itself (bounded).
    vouched: HashSet<Multiaddr>,
}

/// Addresses remembered as added by this node.
const MAX_VOUCHED: usize = 8192;

impl ScopedKad {
    /// Adds a peer's address to the routing table, as one this node may dial.
    pub fn add_address(&mut self, peer: &PeerId, address: Multiaddr) -> kad::RoutingUpdate {
        if self.vouched.len() >= MAX_VOUCHED {
            self.vouched.clear();
        }
        self.vouched.insert(address.clone());
        self.inner.add_address(peer, address)
    }

    /// Whether this node may dial `address` on Kademlia's behalf.
    fn may_dial(&self, address: &Multiaddr) -> bool {
        self.local_addresses
            || super::address::scope(address) == super::address::Scope::Global
            || self.vouched.contains(address)
    }
}

impl std::ops::Deref for ScopedKad {
    type Target = kad::Behaviour<NodeStore>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for ScopedKad {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl NetworkBehaviour for ScopedKad {
    type ConnectionHandler = <kad::Behaviour<NodeStore> as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = kad::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut offered = self
            .inner
            .handle_pending_outbound_connection(id, peer, addresses, role)?;
        offered.retain(|a| {
            let ok = self.may_dial(a);
            if !ok {
                tracing::debug!(address = %a, "not dialling an address another peer named");
            }
            ok
        });
        Ok(offered)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        address: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_outbound_connection(id, peer, address, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event)
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner.on_connection_handler_event(peer, id, event)
    }

    fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}

/// Addresses from elsewhere: puts this node's declared addresses forward
/// as external address candidates, so that AutoNAT tests them as it tests
/// the addresses identify reports; and offers the addresses a provider
/// lookup named for a peer when that peer is dialled (Kademlia keeps them
/// only while its query runs, and a provider behind a NAT is in no routing
/// table).
#[derive(Default)]
pub struct AddressHints {
    queue: VecDeque<Multiaddr>,
    waker: Option<Waker>,
    peers: std::collections::HashMap<PeerId, Vec<Multiaddr>>,
}

/// Peers whose lookup addresses are remembered.
const MAX_HINTED_PEERS: usize = 4096;

impl AddressHints {
    pub fn propose(&mut self, address: Multiaddr) {
        self.queue.push_back(address);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Remembers where a lookup said `peer` is (already filtered to
    /// addresses this node may dial).
    pub fn remember(&mut self, peer: PeerId, mut addresses: Vec<Multiaddr>) {
        if addresses.is_empty() {
            return;
        }
        if self.peers.len() >= MAX_HINTED_PEERS && !self.peers.contains_key(&peer) {
            self.peers.clear();
        }
        addresses.truncate(MAX_PEX_ADDRESSES);
        self.peers.insert(peer, addresses);
    }
}

impl NetworkBehaviour for AddressHints {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(peer
            .and_then(|p| self.peers.get(&p).cloned())
            .unwrap_or_default())
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        match self.queue.pop_front() {
            Some(address) => Poll::Ready(ToSwarm::NewExternalAddrCandidate(address)),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Behaviour {
    pub fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        config: &NetConfig,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer))
            .with_max_pending_incoming(Some(config.max_connections / 2 + 1));

        let k = std::num::NonZeroUsize::new(config.kad_bucket_size).unwrap_or(kad::K_VALUE);
        let store = NodeStore::new(peer_id, config.provider_records, k.get());
        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_config
            .set_query_timeout(config.query_timeout)
            .set_kbucket_size(k)
            .set_replication_factor(k)
            .set_record_filtering(kad::StoreInserts::FilterBoth)
            .set_provider_publication_interval(Some(Duration::from_secs(3600)))
            .set_provider_record_ttl(Some(config.provider_records.ttl));
        let mut kad = ScopedKad {
            inner: kad::Behaviour::with_config(peer_id, store, kad_config),
            local_addresses: config.local_addresses,
            vouched: HashSet::new(),
        };
        // A client until this node knows it is reachable (the event loop
        // sets the mode from then on).
        kad.set_mode(Some(kad::Mode::Client));

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                .with_agent_version(format!("sp2a/{}", env!("CARGO_PKG_VERSION")))
                .with_cache_size(256)
                // Only confirmed addresses (and relayed ones) go to peers:
                // a listen address behind a NAT is one nobody can dial.
                .with_hide_listen_addrs(true),
        );
        let mdns = if config.mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config::default(),
                peer_id,
            )?)
        } else {
            None
        };
        // Strict: every message signed by its author, unsigned or badly
        // signed ones dropped; each also waits for the node's verdict
        // (validate_messages) before it is delivered or forwarded.
        let gossip_config = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .max_transmit_size(MAX_GOSSIP_MESSAGE)
            .heartbeat_interval(Duration::from_secs(1))
            .flood_publish(false)
            .build()?;
        let mut gossip = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )?;
        // Peers that send invalid messages lose gossip, their place in the
        // mesh, then every hearing (see `scoring`).
        gossip.with_peer_score(super::scoring::peer_params(), super::scoring::thresholds())?;
        let nat = &config.nat;
        let relay = nat.relay_server.then(|| {
            let server = relay::Behaviour::new(peer_id, nat.relay.to_libp2p());
            Scoped::new(server, Connections::All).direct_addresses_only()
        });
        let dial_scope = DialScope {
            local_addresses: config.local_addresses,
        };
        let autonat_server = nat.autonat.then(|| {
            Scoped::new(
                autonat::v2::server::Behaviour::default(),
                Connections::Direct,
            )
            .dialling_only(dial_scope)
        });
        // Tests untested candidates every 5 s, one per server. Not needed
        // where the listen addresses are what every peer dials.
        let settled = config.local_addresses
            || config
                .listen
                .iter()
                .all(|a| super::address::scope(a) == super::address::Scope::Loopback);
        let autonat = (nat.autonat && !settled).then(autonat::v2::client::Behaviour::default);
        let upnp = nat.upnp.then(upnp::tokio::Behaviour::default);
        let transfer = || {
            request_response(
                TRANSFER_PROTOCOL,
                MAX_TRANSFER_REQUEST,
                MAX_TRANSFER_RESPONSE,
                config,
            )
        };
        Ok(Self {
            limits: connection_limits::Behaviour::new(limits),
            kad,
            identify,
            ping: ping::Behaviour::new(ping::Config::new()),
            mdns: Toggle::from(mdns),
            relay_client,
            relay: Toggle::from(relay),
            dcutr: Scoped::new(dcutr::Behaviour::new(peer_id), Connections::All)
                .dialling_only(dial_scope),
            autonat: Toggle::from(autonat),
            autonat_server: Toggle::from(autonat_server),
            upnp: Toggle::from(upnp),
            hints: AddressHints::default(),
            adverts: request_response(
                ADVERT_PROTOCOL,
                MAX_ADVERT_REQUEST,
                MAX_ADVERT_RESPONSE,
                config,
            ),
            transfer: Scoped::new(transfer(), Connections::Direct),
            transfer_relayed: Scoped::new(transfer(), Connections::Relayed),
            invoke: request_response(
                INVOKE_PROTOCOL,
                MAX_INVOKE_REQUEST,
                MAX_INVOKE_RESPONSE,
                config,
            ),
            solicit: request_response(
                SOLICIT_PROTOCOL,
                MAX_SOLICIT_REQUEST,
                MAX_SOLICIT_RESPONSE,
                config,
            ),
            advice: request_response(
                ADVICE_PROTOCOL,
                MAX_ADVICE_REQUEST,
                MAX_ADVICE_RESPONSE,
                config,
            ),
            gossip,
        })
    }
}
