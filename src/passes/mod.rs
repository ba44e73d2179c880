//! Named rewrite passes. Each is `fn(&mut Graph, &mut Notes) -> Result<bool>` (did it change
//! anything); the pipeline runs the checker after every pass, and a failing check names the
//! pass, as cranelift runs its verifier after each one.

mod eliminate_identity;
mod lower_1x1_conv;
pub mod lower_stack;
pub mod raise_stack;

use crate::ir::{check, Graph};
use anyhow::{bail, Context, Result};

/// Remarks a pass leaves for `inspect`: what it did not do and why.
pub type Notes = Vec<String>;

pub type PassFn = fn(&mut Graph, &mut Notes) -> Result<bool>;

/// Every pass, by the name used on the command line.
pub const PASSES: &[(&str, PassFn)] = &[
    ("lower-1x1-conv", lower_1x1_conv::run),
    ("raise-stack", raise_stack::run),
    ("lower-stack", lower_stack::run),
    ("eliminate-identity", eliminate_identity::run),
];

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
pub fn run_pipeline(graph: &mut Graph, names: &[String]) -> Result<Notes> {
    let mut notes = Notes::new();
    for name in names {
        let pass = lookup(name)?;
        pass(graph, &mut notes).with_context(|| format!("pass '{name}'"))?;
        check::check_structure(graph).with_context(|| format!("checker after pass '{name}'"))?;
        check::check(graph).with_context(|| format!("checker after pass '{name}'"))?;
    }
    Ok(notes)
}
