//! `convgraph snapshot MODEL [--input ...] [--passes ...] [--seed N] [--dim N=V]
//! [--threads N] [--json]`: one stable summary line per output (see `crate::snapshot`), the
//! same text on every run and for any thread count.

use super::inputs::InputArgs;
use super::pipeline::PipelineArgs;
use crate::snapshot::summarize;
use anyhow::Result;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let model = a.model.display().to_string();
    // No default passes: a snapshot records the graph as given (or as `--passes` rewrites
    // it), so that a later convgraph adding a default rewrite does not move its values.
    let outputs = super::run::load_and_run(&a.model, &a.inputs, (&a.pipeline, &[]), a.threads)?;
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
