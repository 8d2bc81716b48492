//! The composed libp2p behaviour of an sp2a node.

use std::collections::HashSet;
use std::time::Duration;

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport, cbor};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, connection_limits, gossipsub, identify, kad, mdns, ping,
};

use super::NetConfig;
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
    pub adverts: cbor::Behaviour<AdvertRequest, AdvertResponse>,
    pub transfer: cbor::Behaviour<TransferRequest, TransferResponse>,
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

impl Behaviour {
    pub fn new(
        key: &Keypair,
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
        kad.set_mode(Some(if config.dht_server {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        }));

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                .with_agent_version(format!("sp2a/{}", env!("CARGO_PKG_VERSION")))
                .with_cache_size(256),
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
        let gossip = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )?;
        Ok(Self {
            limits: connection_limits::Behaviour::new(limits),
            kad,
            identify,
            ping: ping::Behaviour::new(ping::Config::new()),
            mdns: Toggle::from(mdns),
            adverts: request_response(
                ADVERT_PROTOCOL,
                MAX_ADVERT_REQUEST,
                MAX_ADVERT_RESPONSE,
                config,
            ),
            transfer: request_response(
                TRANSFER_PROTOCOL,
                MAX_TRANSFER_REQUEST,
                MAX_TRANSFER_RESPONSE,
                config,
            ),
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
