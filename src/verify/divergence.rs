//! The first diverging tensor: when two runs of a model disagree, which node's output left
//! tolerance first.
//!
//! The candidate graph is walked in its topological order and each node is fed the
//! *reference's* values of its inputs wherever the reference has a value of that name (its
//! own values otherwise, for names that exist only in the candidate, such as the
//! intermediates a rewrite introduces). So an error made early does not smear into every
//! later tensor: the first node whose output leaves tolerance is the node that is wrong, not
//! merely the first one downstream of it. Constants always come from the candidate graph,
//! since a changed weight is exactly the kind of difference to find.

use super::tolerance::{compare, Report, Tolerance};
use crate::exec::Runner;
use crate::ir::Graph;
use crate::kernels;
use crate::tensor::Tensor;
use anyhow::{anyhow, Context, Result};
use std::collections::HashMap;
use std::fmt;

/// Tensors by value name.
pub type Values = HashMap<String, Tensor>;

/// The first tensor, in the candidate's node order, whose value leaves tolerance.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    /// Index of the input sample the search ran on.
    pub sample: usize,
    /// The value name, the same on both sides.
    pub tensor: String,
    /// The candidate's node that computes it.
    pub node: String,
    /// That node's op (`Conv`, `MatMul` ...).
    pub op: String,
    /// The tensor against the reference's, the node fed the reference's inputs.
    pub report: Report,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "first diverging tensor '{}' from node '{}' ({}), sample {}: {}",
            self.tensor, self.node, self.op, self.sample, self.report
        )
    }
}

impl Divergence {
    /// `{"sample", "tensor", "node", "op", "report"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "sample": self.sample,
            "tensor": self.tensor,
            "node": self.node,
            "op": self.op,
            "report": self.report.to_json(),
        })
    }
}

/// Runs `graph` on `inputs` and keeps every value it computes, with the inputs: the
/// reference side of [`first_divergence`].
pub fn all_values(graph: &Graph, inputs: &Values) -> Result<Values> {
    let runner = Runner::new(graph)?;
    let mut values = inputs.clone();
    runner.run_observed(inputs.clone(), |name, t| {
        values.insert(name.to_string(), t.clone());
        Ok(())
    })?;
    Ok(values)
}

/// Finds the first node of `candidate` whose output, computed from the reference's values
/// of its inputs, leaves tolerance against the reference's value of the same name.
/// `reference` holds the reference's tensors by name (see [`all_values`], or
/// [`super::tract::run_with_values`]); names it lacks are not compared. `sample` is only
/// recorded in the result. `None` when every shared tensor is within tolerance.
pub fn first_divergence(
    reference: &Values,
    candidate: &Graph,
    inputs: &Values,
    sample: usize,
    tol: Tolerance,
) -> Result<Option<Divergence>> {
    let mut own: Values = HashMap::new();
    for node in &candidate.nodes {
        let ctx = || format!("node '{}' ({})", node.name, node.op.name());
        let ins: Vec<Option<&Tensor>> = node
            .inputs
            .iter()
            .map(|name| {
                if name.is_empty() {
                    return Ok(None);
                }
                // The candidate's own constants first (a changed weight must show), then the
                // reference's values (re-feeding), then what only the candidate computed.
                candidate
                    .constants
                    .get(name)
                    .or_else(|| inputs.get(name))
                    .or_else(|| reference.get(name))
                    .or_else(|| own.get(name))
                    .map(Some)
                    .ok_or_else(|| anyhow!("input '{name}' has no value"))
            })
            .collect::<Result<_>>()
            .with_context(ctx)?;
        let outs = kernels::eval(&node.op, &ins, node.outputs.len()).with_context(ctx)?;
        for (name, t) in node.outputs.iter().zip(outs) {
            if let Some(expected) = reference.get(name) {
                let report = compare(&t, expected, tol);
                if !report.ok() {
                    return Ok(Some(Divergence {
                        sample,
                        tensor: name.clone(),
                        node: node.name.clone(),
                        op: node.op.name().to_string(),
                        report,
                    }));
                }
            }
            own.insert(name.clone(), t);
        }
    }
    Ok(None)
}
