//! Reputation-based provider selection (the paper's SAFE, section 2.3) as a
//! pure decision core: a consumer's own transactions and its advisors'
//! evaluations in, a reputation per provider and a (random, weighted) choice
//! out. Time is an input; nothing here does I/O. Real nodes and the
//! simulator (`sp2a bench reputation`) run this same code.
//!
//! ## Evidence
//!
//! Each transaction is rated ([`Rating`]) on timeliness, availability and
//! accuracy into a score `s` in `0..=1`; it adds `s` good and `1 - s` bad
//! evidence about the provider. A wrong answer (a failed accuracy check)
//! adds [`Params::wrong_weight`] bad evidence instead: a wrong answer is
//! strong evidence. All evidence decays with [`Params::half_life`], so a
//! provider that changes its behaviour is judged by what it does now. A
//! **warrant** ([`Reputation::warrant`]), a wrong answer another consumer
//! caught and this one verified, counts the same: one catch warns every
//! consumer it reaches.
//!
//! ## Reputation
//!
//! For provider `p`, with own decayed evidence `g` (good) and `b` (bad),
//! and the advice `(sᵢ, nᵢ)` of advisors `i` (their own score of `p` and
//! their decayed transaction count with it):
//!
//! ```text
//!         k₀·½ + w·g + Σᵢ aᵢ·sᵢ
//! R(p) = ─────────────────────────      aᵢ = cᵢ² · √min(nᵢ, n_max)
//!         k₀   + w·(g+b) + Σᵢ aᵢ
//! ```
//!
//! * `k₀ = 1` is a prior of ½ worth one transaction; `w` is
//!   [`Params::own_weight`]: own experience counts first.
//! * `cᵢ` is advisor `i`'s **credibility**, how well its past advice matched
//!   this consumer's own experience (SAFE, and EigenTrust's trust in
//!   recommenders): every own transaction with a provider that `i` advised
//!   on adds agreement `1 - |sᵢ - s|` as good and the rest as bad evidence
//!   about `i`, and `cᵢ` is the mean of that evidence with a prior of ½
//!   (`(agree + 1) / (agree + disagree + 2)`), decaying like the rest. A
//!   slanderer, whose advice contradicts what consumers see, loses its
//!   weight, squared.
//! * An advisor's weight grows with the **square root** of its transaction
//!   count, capped at [`Params::max_advice_count`]: collecting huge counts
//!   buys little (and the nodes that store advice refuse counts that grow
//!   too fast, [`StuffingGuard`]). Advice ages faster than own evidence
//!   ([`Params::advice_half_life`]): its count decays from when it was
//!   received, so the advisors heard last (who used the provider last)
//!   speak loudest, and a provider that turns bad is found out by what its
//!   recent consumers say.
//!
//! ## Choice
//!
//! A provider whose evidence (own transactions plus advisors' counts
//! weighted by their credibility) is below [`Params::newcomer_evidence`] is
//! a **newcomer**. With probability [`Params::exploration`] one newcomer is
//! chosen uniformly; otherwise an established provider at or above ½ (what
//! an unknown provider is worth) and [`Params::min_reputation`] is chosen at
//! random with weight `R^α` ([`Params::alpha`]). When no established
//! provider is that good, a newcomer is chosen (an unknown provider is a
//! better bet than a known bad one), and only without newcomers the best
//! of the bad ones, by the same weights. Choice is never
//! deterministic, so no single provider draws every call and no provider
//! can predict which calls are checks. A new identity is a newcomer: it
//! gets the exploration share and no more, so whitewashing gains nothing.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::limit::{Bucket, Rate};

/// The core's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Evidence halves in this long.
    pub half_life: Duration,
    /// Advice (an advisor's count) halves in this long after it came.
    pub advice_half_life: Duration,
    /// Selection weight is reputation to this power.
    pub alpha: f64,
    /// Share of choices given to newcomers.
    pub exploration: f64,
    /// Established providers below this are not chosen (unless all are).
    pub min_reputation: f64,
    /// Evidence below which a provider is a newcomer.
    pub newcomer_evidence: f64,
    /// Bad evidence one wrong answer adds.
    pub wrong_weight: f64,
    /// Weight of one own transaction against the prior of one.
    pub own_weight: f64,
    /// An advisor's transaction count counts up to this.
    pub max_advice_count: f64,
    /// Advisors kept per provider (the most credible).
    pub max_advisors: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            half_life: Duration::from_secs(3600),
            advice_half_life: Duration::from_secs(600),
            alpha: 8.0,
            exploration: 0.05,
            min_reputation: 0.0,
            newcomer_evidence: 3.0,
            wrong_weight: 10.0,
            own_weight: 2.0,
            max_advice_count: 100.0,
            max_advisors: 32,
        }
    }
}

/// How one transaction went, as the consumer saw it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rating {
    /// 1 when answered well within the QoS latency target, falling to 0 at
    /// twice it (see [`Rating::timeliness`]).
    pub timeliness: f64,
    /// False for `Busy`, a timeout or a failure.
    pub available: bool,
    /// The result checked against another provider, a local run or a
    /// self-test vector: `None` when not checked.
    pub accurate: Option<bool>,
}

impl Rating {
    /// Timeliness of a call answered in `latency` against `target`: 1 up
    /// to the target, then falling linearly to 0 at twice it.
    pub fn timeliness(latency: Duration, target: Duration) -> f64 {
        let (l, t) = (latency.as_secs_f64(), target.as_secs_f64().max(1e-9));
        (2.0 - l / t).clamp(0.0, 1.0)
    }

    /// The transaction's score in `0..=1`.
    pub fn score(&self) -> f64 {
        if !self.available || self.accurate == Some(false) {
            return 0.0;
        }
        let t = self.timeliness;
        if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) }
    }
}

/// What an advisor says about a provider: its own score of it and how
/// many transactions (decayed) that rests on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Advice {
    pub score: f64,
    pub count: f64,
}

impl Advice {
    /// Advice with numbers out of range (NaN, infinite, a score outside
    /// `0..=1`, a negative count) is not advice.
    pub fn is_valid(&self) -> bool {
        self.score.is_finite()
            && (0.0..=1.0).contains(&self.score)
            && self.count.is_finite()
            && self.count >= 0.0
    }
}

/// Good and bad evidence, decaying from `at`.
#[derive(Clone, Copy, Debug)]
struct Evidence {
    good: f64,
    bad: f64,
    at: Instant,
}

impl Evidence {
    fn new(now: Instant) -> Self {
        Self {
            good: 0.0,
            bad: 0.0,
            at: now,
        }
    }

    fn factor(from: Instant, now: Instant, half_life: Duration) -> f64 {
        let elapsed = now.saturating_duration_since(from).as_secs_f64();
        0.5f64.powf(elapsed / half_life.as_secs_f64().max(1e-9))
    }

    /// `(good, bad)` as of `now`.
    fn at(&self, now: Instant, half_life: Duration) -> (f64, f64) {
        let f = Self::factor(self.at, now, half_life);
        (self.good * f, self.bad * f)
    }

    fn add(&mut self, now: Instant, half_life: Duration, good: f64, bad: f64) {
        let (g, b) = self.at(now, half_life);
        *self = Self {
            good: g + good,
            bad: b + bad,
            at: now.max(self.at),
        };
    }

    /// The mean with a prior of ½ worth one observation each way.
    fn mean(&self, now: Instant, half_life: Duration) -> f64 {
        let (g, b) = self.at(now, half_life);
        (g + 1.0) / (g + b + 2.0)
    }
}

struct Own {
    evidence: Evidence,
    /// Transactions (decayed alike): what advice counts, whatever weight
    /// their evidence had.
    transactions: Evidence,
    last_wrong: Option<Instant>,
}

/// A provider's reputation and what it rests on.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// `R(p)` in `0..=1` (see the module documentation).
    pub value: f64,
    /// Own transactions (decayed).
    pub own: f64,
    /// Advisors whose advice counted, and their evidence weighted by
    /// credibility.
    pub advisors: usize,
    pub advised: f64,
    /// When this consumer last caught it answering wrongly.
    pub last_wrong: Option<Instant>,
    /// Below [`Params::newcomer_evidence`].
    pub newcomer: bool,
}

/// One consumer's view of the providers of one service; see the module
/// documentation. `I` names peers (providers and advisors alike). Ordered
/// maps keep every result (and so every choice under a seeded random
/// source) reproducible.
pub struct Reputation<I> {
    params: Params,
    own: BTreeMap<I, Own>,
    credibility: BTreeMap<I, Evidence>,
    /// By provider, then advisor: the advice and when it came.
    advice: BTreeMap<I, BTreeMap<I, (Advice, Instant)>>,
}

impl<I: Clone + Ord> Reputation<I> {
    /// A core with `params`; out-of-range settings are brought into range
    /// (exploration and minimum reputation into `0..=1`, weights positive).
    pub fn new(mut params: Params) -> Self {
        let unit = |x: f64, default: f64| {
            if x.is_finite() {
                x.clamp(0.0, 1.0)
            } else {
                default
            }
        };
        params.exploration = unit(params.exploration, 0.05);
        params.min_reputation = unit(params.min_reputation, 0.0);
        let positive = |x: f64, default: f64| if x.is_finite() && x > 0.0 { x } else { default };
        params.alpha = positive(params.alpha, 8.0);
        params.wrong_weight = positive(params.wrong_weight, 10.0);
        params.own_weight = positive(params.own_weight, 2.0);
        params.max_advice_count = positive(params.max_advice_count, 100.0);
        params.max_advisors = params.max_advisors.max(1);
        if params.half_life.is_zero() {
            params.half_life = Duration::from_secs(3600);
        }
        if params.advice_half_life.is_zero() {
            params.advice_half_life = params.half_life / 6;
        }
        Self {
            params,
            own: BTreeMap::new(),
            credibility: BTreeMap::new(),
            advice: BTreeMap::new(),
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Records a transaction with `provider`, and what it says of the
    /// advisors who advised on `provider`.
    pub fn record(&mut self, now: Instant, provider: &I, rating: Rating) {
        let half_life = self.params.half_life;
        let score = rating.score();
        let (good, bad) = if rating.accurate == Some(false) {
            (0.0, self.params.wrong_weight)
        } else {
            (score, 1.0 - score)
        };
        let own = self.own.entry(provider.clone()).or_insert(Own {
            evidence: Evidence::new(now),
            transactions: Evidence::new(now),
            last_wrong: None,
        });
        own.evidence.add(now, half_life, good, bad);
        own.transactions.add(now, half_life, 1.0, 0.0);
        if rating.accurate == Some(false) {
            own.last_wrong = Some(now);
        }
        if let Some(advice) = self.advice.get(provider) {
            for (advisor, (said, _)) in advice {
                let agree = 1.0 - (said.score - score).abs();
                self.credibility
                    .entry(advisor.clone())
                    .or_insert_with(|| Evidence::new(now))
                    .add(now, half_life, agree, 1.0 - agree);
            }
        }
    }

    /// The verdict of an accuracy check on a transaction already recorded
    /// (a call re-run here): a wrong answer adds [`Params::wrong_weight`]
    /// bad evidence; a right one adds nothing (the transaction counted as
    /// good already). Neither counts as another transaction.
    pub fn verdict(&mut self, now: Instant, provider: &I, right: bool) {
        if !right {
            self.wrong(now, provider);
        }
    }

    /// A warrant against `provider`: a wrong answer of its that another
    /// consumer caught and that this one verified (the provider's signed
    /// receipt of the answer, against the manifest's expected result or a
    /// re-run here). It is proof, not opinion, so it counts as a wrong
    /// answer caught here ([`Params::wrong_weight`] bad evidence), whoever
    /// brought it; it is not a transaction of this consumer's. The driver
    /// gives each warrant once.
    pub fn warrant(&mut self, now: Instant, provider: &I) {
        self.wrong(now, provider);
    }

    fn wrong(&mut self, now: Instant, provider: &I) {
        let half_life = self.params.half_life;
        let wrong = self.params.wrong_weight;
        let own = self.own.entry(provider.clone()).or_insert(Own {
            evidence: Evidence::new(now),
            transactions: Evidence::new(now),
            last_wrong: None,
        });
        own.evidence.add(now, half_life, 0.0, wrong);
        own.last_wrong = Some(now);
    }

    /// An advisor's advice about `provider` (replacing its earlier one).
    /// Advice out of range, and a provider's advice about itself, are
    /// ignored. At most [`Params::max_advisors`] are kept per provider: the
    /// one that weighs least goes.
    pub fn advise(&mut self, now: Instant, provider: &I, advisor: &I, advice: Advice) {
        if !advice.is_valid() || provider == advisor {
            return;
        }
        let max = self.params.max_advisors;
        let kept = self.advice.entry(provider.clone()).or_default();
        kept.insert(advisor.clone(), (advice, now));
        if kept.len() > max {
            // The advice that weighs least now goes (stale or from the
            // least credible), never the one just given.
            let weight = |a: &I, said: &Advice, at: Instant| {
                let c = self
                    .credibility
                    .get(a)
                    .map_or(0.5, |e| e.mean(now, self.params.half_life));
                c * c
                    * (said.count * Evidence::factor(at, now, self.params.advice_half_life)).sqrt()
            };
            if let Some(lightest) = kept
                .iter()
                .filter(|(a, _)| *a != advisor)
                .min_by(|(a, (x, xt)), (b, (y, yt))| {
                    weight(a, x, *xt).total_cmp(&weight(b, y, *yt))
                })
                .map(|(a, _)| a.clone())
            {
                kept.remove(&lightest);
            }
        }
    }

    /// The providers this core has evidence or advice about.
    pub fn known(&self) -> Vec<I> {
        let mut known: Vec<I> = self.own.keys().cloned().collect();
        known.extend(
            self.advice
                .keys()
                .filter(|p| !self.own.contains_key(*p))
                .cloned(),
        );
        known
    }

    /// What this consumer would advise about `provider`: its own score and
    /// how many transactions (decayed) it rests on (`None` without own
    /// transactions).
    pub fn advice_for(&self, now: Instant, provider: &I) -> Option<Advice> {
        let own = self.own.get(provider)?;
        let (g, b) = own.evidence.at(now, self.params.half_life);
        let (transactions, _) = own.transactions.at(now, self.params.half_life);
        Some(Advice {
            score: (g + 0.5) / (g + b + 1.0),
            count: transactions,
        })
    }

    /// How credible `advisor`'s advice has been (½ when unknown).
    pub fn credibility(&self, now: Instant, advisor: &I) -> f64 {
        self.credibility
            .get(advisor)
            .map_or(0.5, |e| e.mean(now, self.params.half_life))
    }

    /// `provider`'s reputation now.
    pub fn score(&self, now: Instant, provider: &I) -> Score {
        let p = &self.params;
        let (g, b, last_wrong) = self.own.get(provider).map_or((0.0, 0.0, None), |own| {
            let (g, b) = own.evidence.at(now, p.half_life);
            (g, b, own.last_wrong)
        });
        let mut numerator = 0.5 + p.own_weight * g;
        let mut denominator = 1.0 + p.own_weight * (g + b);
        let (mut advisors, mut advised) = (0, 0.0);
        if let Some(advice) = self.advice.get(provider) {
            for (advisor, (said, at)) in advice {
                let c = self.credibility(now, advisor);
                let age = Evidence::factor(*at, now, p.advice_half_life);
                let n = (said.count * age).min(p.max_advice_count);
                let weight = c * c * n.sqrt();
                if weight > 0.0 {
                    numerator += weight * said.score;
                    denominator += weight;
                    advisors += 1;
                    advised += c * n;
                }
            }
        }
        Score {
            value: (numerator / denominator).clamp(0.0, 1.0),
            own: g + b,
            advisors,
            advised,
            last_wrong,
            newcomer: g + b + advised < p.newcomer_evidence,
        }
    }

    /// Chooses one of `candidates` (see the module documentation); `None`
    /// when there are none.
    pub fn choose<R: Rng + ?Sized>(
        &self,
        now: Instant,
        candidates: &[I],
        rng: &mut R,
    ) -> Option<I> {
        if candidates.is_empty() {
            return None;
        }
        let scored: Vec<(&I, Score)> = candidates.iter().map(|c| (c, self.score(now, c))).collect();
        let (newcomers, established): (Vec<_>, Vec<_>) =
            scored.into_iter().partition(|(_, s)| s.newcomer);
        if !newcomers.is_empty()
            && (established.is_empty() || rng.gen_bool(self.params.exploration))
        {
            return Some(newcomers[rng.gen_range(0..newcomers.len())].0.clone());
        }
        let floor = self.params.min_reputation.max(0.5);
        let mut eligible: Vec<&(&I, Score)> = established
            .iter()
            .filter(|(_, s)| s.value >= floor)
            .collect();
        if eligible.is_empty() {
            if !newcomers.is_empty() {
                return Some(newcomers[rng.gen_range(0..newcomers.len())].0.clone());
            }
            eligible = established.iter().collect();
        }
        let weights: Vec<f64> = eligible
            .iter()
            .map(|(_, s)| s.value.powf(self.params.alpha).max(1e-12))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut pick = rng.gen_range(0.0..total);
        for ((candidate, _), weight) in eligible.iter().zip(&weights) {
            if pick < *weight {
                return Some((*candidate).clone());
            }
            pick -= weight;
        }
        eligible.last().map(|(c, _)| (*c).clone())
    }

    /// The order in which to try `candidates` on a call, reputation
    /// deciding who may be called and load deciding among those who may
    /// (the power of two choices): one drawn by [`choose`](Self::choose),
    /// one drawn uniformly from the other *eligible* candidates (newcomers,
    /// and established providers at or above ½ and the minimum), the less
    /// loaded of the two first. `load` is what each reported, 0 to 1; a
    /// newcomer's is not believed below the mean of the established
    /// eligible ones, so a new identity cannot draw calls by claiming to be
    /// idle, while a new replica still wins against providers loaded above
    /// the mean. Then the other eligible ones, least loaded first, and last
    /// those known to be bad, best first.
    pub fn order<R: Rng + ?Sized>(
        &self,
        now: Instant,
        candidates: &[I],
        load: impl Fn(&I) -> f32,
        rng: &mut R,
    ) -> Vec<I> {
        let Some(first) = self.choose(now, candidates, rng) else {
            return Vec::new();
        };
        let floor = self.params.min_reputation.max(0.5);
        let scored: Vec<(Score, I)> = candidates
            .iter()
            .map(|c| (self.score(now, c), c.clone()))
            .collect();
        let trusted: Vec<f32> = scored
            .iter()
            .filter(|(s, _)| !s.newcomer && s.value >= floor)
            .map(|(_, c)| load(c))
            .collect();
        let trusted_mean =
            (!trusted.is_empty()).then(|| trusted.iter().sum::<f32>() / trusted.len() as f32);
        let believed: BTreeMap<&I, f32> = scored
            .iter()
            .map(|(s, c)| {
                let reported = load(c);
                let believed = match trusted_mean {
                    Some(mean) if s.newcomer => reported.max(mean),
                    _ => reported,
                };
                (c, believed)
            })
            .collect();
        let (mut eligible, mut bad): (Vec<&(Score, I)>, Vec<&(Score, I)>) = scored
            .iter()
            .filter(|(_, c)| *c != first)
            .partition(|(s, _)| s.newcomer || s.value >= floor);
        let mut order = vec![first.clone()];
        if !eligible.is_empty() {
            let (_, second) = eligible.swap_remove(rng.gen_range(0..eligible.len()));
            if believed[second] < believed[&first] {
                order.insert(0, second.clone());
            } else {
                order.push(second.clone());
            }
        }
        eligible.sort_by(|(a, x), (b, y)| {
            believed[x]
                .total_cmp(&believed[y])
                .then(b.value.total_cmp(&a.value))
        });
        bad.sort_by(|(a, _), (b, _)| b.value.total_cmp(&a.value));
        order.extend(eligible.into_iter().chain(bad).map(|(_, c)| c.clone()));
        order
    }

    /// Forgets providers, advisors and advice with no evidence left worth
    /// keeping (below 1% of one transaction), to bound memory.
    pub fn prune(&mut self, now: Instant) {
        let half_life = self.params.half_life;
        let worth = |e: &Evidence| {
            let (g, b) = e.at(now, half_life);
            g + b >= 0.01
        };
        self.own.retain(|_, own| worth(&own.evidence));
        self.credibility.retain(|_, e| worth(e));
        for advice in self.advice.values_mut() {
            advice.retain(|_, (said, at)| {
                said.count * Evidence::factor(*at, now, self.params.advice_half_life) >= 0.01
            });
        }
        self.advice.retain(|_, advice| !advice.is_empty());
    }
}

/// The limits the nodes that store evaluations put on ballot stuffing:
/// how fast the interaction count that a (consumer, provider) pair, and
/// one consumer over all providers, claims may grow.
#[derive(Clone, Debug, PartialEq)]
pub struct GuardParams {
    /// Interactions per second a pair's count may grow by, and the burst.
    pub pair_rate: f64,
    pub pair_burst: f64,
    /// The same for one consumer over every provider.
    pub consumer_rate: f64,
    pub consumer_burst: f64,
    /// Pairs and consumers tracked at most (idle ones are dropped first).
    pub max_tracked: usize,
}

impl Default for GuardParams {
    fn default() -> Self {
        Self {
            pair_rate: 1.0,
            pair_burst: 20.0,
            consumer_rate: 10.0,
            consumer_burst: 200.0,
            max_tracked: 100_000,
        }
    }
}

/// Why an evaluation update was not stored.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GuardRefusal {
    #[error("the interaction count with this provider grows faster than {rate}/s")]
    Pair { rate: f64 },
    #[error("this consumer's interaction count grows faster than {rate}/s")]
    Consumer { rate: f64 },
    #[error("an interaction count that is not a number or goes down")]
    Count,
}

/// Token buckets on claimed interactions (see [`GuardParams`]); the
/// paper's defence against advisors who collect huge transaction counts.
pub struct StuffingGuard<I> {
    params: GuardParams,
    pairs: HashMap<(I, I), Bucket>,
    consumers: HashMap<I, Bucket>,
}

impl<I: Clone + Eq + Hash> StuffingGuard<I> {
    pub fn new(params: GuardParams) -> Self {
        Self {
            params,
            pairs: HashMap::new(),
            consumers: HashMap::new(),
        }
    }

    /// Whether to store an update in which `consumer` claims `added` more
    /// interactions with `provider`; an admitted update spends them.
    pub fn admit(
        &mut self,
        now: Instant,
        consumer: &I,
        provider: &I,
        added: f64,
    ) -> Result<(), GuardRefusal> {
        if !added.is_finite() || added < 0.0 {
            return Err(GuardRefusal::Count);
        }
        let p = self.params.clone();
        let pair_rate = Rate {
            per_second: p.pair_rate,
            burst: p.pair_burst,
        };
        let consumer_rate = Rate {
            per_second: p.consumer_rate,
            burst: p.consumer_burst,
        };
        if self.pairs.len() >= p.max_tracked || self.consumers.len() >= p.max_tracked {
            self.pairs
                .retain(|_, b| b.level(now, pair_rate) < p.pair_burst);
            self.consumers
                .retain(|_, b| b.level(now, consumer_rate) < p.consumer_burst);
        }
        let key = (consumer.clone(), provider.clone());
        let pair = self
            .pairs
            .get(&key)
            .copied()
            .unwrap_or(Bucket::full(pair_rate, now));
        if added > pair.level(now, pair_rate) {
            return Err(GuardRefusal::Pair { rate: p.pair_rate });
        }
        let mine = self
            .consumers
            .get(consumer)
            .copied()
            .unwrap_or(Bucket::full(consumer_rate, now));
        if added > mine.level(now, consumer_rate) {
            return Err(GuardRefusal::Consumer {
                rate: p.consumer_rate,
            });
        }
        if self.pairs.len() < p.max_tracked && self.consumers.len() < p.max_tracked {
            self.pairs.insert(key, pair.spent(now, pair_rate, added));
            self.consumers
                .insert(consumer.clone(), mine.spent(now, consumer_rate, added));
            Ok(())
        } else {
            // Too many active pairs to track: refuse rather than forget.
            Err(GuardRefusal::Consumer {
                rate: p.consumer_rate,
            })
        }
    }
}
