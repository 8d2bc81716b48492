//! Invocation: calling a service this node runs, calling one on a remote
//! provider without downloading it, and answering other peers' calls within
//! the paper's limit L and the services' allow-lists.
//!
//! A remote call chooses its provider by reputation and load (see
//! [`crate::reputation::Reputation::order`]): one provider drawn by
//! reputation and one among the others that may be called, the one that
//! reported less load first (every answer carries the provider's load;
//! `Busy` counts as full; a provider not heard from in [`LOAD_TTL`] counts
//! as loaded like the mean of those heard from, or half loaded when none
//! was, so that neither new replicas nor idle unknown ones are shunned),
//! then the others when a provider answers `Busy`. Every answer this node
//! gives carries a signed receipt; every answer it gets is rated.
//! Providers are cached per service for [`PROVIDER_TTL`] and looked up
//! again in the background after [`PROVIDER_REFRESH`], so that replicas
//! that join are called and those that retire are dropped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::NodeError;
use super::events::{Events, NodeEvent};
use super::metrics::Metrics;
use super::reputation::{Answered, Reputations};
use super::services::{Services, is_publisher_spec, publisher_matches};
use super::upload::Uploads;
use crate::net::protocol::{
    AdvertRequest, AdvertResponse, InvokeRequest, InvokeResponse, MAX_INVOKE_RESPONSE, clip,
};
use crate::net::{Client, PeerId, RequestError, keys};
use crate::package::{Advert, ContentId, is_service_name};
use crate::sandbox::CallOutcome;

/// How long remote providers found in the DHT are reused for calls ...
const PROVIDER_TTL: Duration = Duration::from_secs(30);
/// ... and after how long they are looked up again in the background.
const PROVIDER_REFRESH: Duration = Duration::from_secs(5);
/// How long a provider's reported load is believed.
pub const LOAD_TTL: Duration = Duration::from_secs(5);
/// The load assumed of a provider without a recent report when no
/// provider of the service has reported.
const UNKNOWN_LOAD: f32 = 0.5;
/// Providers whose load is remembered.
const MAX_LOADS: usize = 4096;
/// Services whose providers are remembered.
const MAX_CACHED_SERVICES: usize = 256;
/// Room kept in a response for everything but the result text.
const RESPONSE_FRAMING: u64 = 1024;

/// The result of a remote invocation.
#[derive(Clone, Debug)]
pub struct RemoteOutcome {
    pub peer: PeerId,
    pub value: String,
    pub fuel: u64,
    pub remote_time: Duration,
    pub round_trip: Duration,
    pub content_id: ContentId,
}

/// A remote call: the service, optionally one publisher's, and the call.
struct Call<'a> {
    name: &'a str,
    publisher: Option<&'a str>,
    text: &'a str,
}

pub(crate) struct Invoker {
    client: Client,
    services: Arc<Services>,
    uploads: Arc<Uploads>,
    events: Events,
    /// Services open only to these peers.
    allow: HashMap<String, HashSet<PeerId>>,
    /// Providers of services called remotely, by target.
    providers: Arc<Mutex<HashMap<String, Cached>>>,
    /// The load each provider reported last, and when.
    loads: Mutex<HashMap<PeerId, (f32, Instant)>>,
    reputation: Arc<Reputations>,
    metrics: Arc<Metrics>,
}

/// The providers of a service, when they were looked up, and whether a
/// lookup is under way.
struct Cached {
    providers: Vec<PeerId>,
    at: Instant,
    refreshing: bool,
}

impl Invoker {
    pub(crate) fn new(
        client: Client,
        services: Arc<Services>,
        uploads: Arc<Uploads>,
        events: Events,
        allow: HashMap<String, HashSet<PeerId>>,
        reputation: Arc<Reputations>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            services,
            uploads,
            events,
            allow,
            metrics,
            providers: Arc::new(Mutex::new(HashMap::new())),
            loads: Mutex::new(HashMap::new()),
            reputation,
        }
    }

    /// The load `peer` reported last, if recent.
    fn load_of(&self, peer: &PeerId, now: Instant) -> Option<f32> {
        self.loads
            .lock()
            .expect("loads lock")
            .get(peer)
            .filter(|(_, at)| now.saturating_duration_since(*at) < LOAD_TTL)
            .map(|(load, _)| *load)
    }

    fn heard(&self, peer: PeerId, load: f32) {
        let now = Instant::now();
        let mut loads = self.loads.lock().expect("loads lock");
        if loads.len() >= MAX_LOADS && !loads.contains_key(&peer) {
            loads.retain(|_, (_, at)| now.saturating_duration_since(*at) < LOAD_TTL);
            if loads.len() >= MAX_LOADS {
                loads.clear();
            }
        }
        loads.insert(peer, (load.clamp(0.0, 1.0), now));
    }

    /// The order in which to try `providers` of service `name`, by
    /// reputation and load.
    fn order(&self, name: &str, providers: &[PeerId]) -> Vec<PeerId> {
        let now = Instant::now();
        let loads: HashMap<PeerId, f32> = providers
            .iter()
            .filter_map(|p| Some((*p, self.load_of(p, now)?)))
            .collect();
        let unknown = if loads.is_empty() {
            UNKNOWN_LOAD
        } else {
            loads.values().sum::<f32>() / loads.len() as f32
        };
        self.reputation.order(name, providers, |p| {
            loads.get(p).copied().unwrap_or(unknown)
        })
    }

    /// The cached providers of `target`, if fresh; starts a background
    /// lookup when they are getting old.
    fn cached(&self, target: &str, name: &str) -> Option<Vec<PeerId>> {
        let mut cache = self.providers.lock().expect("providers lock");
        let entry = cache.get_mut(target)?;
        let age = entry.at.elapsed();
        if age >= PROVIDER_TTL {
            return None;
        }
        if age >= PROVIDER_REFRESH && !entry.refreshing {
            entry.refreshing = true;
            let client = self.client.clone();
            let cache = self.providers.clone();
            let (target, key) = (target.to_owned(), keys::service_key(name));
            tokio::spawn(async move {
                let me = client.peer_id();
                let found: Vec<PeerId> = client
                    .get_providers(key)
                    .await
                    .into_iter()
                    .filter(|p| *p != me)
                    .collect();
                let mut cache = cache.lock().expect("providers lock");
                if let Some(entry) = cache.get_mut(&target) {
                    entry.refreshing = false;
                    if !found.is_empty() {
                        entry.providers = found;
                        entry.at = Instant::now();
                    }
                }
            });
        }
        Some(entry.providers.clone())
    }

    /// Forgets that `peer` provides `target` (it said it does not).
    fn forget(&self, target: &str, peer: PeerId) {
        if let Some(entry) = self
            .providers
            .lock()
            .expect("providers lock")
            .get_mut(target)
        {
            entry.providers.retain(|p| *p != peer);
        }
    }

    /// Calls a function of a service this node runs, waiting for one of its
    /// invocation slots.
    pub(crate) async fn local(&self, name: &str, call: &str) -> Result<CallOutcome, NodeError> {
        let service = self.services.resolve(name)?;
        let _slot = service.slot().await;
        let span = tracing::debug_span!("invoke", service = name, caller = "local");
        let start = Instant::now();
        let outcome = service.activation.invoke(call).instrument(span).await;
        service.answered(start.elapsed());
        self.metrics.call(
            &service.package.manifest().name,
            outcome.as_ref().map(|o| o.fuel_used).map_err(|e| e.kind()),
            start.elapsed(),
        );
        Ok(outcome?)
    }

    /// Calls a function of a service on a remote provider: `target` is a
    /// service name, or `name@publisher` for one publisher's service of that
    /// name. Providers at their limit (`Busy`), refusing this peer or
    /// unreachable are skipped; a call that ran and failed is returned,
    /// never retried elsewhere.
    pub(crate) async fn remote(
        &self,
        target: &str,
        call: &str,
    ) -> Result<RemoteOutcome, NodeError> {
        let (name, publisher) = match target.split_once('@') {
            Some((name, spec)) if is_publisher_spec(spec) => (name, Some(spec)),
            Some((_, spec)) => return Err(NodeError::BadPublisher(spec.to_owned())),
            None => (target, None),
        };
        let span = tracing::debug_span!("invoke", service = target, caller = "remote");
        let call = Call {
            name,
            publisher,
            text: call,
        };
        async {
            // The cached providers by load; the DHT is asked again when
            // the cache is cold or every cached provider declined.
            let mut reasons = Vec::new();
            if let Some(providers) = self.cached(target, name)
                && let Some(result) = self
                    .try_each(target, &call, &self.order(name, &providers), &mut reasons)
                    .await
            {
                return self.remember(target, &providers, result);
            }
            // A quick lookup, then (if every provider it found declined)
            // one that asks all the peers closest to the key.
            let me = self.client.peer_id();
            let mut tried: HashSet<PeerId> = HashSet::new();
            for exhaustive in [false, true] {
                let key = keys::service_key(name);
                let found = if exhaustive {
                    self.client.get_all_providers(key).await
                } else {
                    self.client.get_providers(key).await
                };
                let found: Vec<PeerId> = found
                    .into_iter()
                    .filter(|p| *p != me && !tried.contains(p))
                    .collect();
                tried.extend(found.iter().copied());
                let order = self.order(name, &found);
                if let Some(result) = self.try_each(target, &call, &order, &mut reasons).await {
                    return self.remember(target, &found, result);
                }
            }
            if reasons.is_empty() {
                return Err(NodeError::NoProvider(target.to_owned()));
            }
            Err(NodeError::AllDeclined {
                service: target.to_owned(),
                reasons,
            })
        }
        .instrument(span)
        .await
    }

    /// Caches the providers of `target` once one of them answered (those
    /// found by a lookup; the cached ones keep their time).
    fn remember(
        &self,
        target: &str,
        providers: &[PeerId],
        result: Result<RemoteOutcome, NodeError>,
    ) -> Result<RemoteOutcome, NodeError> {
        if result.is_ok() {
            let mut cache = self.providers.lock().expect("providers lock");
            if cache.len() >= MAX_CACHED_SERVICES && !cache.contains_key(target) {
                cache.retain(|_, entry| entry.at.elapsed() < PROVIDER_TTL);
                if cache.len() >= MAX_CACHED_SERVICES {
                    cache.clear();
                }
            }
            let fresh = cache
                .get(target)
                .is_some_and(|entry| entry.at.elapsed() < PROVIDER_TTL);
            if !fresh {
                cache.insert(
                    target.to_owned(),
                    Cached {
                        providers: providers.to_vec(),
                        at: Instant::now(),
                        refreshing: false,
                    },
                );
            }
        }
        result
    }

    /// Tries `providers` in order; `None` if every one declined.
    async fn try_each(
        &self,
        target: &str,
        call: &Call<'_>,
        providers: &[PeerId],
        reasons: &mut Vec<String>,
    ) -> Option<Result<RemoteOutcome, NodeError>> {
        let name = call.name;
        for &peer in providers {
            let request = InvokeRequest {
                service: name.to_owned(),
                content_id: None,
                publisher: call.publisher.map(str::to_owned),
                call: call.text.to_owned(),
            };
            let start = Instant::now();
            let response = self.client.request_invoke(peer, request).await;
            tracing::debug!(%peer, ok = response.is_ok(), "remote call answered");
            match response {
                Ok(InvokeResponse::Ok {
                    value,
                    fuel,
                    micros,
                    content_id,
                    load,
                    receipt,
                }) => {
                    let round_trip = start.elapsed();
                    if let Some(load) = load.filter(|l| l.is_finite()) {
                        self.heard(peer, load);
                    }
                    if let Some(spec) = call.publisher
                        && !self.published_by(peer, ContentId(content_id), spec).await
                    {
                        // It ran another publisher's service (an older node
                        // that ignores the pin, or a liar): not the answer,
                        // and a failed transaction.
                        self.reputation.unavailable(name, peer);
                        return Some(Err(NodeError::Remote {
                            service: name.to_owned(),
                            peer: peer.to_string(),
                            reason: format!(
                                "it answered with a package not shown to be by publisher {spec}"
                            ),
                        }));
                    }
                    // Judged beside the call, never on its path.
                    let answered = Answered {
                        service: name.to_owned(),
                        publisher: call.publisher.map(str::to_owned),
                        provider: peer,
                        content_id: ContentId(content_id),
                        call: call.text.to_owned(),
                        value: value.clone(),
                        receipt,
                        round_trip,
                    };
                    tokio::spawn(self.reputation.clone().answered(answered));
                    return Some(Ok(RemoteOutcome {
                        peer,
                        value: clip(&value),
                        fuel,
                        remote_time: Duration::from_micros(micros),
                        round_trip,
                        content_id: ContentId(content_id),
                    }));
                }
                Ok(InvokeResponse::Failed { kind, message }) => {
                    // A failed call counts against the provider whatever
                    // kind it names (the provider names it, so it could
                    // excuse every failure); a call that fails everywhere
                    // costs every provider alike.
                    self.reputation.unavailable(name, peer);
                    return Some(Err(NodeError::Remote {
                        service: name.to_owned(),
                        peer: peer.to_string(),
                        reason: format!("{} ({})", clip(&message), clip(&kind)),
                    }));
                }
                Ok(InvokeResponse::Busy) => {
                    self.heard(peer, 1.0);
                    reasons.push(format!("{peer}: busy"))
                }
                Ok(InvokeResponse::Denied(why)) => {
                    reasons.push(format!("{peer}: denied: {}", clip(&why)))
                }
                Ok(InvokeResponse::NotFound) => {
                    self.forget(target, peer);
                    reasons.push(format!("{peer}: does not provide it"))
                }
                // The request never reached the peer: safe to try another.
                Err(e @ (RequestError::Dial | RequestError::Unsupported)) => {
                    self.reputation.unavailable(name, peer);
                    reasons.push(format!("{peer}: {e}"))
                }
                // It may have run there: do not run it again elsewhere.
                Err(e) => {
                    self.reputation.unavailable(name, peer);
                    return Some(Err(NodeError::Remote {
                        service: name.to_owned(),
                        peer: peer.to_string(),
                        reason: format!("no answer ({e}); the call may or may not have run"),
                    }));
                }
            }
        }
        None
    }

    /// Whether `peer` shows, with the signed advert of package `id`, that
    /// the package is by the publisher `spec` names.
    async fn published_by(&self, peer: PeerId, id: ContentId, spec: &str) -> bool {
        let request = AdvertRequest::ContentId(id.0);
        let Ok(AdvertResponse::Adverts(adverts)) = self.client.request_advert(peer, request).await
        else {
            return false;
        };
        adverts.iter().take(1).any(|bytes| {
            Advert::parse_signed(bytes)
                .is_ok_and(|a| a.content_id() == id && publisher_matches(&a.publisher(), spec))
        })
    }

    /// A peer calls a service this node runs.
    pub(crate) async fn answer(&self, peer: PeerId, request: InvokeRequest) -> InvokeResponse {
        if !is_service_name(&request.service)
            || request
                .publisher
                .as_deref()
                .is_some_and(|spec| !is_publisher_spec(spec))
        {
            return InvokeResponse::NotFound;
        }
        let span = tracing::debug_span!("invoke", service = %request.service, caller = %peer);
        self.run_for(peer, request).instrument(span).await
    }

    async fn run_for(&self, peer: PeerId, request: InvokeRequest) -> InvokeResponse {
        let publisher = request.publisher.as_deref();
        let provided = match request.content_id {
            Some(id) => self.services.by_id(&ContentId(id)).filter(|p| {
                p.package.manifest().name == request.service
                    && publisher
                        .is_none_or(|spec| publisher_matches(&p.package.advert().publisher(), spec))
            }),
            None => match self.services.resolve(&match publisher {
                Some(spec) => format!("{}@{spec}", request.service),
                None => request.service.clone(),
            }) {
                Ok(provided) => Some(provided),
                Err(NodeError::Ambiguous { publishers, .. }) => {
                    return InvokeResponse::Failed {
                        kind: "ambiguous".into(),
                        message: format!(
                            "{} publishers' services are called {name} here; name one: {name}@<publisher key>",
                            publishers.len(),
                            name = request.service
                        ),
                    };
                }
                Err(_) => None,
            },
        };
        let Some(provided) = provided else {
            return InvokeResponse::NotFound;
        };
        if let Some(allowed) = self.allow.get(&request.service)
            && !allowed.contains(&peer)
        {
            tracing::debug!("denied: not on the allow-list");
            self.metrics
                .refused(&provided.package.manifest().name, "denied");
            return InvokeResponse::Denied(format!(
                "peer {peer} is not on the allow-list of service {}",
                request.service
            ));
        }
        let Some(_slot) = provided.try_slot_for(peer) else {
            tracing::debug!("busy: at the invocation limit, or this peer's share of it");
            // Only a full service is short of capacity; a peer beyond its
            // share was refused for fairness, with slots to spare.
            if provided.at_limit() {
                provided.turned_away();
            }
            self.metrics
                .refused(&provided.package.manifest().name, "busy");
            return InvokeResponse::Busy;
        };
        self.events.emit(NodeEvent::Invoked {
            peer,
            service: request.service.clone(),
        });
        let limit = MAX_INVOKE_RESPONSE - RESPONSE_FRAMING;
        let start = Instant::now();
        let outcome = provided.activation.invoke(&request.call).await;
        // The result leaves through this node's uplink, in the call's slot:
        // with an upload rate, a provider is as busy as its uplink.
        if let Ok(outcome) = &outcome {
            self.uploads.pace(outcome.value.len() as u64).await;
        }
        provided.answered(start.elapsed());
        self.metrics.call(
            &provided.package.manifest().name,
            outcome.as_ref().map(|o| o.fuel_used).map_err(|e| e.kind()),
            start.elapsed(),
        );
        // The others in flight, this call being done.
        let limit_l = provided.limit().max(1);
        let others = provided.busy_invocations(limit_l).saturating_sub(1);
        let load = Some(others as f32 / limit_l as f32);
        let response = match outcome {
            // An answer the caller's codec would refuse is an explicit error.
            Ok(outcome) if outcome.value.len() as u64 > limit => InvokeResponse::Failed {
                kind: "host".into(),
                message: format!(
                    "the result is {} bytes of WAVE text; remote results are limited to {limit} bytes",
                    outcome.value.len(),
                ),
            },
            Ok(outcome) => InvokeResponse::Ok {
                receipt: Some(self.reputation.receipt(
                    &request.service,
                    provided.package.content_id(),
                    &request.call,
                    &outcome.value,
                    peer,
                )),
                value: outcome.value,
                fuel: outcome.fuel_used,
                micros: outcome.elapsed.as_micros() as u64,
                content_id: provided.package.content_id().0,
                load,
            },
            Err(e) => {
                tracing::warn!(error = %e, "a remote call failed");
                InvokeResponse::Failed {
                    kind: e.kind().to_owned(),
                    message: clip(&e.public_message()),
                }
            }
        };
        tracing::debug!(
            ok = matches!(response, InvokeResponse::Ok { .. }),
            "call answered"
        );
        response
    }
}
