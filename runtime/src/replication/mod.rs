//! The replication controller: the paper's adaptive diffusion and
//! regression (section 2.4) as a pure decision core.
//!
//! Every provider of a service runs one, fed with the load reports the
//! providers share (its own among them) and with the standby nodes it knows.
//! From that shared view each computes the same estimate:
//!
//! * **load** `D`: the providers' busy fraction summed, in providers (a
//!   provider with 3 of its L = 4 slots busy contributes 0.75; one whose
//!   upload is the tighter limit contributes that), plus the callers turned
//!   away (`Busy` answers from a provider whose every slot is taken) as
//!   demand nobody served, in providers at the rate each answers. A caller
//!   turned away tries the other providers too, so one unserved call shows
//!   as `Busy` at each of them: the unserved demand is the *mean* of the
//!   providers' turned-away ratios, not their sum (each ratio counted up to
//!   4);
//! * **needed** providers: `ceil(D / u)`, `u` the manifest's utilisation
//!   target, raised by one while providers miss the latency target or turn
//!   away more than [`BUSY_TOLERANCE`] of the calls they answer (a moment's
//!   full house is not a shortage), within the manifest's `min ..= max`.
//!   That takes a quorum, at least [`VIOLATION_QUORUM`] of the providers
//!   (at least one): a single provider's stall (a busy machine, a slow
//!   disk) is its own trouble, and more replicas would not cure it.
//!
//! **Diffusion:** when more are needed than there are, exactly one provider
//! acts: the *coordinator*, the provider with the smallest id among those
//! whose reports are fresh, so everyone agrees without a vote. It asks that
//! many standby nodes (the deficit) to pull ([`Action::Solicit`]), then
//! waits a cool-down for them to arrive before asking again.
//!
//! **Regression:** when the load stays below the low watermark (needed at
//! half the target utilisation) for the hold period, the surplus retires:
//! each provider decides for itself whether it is among the `surplus`
//! unpinned providers with the largest ids, so exactly those go
//! ([`Action::Retire`]). Never below `min`, never a pinned provider.
//!
//! **Hysteresis:** growth and regression use different thresholds (the
//! target utilisation and half of it), so the group a load grew to is not
//! too big for that load, and the group it shrank to not too small; and
//! after growing the coordinator does not shrink for a hold period. One
//! change in load makes at most one change in direction.
//!
//! Facts in ([`Controller::report`], [`Controller::standbys`]) with their
//! time; decisions out of [`Controller::poll`]. The node drives it with the
//! network; the adaptation benchmark and tests drive it with a model.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Callers turned away, as a fraction of the calls answered, that a
/// provider may see before the group counts as short of capacity.
pub const BUSY_TOLERANCE: f64 = 0.05;

/// The fraction of the providers that must miss the QoS target before the
/// group counts as violating it.
pub const VIOLATION_QUORUM: f64 = 0.25;

/// The controller's settings.
#[derive(Clone, Debug)]
pub struct Params {
    /// Calls must be answered within this (the manifest's `<qos latency>`).
    pub latency: Duration,
    /// Target fraction of capacity in use (the manifest's `<qos utilisation>`).
    pub utilisation: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// A report older than this no longer counts (its provider is gone).
    pub report_ttl: Duration,
    /// Load below the low watermark this long before the surplus retires;
    /// also how long after growing the group does not shrink.
    pub hold: Duration,
    /// After asking standbys, wait this long before asking again ...
    pub cooldown: Duration,
    /// ... and this long before asking one that did not come again.
    pub ask_again_after: Duration,
}

impl Params {
    /// Settings for a manifest's replication, with the defaults: reports
    /// count for 3 s, a 30 s hold, a 5 s cool-down, a standby asked again
    /// after 60 s.
    pub fn from_manifest(replication: &crate::package::manifest::Replication) -> Self {
        Self {
            latency: replication.latency,
            utilisation: replication.utilisation,
            min_replicas: replication.min_replicas,
            max_replicas: replication.max_replicas,
            report_ttl: Duration::from_secs(3),
            hold: Duration::from_secs(30),
            cooldown: Duration::from_secs(5),
            ask_again_after: Duration::from_secs(60),
        }
    }
}

/// What one provider says about its load over the last second.
#[derive(Clone, Debug, PartialEq)]
pub struct Load {
    /// Calls answered per second.
    pub calls_per_s: f64,
    /// Calls in flight on average over the last second, and the limit L.
    pub in_flight: f64,
    pub limit: u32,
    /// Callers answered `Busy` per second.
    pub busy_per_s: f64,
    /// 95th percentile of call latency.
    pub p95: Duration,
    /// Fraction of the upload limit in use (0 when unlimited).
    pub upload: f64,
    /// Its operator pinned the service there: it never retires.
    pub pinned: bool,
}

impl Load {
    /// How busy the provider is, as a fraction of its capacity.
    fn busy_fraction(&self) -> f64 {
        let slots = if self.limit == 0 {
            0.0
        } else {
            self.in_flight / f64::from(self.limit)
        };
        let busy = slots.max(self.upload);
        if busy.is_nan() {
            0.0
        } else {
            busy.clamp(0.0, 1.0)
        }
    }
}

/// A decision for the node to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<P> {
    /// Ask these standby nodes to pull the service and provide it.
    Solicit { standbys: Vec<P>, reason: String },
    /// This node stops providing the service (it keeps the package).
    Retire { reason: String },
}

/// The group's state as this provider sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// Providers with fresh reports.
    pub providers: u32,
    /// Load in providers' worth of capacity.
    pub load: f64,
    /// Providers the load needs at the target utilisation.
    pub needed: u32,
    /// Whether a quorum of the providers miss the latency target or turn
    /// callers away.
    pub violated: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Grew,
    Shrank,
}

/// The decision core; see the module documentation.
pub struct Controller<P> {
    params: Params,
    me: P,
    reports: BTreeMap<P, (Instant, Load)>,
    standbys: Vec<P>,
    /// Standbys asked already, and when (not asked again while they come).
    asked: BTreeMap<P, Instant>,
    last_solicit: Option<Instant>,
    /// Since when the load has been below the low watermark.
    low_since: Option<Instant>,
    last_change: Option<(Instant, Direction)>,
    retired: bool,
}

impl<P: Clone + Ord> Controller<P> {
    /// A controller for provider `me`. Parameters out of range are brought
    /// into it: utilisation into (0, 1] (0.7 when not a number), at least
    /// one replica, and max at least min.
    pub fn new(mut params: Params, me: P) -> Self {
        if !(params.utilisation > 0.0 && params.utilisation <= 1.0) {
            params.utilisation = if params.utilisation > 1.0 {
                1.0
            } else {
                crate::package::manifest::DEFAULT_UTILISATION
            };
        }
        params.min_replicas = params.min_replicas.max(1);
        params.max_replicas = params.max_replicas.max(params.min_replicas);
        Self {
            params,
            me,
            reports: BTreeMap::new(),
            standbys: Vec::new(),
            asked: BTreeMap::new(),
            last_solicit: None,
            low_since: None,
            last_change: None,
            retired: false,
        }
    }

    /// A provider's load report (this node's own too). Only reports from
    /// current providers of the service may be given here.
    pub fn report(&mut self, now: Instant, from: P, load: Load) {
        self.asked.remove(&from);
        self.reports.insert(from, (now, load));
    }

    /// The standby nodes known for the service now (they replace the
    /// previous list).
    pub fn standbys(&mut self, standbys: Vec<P>) {
        self.standbys = standbys;
    }

    /// The estimate from the reports fresh at `now`.
    pub fn estimate(&mut self, now: Instant) -> Estimate {
        let ttl = self.params.report_ttl;
        self.reports
            .retain(|_, (at, _)| now.saturating_duration_since(*at) <= ttl);
        let providers = self.reports.len() as u32;
        let mut load = 0.0;
        let mut turned_away = 0.0;
        let mut violating = 0u32;
        for (_, report) in self.reports.values() {
            load += report.busy_fraction();
            let mut missed = report.p95 > self.params.latency;
            // Callers turned away are demand nobody served: in providers,
            // at the rate one provider answers.
            if report.busy_per_s > 0.0 {
                let ratio = report.busy_per_s / report.calls_per_s.max(1.0);
                turned_away += ratio.min(4.0);
                missed |= ratio > BUSY_TOLERANCE;
            }
            violating += u32::from(missed);
        }
        let quorum = ((f64::from(providers) * VIOLATION_QUORUM).ceil() as u32).max(1);
        let violated = violating >= quorum;
        if providers > 0 {
            load += turned_away / f64::from(providers);
        }
        let mut needed = (load / self.params.utilisation).ceil() as u32;
        if violated {
            needed = needed.max(providers + 1);
        }
        Estimate {
            providers,
            load,
            needed: needed.clamp(self.params.min_replicas, self.params.max_replicas),
            violated,
        }
    }

    /// Whether this node coordinates the group: the smallest id among the
    /// providers with fresh reports.
    fn coordinates(&self) -> bool {
        self.reports.keys().next() == Some(&self.me)
    }

    /// The next decision at `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Action<P>> {
        if self.retired {
            return None;
        }
        let estimate = self.estimate(now);
        if estimate.providers == 0 {
            return None;
        }
        // Diffusion.
        if estimate.needed > estimate.providers {
            self.low_since = None;
            let cooled = self
                .last_solicit
                .is_none_or(|t| now.saturating_duration_since(t) >= self.params.cooldown);
            if !self.coordinates() || !cooled {
                return None;
            }
            let again = self.params.ask_again_after;
            self.asked
                .retain(|_, at| now.saturating_duration_since(*at) < again);
            // Standbys asked recently are on their way: count them in.
            let coming = self.asked.len();
            let deficit = (estimate.needed - estimate.providers) as usize;
            let standbys: Vec<P> = self
                .standbys
                .iter()
                .filter(|s| !self.reports.contains_key(s) && !self.asked.contains_key(s))
                .take(deficit.saturating_sub(coming))
                .cloned()
                .collect();
            if standbys.is_empty() {
                return None;
            }
            for standby in &standbys {
                self.asked.insert(standby.clone(), now);
            }
            self.last_solicit = Some(now);
            self.last_change = Some((now, Direction::Grew));
            let reason = format!(
                "load {:.2} providers' worth on {} provider(s){}: {} needed at {:.0}% utilisation",
                estimate.load,
                estimate.providers,
                if estimate.violated {
                    ", latency target missed or callers turned away"
                } else {
                    ""
                },
                estimate.needed,
                self.params.utilisation * 100.0
            );
            return Some(Action::Solicit { standbys, reason });
        }
        // Regression: needed at half the target utilisation.
        let low_needed = ((estimate.load / (self.params.utilisation / 2.0)).ceil() as u32)
            .clamp(self.params.min_replicas, self.params.max_replicas);
        if estimate.violated || low_needed >= estimate.providers {
            self.low_since = None;
            return None;
        }
        let low_since = *self.low_since.get_or_insert(now);
        let grew_recently = self.last_change.is_some_and(|(at, direction)| {
            direction == Direction::Grew && now.saturating_duration_since(at) < self.params.hold
        });
        if now.saturating_duration_since(low_since) < self.params.hold || grew_recently {
            return None;
        }
        let surplus = (estimate.providers - low_needed) as usize;
        // The unpinned providers with the largest ids go.
        let leaving: Vec<&P> = self
            .reports
            .iter()
            .rev()
            .filter(|(_, (_, load))| !load.pinned)
            .take(surplus)
            .map(|(p, _)| p)
            .collect();
        if !leaving.contains(&&self.me) {
            return None;
        }
        self.retired = true;
        self.last_change = Some((now, Direction::Shrank));
        Some(Action::Retire {
            reason: format!(
                "load {:.2} providers' worth on {} provider(s) for {:?}: {} would do at half the target utilisation",
                estimate.load,
                estimate.providers,
                now.saturating_duration_since(low_since),
                low_needed
            ),
        })
    }

    /// Whether this node would ask standbys now if it knew some: it
    /// coordinates and the group needs more providers. (The node looks
    /// standbys up only then.)
    pub fn wants_standbys(&mut self, now: Instant) -> bool {
        let estimate = self.estimate(now);
        !self.retired && estimate.needed > estimate.providers && self.coordinates()
    }

    /// Whether this node retired (it decides nothing more).
    pub fn retired(&self) -> bool {
        self.retired
    }
}

#[cfg(test)]
mod tests;
