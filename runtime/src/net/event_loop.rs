//! The one task that owns the libp2p `Swarm`: it executes [`Client`]
//! commands, tracks their pending replies, keeps Kademlia's routing table
//! fed from identify and mDNS, stores inbound provider records within their
//! quotas (see [`records`](super::records)), keeps this node's own
//! announcements alive (driving the [`upkeep`](super::upkeep) core: retries,
//! re-announcement when the network changes or comes back, probes of lost
//! peers) and hands peers' requests
//! to the node through a bounded channel. When that channel is full a peer's
//! request is answered `Busy` at once rather than queued without bound.
//!
//! Each connection has a tracing span (`connection`, with the peer, the
//! connection id and the remote address); a peer's request gets a span
//! inside it, which the node answers in.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::kad::{self, QueryId, QueryResult};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionId, SwarmEvent, dial_opts::DialOpts};
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat, dcutr, gossipsub, identify, mdns, noise, ping, relay, tcp,
    upnp, yamux,
};
use rand::seq::SliceRandom;
use tokio::sync::mpsc;

use super::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use super::client::{
    AddressBook, Announcement, AnnouncementState, Client, Command, ConnectionInfo, DialError, Hold,
    InboundRequest, InboundRequestId, NetInfo, Reply, RequestError,
};
use super::paths::is_relayed;
use super::protocol::*;
use super::reach::{self, Reach, Reachability};
use super::upkeep::{self, Upkeep};
use super::{NetConfig, NetError, split_peer_address};

const COMMAND_QUEUE: usize = 1024;
/// Dialling and upgrading a connection (noise, yamux) must finish in this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(7);
/// Housekeeping: the upkeep core's due actions, and the sweep of expired
/// records.
const MAINTENANCE_TICK: Duration = Duration::from_secs(1);
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Failed announcements in a row before the log warns.
const WARN_AFTER_FAILURES: u32 = 3;
/// A provider lookup returns this long after a second answer named
/// providers, rather than waiting for the whole query to visit the closest
/// peers (one answer alone could be a liar's).
const LOOKUP_GRACE: Duration = Duration::from_millis(50);
const LOOKUP_TICK: Duration = Duration::from_millis(10);

/// Starts the network: builds the swarm, listens, dials the bootstrap peers
/// and spawns the event loop. Returns the client and the inbound requests.
pub async fn start(
    keypair: libp2p::identity::Keypair,
    config: NetConfig,
) -> Result<(Client, mpsc::Receiver<InboundRequest>), NetError> {
    start_with_metrics(keypair, config, None).await
}

/// [`start`], recording libp2p's own metrics into `registry` (bytes per
/// transport and protocol, connections, Kademlia queries and requests,
/// identify, ping and gossipsub), or into one nobody reads.
pub async fn start_with_metrics(
    keypair: libp2p::identity::Keypair,
    config: NetConfig,
    registry: Option<&mut prometheus_client::registry::Registry>,
) -> Result<(Client, mpsc::Receiver<InboundRequest>), NetError> {
    let mut unread = prometheus_client::registry::Registry::default();
    let registry = registry.unwrap_or(&mut unread);
    let behaviour_config = config.clone();
    let idle_timeout = config.idle_timeout;
    // `/dns4`, `/dns6`, `/dns` and `/dnsaddr` addresses (bootstrap peers
    // named by host name) resolve with the system's resolver settings.
    let (dns_config, dns_options) = hickory_resolver::system_conf::read_system_conf()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the system's DNS settings: host names resolve from the hosts file only");
            (
                libp2p::dns::ResolverConfig::from_name_servers(Vec::new()),
                libp2p::dns::ResolverOpts::default(),
            )
        });
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_quic()
        .with_dns_config(dns_config, dns_options)
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key, relay_client| Behaviour::new(key, relay_client, &behaviour_config))
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        // Below AutoNAT's 10 s for a whole test: a dial back that goes
        // unanswered fails the test instead of timing the request out.
        .with_connection_timeout(CONNECTION_TIMEOUT)
        .build();
    let peer_id = *swarm.local_peer_id();

    let mut listeners = HashSet::new();
    for address in &config.listen {
        let id = swarm
            .listen_on(address.clone())
            .map_err(|e| NetError::Listen {
                address: address.to_string(),
                reason: e.to_string(),
            })?;
        listeners.insert(id);
    }
    let mut bootstrap = Vec::new();
    let mut bootstrap_peers = HashSet::new();
    for address in &config.bootstrap {
        let (peer, addr) = split_peer_address(address)
            .ok_or_else(|| NetError::BootstrapWithoutPeer(address.to_string()))?;
        swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        bootstrap.push(address.clone());
        bootstrap_peers.insert(peer);
    }
    let upkeep = Upkeep::new(upkeep::UpkeepConfig {
        k: config.kad_bucket_size,
        ..upkeep::UpkeepConfig::default()
    });

    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let local_addresses = config.local_addresses;
    let addresses = std::sync::Arc::new(std::sync::Mutex::new(AddressBook::default()));
    let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_queue.max(1));
    let mut event_loop = EventLoop {
        addresses: addresses.clone(),
        metrics: libp2p::metrics::Metrics::new(registry),
        swarm,
        commands: commands_rx,
        inbound: inbound_tx,
        config,
        pending_dials: HashMap::new(),
        connections: HashMap::new(),
        pending_providers: HashMap::new(),
        pending_adverts: HashMap::new(),
        pending_transfers: HashMap::new(),
        pending_invokes: HashMap::new(),
        pending_solicits: HashMap::new(),
        pending_advice: HashMap::new(),
        upkeep,
        bootstrap_peers,
        next_sweep: Instant::now() + SWEEP_EVERY,
        unwritten: HashMap::new(),
        reach: Reach::default(),
        relays: HashSet::new(),
        reservations: HashMap::new(),
        relay_backoff: HashMap::new(),
        parked: Vec::new(),
        punch_failed: HashMap::new(),
        relay_served: HashSet::new(),
        relay_circuits: 0,
        relay_circuits_closed: 0,
    };
    // Wait (briefly) until every listener reports an address, so callers can
    // hand those addresses to others right away.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !listeners.is_empty() {
        match tokio::time::timeout_at(deadline, event_loop.swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr { listener_id, .. }) => {
                listeners.remove(&listener_id);
            }
            Ok(SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            }) => {
                return Err(NetError::Listen {
                    address: format!("{listener_id:?}"),
                    reason: format!("{reason:?}"),
                });
            }
            Ok(event) => event_loop.handle_swarm_event(event),
            Err(_) => break,
        }
    }
    // In local mode, and on loopback only, every peer that can see this
    // node dials its listen addresses: they are confirmed as they are.
    let listening: Vec<Multiaddr> = event_loop.swarm.listeners().cloned().collect();
    let loopback_only = !listening.is_empty()
        && listening
            .iter()
            .all(|a| super::address::scope(a) == super::address::Scope::Loopback);
    if event_loop.config.local_addresses || loopback_only {
        for address in listening {
            event_loop.confirm(address, reach::Source::Local);
        }
    }
    // The operator's word, until AutoNAT tests it.
    for address in event_loop.config.nat.external.clone() {
        event_loop.confirm(address, reach::Source::Declared);
    }
    event_loop.apply_reach();
    for address in bootstrap {
        if let Err(e) = event_loop.swarm.dial(address.clone()) {
            tracing::warn!(%address, error = %e, "cannot dial bootstrap peer");
        }
    }
    tokio::spawn(event_loop.run());
    Ok((
        Client {
            commands: commands_tx,
            peer_id,
            addresses,
            local_addresses,
        },
        inbound_rx,
    ))
}

struct PendingProviders {
    found: HashSet<PeerId>,
    /// Answers that named at least one provider.
    answers: u32,
    /// End the query early once this many are known.
    limit: Option<usize>,
    exhaustive: bool,
    /// End the query at this time (the grace period after the providers of
    /// a second answer arrived).
    deadline: Option<Instant>,
    reply: Reply<HashSet<PeerId>>,
}

impl PendingProviders {
    fn new(limit: Option<usize>, exhaustive: bool, reply: Reply<HashSet<PeerId>>) -> Self {
        Self {
            found: HashSet::new(),
            answers: 0,
            limit,
            exhaustive,
            deadline: None,
            reply,
        }
    }

    /// One answer's providers: a random sample of at most `k` of them, so
    /// that one peer's invented ids cannot crowd out those others name.
    /// Returns whether the lookup has enough now. It never ends early on
    /// one answer alone: a fast liar naming only invented ids would
    /// otherwise end it before an honest answer arrives.
    /// `from_peer`: the providers came in a peer's answer, not from this
    /// node's own store (which only a peer's earlier record put there, so
    /// it does not count as a second answer).
    fn add(&mut self, now: Instant, mut named: Vec<PeerId>, k: usize, from_peer: bool) -> bool {
        if named.is_empty() {
            return false;
        }
        if named.len() > k {
            let mut rng = rand::thread_rng();
            named = named.choose_multiple(&mut rng, k).copied().collect();
        }
        self.found.extend(named);
        if from_peer {
            self.answers += 1;
        }
        if self.answers < 2 {
            return false;
        }
        if !self.exhaustive && self.deadline.is_none() {
            self.deadline = Some(now + LOOKUP_GRACE);
        }
        self.limit.is_some_and(|l| self.found.len() >= l)
    }
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    /// libp2p's own metrics, recorded from every swarm event.
    metrics: libp2p::metrics::Metrics,
    /// Identify's listen addresses of peers, shared with the client.
    addresses: std::sync::Arc<std::sync::Mutex<AddressBook>>,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<InboundRequest>,
    config: NetConfig,
    pending_dials: HashMap<PeerId, Vec<Reply<Result<PeerId, DialError>>>>,
    /// Each open connection.
    connections: HashMap<ConnectionId, Connection>,
    pending_providers: HashMap<QueryId, PendingProviders>,
    pending_adverts: HashMap<OutboundRequestId, Reply<Result<AdvertResponse, RequestError>>>,
    pending_transfers: HashMap<OutboundRequestId, Reply<Result<TransferResponse, RequestError>>>,
    pending_invokes: HashMap<OutboundRequestId, Reply<Result<InvokeResponse, RequestError>>>,
    pending_solicits: HashMap<OutboundRequestId, Reply<Result<SolicitResponse, RequestError>>>,
    pending_advice: HashMap<OutboundRequestId, Reply<Result<AdviceResponse, RequestError>>>,
    /// When to announce this node's keys, and which lost peers to probe.
    upkeep: Upkeep<kad::RecordKey, PeerId, Multiaddr>,
    /// The operator's bootstrap peers: watched until reached when lost.
    bootstrap_peers: HashSet<PeerId>,
    next_sweep: Instant,
    /// What transfer responses on their way to peers hold (upload permits),
    /// released when the response is written or fails.
    unwritten: HashMap<InboundRequestId, Hold>,
    /// Whether this node is reachable, and at which addresses.
    reach: Reach,
    /// Connected peers that offer to relay (identify lists the hop
    /// protocol).
    relays: HashSet<PeerId>,
    /// This node's reservation listeners, by relay.
    reservations: HashMap<ListenerId, PeerId>,
    /// Relays whose reservation failed: not asked again until then.
    relay_backoff: HashMap<PeerId, Instant>,
    /// Transfers waiting for a direct connection to their peer.
    parked: Vec<Parked>,
    /// Peers hole punching failed to reach directly, and when.
    punch_failed: HashMap<PeerId, Instant>,
    /// As a relay: peers holding a reservation here, open circuits and
    /// circuits ended.
    relay_served: HashSet<PeerId>,
    relay_circuits: usize,
    relay_circuits_closed: u64,
}

/// A transfer request waiting for a direct connection to its peer.
struct Parked {
    peer: PeerId,
    request: TransferRequest,
    download: u64,
    reply: Reply<Result<TransferResponse, RequestError>>,
    since: Instant,
    /// Once only a relayed connection reaches the peer: when to stop
    /// waiting for hole punching (then through the relay if the download
    /// is small enough, else fail).
    until: Option<Instant>,
}

/// A relay that refused or dropped a reservation is asked again after this.
const RELAY_RETRY: Duration = Duration::from_secs(30);
/// After hole punching to a peer failed, transfers do not wait for it
/// again for this long.
const PUNCH_FAILED_FOR: Duration = Duration::from_secs(60);

/// An open connection: its tracing span, the peer and its address on it.
struct Connection {
    span: tracing::Span,
    peer: PeerId,
    remote: Multiaddr,
    /// This node dialled it: `remote` is an address to dial again.
    dialer: bool,
    /// Through a relay (an inbound one has only `/p2p/<peer>` as `remote`).
    relayed: bool,
}

fn request_error(error: &OutboundFailure) -> RequestError {
    match error {
        OutboundFailure::DialFailure => RequestError::Dial,
        OutboundFailure::Timeout => RequestError::Timeout,
        OutboundFailure::ConnectionClosed => RequestError::Closed,
        OutboundFailure::UnsupportedProtocols => RequestError::Unsupported,
        OutboundFailure::Io(e) => RequestError::Io(e.to_string()),
    }
}

impl EventLoop {
    async fn run(mut self) {
        // Kademlia bootstraps by itself: when its routing table is small and
        // a peer is added (the bootstrap peers, at start), and every 5 minutes.
        let mut lookups = tokio::time::interval(LOOKUP_TICK);
        lookups.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut maintenance = tokio::time::interval(MAINTENANCE_TICK);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.handle_command(command),
                    None => break,
                },
                _ = lookups.tick(), if !self.pending_providers.is_empty() || !self.parked.is_empty() => {
                    self.finish_lookups();
                    self.reroute_parked(None);
                }
                _ = maintenance.tick() => self.maintain(Instant::now()),
            }
        }
        tracing::debug!(peer = %self.swarm.local_peer_id(), "network stopped");
    }

    fn handle_command(&mut self, command: Command) {
        let behaviour = self.swarm.behaviour_mut();
        match command {
            Command::StartProviding { key, reply } => {
                self.upkeep.provide(key);
                self.keep_up(Instant::now());
                let _ = reply.send(());
            }
            Command::StopProviding { key } => {
                behaviour.kad.stop_providing(&key);
                self.upkeep.withdraw(&key);
            }
            Command::GetProviders {
                key,
                limit,
                exhaustive,
                reply,
            } => {
                let id = behaviour.kad.get_providers(key);
                self.pending_providers
                    .insert(id, PendingProviders::new(limit, exhaustive, reply));
            }
            Command::Dial { address, reply } => {
                let Some((peer, addr)) = split_peer_address(&address) else {
                    let _ = reply.send(Err(DialError::NoPeerId(address)));
                    return;
                };
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(peer));
                    return;
                }
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
                match self
                    .swarm
                    .dial(DialOpts::peer_id(peer).addresses(vec![addr]).build())
                {
                    // A dial already in progress (e.g. the bootstrap dial)
                    // completes this one too.
                    Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                        self.pending_dials.entry(peer).or_default().push(reply)
                    }
                    Err(e) => {
                        let _ = reply.send(Err(DialError::Unreachable {
                            peer,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Advert {
                peer,
                request,
                reply,
            } => {
                let id = behaviour.adverts.send_request(&peer, request);
                self.pending_adverts.insert(id, reply);
            }
            Command::Transfer {
                peer,
                addresses,
                request,
                download,
                reply,
            } => {
                let parked = Parked {
                    peer,
                    request,
                    download,
                    reply,
                    since: Instant::now(),
                    until: None,
                };
                if !self.swarm.is_connected(&peer) {
                    // Connected first, so that the path is known before the
                    // request goes out on one. A dial already under way
                    // serves; one that cannot start fails the request now.
                    match self
                        .swarm
                        .dial(DialOpts::peer_id(peer).addresses(addresses).build())
                    {
                        Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {}
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "cannot dial for a transfer");
                            let _ = parked.reply.send(Err(RequestError::Dial));
                            return;
                        }
                    }
                }
                self.route_transfer(parked, Instant::now());
            }
            Command::Invoke {
                peer,
                request,
                reply,
            } => {
                let id = behaviour.invoke.send_request(&peer, request);
                self.pending_invokes.insert(id, reply);
            }
            Command::RespondAdvert { channel, response } => {
                let _ = behaviour.adverts.send_response(channel, response);
            }
            Command::RespondTransfer {
                channel,
                response,
                hold,
            } => {
                // Sending fails only when the peer is gone: the hold goes too.
                if behaviour.transfer.send_response(channel, response).is_ok()
                    && let Some((id, hold)) = hold
                {
                    self.unwritten.insert(id, hold);
                }
            }
            Command::RespondInvoke { channel, response } => {
                let _ = behaviour.invoke.send_response(channel, response);
            }
            Command::Solicit {
                peer,
                request,
                reply,
            } => {
                let id = behaviour.solicit.send_request(&peer, request);
                self.pending_solicits.insert(id, reply);
            }
            Command::RespondSolicit { channel, response } => {
                let _ = behaviour.solicit.send_response(channel, response);
            }
            Command::Advice {
                peer,
                request,
                reply,
            } => {
                let id = behaviour.advice.send_request(&peer, request);
                self.pending_advice.insert(id, reply);
            }
            Command::RespondAdvice { channel, response } => {
                let _ = behaviour.advice.send_response(channel, response);
            }
            Command::Subscribe { topic } => {
                let topic = gossipsub::IdentTopic::new(topic);
                if let Err(e) = behaviour.gossip.subscribe(&topic) {
                    tracing::warn!(%topic, error = %e, "cannot subscribe");
                }
                // Scored from the first message (the parameters are set).
                let _ = behaviour
                    .gossip
                    .set_topic_params(topic, super::scoring::topic_params());
            }
            Command::Unsubscribe { topic } => {
                behaviour
                    .gossip
                    .unsubscribe(&gossipsub::IdentTopic::new(topic));
            }
            Command::Publish { topic, data } => {
                let topic = gossipsub::IdentTopic::new(topic);
                // Nobody subscribed yet (a lone provider) is normal.
                if let Err(e) = behaviour.gossip.publish(topic.clone(), data) {
                    tracing::trace!(%topic, error = %e, "not published");
                }
            }
            Command::Validate { id, via, verdict } => {
                behaviour
                    .gossip
                    .report_message_validation_result(&id, &via, verdict);
            }
            Command::Connect { peer } => {
                if !self.swarm.is_connected(&peer) {
                    // Kademlia offers the addresses it knows for the peer.
                    let _ = self.swarm.dial(DialOpts::peer_id(peer).build());
                }
            }
            Command::Info { reply } => {
                let routing_table = behaviour.kad.kbuckets().map(|b| b.num_entries()).sum();
                let provider_records = behaviour.kad.store_mut().held(None);
                let dht_server = behaviour.kad.mode() == kad::Mode::Server;
                let mut announcements: Vec<Announcement> = self
                    .upkeep
                    .states()
                    .map(|(key, state)| Announcement {
                        key: super::keys::key_text(key),
                        state: state.clone(),
                    })
                    .collect();
                announcements.sort_by(|a, b| a.key.cmp(&b.key));
                let connections = self
                    .connections
                    .values()
                    .map(|c| ConnectionInfo {
                        peer: c.peer,
                        remote: c.remote.clone(),
                        relayed: c.relayed,
                        outbound: c.dialer,
                    })
                    .collect();
                let mut gossip_penalised: Vec<(PeerId, f64)> = self
                    .swarm
                    .connected_peers()
                    .filter_map(|p| {
                        let score = self.swarm.behaviour().gossip.peer_score(p)?;
                        (score < 0.0).then_some((*p, score))
                    })
                    .collect();
                gossip_penalised.sort_by(|a, b| a.1.total_cmp(&b.1));
                let source = |s: reach::Source| match s {
                    reach::Source::AutoNat => "autonat",
                    reach::Source::Upnp => "upnp",
                    reach::Source::Declared => "declared",
                    reach::Source::Local => "local",
                };
                let _ = reply.send(NetInfo {
                    peer_id: *self.swarm.local_peer_id(),
                    listen_addrs: self.swarm.listeners().cloned().collect(),
                    connected: self.swarm.connected_peers().copied().collect(),
                    routing_table,
                    provider_records,
                    announcements,
                    reachability: self.reach.reachability(),
                    dht_server,
                    confirmed: self
                        .reach
                        .confirmed()
                        .map(|(a, s)| (a.clone(), source(s)))
                        .collect(),
                    refuted: self
                        .reach
                        .refuted()
                        .map(|(a, why)| (a.clone(), why.to_owned()))
                        .collect(),
                    relayed: self.reach.relayed().cloned().collect(),
                    connections,
                    relay_reservations: self.relay_served.len(),
                    relay_circuits: self.relay_circuits,
                    relay_circuits_closed: self.relay_circuits_closed,
                    gossip_penalised,
                });
            }
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn routing_table_size(&mut self) -> usize {
        let kad = &mut self.swarm.behaviour_mut().kad;
        kad.kbuckets().map(|b| b.num_entries()).sum()
    }

    /// Carries out what the upkeep core decided is due at `now`.
    fn keep_up(&mut self, now: Instant) {
        let table = self.routing_table_size();
        while let Some(action) = self.upkeep.poll(now, table) {
            match action {
                upkeep::Action::Announce(key) => {
                    // Stores this node's record (never refused) and
                    // announces it to the peers closest to the key.
                    if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key.clone()) {
                        tracing::warn!(key = %super::keys::key_text(&key), error = %e, "cannot store own provider record");
                        self.upkeep.outcome(now, &key, Some(0));
                    }
                }
                upkeep::Action::Refresh => {
                    tracing::debug!(reason = ?self.upkeep.last_reason(), "refreshing the routing table");
                    // Fails only with an empty routing table: nothing to ask.
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
                upkeep::Action::Probe(peer, addresses) => {
                    if self.swarm.is_connected(&peer) {
                        continue;
                    }
                    tracing::debug!(%peer, "probing a lost peer");
                    // Kademlia adds the addresses it knows (within its scope).
                    let _ = self
                        .swarm
                        .dial(DialOpts::peer_id(peer).addresses(addresses).build());
                }
            }
        }
    }

    /// The outcome of an announcement (first or periodic).
    fn announced(&mut self, key: kad::RecordKey, peers_reached: Option<u32>) {
        let Some(AnnouncementState::Failed {
            failures, error, ..
        }) = self.upkeep.outcome(Instant::now(), &key, peers_reached)
        else {
            return;
        };
        // A node that starts alone (a seed) fails its first attempts as a
        // matter of course: warn only when it goes on.
        let key = super::keys::key_text(&key);
        if *failures >= WARN_AFTER_FAILURES {
            tracing::warn!(%key, failures, %error, "announcement failed; will retry");
        } else {
            tracing::debug!(%key, failures, %error, "announcement failed; will retry");
        }
    }

    /// `peer` could not be reached: the upkeep core watches it, probing the
    /// addresses this node dialled it at.
    fn lost(&mut self, peer: PeerId, addresses: Vec<Multiaddr>) {
        let bootstrap = self.bootstrap_peers.contains(&peer);
        self.upkeep
            .unreachable(Instant::now(), peer, addresses, bootstrap);
    }

    /// Due announcements and probes, and the sweep of expired records.
    fn maintain(&mut self, now: Instant) {
        self.keep_up(now);
        self.keep_relays(now);
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            let swept = self.swarm.behaviour_mut().kad.store_mut().sweep(now);
            if swept > 0 {
                tracing::debug!(swept, "expired provider records dropped");
            }
        }
    }

    /// Ends provider lookups whose grace period after the first provider
    /// has passed, answering with what they found.
    fn finish_lookups(&mut self) {
        let now = Instant::now();
        let done: Vec<QueryId> = self
            .pending_providers
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| now >= d))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                query.finish();
            }
            if let Some(pending) = self.pending_providers.remove(&id) {
                let _ = pending.reply.send(pending.found);
            }
        }
    }

    /// The direct and relayed connections to `peer`: (any direct, any
    /// relayed).
    fn paths(&self, peer: &PeerId) -> (bool, bool) {
        let mut paths = (false, false);
        for c in self.connections.values().filter(|c| c.peer == *peer) {
            if c.relayed {
                paths.1 = true;
            } else {
                paths.0 = true;
            }
        }
        paths
    }

    /// Sends a transfer request on a direct connection; failing one, waits
    /// (parked) for the dial or for hole punching to make a relayed
    /// connection direct; then through the relay if the download is small
    /// enough, else fails naming why.
    fn route_transfer(&mut self, mut parked: Parked, now: Instant) {
        let peer = parked.peer;
        let (direct, relayed) = self.paths(&peer);
        let behaviour = self.swarm.behaviour_mut();
        if direct {
            let id = behaviour.transfer.send_request(&peer, parked.request);
            self.pending_transfers.insert(id, parked.reply);
            return;
        }
        if !relayed {
            // Not connected yet: the dial decides (or the request's time).
            if now.saturating_duration_since(parked.since) >= self.config.request_timeout {
                let _ = parked.reply.send(Err(RequestError::Timeout));
            } else {
                self.parked.push(parked);
            }
            return;
        }
        let until = *parked
            .until
            .get_or_insert(now + self.config.nat.direct_wait);
        let punch_failed = self
            .punch_failed
            .get(&peer)
            .is_some_and(|at| now < *at + PUNCH_FAILED_FOR);
        if now < until && !punch_failed {
            self.parked.push(parked);
            return;
        }
        let limit = self.config.nat.max_relayed_download;
        if parked.download <= limit {
            tracing::debug!(%peer, download = parked.download, "transfer through a relay");
            let id = behaviour
                .transfer_relayed
                .send_request(&peer, parked.request);
            self.pending_transfers.insert(id, parked.reply);
        } else {
            tracing::debug!(%peer, download = parked.download, limit, "no direct path for a transfer");
            let _ = parked.reply.send(Err(RequestError::RelayOnly {
                size: parked.download,
                limit,
            }));
        }
    }

    /// Routes the parked transfers again (of `peer`, or all): a connection
    /// came or went, hole punching ended, or time passed.
    fn reroute_parked(&mut self, peer: Option<PeerId>) {
        if self.parked.is_empty() {
            return;
        }
        let now = Instant::now();
        let (again, keep): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| peer.is_none_or(|peer| p.peer == peer));
        self.parked = keep;
        for parked in again {
            self.route_transfer(parked, now);
        }
    }

    /// Fails the parked transfers to `peer` that wait for a connection, as
    /// dialling it failed.
    fn unreachable_parked(&mut self, peer: PeerId) {
        let (failed, keep): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.peer == peer && p.until.is_none());
        self.parked = keep;
        for parked in failed {
            let _ = parked.reply.send(Err(RequestError::Dial));
        }
    }

    /// An address confirmed by `source`; local ones become the swarm's
    /// external addresses here, declared ones once AutoNAT has taken them
    /// as candidates (the swarm passes on no candidate it has confirmed
    /// already); AutoNAT, UPnP and the relay client confirm theirs
    /// themselves.
    fn confirm(&mut self, address: Multiaddr, source: reach::Source) {
        match source {
            reach::Source::Local => self.swarm.add_external_address(address.clone()),
            reach::Source::Declared => self.swarm.behaviour_mut().hints.propose(address.clone()),
            reach::Source::AutoNat | reach::Source::Upnp => {}
        }
        let change = self.reach.confirm(address, source);
        self.reach_changed(change);
    }

    /// Acts on a change of reachability or advertised addresses: withdraws
    /// a refuted address, sets the Kademlia mode and relay reservations,
    /// and announces this node's keys again with the new addresses.
    fn reach_changed(&mut self, change: reach::Change) {
        if let Some(address) = &change.withdraw {
            tracing::info!(%address, "address withdrawn: a peer could not dial it back");
            self.swarm.remove_external_address(address);
        }
        if let Some(was) = change.was {
            tracing::info!(%was, now = %self.reach.reachability(), "reachability changed");
            self.apply_reach();
        }
        if change.advertised {
            let now = Instant::now();
            let table = self.routing_table_size();
            self.upkeep.addresses_changed(now, table);
            self.keep_up(now);
        }
    }

    /// Kademlia answers requests only while this node is reachable; relay
    /// reservations are held only while it is not.
    fn apply_reach(&mut self) {
        let server = self.config.dht_server && self.reach.reachability() == Reachability::Public;
        let mode = if server {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        };
        self.swarm.behaviour_mut().kad.set_mode(Some(mode));
        self.keep_relays(Instant::now());
    }

    /// Holds [`NatConfig::relays`](super::NatConfig::relays) reservations
    /// while this node is private, on connected relays, and none otherwise.
    fn keep_relays(&mut self, now: Instant) {
        let wanted = if self.reach.wants_relays() {
            self.config.nat.relays
        } else {
            0
        };
        if self.reservations.len() > wanted {
            let extra: Vec<ListenerId> = self.reservations.keys().skip(wanted).copied().collect();
            for id in extra {
                if let Some(relay) = self.reservations.remove(&id) {
                    tracing::info!(%relay, "releasing a relay reservation");
                }
                self.swarm.remove_listener(id);
            }
            return;
        }
        self.relay_backoff.retain(|_, until| now < *until);
        while self.reservations.len() < wanted {
            let used: HashSet<PeerId> = self.reservations.values().copied().collect();
            let candidate = self
                .relays
                .iter()
                .filter(|p| !used.contains(p) && !self.relay_backoff.contains_key(p))
                .find_map(|p| self.relay_address(p).map(|a| (*p, a)));
            let Some((relay, address)) = candidate else {
                break;
            };
            let circuit = address
                .with(libp2p::multiaddr::Protocol::P2p(relay))
                .with(libp2p::multiaddr::Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    tracing::info!(%relay, address = %circuit, "reserving a slot on a relay");
                    self.reservations.insert(id, relay);
                }
                Err(e) => {
                    tracing::warn!(%relay, error = %e, "cannot reserve a slot on a relay");
                    self.relay_backoff.insert(relay, now + RELAY_RETRY);
                }
            }
        }
    }

    /// A direct address of `relay` to reach it at: one this node dialled
    /// it at, else one it reported on a direct connection.
    fn relay_address(&self, relay: &PeerId) -> Option<Multiaddr> {
        let dialled = self
            .connections
            .values()
            .find(|c| c.peer == *relay && c.dialer && !c.relayed)
            .map(|c| without_peer(&c.remote));
        dialled.or_else(|| {
            let book = self.addresses.lock().expect("address book lock");
            book.entries
                .get(relay)?
                .iter()
                .find(|a| !is_relayed(a))
                .map(without_peer)
        })
    }

    fn handle_autonat(&mut self, event: autonat::v2::client::Event) {
        let autonat::v2::client::Event {
            tested_addr,
            server,
            result,
            ..
        } = event;
        let change = match result {
            Ok(()) => {
                tracing::info!(address = %tested_addr, %server, "address confirmed: a peer dialled it back");
                self.reach.confirm(tested_addr, reach::Source::AutoNat)
            }
            Err(e) => {
                tracing::info!(address = %tested_addr, %server, error = %e, "address not reachable");
                let why = format!("{server} could not dial it back: {e}");
                self.reach.refute(tested_addr, why)
            }
        };
        self.reach_changed(change);
    }

    fn handle_relay_server(&mut self, event: relay::Event) {
        match event {
            relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
                tracing::debug!(peer = %src_peer_id, "relaying for a peer (reservation)");
                self.relay_served.insert(src_peer_id);
            }
            relay::Event::ReservationClosed { src_peer_id }
            | relay::Event::ReservationTimedOut { src_peer_id } => {
                self.relay_served.remove(&src_peer_id);
            }
            relay::Event::ReservationReqDenied {
                src_peer_id,
                status,
            } => {
                tracing::debug!(peer = %src_peer_id, ?status, "relay reservation denied");
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, "relaying a circuit");
                self.relay_circuits += 1;
            }
            relay::Event::CircuitReqDenied {
                src_peer_id,
                dst_peer_id,
                status,
            } => {
                tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, ?status, "circuit denied");
            }
            relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                error,
            } => {
                tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, ?error, "circuit closed");
                self.relay_circuits = self.relay_circuits.saturating_sub(1);
                self.relay_circuits_closed += 1;
            }
            _ => {}
        }
    }

    fn handle_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal: false,
                limit,
            } => {
                tracing::info!(relay = %relay_peer_id, ?limit, "relay reservation accepted");
            }
            relay::client::Event::OutboundCircuitEstablished {
                relay_peer_id,
                limit,
            } => {
                tracing::debug!(relay = %relay_peer_id, ?limit, "circuit through a relay");
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, limit } => {
                tracing::debug!(peer = %src_peer_id, ?limit, "a peer reached this node through a relay");
            }
            _ => {}
        }
    }

    fn handle_dcutr(&mut self, event: dcutr::Event) {
        let peer = event.remote_peer_id;
        match event.result {
            Ok(connection) => {
                tracing::info!(%peer, %connection, "hole punched: a direct connection");
                self.punch_failed.remove(&peer);
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "hole punching failed");
                self.punch_failed.insert(peer, Instant::now());
            }
        }
        self.reroute_parked(Some(peer));
    }

    fn handle_upnp(&mut self, event: upnp::Event) {
        match event {
            upnp::Event::NewExternalAddr { external_addr, .. } => {
                tracing::info!(address = %external_addr, "the router forwards a port (UPnP)");
                let change = self.reach.confirm(external_addr, reach::Source::Upnp);
                self.reach_changed(change);
            }
            upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                let change = self.reach.expire(&external_addr);
                self.reach_changed(change);
            }
            upnp::Event::GatewayNotFound => {
                tracing::info!("no UPnP gateway found");
            }
            upnp::Event::NonRoutableGateway => {
                tracing::info!("the UPnP gateway is not on the internet itself");
            }
        }
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        use libp2p::metrics::Recorder;
        self.metrics.record(&event);
        match &event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(e)) => self.metrics.record(e),
            _ => {}
        }
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.handle_kad(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
            })) => {
                // Of the addresses the peer claims, only those on the host it
                // connected from: a peer cannot make us (or, through us,
                // others) dial a host it is not on.
                let Some(Connection { remote, .. }) = self.connections.get(&connection_id) else {
                    return;
                };
                let local = self.config.local_addresses;
                let listen: Vec<Multiaddr> = info
                    .listen_addrs
                    .into_iter()
                    .filter(|a| super::address::kept_claim(a, &[remote], local))
                    .take(super::protocol::MAX_PEX_ADDRESSES)
                    .collect();
                if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
                    self.relays.insert(peer_id);
                } else {
                    self.relays.remove(&peer_id);
                }
                if info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL) {
                    for address in &listen {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, address.clone());
                    }
                }
                self.addresses
                    .lock()
                    .expect("address book lock")
                    .insert(peer_id, listen);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, address) in found.into_iter().take(64) {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, address.clone());
                    if !self.swarm.is_connected(&peer) {
                        let _ = self
                            .swarm
                            .dial(DialOpts::peer_id(peer).addresses(vec![address]).build());
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Adverts(event)) => self.handle_adverts(event),
            SwarmEvent::Behaviour(BehaviourEvent::Transfer(event))
            | SwarmEvent::Behaviour(BehaviourEvent::TransferRelayed(event)) => {
                self.handle_transfer(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(event)) => self.handle_autonat(event),
            SwarmEvent::Behaviour(BehaviourEvent::Relay(event)) => self.handle_relay_server(event),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(event)) => {
                self.handle_relay_client(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(event)) => self.handle_dcutr(event),
            SwarmEvent::Behaviour(BehaviourEvent::Upnp(event)) => self.handle_upnp(event),
            SwarmEvent::ExternalAddrConfirmed { address } if is_relayed(&address) => {
                let change = self.reach.confirm(address, reach::Source::AutoNat);
                self.reach_changed(change);
            }
            SwarmEvent::NewExternalAddrCandidate { address }
                if self.reach.source(&address) == Some(reach::Source::Declared)
                    && !self.swarm.external_addresses().any(|a| *a == address) =>
            {
                // AutoNAT has the declared address to test: advertise it
                // meanwhile.
                self.swarm.add_external_address(address);
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                let change = self.reach.expire(&address);
                self.reach_changed(change);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(relay) = self.reservations.remove(&listener_id) {
                    tracing::info!(%relay, ?reason, "relay reservation ended");
                    self.relay_backoff
                        .insert(relay, Instant::now() + RELAY_RETRY);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Invoke(event)) => self.handle_invoke(event),
            SwarmEvent::Behaviour(BehaviourEvent::Solicit(event)) => self.handle_solicit(event),
            SwarmEvent::Behaviour(BehaviourEvent::Advice(event)) => self.handle_advice(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                // Strict validation: every message delivered has a source
                // whose signature gossipsub checked.
                let Some(source) = message.source else {
                    let verdict = gossipsub::MessageAcceptance::Reject;
                    self.swarm
                        .behaviour_mut()
                        .gossip
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            verdict,
                        );
                    return;
                };
                let span = tracing::debug_span!("gossip", %source, via = %propagation_source);
                self.hand_over(InboundRequest::Gossip {
                    source,
                    via: propagation_source,
                    id: message_id,
                    topic: message.topic.into_string(),
                    data: message.data,
                    span,
                });
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let span = tracing::debug_span!(
                    parent: None,
                    "connection",
                    peer = %peer_id,
                    id = %connection_id,
                    remote = %endpoint.get_remote_address(),
                );
                tracing::debug!(parent: &span, dialer = endpoint.is_dialer(), "connected");
                let remote = endpoint.get_remote_address().clone();
                self.connections.insert(
                    connection_id,
                    Connection {
                        span,
                        peer: peer_id,
                        remote,
                        dialer: endpoint.is_dialer(),
                        relayed: endpoint.is_relayed(),
                    },
                );
                self.upkeep.reached(Instant::now(), &peer_id);
                for reply in self.pending_dials.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Ok(peer_id));
                }
                self.reroute_parked(Some(peer_id));
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                cause,
                num_established,
                ..
            } => {
                if let Some(connection) = self.connections.remove(&connection_id) {
                    if num_established == 0 {
                        self.relays.remove(&connection.peer);
                    }
                    let lost = cause.is_some() && num_established == 0;
                    let cause = cause.map(|c| c.to_string());
                    tracing::debug!(parent: &connection.span, ?cause, "closed");
                    if lost {
                        let again = connection.dialer.then_some(connection.remote);
                        self.lost(connection.peer, again.into_iter().collect());
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            })) => match result {
                Ok(_) => self.upkeep.reached(Instant::now(), &peer),
                Err(ping::Failure::Unsupported) => {}
                Err(_) => {
                    let again = self
                        .connections
                        .get(&connection)
                        .filter(|c| c.dialer)
                        .map(|c| c.remote.clone());
                    self.lost(peer, again.into_iter().collect());
                }
            },
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer_id),
                error,
                ..
            } if !self.swarm.is_connected(&peer_id) => {
                tracing::debug!(peer = %peer_id, %error, "dial failed");
                // Only the operator's bootstrap peers are watched after a
                // failed dial: other peers' answers can name any peer and
                // address, and must not fill the watch list or be probed.
                if let libp2p::swarm::DialError::Transport(tried) = &error
                    && self.bootstrap_peers.contains(&peer_id)
                {
                    let tried = tried.iter().map(|(address, _)| address.clone()).collect();
                    self.lost(peer_id, tried);
                }
                self.unreachable_parked(peer_id);
                for reply in self.pending_dials.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Err(DialError::Unreachable {
                        peer: peer_id,
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::debug!(%address, "listening");
            }
            _ => {}
        }
    }

    fn handle_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::GetProviders(result),
                step,
                stats,
            } => {
                let local = *self.swarm.local_peer_id();
                let mut enough = false;
                if self.pending_providers.contains_key(&id)
                    && let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result
                {
                    // Each such step is one peer's answer (or this node's
                    // store).
                    let named: Vec<PeerId> =
                        providers.into_iter().filter(|p| *p != local).collect();
                    self.remember_addresses(&named);
                    let k = self.config.kad_bucket_size.max(1);
                    let from_peer = stats.num_requests() > 0;
                    if let Some(pending) = self.pending_providers.get_mut(&id) {
                        enough = pending.add(Instant::now(), named, k, from_peer);
                    }
                }
                if enough && let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    query.finish();
                }
                if (step.last || enough)
                    && let Some(pending) = self.pending_providers.remove(&id)
                {
                    let _ = pending.reply.send(pending.found);
                }
            }
            kad::Event::RoutingUpdated {
                is_new_peer: true, ..
            } => {
                let table = self.routing_table_size();
                self.upkeep.routing_added(Instant::now(), table);
                self.keep_up(Instant::now());
            }
            kad::Event::OutboundQueryProgressed {
                result: QueryResult::StartProviding(result) | QueryResult::RepublishProvider(result),
                stats,
                ..
            } => match result {
                Ok(kad::AddProviderOk { key }) => self.announced(key, Some(stats.num_successes())),
                Err(kad::AddProviderError::Timeout { key }) => self.announced(key, None),
            },
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::AddProvider {
                        record: Some(mut record),
                    },
            } => {
                // The provider is the peer that sent the record (Kademlia
                // checks); of the addresses it claims, pass on only those on
                // the host it is connected from.
                let remotes: Vec<&Multiaddr> = self
                    .connections
                    .values()
                    .filter(|c| c.peer == record.provider)
                    .map(|c| &c.remote)
                    .collect();
                let local = self.config.local_addresses;
                record
                    .addresses
                    .retain(|a| super::address::kept_claim(a, &remotes, local));
                record
                    .addresses
                    .truncate(super::protocol::MAX_PEX_ADDRESSES);
                let provider = record.provider;
                let stored = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .add_at(record, Instant::now());
                tracing::trace!(%provider, ?stored, "provider record");
            }
            _ => {}
        }
    }

    /// Keeps the addresses the running lookup learnt for `peers` (those
    /// Kademlia would dial: its routing table's and the query's, within
    /// this node's scope) for after the query ends.
    fn remember_addresses(&mut self, peers: &[PeerId]) {
        use libp2p::swarm::NetworkBehaviour;
        let behaviour = self.swarm.behaviour_mut();
        for peer in peers.iter().take(self.config.kad_bucket_size.max(1)) {
            let addresses = behaviour
                .kad
                .handle_pending_outbound_connection(
                    ConnectionId::new_unchecked(0),
                    Some(*peer),
                    &[],
                    libp2p::core::Endpoint::Dialer,
                )
                .unwrap_or_default();
            behaviour.hints.remember(*peer, addresses);
        }
    }

    /// The span of a peer's request on `connection`.
    fn request_span(&self, connection: ConnectionId, protocol: &'static str) -> tracing::Span {
        match self.connections.get(&connection) {
            Some(connection) => {
                tracing::debug_span!(parent: &connection.span, "request", protocol)
            }
            None => tracing::debug_span!("request", protocol, %connection),
        }
    }

    fn handle_adverts(&mut self, event: request_response::Event<AdvertRequest, AdvertResponse>) {
        if let Some((peer, connection, _, request, channel)) =
            settle(event, &mut self.pending_adverts, "advert")
        {
            let span = self.request_span(connection, ADVERT_PROTOCOL);
            self.hand_over(InboundRequest::Advert {
                peer,
                request,
                channel,
                span,
            });
        }
    }

    fn handle_transfer(
        &mut self,
        event: request_response::Event<TransferRequest, TransferResponse>,
    ) {
        if let request_response::Event::ResponseSent { request_id, .. }
        | request_response::Event::InboundFailure { request_id, .. } = &event
        {
            self.unwritten.remove(request_id);
        }
        if let Some((peer, connection, id, request, channel)) =
            settle(event, &mut self.pending_transfers, "transfer")
        {
            let span = self.request_span(connection, TRANSFER_PROTOCOL);
            let relayed = self.connections.get(&connection).is_none_or(|c| c.relayed);
            self.hand_over(InboundRequest::Transfer {
                peer,
                relayed,
                id,
                request,
                channel,
                span,
            });
        }
    }

    fn handle_invoke(&mut self, event: request_response::Event<InvokeRequest, InvokeResponse>) {
        if let Some((peer, connection, _, request, channel)) =
            settle(event, &mut self.pending_invokes, "invoke")
        {
            let span = self.request_span(connection, INVOKE_PROTOCOL);
            self.hand_over(InboundRequest::Invoke {
                peer,
                request,
                channel,
                span,
            });
        }
    }

    fn handle_solicit(&mut self, event: request_response::Event<SolicitRequest, SolicitResponse>) {
        if let Some((peer, connection, _, request, channel)) =
            settle(event, &mut self.pending_solicits, "solicit")
        {
            let span = self.request_span(connection, SOLICIT_PROTOCOL);
            self.hand_over(InboundRequest::Solicit {
                peer,
                request,
                channel,
                span,
            });
        }
    }

    fn handle_advice(&mut self, event: request_response::Event<AdviceRequest, AdviceResponse>) {
        if let Some((peer, connection, _, request, channel)) =
            settle(event, &mut self.pending_advice, "advice")
        {
            let span = self.request_span(connection, ADVICE_PROTOCOL);
            let origin = self
                .connections
                .get(&connection)
                .filter(|c| !c.relayed)
                .and_then(|c| super::address::ip_of(&c.remote));
            self.hand_over(InboundRequest::Advice {
                peer,
                origin,
                request,
                channel,
                span,
            });
        }
    }

    /// Hands a peer's request to the node; when the node's queue is full,
    /// answers `Busy` at once rather than dropping the request silently.
    fn hand_over(&mut self, request: InboundRequest) {
        let Err(e) = self.inbound.try_send(request) else {
            return;
        };
        let request = e.into_inner();
        tracing::debug!(parent: request.span(), "the node's queue is full: answering busy");
        let behaviour = self.swarm.behaviour_mut();
        // A failed send means the peer is gone: nothing more to tell it.
        match request {
            InboundRequest::Advert { channel, .. } => {
                let _ = behaviour
                    .adverts
                    .send_response(channel, AdvertResponse::Busy);
            }
            InboundRequest::Transfer { channel, .. } => {
                let busy = TransferResponse::Busy { peers: Vec::new() };
                let _ = behaviour.transfer.send_response(channel, busy);
            }
            InboundRequest::Invoke { channel, .. } => {
                let _ = behaviour
                    .invoke
                    .send_response(channel, InvokeResponse::Busy);
            }
            InboundRequest::Solicit { channel, .. } => {
                let _ = behaviour
                    .solicit
                    .send_response(channel, SolicitResponse::Busy);
            }
            InboundRequest::Advice { channel, .. } => {
                let _ = behaviour
                    .advice
                    .send_response(channel, AdviceResponse::Busy);
            }
            InboundRequest::Gossip { id, via, .. } => {
                let verdict = gossipsub::MessageAcceptance::Ignore;
                behaviour
                    .gossip
                    .report_message_validation_result(&id, &via, verdict);
            }
        }
    }
}

/// Delivers a request-response event: a reply (or failure) to one of our
/// requests goes to its waiting caller; a peer's request is returned, to be
/// handed to the node.
fn settle<Req, Resp>(
    event: request_response::Event<Req, Resp>,
    pending: &mut HashMap<OutboundRequestId, Reply<Result<Resp, RequestError>>>,
    protocol: &'static str,
) -> Option<(
    PeerId,
    ConnectionId,
    InboundRequestId,
    Req,
    ResponseChannel<Resp>,
)> {
    match event {
        request_response::Event::Message {
            peer,
            connection_id,
            message,
        } => match message {
            request_response::Message::Request {
                request_id,
                request,
                channel,
            } => return Some((peer, connection_id, request_id, request, channel)),
            request_response::Message::Response {
                request_id,
                response,
            } => {
                if let Some(reply) = pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
        },
        request_response::Event::OutboundFailure {
            request_id, error, ..
        } => {
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(Err(request_error(&error)));
            }
        }
        request_response::Event::InboundFailure { peer, error, .. } => {
            tracing::debug!(%peer, %error, protocol, "inbound request failed");
        }
        request_response::Event::ResponseSent { .. } => {}
    }
    None
}

/// `address` without a trailing `/p2p/<id>`.
fn without_peer(address: &Multiaddr) -> Multiaddr {
    let mut address = address.clone();
    if let Some(libp2p::multiaddr::Protocol::P2p(_)) = address.iter().last() {
        address.pop();
    }
    address
}

/// A peer address for others to dial: a listen address plus `/p2p/<id>`.
pub fn dialable(address: &Multiaddr, peer: PeerId) -> Multiaddr {
    address.clone().with(libp2p::multiaddr::Protocol::P2p(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(inbound_queue: usize) -> NetConfig {
        NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            inbound_queue,
            ..NetConfig::default()
        }
    }

    async fn address(client: &Client) -> Multiaddr {
        let info = client.info().await.unwrap();
        dialable(&info.listen_addrs[0], client.peer_id())
    }

    #[tokio::test]
    async fn a_full_node_queue_is_answered_busy_not_dropped() {
        // The serving node's queue holds one request, and nobody reads it.
        let (server, inbound) = start(crate::net::libp2p_identity(), loopback(1))
            .await
            .unwrap();
        let (client, _) = start(crate::net::libp2p_identity(), loopback(8))
            .await
            .unwrap();
        let peer = client.dial(address(&server).await).await.unwrap();
        let ask = AdvertRequest::Name("hello".into());
        let first = {
            let client = client.clone();
            let ask = ask.clone();
            tokio::spawn(async move { client.request_advert(peer, ask).await })
        };
        tokio::time::timeout(Duration::from_secs(20), async {
            while inbound.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the first request reaches the node's queue");
        // The queue is full: the next request is answered at once, explicitly.
        let second = client.request_advert(peer, ask).await;
        assert_eq!(second, Ok(AdvertResponse::Busy));
        assert!(
            !first.is_finished(),
            "the queued request waits for the node"
        );
        first.abort();
    }

    #[test]
    fn one_answer_of_invented_providers_does_not_end_a_lookup() {
        let now = Instant::now();
        let (reply, _) = tokio::sync::oneshot::channel();
        let mut lookup = PendingProviders::new(Some(4), false, reply);
        // A fast liar names 1,000 ids: a sample of k = 20 is kept, and the
        // lookup goes on (no limit reached, no grace period started).
        let invented: Vec<PeerId> = (0..1000).map(|_| PeerId::random()).collect();
        assert!(!lookup.add(now, invented, 20, true));
        assert_eq!(lookup.found.len(), 20);
        assert_eq!(lookup.deadline, None);
        // An empty answer changes nothing; an honest one is taken, and now
        // the lookup has enough.
        assert!(!lookup.add(now, Vec::new(), 20, true));
        let honest = PeerId::random();
        assert!(lookup.add(now, vec![honest], 20, true));
        assert!(lookup.found.contains(&honest));
        assert_eq!(lookup.deadline, Some(now + LOOKUP_GRACE));
        // Without a limit, the second answer starts the grace period.
        let (reply, _) = tokio::sync::oneshot::channel();
        let mut lookup = PendingProviders::new(None, false, reply);
        assert!(!lookup.add(now, vec![PeerId::random()], 20, true));
        assert_eq!(lookup.deadline, None);
        assert!(!lookup.add(now, vec![PeerId::random()], 20, true));
        assert_eq!(lookup.deadline, Some(now + LOOKUP_GRACE));
        // This node's own store (a record some peer put here) and one
        // answer are still one answer.
        let (reply, _) = tokio::sync::oneshot::channel();
        let mut lookup = PendingProviders::new(Some(1), false, reply);
        assert!(!lookup.add(now, vec![PeerId::random()], 20, false));
        assert!(!lookup.add(now, vec![PeerId::random()], 20, true));
        assert_eq!(lookup.deadline, None);
    }

    #[tokio::test]
    async fn dial_errors_are_typed() {
        let (client, _) = start(crate::net::libp2p_identity(), loopback(8))
            .await
            .unwrap();
        let no_peer: Multiaddr = "/ip4/127.0.0.1/tcp/9".parse().unwrap();
        assert_eq!(
            client.dial(no_peer.clone()).await,
            Err(DialError::NoPeerId(no_peer))
        );
        // A listener that closed: nobody answers there.
        let (gone, _) = start(crate::net::libp2p_identity(), loopback(8))
            .await
            .unwrap();
        let address = address(&gone).await;
        gone.shutdown().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let err = client.dial(address).await.unwrap_err();
        assert!(
            matches!(err, DialError::Unreachable { peer, .. } if peer == gone.peer_id()),
            "{err}"
        );
    }
}
