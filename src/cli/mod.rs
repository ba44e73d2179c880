//! The command line: one file per subcommand. Errors of the input (file, model, shapes) exit
//! with code 2 and one line on stderr; a failed comparison exits with 1.

mod bench;
mod compare;
mod conformance;
pub(crate) mod inputs;
mod inspect;
mod pipeline;
mod rewrite;
mod run;
mod snapshot;
mod verify;

pub use inputs::{file_name_for, random_tensor};

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "convgraph",
    version,
    about = "Run, rewrite and verify ONNX convolution models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model on given or seeded inputs and print or save its outputs.
    Run(run::Args),
    /// Print the graph IR, one line per node.
    Inspect(inspect::Args),
    /// Run ONNX backend-test case folders and report PASS/FAIL/ERROR per case.
    Conformance(conformance::Args),
    /// Apply passes and write the result as an ONNX model.
    Rewrite(rewrite::Args),
    /// Check a rewrite (--passes) against the original graph, and convgraph against tract
    /// (--reference tract), on the same inputs; name the first diverging tensor.
    Verify(verify::Args),
    /// Compare two models on the same inputs; name the first diverging tensor.
    Compare(compare::Args),
    /// Print a stable text summary of every output, for snapshot tests.
    Snapshot(snapshot::Args),
    /// Time runs of a model (after warm-up) on seeded inputs, optionally against tract.
    Bench(bench::Args),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    // Before clap or rayon start anything: see malloc_tuning for the time these save.
    crate::malloc_tuning::with_huge_pages();
    crate::malloc_tuning::keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // clap's own help/version are successes; usage errors are bad input (2).
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // A safety net, not a plan: a panic is a bug, but the contract is one line on stderr and
    // exit code 2, never a backtrace dump. The default hook is silenced; we report it below.
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| match cli.command {
        Command::Run(a) => run::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Conformance(a) => conformance::run(a),
        Command::Rewrite(a) => rewrite::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Snapshot(a) => snapshot::run(a),
        Command::Bench(a) => bench::run(a),
    })
    .unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(anyhow::anyhow!(
            "internal error (a bug in convgraph, please report it): {msg}"
        ))
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the context chain joined, outermost first (file, node, op, cause).
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", msg.join(": "));
            ExitCode::from(2)
        }
    }
}

/// Builds the thread pool for `--threads` (0 or absent: the machine's cores).
pub(crate) fn thread_pool(threads: Option<usize>) -> anyhow::Result<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads.filter(|&n| n > 0) {
        b = b.num_threads(n);
    }
    Ok(b.build()?)
}

/// Splits `--passes a,b` into names (`none`, or nothing, is no pass).
pub(crate) fn pass_list(passes: &Option<String>) -> Vec<String> {
    passes
        .as_deref()
        .map(|p| {
            p.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "none")
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}
