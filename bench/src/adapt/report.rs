//! The adaptation benchmark's numbers: per second, per run, the table
//! against the targets, CSV files and SVG plots.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use super::{Mode, Scenario};
use crate::plot::COLORS;

/// What happened in one second of a run.
#[derive(Clone, Debug)]
pub struct Second {
    pub second: usize,
    pub viewers: usize,
    pub providers: usize,
    /// Fetches asked in this second, and their outcomes.
    pub requests: usize,
    pub on_time: usize,
    /// Every provider answered `Busy`.
    pub busy: usize,
    /// Any other failure (no provider found, timeouts, ...).
    pub failed: usize,
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
    /// CPU this process used, as a fraction of the machine.
    pub cpu: f64,
}

impl Second {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        second: usize,
        viewers: usize,
        providers: usize,
        requests: usize,
        on_time: usize,
        busy: usize,
        failed: usize,
        latencies: &mut [f64],
        cpu: f64,
    ) -> Self {
        latencies.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            (!latencies.is_empty()).then(|| {
                let i = ((latencies.len() - 1) as f64 * q).round() as usize;
                Duration::from_secs_f64(latencies[i])
            })
        };
        Self {
            second,
            viewers,
            providers,
            requests,
            on_time,
            busy,
            failed,
            p50: quantile(0.5),
            p95: quantile(0.95),
            cpu,
        }
    }

    fn on_time_fraction(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.on_time as f64 / self.requests as f64)
    }
}

/// A run summed up.
#[derive(Clone, Debug)]
pub struct Summary {
    pub mode: Mode,
    pub on_time: f64,
    pub on_time_crowd: f64,
    /// From the first second below 95% on time until every 10 s window from
    /// then on is at least 95% on time (`None`: never back within QoS);
    /// zero when never below.
    pub reaction: Option<usize>,
    /// The least on-time 10 s window after the reaction.
    pub worst_window_after: f64,
    pub peak_providers: usize,
    pub provider_seconds: usize,
    /// The provider-seconds the load needs at full use of each provider's
    /// capacity (`U` over the bytes of a fetch), at least one provider.
    pub min_provider_seconds: usize,
    pub providers_end: usize,
    /// Seconds from the crowd's last second until the providers are back
    /// to M for good (`None`: not within the run).
    pub back_to_m: Option<usize>,
    pub direction_changes: usize,
    pub load_changes: usize,
    pub cpu_mean: f64,
    pub cpu_max: f64,
}

/// Times the sign of the non-zero steps of `values` changes, and the
/// number of runs of same-sign steps.
fn turns(values: impl Iterator<Item = i64>) -> (usize, usize) {
    let mut last_value: Option<i64> = None;
    let mut last_sign = 0i64;
    let (mut changes, mut runs) = (0, 0);
    for v in values {
        if let Some(prev) = last_value {
            let sign = (v - prev).signum();
            if sign != 0 {
                if sign != last_sign {
                    runs += 1;
                    if last_sign != 0 {
                        changes += 1;
                    }
                }
                last_sign = sign;
            }
        }
        last_value = Some(v);
    }
    (changes, runs)
}

fn fraction(seconds: &[Second]) -> f64 {
    let requests: usize = seconds.iter().map(|s| s.requests).sum();
    let on_time: usize = seconds.iter().map(|s| s.on_time).sum();
    if requests == 0 {
        1.0
    } else {
        on_time as f64 / requests as f64
    }
}

impl Summary {
    pub fn of(scenario: &Scenario, seconds: &[Second]) -> Self {
        let on_time = fraction(seconds);
        let crowd = scenario.crowd();
        let on_time_crowd = crowd.map_or(on_time, |(a, b)| {
            fraction(&seconds[a..=b.min(seconds.len() - 1)])
        });
        let below = seconds
            .iter()
            .position(|s| s.on_time_fraction().is_some_and(|f| f < 0.95));
        let window = |from: usize| fraction(&seconds[from..(from + 10).min(seconds.len())]);
        let last_window = seconds.len().saturating_sub(10);
        let (reaction, worst_window_after) = match below {
            None => (Some(0), (0..=last_window).map(window).fold(1.0, f64::min)),
            Some(first) => {
                // The first second from which every 10 s window is fine.
                let back =
                    (first..=last_window).find(|&t| (t..=last_window).all(|w| window(w) >= 0.95));
                match back {
                    Some(t) => (
                        Some(t - first),
                        (t..=last_window).map(window).fold(1.0, f64::min),
                    ),
                    None => (None, (first..=last_window).map(window).fold(1.0, f64::min)),
                }
            }
        };
        let capacity = scenario.capacity();
        let period = scenario.period.as_secs_f64();
        let min_provider_seconds = scenario
            .viewers
            .iter()
            .map(|v| ((*v as f64 / period / capacity).ceil() as usize).max(1))
            .sum();
        let back_to_m = crowd.and_then(|(_, last)| {
            let m = scenario.providers;
            (last..seconds.len())
                .find(|&t| seconds[t..].iter().all(|s| s.providers <= m))
                .map(|t| t - last)
        });
        let (direction_changes, _) = turns(seconds.iter().map(|s| s.providers as i64));
        let (_, load_changes) = turns(scenario.viewers.iter().map(|v| *v as i64));
        let cpus: Vec<f64> = seconds
            .iter()
            .map(|s| s.cpu)
            .filter(|c| c.is_finite())
            .collect();
        Self {
            mode: scenario.mode,
            on_time,
            on_time_crowd,
            reaction,
            worst_window_after,
            peak_providers: seconds.iter().map(|s| s.providers).max().unwrap_or(0),
            provider_seconds: seconds.iter().map(|s| s.providers).sum(),
            min_provider_seconds,
            providers_end: seconds.last().map_or(0, |s| s.providers),
            back_to_m,
            direction_changes,
            load_changes,
            cpu_mean: cpus.iter().sum::<f64>() / cpus.len().max(1) as f64,
            cpu_max: cpus.iter().copied().fold(0.0, f64::max),
        }
    }
}

/// `<out>/<mode>-seconds.csv`.
pub(super) fn write_seconds(out: &Path, mode: Mode, seconds: &[Second]) -> anyhow::Result<()> {
    let mut csv = String::from(
        "second,viewers,providers,requests,on_time_fraction,p50_ms,p95_ms,busy,failed,cpu\n",
    );
    let ms =
        |d: Option<Duration>| d.map_or(String::new(), |d| format!("{:.1}", d.as_secs_f64() * 1e3));
    for s in seconds {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{:.3}",
            s.second,
            s.viewers,
            s.providers,
            s.requests,
            s.on_time_fraction()
                .map_or(String::new(), |f| format!("{f:.4}")),
            ms(s.p50),
            ms(s.p95),
            s.busy,
            s.failed,
            s.cpu
        );
    }
    std::fs::write(out.join(format!("{}-seconds.csv", mode.name())), csv)?;
    Ok(())
}

fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn seconds_or_never(x: Option<usize>) -> String {
    x.map_or("never".into(), |s| format!("{s} s"))
}

/// Prints the summary table with the targets, and writes `summary.csv`.
pub(super) fn print_and_write(
    out: &Path,
    results: &[(Scenario, Vec<Second>, Summary)],
) -> anyhow::Result<()> {
    let mut csv = String::from(
        "mode,on_time,on_time_crowd,reaction_s,worst_window_after,peak_providers,provider_seconds,min_provider_seconds,cost_ratio,providers_end,back_to_m_s,direction_changes,load_changes,cpu_mean,cpu_max\n",
    );
    println!(
        "\n{:<34} {}",
        "",
        results
            .iter()
            .map(|(_, _, s)| format!("{:>12}", s.mode.name()))
            .collect::<String>()
    );
    let row = |label: &str, f: &dyn Fn(&Summary) -> String| {
        println!(
            "{label:<34} {}",
            results
                .iter()
                .map(|(_, _, s)| format!("{:>12}", f(s)))
                .collect::<String>()
        );
    };
    row("on time, overall", &|s| percent(s.on_time));
    row("on time, during the crowd", &|s| percent(s.on_time_crowd));
    row("reaction time", &|s| seconds_or_never(s.reaction));
    row("worst 10 s window after it", &|s| {
        percent(s.worst_window_after)
    });
    row("peak providers", &|s| s.peak_providers.to_string());
    row("provider-seconds", &|s| s.provider_seconds.to_string());
    row("  / minimum the load needs", &|s| {
        format!(
            "{:.2}x",
            s.provider_seconds as f64 / s.min_provider_seconds.max(1) as f64
        )
    });
    row("providers at the end", &|s| s.providers_end.to_string());
    row("back to M after the crowd", &|s| {
        seconds_or_never(s.back_to_m)
    });
    row("direction changes / load changes", &|s| {
        format!("{}/{}", s.direction_changes, s.load_changes)
    });
    row("CPU, mean / max", &|s| {
        format!("{:.0}/{:.0}%", s.cpu_mean * 100.0, s.cpu_max * 100.0)
    });
    for (scenario, _, s) in results {
        let _ = writeln!(
            csv,
            "{},{:.4},{:.4},{},{:.4},{},{},{},{:.3},{},{},{},{},{:.3},{:.3}",
            s.mode.name(),
            s.on_time,
            s.on_time_crowd,
            s.reaction.map_or(String::new(), |r| r.to_string()),
            s.worst_window_after,
            s.peak_providers,
            s.provider_seconds,
            s.min_provider_seconds,
            s.provider_seconds as f64 / s.min_provider_seconds.max(1) as f64,
            s.providers_end,
            s.back_to_m.map_or(String::new(), |b| b.to_string()),
            s.direction_changes,
            s.load_changes,
            s.cpu_mean,
            s.cpu_max
        );
        if s.mode == Mode::Adaptive {
            print_targets(scenario, s);
        }
        if s.mode == Mode::Static {
            let met = s.on_time_crowd < 0.8;
            println!(
                "target: static below 80% on time during the crowd: {} ({})",
                percent(s.on_time_crowd),
                verdict(met)
            );
        }
    }
    std::fs::write(out.join("summary.csv"), csv)?;
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn print_targets(scenario: &Scenario, s: &Summary) {
    let hold = scenario.hold.as_secs() as usize;
    println!("\ntargets (adaptive):");
    println!(
        "  on time >= 99% overall: {} ({})",
        percent(s.on_time),
        verdict(s.on_time >= 0.99)
    );
    let reacted = s.reaction.is_some_and(|r| r <= 10) && s.worst_window_after >= 0.95;
    println!(
        "  reaction <= 10 s, then every 10 s window >= 95%: {}, worst {} ({})",
        seconds_or_never(s.reaction),
        percent(s.worst_window_after),
        verdict(reacted)
    );
    let ratio = s.provider_seconds as f64 / s.min_provider_seconds.max(1) as f64;
    println!(
        "  provider-seconds <= 1.5x the minimum: {ratio:.2}x ({})",
        verdict(ratio <= 1.5)
    );
    println!(
        "  back to M within hold + 15 s = {} s: {} ({})",
        hold + 15,
        seconds_or_never(s.back_to_m),
        verdict(s.back_to_m.is_some_and(|b| b <= hold + 15))
    );
    println!(
        "  <= 2 direction changes per load change: {}/{} ({})",
        s.direction_changes,
        s.load_changes,
        verdict(s.direction_changes <= 2 * s.load_changes.max(1))
    );
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// One chart of a per-second value for every run.
fn per_second_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    results: &[(Scenario, Vec<Second>, Summary)],
    value: impl Fn(&Second) -> Option<f64>,
    viewers: bool,
) -> anyhow::Result<()> {
    let n = results
        .iter()
        .map(|(_, s, _)| s.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let top = results
        .iter()
        .flat_map(|(_, s, _)| s.iter().filter_map(&value))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let most_viewers = results
        .iter()
        .flat_map(|(sc, _, _)| sc.viewers.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(if viewers { 60 } else { 0 })
        .build_cartesian_2d(0usize..n, 0f64..top)
        .map_err(plot_err)?
        .set_secondary_coord(0usize..n, 0f64..most_viewers as f64 * 1.1);
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc(y_desc)
        .draw()
        .map_err(plot_err)?;
    if viewers {
        chart
            .configure_secondary_axes()
            .y_desc("viewers")
            .draw()
            .map_err(plot_err)?;
        let (_, seconds, _) = &results[0];
        chart
            .draw_secondary_series(LineSeries::new(
                seconds.iter().map(|s| (s.second, s.viewers as f64)),
                BLACK.mix(0.4).stroke_width(2),
            ))
            .map_err(plot_err)?
            .label("viewers (right axis)")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.4).stroke_width(2))
            });
    }
    for (i, (scenario, seconds, _)) in results.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                seconds
                    .iter()
                    .filter_map(|s| value(s).map(|v| (s.second, v))),
                color.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(scenario.mode.name())
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
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// `providers.svg` (the paper's figure 3, measured), `on-time.svg` and
/// `latency.svg`.
pub(super) fn plots(
    out: &Path,
    results: &[(Scenario, Vec<Second>, Summary)],
) -> anyhow::Result<()> {
    per_second_chart(
        &out.join("providers.svg"),
        "Viewers and providers over time",
        "providers",
        results,
        |s| Some(s.providers as f64),
        true,
    )?;
    per_second_chart(
        &out.join("on-time.svg"),
        "Fetches answered within the QoS latency, per second",
        "on-time fraction",
        results,
        |s| s.on_time_fraction(),
        false,
    )?;
    per_second_chart(
        &out.join("latency.svg"),
        "95th percentile of fetch latency, per second",
        "seconds",
        results,
        |s| s.p95.map(|d| d.as_secs_f64()),
        false,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_count_direction_changes_and_runs() {
        // Up, flat, down: one change, two runs.
        assert_eq!(turns([2, 3, 5, 5, 4, 2].into_iter()), (1, 2));
        // Flat: nothing.
        assert_eq!(turns([2, 2, 2].into_iter()), (0, 0));
        // Up, down, up, down: three changes, four runs.
        assert_eq!(turns([1, 2, 1, 2, 1].into_iter()), (3, 4));
    }

    #[test]
    fn a_flash_crowd_profile_has_its_phases() {
        let v = super::super::flash_crowd(10, 300, 5, 10, 20, 30);
        assert_eq!(v.len(), 5 + 10 + 20 + 10 + 30);
        assert_eq!(v[0], 10);
        assert_eq!(v[5 + 9], 300);
        assert_eq!(v[5 + 10 + 19], 300);
        assert!(v[5 + 10 + 20] < 300);
        assert_eq!(*v.last().unwrap(), 10);
        assert_eq!(turns(v.iter().map(|x| *x as i64)).1, 2);
    }
}
