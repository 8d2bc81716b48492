//! What a node reports about itself (`sp2a status`): peers, services,
//! transfers and upload counters, as plain serializable values.

use serde::{Deserialize, Serialize};

pub use super::upload::Counters;

/// A snapshot of a node.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    pub peer_id: String,
    pub listen: Vec<String>,
    pub peers: Vec<String>,
    pub routing_table: usize,
    /// Provider records from other peers held here.
    #[serde(default)]
    pub provider_records: usize,
    /// This node's announcements in the DHT (what it shares, pulls or holds).
    #[serde(default)]
    pub announcements: Vec<AnnouncementStatus>,
    pub services: Vec<ServiceStatus>,
    /// Services this node offers to host when their providers ask.
    #[serde(default)]
    pub standby: Vec<String>,
    /// The live feeds this node holds for the services it runs.
    #[serde(default)]
    pub feeds: Vec<super::FeedStatus>,
    pub transfers: Vec<TransferStatus>,
    pub counters: Counters,
    /// Whether peers on the internet can reach this node, and how.
    #[serde(default)]
    pub reach: ReachStatus,
    /// Every open connection, direct or through a relay.
    #[serde(default)]
    pub connections: Vec<ConnectionStatus>,
    /// Peers penalised for invalid gossip (a negative gossipsub score),
    /// lowest first.
    #[serde(default)]
    pub gossip_penalised: Vec<GossipPenalty>,
}

/// A peer penalised by gossipsub's scoring.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GossipPenalty {
    pub peer: String,
    pub score: f64,
    /// Below the graylist threshold: nothing it sends is read.
    pub graylisted: bool,
}

/// Reachability, confirmed and relayed addresses, and relaying for others.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReachStatus {
    /// `public`, `private` or `unknown`.
    pub reachability: String,
    /// `server`: answers DHT requests (only while public); `client`.
    pub dht: String,
    /// Direct addresses confirmed, each with how (`autonat`: a peer
    /// dialled it back; `upnp`; `declared`: the operator's, not yet
    /// tested; `local`).
    pub confirmed: Vec<(String, String)>,
    /// Addresses a peer could not dial back, with its answer.
    pub refuted: Vec<(String, String)>,
    /// This node's relayed addresses (its reservations on relays).
    pub relayed: Vec<String>,
    /// As a relay: peers holding a reservation here, circuits open now and
    /// circuits ended since start.
    pub relaying_reservations: usize,
    pub relaying_circuits: usize,
    pub relaying_circuits_closed: u64,
}

/// One open connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnectionStatus {
    pub peer: String,
    pub remote: String,
    /// `direct` or `relayed`.
    pub path: String,
    /// `out`: this node dialled it; `in`.
    pub direction: String,
}

/// One key this node provides (CID text) and how announcing it went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnnouncementStatus {
    pub key: String,
    /// `announced`, `pending` or `failed`.
    pub state: String,
    /// DHT peers the last announcement reached.
    pub peers: u32,
    /// Failed attempts in a row.
    pub failures: u32,
    pub error: Option<String>,
    /// When a failed announcement is tried again.
    pub retry_in_secs: Option<u64>,
    /// How long ago the last announcement reached its peers (announced
    /// keys; keys are announced again when the network changes).
    #[serde(default)]
    pub announced_ms_ago: Option<u64>,
}

impl AnnouncementStatus {
    pub fn from_net(announcement: &crate::net::Announcement) -> Self {
        use crate::net::AnnouncementState;
        let mut status = Self {
            key: announcement.key.clone(),
            state: String::new(),
            peers: 0,
            failures: 0,
            error: None,
            retry_in_secs: None,
            announced_ms_ago: None,
        };
        match &announcement.state {
            AnnouncementState::Pending { failures } => {
                status.state = "pending".into();
                status.failures = *failures;
            }
            AnnouncementState::Announced { peers, at } => {
                status.state = "announced".into();
                status.peers = *peers;
                status.announced_ms_ago = Some(at.elapsed().as_millis() as u64);
            }
            AnnouncementState::Failed {
                failures,
                error,
                retry_at,
            } => {
                status.state = "failed".into();
                status.failures = *failures;
                status.error = Some(error.clone());
                status.retry_in_secs = Some(
                    retry_at
                        .saturating_duration_since(std::time::Instant::now())
                        .as_secs(),
                );
            }
        }
        status
    }
}

/// A service the node runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// `pinned`: its operator shared it here, it never retires; `replica`:
    /// pulled (or restored) here.
    #[serde(default)]
    pub role: String,
    pub name: String,
    pub version: String,
    pub content_id: String,
    pub size: u64,
    pub busy_invocations: usize,
    /// The paper's limit L here.
    #[serde(default)]
    pub limit: usize,
    /// Over the last 5 s: calls answered and callers turned away (`Busy`
    /// because every slot was taken; not a peer refused beyond its fair
    /// share) per second, and the 95th percentile of call latency
    /// (interpolated within a factor-of-two bucket).
    #[serde(default)]
    pub calls_per_s: f64,
    #[serde(default)]
    pub busy_per_s: f64,
    #[serde(default)]
    pub p95_ms: Option<f64>,
    /// For services that replicate (`<replicas>` in the manifest): the
    /// group's estimate as this node sees it, and its last decision.
    #[serde(default)]
    pub group: Option<super::GroupStatus>,
}

/// A pull in progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransferStatus {
    pub target: String,
    pub stage: String,
    pub bytes: u64,
    pub total: u64,
    pub provider: Option<String>,
}
