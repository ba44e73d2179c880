//! `convgraph inspect MODEL [--passes ...] [--json]`.

use crate::ir::{analyze, check::check_structure, DimBindings};
use anyhow::{Context, Result};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    #[command(flatten)]
    pipeline: super::pipeline::PipelineArgs,
    /// Value of a symbolic input dim, NAME=N (default 1).
    #[arg(long = "dim")]
    dims: Vec<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let mut graph = crate::onnx::load_model(&a.model)?;
    let notes = a
        .pipeline
        .apply(&mut graph)
        .with_context(|| a.model.display().to_string())?;
    check_structure(&graph)?;
    let bindings = DimBindings {
        symbols: super::inputs::parse_dims(&a.dims)?,
        ..Default::default()
    };
    let facts = analyze(&graph, &bindings).with_context(|| a.model.display().to_string())?;
    if a.json {
        let value = |name: &str| {
            let f = facts.get(name);
            json!({
                "name": name,
                "dtype": f.map(|f| f.dtype.name()),
                "shape": f.and_then(|f| f.shape.clone()),
            })
        };
        let doc = json!({
            "name": graph.name,
            "opset": graph.opset,
            "inputs": graph.inputs.iter().map(|d| value(&d.name)).collect::<Vec<_>>(),
            "outputs": graph.outputs.iter().map(|d| value(&d.name)).collect::<Vec<_>>(),
            "nodes": graph.nodes.iter().map(|n| json!({
                "name": n.name,
                "op": n.op.name(),
                "attrs": n.op.attrs_text(),
                "inputs": n.inputs,
                "outputs": n.outputs.iter().map(|o| value(o)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "notes": notes,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", crate::ir::print::print(&graph, &facts));
        for n in notes {
            println!("note {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
