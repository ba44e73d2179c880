//! `convgraph rewrite MODEL --passes P1,P2 -o OUT`: applies passes and writes the graph back
//! out as ONNX. The output file is written atomically, so an error leaves none behind.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    #[command(flatten)]
    pipeline: super::pipeline::PipelineArgs,
    /// The ONNX file to write.
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let mut graph = crate::onnx::load_model(&a.model)?;
    let notes = a
        .pipeline
        .apply(&mut graph)
        .with_context(|| a.model.display().to_string())?;
    crate::onnx::save_model(&graph, &a.output)
        .with_context(|| format!("{}: cannot export", a.model.display()))?;
    for n in notes {
        println!("note {n}");
    }
    Ok(ExitCode::SUCCESS)
}
