//! `convgraph conformance DIR...`: runs ONNX backend-test case folders.

use crate::verify::conformance::{find_cases, run_case, summarize, Status};
use anyhow::Result;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Case folders (holding model.onnx), or folders to search for them.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Print one JSON document instead of lines.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut cases = Vec::new();
    for d in &args.dirs {
        cases.extend(find_cases(d)?);
    }
    let progress = !args.json && std::io::stderr().is_terminal();
    let mut results = Vec::with_capacity(cases.len());
    for (i, (name, dir)) in cases.iter().enumerate() {
        if progress {
            eprint!("\r\x1b[K[{}/{}] {name}", i + 1, cases.len());
            let _ = std::io::stderr().flush();
        }
        let r = run_case(name, dir);
        if !args.json {
            if progress {
                eprint!("\r\x1b[K");
            }
            println!("{r}");
        }
        results.push(r);
    }
    let s = summarize(&results);
    if args.json {
        let cases: Vec<_> = results
            .iter()
            .map(|r| {
                let (status, reason) = match &r.status {
                    Status::Pass => ("PASS", None),
                    Status::Fail(m) => ("FAIL", Some(m)),
                    Status::Error(m) => ("ERROR", Some(m)),
                };
                serde_json::json!({"name": r.name, "status": status, "reason": reason,
                                   "passes_atol_1e-7": r.passes_strict})
            })
            .collect();
        let doc = serde_json::json!({"cases": cases, "passed": s.passed, "failed": s.failed,
                                     "passed_atol_1e-7": s.passed_strict});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("({} pass at onnx's own atol 1e-7)", s.passed_strict);
        println!("{} passed, {} failed", s.passed, s.failed);
    }
    Ok(if s.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
