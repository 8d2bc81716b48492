//! What happens on a node, as events for progress displays, demos,
//! experiments and logs: every role emits through one [`Events`] sender.

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

/// Events recent enough for a slow subscriber to still see.
const BACKLOG: usize = 1024;

/// The sender every role emits through. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Events(broadcast::Sender<NodeEvent>);

impl Events {
    pub(crate) fn new() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }

    pub(crate) fn emit(&self, event: NodeEvent) {
        // Nobody listening is fine.
        let _ = self.0.send(event);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.0.subscribe()
    }
}
