//! `convgraph run MODEL [--input [NAME=]FILE]... [--passes ...] [--output-dir DIR] [--seed N]
//! [--threads N] [--json]`.

use super::inputs::{file_name_for, gather_inputs, parse_dims};
use crate::exec::Runner;
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
    /// Write each output to DIR/<output name>.npy.
    #[arg(long)]
    output_dir: Option<PathBuf>,
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

    if let Some(dir) = &a.output_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        for (name, t) in &outputs {
            crate::npy::write(&dir.join(format!("{}.npy", file_name_for(name))), t)?;
        }
    }
    if a.json {
        let doc = json!({
            "outputs": outputs.iter().map(|(name, t)| json!({
                "name": name,
                "dtype": t.dtype().name(),
                "shape": t.shape(),
                "values": t.to_f64_vec().iter().map(|v| if v.is_finite() { json!(v) } else { json!(v.to_string()) }).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string(&doc)?);
    } else {
        for (name, t) in &outputs {
            let v = t.to_f64_vec();
            let head: Vec<String> = v.iter().take(8).map(|x| format!("{x:.6}")).collect();
            let more = if v.len() > 8 { ", ..." } else { "" };
            println!(
                "{name}: {}{:?} [{}{more}]",
                t.dtype(),
                t.shape(),
                head.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
