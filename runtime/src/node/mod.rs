//! The node: the paper's RPSManager. It shares services (activates them and
//! announces them in the DHT), finds them on other peers, pulls them (check
//! before download, verified transfer with retries across providers,
//! activation, then providing them itself), and answers peers' requests for
//! adverts, blocks and invocations within its policy.
//!
//! This is where [`crate::sandbox`] and [`crate::net`] meet; neither knows
//! the other. [`Node`] is a thin handle over roles that each own their state:
//!
//! * [`config`]: every setting, the configuration file and overrides.
//! * `services`: the services this node runs (activated, stored, announced).
//! * `discovery`: finding providers and their signed adverts; serving adverts.
//! * `upload`: the upload server (slots, uplink, counts, peer exchange).
//! * `invoke`: local and remote calls (provider cache); serving calls.
//! * `replication`: load reports among a service's providers, solicited
//!   pulls and retirement (driving [`crate::replication`]).
//! * `standby`: the services this node offers to host; solicitations.
//! * `feed`: the live feeds the services here read (subscriptions,
//!   verified segments); feed sources.
//! * `pull`: pulls (admission before download, activation, bans).
//! * `download`: the download strategies (driving [`crate::swarm`]; sequential).
//! * `inbound`: hands each peer request to the role that answers it.
//! * [`mod@activate`]: admit, verify, compile, audit, self-test.
//! * [`report`]: the audit report of a package.
//! * [`store`]: the crash-safe package store.
//! * [`control`]: the operator's local control socket.
//! * `events` and `status`: what the node tells its operator.

pub mod activate;
pub mod config;
pub mod control;
mod discovery;
mod download;
mod events;
mod feed;
mod inbound;
mod invoke;
pub mod load;
mod metrics;
mod partial;
mod per_peer;
mod pull;
mod replication;
pub mod report;
mod reputation;
mod services;
mod standby;
mod status;
pub mod store;
mod upload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

pub use activate::{ActivateError, LocalService, activate};
pub use config::{
    ConfigError, NodeConfig, Overrides, PullConfig, ReplicationConfig, Strategy, UploadConfig,
};
pub use discovery::{Found, Lookup, Untrusted};
pub use events::NodeEvent;
pub use feed::{FeedSource, FeedStatus};
pub use invoke::RemoteOutcome;
pub use pull::{PullError, PullFuture, PullProgress, PullStage, Pulled, RefusedVersion};
pub use replication::GroupStatus;
pub use report::{Objection, PackageReport, audit_package};
pub use reputation::{ProviderStanding, ServiceStanding};
pub use services::Provided;
pub use status::{
    AnnouncementStatus, ConnectionStatus, Counters, GossipPenalty, ReachStatus, ServiceStatus,
    Status, TransferStatus,
};

use crate::net::{self, Client, DialError, PeerId};
use crate::package::{ContentId, Package};
use crate::policy::Policy;
use crate::sandbox::{CallOutcome, InvokeError, Sandbox};
use discovery::Discovery;
use events::Events;
use invoke::Invoker;
use pull::Pulls;
use services::Services;
use store::Store;
use upload::Uploads;

/// Node failures.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Activate(#[from] ActivateError),
    #[error(transparent)]
    Pull(#[from] Arc<PullError>),
    #[error("cannot create {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("no provider of service {0:?} answered")]
    NoProvider(String),
    #[error("{service} on {peer}: {reason}")]
    Remote {
        service: String,
        peer: String,
        reason: String,
    },
    #[error("every provider of {service} declined: {}", .reasons.join("; "))]
    AllDeclined {
        service: String,
        reasons: Vec<String>,
    },
    #[error("this node does not run service {0:?}")]
    NotRunning(String),
    #[error("{0} is pinned here (its operator shared it): it does not retire")]
    Pinned(String),
    #[error(
        "{0:?} does not name a publisher: give its key (ed25519:<64 hex digits>) or at least 8 leading hex digits of it"
    )]
    BadPublisher(String),
    #[error(
        "{name} is provided here by {} publishers ({}): pin one in the policy ([pin] {name} = \"ed25519:…\") or call it as {name}@<publisher>",
        .publishers.len(),
        .publishers.join(", ")
    )]
    Ambiguous {
        name: String,
        publishers: Vec<String>,
    },
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error("internal error: {0}")]
    Internal(String),
}

struct Inner {
    client: Client,
    events: Events,
    services: Arc<Services>,
    discovery: Arc<Discovery>,
    uploads: Arc<Uploads>,
    invoker: Arc<Invoker>,
    pulls: Arc<Pulls>,
    /// The services this node offers to host when their providers ask.
    standby: Arc<standby::Standby>,
    replication: Arc<replication::Replication>,
    feeds: Arc<feed::FeedRole>,
    /// The live feeds' buffers (also read by the sandbox).
    feed_buffers: crate::feed::Feeds,
    reputation: Arc<reputation::Reputations>,
    metrics: Arc<metrics::Metrics>,
    started: Instant,
}

/// A running node. Cheap to clone; all clones are the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.peer_id())
            .finish()
    }
}

impl Node {
    /// Starts a node: identity and store from the data directory, network,
    /// the roles and request handling; then re-activates and re-announces
    /// every stored package (those the policy no longer accepts are skipped
    /// and logged).
    pub async fn start(
        config: NodeConfig,
        policy: Policy,
        sandbox: Sandbox,
    ) -> Result<Node, NodeError> {
        crate::files::create_private_dir(&config.data_dir).map_err(|source| {
            NodeError::DataDir {
                path: config.data_dir.display().to_string(),
                source,
            }
        })?;
        let keypair = net::load_or_create_identity(&config.data_dir.join("identity.key"))?;
        let store = Store::open(&config.data_dir.join("store"))?;
        let mut metrics = metrics::Metrics::new();
        let (client, inbound) = net::event_loop::start_with_metrics(
            keypair.clone(),
            config.net.clone(),
            Some(metrics.libp2p_registry()),
        )
        .await?;
        let metrics = Arc::new(metrics);
        let events = Events::new(metrics.event_counts());
        let feed_buffers = crate::feed::Feeds::default();
        let services = Arc::new(Services::new(
            sandbox.with_feeds(feed_buffers.clone()),
            policy,
            store,
            client.clone(),
            events.clone(),
            config.max_invocations_per_service,
        ));
        let discovery = Arc::new(Discovery::new(
            client.clone(),
            services.clone(),
            config.pull.advert_timeout,
        ));
        let uploads = Arc::new(Uploads::new(
            config.upload.clone(),
            config.net.nat.max_relayed_download,
            client.clone(),
            services.clone(),
            events.clone(),
        ));
        let reputation = Arc::new(reputation::Reputations::new(
            client.clone(),
            keypair,
            services.clone(),
            events.clone(),
            config.reputation.clone(),
        ));
        let invoker = Arc::new(Invoker::new(
            client.clone(),
            services.clone(),
            uploads.clone(),
            events.clone(),
            config.allow.clone(),
            reputation.clone(),
            metrics.clone(),
        ));
        let pulls = Arc::new(Pulls::new(
            config.pull.clone(),
            config.reshare,
            client.clone(),
            services.clone(),
            discovery.clone(),
            uploads.clone(),
            events.clone(),
            partial::Partials::new(
                config.data_dir.join("partial"),
                config.pull.keep_partial,
                config.pull.max_partial,
            ),
            metrics.clone(),
        ));
        let feeds = Arc::new(feed::FeedRole::new(
            client.clone(),
            services.clone(),
            feed_buffers.clone(),
        ));
        let standby = Arc::new(standby::Standby::new(
            &config.standby,
            client.clone(),
            discovery.clone(),
            services.clone(),
            pulls.clone(),
            feeds.clone(),
        ));
        let replication = Arc::new(replication::Replication::new(
            client.clone(),
            services.clone(),
            discovery.clone(),
            uploads.clone(),
            events.clone(),
            config.replication.clone(),
        ));
        let answerers = inbound::Answerers {
            client: client.clone(),
            discovery: discovery.clone(),
            uploads: uploads.clone(),
            invoker: invoker.clone(),
            standby: standby.clone(),
            replication: replication.clone(),
            feeds: feeds.clone(),
            reputation: reputation.clone(),
        };
        tokio::spawn(inbound::serve(answerers, inbound));
        tokio::spawn(pull::sweep_saved_downloads(Arc::downgrade(&pulls)));
        services.restore(true).await?;
        standby.announce().await;
        tokio::spawn(replication::Replication::run(Arc::downgrade(&replication)));
        tokio::spawn(feed::FeedRole::run(Arc::downgrade(&feeds)));
        if config.prefetch && !config.standby.is_empty() {
            tokio::spawn(standby::Standby::prefetch(Arc::downgrade(&standby)));
        }
        Ok(Node {
            inner: Arc::new(Inner {
                client,
                events,
                services,
                discovery,
                uploads,
                invoker,
                pulls,
                standby,
                replication,
                feeds,
                feed_buffers,
                reputation,
                metrics,
                started: Instant::now(),
            }),
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.inner.client.peer_id()
    }

    /// The network client (for addresses and diagnostics).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub fn policy(&self) -> &Policy {
        self.inner.services.policy()
    }

    /// Subscribes to this node's events.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// Addresses other nodes can dial (`.../p2p/<peer id>`).
    pub async fn addresses(&self) -> Vec<net::Multiaddr> {
        let peer = self.peer_id();
        self.inner
            .client
            .info()
            .await
            .map(|info| {
                info.listen_addrs
                    .iter()
                    .map(|a| net::event_loop::dialable(a, peer))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Connects to a peer (`/ip4/.../tcp/.../p2p/<id>`).
    pub async fn dial(&self, address: net::Multiaddr) -> Result<PeerId, DialError> {
        self.inner.client.dial(address).await
    }

    /// shareRPS: activates a package (admission, verification, audit,
    /// self-test), stores it and announces this node as its provider.
    pub async fn share(&self, package: Package) -> Result<ContentId, NodeError> {
        let id = self.inner.services.run(package, true).await?;
        self.inner.services.pin(&id)?;
        Ok(id)
    }

    /// Starts publishing live feed `name` from this node, signed with the
    /// source's `key`, numbering segments from `first`.
    pub async fn feed_source(
        &self,
        name: &str,
        key: crate::package::SecretKey,
        first: u64,
    ) -> Result<FeedSource, crate::feed::SegmentError> {
        FeedSource::start(
            self.inner.client.clone(),
            self.inner.feed_buffers.clone(),
            name,
            key,
            first,
        )
        .await
    }

    /// Asks standby node `standby` to pull the service `name` this node
    /// provides (the version it runs) and provide it too: the paper's
    /// solicited pull.
    pub async fn solicit(
        &self,
        standby: PeerId,
        name: &str,
    ) -> Result<net::protocol::SolicitResponse, NodeError> {
        let running = self.inner.services.resolve(name)?;
        let request = net::protocol::SolicitRequest {
            service: running.package.manifest().name.clone(),
            content_id: running.package.content_id().0,
        };
        self.inner
            .client
            .request_solicit(standby, request)
            .await
            .map_err(|e| NodeError::Remote {
                service: name.to_owned(),
                peer: standby.to_string(),
                reason: e.to_string(),
            })
    }

    /// Retires the service `name` here (the paper's regression): its
    /// provider records are withdrawn, new calls and downloads are no longer
    /// served, calls in flight finish, and the package is kept (not
    /// restored at start; pulled again, it is activated without a
    /// download). A pinned service does not retire.
    pub async fn retire(&self, name: &str) -> Result<ContentId, NodeError> {
        self.inner.services.retire(name).await
    }

    /// The standby nodes of service `name`: nodes that offer to host it
    /// when its providers ask (this node excluded).
    pub async fn find_standbys(&self, name: &str) -> Vec<PeerId> {
        let me = self.peer_id();
        let mut found: Vec<PeerId> = self
            .inner
            .client
            .get_all_providers(net::keys::standby_key(name))
            .await
            .into_iter()
            .filter(|p| *p != me)
            .collect();
        found.sort();
        found
    }

    /// The services this node runs.
    pub fn services(&self) -> Vec<Arc<Provided>> {
        self.inner.services.all()
    }

    /// The service `name` (or `name@publisher`) means here: its newest
    /// version, unless the name is ambiguous (see [`NodeError::Ambiguous`]).
    pub fn service(&self, name: &str) -> Option<Arc<Provided>> {
        self.inner.services.resolve(name).ok()
    }

    /// findRPS: the providers of a service and their verified adverts (the
    /// paper's result vector), newest version first. Adverts of publishers
    /// this node does not trust are not read (see [`Node::lookup_all`]).
    pub async fn find(&self, name: &str) -> Vec<Found> {
        self.inner.discovery.find(name, false).await.found
    }

    /// Like [`Node::find`], with a DHT query that runs to the end: every
    /// provider the network can name, at the cost of more time.
    pub async fn find_all(&self, name: &str) -> Vec<Found> {
        self.inner.discovery.find(name, true).await.found
    }

    /// Like [`Node::find_all`], also listing the providers whose adverts
    /// are by publishers this node does not trust.
    pub async fn lookup_all(&self, name: &str) -> Lookup {
        self.inner.discovery.find(name, true).await
    }

    /// Pulls a service by name (its newest admissible version) or a package
    /// by content id (64 hex digits); joins an identical pull in progress.
    pub async fn pull(&self, target: &str) -> Result<Pulled, Arc<PullError>> {
        self.pull_with_progress(target).0.await
    }

    /// Like [`Node::pull`], also returning a progress receiver.
    pub fn pull_with_progress(&self, target: &str) -> (PullFuture, watch::Receiver<PullProgress>) {
        self.inner.pulls.start(target)
    }

    /// Calls a function of a service this node runs.
    pub async fn invoke_local(&self, name: &str, call: &str) -> Result<CallOutcome, NodeError> {
        self.inner.invoker.local(name, call).await
    }

    /// Calls a function of a service on a remote provider without
    /// downloading it. Providers at their limit (`Busy`), refusing this peer
    /// or unreachable are skipped; a call that ran and failed is returned.
    pub async fn invoke_remote(&self, name: &str, call: &str) -> Result<RemoteOutcome, NodeError> {
        self.inner.invoker.remote(name, call).await
    }

    /// How the providers of service `name` stand with this node: their
    /// reputation and the evidence it rests on, best first.
    pub fn reputation(&self, name: &str) -> ServiceStanding {
        self.inner.reputation.standing(name)
    }

    /// Asks the advisors of `provider` (as a provider of service `name`)
    /// what they saw, now, and takes what passes every check. Returns the
    /// advisors whose answers were admitted and refused.
    pub async fn consult(&self, name: &str, provider: PeerId) -> (usize, usize) {
        self.inner.reputation.consult(name, provider).await
    }

    /// The node's metrics in the OpenMetrics text format (see
    /// `node::metrics`): its counters, and its status now.
    pub async fn metrics_text(&self) -> String {
        let status = self.status().await;
        self.inner.metrics.render(&status)
    }

    /// Peers, services, transfers and counters.
    pub async fn status(&self) -> Status {
        let info = self.inner.client.info().await;
        let limit = self.inner.services.max_invocations();
        let services = self
            .services()
            .iter()
            .map(|p| {
                let load = p.load(5);
                ServiceStatus {
                    role: if p.pinned() { "pinned" } else { "replica" }.into(),
                    name: p.package.manifest().name.clone(),
                    version: p.package.manifest().version.to_string(),
                    content_id: p.package.content_id().to_string(),
                    size: p.package.advert().component_len(),
                    busy_invocations: p.busy_invocations(limit),
                    limit: p.limit(),
                    calls_per_s: load.calls_per_s,
                    busy_per_s: load.busy_per_s,
                    p95_ms: load.p95.map(|d| d.as_secs_f64() * 1000.0),
                    group: self.inner.replication.status(p),
                }
            })
            .collect();
        let transfers = self
            .inner
            .pulls
            .in_progress()
            .into_iter()
            .map(|(target, progress)| TransferStatus {
                target,
                stage: format!("{:?}", progress.stage),
                bytes: progress.bytes,
                total: progress.total,
                provider: progress.provider.map(|p| p.to_string()),
            })
            .collect();
        Status {
            peer_id: self.peer_id().to_string(),
            listen: self
                .addresses()
                .await
                .iter()
                .map(|a| a.to_string())
                .collect(),
            peers: info
                .as_ref()
                .map(|i| i.connected.iter().map(|p| p.to_string()).collect())
                .unwrap_or_default(),
            routing_table: info.as_ref().map(|i| i.routing_table).unwrap_or(0),
            provider_records: info.as_ref().map(|i| i.provider_records).unwrap_or(0),
            announcements: info
                .as_ref()
                .map(|i| {
                    i.announcements
                        .iter()
                        .map(AnnouncementStatus::from_net)
                        .collect()
                })
                .unwrap_or_default(),
            services,
            standby: self.inner.standby.names(),
            feeds: self.inner.feeds.status(),
            transfers,
            counters: self.counters(),
            reach: info.as_ref().map(reach_status).unwrap_or_default(),
            connections: info
                .as_ref()
                .map(|i| {
                    let mut connections: Vec<ConnectionStatus> = i
                        .connections
                        .iter()
                        .map(|c| ConnectionStatus {
                            peer: c.peer.to_string(),
                            remote: c.remote.to_string(),
                            path: if c.relayed { "relayed" } else { "direct" }.into(),
                            direction: if c.outbound { "out" } else { "in" }.into(),
                        })
                        .collect();
                    connections.sort_by(|a, b| (&a.peer, &a.remote).cmp(&(&b.peer, &b.remote)));
                    connections
                })
                .unwrap_or_default(),
            gossip_penalised: info
                .as_ref()
                .map(|i| {
                    let graylist = crate::net::scoring::thresholds().graylist_threshold;
                    i.gossip_penalised
                        .iter()
                        .map(|(peer, score)| GossipPenalty {
                            peer: peer.to_string(),
                            score: *score,
                            graylisted: *score < graylist,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// What this node has served since it started.
    pub fn counters(&self) -> Counters {
        self.inner.uploads.counters()
    }

    /// How long this node has been running.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Withdraws every provider record and stops the network. Packages are
    /// already complete on disk (atomic writes), so nothing is half-written.
    pub async fn shutdown(&self) {
        self.inner.services.withdraw().await;
        self.inner.client.shutdown().await;
    }
}

/// The network's reachability as the status reports it.
fn reach_status(info: &net::NetInfo) -> ReachStatus {
    ReachStatus {
        reachability: info.reachability.to_string(),
        dht: if info.dht_server { "server" } else { "client" }.into(),
        confirmed: info
            .confirmed
            .iter()
            .map(|(a, how)| (a.to_string(), (*how).to_owned()))
            .collect(),
        refuted: info
            .refuted
            .iter()
            .map(|(a, why)| (a.to_string(), why.clone()))
            .collect(),
        relayed: info.relayed.iter().map(|a| a.to_string()).collect(),
        relaying_reservations: info.relay_reservations,
        relaying_circuits: info.relay_circuits,
        relaying_circuits_closed: info.relay_circuits_closed,
    }
}
