//! The span export rows: does tracing cost requests anything, and does a collector that
//! stops answering? HTTP/1.1 at the L7 rows' fixed rate through the ingress gateway, three
//! ways back to back in one run:
//!
//! * tracing off: the L7 rows' gateway (n1p6), whose mesh config names no provider;
//! * tracing on, collector answering: the gateway in n1p7, whose mesh config sends every
//!   request's spans over OTLP/gRPC to `mesh-agent app trace-collector` in n2p7;
//! * tracing on, collector stopped: the same, with the collector's process stopped
//!   (SIGSTOP: its connections stay open and nothing is read, the worst a collector can do).
//!
//! Every request of these runs starts its trace (h2load sends no trace headers), so each is
//! sampled: two spans per request, the gateway's server and client spans. The proxy's own
//! `mesh_spans_exported_total` and `mesh_spans_dropped_total` say where they went; a run
//! with the collector answering that exported nothing, or a stopped one that dropped
//! nothing, did not measure what it says and fails the bench.
use std::{process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use mesh_tests::{Mesh, wait_for};

use crate::{
    BenchArgs,
    l7::{self, L7, Load, Path, Proto, Run},
    stats::{Cell, cell},
};

/// Spans the traced gateway exported and dropped so far (every series of each).
fn span_counts(mesh: &Mesh) -> Result<(u64, u64)> {
    let metrics = l7::proxy_metrics(mesh, l7::TRACED_GATEWAY_POD)?;
    let sum = |name: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    Ok((
        sum("mesh_spans_exported_total"),
        sum("mesh_spans_dropped_total"),
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    Off,
    Answering,
    Stopped,
}

const COLUMNS: [Column; 3] = [Column::Off, Column::Answering, Column::Stopped];

impl Column {
    fn label(self) -> &'static str {
        match self {
            Column::Off => "tracing off",
            Column::Answering => "tracing on, collector answering",
            Column::Stopped => "tracing on, collector stopped (SIGSTOP)",
        }
    }
}

/// One run and the spans exported and dropped while it ran (and until the batches in
/// flight at its end were settled).
#[derive(Clone, Copy)]
struct SpanRun {
    run: Run,
    exported: u64,
    dropped: u64,
}

fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .context("kill")?;
    ensure!(status.success(), "kill {signal} {pid}: {status}");
    Ok(())
}

fn measure(mesh: &Mesh, column: Column, seconds: u64, log: &std::path::Path) -> Result<SpanRun> {
    let path = match column {
        Column::Off => Path::Gateway,
        Column::Answering | Column::Stopped => Path::TracedGateway,
    };
    let before = span_counts(mesh)?;
    let run = l7::h2load(mesh, path, Proto::H1, Load::Fixed, seconds, log)?;
    // A batch still being exported when h2load stopped settles within the export timeout
    // (3 s) plus one flush (1 s).
    let settled = || -> Result<(u64, u64)> {
        let mut last = span_counts(mesh)?;
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(500));
            let now = span_counts(mesh)?;
            if now == last {
                break;
            }
            last = now;
        }
        Ok(last)
    };
    let after = if column == Column::Off {
        before
    } else {
        std::thread::sleep(Duration::from_secs(4));
        settled()?
    };
    Ok(SpanRun {
        run,
        exported: after.0 - before.0,
        dropped: after.1 - before.1,
    })
}

/// Runs the three columns `args.rounds` times and prints their table; a column that did
/// not do what its label says fails the bench after printing.
pub fn run(mesh: &Mesh, l7: &L7, args: &BenchArgs) -> Result<()> {
    let collector = l7.collector.as_ref().context("the collector")?.pid();
    let log = std::env::temp_dir().join(format!("mesh-bench-{}-spans.tsv", mesh.lab.id()));
    let mut cells: Vec<Vec<Cell<SpanRun>>> = vec![Vec::new(); COLUMNS.len()];
    let mut problems = Vec::new();
    for _ in 0..args.rounds {
        for (i, column) in COLUMNS.into_iter().enumerate() {
            if column == Column::Stopped {
                signal(collector, "-STOP")?;
            }
            let r = cell(measure(mesh, column, args.seconds, &log));
            if column == Column::Stopped {
                signal(collector, "-CONT")?;
                // Whatever the stopped collector held is read now; the next round starts
                // with a collector that answers again.
                wait_for("the collector to take spans again", || {
                    let before = span_counts(mesh)?.0;
                    let _ = l7::h2load(mesh, Path::TracedGateway, Proto::H1, Load::Fixed, 1, &log);
                    std::thread::sleep(Duration::from_secs(2));
                    Ok(span_counts(mesh)?.0 > before)
                })?;
            }
            match (&r, column) {
                (Ok(s), Column::Answering) if s.exported == 0 => {
                    problems.push(format!("{}: no span was exported", column.label()))
                }
                (Ok(s), Column::Stopped) if s.dropped == 0 => {
                    problems.push(format!("{}: no span was dropped", column.label()))
                }
                _ => {}
            }
            println!(
                "spans {:<40} {}",
                column.label(),
                match &r {
                    Ok(s) => format!(
                        "{:.0} req/s p50 {:.0} us p90 {:.0} us p99 {:.0} us, {} spans exported, {} dropped",
                        s.run.rps, s.run.p50, s.run.p90, s.run.p99, s.exported, s.dropped
                    ),
                    Err(e) => format!("FAILED: {e}"),
                }
            );
            cells[i].push(r);
        }
    }
    let _ = std::fs::remove_file(&log);
    let reduced: Vec<Cell<SpanRun>> = cells.into_iter().map(reduce).collect();
    print_table(&reduced, args);
    for p in &problems {
        eprintln!("\n!!!!!!!! {p}");
    }
    ensure!(
        problems.is_empty(),
        "the span export rows did not measure what they say"
    );
    ensure!(
        reduced.iter().all(|c| c.is_ok()),
        "some span export runs failed (see FAILED above)"
    );
    Ok(())
}

/// Medians over rounds (latencies as `l7::reduce`, span counts summed over rounds).
fn reduce(rounds: Vec<Cell<SpanRun>>) -> Cell<SpanRun> {
    let exported = rounds.iter().flatten().map(|s| s.exported).sum();
    let dropped = rounds.iter().flatten().map(|s| s.dropped).sum();
    let runs = rounds.into_iter().map(|r| r.map(|s| s.run)).collect();
    Ok(SpanRun {
        run: l7::reduce(runs)?,
        exported,
        dropped,
    })
}

fn print_table(cells: &[Cell<SpanRun>], args: &BenchArgs) {
    println!();
    println!(
        "## mesh-bench: span export (HTTP/1.1 through the ingress gateway at {}, h2load {} s \
         per run, {} round(s), medians; 2 spans per request, every request sampled)",
        l7::load_label(Load::Fixed),
        args.seconds,
        args.rounds
    );
    println!();
    println!(
        "| gateway | req/s | p50 / p90 / p99 µs | added p50 / p90 / p99 | spans exported | spans dropped |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let off = cells[0].as_ref().ok().map(|s| s.run);
    for (column, c) in COLUMNS.iter().zip(cells) {
        match c {
            Ok(s) => {
                let added = match (column, off) {
                    (Column::Off, _) => String::new(),
                    (_, Some(o)) => format!(
                        "{:+.0} / {:+.0} / {:+.0} µs",
                        s.run.p50 - o.p50,
                        s.run.p90 - o.p90,
                        s.run.p99 - o.p99
                    ),
                    (_, None) => "–".into(),
                };
                println!(
                    "| {} | {:.0} | {:.0} / {:.0} / {:.0} | {added} | {} | {} |",
                    column.label(),
                    s.run.rps,
                    s.run.p50,
                    s.run.p90,
                    s.run.p99,
                    s.exported,
                    s.dropped
                );
            }
            Err(e) => println!(
                "| {} | FAILED | {} | | | |",
                column.label(),
                e.replace('\n', " ")
            ),
        }
    }
}
