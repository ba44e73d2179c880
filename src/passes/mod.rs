//! Named rewrite passes. Each is `fn(&mut Graph, &PassOptions, &mut Notes) -> Result<bool>`
//! (did it change anything); the pipeline runs the checker after every pass, and a failing
//! check names the pass, as cranelift runs its verifier after each one.

mod decompose_channels;
mod eliminate_identity;
mod fold_batchnorm;
mod fold_constants;
mod lower_1x1_conv;
pub mod lower_stack;
pub mod raise_stack;

use crate::ir::{check, Graph};
use anyhow::{bail, Context, Result};

/// Remarks a pass leaves for `inspect`: what it did not do and why.
pub type Notes = Vec<String>;

/// Knobs shared by the passes (command-line options later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassOptions {
    /// The most nodes one rewrite may turn a single node into (`decompose-channels`): a
    /// guard against blowing a real model up into millions of nodes.
    pub max_nodes: usize,
}

impl Default for PassOptions {
    fn default() -> PassOptions {
        PassOptions { max_nodes: 4096 }
    }
}

pub type PassFn = fn(&mut Graph, &PassOptions, &mut Notes) -> Result<bool>;

/// Every pass, by the name used on the command line.
pub const PASSES: &[(&str, PassFn)] = &[
    ("lower-1x1-conv", lower_1x1_conv::run),
    ("raise-stack", raise_stack::run),
    ("lower-stack", lower_stack::run),
    ("eliminate-identity", eliminate_identity::run),
    ("fold-batchnorm", fold_batchnorm::run),
    ("fold-constants", fold_constants::run),
    ("decompose-channels", decompose_channels::run),
];

/// The passes `convgraph run` and `convgraph bench` apply when `--passes` is not given: the
/// rewrites runtimes make by default before they run a model. A BatchNormalization after a
/// Conv folds into the Conv's weight and bias (onnxruntime's basic graph optimizations and
/// tract's optimizer do the same), so an export that keeps its BatchNorms runs as fast as
/// one that folded them; the results move by float rounding only (`convgraph verify
/// --passes fold-batchnorm` measures by how much).
pub const DEFAULT_PASSES: &[&str] = &["fold-batchnorm"];

pub fn lookup(name: &str) -> Result<PassFn> {
    match PASSES.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => Ok(*f),
        None => {
            let known: Vec<&str> = PASSES.iter().map(|(n, _)| *n).collect();
            bail!("unknown pass '{name}' (known: {})", known.join(", "))
        }
    }
}

/// Runs the named passes in order, checking the graph after each. Returns the notes.
pub fn run_pipeline(graph: &mut Graph, names: &[String], opts: &PassOptions) -> Result<Notes> {
    let mut notes = Notes::new();
    for name in names {
        let pass = lookup(name)?;
        pass(graph, opts, &mut notes).with_context(|| format!("pass '{name}'"))?;
        check::check_structure(graph).with_context(|| format!("checker after pass '{name}'"))?;
        check::check(graph).with_context(|| format!("checker after pass '{name}'"))?;
    }
    Ok(notes)
}
