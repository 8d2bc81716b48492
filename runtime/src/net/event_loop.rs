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
use libp2p::kad::{self, QueryId, QueryResult};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionId, SwarmEvent, dial_opts::DialOpts};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, mdns, noise, ping, tcp, yamux};
use rand::seq::SliceRandom;
use tokio::sync::mpsc;

use super::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use super::client::{
    AddressBook, Announcement, AnnouncementState, Client, Command, DialError, Hold, InboundRequest,
    InboundRequestId, NetInfo, Reply, RequestError,
};
use super::protocol::*;
use super::upkeep::{self, Upkeep};
use super::{NetConfig, NetError, split_peer_address};

const COMMAND_QUEUE: usize = 1024;
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
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key| Behaviour::new(key, &behaviour_config))
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
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
}

/// An open connection: its tracing span, the peer and its address on it.
struct Connection {
    span: tracing::Span,
    peer: PeerId,
    remote: Multiaddr,
    /// This node dialled it: `remote` is an address to dial again.
    dialer: bool,
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
                _ = lookups.tick(), if !self.pending_providers.is_empty() => self.finish_lookups(),
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
                reply,
            } => {
                let id = behaviour
                    .transfer
                    .send_request_with_addresses(&peer, request, addresses);
                self.pending_transfers.insert(id, reply);
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
                let mut announcements: Vec<Announcement> = self
                    .upkeep
                    .states()
                    .map(|(key, state)| Announcement {
                        key: super::keys::key_text(key),
                        state: state.clone(),
                    })
                    .collect();
                announcements.sort_by(|a, b| a.key.cmp(&b.key));
                let _ = reply.send(NetInfo {
                    peer_id: *self.swarm.local_peer_id(),
                    listen_addrs: self.swarm.listeners().cloned().collect(),
                    connected: self.swarm.connected_peers().copied().collect(),
                    routing_table,
                    provider_records,
                    announcements,
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
                let listen: Vec<Multiaddr> = info
                    .listen_addrs
                    .into_iter()
                    .filter(|a| super::address::same_host(a, remote))
                    .take(super::protocol::MAX_PEX_ADDRESSES)
                    .collect();
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
            SwarmEvent::Behaviour(BehaviourEvent::Transfer(event)) => self.handle_transfer(event),
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
                    },
                );
                self.upkeep.reached(Instant::now(), &peer_id);
                for reply in self.pending_dials.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Ok(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                cause,
                num_established,
                ..
            } => {
                if let Some(connection) = self.connections.remove(&connection_id) {
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
                if let Some(pending) = self.pending_providers.get_mut(&id)
                    && let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result
                {
                    // Each such step is one peer's answer (or this node's
                    // store).
                    let named = providers.into_iter().filter(|p| *p != local).collect();
                    let k = self.config.kad_bucket_size.max(1);
                    let from_peer = stats.num_requests() > 0;
                    enough = pending.add(Instant::now(), named, k, from_peer);
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
                record.addresses.retain(|a| {
                    remotes
                        .iter()
                        .any(|remote| super::address::same_host(a, remote))
                });
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
            self.hand_over(InboundRequest::Transfer {
                peer,
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
            self.hand_over(InboundRequest::Advice {
                peer,
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
