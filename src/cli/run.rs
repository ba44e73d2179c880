//! `convgraph run MODEL [--input [NAME=]FILE]... [--passes ...] [--output-dir DIR] [--seed N]
//! [--dim NAME=N] [--threads N] [--engine convgraph|tract] [--json]`. Without `--passes`
//! convgraph runs the model after the default passes (`passes::DEFAULT_PASSES`: a
//! BatchNormalization after a Conv folded into it, as onnxruntime and tract do);
//! `--passes none` runs it as given.

use super::inputs::{file_name_for, InputArgs};
use super::pipeline::PipelineArgs;
use crate::exec::Runner;
use crate::passes::DEFAULT_PASSES;
use crate::tensor::Tensor;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Engine {
    Convgraph,
    Tract,
}

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
    /// Which interpreter runs the model: convgraph's own, or tract (the reference runtime,
    /// e.g. to write reference outputs with --output-dir, or to compare memory use).
    #[arg(long, value_enum, default_value = "convgraph")]
    engine: Engine,
    #[arg(long)]
    json: bool,
}

/// Loads `path`, applies the passes (`defaults` when `--passes` is not given), gathers the
/// inputs and runs the graph once on `threads` threads; errors name the model file. Shared
/// by `run` and `snapshot`.
pub fn load_and_run(
    path: &Path,
    inputs: &InputArgs,
    (pipeline, defaults): (&PipelineArgs, &[&str]),
    threads: Option<usize>,
) -> Result<Vec<(String, Tensor)>> {
    let model = path.display().to_string();
    let mut graph = crate::onnx::load_model(path)?;
    pipeline
        .apply_or(&mut graph, defaults)
        .with_context(|| model.clone())?;
    let inputs = inputs.gather(&graph).with_context(|| model.clone())?;
    let pool = super::thread_pool(threads)?;
    let runner = Runner::new(&graph).with_context(|| model.clone())?;
    pool.install(|| runner.run(inputs)).with_context(|| model)
}

/// Runs the model file itself with tract, on the inputs convgraph would feed (same files,
/// same seeds), in the model's input order.
fn run_with_tract(path: &Path, inputs: &InputArgs) -> Result<Vec<(String, Tensor)>> {
    let model = path.display().to_string();
    let graph = crate::onnx::load_model(path)?;
    let mut given = inputs.gather(&graph).with_context(|| model.clone())?;
    let ordered: Vec<Tensor> = graph
        .inputs
        .iter()
        .map(|d| given.remove(&d.name).expect("gather returns every input"))
        .collect();
    let outputs =
        crate::verify::tract::run(path, &ordered).with_context(|| format!("{model}: tract"))?;
    Ok(graph
        .outputs
        .iter()
        .map(|d| d.name.clone())
        .zip(outputs)
        .collect())
}

pub fn run(a: Args) -> Result<ExitCode> {
    let outputs = match a.engine {
        Engine::Convgraph => {
            let pipeline = (&a.pipeline, DEFAULT_PASSES);
            load_and_run(&a.model, &a.inputs, pipeline, a.threads)?
        }
        Engine::Tract => {
            if !a.pipeline.names().is_empty() {
                bail!("--passes rewrite convgraph's graph; tract runs the model file as it is");
            }
            run_with_tract(&a.model, &a.inputs)?
        }
    };

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
