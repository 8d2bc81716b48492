//! The composed libp2p behaviour of an sp2a node.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport, cbor};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, connection_limits, identify, kad, mdns, ping};

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
    pub kad: kad::Behaviour<NodeStore>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub adverts: cbor::Behaviour<AdvertRequest, AdvertResponse>,
    pub transfer: cbor::Behaviour<TransferRequest, TransferResponse>,
    pub invoke: cbor::Behaviour<InvokeRequest, InvokeResponse>,
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

        let store = NodeStore::new(peer_id, config.provider_records);
        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_config
            .set_query_timeout(config.query_timeout)
            .set_kbucket_size(
                std::num::NonZeroUsize::new(config.kad_bucket_size).unwrap_or(kad::K_VALUE),
            )
            .set_record_filtering(kad::StoreInserts::FilterBoth)
            .set_provider_publication_interval(Some(Duration::from_secs(3600)))
            .set_provider_record_ttl(Some(config.provider_records.ttl));
        let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
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
        })
    }
}
