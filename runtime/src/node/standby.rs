//! The standby role: the services this node offers to host, announced
//! under their standby keys, and the answer to a provider that asks it to
//! pull one (the paper's solicited pull, `/sp2a/solicit/1`).
//!
//! A solicitation is accepted only when every check passes, in this order:
//! the service is one this node stands by for; the asker has not asked in
//! the last 5 s, and this node has not checked more than 12 solicitations
//! in the last minute (otherwise `Busy`); the asker is a current provider of
//! the service (its provider record, from a DHT lookup); the asker serves
//! the package's advert, for that service, signed by a publisher this node
//! trusts; this node's policy admits it (requirements and every
//! capability); and no provider offers a newer version of it by the same
//! publisher. Then the pull starts, which checks all of it again and
//! verifies every block. A solicitation never bypasses trust,
//! requirements or capability checks.
//!
//! A standby prefetches (unless its operator turns it off): it downloads
//! and verifies the newest version of each service it stands by for that
//! its policy admits, and keeps it without running it, the paper's
//! "stream buffer". Asked to provide it, it activates the kept package
//! without a download. It also holds the live feeds the kept package would
//! be granted, so it serves the newest segments from its first call. It looks again every [`PREFETCH_EVERY`] (every
//! [`PREFETCH_RETRY`] while it finds nothing).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::discovery::Discovery;
use super::feed::FeedRole;
use super::pull::Pulls;
use super::services::Services;
use crate::net::protocol::{SolicitRequest, SolicitResponse, clip};
use crate::net::{Client, PeerId, keys};
use crate::package::{ContentId, is_service_name};

/// How often a standby looks for a newer version to prefetch ...
pub const PREFETCH_EVERY: Duration = Duration::from_secs(600);
/// ... and how soon again when the last attempt found nothing.
pub const PREFETCH_RETRY: Duration = Duration::from_secs(30);

/// One solicitation per asker in this long.
const PER_PEER_GAP: Duration = Duration::from_secs(5);
/// Solicitations checked (DHT lookup, advert) per minute, in all.
const CHECKS_PER_MINUTE: usize = 12;

pub(crate) struct Standby {
    names: HashSet<String>,
    client: Client,
    discovery: Arc<Discovery>,
    services: Arc<Services>,
    pulls: Arc<Pulls>,
    feeds: Arc<FeedRole>,
    rate: Mutex<Rate>,
}

#[derive(Default)]
struct Rate {
    last_by_peer: HashMap<PeerId, Instant>,
    checks: VecDeque<Instant>,
}

impl Rate {
    /// Whether a solicitation from `peer` may be checked now (and counts it).
    fn admit(&mut self, peer: PeerId, now: Instant) -> bool {
        while self
            .checks
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.checks.pop_front();
        }
        self.last_by_peer
            .retain(|_, t| now.duration_since(*t) < PER_PEER_GAP);
        if self.last_by_peer.contains_key(&peer) || self.checks.len() >= CHECKS_PER_MINUTE {
            return false;
        }
        self.last_by_peer.insert(peer, now);
        self.checks.push_back(now);
        true
    }
}

impl Standby {
    pub(crate) fn new(
        names: &[String],
        client: Client,
        discovery: Arc<Discovery>,
        services: Arc<Services>,
        pulls: Arc<Pulls>,
        feeds: Arc<FeedRole>,
    ) -> Self {
        Self {
            names: names.iter().cloned().collect(),
            client,
            discovery,
            services,
            pulls,
            feeds,
            rate: Mutex::new(Rate::default()),
        }
    }

    /// Announces this node under the standby key of each service.
    pub(crate) async fn announce(&self) {
        for name in &self.names {
            self.client.start_providing(keys::standby_key(name)).await;
        }
    }

    /// Prefetches the services this node stands by for, for as long as the
    /// node lives (see the module documentation).
    pub(crate) async fn prefetch(standby: std::sync::Weak<Standby>) {
        loop {
            let Some(role) = standby.upgrade() else {
                return;
            };
            let mut wait = PREFETCH_EVERY;
            for name in role.names() {
                if role.services.resolve(&name).is_ok() {
                    continue;
                }
                match role.pulls.prefetch(&name).await {
                    Ok(pulled) => role.hold_feeds(&name, &pulled.content_id),
                    Err(e) => {
                        tracing::info!(service = %name, error = %e, "nothing prefetched");
                        wait = PREFETCH_RETRY;
                    }
                }
            }
            drop(role);
            tokio::time::sleep(wait).await;
        }
    }

    /// Holds the live feeds a kept package of `service` would be granted.
    fn hold_feeds(&self, service: &str, id: &ContentId) {
        let Some(package) = self.services.retired(id) else {
            return;
        };
        let Ok(admission) = self.services.policy().admit(package.advert()) else {
            return;
        };
        let feeds = admission
            .grants
            .feeds
            .iter()
            .filter_map(|f| crate::feed::FeedId::new(&f.name, &f.publisher))
            .collect();
        self.feeds.hold(service, feeds);
    }

    /// The services this node stands by for, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.names.iter().cloned().collect();
        names.sort();
        names
    }

    /// A provider asks this node to pull a package of a service.
    pub(crate) async fn answer(&self, peer: PeerId, request: SolicitRequest) -> SolicitResponse {
        let response = self.decide(peer, &request).await;
        match &response {
            SolicitResponse::Accepted => tracing::info!(
                %peer,
                service = %request.service,
                package = %ContentId(request.content_id).short(),
                "solicited: pulling"
            ),
            other => {
                tracing::info!(%peer, service = %clip(&request.service), answer = ?other, "solicitation declined")
            }
        }
        response
    }

    async fn decide(&self, peer: PeerId, request: &SolicitRequest) -> SolicitResponse {
        let service = &request.service;
        if !is_service_name(service) || !self.names.contains(service) {
            return SolicitResponse::Refused(format!(
                "this node is not a standby for {}",
                clip(service)
            ));
        }
        let id = ContentId(request.content_id);
        if let Some(running) = self.services.by_id(&id)
            && running.package.manifest().name == *service
        {
            return SolicitResponse::Accepted;
        }
        if !self
            .rate
            .lock()
            .expect("rate lock")
            .admit(peer, Instant::now())
        {
            return SolicitResponse::Busy;
        }
        let providers = self
            .client
            .get_all_providers(keys::service_key(service))
            .await;
        if !providers.contains(&peer) {
            return SolicitResponse::Refused(format!("{peer} is not a provider of {service}"));
        }
        let lookup = self
            .discovery
            .advert_from(peer, id, |advert| advert.manifest().name == *service)
            .await;
        if let Some(untrusted) = lookup.untrusted.first() {
            return SolicitResponse::Refused(format!(
                "publisher {} is not trusted here",
                untrusted.publisher
            ));
        }
        let Some(found) = lookup.found.first() else {
            return SolicitResponse::Refused(format!(
                "{peer} did not serve a valid advert of that package of {service}"
            ));
        };
        if let Err(refusals) = self.services.policy().admit(&found.advert) {
            return SolicitResponse::Refused(clip(&refusals.to_string()));
        }
        // Only the newest version its publisher's providers offer: a
        // provider cannot make a standby host an old one.
        let asked = &found.advert;
        let offered = self.discovery.find(service, false).await;
        if let Some(newer) = offered
            .found
            .iter()
            .map(|f| &f.advert)
            .filter(|a| a.publisher() == asked.publisher())
            .map(|a| &a.manifest().version)
            .filter(|v| **v > asked.manifest().version)
            .max()
        {
            return SolicitResponse::Refused(format!(
                "{service} {} is older than the {newer} its providers offer",
                asked.manifest().version
            ));
        }
        // The pull checks everything again and verifies every block.
        let (pull, _) = self.pulls.start(&id.to_string());
        drop(pull);
        SolicitResponse::Accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_solicitation_per_peer_per_gap_and_a_bounded_number_of_checks() {
        let t0 = Instant::now();
        let mut rate = Rate::default();
        let a = PeerId::random();
        assert!(rate.admit(a, t0));
        assert!(!rate.admit(a, t0 + Duration::from_secs(4)));
        assert!(rate.admit(a, t0 + Duration::from_secs(5)));
        // Many askers: 12 checks a minute in all.
        let admitted = (0..100)
            .filter(|i| rate.admit(PeerId::random(), t0 + Duration::from_millis(5_000 + i)))
            .count();
        assert_eq!(admitted, CHECKS_PER_MINUTE - 2);
        assert!(rate.admit(PeerId::random(), t0 + Duration::from_secs(61)));
    }
}
