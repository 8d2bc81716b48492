//! Direct and relayed paths. A connection through a circuit relay carries
//! `/p2p-circuit` in its address; [`Scoped`] shows a behaviour only the
//! connections (and this node's external addresses) of the kind it is for:
//! bulk transfer runs on direct connections, a second instance of it on
//! relayed ones for small transfers only; the relay server counts only
//! direct external addresses (a node reachable only through a relay must
//! not offer to relay); the AutoNAT server and hole punching dial only
//! addresses this node may dial (a peer names them: it must not make this
//! node dial its own host or network).

use std::collections::HashSet;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::derive_prelude::Either;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Whether `address` goes through a circuit relay.
pub fn is_relayed(address: &Multiaddr) -> bool {
    address.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Which connections a wrapped behaviour sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connections {
    All,
    Direct,
    Relayed,
}

/// A behaviour shown only some connections and addresses. Hidden
/// connections get a handler that speaks no protocol, and the behaviour
/// hears nothing of them.
pub struct Scoped<B> {
    inner: B,
    connections: Connections,
    /// Hide this node's relayed external addresses from the behaviour.
    direct_addresses_only: bool,
    /// Refuse the behaviour's own dials to addresses outside this scope
    /// (`None`: any address).
    dial_scope: Option<DialScope>,
    hidden: HashSet<ConnectionId>,
    /// Dials the behaviour asked for, to check in
    /// `handle_pending_outbound_connection` (bounded).
    own_dials: HashSet<ConnectionId>,
}

/// Which addresses a behaviour may dial on its own.
#[derive(Clone, Copy, Debug)]
pub struct DialScope {
    /// Loopback and private addresses too (local mode).
    pub local_addresses: bool,
}

impl DialScope {
    fn allows(&self, address: &Multiaddr) -> bool {
        self.local_addresses
            || super::address::scope(address) == super::address::Scope::Global
                && !is_relayed(address)
    }
}

const MAX_OWN_DIALS: usize = 1024;

impl<B> Scoped<B> {
    pub fn new(inner: B, connections: Connections) -> Self {
        Self {
            inner,
            connections,
            direct_addresses_only: false,
            dial_scope: None,
            hidden: HashSet::new(),
            own_dials: HashSet::new(),
        }
    }

    /// Shows the behaviour only this node's direct external addresses.
    pub fn direct_addresses_only(mut self) -> Self {
        self.direct_addresses_only = true;
        self
    }

    /// Refuses the behaviour's own dials outside `scope`.
    pub fn dialling_only(mut self, scope: DialScope) -> Self {
        self.dial_scope = Some(scope);
        self
    }

    /// Whether the behaviour sees a connection; `relayed`: it goes through
    /// a relay (for an inbound one, the local address says so: the remote
    /// is only `/p2p/<peer>`).
    fn shows(&self, relayed: bool) -> bool {
        match self.connections {
            Connections::All => true,
            Connections::Direct => !relayed,
            Connections::Relayed => relayed,
        }
    }

    fn hides_address(&self, address: &Multiaddr) -> bool {
        self.direct_addresses_only && is_relayed(address)
    }
}

impl<B> std::ops::Deref for Scoped<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B> std::ops::DerefMut for Scoped<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Scoped<B> {
    type ConnectionHandler = Either<THandler<B>, dummy::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        if !self.shows(is_relayed(local) || is_relayed(remote)) {
            return Ok(());
        }
        self.inner
            .handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.shows(is_relayed(local) || is_relayed(remote)) {
            self.hidden.insert(id);
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        self.inner
            .handle_established_inbound_connection(id, peer, local, remote)
            .map(Either::Left)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(scope) = self.dial_scope
            && self.own_dials.remove(&id)
            && let Some(outside) = addresses.iter().find(|a| !scope.allows(a))
        {
            tracing::debug!(address = %outside, "not dialling an address a peer asked for");
            return Err(ConnectionDenied::new(OutsideScope(outside.clone())));
        }
        self.inner
            .handle_pending_outbound_connection(id, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        address: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.shows(is_relayed(address)) {
            self.hidden.insert(id);
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        self.inner
            .handle_established_outbound_connection(id, peer, address, role, port_use)
            .map(Either::Left)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        let hidden = match &event {
            FromSwarm::ConnectionEstablished(e) => self.hidden.contains(&e.connection_id),
            FromSwarm::ConnectionClosed(e) => self.hidden.remove(&e.connection_id),
            FromSwarm::AddressChange(e) => self.hidden.contains(&e.connection_id),
            FromSwarm::NewExternalAddrCandidate(e) => self.hides_address(e.addr),
            FromSwarm::ExternalAddrConfirmed(e) => self.hides_address(e.addr),
            FromSwarm::ExternalAddrExpired(e) => self.hides_address(e.addr),
            _ => false,
        };
        if !hidden {
            self.inner.on_swarm_event(event)
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(event) => self.inner.on_connection_handler_event(peer, id, event),
            Either::Right(never) => match never {},
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        let event = std::task::ready!(self.inner.poll(cx));
        if let (Some(_), ToSwarm::Dial { opts }) = (self.dial_scope, &event) {
            if self.own_dials.len() >= MAX_OWN_DIALS {
                self.own_dials.clear();
            }
            self.own_dials.insert(opts.connection_id());
        }
        Poll::Ready(event.map_in(Either::Left))
    }
}

/// Why a dial was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0} is outside the addresses this node dials on a peer's request")]
struct OutsideScope(Multiaddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_addresses_are_told_apart() {
        let relayed: Multiaddr =
            "/ip4/203.0.113.10/tcp/4001/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp/p2p-circuit"
                .parse()
                .unwrap();
        assert!(is_relayed(&relayed));
        assert!(!is_relayed(&"/ip4/203.0.113.10/tcp/4001".parse().unwrap()));
        let scope = DialScope {
            local_addresses: false,
        };
        assert!(scope.allows(&"/ip4/203.0.113.2/tcp/4001".parse().unwrap()));
        assert!(!scope.allows(&"/ip4/192.168.1.2/tcp/22".parse().unwrap()));
        assert!(!scope.allows(&"/ip4/127.0.0.1/tcp/22".parse().unwrap()));
        assert!(!scope.allows(&"/dns4/localhost/tcp/22".parse().unwrap()));
        assert!(!scope.allows(&relayed));
    }
}
