//! The reputation core on its own: decay, wrong answers, credibility,
//! sublinear advisor weight, exploration, determinism under a seed, the
//! stuffing guard, and bounds under arbitrary input.

use super::*;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

const GOOD: Rating = Rating {
    timeliness: 1.0,
    available: true,
    accurate: Some(true),
};
const SLOW: Rating = Rating {
    timeliness: 0.0,
    available: true,
    accurate: None,
};
const WRONG: Rating = Rating {
    timeliness: 1.0,
    available: true,
    accurate: Some(false),
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn ratings_score_timeliness_availability_and_accuracy() {
    assert_eq!(Rating::timeliness(Duration::from_millis(100), secs(1)), 1.0);
    assert_eq!(
        Rating::timeliness(Duration::from_millis(1500), secs(1)),
        0.5
    );
    assert_eq!(Rating::timeliness(secs(3), secs(1)), 0.0);
    assert_eq!(GOOD.score(), 1.0);
    assert_eq!(WRONG.score(), 0.0, "a fast wrong answer is worth nothing");
    let busy = Rating {
        available: false,
        ..GOOD
    };
    assert_eq!(busy.score(), 0.0);
    let nan = Rating {
        timeliness: f64::NAN,
        ..SLOW
    };
    assert_eq!(nan.score(), 0.0);
}

#[test]
fn evidence_decays_so_a_reformed_provider_recovers() {
    let t0 = Instant::now();
    let mut r = Reputation::new(Params {
        half_life: secs(100),
        ..Params::default()
    });
    for _ in 0..10 {
        r.record(t0, &1, SLOW);
    }
    let bad = r.score(t0, &1);
    assert!(bad.value < 0.1, "{bad:?}");
    assert!((bad.own - 10.0).abs() < 1e-9);
    // Ten half-lives later the old evidence is worth 1/1024 of itself:
    // a few good transactions outweigh it.
    let later = t0 + secs(1000);
    assert!((r.score(later, &1).own - 10.0 / 1024.0).abs() < 1e-9);
    for _ in 0..3 {
        r.record(later, &1, GOOD);
    }
    assert!(r.score(later, &1).value > 0.8, "{:?}", r.score(later, &1));
}

#[test]
fn a_wrong_answer_is_strong_evidence() {
    let t0 = Instant::now();
    let mut r = Reputation::new(Params::default());
    for provider in [1, 2] {
        for _ in 0..20 {
            r.record(t0, &provider, GOOD);
        }
    }
    r.record(t0, &1, SLOW);
    r.record(t0, &2, WRONG);
    let slow = r.score(t0, &1);
    let wrong = r.score(t0, &2);
    assert!(slow.value > 0.9, "{slow:?}");
    assert!(wrong.value < 0.7, "{wrong:?}");
    assert_eq!(wrong.last_wrong, Some(t0));
    assert_eq!(slow.last_wrong, None);
    // Advice counts transactions, not evidence: 21 each.
    let advice = r.advice_for(t0, &2).unwrap();
    assert!((advice.count - 21.0).abs() < 1e-9, "{advice:?}");
    assert!(advice.score < 0.7);
}

#[test]
fn slanderers_lose_their_credibility_and_honest_advisors_keep_it() {
    let t0 = Instant::now();
    let mut r = Reputation::new(Params::default());
    let (good, honest, slanderer) = (1, 10, 11);
    r.advise(
        t0,
        &good,
        &honest,
        Advice {
            score: 0.95,
            count: 30.0,
        },
    );
    r.advise(
        t0,
        &good,
        &slanderer,
        Advice {
            score: 0.0,
            count: 30.0,
        },
    );
    // Before any own experience the two cancel out, near the prior.
    let before = r.score(t0, &good);
    assert!((0.3..0.7).contains(&before.value), "{before:?}");
    for _ in 0..5 {
        r.record(t0, &good, GOOD);
    }
    assert!(r.credibility(t0, &slanderer) < 0.2);
    assert!(r.credibility(t0, &honest) > 0.8);
    // A new provider the slanderer badmouths keeps most of its standing.
    let other = 2;
    r.advise(
        t0,
        &other,
        &honest,
        Advice {
            score: 0.9,
            count: 30.0,
        },
    );
    r.advise(
        t0,
        &other,
        &slanderer,
        Advice {
            score: 0.0,
            count: 100.0,
        },
    );
    let score = r.score(t0, &other);
    assert!(score.value > 0.75, "{score:?}");
    assert_eq!(score.advisors, 2);
}

#[test]
fn an_advisors_weight_grows_sublinearly_and_is_capped() {
    let t0 = Instant::now();
    let score_with = |count: f64| {
        let mut r = Reputation::new(Params::default());
        r.advise(t0, &1, &10, Advice { score: 1.0, count });
        r.score(t0, &1).value
    };
    // weight c²·√n = ¼·√n: R = (½ + ¼√n) / (1 + ¼√n).
    let expected = |n: f64| (0.5 + 0.25 * n.sqrt()) / (1.0 + 0.25 * n.sqrt());
    assert!((score_with(16.0) - expected(16.0)).abs() < 1e-9);
    assert!((score_with(1e9) - expected(100.0)).abs() < 1e-9, "capped");
    // Own experience counts first: one own bad transaction against an
    // advisor's perfect score.
    let mut r = Reputation::new(Params::default());
    r.advise(
        t0,
        &1,
        &10,
        Advice {
            score: 1.0,
            count: 4.0,
        },
    );
    r.record(t0, &1, SLOW);
    assert!(r.score(t0, &1).value < 0.6);
}

#[test]
fn hostile_advice_is_ignored_and_bounded() {
    let t0 = Instant::now();
    let mut r = Reputation::new(Params {
        max_advisors: 4,
        ..Params::default()
    });
    for bad in [
        Advice {
            score: f64::NAN,
            count: 1.0,
        },
        Advice {
            score: 2.0,
            count: 1.0,
        },
        Advice {
            score: 1.0,
            count: -1.0,
        },
        Advice {
            score: 1.0,
            count: f64::INFINITY,
        },
    ] {
        r.advise(t0, &1, &10, bad);
    }
    assert_eq!(r.score(t0, &1).advisors, 0);
    r.advise(
        t0,
        &1,
        &1,
        Advice {
            score: 1.0,
            count: 50.0,
        },
    );
    assert_eq!(r.score(t0, &1).advisors, 0, "a provider advising on itself");
    for advisor in 100..200 {
        r.advise(
            t0,
            &1,
            &advisor,
            Advice {
                score: 1.0,
                count: 1.0,
            },
        );
    }
    assert_eq!(r.score(t0, &1).advisors, 4);
}

fn share(picks: &[u32], who: u32) -> f64 {
    picks.iter().filter(|p| **p == who).count() as f64 / picks.len() as f64
}

#[test]
fn a_newcomer_gets_the_exploration_share_and_choice_follows_reputation() {
    let t0 = Instant::now();
    let mut r = Reputation::new(Params::default());
    for _ in 0..20 {
        r.record(t0, &1, GOOD);
        r.record(t0, &2, SLOW);
    }
    let mut rng = StdRng::seed_from_u64(7);
    let candidates = [1, 2, 3];
    let picks: Vec<u32> = (0..20_000)
        .map(|_| r.choose(t0, &candidates, &mut rng).unwrap())
        .collect();
    assert!(r.score(t0, &3).newcomer);
    let newcomer = share(&picks, 3);
    assert!((0.04..0.06).contains(&newcomer), "{newcomer}");
    let bad = share(&picks, 2);
    assert!(bad < 0.001, "{bad}");
    assert!(share(&picks, 1) > 0.93);
    // A known bad provider loses to an unknown one; without newcomers the
    // best of the bad ones is still chosen (a call must go somewhere).
    for _ in 0..100 {
        assert_eq!(r.choose(t0, &[2, 3], &mut rng), Some(3));
    }
    assert_eq!(r.choose(t0, &[2], &mut rng), Some(2));
    // Only newcomers: one of them; none at all: none.
    assert!(r.choose(t0, &[7, 8], &mut rng).is_some());
    assert_eq!(r.choose(t0, &[], &mut rng), None);
}

#[test]
fn choice_is_random_but_reproducible_under_a_seed() {
    let t0 = Instant::now();
    let mut r = Reputation::new(Params::default());
    for p in 1..=5 {
        for _ in 0..10 {
            r.record(t0, &p, GOOD);
        }
    }
    let run = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..200)
            .map(|_| r.choose(t0, &[1, 2, 3, 4, 5], &mut rng).unwrap())
            .collect::<Vec<u32>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    let picks = run(3);
    for p in 1..=5 {
        assert!(picks.contains(&p), "equally good providers all get calls");
    }
}

#[test]
fn the_order_puts_the_less_loaded_of_two_first_and_the_rest_by_reputation() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(3);
    // Unknown providers (all newcomers): two drawn at random, the less
    // loaded first, the others by load.
    let core = Reputation::<u32>::new(Params::default());
    let ten: Vec<u32> = (0..10).collect();
    let load = |p: &u32| *p as f32 / 10.0;
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..500 {
        let order = core.order(now, &ten, load, &mut rng);
        assert_eq!(order.len(), 10);
        assert_ne!(order[0], 9, "the most loaded never goes first");
        assert!(load(&order[0]) < load(&order[1]));
        assert!(order[2..].windows(2).all(|w| load(&w[0]) <= load(&w[1])));
        firsts.insert(order[0]);
    }
    // Not always the least loaded: callers do not all pile onto one.
    assert!(firsts.len() > 3, "{firsts:?}");
    assert!(core.order(now, &[], load, &mut rng).is_empty());
    assert_eq!(core.order(now, &[7], load, &mut rng), [7]);

    // Reputation decides who may go first: a provider caught answering
    // wrongly is never among the two drawn while good ones are there, even
    // claiming to be idle; it comes last.
    let mut core = Reputation::<u32>::new(Params {
        exploration: 0.0,
        ..Params::default()
    });
    for p in 0..4 {
        for _ in 0..5 {
            core.record(now, &p, if p == 0 { WRONG } else { GOOD });
        }
    }
    let idle_cheat = |p: &u32| if *p == 0 { 0.0 } else { 0.9 };
    for _ in 0..200 {
        let order = core.order(now, &[0, 1, 2, 3], idle_cheat, &mut rng);
        assert_eq!(order.last(), Some(&0), "{order:?}");
    }
}

#[test]
fn a_newcomer_claiming_to_be_idle_does_not_jump_the_queue() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(5);
    let mut core = Reputation::<u32>::new(Params {
        exploration: 0.0,
        ..Params::default()
    });
    // Two known good providers at half load; a new identity (9) that
    // claims to be idle.
    for p in [1, 2] {
        for _ in 0..5 {
            core.record(now, &p, GOOD);
        }
    }
    let load = |p: &u32| if *p == 9 { 0.0 } else { 0.5 };
    let firsts = (0..400)
        .filter(|_| core.order(now, &[1, 2, 9], load, &mut rng)[0] == 9)
        .count();
    assert_eq!(firsts, 0, "its claim is not believed below the mean");
    // Against a known provider loaded above the mean, it may go first (a
    // new replica relieving a busy one).
    let load = |p: &u32| match p {
        9 => 0.0,
        1 => 0.9,
        _ => 0.1,
    };
    let firsts = (0..400)
        .filter(|_| core.order(now, &[1, 2, 9], load, &mut rng)[0] == 9)
        .count();
    assert!(firsts > 50, "{firsts}");
}

#[test]
fn a_verdict_adds_strong_evidence_without_another_transaction() {
    let now = Instant::now();
    let mut core = Reputation::<u32>::new(Params::default());
    core.record(now, &1, SLOW);
    let before = core.advice_for(now, &1).unwrap().count;
    core.verdict(now, &1, true);
    assert_eq!(core.advice_for(now, &1).unwrap().count, before);
    let fine = core.score(now, &1).value;
    core.verdict(now, &1, false);
    assert_eq!(core.advice_for(now, &1).unwrap().count, before);
    let score = core.score(now, &1);
    assert!(
        score.value < fine / 2.0 && score.last_wrong == Some(now),
        "{score:?}"
    );
}

#[test]
fn the_guard_refuses_counts_that_grow_too_fast() {
    let t0 = Instant::now();
    let mut guard = StuffingGuard::new(GuardParams {
        pair_rate: 1.0,
        pair_burst: 10.0,
        consumer_rate: 2.0,
        consumer_burst: 15.0,
        max_tracked: 1000,
    });
    assert_eq!(
        guard.admit(t0, &1, &100, 1000.0),
        Err(GuardRefusal::Pair { rate: 1.0 }),
        "a huge claimed count at once"
    );
    assert!(guard.admit(t0, &1, &100, 10.0).is_ok(), "the burst");
    assert!(guard.admit(t0, &1, &100, 1.0).is_err(), "spent");
    assert!(
        guard.admit(t0 + secs(5), &1, &100, 5.0).is_ok(),
        "refilled at the rate"
    );
    // Over many providers, the consumer's own bound holds.
    assert!(guard.admit(t0 + secs(5), &1, &101, 5.0).is_ok());
    assert_eq!(
        guard.admit(t0 + secs(5), &1, &102, 6.0),
        Err(GuardRefusal::Consumer { rate: 2.0 })
    );
    assert!(guard.admit(t0, &2, &100, 5.0).is_ok(), "another consumer");
    assert_eq!(
        guard.admit(t0, &3, &100, f64::NAN),
        Err(GuardRefusal::Count)
    );
    assert_eq!(guard.admit(t0, &3, &100, -1.0), Err(GuardRefusal::Count));
}

#[test]
fn the_guard_stays_bounded() {
    let t0 = Instant::now();
    let mut guard = StuffingGuard::new(GuardParams {
        max_tracked: 100,
        ..GuardParams::default()
    });
    for consumer in 0..10_000u32 {
        let _ = guard.admit(t0, &consumer, &0, 1.0);
    }
    assert!(guard.pairs.len() <= 100 && guard.consumers.len() <= 100);
    // Idle entries make room again.
    assert!(guard.admit(t0 + secs(3600), &99_999, &0, 1.0).is_ok());
}

proptest! {
    #[test]
    fn scores_stay_in_range_whatever_comes_in(
        events in prop::collection::vec(
            (0u8..3, 0u32..6, 0u32..6, -2.0f64..3.0, -5.0f64..1e6, 0u64..100_000),
            0..200,
        ),
        seed in any::<u64>(),
    ) {
        let t0 = Instant::now();
        let mut r = Reputation::new(Params { half_life: secs(600), ..Params::default() });
        let mut now = t0;
        for (kind, provider, advisor, x, count, step) in events {
            now += Duration::from_millis(step);
            match kind {
                0 => r.record(now, &provider, Rating { timeliness: x, available: x > 0.0, accurate: (x > 1.0).then_some(x > 2.0) }),
                1 => r.advise(now, &provider, &advisor, Advice { score: x, count }),
                _ => r.prune(now),
            }
        }
        let mut rng = StdRng::seed_from_u64(seed);
        for p in 0..6 {
            let s = r.score(now, &p);
            prop_assert!((0.0..=1.0).contains(&s.value), "{s:?}");
            prop_assert!(s.own >= 0.0 && s.advised >= 0.0);
        }
        let candidates: Vec<u32> = (0..6).collect();
        let chosen = r.choose(now, &candidates, &mut rng);
        prop_assert!(chosen.is_some_and(|c| c < 6));
    }
}
