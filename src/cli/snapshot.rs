//! `convgraph snapshot MODEL [--input ...] [--passes ...] [--seed N] [--dim N=V]
//! [--threads N] [--json]`: one stable summary line per output (see `crate::snapshot`), the
//! same text on every run and for any thread count.

use super::inputs::{gather_inputs, parse_dims};
use crate::exec::Runner;
use crate::snapshot::summarize;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    /// An input tensor (.npy or .pb), as NAME=FILE or FILE for the next input in order.
    #[arg(long = "input")]
    inputs: Vec<String>,
    #[command(flatten)]
    pipeline: super::pipeline::PipelineArgs,
    /// Seed for the inputs not given.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Value of a symbolic input dim, NAME=N (default 1).
    #[arg(long = "dim")]
    dims: Vec<String>,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let model = a.model.display().to_string();
    let mut graph = crate::onnx::load_model(&a.model)?;
    a.pipeline
        .apply(&mut graph)
        .with_context(|| model.clone())?;
    let inputs = gather_inputs(&graph, &a.inputs, a.seed, parse_dims(&a.dims)?)
        .with_context(|| model.clone())?;
    let pool = super::thread_pool(a.threads)?;
    let runner = Runner::new(&graph).with_context(|| model.clone())?;
    let outputs = pool
        .install(|| runner.run(inputs))
        .with_context(|| model.clone())?;
    if a.json {
        let doc = json!({
            "model": model,
            "outputs": outputs.iter().map(|(name, t)| json!({
                "name": name,
                "dtype": t.dtype().name(),
                "shape": t.shape(),
                "summary": summarize(t),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for (name, t) in &outputs {
            println!("{name}: {}", summarize(t));
        }
    }
    Ok(ExitCode::SUCCESS)
}
