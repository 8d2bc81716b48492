//! Gossipsub peer scoring: what a peer that sends invalid messages (forged
//! or malformed feed segments and load reports, which the node rejects after
//! a signature check each) comes to: first no gossip, then pruned from the
//! topic's mesh, then graylisted, its messages dropped unread.
//!
//! Only what a peer demonstrably did counts, so that an honest peer on a
//! quiet topic keeps a score of about zero:
//!
//! - **P4, invalid messages** (weight −20, topic weight 1): the score falls
//!   by 20·n² for n rejected messages (decaying by 0.9 a second, so a
//!   mistake is forgotten within a minute). A negative score takes a peer
//!   out of every mesh at the next heartbeat (pruned) and, below −10, out
//!   of gossip; below the graylist threshold (−80) everything it sends is
//!   dropped before it costs a signature check. Whatever credit it earned
//!   before (below), two invalid messages prune a peer and three graylist
//!   it: a flood of 1,000 is checked about three times.
//! - **P1, time in the mesh** (0.01 per second, capped at 5) and **P2,
//!   first deliveries** (1 per valid message first delivered, decaying by
//!   half a second, capped at 10): a small credit for useful peers, less
//!   than one invalid message costs.
//! - **P3, mesh delivery deficits, off.** Load reports come once a second
//!   per provider and feeds at their source's pace: a peer that delivers
//!   little is not misbehaving, and would be penalised on quiet topics.
//! - **P6, IP colocation** (libp2p's default, −5 per peer beyond 10 on one
//!   address, squared), loopback excepted: tests and benchmarks run every
//!   node on it. **P7, protocol misbehaviour** (re-grafting during a prune
//!   back-off, broken IWANT promises): libp2p's defaults.
//!
//! The node rejects only messages that are invalid whoever sends them (do
//! not decode, a bad signature, out of range, another feed's). A message
//! that is invalid only in this node's view (a load report whose author
//! this node's lookups do not list as a provider) is rejected only when its
//! author sent it; relayed by another peer it is ignored, so that an honest
//! peer whose view differs is not penalised for forwarding it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::gossipsub::{PeerScoreParams, PeerScoreThresholds, TopicScoreParams};

/// The score of each topic's deliveries (see the module documentation).
pub fn topic_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 500.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.5,
        first_message_deliveries_cap: 10.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_message_deliveries_decay: 0.5,
        mesh_message_deliveries_cap: 100.0,
        mesh_message_deliveries_threshold: 1.0,
        mesh_message_deliveries_window: Duration::from_millis(10),
        mesh_message_deliveries_activation: Duration::from_secs(5),
        mesh_failure_penalty_weight: 0.0,
        mesh_failure_penalty_decay: 0.5,
        invalid_message_deliveries_weight: -20.0,
        invalid_message_deliveries_decay: 0.9,
    }
}

/// The peer-wide parameters; topics get [`topic_params`] as they are
/// subscribed to.
pub fn peer_params() -> PeerScoreParams {
    PeerScoreParams {
        ip_colocation_factor_whitelist: [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
        .into_iter()
        .collect(),
        ..PeerScoreParams::default()
    }
}

/// The thresholds: libp2p's defaults (gossip −10, publish −50, graylist
/// −80), which the weights above are set against.
pub fn thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The score of a peer with `invalid` rejected messages and nothing
    /// else, as libp2p computes P4.
    fn score(invalid: f64) -> f64 {
        let p = topic_params();
        p.topic_weight * p.invalid_message_deliveries_weight * invalid * invalid
    }

    #[test]
    fn the_parameters_are_valid_and_three_invalid_messages_graylist() {
        topic_params().validate().unwrap();
        peer_params().validate().unwrap();
        thresholds().validate().unwrap();
        let (p, t) = (topic_params(), thresholds());
        let credit = p.topic_weight
            * (p.time_in_mesh_weight * p.time_in_mesh_cap
                + p.first_message_deliveries_weight * p.first_message_deliveries_cap);
        assert!(
            credit < -score(1.0),
            "one invalid message outweighs any credit"
        );
        assert!(score(1.0) < t.gossip_threshold);
        assert!(
            score(2.0) + credit < t.gossip_threshold,
            "pruned, and no gossip"
        );
        assert!(score(3.0) + credit < t.graylist_threshold, "graylisted");
    }
}
