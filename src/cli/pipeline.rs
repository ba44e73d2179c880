//! `--passes` and the pass options, shared by every subcommand that rewrites before it works
//! (run, inspect, rewrite, verify, snapshot, bench).

use crate::ir::Graph;
use crate::passes::{run_pipeline, Notes, PassOptions};
use anyhow::Result;

#[derive(clap::Args, Clone, Debug)]
pub struct PipelineArgs {
    /// Comma-separated rewrite passes, applied in order (lower-1x1-conv, decompose-channels,
    /// fold-batchnorm, fold-constants, eliminate-identity, raise-stack, lower-stack).
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

    /// Runs the passes (the checker after each) and returns their notes.
    pub fn apply(&self, graph: &mut Graph) -> Result<Notes> {
        run_pipeline(graph, &self.names(), &self.options())
    }
}
