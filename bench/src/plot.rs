//! SVG charts of diffusion runs, mirroring the paper's figures: discovery,
//! download and deploy time per node, and the upload distribution.

use std::path::Path;

use plotters::prelude::*;

use crate::diffusion::{NodeRecord, Outcome};

fn seconds(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

/// Series colours, shared by every chart.
pub(crate) const COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
];

/// Per-node times for every mode in one chart: `value` picks the series,
/// `sorted` plots them in increasing order (completion order).
fn times_chart(
    path: &Path,
    title: &str,
    outcomes: &[Outcome],
    value: impl Fn(&NodeRecord) -> Option<f64>,
    sorted: bool,
) -> anyhow::Result<()> {
    let series: Vec<(String, Vec<f64>)> = outcomes
        .iter()
        .map(|o| {
            let mut values: Vec<f64> = o.nodes.iter().filter_map(&value).collect();
            if sorted {
                values.sort_by(|a, b| a.total_cmp(b));
            }
            (o.label(), values)
        })
        .collect();
    let n = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let top = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0usize..n, 0f64..top)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(if sorted {
            "nodes, in completion order"
        } else {
            "node"
        })
        .y_desc("seconds")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, (name, values)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .map(|(x, y)| Circle::new((x, *y), 2, color.filled())),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The paper's upload distribution: how many nodes served how many others.
fn upload_chart(path: &Path, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let max_served = outcomes
        .iter()
        .flat_map(|o| o.nodes.iter().filter_map(|n| n.served_peers))
        .max()
        .unwrap_or(0);
    // Runs whose nodes' peers were not observed (other processes) are left out.
    let counts: Vec<(String, Vec<usize>)> = outcomes
        .iter()
        .filter(|o| o.nodes.iter().all(|n| n.served_peers.is_some()))
        .map(|o| {
            let mut counts = vec![0usize; max_served + 1];
            for served in o.nodes.iter().filter_map(|n| n.served_peers) {
                counts[served] += 1;
            }
            (o.label(), counts)
        })
        .collect();
    let top = counts
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Upload distribution: nodes by number of nodes they served",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0usize..max_served + 1, 0usize..top + top / 10 + 1)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("nodes served")
        .y_desc("number of nodes")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, (name, counts)) in counts.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                counts.iter().copied().enumerate(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Writes the four charts of `outcomes` (runs of one N and one rate) into
/// `dir`; `tag` ends the file names.
pub(crate) fn diffusion(dir: &Path, outcomes: &[Outcome], tag: &str) -> anyhow::Result<()> {
    let n = outcomes.first().map_or(0, |o| o.nodes.len());
    let file = |what: &str| dir.join(format!("{what}-{n}{tag}.svg"));
    times_chart(
        &file("discovery"),
        &format!("Discovery time per node (1 seed, {n} downloaders)"),
        outcomes,
        |r| r.completed.map(|_| seconds(r.discovery)),
        false,
    )?;
    times_chart(
        &file("download"),
        &format!("Download time per node (1 seed, {n} downloaders)"),
        outcomes,
        |r| r.completed.map(|_| seconds(r.download)),
        false,
    )?;
    times_chart(
        &file("deploy"),
        &format!("Deploy time (until active provider), {n} nodes in completion order"),
        outcomes,
        |r| r.completed.map(seconds),
        true,
    )?;
    upload_chart(&file("uploads"), outcomes)?;
    Ok(())
}

/// Simulated runs: the share of downloaders that are active providers
/// against time in units of each run's lower bound T*, one line per N.
pub(crate) fn simulated(path: &Path, runs: &[crate::simulate::Simulated]) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    let right = runs
        .iter()
        .filter_map(|r| {
            let last = r.completed.last()?;
            Some(last.as_secs_f64() / r.t_star.as_secs_f64())
        })
        .fold(1.0f64, f64::max)
        * 1.05;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Simulated diffusion: share of nodes providing, time in units of T*",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..right, 0f64..1.0)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("time / T*")
        .y_desc("share of downloaders providing")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, run) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let total = run.model.nodes.max(1) as f64;
        let t_star = run.t_star.as_secs_f64();
        let points = run
            .completed
            .iter()
            .enumerate()
            .map(|(rank, done)| (done.as_secs_f64() / t_star, (rank + 1) as f64 / total));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(format!("N = {}", run.model.nodes))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
