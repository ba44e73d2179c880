//! The graph: named values, constants, and nodes in topological order.

use super::{Op, Wrapper};
use crate::tensor::{DType, Tensor};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// One dimension of a declared shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(usize),
    /// A named dimension (`batch`, `N` ...), resolved from `--dim NAME=N` or the inputs.
    Sym(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// A graph input or output as the model declares it: a tensor type, possibly inside ONNX
/// sequence/optional types (`wrappers`; see `value_type.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct ValueDecl {
    pub name: String,
    /// The tensor's dtype (of the tensors inside, for a sequence or optional).
    pub dtype: DType,
    /// `None` when the model declares no shape at all.
    pub dims: Option<Vec<Dim>>,
    /// The sequence/optional layers around the tensor type, outermost first; empty for a
    /// plain tensor.
    pub wrappers: Vec<Wrapper>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Unique within the graph; the importer names nameless ONNX nodes `<op>_<index>`.
    pub name: String,
    pub op: Op,
    /// Value names; `""` marks an absent optional input, as in ONNX.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

impl Node {
    /// The name of input `i` when present.
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    /// The default-domain opset the model was imported from (kept for export).
    pub opset: i64,
    /// Run-time inputs, in declaration order (initializers are not among them).
    pub inputs: Vec<ValueDecl>,
    pub outputs: Vec<ValueDecl>,
    /// Constant values: initializers and Constant nodes.
    pub constants: BTreeMap<String, Tensor>,
    /// In topological order: every input of a node is a graph input, a constant, or an
    /// output of an earlier node. The checker enforces it.
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Index of the node that produces `value`, if a node does.
    pub fn producer(&self, value: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.outputs.iter().any(|o| o == value))
    }

    /// For each value name, the indices of the nodes that read it.
    pub fn consumers(&self) -> HashMap<&str, Vec<usize>> {
        let mut map: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for inp in n.inputs.iter().filter(|s| !s.is_empty()) {
                map.entry(inp.as_str()).or_default().push(i);
            }
        }
        map
    }

    /// Whether `value` is read by a graph output.
    pub fn is_output(&self, value: &str) -> bool {
        self.outputs.iter().any(|o| o.name == value)
    }

    /// Drops constants that no node reads and no output names (left behind by a rewrite).
    pub fn remove_unused_constants(&mut self) {
        let mut used: HashSet<&str> = self.outputs.iter().map(|o| o.name.as_str()).collect();
        for n in &self.nodes {
            used.extend(n.inputs.iter().map(String::as_str));
        }
        let unused: Vec<String> = self
            .constants
            .keys()
            .filter(|k| !used.contains(k.as_str()))
            .cloned()
            .collect();
        for k in unused {
            self.constants.remove(&k);
        }
    }

    /// Every name used in the graph, for making fresh ones.
    pub fn all_names(&self) -> HashSet<String> {
        let mut names: HashSet<String> = self.constants.keys().cloned().collect();
        names.extend(self.inputs.iter().map(|v| v.name.clone()));
        for n in &self.nodes {
            names.insert(n.name.clone());
            names.extend(n.outputs.iter().cloned());
        }
        names
    }
}

/// Hands out names that do not clash with any in the graph: `base`, then `base.1`, `base.2` ...
pub struct NameGen {
    taken: HashSet<String>,
}

impl NameGen {
    pub fn new(graph: &Graph) -> NameGen {
        NameGen {
            taken: graph.all_names(),
        }
    }

    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.taken.contains(&name) {
            name = format!("{base}.{i}");
            i += 1;
        }
        self.taken.insert(name.clone());
        name
    }
}
