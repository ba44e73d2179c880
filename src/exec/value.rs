//! A run-time value: a tensor, or one of ONNX's sequence and optional values. Only graph
//! inputs, Identity and graph outputs carry the latter (see `ir::non_tensor_values`). Here
//! too the `Runner`'s part for them: feeding and checking them, and the Identity that passes
//! one on; the interpreter loop keeps tensors in their own slots, so the tensor path never
//! sees a `Value`.

use super::{NodeRun, Runner, Slot};
use crate::ir::{Dim, ValueDecl, Wrapper};
use crate::tensor::Tensor;
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Tensor(Tensor),
    Sequence(Vec<Value>),
    /// `None`: the optional is absent.
    Optional(Option<Box<Value>>),
}

impl Value {
    /// What the value is, for messages: `a tensor (f32[2, 3])`, `a sequence of 3`, `an
    /// absent optional`.
    pub fn kind(&self) -> String {
        match self {
            Value::Tensor(t) => format!("a tensor ({}{:?})", t.dtype(), t.shape()),
            Value::Sequence(items) => format!("a sequence of {}", items.len()),
            Value::Optional(None) => "an absent optional".into(),
            Value::Optional(Some(_)) => "a present optional".into(),
        }
    }

    /// Checks the value against a declared type: the same sequence/optional layers, and each
    /// tensor inside of the declared dtype and rank, with the declared fixed dims. (The
    /// tensors of a sequence may differ in their symbolic dims, so those are not bound.)
    pub fn check_type(&self, decl: &ValueDecl) -> Result<()> {
        self.check_layers(&decl.wrappers, decl)
            .map_err(|e| anyhow::anyhow!("input '{}' must be {}: {e}", decl.name, decl.type_text()))
    }

    fn check_layers(&self, wrappers: &[Wrapper], decl: &ValueDecl) -> Result<()> {
        match (wrappers.first(), self) {
            (Some(Wrapper::Sequence), Value::Sequence(items)) => {
                for (i, v) in items.iter().enumerate() {
                    v.check_layers(&wrappers[1..], decl)
                        .map_err(|e| anyhow::anyhow!("element {i}: {e}"))?;
                }
                Ok(())
            }
            (Some(Wrapper::Optional), Value::Optional(v)) => match v {
                None => Ok(()),
                Some(v) => v.check_layers(&wrappers[1..], decl),
            },
            (None, Value::Tensor(t)) => {
                if t.dtype() != decl.dtype {
                    bail!("got dtype {}", t.dtype());
                }
                if let Some(dims) = &decl.dims {
                    let fits = dims.len() == t.rank()
                        && dims.iter().zip(t.shape()).all(|(d, &n)| match d {
                            Dim::Fixed(f) => *f == n,
                            Dim::Sym(_) => true,
                        });
                    if !fits {
                        bail!("got a tensor of shape {:?}", t.shape());
                    }
                }
                Ok(())
            }
            (_, v) => bail!("got {}", v.kind()),
        }
    }
}

impl Runner<'_> {
    /// Runs the graph on any values (tensors, sequences, optionals); returns the outputs in
    /// declaration order, with their names.
    pub fn run_values(&self, inputs: HashMap<String, Value>) -> Result<Vec<(String, Value)>> {
        let mut tensors = HashMap::new();
        let mut values = HashMap::new();
        for (name, v) in inputs {
            match v {
                Value::Tensor(t) => {
                    tensors.insert(name, t);
                }
                v => {
                    values.insert(name, v);
                }
            }
        }
        // Before the tensor inputs are checked: a sequence given for a tensor input would
        // otherwise be reported as that input missing.
        self.check_not_tensor_inputs(&values)?;
        self.run_inner(tensors, values, |_, _| Ok(()), None::<fn(NodeRun)>, true)
    }

    /// Checks the sequence and optional inputs: each one the graph declares given, of its
    /// declared type (`Value::check_type`), and none given for a tensor input.
    pub fn check_values(&self, values: &HashMap<String, Value>) -> Result<()> {
        self.check_not_tensor_inputs(values)?;
        for decl in self.graph.inputs.iter().filter(|d| !d.is_tensor()) {
            values
                .get(&decl.name)
                .ok_or_else(|| {
                    anyhow!(
                        "input '{}' ({}) was not given (Runner::run feeds tensors only; run_values feeds sequences and optionals)",
                        decl.name,
                        decl.type_text()
                    )
                })?
                .check_type(decl)?;
        }
        Ok(())
    }

    /// Every one of these sequences and optionals is for a declared input that is not a
    /// tensor.
    fn check_not_tensor_inputs(&self, values: &HashMap<String, Value>) -> Result<()> {
        for (name, v) in values {
            match self.graph.inputs.iter().find(|d| &d.name == name) {
                None => bail!("the model has no input named '{name}'"),
                Some(d) if d.is_tensor() => {
                    bail!(
                        "input '{name}' must be a {} tensor, got {}",
                        d.type_text(),
                        v.kind()
                    )
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Runs an Identity over a sequence or optional: the value is copied into the output's
    /// slot, then the slots last read here are freed.
    pub(super) fn forward_value(&self, i: usize, slots: &mut [Slot]) -> Result<()> {
        let plan = &self.plan;
        let value = match plan.node_inputs[i]
            .first()
            .copied()
            .flatten()
            .map(|s| &slots[s])
        {
            Some(Slot::Value(v)) => v.clone(),
            _ => {
                let node = &self.graph.nodes[i];
                bail!(
                    "node '{}' ({}): no sequence or optional value to pass on (a bug)",
                    node.name,
                    node.op.name()
                )
            }
        };
        if let Some(Some(s)) = plan.node_outputs[i].first() {
            slots[*s] = Slot::Value(value);
        }
        for &s in &plan.frees[i] {
            slots[s] = Slot::Empty;
        }
        Ok(())
    }
}

/// The outputs of a run as tensors, for the tensor-only entry points.
pub(super) fn tensors_only(outputs: Vec<(String, Value)>) -> Result<Vec<(String, Tensor)>> {
    outputs
        .into_iter()
        .map(|(name, v)| match v {
            Value::Tensor(t) => Ok((name, t)),
            v => bail!(
                "graph output '{name}' is {}: only run_values returns one",
                v.kind()
            ),
        })
        .collect()
}
