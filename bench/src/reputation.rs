//! `sp2a bench reputation`: the reputation core (the paper's SAFE,
//! `sp2a::reputation`) against attacks, in a seeded discrete-event
//! simulation with no network in the loop. The consumers run the same
//! core real nodes run.
//!
//! * **World:** `C` consumers and `P` providers of one service. In every
//!   round each consumer makes one transaction with a provider it chooses
//!   among `20` candidates (what one DHT lookup returns), in a random
//!   order; a round is one minute of simulated time.
//! * **Providers:** a good one answers well (2% slow); a bad one answers
//!   wrongly 45% of the time, slowly 45%, well 10%. A consumer checks the
//!   accuracy of a quarter of its calls (a re-run elsewhere or a canary),
//!   so most wrong answers go unnoticed: a wrong answer that is not
//!   checked looks like a good one.
//! * **Advice:** after each transaction a consumer publishes its own
//!   advice about the provider to a store that stands for the DHT's
//!   advisor records, which keeps the latest advice of each advisor and
//!   refuses counts that grow too fast (the core's `StuffingGuard`);
//!   before choosing, a consumer fetches the 8 most recent advisors of
//!   each candidate.
//! * **Warrants:** a wrong answer a consumer catches becomes a warrant
//!   (the provider's signed receipt of it), kept with the advice (the 8
//!   newest per provider); a consumer that fetches a candidate's records
//!   verifies each warrant it has not seen (in a node: against the
//!   manifest's self-test vector, or by a re-run where it runs the
//!   package; here every consumer can) and counts it as a wrong answer
//!   caught itself (`Reputation::warrant`). Attackers cannot make one
//!   against an honest provider: it never signed a wrong answer.
//! * **Strategies,** run on the same world with the same seed: `random`,
//!   `own` (the core with own experience only) and `safe` (the core with
//!   advisors).
//! * **Scenarios:** `bad-providers` (30% bad), `slanderers` (and 20% of
//!   the consumers rate every good provider they used 0), `colluders`
//!   (and 20% of the consumers praise the bad providers with inflated
//!   transaction counts and slander the good ones), `whitewashers` (the
//!   bad providers take a new identity after every 10 transactions) and
//!   `oscillating` (10% of the providers turn bad a third of the way in).
//! * **Metric:** the share of the honest consumers' transactions served
//!   badly (wrong or slow), per round and after the warm-up; for
//!   whitewashers, their share of the traffic; for oscillating providers,
//!   the traffic they lose once they have served 50 bad transactions.
//!
//! Output: a printed table, `summary.csv`, `<scenario>.csv` (per round)
//! and `<scenario>.svg`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plotters::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sp2a::reputation::{Advice, GuardParams, Params, Rating, Reputation, StuffingGuard};

use crate::plot::COLORS;

/// Simulated time per round.
const ROUND: Duration = Duration::from_secs(60);
/// Providers a consumer chooses among per transaction.
const CANDIDATES: usize = 20;
/// Advisors fetched per candidate.
const FETCHED: usize = 8;
/// Share of calls whose result a consumer checks.
const CHECKED: f64 = 0.25;
/// Advisor records the store keeps per provider (the most recent).
const KEPT: usize = 64;
/// Advisor ids start here (providers count from 0).
const CONSUMER_IDS: u32 = 1 << 24;
/// Warrants the store keeps per provider (the newest).
const WARRANTS_KEPT: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    BadProviders,
    Slanderers,
    Colluders,
    Whitewashers,
    Oscillating,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::BadProviders,
        Scenario::Slanderers,
        Scenario::Colluders,
        Scenario::Whitewashers,
        Scenario::Oscillating,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::BadProviders => "bad-providers",
            Scenario::Slanderers => "slanderers",
            Scenario::Colluders => "colluders",
            Scenario::Whitewashers => "whitewashers",
            Scenario::Oscillating => "oscillating",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    Random,
    Own,
    Safe,
}

impl Strategy {
    const ALL: [Strategy; 3] = [Strategy::Random, Strategy::Own, Strategy::Safe];

    fn name(self) -> &'static str {
        match self {
            Strategy::Random => "random",
            Strategy::Own => "own",
            Strategy::Safe => "safe",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Run one scenario (default: all).
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    #[arg(long, default_value_t = 1000)]
    consumers: usize,
    #[arg(long, default_value_t = 100)]
    providers: usize,
    /// Share of bad providers.
    #[arg(long, default_value_t = 0.3)]
    bad: f64,
    /// Share of attacking consumers (slanderers, colluders).
    #[arg(long, default_value_t = 0.2)]
    attackers: f64,
    /// Transactions per consumer before the measurement.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Measured transactions per consumer.
    #[arg(long, default_value_t = 60)]
    rounds: usize,
    /// Selection weight is reputation to this power.
    #[arg(long, default_value_t = 8.0)]
    alpha: f64,
    /// Share of choices given to newcomers.
    #[arg(long, default_value_t = 0.05)]
    exploration: f64,
    /// Share of the consumers that can verify a warrant (in a node, those
    /// that run the package, for a warrant from a re-run; every consumer
    /// for one from a self-test vector).
    #[arg(long, default_value_t = 1.0)]
    verifiers: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the CSV and SVG files go.
    #[arg(long, default_value = "reputation-results")]
    out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Good,
    Bad,
    /// Good until the round, then bad.
    Oscillating(usize),
    /// Bad, with a new identity after every 10 transactions.
    Whitewasher,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Honest,
    /// Rates every good provider it used 0.
    Slanderer,
    /// Slanders the good providers and praises the bad ones with inflated
    /// counts.
    Colluder,
}

struct Provider {
    id: u32,
    behaviour: Behaviour,
    /// Transactions under the current identity.
    served: u32,
}

/// The providers (by slot; a whitewasher's slot changes identity).
struct World {
    providers: Vec<Provider>,
    slot_of: HashMap<u32, usize>,
    next_id: u32,
}

impl World {
    fn new(scenario: Scenario, options: &Options, rng: &mut StdRng) -> Self {
        let n = options.providers;
        let bad = ((n as f64) * options.bad).round() as usize;
        let switch = options.warmup + options.rounds / 3;
        let oscillating = if scenario == Scenario::Oscillating {
            n / 10
        } else {
            0
        };
        let mut behaviours: Vec<Behaviour> = (0..n)
            .map(|i| {
                if i < bad {
                    if scenario == Scenario::Whitewashers {
                        Behaviour::Whitewasher
                    } else {
                        Behaviour::Bad
                    }
                } else if i < bad + oscillating {
                    Behaviour::Oscillating(switch)
                } else {
                    Behaviour::Good
                }
            })
            .collect();
        behaviours.shuffle(rng);
        let providers: Vec<Provider> = behaviours
            .into_iter()
            .enumerate()
            .map(|(i, behaviour)| Provider {
                id: i as u32,
                behaviour,
                served: 0,
            })
            .collect();
        let slot_of = providers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id, i))
            .collect();
        Self {
            next_id: n as u32,
            providers,
            slot_of,
        }
    }

    fn is_bad(&self, slot: usize, round: usize) -> bool {
        match self.providers[slot].behaviour {
            Behaviour::Good => false,
            Behaviour::Bad | Behaviour::Whitewasher => true,
            Behaviour::Oscillating(switch) => round >= switch,
        }
    }

    /// One transaction with the provider in `slot`: served badly, and how
    /// the consumer rates it.
    fn transact(&mut self, slot: usize, round: usize, rng: &mut StdRng) -> (bool, Rating) {
        let checked = rng.gen_bool(CHECKED);
        let roll: f64 = rng.r#gen();
        // Served badly, and the rating the consumer gives.
        let slow = (
            true,
            Rating {
                timeliness: 0.2,
                available: true,
                accurate: None,
            },
        );
        let good = (
            false,
            Rating {
                timeliness: 1.0,
                available: true,
                accurate: checked.then_some(true),
            },
        );
        let (bad, rating) = if self.is_bad(slot, round) {
            if roll < 0.45 {
                // Wrong: noticed only when checked.
                (
                    true,
                    Rating {
                        timeliness: 1.0,
                        available: true,
                        accurate: checked.then_some(false),
                    },
                )
            } else if roll < 0.9 {
                slow
            } else {
                good
            }
        } else if roll < 0.02 {
            slow
        } else {
            good
        };
        let provider = &mut self.providers[slot];
        provider.served += 1;
        if provider.behaviour == Behaviour::Whitewasher && provider.served >= 10 {
            self.slot_of.remove(&provider.id);
            provider.id = self.next_id;
            provider.served = 0;
            self.slot_of.insert(provider.id, slot);
            self.next_id += 1;
        }
        (bad, rating)
    }
}

/// The advisor records: the latest advice of each advisor per provider,
/// behind the stuffing guard.
struct Store {
    by_provider: HashMap<u32, VecDeque<(u32, Advice)>>,
    /// Warrant ids per provider, newest last.
    warrants: HashMap<u32, VecDeque<u64>>,
    next_warrant: u64,
    /// The count last stored per (advisor, provider), kept after its
    /// record makes room for newer ones: what a new count is compared with.
    counts: HashMap<(u32, u32), f64>,
    guard: StuffingGuard<u32>,
    refused: u64,
    stored: u64,
}

impl Store {
    fn new() -> Self {
        let per_round = 1.0 / ROUND.as_secs_f64();
        Self {
            by_provider: HashMap::new(),
            warrants: HashMap::new(),
            next_warrant: 0,
            counts: HashMap::new(),
            guard: StuffingGuard::new(GuardParams {
                pair_rate: per_round,
                pair_burst: 5.0,
                consumer_rate: 2.0 * per_round,
                consumer_burst: 30.0,
                max_tracked: 1 << 22,
            }),
            refused: 0,
            stored: 0,
        }
    }

    fn publish(&mut self, now: Instant, advisor: u32, provider: u32, advice: Advice) {
        let previous = self
            .counts
            .get(&(advisor, provider))
            .copied()
            .unwrap_or(0.0);
        if self
            .guard
            .admit(now, &advisor, &provider, (advice.count - previous).max(0.0))
            .is_err()
        {
            self.refused += 1;
            return;
        }
        self.stored += 1;
        self.counts.insert((advisor, provider), advice.count);
        let records = self.by_provider.entry(provider).or_default();
        records.retain(|(a, _)| *a != advisor);
        records.push_back((advisor, advice));
        if records.len() > KEPT {
            records.pop_front();
        }
    }

    /// A wrong answer of `provider`, caught: a warrant anyone can verify.
    fn warrant(&mut self, provider: u32) {
        let kept = self.warrants.entry(provider).or_default();
        kept.push_back(self.next_warrant);
        self.next_warrant += 1;
        if kept.len() > WARRANTS_KEPT {
            kept.pop_front();
        }
    }

    fn warrants(&self, provider: u32) -> impl Iterator<Item = u64> + '_ {
        self.warrants.get(&provider).into_iter().flatten().copied()
    }

    fn recent(&self, provider: u32) -> impl Iterator<Item = &(u32, Advice)> {
        self.by_provider
            .get(&provider)
            .into_iter()
            .flat_map(|r| r.iter().rev().take(FETCHED))
    }
}

/// What one run (scenario and strategy) measured.
struct Run {
    /// Per round: honest transactions, and those served badly.
    rounds: Vec<(u64, u64)>,
    /// Honest transactions after the warm-up, and to whitewashers.
    measured: u64,
    to_whitewashers: u64,
    /// Oscillating providers: honest transactions before the switch (the
    /// 10 rounds before it) and after their 50th bad transaction (the 5
    /// rounds after it; for one that never served 50 bad transactions, the
    /// last 5 rounds), per round; and how many served 50.
    oscillating_before: f64,
    oscillating_after: Option<f64>,
    oscillating_reached: usize,
    refused: u64,
    stored: u64,
}

impl Run {
    /// The share of round `round`'s honest transactions served badly.
    fn round_share(&self, round: usize) -> f64 {
        let (n, bad) = self.rounds[round];
        bad as f64 / n.max(1) as f64
    }

    fn bad_share(&self, warmup: usize) -> f64 {
        let (n, bad) = self.rounds[warmup..]
            .iter()
            .fold((0, 0), |(n, b), (rn, rb)| (n + rn, b + rb));
        bad as f64 / n.max(1) as f64
    }
}

fn simulate(scenario: Scenario, strategy: Strategy, options: &Options) -> Run {
    // The same seed for every strategy: the same world and attackers.
    let mut rng = StdRng::seed_from_u64(options.seed ^ (scenario as u64) << 32);
    let mut world = World::new(scenario, options, &mut rng);
    let attacking = matches!(scenario, Scenario::Slanderers | Scenario::Colluders);
    let attackers = if attacking {
        ((options.consumers as f64) * options.attackers).round() as usize
    } else {
        0
    };
    let roles: Vec<Role> = (0..options.consumers)
        .map(|c| match (c < attackers, scenario) {
            (true, Scenario::Colluders) => Role::Colluder,
            (true, _) => Role::Slanderer,
            (false, _) => Role::Honest,
        })
        .collect();
    let params = Params {
        half_life: ROUND * 30,
        advice_half_life: ROUND * 5,
        alpha: options.alpha,
        exploration: options.exploration,
        max_advisors: FETCHED,
        ..Params::default()
    };
    let mut cores: Vec<Reputation<u32>> = (0..options.consumers)
        .map(|_| Reputation::new(params.clone()))
        .collect();
    let mut store = Store::new();
    // The warrants each consumer has verified already.
    let mut verified: Vec<std::collections::HashSet<u64>> =
        vec![Default::default(); options.consumers];
    let verifies: Vec<bool> = (0..options.consumers)
        .map(|c| (c as f64) >= (1.0 - options.verifiers) * options.consumers as f64)
        .collect();
    let t0 = Instant::now();
    let total = options.warmup + options.rounds;
    let mut run = Run {
        rounds: vec![(0, 0); total],
        measured: 0,
        to_whitewashers: 0,
        oscillating_before: 0.0,
        oscillating_after: None,
        oscillating_reached: 0,
        refused: 0,
        stored: 0,
    };
    // Oscillating providers: honest transactions per round and bad ones
    // served since the switch, per slot.
    let oscillators: Vec<usize> = (0..world.providers.len())
        .filter(|s| matches!(world.providers[*s].behaviour, Behaviour::Oscillating(_)))
        .collect();
    let mut oscillator_traffic = vec![vec![0u64; total]; oscillators.len()];
    let mut oscillator_bad = vec![0u32; oscillators.len()];
    let mut fiftieth: Vec<Option<usize>> = vec![None; oscillators.len()];
    let mut order: Vec<usize> = (0..options.consumers).collect();
    let slots: Vec<usize> = (0..world.providers.len()).collect();
    for round in 0..total {
        let now = t0 + ROUND * round as u32;
        order.shuffle(&mut rng);
        for &c in &order {
            let me = CONSUMER_IDS + c as u32;
            let candidates: Vec<u32> = slots
                .choose_multiple(&mut rng, CANDIDATES.min(slots.len()))
                .map(|s| world.providers[*s].id)
                .collect();
            let honest = roles[c] == Role::Honest;
            let chosen = if honest && strategy != Strategy::Random {
                if strategy == Strategy::Safe {
                    for candidate in &candidates {
                        for (advisor, advice) in store.recent(*candidate) {
                            if *advisor != me {
                                cores[c].advise(now, candidate, advisor, *advice);
                            }
                        }
                        if verifies[c] {
                            for warrant in store.warrants(*candidate) {
                                if verified[c].insert(warrant) {
                                    cores[c].warrant(now, candidate);
                                }
                            }
                        }
                    }
                }
                cores[c]
                    .choose(now, &candidates, &mut rng)
                    .expect("candidates")
            } else {
                candidates[rng.gen_range(0..candidates.len())]
            };
            let slot = world.slot_of[&chosen];
            let whitewasher = world.providers[slot].behaviour == Behaviour::Whitewasher;
            let good_provider = !world.is_bad(slot, round);
            let (bad, rating) = world.transact(slot, round, &mut rng);
            if honest {
                run.rounds[round].0 += 1;
                run.rounds[round].1 += u64::from(bad);
                if round >= options.warmup {
                    run.measured += 1;
                    run.to_whitewashers += u64::from(whitewasher);
                }
                if let Some(i) = oscillators.iter().position(|s| *s == slot) {
                    oscillator_traffic[i][round] += 1;
                }
            }
            if let Some(i) = oscillators.iter().position(|s| *s == slot)
                && bad
                && world.is_bad(slot, round)
            {
                oscillator_bad[i] += 1;
                if oscillator_bad[i] == 50 {
                    fiftieth[i] = Some(round);
                }
            }
            if strategy != Strategy::Random {
                cores[c].record(now, &chosen, rating);
            }
            if strategy != Strategy::Safe {
                continue;
            }
            match roles[c] {
                Role::Honest => {
                    if rating.accurate == Some(false) {
                        // Caught: the wrong answer's receipt is a warrant.
                        store.warrant(chosen);
                        verified[c].insert(store.next_warrant - 1);
                    }
                    if let Some(advice) = cores[c].advice_for(now, &chosen) {
                        store.publish(now, me, chosen, advice);
                    }
                }
                Role::Slanderer | Role::Colluder => {
                    // Lies need a transaction (a receipt): about the
                    // provider just used.
                    let count = cores[c].advice_for(now, &chosen).map_or(1.0, |a| a.count);
                    let (score, count) = match (roles[c], good_provider) {
                        (_, true) => (0.0, count),
                        (Role::Colluder, false) => (1.0, count + 50.0),
                        _ => continue,
                    };
                    store.publish(now, me, chosen, Advice { score, count });
                }
            }
        }
    }
    run.refused = store.refused;
    run.stored = store.stored;
    if !oscillators.is_empty() {
        let switch = options.warmup + options.rounds / 3;
        let before: u64 = oscillator_traffic
            .iter()
            .map(|t| t[switch.saturating_sub(10)..switch].iter().sum::<u64>())
            .sum();
        run.oscillating_before = before as f64 / 10.0;
        let last = total.saturating_sub(5);
        let after: f64 = oscillator_traffic
            .iter()
            .zip(&fiftieth)
            .map(|(t, at)| {
                let from = at.map_or(last, |r| (r + 1).min(last));
                let to = (from + 5).min(total);
                t[from..to].iter().sum::<u64>() as f64 / (to - from).max(1) as f64
            })
            .sum();
        run.oscillating_after = Some(after);
        run.oscillating_reached = fiftieth.iter().filter(|at| at.is_some()).count();
    }
    run
}

fn write_csv(path: &Path, runs: &[(Strategy, Run)]) -> anyhow::Result<()> {
    let mut text = String::from("round");
    for (strategy, _) in runs {
        text.push_str(&format!(",{}", strategy.name()));
    }
    text.push('\n');
    for round in 0..runs[0].1.rounds.len() {
        text.push_str(&round.to_string());
        for (_, run) in runs {
            text.push_str(&format!(",{:.4}", run.round_share(round)));
        }
        text.push('\n');
    }
    std::fs::write(path, text)?;
    Ok(())
}

fn plot(path: &Path, scenario: Scenario, runs: &[(Strategy, Run)]) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    let rounds = runs[0].1.rounds.len();
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: transactions served badly", scenario.name()),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0usize..rounds, 0f64..1f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("round (one transaction per consumer)")
        .y_desc("share served badly")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (strategy, run)) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                (0..rounds).map(|r| (r, run.round_share(r))),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(strategy.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

pub fn run(options: Options) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(
        options.providers >= 1 && options.consumers >= 1,
        "no one to simulate"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&options.bad) && (0.0..=1.0).contains(&options.attackers),
        "--bad and --attackers are shares (0 to 1)"
    );
    std::fs::create_dir_all(&options.out)?;
    println!(
        "{} consumers, {} providers ({:.0}% bad), {} warm-up and {} measured transactions per consumer, \
         alpha {}, exploration {}, {:.0}% of the consumers verify warrants, seed {}",
        options.consumers,
        options.providers,
        options.bad * 100.0,
        options.warmup,
        options.rounds,
        options.alpha,
        options.exploration,
        options.verifiers * 100.0,
        options.seed
    );
    let scenarios: Vec<Scenario> = match options.scenario {
        Some(s) => vec![s],
        None => Scenario::ALL.to_vec(),
    };
    let mut summary = String::from(
        "scenario,random,own,safe,safe_to_whitewashers,oscillating_loss,refused_updates,stored_updates,seconds\n",
    );
    println!(
        "\n{:<14} {:>8} {:>8} {:>8}   served badly after the warm-up; notes",
        "scenario", "random", "own", "safe"
    );
    for scenario in scenarios {
        let started = std::time::Instant::now();
        let runs: Vec<(Strategy, Run)> = Strategy::ALL
            .iter()
            .map(|s| (*s, simulate(scenario, *s, &options)))
            .collect();
        let seconds = started.elapsed().as_secs_f64();
        let share = |s: Strategy| {
            runs.iter()
                .find(|(x, _)| *x == s)
                .map_or(f64::NAN, |(_, r)| r.bad_share(options.warmup))
        };
        let safe = &runs[2].1;
        let mut notes = Vec::new();
        let to_whitewashers = safe.to_whitewashers as f64 / safe.measured.max(1) as f64;
        if scenario == Scenario::Whitewashers {
            notes.push(format!(
                "whitewashers' identities got {} of the calls (exploration share {}; random {})",
                percent(to_whitewashers),
                percent(options.exploration),
                percent(runs[0].1.to_whitewashers as f64 / runs[0].1.measured.max(1) as f64)
            ));
        }
        let loss = safe
            .oscillating_after
            .map(|after| 1.0 - after / safe.oscillating_before.max(1e-9));
        if scenario == Scenario::Oscillating {
            notes.push(match loss {
                Some(loss) => format!(
                    "oscillating providers lost {} of their calls within 50 bad transactions ({:.1} -> {:.1} calls per round; {} of {} served 50 bad ones, the others are measured over the last 5 rounds)",
                    percent(loss),
                    safe.oscillating_before,
                    safe.oscillating_after.unwrap_or(0.0),
                    safe.oscillating_reached,
                    options.providers / 10
                ),
                None => "no oscillating providers".into(),
            });
        }
        if safe.refused > 0 {
            notes.push(format!(
                "{} advice updates refused by the guard",
                safe.refused
            ));
        }
        println!(
            "{:<14} {:>8} {:>8} {:>8}   {} ({seconds:.1} s)",
            scenario.name(),
            percent(share(Strategy::Random)),
            percent(share(Strategy::Own)),
            percent(share(Strategy::Safe)),
            notes.join("; ")
        );
        summary.push_str(&format!(
            "{},{:.4},{:.4},{:.4},{:.4},{},{},{},{seconds:.1}\n",
            scenario.name(),
            share(Strategy::Random),
            share(Strategy::Own),
            share(Strategy::Safe),
            to_whitewashers,
            loss.map_or(String::new(), |l| format!("{l:.4}")),
            safe.refused,
            safe.stored
        ));
        write_csv(&options.out.join(format!("{}.csv", scenario.name())), &runs)?;
        plot(
            &options.out.join(format!("{}.svg", scenario.name())),
            scenario,
            &runs,
        )?;
    }
    std::fs::write(options.out.join("summary.csv"), summary)?;
    println!("\nCSV and SVG files in {}", options.out.display());
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(scenario: Scenario) -> Options {
        Options {
            scenario: Some(scenario),
            consumers: 200,
            providers: 40,
            bad: 0.3,
            attackers: 0.2,
            warmup: 10,
            rounds: 30,
            alpha: 8.0,
            exploration: 0.05,
            verifiers: 1.0,
            seed: 3,
            out: PathBuf::new(),
        }
    }

    #[test]
    fn runs_are_reproducible_under_a_seed() {
        let options = small(Scenario::Colluders);
        let a = simulate(Scenario::Colluders, Strategy::Safe, &options);
        let b = simulate(Scenario::Colluders, Strategy::Safe, &options);
        assert_eq!(a.rounds, b.rounds);
        assert_eq!((a.refused, a.stored), (b.refused, b.stored));
    }

    #[test]
    fn reputation_beats_random_choice_against_bad_providers() {
        let options = small(Scenario::BadProviders);
        let random = simulate(Scenario::BadProviders, Strategy::Random, &options);
        let safe = simulate(Scenario::BadProviders, Strategy::Safe, &options);
        let (r, s) = (random.bad_share(10), safe.bad_share(10));
        assert!(r > 0.2, "random serves about the bad share badly: {r}");
        assert!(s < r / 2.0, "safe {s} against random {r}");
    }

    #[test]
    fn the_guard_refuses_inflated_counts() {
        let options = small(Scenario::Colluders);
        let safe = simulate(Scenario::Colluders, Strategy::Safe, &options);
        assert!(safe.refused > 0);
    }
}
