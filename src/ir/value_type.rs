//! ONNX's non-tensor value types, `sequence(T)` and `optional(T)`. The IR is about tensors;
//! these appear only where a model passes such a value straight through: a graph input,
//! Identity nodes, a graph output. Every other op takes tensors, and a graph where one reads
//! a sequence or optional is refused by the checker, naming the node and op.

use super::{Graph, Op, ValueDecl};
use anyhow::{bail, Result};
use std::collections::HashMap;

/// One layer around a tensor type. `ValueDecl::wrappers` lists them outermost first:
/// `optional(sequence(tensor(float)))` is `[Optional, Sequence]` around f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wrapper {
    Sequence,
    Optional,
}

impl Wrapper {
    pub fn name(self) -> &'static str {
        match self {
            Wrapper::Sequence => "sequence",
            Wrapper::Optional => "optional",
        }
    }
}

impl ValueDecl {
    /// Whether the value is a plain tensor (no sequence or optional around it).
    pub fn is_tensor(&self) -> bool {
        self.wrappers.is_empty()
    }

    /// The declared tensor type (`f32[1,3,?]`, or `f32[?]` with no shape), inside its
    /// wrappers: `optional(sequence(f32[5]))`.
    pub fn type_text(&self) -> String {
        let dims = match &self.dims {
            Some(d) => d
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(","),
            None => "?".into(),
        };
        let mut s = format!("{}[{dims}]", self.dtype);
        for w in self.wrappers.iter().rev() {
            s = format!("{}({s})", w.name());
        }
        s
    }
}

/// The values that hold a sequence or optional, each with the graph input it comes from
/// (Identity is the only op that passes one on). Refuses any other op reading one, and a
/// graph output whose declared type is not what reaches it. Empty for tensor-only graphs.
pub fn non_tensor_values(graph: &Graph) -> Result<HashMap<&str, &ValueDecl>> {
    let mut values: HashMap<&str, &ValueDecl> = graph
        .inputs
        .iter()
        .filter(|d| !d.is_tensor())
        .map(|d| (d.name.as_str(), d))
        .collect();
    if !values.is_empty() {
        for node in &graph.nodes {
            for (i, inp) in node.inputs.iter().enumerate() {
                let Some(&decl) = values.get(inp.as_str()) else {
                    continue;
                };
                if node.op != Op::Identity {
                    bail!(
                        "node '{}' ({}): input {i} '{inp}' has type {}, but {} takes tensors only (only Identity passes a sequence or optional on)",
                        node.name,
                        node.op.name(),
                        decl.type_text(),
                        node.op.name()
                    );
                }
                for out in node.outputs.iter().filter(|o| !o.is_empty()) {
                    values.insert(out, decl);
                }
            }
        }
    }
    for out in &graph.outputs {
        let reaching = values.get(out.name.as_str());
        let same = match reaching {
            Some(d) => d.wrappers == out.wrappers && d.dtype == out.dtype,
            None => out.is_tensor(),
        };
        if !same {
            let actual = reaching.map_or("a tensor".to_string(), |d| d.type_text());
            bail!(
                "graph output '{}' is declared {}, but the value is {actual}",
                out.name,
                out.type_text()
            );
        }
    }
    Ok(values)
}
