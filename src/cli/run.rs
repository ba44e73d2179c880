//! `convgraph run MODEL [--input [NAME=]FILE]... [--passes ...] [--output-dir DIR] [--seed N]
//! [--threads N] [--json]`.

use super::inputs::{file_name_for, InputArgs};
use super::pipeline::PipelineArgs;
use crate::exec::Runner;
use crate::tensor::Tensor;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Write each output to DIR/<output name>.npy.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    json: bool,
}

/// Loads `path`, applies the passes, gathers the inputs and runs the graph once on
/// `threads` threads; errors name the model file. Shared by `run` and `snapshot`.
pub fn load_and_run(
    path: &Path,
    inputs: &InputArgs,
    pipeline: &PipelineArgs,
    threads: Option<usize>,
) -> Result<Vec<(String, Tensor)>> {
    let model = path.display().to_string();
    let mut graph = crate::onnx::load_model(path)?;
    pipeline.apply(&mut graph).with_context(|| model.clone())?;
    let inputs = inputs.gather(&graph).with_context(|| model.clone())?;
    let pool = super::thread_pool(threads)?;
    let runner = Runner::new(&graph).with_context(|| model.clone())?;
    pool.install(|| runner.run(inputs)).with_context(|| model)
}

pub fn run(a: Args) -> Result<ExitCode> {
    let outputs = load_and_run(&a.model, &a.inputs, &a.pipeline, a.threads)?;

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
