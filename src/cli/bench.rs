//! `convgraph bench MODEL [--threads N] [--iters N] [--warmup N] [--vs tract] [--seed N]
//! [--dim NAME=N] [--passes ...] [--json] [--profile]`: times runs of a model loaded and
//! planned once, on seeded inputs; optionally against tract in the same process. Without
//! `--passes` the model is timed after the default passes (`passes::DEFAULT_PASSES`), as
//! `convgraph run` runs it.

use super::inputs::parse_dims;
use crate::bench::{interleaved, summarize, Case, Profile, ProfileLine, ProfileReport, TimedRun};
use crate::verify::tract;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Reference {
    Tract,
}

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    /// Threads for convgraph (0 or absent: all cores). tract always runs on one (see below).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed runs (after the warm-up).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..100_000))]
    iters: u64,
    /// Untimed runs first (caches, allocator, lazily packed weights).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..100_000))]
    warmup: u64,
    /// Also time another runtime on the same inputs, one run of each in turn. tract runs its
    /// optimized plan single-threaded: its multithreaded matmul is a cargo feature
    /// (tract-linalg `multithread-mm`) this build does not enable.
    #[arg(long = "vs", value_enum)]
    vs: Option<Reference>,
    /// Seed for the inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Value of a symbolic input dim, NAME=N (default 1).
    #[arg(long = "dim")]
    dims: Vec<String>,
    #[command(flatten)]
    pipeline: super::pipeline::PipelineArgs,
    #[arg(long)]
    json: bool,
    /// Time each node: milliseconds per op type and the slowest nodes (`--top`), GFLOP/s for
    /// Conv, MatMul and Gemm.
    #[arg(long)]
    profile: bool,
    /// How many of the slowest nodes `--profile` lists.
    #[arg(long, default_value_t = 10)]
    top: usize,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let model = a.model.display().to_string();
    let passes = a.pipeline.names_or(crate::passes::DEFAULT_PASSES);
    let case = Case::load(
        &a.model,
        &passes,
        &a.pipeline.options(),
        a.seed,
        parse_dims(&a.dims)?,
    )?;
    let runner = case.runner()?;
    let reference = match a.vs {
        Some(Reference::Tract) => {
            let inputs = case.ordered_inputs();
            let prepared = tract::Prepared::new(&a.model, &inputs)
                .with_context(|| format!("{model}: tract"))?;
            let values = tract::Prepared::values(&inputs)?;
            Some((prepared, values))
        }
        None => None,
    };
    let pool = super::thread_pool(a.threads)?;
    let threads = pool.current_num_threads();
    let mut profile = a.profile.then(|| Profile::new(&case.graph));

    let samples = pool.install(|| -> Result<Vec<Vec<f64>>> {
        let mut convgraph = |measured: bool| -> Result<f64> {
            let p = profile.as_mut().filter(|_| measured);
            case.time_run(&runner, p).with_context(|| model.clone())
        };
        let mut tract_run = |_measured: bool| -> Result<f64> {
            let Some((prepared, values)) = &reference else {
                return Ok(0.0);
            };
            let v = values.clone();
            let start = Instant::now();
            let out = prepared
                .run_values(v)
                .with_context(|| format!("{model}: tract"))?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            drop(out);
            Ok(ms)
        };
        let mut engines: Vec<&mut TimedRun<'_>> = vec![&mut convgraph];
        if reference.is_some() {
            engines.push(&mut tract_run);
        }
        interleaved(a.warmup as usize, a.iters as usize, &mut engines)
    })?;

    let ours = summarize(&samples[0])?;
    let theirs = match samples.get(1) {
        Some(s) => Some(summarize(s)?),
        None => None,
    };
    let report = profile.map(|p| p.report(&case.graph, a.top));

    if a.json {
        let mut doc = json!({
            "model": model,
            "median_ms": ours.median_ms,
            "min_ms": ours.min_ms,
            "max_ms": ours.max_ms,
            "iters": ours.iters,
            "threads": threads,
            "passes": passes,
        });
        if let Some(t) = &theirs {
            doc["tract_median_ms"] = json!(t.median_ms);
            doc["tract_min_ms"] = json!(t.min_ms);
            doc["tract_max_ms"] = json!(t.max_ms);
            doc["tract_threads"] = json!(1);
            doc["ratio"] = json!(ours.median_ms / t.median_ms);
        }
        if let Some(r) = &report {
            doc["profile"] = profile_json(r);
        }
        println!("{}", serde_json::to_string(&doc)?);
    } else {
        let plural = if threads == 1 { "" } else { "s" };
        println!(
            "{model}: convgraph median {:.3} ms (min {:.3}, max {:.3}) over {} runs, {threads} thread{plural}",
            ours.median_ms, ours.min_ms, ours.max_ms, ours.iters
        );
        if let Some(t) = &theirs {
            println!(
                "{model}: tract     median {:.3} ms (min {:.3}, max {:.3}) over {} runs, 1 thread",
                t.median_ms, t.min_ms, t.max_ms, t.iters
            );
            println!(
                "ratio convgraph/tract (medians): {:.2}",
                ours.median_ms / t.median_ms
            );
        }
        if let Some(r) = &report {
            print_profile(r);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn gflops_text(g: Option<f64>) -> String {
    g.map(|g| format!("{g:.2}")).unwrap_or_default()
}

fn print_profile(r: &ProfileReport) {
    println!(
        "profile: mean per run over {} runs, nodes total {:.3} ms",
        r.runs, r.total_ms
    );
    println!(
        "{:<20} {:>6} {:>10} {:>7} {:>9}",
        "op", "nodes", "ms", "%", "GFLOP/s"
    );
    for l in &r.by_op {
        println!(
            "{:<20} {:>6} {:>10.3} {:>7.1} {:>9}",
            l.op,
            l.count,
            l.ms,
            l.pct,
            gflops_text(l.gflops)
        );
    }
    // The name goes last: exporters' node names are long paths that would break columns.
    println!("top {} nodes:", r.top_nodes.len());
    println!(
        "{:<20} {:>6} {:>10} {:>7} {:>9}  node",
        "op", "", "ms", "%", "GFLOP/s"
    );
    for l in &r.top_nodes {
        println!(
            "{:<20} {:>6} {:>10.3} {:>7.1} {:>9}  {}",
            l.op,
            "",
            l.ms,
            l.pct,
            gflops_text(l.gflops),
            l.name
        );
    }
}

fn profile_json(r: &ProfileReport) -> Value {
    let line = |l: &ProfileLine, with_name: bool| {
        let mut v = json!({
            "op": l.op,
            "ms": l.ms,
            "pct": l.pct,
            "gflops": l.gflops,
        });
        if with_name {
            v["name"] = json!(l.name);
        } else {
            v["nodes"] = json!(l.count);
        }
        v
    };
    json!({
        "runs": r.runs,
        "total_ms": r.total_ms,
        "ops": r.by_op.iter().map(|l| line(l, false)).collect::<Vec<_>>(),
        "top_nodes": r.top_nodes.iter().map(|l| line(l, true)).collect::<Vec<_>>(),
    })
}
