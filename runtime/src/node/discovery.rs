//! Discovery and adverts: finding the providers of a service or a package
//! in the DHT and fetching their signed adverts (the paper's findRPS and
//! its result vector), and answering other peers' advert requests.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::StreamExt;
use rand::seq::SliceRandom;
use tracing::Instrument;

use super::services::Services;
use crate::net::protocol::{AdvertRequest, AdvertResponse, MAX_ADVERTS};
use crate::net::{Client, PeerId, keys};
use crate::package::{Advert, ContentId, PackageError, PublisherKey, is_service_name};

/// Providers asked for adverts by one lookup: anyone can put provider
/// records in the DHT, so the work one lookup causes is bounded.
const MAX_ADVERT_PROVIDERS: usize = 32;
/// Advert requests in flight at once per lookup.
const ADVERT_CONCURRENCY: usize = 8;

/// A provider found for a service, with its verified advert.
#[derive(Clone, Debug)]
pub struct Found {
    pub peer: PeerId,
    pub advert: Advert,
}

/// An advert whose publisher this node does not trust: read no further
/// than its fixed fields (no signature check, no manifest parse).
#[derive(Clone, Debug)]
pub struct Untrusted {
    pub peer: PeerId,
    pub publisher: PublisherKey,
}

/// What a lookup found: verified adverts of trusted publishers, and the
/// providers whose adverts were by publishers this node does not trust.
#[derive(Clone, Debug, Default)]
pub struct Lookup {
    pub found: Vec<Found>,
    pub untrusted: Vec<Untrusted>,
}

pub(crate) struct Discovery {
    client: Client,
    services: Arc<Services>,
    advert_timeout: Duration,
}

impl Discovery {
    pub(crate) fn new(client: Client, services: Arc<Services>, advert_timeout: Duration) -> Self {
        Self {
            client,
            services,
            advert_timeout,
        }
    }

    /// The providers of service `name` with their verified adverts, newest
    /// version first. `exhaustive` runs the DHT query to the end (every
    /// provider the network can name) instead of ending it shortly after
    /// the second answer that names providers. Adverts that do not parse, do not verify or name
    /// another service are dropped; those of untrusted publishers are
    /// listed apart, unread.
    pub(crate) async fn find(&self, name: &str, exhaustive: bool) -> Lookup {
        let span = tracing::debug_span!("find", service = name, exhaustive);
        async {
            let start = Instant::now();
            let key = keys::service_key(name);
            let providers = if exhaustive {
                self.client.get_all_providers(key).await
            } else {
                self.client.get_providers(key).await
            };
            let lookup = start.elapsed();
            let request = AdvertRequest::Name(name.to_owned());
            let found = self
                .adverts(providers, request, |a| a.manifest().name == name)
                .await;
            tracing::debug!(?lookup, adverts = ?start.elapsed() - lookup, found = found.found.len(), "found");
            found
        }
        .instrument(span)
        .await
    }

    /// The providers of one package, with its advert.
    pub(crate) async fn find_package(&self, id: ContentId) -> Lookup {
        let providers = self.client.get_providers(keys::package_key(&id.0)).await;
        let request = AdvertRequest::ContentId(id.0);
        self.adverts(providers, request, |a| a.content_id() == id)
            .instrument(tracing::debug_span!("find", package = %id.short()))
            .await
    }

    /// The advert of package `id` as `peer` serves it, if it passes
    /// `wanted` (the publisher checked against the policy first, then the
    /// signature, then the manifest).
    pub(crate) async fn advert_from(
        &self,
        peer: PeerId,
        id: ContentId,
        wanted: impl Fn(&Advert) -> bool,
    ) -> Lookup {
        let request = AdvertRequest::ContentId(id.0);
        self.adverts(HashSet::from([peer]), request, |a| {
            a.content_id() == id && wanted(a)
        })
        .await
    }

    async fn adverts(
        &self,
        providers: HashSet<PeerId>,
        request: AdvertRequest,
        wanted: impl Fn(&Advert) -> bool,
    ) -> Lookup {
        let policy = self.services.policy();
        let me = self.client.peer_id();
        let mut providers: Vec<PeerId> = providers.into_iter().filter(|p| *p != me).collect();
        providers.shuffle(&mut rand::thread_rng());
        providers.truncate(MAX_ADVERT_PROVIDERS);
        let timeout = self.advert_timeout;
        let mut requests = futures::stream::iter(providers.into_iter().map(|peer| {
            let client = self.client.clone();
            let request = request.clone();
            async move {
                let response =
                    tokio::time::timeout(timeout, client.request_advert(peer, request)).await;
                (peer, response)
            }
        }))
        .buffer_unordered(ADVERT_CONCURRENCY);
        let mut lookup = Lookup::default();
        while let Some((peer, response)) = requests.next().await {
            let adverts = match response {
                Ok(Ok(AdvertResponse::Adverts(adverts))) => adverts,
                Ok(Ok(other)) => {
                    tracing::debug!(%peer, ?other, "no advert");
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "advert request failed");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(%peer, "advert request timed out");
                    continue;
                }
            };
            for bytes in adverts.into_iter().take(MAX_ADVERTS) {
                // The publisher first, then the signature, then the manifest.
                match Advert::parse_signed_by(&bytes, |key| policy.trusts(key)) {
                    Ok(advert) if wanted(&advert) => lookup.found.push(Found { peer, advert }),
                    Ok(_) => tracing::debug!(%peer, "advert for something else"),
                    Err(PackageError::UntrustedPublisher(publisher)) => {
                        tracing::debug!(%peer, %publisher, "advert of an untrusted publisher");
                        lookup.untrusted.push(Untrusted {
                            peer,
                            publisher: *publisher,
                        });
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "invalid advert"),
                }
            }
        }
        lookup.found.sort_by(|a, b| {
            b.advert
                .manifest()
                .version
                .cmp(&a.advert.manifest().version)
        });
        lookup
    }

    /// A peer asks for the adverts this node provides.
    pub(crate) fn answer(&self, peer: PeerId, request: AdvertRequest) -> AdvertResponse {
        let bytes = |p: &super::Provided| serde_bytes::ByteBuf::from(p.package.advert().bytes());
        let adverts: Vec<serde_bytes::ByteBuf> = match &request {
            AdvertRequest::Name(name) if is_service_name(name) => self
                .services
                .versions(name, MAX_ADVERTS)
                .iter()
                .map(|p| bytes(p))
                .collect(),
            AdvertRequest::Name(_) => Vec::new(),
            AdvertRequest::ContentId(id) => self
                .services
                .by_id(&ContentId(*id))
                .map(|p| vec![bytes(&p)])
                .unwrap_or_default(),
        };
        tracing::debug!(%peer, ?request, adverts = adverts.len(), "advert request");
        if adverts.is_empty() {
            AdvertResponse::NotFound
        } else {
            AdvertResponse::Adverts(adverts)
        }
    }
}
