//! What each remote peer holds of a limited resource (upload answers on
//! their way, a service's invocation slots), with a cap per peer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::net::PeerId;

/// Places held per peer. Cheap to clone; clones share the counts.
#[derive(Clone, Default)]
pub(crate) struct PerPeer(Arc<Mutex<HashMap<PeerId, usize>>>);

/// One place held by a peer, given back when dropped.
pub(crate) struct Held {
    peer: PeerId,
    counts: PerPeer,
}

impl PerPeer {
    /// A place for `peer` if it holds fewer than `cap`, together with what
    /// `also` takes (a shared permit, say), which is asked for only then;
    /// nothing if either is refused.
    pub(crate) fn take<T>(
        &self,
        peer: PeerId,
        cap: usize,
        also: impl FnOnce() -> Option<T>,
    ) -> Option<(Held, T)> {
        let mut counts = self.0.lock().expect("per-peer lock");
        if counts.get(&peer).copied().unwrap_or(0) >= cap {
            return None;
        }
        let taken = also()?;
        *counts.entry(peer).or_default() += 1;
        let held = Held {
            peer,
            counts: self.clone(),
        };
        Some((held, taken))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().expect("per-peer lock");
        if let Some(count) = counts.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_holds_at_most_its_cap_and_places_come_back() {
        let places = PerPeer::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let first = places.take(a, 2, || Some(())).unwrap();
        let _second = places.take(a, 2, || Some(())).unwrap();
        assert!(places.take(a, 2, || Some(())).is_none(), "at its cap");
        assert!(places.take(b, 2, || Some(())).is_some(), "another peer");
        assert!(
            places.take(b, 2, || None::<()>).is_none(),
            "the shared permit is out"
        );
        drop(first);
        assert!(places.take(a, 2, || Some(())).is_some(), "given back");
    }
}
