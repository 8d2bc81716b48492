//! What happens on a node, as events for progress displays, demos,
//! experiments and logs: every role emits through one [`Events`] sender,
//! which also counts each kind for the node's metrics (counted when
//! emitted, so no slow subscriber can make a count miss).

use std::time::Duration;

use tokio::sync::broadcast;

use crate::net::PeerId;
use crate::package::ContentId;

/// Something that happened on a node.
#[derive(Clone, Debug)]
pub enum NodeEvent {
    Shared {
        name: String,
        version: String,
        content_id: ContentId,
    },
    PullStarted {
        target: String,
    },
    Found {
        target: String,
        providers: usize,
        elapsed: Duration,
    },
    Downloaded {
        name: String,
        bytes: u64,
        from: Vec<PeerId>,
        elapsed: Duration,
    },
    Pulled {
        name: String,
        content_id: ContentId,
        elapsed: Duration,
    },
    /// A standby downloaded and verified a package and keeps it, not
    /// running, until it is asked to provide it.
    Prefetched {
        name: String,
        content_id: ContentId,
        bytes: u64,
    },
    PeerBanned {
        peer: PeerId,
        content_id: ContentId,
        reason: String,
    },
    Served {
        peer: PeerId,
        content_id: ContentId,
        bytes: u64,
    },
    Invoked {
        peer: PeerId,
        service: String,
    },
    /// The providers of a service need more of them: this node, their
    /// coordinator, asks these standby nodes to pull it.
    Diffusion {
        service: String,
        standbys: Vec<PeerId>,
        reason: String,
    },
    /// This node checked a provider's answer: by running the call here, or
    /// by sending one of the manifest's self-tests as an ordinary call.
    Checked {
        service: String,
        provider: PeerId,
        right: bool,
        how: &'static str,
        answer: String,
        expected: String,
    },
    /// This replica retired: the load no longer needs it.
    Regression {
        service: String,
        reason: String,
    },
}

impl NodeEvent {
    /// A stable name for the kind of event (metrics, dashboards).
    pub fn kind(&self) -> &'static str {
        match self {
            NodeEvent::Shared { .. } => "shared",
            NodeEvent::PullStarted { .. } => "pull-started",
            NodeEvent::Found { .. } => "found",
            NodeEvent::Downloaded { .. } => "downloaded",
            NodeEvent::Pulled { .. } => "pulled",
            NodeEvent::Prefetched { .. } => "prefetched",
            NodeEvent::PeerBanned { .. } => "peer-banned",
            NodeEvent::Served { .. } => "served",
            NodeEvent::Invoked { .. } => "invoked",
            NodeEvent::Diffusion { .. } => "diffusion",
            NodeEvent::Checked { right: true, .. } => "checked-right",
            NodeEvent::Checked { right: false, .. } => "checked-wrong",
            NodeEvent::Regression { .. } => "regression",
        }
    }
}

/// Events recent enough for a slow subscriber to still see.
const BACKLOG: usize = 1024;

/// The sender every role emits through, and the count of each kind.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Events {
    sender: broadcast::Sender<NodeEvent>,
    counts: super::metrics::EventCounts,
}

impl Events {
    pub(crate) fn new(counts: super::metrics::EventCounts) -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
            counts,
        }
    }

    pub(crate) fn emit(&self, event: NodeEvent) {
        self.counts.count(event.kind());
        // Nobody listening is fine.
        let _ = self.sender.send(event);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.sender.subscribe()
    }
}
