//! The controller on its own: growth, cool-down, regression, hysteresis,
//! pinned providers and bounds, with time as an input.

use super::*;

fn params() -> Params {
    Params {
        latency: Duration::from_millis(500),
        utilisation: 0.5,
        min_replicas: 1,
        max_replicas: 8,
        report_ttl: Duration::from_secs(3),
        hold: Duration::from_secs(30),
        cooldown: Duration::from_secs(5),
        ask_again_after: Duration::from_secs(60),
    }
}

/// A provider with `in_flight` of L = 4 slots busy, on time.
fn load(in_flight: u32) -> Load {
    Load {
        calls_per_s: 10.0,
        in_flight: f64::from(in_flight),
        limit: 4,
        busy_per_s: 0.0,
        p95: Duration::from_millis(100),
        upload: 0.0,
        pinned: false,
    }
}

/// Providers 1..=n report `each` busy slots to every controller at `now`.
fn report_all(group: &mut [Controller<u32>], now: Instant, loads: &[(u32, Load)]) {
    for controller in group.iter_mut() {
        for (peer, load) in loads {
            controller.report(now, *peer, load.clone());
        }
    }
}

#[test]
fn the_coordinator_alone_asks_for_the_deficit() {
    let t0 = Instant::now();
    let mut group: Vec<Controller<u32>> = (1..=2).map(|p| Controller::new(params(), p)).collect();
    for c in &mut group {
        c.standbys(vec![10, 11, 12, 13, 14]);
    }
    // Two providers at 4 of 4: load 2.0, needed 2.0 / 0.5 = 4.
    report_all(&mut group, t0, &[(1, load(4)), (2, load(4))]);
    assert_eq!(group[0].estimate(t0).needed, 4);
    let action = group[0].poll(t0);
    let Some(Action::Solicit { standbys, .. }) = action else {
        panic!("{action:?}");
    };
    assert_eq!(standbys, vec![10, 11]);
    assert_eq!(group[1].poll(t0), None, "only the smallest id acts");
    // Cool-down, and the two asked count as coming: nobody else is asked.
    assert_eq!(group[0].poll(t0 + Duration::from_secs(1)), None);
    let t1 = t0 + Duration::from_secs(6);
    report_all(&mut group, t1, &[(1, load(4)), (2, load(4))]);
    assert_eq!(group[0].poll(t1), None);
    // One of them never came: asked again after the minute, with another.
    let t2 = t0 + Duration::from_secs(61);
    report_all(&mut group, t2, &[(1, load(4)), (2, load(4))]);
    let Some(Action::Solicit { standbys, .. }) = group[0].poll(t2) else {
        panic!();
    };
    assert_eq!(standbys, vec![10, 11]);
}

#[test]
fn a_missed_latency_target_or_busy_answers_ask_for_one_more() {
    let t0 = Instant::now();
    let mut c = Controller::new(params(), 1);
    c.standbys(vec![10, 11]);
    // One slot of four: well within the utilisation target, but slow.
    let mut slow = load(1);
    slow.p95 = Duration::from_secs(2);
    c.report(t0, 1, slow);
    let estimate = c.estimate(t0);
    assert!(estimate.violated);
    assert_eq!(estimate.needed, 2);
    assert!(matches!(c.poll(t0), Some(Action::Solicit { standbys, .. }) if standbys == [10]));

    let mut c = Controller::new(params(), 1);
    let mut busy = load(2);
    busy.busy_per_s = 20.0; // twice what it answers: 2 providers' worth turned away
    c.report(t0, 1, busy);
    let estimate = c.estimate(t0);
    assert!((estimate.load - 2.5).abs() < 1e-9, "{estimate:?}");
    assert_eq!(estimate.needed, 5);
    // Two providers turning callers away: a caller turned away tries both,
    // so their ratios are averaged, not added.
    let mut other = load(4);
    other.busy_per_s = 20.0;
    c.report(t0, 2, other);
    let estimate = c.estimate(t0);
    assert!(
        (estimate.load - (0.5 + 1.0 + 2.0)).abs() < 1e-9,
        "{estimate:?}"
    );
    assert!(estimate.violated);

    // A moment's full house (1 caller in 50 turned away) is no shortage.
    let mut c = Controller::new(params(), 1);
    let mut full = load(2);
    full.calls_per_s = 50.0;
    full.busy_per_s = 1.0;
    c.report(t0, 1, full);
    let estimate = c.estimate(t0);
    assert!(!estimate.violated, "{estimate:?}");
    assert_eq!(estimate.needed, 2, "{estimate:?}");
}

#[test]
fn one_stalled_provider_among_many_is_no_violation() {
    let t0 = Instant::now();
    let mut c = Controller::new(params(), 1);
    c.standbys(vec![10, 11]);
    let mut slow = load(1);
    slow.p95 = Duration::from_secs(2);
    // Eight providers at one slot in four: load 2.0, 4 needed at 50%.
    let mut loads: Vec<(u32, Load)> = (1..=8).map(|p| (p, load(1))).collect();
    loads[7].1 = slow.clone();
    for (peer, l) in &loads {
        c.report(t0, *peer, l.clone());
    }
    let estimate = c.estimate(t0);
    assert!(
        !estimate.violated,
        "1 of 8 is below the quorum: {estimate:?}"
    );
    assert_eq!(c.poll(t0), None);
    // A second one (2 of 8, a quarter): the group is short.
    c.report(t0, 7, slow);
    let estimate = c.estimate(t0);
    assert!(estimate.violated, "{estimate:?}");
    assert_eq!(estimate.needed, 8);
    // (Two providers: one of them is already a quorum; tested above.)
}

#[test]
fn growth_stops_at_max_and_at_what_standbys_there_are() {
    let t0 = Instant::now();
    let mut c = Controller::new(
        Params {
            max_replicas: 3,
            ..params()
        },
        1,
    );
    c.standbys(vec![10, 11, 12, 13]);
    c.report(t0, 1, load(4));
    c.report(t0, 2, load(4));
    c.report(t0, 3, load(4));
    assert_eq!(c.estimate(t0).needed, 3);
    assert_eq!(c.poll(t0), None, "at max already");

    let mut c = Controller::new(params(), 1);
    c.report(t0, 1, load(4));
    assert_eq!(c.poll(t0), None, "no standby known");
}

#[test]
fn an_idle_surplus_retires_after_the_hold_largest_unpinned_ids_first() {
    let t0 = Instant::now();
    let mut group: Vec<Controller<u32>> = (1..=5).map(|p| Controller::new(params(), p)).collect();
    let mut pinned = load(0);
    pinned.pinned = true;
    // Five providers, the largest id pinned, one busy slot in all: 0.25
    // providers' worth, 1 needed at half the target utilisation.
    let loads = [
        (1, load(1)),
        (2, load(0)),
        (3, load(0)),
        (4, load(0)),
        (5, pinned),
    ];
    let mut retired = Vec::new();
    for s in 0..=40 {
        let now = t0 + Duration::from_secs(s);
        let reporting: Vec<(u32, Load)> = loads
            .iter()
            .filter(|(p, _)| !retired.contains(p))
            .cloned()
            .collect();
        report_all(&mut group, now, &reporting);
        for c in &mut group {
            if let Some(action) = c.poll(now) {
                assert!(matches!(action, Action::Retire { .. }), "{action:?}");
                assert!(s >= 30, "retired before the hold: {s} s");
                retired.push(c.me);
            }
        }
    }
    retired.sort();
    // Surplus 5 - 1 = 4: the four largest unpinned ids are 4, 3, 2, 1.
    // The pinned one stays; so does nobody else, and the group is 1.
    assert_eq!(retired, vec![1, 2, 3, 4]);
}

#[test]
fn never_below_min() {
    let t0 = Instant::now();
    let mut group: Vec<Controller<u32>> = (1..=3)
        .map(|p| {
            Controller::new(
                Params {
                    min_replicas: 2,
                    ..params()
                },
                p,
            )
        })
        .collect();
    let mut retired = 0;
    for s in 0..=40 {
        let now = t0 + Duration::from_secs(s);
        report_all(&mut group, now, &[(1, load(0)), (2, load(0)), (3, load(0))]);
        retired += group.iter_mut().filter_map(|c| c.poll(now)).count();
    }
    assert_eq!(retired, 1);
    assert!(group[2].retired(), "the largest id went");
}

#[test]
fn a_load_that_dips_shorter_than_the_hold_retires_nobody() {
    let t0 = Instant::now();
    let mut c = Controller::new(params(), 2);
    for s in 0..=100 {
        let now = t0 + Duration::from_secs(s);
        // Idle, except a busy second every 20 s.
        let busy = if s % 20 == 0 { 4 } else { 0 };
        c.report(now, 1, load(busy));
        c.report(now, 2, load(0));
        assert_eq!(c.poll(now), None, "at {s} s");
    }
}

#[test]
fn a_provider_whose_reports_stop_is_counted_out() {
    let t0 = Instant::now();
    let mut c = Controller::new(params(), 2);
    c.report(t0, 1, load(2));
    c.report(t0, 2, load(2));
    assert_eq!(c.estimate(t0).providers, 2);
    let t1 = t0 + Duration::from_secs(4);
    c.report(t1, 2, load(2));
    let estimate = c.estimate(t1);
    assert_eq!(estimate.providers, 1);
    // Provider 1 is gone: 2 is the coordinator now.
    c.standbys(vec![10]);
    c.report(t1, 2, load(4));
    assert!(matches!(c.poll(t1), Some(Action::Solicit { .. })));
}

/// A group under a steady load changes size in one direction at most, for
/// any load: it grows to what the load needs, or shrinks to it, and then
/// stays.
#[test]
fn a_steady_load_moves_the_group_in_one_direction_at_most() {
    for busy_slots in 0..=40u32 {
        let t0 = Instant::now();
        let mut providers: Vec<u32> = vec![1, 2, 3];
        let standbys: Vec<u32> = (10..40).collect();
        let mut controllers: BTreeMap<u32, Controller<u32>> = providers
            .iter()
            .map(|&p| (p, Controller::new(params(), p)))
            .collect();
        let mut directions: Vec<&str> = Vec::new();
        for s in 0..300 {
            let now = t0 + Duration::from_secs(s);
            // The load spreads evenly over the providers (L = 4 each); what
            // does not fit is turned away.
            let n = providers.len() as u32;
            let reports: Vec<(u32, Load)> = providers
                .iter()
                .enumerate()
                .map(|(i, &p)| {
                    let share = busy_slots / n + u32::from((i as u32) < busy_slots % n);
                    let mut l = load(share.min(4));
                    l.busy_per_s = f64::from(share.saturating_sub(4)) * 2.5;
                    (p, l)
                })
                .collect();
            let before = providers.len();
            let mut joined = Vec::new();
            let mut left = Vec::new();
            for (&p, c) in controllers.iter_mut() {
                c.standbys(standbys.clone());
                for (peer, l) in &reports {
                    c.report(now, *peer, l.clone());
                }
                match c.poll(now) {
                    Some(Action::Solicit { standbys, .. }) => joined.extend(standbys),
                    Some(Action::Retire { .. }) => left.push(p),
                    None => {}
                }
            }
            for p in joined {
                providers.push(p);
                controllers.insert(p, Controller::new(params(), p));
            }
            for p in &left {
                providers.retain(|x| x != p);
                controllers.remove(p);
            }
            let direction = match providers.len().cmp(&before) {
                std::cmp::Ordering::Greater => "up",
                std::cmp::Ordering::Less => "down",
                std::cmp::Ordering::Equal => continue,
            };
            if directions.last() != Some(&direction) {
                directions.push(direction);
            }
        }
        assert!(
            directions.len() <= 1,
            "{busy_slots} busy slots: {directions:?}, ending with {} providers",
            providers.len()
        );
        // And it ends where the load puts it: grown to what the target
        // utilisation needs (at most 8), or shrunk to what half of it
        // needs, or left at 3 in between.
        let load = f64::from(busy_slots) / 4.0;
        let needed = ((load / 0.5).ceil() as usize).clamp(1, 8);
        let low = ((load / 0.25).ceil() as usize).clamp(1, 8);
        let expected = if needed > 3 { needed } else { low.min(3) };
        assert_eq!(providers.len(), expected, "{busy_slots} busy slots");
    }
}
