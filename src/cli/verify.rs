//! `convgraph verify MODEL [--passes P1,...] [--reference tract] [--input [NAME=]FILE]...
//! [--samples N] [--seed N] [--dim N=V] [--atol A] [--rtol R] [--threads N] [--json]`:
//! the rewritten graph against the original, and with `--reference tract` convgraph against
//! tract, on the same input samples. Exit 0 within tolerance, 1 beyond, 2 bad input.

use super::inputs::{gather_inputs, parse_dims};
use crate::ir::Graph;
use crate::verify::{compare_with_tract, verify_passes, Comparison, Inputs, Tolerance};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// The input and tolerance flags `verify` and `compare` share.
#[derive(clap::Args)]
pub struct SampleArgs {
    /// An input tensor (.npy or .pb), as NAME=FILE or FILE for the next input in order.
    /// When every input is given, one sample is run.
    #[arg(long = "input")]
    pub inputs: Vec<String>,
    /// Number of seeded input samples (seeds seed, seed+1, ...).
    #[arg(long, default_value_t = 3)]
    pub samples: u64,
    /// Seed of the first sample, for the inputs not given.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Value of a symbolic input dim, NAME=N (default 1).
    #[arg(long = "dim")]
    pub dims: Vec<String>,
    /// Absolute tolerance.
    #[arg(long, default_value_t = 1e-4)]
    pub atol: f64,
    /// Relative tolerance.
    #[arg(long, default_value_t = 1e-3)]
    pub rtol: f64,
}

impl SampleArgs {
    pub fn tolerance(&self) -> Result<Tolerance> {
        for (flag, v) in [("--atol", self.atol), ("--rtol", self.rtol)] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{flag} {v}: must be a finite number >= 0");
            }
        }
        Ok(Tolerance {
            atol: self.atol,
            rtol: self.rtol,
        })
    }

    /// The input samples for `graph`: one when every input is given as a file, else
    /// `--samples` of them, the missing inputs seeded with `seed + k` for sample `k`.
    pub fn samples(&self, graph: &Graph) -> Result<Vec<Inputs>> {
        if self.samples == 0 {
            bail!("--samples must be at least 1");
        }
        let symbols = parse_dims(&self.dims)?;
        let n = if self.inputs.len() >= graph.inputs.len() {
            1
        } else {
            self.samples
        };
        (0..n)
            .map(|k| {
                gather_inputs(
                    graph,
                    &self.inputs,
                    self.seed.wrapping_add(k),
                    symbols.clone(),
                )
            })
            .collect()
    }
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum Reference {
    /// tract-onnx running the same file.
    Tract,
}

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    #[command(flatten)]
    pipeline: super::pipeline::PipelineArgs,
    /// Also compare convgraph (on the original graph) with this runtime.
    #[arg(long, value_enum)]
    reference: Option<Reference>,
    #[command(flatten)]
    samples: SampleArgs,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let model = a.model.display().to_string();
    let graph = crate::onnx::load_model(&a.model)?;
    let tol = a.samples.tolerance()?;
    let samples = a.samples.samples(&graph).with_context(|| model.clone())?;
    let passes = a.pipeline.names();
    let pool = super::thread_pool(a.threads)?;
    let mut comparisons: Vec<Comparison> = Vec::new();
    // Without a reference runtime there is nothing to check but the rewrite, so it runs
    // even with no passes (the trivial identity check).
    if !passes.is_empty() || a.reference.is_none() {
        let c = pool
            .install(|| verify_passes(&graph, &passes, &a.pipeline.options(), &samples, tol))
            .with_context(|| model.clone())?;
        comparisons.push(c);
    }
    if let Some(Reference::Tract) = a.reference {
        let c = pool
            .install(|| compare_with_tract(&a.model, &graph, &samples, tol))
            .with_context(|| model.clone())?;
        comparisons.push(c);
    }
    let ok = comparisons.iter().all(Comparison::ok);
    if a.json {
        let doc = json!({
            "model": model,
            "ok": ok,
            "comparisons": comparisons.iter().map(Comparison::to_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for c in &comparisons {
            print!("{c}");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
