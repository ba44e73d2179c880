//! `--passes` and the pass options, shared by every subcommand that rewrites before it works
//! (run, inspect, rewrite, verify, snapshot, bench).

use crate::ir::Graph;
use crate::passes::{run_pipeline, Notes, PassOptions};
use anyhow::Result;

#[derive(clap::Args, Clone, Debug)]
pub struct PipelineArgs {
    /// Comma-separated rewrite passes, applied in order (lower-1x1-conv, decompose-channels,
    /// fold-batchnorm, fold-constants, eliminate-identity, raise-stack, lower-stack); `none`
    /// for none. Without it, run and bench apply fold-batchnorm, the other commands none.
    #[arg(long, value_name = "P1,P2,...")]
    pub passes: Option<String>,
    /// decompose-channels refuses a Conv whose decomposition would need more nodes than this.
    #[arg(long, value_name = "N", default_value_t = PassOptions::default().max_nodes)]
    pub max_nodes: usize,
}

impl PipelineArgs {
    /// The pass names, in order.
    pub fn names(&self) -> Vec<String> {
        super::pass_list(&self.passes)
    }

    pub fn options(&self) -> PassOptions {
        PassOptions {
            max_nodes: self.max_nodes,
        }
    }

    /// The pass names, or `defaults` when `--passes` was not given.
    pub fn names_or(&self, defaults: &[&str]) -> Vec<String> {
        match self.passes {
            Some(_) => self.names(),
            None => defaults.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Runs the passes (the checker after each) and returns their notes.
    pub fn apply(&self, graph: &mut Graph) -> Result<Notes> {
        self.apply_or(graph, &[])
    }

    /// [`apply`](Self::apply), running `defaults` when `--passes` was not given.
    pub fn apply_or(&self, graph: &mut Graph, defaults: &[&str]) -> Result<Notes> {
        run_pipeline(graph, &self.names_or(defaults), &self.options())
    }
}
