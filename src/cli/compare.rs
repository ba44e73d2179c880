//! `convgraph compare A.onnx B.onnx [--input ...] [--samples N] [--seed N] [--atol A]
//! [--rtol R] [--threads N] [--json]`: two models on the same inputs, B checked against A.
//! Inputs must match by name, dtype and shape (exit 2 otherwise); exit 1 when an output
//! leaves tolerance, with the first diverging tensor named.

use super::verify::SampleArgs;
use crate::verify::{check_same_inputs, compare_graphs};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The reference model.
    a: PathBuf,
    /// The model checked against it.
    b: PathBuf,
    #[command(flatten)]
    samples: SampleArgs,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (name_a, name_b) = (a.a.display().to_string(), a.b.display().to_string());
    let ga = crate::onnx::load_model(&a.a)?;
    let gb = crate::onnx::load_model(&a.b)?;
    let both = || format!("{name_a} vs {name_b}");
    check_same_inputs(&ga, &gb).with_context(both)?;
    let tol = a.samples.tolerance()?;
    let samples = a.samples.samples(&ga).with_context(|| name_a.clone())?;
    let pool = super::thread_pool(a.threads)?;
    let mut c = pool
        .install(|| compare_graphs(&ga, &gb, &samples, tol))
        .with_context(both)?;
    c.reference = name_a;
    c.candidate = name_b;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c.to_json())?);
    } else {
        print!("{c}");
    }
    Ok(if c.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
