//! Adaptive concurrency limits in a simulated overload, and the book's plots.
//!
//! A server serves 40 requests at once in 20 ms each and slows down 5 %
//! per request beyond; it is offered 1,000 requests/s, then 4,000/s (twice
//! what it can serve) for 30 s, then 1,000/s again. The simulation runs
//! in virtual time: no limit, AIMD, and Vegas, then prints what each did.
//!
//!     cargo run --example adaptive-limit
//!     cargo run --example adaptive-limit -- --svg book/src/resilience
//!
//! With `--svg DIR` it also writes the plots and the table the book shows
//! (`adaptive-limit.svg`, `adaptive-latency.svg`, `adaptive-overload.md`).
//! Needs no server.

use std::path::PathBuf;
use std::time::Duration;

use concurrency_patterns::resilience::adaptive::simulation::{self, NoLimit, Point};
use concurrency_patterns::resilience::{Aimd, LimitBounds, Vegas};
use plotters::prelude::*;

fn main() -> anyhow::Result<()> {
    let svg_dir = match std::env::args().nth(1).as_deref() {
        Some("--svg") => Some(PathBuf::from(
            std::env::args()
                .nth(2)
                .ok_or_else(|| anyhow::anyhow!("--svg needs a directory"))?,
        )),
        Some(other) => anyhow::bail!("unknown argument {other}; try --svg DIR"),
        None => None,
    };

    // ANCHOR: run
    let (server, load) = simulation::book_scenario();
    let every = Duration::from_millis(250);
    let bounds = LimitBounds::new(1, 1_000);
    let runs = [
        ("no limit", simulation::run(server, &load, NoLimit, every)),
        (
            "AIMD (timeout 60 ms)",
            simulation::run(
                server,
                &load,
                Aimd::new(bounds, 20).timeout(Duration::from_millis(60)),
                every,
            ),
        ),
        (
            "Vegas",
            simulation::run(server, &load, Vegas::new(bounds, 20), every),
        ),
    ];
    // ANCHOR_END: run

    println!("during the overload (10 s to 40 s):");
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>12}",
        "", "served/s", "timed out", "shed", "mean latency"
    );
    let mut table = String::from(
        "| during the overload | served/s | timed out | shed | mean latency |\n\
         |---|---|---|---|---|\n",
    );
    for (name, points) in &runs {
        let o = overload(points);
        println!(
            "{name:<22} {:>10} {:>10} {:>10} {:>12?}",
            o.served_per_s, o.timed_out, o.shed, o.mean_latency
        );
        table.push_str(&format!(
            "| {name} | {} | {} | {} | {:.0} ms |\n",
            thousands(o.served_per_s),
            thousands(o.timed_out),
            thousands(o.shed),
            o.mean_latency.as_secs_f64() * 1_000.0
        ));
    }

    if let Some(dir) = svg_dir {
        std::fs::create_dir_all(&dir)?;
        let limited = &runs[1..];
        plot(
            &dir.join("adaptive-limit.svg"),
            "concurrency limit",
            limited,
            |p| f64::from(p.limit),
        )?;
        // What clients see: a request that timed out took the 200 ms timeout.
        plot(
            &dir.join("adaptive-latency.svg"),
            "mean latency seen by clients (ms)",
            &runs,
            |p| {
                let finished = p.completed + p.dropped;
                let total = p.mean_latency * p.completed + server.timeout * p.dropped;
                (total / finished.max(1)).as_secs_f64() * 1_000.0
            },
        )?;
        std::fs::write(
            dir.join("adaptive-overload.md"),
            format!(
                "<!-- Written by `cargo run --example adaptive-limit -- --svg \
                 book/src/resilience`; do not edit. -->\n\n{table}"
            ),
        )?;
        println!("wrote the plots and the table to {}", dir.display());
    }
    Ok(())
}

/// What one run did from 10 s to 40 s, while offered twice what the
/// server can serve.
struct Overload {
    served_per_s: u32,
    timed_out: u32,
    shed: u32,
    /// Of the requests that finished.
    mean_latency: Duration,
}

fn overload(points: &[Point]) -> Overload {
    let during: Vec<&Point> = points
        .iter()
        .filter(|p| p.at > Duration::from_secs(10) && p.at <= Duration::from_secs(40))
        .collect();
    let completed: u32 = during.iter().map(|p| p.completed).sum();
    let total: Duration = during.iter().map(|p| p.mean_latency * p.completed).sum();
    Overload {
        served_per_s: completed / 30,
        timed_out: during.iter().map(|p| p.dropped).sum(),
        shed: during.iter().map(|p| p.rejected).sum(),
        mean_latency: total / completed.max(1),
    }
}

/// `118908` as `118,908`.
fn thousands(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One line per run of `value` over time.
fn plot(
    path: &std::path::Path,
    what: &str,
    runs: &[(&str, Vec<Point>)],
    value: impl Fn(&Point) -> f64,
) -> anyhow::Result<()> {
    let top = runs
        .iter()
        .flat_map(|(_, points)| points.iter().map(&value))
        .fold(0.0, f64::max)
        * 1.1;
    // One color per algorithm in both plots (the no-limit run is the first,
    // red); dark enough to read on white.
    let colors = [
        RGBColor(200, 30, 30),
        RGBColor(30, 60, 200),
        RGBColor(0, 120, 40),
    ];
    let root = SVGBackend::new(path, (720, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(what, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..60.0, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    for ((name, points), color) in
        runs.iter().zip(colors.iter().cycle().skip(3 - runs.len()))
    {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.at.as_secs_f64(), value(p))),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    // Upper right: after the overload ends (40 s) every line is low.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
