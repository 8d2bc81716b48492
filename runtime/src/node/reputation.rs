//! The reputation role (the paper's SAFE, section 2.3): how this node
//! judges the providers it calls, and what it tells others it saw. The
//! judgement itself is the pure [`Reputation`] core; this role feeds it with
//! the network.
//!
//! * **Receipts.** Every call this node answers carries a receipt signed
//!   with its peer key ([`Reputations::receipt`]).
//! * **Ratings.** Every call it makes is rated into the service's core, off
//!   the call's path: timeliness (the round trip against the manifest's
//!   `<qos latency>`, or [`DEFAULT_TARGET`]), availability (no answer, a
//!   failure of any kind, an answer without a valid receipt, or from a
//!   package of another service or whose signed advert the provider will
//!   not show) and accuracy when checked. `Busy` is not held against a
//!   provider: it is load, answered honestly, and the load-aware choice
//!   already steers around it.
//! * **Accuracy checks**, for packages whose manifest declares
//!   `<deterministic>`: a provider's first answer and then
//!   [`CHECK_SHARE`] of its answers are checked. A node that runs the same
//!   package re-runs the very call and puts the verdict in that answer's
//!   evaluation. Otherwise it sends one of the manifest's self-test vectors
//!   in the shape of an ordinary call (the same publisher pin, no package
//!   id), a transaction of its own; the vectors are public, so a cheat that
//!   recognises them could answer them alone rightly. A wrong answer is
//!   strong evidence ([`crate::reputation::Params::wrong_weight`]).
//! * **Evaluations.** When an answer carried a valid receipt, this node
//!   evaluates it, keeps the newest [`KEPT_EVALUATIONS`] per (service,
//!   provider), and announces itself as an advisor under
//!   [`keys::advice_key`]. It serves them over `/sp2a/advice/1`, signing
//!   each the first time an answer includes it (most are never asked for:
//!   a signature per call would cost every call).
//! * **Advice.** Before calling providers it knows little of (newcomers to
//!   its core), it asks their advisors, at most [`MAX_ADVISORS_ASKED`] and at
//!   most once per [`CONSULT_EVERY`] per provider. (An advisor answers
//!   within [`ADVICE_LIMITS`], per peer, per network and in all, and `Busy`
//!   beyond: a request of at most 1 KiB buys at most [`KEPT_EVALUATIONS`]
//!   evaluations, and made-up peer ids buy no more answers.) An answer is refused whole
//!   if any evaluation in it fails its checks (signatures, the receipt's
//!   provider and service, the advisor as the receipt's consumer); what is
//!   left counts only as fast as the [`StuffingGuard`] admits new
//!   evaluations from that advisor, about that provider and overall.
//! * **Choice** ([`Reputations::order`]): blocked providers never, pinned
//!   ones alone when any is found; then [`Reputation::order`]: one drawn
//!   by reputation, one among the others that may be called, the less
//!   loaded of the two first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::identity::Keypair;
use rand::Rng;
use rand::seq::SliceRandom;
use tokio::sync::Semaphore;

use super::config::ReputationConfig;
use super::events::{Events, NodeEvent};
use super::services::Services;
use crate::ip::NetGroup;
use crate::limit::{Rate, Tiered, TieredRates};
use crate::net::evidence::{Evaluation, MAX_CLOCK_SKEW_MS, Receipt, check_advice};
use crate::net::protocol::{
    AdvertRequest, AdvertResponse, AdviceRequest, AdviceResponse, InvokeRequest, InvokeResponse,
    MAX_ADVICE_EVALUATIONS,
};
use crate::net::{Client, PeerId, keys};
use crate::package::manifest::SelfTest;
use crate::package::{Advert, ContentId};
use crate::reputation::{Advice, GuardParams, Rating, Reputation, StuffingGuard};
use crate::sandbox::same_wave;

/// The latency target of a service whose manifest sets none.
pub const DEFAULT_TARGET: Duration = Duration::from_secs(1);
/// Share of a provider's answers checked after the first.
pub const CHECK_SHARE: f64 = 0.1;
/// Own evaluations kept per (service, provider) to advise with.
pub const KEPT_EVALUATIONS: usize = MAX_ADVICE_EVALUATIONS;
/// Advisors asked about one provider.
pub const MAX_ADVISORS_ASKED: usize = 8;
/// A provider's advisors are asked at most this often.
pub const CONSULT_EVERY: Duration = Duration::from_secs(60);
/// Services judged, (service, provider) pairs advised on, packages whose
/// facts are known: each bounded, the least recently used going first.
const MAX_SERVICES: usize = 256;
const MAX_PAIRS: usize = 4096;
const MAX_FACTS: usize = 256;
/// How often advice is answered: per asking peer (2 a second after a
/// burst of 16), per network the requests come from (an IPv4 /24 or IPv6
/// /48: fresh ids there share 4 a second after 32) and in all (32 a second
/// after 128: at most about 1 MiB/s of answers, whatever the number of
/// askers). Honest askers consult at most 8 advisors per provider once a
/// minute, far below each.
pub const ADVICE_LIMITS: TieredRates = TieredRates {
    per_peer: Rate {
        per_second: 2.0,
        burst: 16.0,
    },
    per_group: Rate {
        per_second: 4.0,
        burst: 32.0,
    },
    global: Rate {
        per_second: 32.0,
        burst: 128.0,
    },
    max_tracked: MAX_PAIRS,
};
/// How often a service's judgement forgets what has decayed away.
const TIDY_EVERY: Duration = Duration::from_secs(60);
/// Consultations at once.
const MAX_CONSULTING: usize = 4;

/// What a caller needs to know of a package to judge its providers.
#[derive(Clone, Debug)]
struct Facts {
    deterministic: bool,
    target: Duration,
    self_tests: Vec<SelfTest>,
}

/// A provider's answer to a call, as the invoker hands it over.
#[derive(Clone, Debug)]
pub(crate) struct Answered {
    pub(crate) service: String,
    /// The publisher the call was pinned to, if any.
    pub(crate) publisher: Option<String>,
    pub(crate) provider: PeerId,
    pub(crate) content_id: ContentId,
    pub(crate) call: String,
    pub(crate) value: String,
    pub(crate) receipt: Option<Vec<u8>>,
    pub(crate) round_trip: Duration,
}

/// The rating of a call not answered, or failed.
const UNAVAILABLE: Rating = Rating {
    timeliness: 0.0,
    available: false,
    accurate: None,
};

/// A receipt that passed [`Reputations::proof`], and its time.
struct Proof {
    bytes: Vec<u8>,
    at_ms: u64,
}

/// One service's providers, as this node judges them.
struct Judged {
    core: Reputation<PeerId>,
    calls: HashMap<PeerId, u64>,
    /// Providers whose answers were checked at least once.
    checked: HashSet<PeerId>,
    checks: u64,
    wrong: u64,
    /// When each provider was last caught answering wrongly.
    last_wrong: HashMap<PeerId, SystemTime>,
    advice_admitted: u64,
    advice_refused: u64,
    last_refusal: Option<String>,
    used: Instant,
    tidied: Instant,
}

impl Judged {
    /// One more transaction with `provider`, rated `rating`.
    fn transaction(&mut self, provider: PeerId, rating: Rating) {
        *self.calls.entry(provider).or_default() += 1;
        self.core.record(Instant::now(), &provider, rating);
    }
}

/// What this node keeps to advise others about one (service, provider).
struct Kept {
    evaluations: VecDeque<KeptEvaluation>,
    used: Instant,
}

/// An own evaluation, signed once it is first shown to an advisor's asker.
enum KeptEvaluation {
    Unsigned(Evaluation),
    Signed(Vec<u8>),
}

impl KeptEvaluation {
    /// The signed bytes, signing now if this is the first time.
    fn signed(&mut self, key: &Keypair) -> &[u8] {
        if let KeptEvaluation::Unsigned(evaluation) = self {
            *self = KeptEvaluation::Signed(evaluation.sign(key));
        }
        match self {
            KeptEvaluation::Signed(bytes) => bytes,
            KeptEvaluation::Unsigned(_) => unreachable!("signed above"),
        }
    }
}

struct State {
    services: HashMap<String, Judged>,
    kept: HashMap<(String, PeerId), Kept>,
    guard: StuffingGuard<PeerId>,
    /// Per (service, provider, advisor): the newest receipt time counted,
    /// and when.
    counted: HashMap<(String, PeerId, PeerId), (u64, Instant)>,
    consulted: HashMap<(String, PeerId), Instant>,
    /// Advice answered, per asking peer, per network and in all; a
    /// connection through a relay counts as from one network of its own.
    asked: Tiered<PeerId, Option<NetGroup>>,
    /// By package and the provider that showed it (or did not).
    facts: HashMap<(ContentId, PeerId), (Option<Arc<Facts>>, Instant)>,
}

/// How one provider stands, for operators (`sp2a reputation SERVICE`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProviderStanding {
    pub peer: String,
    /// 0 to 1.
    pub reputation: f64,
    pub newcomer: bool,
    /// Own transactions (decayed) and calls made.
    pub own: f64,
    pub calls: u64,
    /// Advisors whose advice counted, and the evidence they brought
    /// (weighted by their credibility).
    pub advisors: usize,
    pub advised: f64,
    /// Seconds since this node last caught it answering wrongly.
    pub last_wrong_secs_ago: Option<u64>,
    pub pinned: bool,
    pub blocked: bool,
}

/// One service's providers, best first, and how the evidence came.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ServiceStanding {
    pub service: String,
    pub providers: Vec<ProviderStanding>,
    /// Accuracy checks made, and how many caught a wrong answer.
    pub checks: u64,
    pub wrong: u64,
    /// Advice answers admitted and refused, and the last refusal's reason.
    pub advice_admitted: u64,
    pub advice_refused: u64,
    pub last_refusal: Option<String>,
}

pub(crate) struct Reputations {
    client: Client,
    key: Keypair,
    services: Arc<Services>,
    events: Events,
    config: ReputationConfig,
    state: Mutex<State>,
    consulting: Arc<Semaphore>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Removes the least recently used entry of `map` once it holds `max`.
fn make_room<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    used: impl Fn(&V) -> Instant,
) -> Option<K> {
    if map.len() < max {
        return None;
    }
    let oldest = map
        .iter()
        .min_by_key(|(_, v)| used(v))
        .map(|(k, _)| k.clone())?;
    map.remove(&oldest);
    Some(oldest)
}

impl Reputations {
    pub(crate) fn new(
        client: Client,
        key: Keypair,
        services: Arc<Services>,
        events: Events,
        config: ReputationConfig,
    ) -> Self {
        Self {
            client,
            key,
            services,
            events,
            config,
            state: Mutex::new(State {
                services: HashMap::new(),
                kept: HashMap::new(),
                guard: StuffingGuard::new(GuardParams {
                    // One evaluation a second per pair, a full answer at
                    // once; ten a second per advisor over every provider.
                    pair_rate: 1.0,
                    pair_burst: KEPT_EVALUATIONS as f64,
                    consumer_rate: 10.0,
                    consumer_burst: 4.0 * KEPT_EVALUATIONS as f64,
                    max_tracked: 100_000,
                }),
                counted: HashMap::new(),
                consulted: HashMap::new(),
                asked: Tiered::new(ADVICE_LIMITS, Instant::now()),
                facts: HashMap::new(),
            }),
            consulting: Arc::new(Semaphore::new(MAX_CONSULTING)),
        }
    }

    fn judged<'s>(&self, state: &'s mut State, service: &str) -> &'s mut Judged {
        if !state.services.contains_key(service) {
            make_room(&mut state.services, MAX_SERVICES, |j| j.used);
            state.services.insert(
                service.to_owned(),
                Judged {
                    core: Reputation::new(self.config.params.clone()),
                    calls: HashMap::new(),
                    checked: HashSet::new(),
                    checks: 0,
                    wrong: 0,
                    last_wrong: HashMap::new(),
                    advice_admitted: 0,
                    advice_refused: 0,
                    last_refusal: None,
                    used: Instant::now(),
                    tidied: Instant::now(),
                },
            );
        }
        let judged = state.services.get_mut(service).expect("inserted above");
        let now = Instant::now();
        judged.used = now;
        if now.saturating_duration_since(judged.tidied) >= TIDY_EVERY {
            // Forget what has decayed away, and what only it kept.
            judged.tidied = now;
            judged.core.prune(now);
            let known: HashSet<PeerId> = judged.core.known().into_iter().collect();
            judged.calls.retain(|p, _| known.contains(p));
            judged.checked.retain(|p| known.contains(p));
            judged.last_wrong.retain(|p, _| known.contains(p));
        }
        judged
    }

    /// The order in which to call `providers` of `service` (see the module
    /// documentation); `load` is each one's last reported load, 0 to 1.
    /// Providers it knows little of have their advisors asked in the
    /// background.
    pub(crate) fn order(
        self: &Arc<Self>,
        service: &str,
        providers: &[PeerId],
        load: impl Fn(&PeerId) -> f32,
    ) -> Vec<PeerId> {
        let mut candidates: Vec<PeerId> = providers
            .iter()
            .filter(|p| !self.config.block.contains(p))
            .copied()
            .collect();
        if candidates.iter().any(|p| self.config.pin.contains(p)) {
            candidates.retain(|p| self.config.pin.contains(p));
        }
        let now = Instant::now();
        let (order, newcomers) = {
            let mut state = self.state.lock().expect("reputation lock");
            let judged = self.judged(&mut state, service);
            let order = judged
                .core
                .order(now, &candidates, load, &mut rand::thread_rng());
            let newcomers: Vec<PeerId> = candidates
                .iter()
                .filter(|p| judged.core.score(now, p).newcomer)
                .copied()
                .collect();
            (order, newcomers)
        };
        for provider in newcomers {
            self.consult_in_background(service, provider);
        }
        order
    }

    /// The signed receipt for answering `consumer`'s call.
    pub(crate) fn receipt(
        &self,
        service: &str,
        content_id: ContentId,
        call: &str,
        result: &str,
        consumer: PeerId,
    ) -> Vec<u8> {
        Receipt::sign_answer(&self.key, consumer, service, content_id.0, call, result)
    }

    /// `provider` did not answer a call, or failed it on its side.
    pub(crate) fn unavailable(&self, service: &str, provider: PeerId) {
        let mut state = self.state.lock().expect("reputation lock");
        self.judged(&mut state, service)
            .transaction(provider, UNAVAILABLE);
    }

    /// A provider answered a call (see [`Answered`]): rates the answer,
    /// signs an evaluation when it came with a valid receipt, and checks it
    /// when a check is due. Runs beside the call, never on its path.
    pub(crate) async fn answered(self: Arc<Self>, answer: Answered) {
        let Answered {
            ref service,
            provider,
            content_id,
            ..
        } = answer;
        // What ran must be shown: a package of this service whose signed
        // advert the provider serves. Otherwise the answer cannot be judged,
        // and counts as a failed transaction.
        let Some(facts) = self.facts(provider, content_id, service).await else {
            tracing::debug!(%provider, service, "an answer from a package it does not show");
            self.unavailable(service, provider);
            return;
        };
        let timeliness = Rating::timeliness(answer.round_trip, facts.target);
        let Some(receipt) = self.proof(answer.receipt.clone(), &answer) else {
            // Nothing to evaluate it by, for anyone: a failed transaction.
            tracing::debug!(%provider, service, "an answer without a valid receipt");
            self.unavailable(service, provider);
            return;
        };
        let local = self
            .services
            .by_id(&content_id)
            .filter(|_| facts.deterministic);
        let can_check = local.is_some() || (facts.deterministic && !facts.self_tests.is_empty());
        let check_due = {
            let mut state = self.state.lock().expect("reputation lock");
            let judged = self.judged(&mut state, service);
            judged.transaction(
                provider,
                Rating {
                    timeliness,
                    available: true,
                    accurate: None,
                },
            );
            let due = can_check
                && (!judged.checked.contains(&provider)
                    || rand::thread_rng().gen_bool(CHECK_SHARE));
            if due {
                judged.checked.insert(provider);
            }
            due
        };
        match local {
            // The verdict of a re-run goes into this answer's evaluation.
            Some(local) if check_due => {
                let _slot = local.slot().await;
                let Ok(here) = local.activation.invoke(&answer.call).await else {
                    self.evaluate(&answer, receipt, timeliness, None);
                    return;
                };
                let right = same_wave(&here.value, &answer.value);
                self.evaluate(&answer, receipt, timeliness, Some(right));
                self.judged_by_check(
                    service,
                    provider,
                    right,
                    "run here",
                    &answer.value,
                    &here.value,
                    None,
                );
            }
            _ => {
                self.evaluate(&answer, receipt, timeliness, None);
                if check_due {
                    self.send_self_test(&answer, &facts).await;
                }
            }
        }
    }

    /// `receipt` with its time, if it is the provider's signed receipt for
    /// this very call, answer, package and caller, dated no later than a
    /// little after now (so that every peer will accept an evaluation of
    /// it).
    fn proof(&self, receipt: Option<Vec<u8>>, answer: &Answered) -> Option<Proof> {
        let bytes = receipt?;
        let r = Receipt::open(&bytes).ok()?;
        let valid = r.provider == answer.provider
            && r.consumer == self.client.peer_id()
            && r.service == answer.service
            && r.content_id == answer.content_id.0
            && r.covers(&answer.call, &answer.value)
            && r.at_ms <= now_ms() + MAX_CLOCK_SKEW_MS / 2;
        valid.then_some(Proof {
            bytes,
            at_ms: r.at_ms,
        })
    }

    /// Keeps an evaluation of an answer whose receipt was checked (signed
    /// when first asked for), and announces this node as an advisor of the
    /// provider the first time.
    fn evaluate(&self, answer: &Answered, receipt: Proof, timeliness: f64, accurate: Option<bool>) {
        let evaluation = KeptEvaluation::Unsigned(Evaluation {
            receipt: receipt.bytes,
            timeliness,
            accurate,
            at_ms: receipt.at_ms.max(now_ms()),
        });
        let (service, provider) = (answer.service.as_str(), answer.provider);
        let key = (service.to_owned(), provider);
        let announce = {
            let mut state = self.state.lock().expect("reputation lock");
            let fresh = !state.kept.contains_key(&key);
            let evicted = if fresh {
                make_room(&mut state.kept, MAX_PAIRS, |k| k.used)
            } else {
                None
            };
            let kept = state.kept.entry(key.clone()).or_insert(Kept {
                evaluations: VecDeque::new(),
                used: Instant::now(),
            });
            kept.used = Instant::now();
            if kept.evaluations.len() == KEPT_EVALUATIONS {
                kept.evaluations.pop_front();
            }
            kept.evaluations.push_back(evaluation);
            fresh.then_some(evicted)
        };
        if let Some(evicted) = announce {
            let client = self.client.clone();
            tokio::spawn(async move {
                if let Some((service, provider)) = evicted {
                    client
                        .stop_providing(keys::advice_key(&service, &provider))
                        .await;
                }
                client
                    .start_providing(keys::advice_key(&key.0, &key.1))
                    .await;
            });
        }
    }

    /// What a package's manifest says about judging its providers: from
    /// this node's own services, or the signed advert fetched from the
    /// provider (the publisher's signature and the content id checked). A
    /// package of another service, or one whose advert the provider does
    /// not serve, is `None` (remembered for a while, like the others).
    async fn facts(
        &self,
        provider: PeerId,
        content_id: ContentId,
        service: &str,
    ) -> Option<Arc<Facts>> {
        if let Some((facts, _)) = self
            .state
            .lock()
            .expect("reputation lock")
            .facts
            .get(&(content_id, provider))
        {
            return facts.clone();
        }
        let manifest = match self.services.by_id(&content_id) {
            Some(local) => Some(local.package.manifest().clone()),
            None => {
                let request = AdvertRequest::ContentId(content_id.0);
                match self.client.request_advert(provider, request).await {
                    Ok(AdvertResponse::Adverts(adverts)) => {
                        adverts.iter().take(1).find_map(|bytes| {
                            Advert::parse_signed(bytes)
                                .ok()
                                .filter(|a| a.content_id() == content_id)
                                .map(|a| a.manifest().clone())
                        })
                    }
                    _ => None,
                }
            }
        };
        let facts = manifest.filter(|m| m.name == service).map(|manifest| {
            Arc::new(Facts {
                deterministic: manifest.deterministic,
                target: manifest
                    .replication
                    .as_ref()
                    .map_or(DEFAULT_TARGET, |r| r.latency),
                self_tests: manifest.self_tests,
            })
        });
        let mut state = self.state.lock().expect("reputation lock");
        make_room(&mut state.facts, MAX_FACTS, |(_, used)| *used);
        state
            .facts
            .insert((content_id, provider), (facts.clone(), Instant::now()));
        facts
    }

    /// Sends `answer`'s provider one of the manifest's self-tests, in the
    /// shape of an ordinary call (the same publisher pin, no package id):
    /// the answer is a transaction of its own, evaluated with its verdict.
    /// The vectors are public, so a cheat that recognises them could pass;
    /// nodes that run the service check real calls instead (re-run here).
    async fn send_self_test(&self, answer: &Answered, facts: &Facts) {
        let Some(test) = facts.self_tests.choose(&mut rand::thread_rng()).cloned() else {
            return;
        };
        let request = InvokeRequest {
            service: answer.service.clone(),
            content_id: None,
            publisher: answer.publisher.clone(),
            call: test.call.clone(),
        };
        let start = Instant::now();
        let Ok(InvokeResponse::Ok {
            value,
            receipt,
            content_id,
            ..
        }) = self.client.request_invoke(answer.provider, request).await
        else {
            // Busy or gone: no verdict.
            return;
        };
        if content_id != answer.content_id.0 {
            // Another package answered: these vectors do not apply.
            return;
        }
        let right = same_wave(&value, &test.expect);
        let timeliness = Rating::timeliness(start.elapsed(), facts.target);
        let check = Answered {
            call: test.call.clone(),
            value: value.clone(),
            receipt: None,
            round_trip: start.elapsed(),
            ..answer.clone()
        };
        // A transaction of its own: without a valid receipt, a failed one.
        let proof = self.proof(receipt, &check);
        let available = proof.is_some();
        if let Some(proof) = proof {
            self.evaluate(&check, proof, timeliness, Some(right));
        }
        let transaction = Rating {
            timeliness,
            available,
            accurate: Some(right),
        };
        self.judged_by_check(
            &answer.service,
            answer.provider,
            right,
            "self-test sent as a call",
            &value,
            &test.expect,
            Some(transaction),
        );
    }

    /// Records a check's verdict: as a transaction of its own when it was
    /// one (`transaction`), else on the transaction checked.
    #[allow(clippy::too_many_arguments)]
    fn judged_by_check(
        &self,
        service: &str,
        provider: PeerId,
        right: bool,
        how: &'static str,
        seen: &str,
        expected: &str,
        transaction: Option<Rating>,
    ) {
        {
            let mut state = self.state.lock().expect("reputation lock");
            let judged = self.judged(&mut state, service);
            judged.checks += 1;
            match transaction {
                Some(rating) => judged.transaction(provider, rating),
                None => judged.core.verdict(Instant::now(), &provider, right),
            }
            if !right {
                judged.wrong += 1;
                judged.last_wrong.insert(provider, SystemTime::now());
            }
        }
        if !right {
            tracing::warn!(%provider, service, how, "a provider answered wrongly");
        }
        self.events.emit(NodeEvent::Checked {
            service: service.to_owned(),
            provider,
            right,
            how,
            answer: crate::net::protocol::clip(seen),
            expected: crate::net::protocol::clip(expected),
        });
    }

    fn consult_in_background(self: &Arc<Self>, service: &str, provider: PeerId) {
        let key = (service.to_owned(), provider);
        if self
            .state
            .lock()
            .expect("reputation lock")
            .consulted
            .get(&key)
            .is_some_and(|at| at.elapsed() < CONSULT_EVERY)
        {
            return;
        }
        // Marked only once a consultation is sure to run.
        let Ok(permit) = self.consulting.clone().try_acquire_owned() else {
            return;
        };
        {
            let mut state = self.state.lock().expect("reputation lock");
            make_room(&mut state.consulted, MAX_PAIRS, |at| *at);
            state.consulted.insert(key, Instant::now());
        }
        let this = self.clone();
        let service = service.to_owned();
        tokio::spawn(async move {
            let _permit = permit;
            this.consult(&service, provider).await;
        });
    }

    /// Asks `provider`'s advisors for `service` what they saw, and feeds
    /// what passes every check into the core. Returns the advisors whose
    /// answers were admitted and refused.
    pub(crate) async fn consult(&self, service: &str, provider: PeerId) -> (usize, usize) {
        let me = self.client.peer_id();
        let mut advisors: Vec<PeerId> = self
            .client
            .get_providers(keys::advice_key(service, &provider))
            .await
            .into_iter()
            .filter(|a| *a != me && *a != provider)
            .collect();
        advisors.shuffle(&mut rand::thread_rng());
        advisors.truncate(MAX_ADVISORS_ASKED);
        let asked = advisors.into_iter().map(|advisor| async move {
            let request = AdviceRequest {
                service: service.to_owned(),
                provider: provider.to_bytes(),
            };
            (advisor, self.client.request_advice(advisor, request).await)
        });
        let answers = futures::future::join_all(asked).await;
        let (mut admitted, mut refused) = (0, 0);
        for (advisor, answer) in answers {
            let Ok(AdviceResponse::Evaluations(evaluations)) = answer else {
                continue;
            };
            match self.take_advice(service, provider, advisor, &evaluations) {
                Ok(true) => admitted += 1,
                Ok(false) => {}
                Err(reason) => {
                    refused += 1;
                    tracing::info!(%advisor, %provider, service, %reason, "advice refused");
                    let mut state = self.state.lock().expect("reputation lock");
                    let judged = self.judged(&mut state, service);
                    judged.advice_refused += 1;
                    judged.last_refusal = Some(format!("from {advisor}: {reason}"));
                }
            }
        }
        (admitted, refused)
    }

    /// Checks an advisor's evaluations of `provider` and, when every one
    /// passes and the stuffing guard admits the new ones, takes the advice
    /// they add up to: the mean of their scores, counted by their number.
    /// `Ok(false)`: there was nothing to take.
    fn take_advice(
        &self,
        service: &str,
        provider: PeerId,
        advisor: PeerId,
        evaluations: &[serde_bytes::ByteBuf],
    ) -> Result<bool, String> {
        if evaluations.is_empty() {
            return Ok(false);
        }
        let opened = check_advice(service, &provider, &advisor, evaluations, now_ms())?;
        let newest = opened.iter().map(|o| o.receipt.at_ms).max().unwrap_or(0);
        let scores: Vec<(u64, f64)> = opened
            .iter()
            .map(|o| {
                let rating = Rating {
                    timeliness: o.evaluation.timeliness,
                    available: true,
                    accurate: o.evaluation.accurate,
                };
                (o.receipt.at_ms, rating.score())
            })
            .collect();
        let now = Instant::now();
        let mut state = self.state.lock().expect("reputation lock");
        let key = (service.to_owned(), provider, advisor);
        let counted = state.counted.get(&key).map_or(0, |(at, _)| *at);
        let added = scores.iter().filter(|(at, _)| *at > counted).count();
        state
            .guard
            .admit(now, &advisor, &provider, added as f64)
            .map_err(|e| e.to_string())?;
        if !state.counted.contains_key(&key) {
            make_room(&mut state.counted, 4 * MAX_PAIRS, |(_, used)| *used);
        }
        state.counted.insert(key, (newest.max(counted), now));
        let count = scores.len() as f64;
        let score = scores.iter().map(|(_, s)| s).sum::<f64>() / count;
        let judged = self.judged(&mut state, service);
        judged
            .core
            .advise(now, &provider, &advisor, Advice { score, count });
        judged.advice_admitted += 1;
        Ok(true)
    }

    /// A peer, connected from `origin`, asks what this node saw of a
    /// provider. Answered within [`ADVICE_LIMITS`]; beyond them, `Busy`.
    pub(crate) fn answer(
        &self,
        peer: PeerId,
        origin: Option<IpAddr>,
        request: AdviceRequest,
    ) -> AdviceResponse {
        let Ok(provider) = PeerId::from_bytes(&request.provider) else {
            return AdviceResponse::Evaluations(Vec::new());
        };
        let mut state = self.state.lock().expect("reputation lock");
        let now = Instant::now();
        if let Err(limited) = state.asked.admit(now, &peer, &origin.map(NetGroup::of)) {
            tracing::debug!(%peer, ?origin, ?limited, "advice asked too often: busy");
            return AdviceResponse::Busy;
        }
        // At most KEPT_EVALUATIONS signatures, each made once.
        let evaluations = state
            .kept
            .get_mut(&(request.service, provider))
            .map(|k| {
                k.evaluations
                    .iter_mut()
                    .map(|e| serde_bytes::ByteBuf::from(e.signed(&self.key).to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        AdviceResponse::Evaluations(evaluations)
    }

    /// How the providers of `service` stand, best first.
    pub(crate) fn standing(&self, service: &str) -> ServiceStanding {
        let now = Instant::now();
        let state = self.state.lock().expect("reputation lock");
        let Some(judged) = state.services.get(service) else {
            return ServiceStanding {
                service: service.to_owned(),
                ..ServiceStanding::default()
            };
        };
        let mut peers: HashSet<PeerId> = judged.calls.keys().copied().collect();
        peers.extend(judged.core.known());
        peers.extend(self.config.pin.iter().copied());
        peers.extend(self.config.block.iter().copied());
        let mut providers: Vec<ProviderStanding> = peers
            .into_iter()
            .map(|peer| {
                let score = judged.core.score(now, &peer);
                ProviderStanding {
                    peer: peer.to_string(),
                    reputation: score.value,
                    newcomer: score.newcomer,
                    own: score.own,
                    calls: judged.calls.get(&peer).copied().unwrap_or(0),
                    advisors: score.advisors,
                    advised: score.advised,
                    last_wrong_secs_ago: judged
                        .last_wrong
                        .get(&peer)
                        .and_then(|at| at.elapsed().ok())
                        .map(|d| d.as_secs()),
                    pinned: self.config.pin.contains(&peer),
                    blocked: self.config.block.contains(&peer),
                }
            })
            .collect();
        providers.sort_by(|a, b| b.reputation.total_cmp(&a.reputation));
        ServiceStanding {
            service: service.to_owned(),
            providers,
            checks: judged.checks,
            wrong: judged.wrong,
            advice_admitted: judged.advice_admitted,
            advice_refused: judged.advice_refused,
            last_refusal: judged.last_refusal.clone(),
        }
    }
}
