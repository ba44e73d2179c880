//! Facts for every value of a graph: the shape rules of `infer` run in order, and nodes whose
//! inputs are all small constants are evaluated, so shape arithmetic (Shape -> Gather ->
//! Concat -> Reshape, as exporters emit it) resolves to concrete shapes before running.

use super::{infer::infer, non_tensor_values, Dim, Fact, Graph, ValueDecl, MAX_FACT_VALUE_LEN};
use crate::kernels;
use anyhow::{anyhow, Context, Result};
use std::collections::HashMap;

pub type Facts = HashMap<String, Fact>;

/// How to turn the graph inputs' declared dims into concrete shapes.
#[derive(Clone, Debug, Default)]
pub struct DimBindings {
    /// Values of symbolic dims (`--dim NAME=N`); an unbound symbol takes 1.
    pub symbols: HashMap<String, usize>,
    /// Concrete shapes of inputs known exactly (for example from the tensors about to run),
    /// overriding the declaration.
    pub shapes: HashMap<String, Vec<usize>>,
}

impl DimBindings {
    /// The concrete shape of a graph input, or `None` when the model declares none.
    pub fn input_shape(&self, decl: &ValueDecl) -> Option<Vec<usize>> {
        if let Some(s) = self.shapes.get(&decl.name) {
            return Some(s.clone());
        }
        decl.dims.as_ref().map(|dims| {
            dims.iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Sym(s) => self.symbols.get(s).copied().unwrap_or(1),
                })
                .collect()
        })
    }
}

/// Computes the facts of every tensor value (a sequence or optional has none). Assumes the
/// structural checks of `check` hold (every input defined before use); errors name the node
/// and op.
pub fn analyze(graph: &Graph, bindings: &DimBindings) -> Result<Facts> {
    let mut facts: Facts = HashMap::new();
    for (name, t) in &graph.constants {
        facts.insert(name.clone(), Fact::of_tensor(t));
    }
    // Only Identity reads these (the checker refuses other readers); its outputs are the same
    // non-tensor values, so those nodes have no tensor facts to infer.
    let non_tensor = non_tensor_values(graph)?;
    for decl in graph.inputs.iter().filter(|d| d.is_tensor()) {
        let fact = Fact {
            dtype: decl.dtype,
            shape: bindings.input_shape(decl),
            value: None,
        };
        facts.insert(decl.name.clone(), fact);
    }
    for node in &graph.nodes {
        if node
            .inputs
            .iter()
            .any(|i| non_tensor.contains_key(i.as_str()))
        {
            continue;
        }
        let ctx = || format!("node '{}' ({})", node.name, node.op.name());
        let inputs: Vec<Option<&Fact>> = node
            .inputs
            .iter()
            .map(|name| {
                if name.is_empty() {
                    Ok(None)
                } else {
                    facts
                        .get(name)
                        .map(Some)
                        .ok_or_else(|| anyhow!("input '{name}' is not defined"))
                }
            })
            .collect::<Result<_>>()
            .with_context(ctx)?;
        let mut outs = infer(&node.op, &inputs, node.outputs.len()).with_context(ctx)?;
        if outs.len() != node.outputs.len() {
            return Err(anyhow!(
                "{} produces {} outputs, the node names {}",
                node.op.name(),
                outs.len(),
                node.outputs.len()
            ))
            .with_context(ctx);
        }
        let all_const = inputs.iter().all(|f| f.is_none_or(|f| f.value.is_some()));
        let small_out = outs.iter().all(|f| {
            f.shape
                .as_ref()
                .is_some_and(|s| s.iter().product::<usize>() <= MAX_FACT_VALUE_LEN)
        });
        if all_const && small_out {
            let tensors: Vec<Option<&crate::tensor::Tensor>> = inputs
                .iter()
                .map(|f| f.and_then(|f| f.value.as_deref()))
                .collect();
            let values = kernels::eval(&node.op, &tensors, node.outputs.len()).with_context(ctx)?;
            outs = values.iter().map(Fact::of_tensor).collect();
        }
        for (name, fact) in node.outputs.iter().zip(outs) {
            if !name.is_empty() {
                facts.insert(name.clone(), fact);
            }
        }
    }
    Ok(facts)
}
