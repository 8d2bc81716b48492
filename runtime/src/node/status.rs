//! What a node reports about itself (`sp2a status`): peers, services,
//! transfers and upload counters, as plain serializable values.

use serde::{Deserialize, Serialize};

pub use super::upload::Counters;

/// A snapshot of a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub peer_id: String,
    pub listen: Vec<String>,
    pub peers: Vec<String>,
    pub routing_table: usize,
    pub services: Vec<ServiceStatus>,
    pub transfers: Vec<TransferStatus>,
    pub counters: Counters,
}

/// A service the node runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub version: String,
    pub content_id: String,
    pub size: u64,
    pub busy_invocations: usize,
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
