//! The interpreter: a plan computed once, then runs that feed inputs, evaluate nodes in
//! order through `kernels::eval`, and free each tensor after its last use. A sequence or
//! optional value (`Value`) only passes through Identity nodes, beside the tensor path.

mod blocked;
#[cfg(test)]
mod concat_chain_tests;
mod concat_into;
#[cfg(test)]
mod concat_into_tests;
mod dispatch;
#[cfg(test)]
mod in_place_tests;
mod keep_busy;
mod plan;
mod prepare;
mod residual;
#[cfg(test)]
mod residual_tests;
#[cfg(test)]
pub(crate) mod test_graph;
mod value;
#[cfg(test)]
mod value_tests;

use dispatch::{Fusion, OutBuf};
pub use plan::Plan;
use value::tensors_only;
pub use value::Value;

use crate::ir::{Dim, Graph};
use crate::kernels;
use crate::kernels::conv::Dest;
use crate::kernels::uninit;
use crate::tensor::Tensor;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

/// What [`Runner::run_profiled`] reports for each node after it ran: its index in
/// `Graph::nodes`, its inputs and outputs (to derive FLOPs from shapes), and its kernel time.
pub struct NodeRun<'a> {
    pub index: usize,
    pub inputs: &'a [Option<&'a Tensor>],
    /// Empty for a Conv that wrote its output into a Concat's buffer (`concat_into.rs`).
    pub outputs: &'a [Tensor],
    /// Elements of the first output, wherever it was written.
    pub output_len: Option<usize>,
    pub elapsed: Duration,
}

/// A graph ready to run: the graph borrowed, its plan computed once.
pub struct Runner<'g> {
    graph: &'g Graph,
    plan: Plan,
    /// Per node: whether it is an Identity over a sequence or optional, run by
    /// `forward_value` instead of a kernel (kernels see tensors only).
    forwards: Vec<bool>,
}

/// A slot's content during a run: constants are borrowed from the graph, never copied.
enum Slot<'g> {
    Empty,
    Const(&'g Tensor),
    Owned(Tensor),
    /// A 4-D f32 value held blocked (`kernels::blocked`), in fused runs only: `get` gives
    /// the held 5-D tensor, which only its native readers see (`run_inner` converts it to
    /// planes for any other).
    Blocked(Tensor),
    /// A sequence or optional (never a tensor). Only `forward_value` reads these slots:
    /// `Runner::new` marks every node that reads one, so `get` is never asked for it.
    Value(Value),
    /// A Conv's output written into the buffer of the Concat that alone reads it (fused
    /// runs, `concat_into.rs`); that Concat's run takes it from there.
    InConcat,
}

impl Slot<'_> {
    fn get(&self) -> Option<&Tensor> {
        match self {
            Slot::Empty | Slot::Value(_) | Slot::InConcat => None,
            Slot::Const(t) => Some(t),
            Slot::Owned(t) | Slot::Blocked(t) => Some(t),
        }
    }
}

impl<'g> Runner<'g> {
    pub fn new(graph: &'g Graph) -> Result<Runner<'g>> {
        // Also refuses a sequence or optional read by any op but Identity.
        let non_tensor = crate::ir::non_tensor_values(graph)?;
        let forwards = graph
            .nodes
            .iter()
            .map(|n| n.inputs.iter().any(|i| non_tensor.contains_key(i.as_str())))
            .collect();
        Ok(Runner {
            graph,
            plan: Plan::new(graph)?,
            forwards,
        })
    }

    pub fn graph(&self) -> &Graph {
        self.graph
    }

    /// Checks that `inputs` match the graph's declared tensor inputs (every one given, no
    /// extra, dtypes equal, fixed dims equal, a symbolic dim the same size wherever it
    /// appears). Sequence and optional inputs are `check_values`' part.
    pub fn check_inputs(&self, inputs: &HashMap<String, Tensor>) -> Result<()> {
        for name in inputs.keys() {
            if !self.graph.inputs.iter().any(|d| &d.name == name) {
                let known: Vec<&str> = self.graph.inputs.iter().map(|d| d.name.as_str()).collect();
                bail!(
                    "the model has no input named '{name}' (its inputs: {})",
                    known.join(", ")
                );
            }
        }
        let mut symbols: HashMap<&str, usize> = HashMap::new();
        for decl in &self.graph.inputs {
            if !decl.is_tensor() {
                if inputs.contains_key(&decl.name) {
                    bail!(
                        "input '{}' must be {}, got a tensor",
                        decl.name,
                        decl.type_text()
                    );
                }
                continue;
            }
            let t = inputs
                .get(&decl.name)
                .ok_or_else(|| anyhow!("input '{}' was not given", decl.name))?;
            if t.dtype() != decl.dtype {
                bail!(
                    "input '{}' must be {}, got {}",
                    decl.name,
                    decl.dtype,
                    t.dtype()
                );
            }
            let Some(dims) = &decl.dims else { continue };
            let shape = t.shape();
            let declared = || {
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            if dims.len() != shape.len() {
                bail!(
                    "input '{}' must have shape [{}], got {shape:?}",
                    decl.name,
                    declared()
                );
            }
            for (d, &n) in dims.iter().zip(shape) {
                match d {
                    Dim::Fixed(f) if *f != n => {
                        bail!(
                            "input '{}' must have shape [{}], got {shape:?}",
                            decl.name,
                            declared()
                        )
                    }
                    Dim::Sym(s) if s != "?" => {
                        let prev = *symbols.entry(s).or_insert(n);
                        if prev != n {
                            bail!(
                                "input '{}': dim '{s}' is {n} here but {prev} in another input",
                                decl.name
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Runs a graph of tensors; returns the outputs in declaration order, with their names.
    /// A graph with a sequence or optional input needs `run_values`. Fused: an activation
    /// after a Conv is applied by the Conv (see `prepare.rs`).
    pub fn run(&self, inputs: HashMap<String, Tensor>) -> Result<Vec<(String, Tensor)>> {
        tensors_only(self.run_inner(
            inputs,
            HashMap::new(),
            |_, _| Ok(()),
            None::<fn(NodeRun)>,
            true,
        )?)
    }

    /// Runs the graph, calling `observe(value_name, tensor)` for every tensor node output as
    /// it is computed (for comparisons that look at intermediate tensors). Every node runs as
    /// its own kernel (no fusion), so each value observed is the one that node computes.
    pub fn run_observed(
        &self,
        inputs: HashMap<String, Tensor>,
        observe: impl FnMut(&str, &Tensor) -> Result<()>,
    ) -> Result<Vec<(String, Tensor)>> {
        tensors_only(self.run_inner(inputs, HashMap::new(), observe, None::<fn(NodeRun)>, false)?)
    }

    /// Runs the graph, timing each node's kernel and passing it to `on_node` (for
    /// `bench --profile`). Only the kernel call is inside the timed region. Fused, as `run`:
    /// the times are those of the plain run, an activation fused into the node before it
    /// (or a Sigmoid into its SiLU Mul) counted in that node's time and not reported itself.
    pub fn run_profiled(
        &self,
        inputs: HashMap<String, Tensor>,
        on_node: impl FnMut(NodeRun),
    ) -> Result<Vec<(String, Tensor)>> {
        tensors_only(self.run_inner(inputs, HashMap::new(), |_, _| Ok(()), Some(on_node), true)?)
    }

    /// Every kind of run: [`Runner::run_nodes`] with the pool's other workers polling for
    /// its tasks (`keep_busy`).
    fn run_inner<F: FnMut(NodeRun)>(
        &self,
        inputs: HashMap<String, Tensor>,
        values: HashMap<String, Value>,
        observe: impl FnMut(&str, &Tensor) -> Result<()>,
        on_node: Option<F>,
        fuse: bool,
    ) -> Result<Vec<(String, Value)>> {
        keep_busy::while_running(|| self.run_nodes(inputs, values, observe, on_node, fuse))
    }

    /// The interpreter loop. `on_node` is a type parameter passed as `None` by the plain
    /// runs, so the timing code is compiled out of them rather than tested per node.
    /// `fuse` applies the plan's activation fusion.
    fn run_nodes<F: FnMut(NodeRun)>(
        &self,
        mut inputs: HashMap<String, Tensor>,
        mut values: HashMap<String, Value>,
        mut observe: impl FnMut(&str, &Tensor) -> Result<()>,
        mut on_node: Option<F>,
        fuse: bool,
    ) -> Result<Vec<(String, Value)>> {
        self.check_inputs(&inputs)?;
        self.check_values(&values)?;
        let plan = &self.plan;
        let mut slots: Vec<Slot> = (0..plan.n_slots).map(|_| Slot::Empty).collect();
        for (name, t) in &self.graph.constants {
            slots[plan.slots[name]] = Slot::Const(t);
        }
        // Concat buffers being written into by their Convs (`concat_into.rs`), by Concat.
        let into = &plan.prepared.concat_into;
        let into_concats = fuse && into.applies(&inputs);
        let mut sinks: Vec<Option<Box<[MaybeUninit<f32>]>>> =
            self.graph.nodes.iter().map(|_| None).collect();
        for decl in &self.graph.inputs {
            let slot = match inputs.remove(&decl.name) {
                Some(t) => Slot::Owned(t),
                None => Slot::Value(values.remove(&decl.name).expect("checked above")),
            };
            slots[plan.slots[&decl.name]] = slot;
        }
        for (i, node) in self.graph.nodes.iter().enumerate() {
            if self.forwards[i] {
                self.forward_value(i, &mut slots)?;
                continue;
            }
            let ctx = || format!("node '{}' ({})", node.name, node.op.name());
            let prep = &plan.prepared;
            // An activation the node before applied, or an Add the Conv before ran: the
            // value that node wrote (read by this node only) moves over as its output.
            let moved = match (prep.forward[i], prep.added[i]) {
                (true, _) => Some(0),
                (false, k) => k,
            };
            if let (true, Some(k)) = (fuse, moved) {
                if let (Some(Some(src)), Some(Some(dst))) =
                    (plan.node_inputs[i].get(k), plan.node_outputs[i].first())
                {
                    slots[*dst] = std::mem::replace(&mut slots[*src], Slot::Empty);
                }
                for &s in &plan.frees[i] {
                    slots[s] = Slot::Empty;
                }
                continue;
            }
            if fuse && prep.skip[i] {
                // A Sigmoid whose Mul computes SiLU from the Sigmoid's input.
                for &s in &plan.frees[i] {
                    slots[s] = Slot::Empty;
                }
                continue;
            }
            // A Concat some of whose Convs wrote into its buffer: the rest copied in.
            if let (Some(sink), Some(buf)) = (&into.sinks[i], sinks[i].take()) {
                let start = on_node.as_ref().map(|_| Instant::now());
                let t = concat_into::finish(sink, buf, &plan.node_inputs[i], &slots)
                    .with_context(ctx)?;
                if let (Some(f), Some(start)) = (on_node.as_mut(), start) {
                    let ins: Vec<Option<&Tensor>> = plan.node_inputs[i]
                        .iter()
                        .map(|s| s.and_then(|s| slots[s].get()))
                        .collect();
                    f(NodeRun {
                        index: i,
                        inputs: &ins,
                        outputs: std::slice::from_ref(&t),
                        output_len: Some(t.len()),
                        elapsed: start.elapsed(),
                    });
                }
                if let Some(Some(s)) = plan.node_outputs[i].first() {
                    slots[*s] = match sink.blocked {
                        true => Slot::Blocked(t),
                        false => Slot::Owned(t),
                    };
                }
                for &s in &plan.frees[i] {
                    slots[s] = Slot::Empty;
                }
                continue;
            }
            // Which variant runs this node, its inputs in the layouts it reads, the buffer
            // its output may take (`dispatch.rs`).
            let mut fusion = Fusion::of(self, i, &slots, fuse);
            fusion.unblock_inputs(self, i, &mut slots)?;
            let taken = self.take_buffer(i, &fusion, &mut slots);
            // A Concat extending an earlier one's kept output takes it (see `Plan::extends`).
            let prefix = plan.extends[i].and_then(|(s, k)| {
                match std::mem::replace(&mut slots[s], Slot::Empty) {
                    Slot::Owned(t) => Some((t, k)),
                    other => {
                        slots[s] = other;
                        None
                    }
                }
            });
            // A Conv writing into its Concat's buffer (allocated by the first such Conv).
            let dest = match into.parts[i].filter(|_| into_concats) {
                Some(part) => {
                    let sink = into.sinks[part.concat].as_ref().expect("a part has a sink");
                    let buf = sinks[part.concat].get_or_insert_with(|| uninit::alloc(sink.len()));
                    let (at, len) = sink.parts[part.input];
                    Some(Dest {
                        buf: &mut buf[at..at + len],
                        layout: kernels::blocked::Layout::of(sink.blocked),
                    })
                }
                None => None,
            };
            let dest_len = dest.as_ref().map(|d| d.buf.len());
            // A taken input reads as absent (its slot is empty now).
            let ins: Vec<Option<&Tensor>> = plan.node_inputs[i]
                .iter()
                .map(|s| s.and_then(|s| slots[s].get()))
                .collect();
            let start = on_node.as_ref().map(|_| Instant::now());
            let (outs, out_blocked) = self
                .eval_node(
                    i,
                    &fusion,
                    &ins,
                    OutBuf {
                        taken,
                        prefix,
                        dest,
                    },
                    &slots,
                )
                .with_context(ctx)?;
            // No output back: it is in the Concat's buffer.
            let wrote_into = dest_len.filter(|_| outs.is_empty());
            if let (Some(f), Some(start)) = (on_node.as_mut(), start) {
                f(NodeRun {
                    index: i,
                    inputs: &ins,
                    outputs: &outs,
                    output_len: wrote_into.or_else(|| outs.first().map(Tensor::len)),
                    elapsed: start.elapsed(),
                });
            }
            if wrote_into.is_some() {
                if let Some(Some(s)) = plan.node_outputs[i].first() {
                    slots[*s] = Slot::InConcat;
                }
                for &s in &plan.frees[i] {
                    slots[s] = Slot::Empty;
                }
                continue;
            }
            if outs.len() != node.outputs.len() {
                return Err(anyhow!(
                    "produced {} outputs, expected {}",
                    outs.len(),
                    node.outputs.len()
                ))
                .with_context(ctx);
            }
            for ((name, slot), t) in node.outputs.iter().zip(&plan.node_outputs[i]).zip(outs) {
                if let Some(s) = slot {
                    observe(name, &t)?;
                    slots[*s] = match out_blocked {
                        true => Slot::Blocked(t),
                        false => Slot::Owned(t),
                    };
                }
            }
            for &s in &plan.frees[i] {
                slots[s] = Slot::Empty;
            }
        }
        let mut result = Vec::with_capacity(self.graph.outputs.len());
        for (o, (decl, &s)) in self
            .graph
            .outputs
            .iter()
            .zip(&plan.output_slots)
            .enumerate()
        {
            // The run's own tensors are moved out, not copied (a segmentation map or a
            // single conv's output is megabytes), but for a value listed again later.
            let listed_again = plan.output_slots[o + 1..].contains(&s);
            if let (Slot::Owned(_), false) = (&slots[s], listed_again) {
                if let Slot::Owned(t) = std::mem::replace(&mut slots[s], Slot::Empty) {
                    result.push((decl.name.clone(), Value::Tensor(t)));
                    continue;
                }
            }
            let v = match &slots[s] {
                Slot::Const(t) => Value::Tensor((*t).clone()),
                Slot::Owned(t) => Value::Tensor(t.clone()),
                Slot::Blocked(t) => Value::Tensor(kernels::blocked::unblock(t)?),
                Slot::Value(v) => v.clone(),
                Slot::Empty | Slot::InConcat => {
                    bail!("graph output '{}' was not computed", decl.name)
                }
            };
            result.push((decl.name.clone(), v));
        }
        Ok(result)
    }
}
