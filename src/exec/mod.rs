//! The interpreter: a plan computed once, then runs that feed inputs, evaluate nodes in
//! order through `kernels::eval`, and free each tensor after its last use. A sequence or
//! optional value (`Value`) only passes through Identity nodes, beside the tensor path.

mod blocked;
#[cfg(test)]
mod concat_chain_tests;
#[cfg(test)]
mod in_place_tests;
mod plan;
mod prepare;
#[cfg(test)]
mod test_graph;
mod value;
#[cfg(test)]
mod value_tests;

pub use plan::Plan;
use value::tensors_only;
pub use value::Value;

use crate::ir::{BinaryOp, Dim, Graph, Op};
use crate::kernels;
use crate::kernels::blocked::Layout;
use crate::kernels::pointwise;
use crate::tensor::Tensor;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What [`Runner::run_profiled`] reports for each node after it ran: its index in
/// `Graph::nodes`, its inputs and outputs (to derive FLOPs from shapes), and its kernel time.
pub struct NodeRun<'a> {
    pub index: usize,
    pub inputs: &'a [Option<&'a Tensor>],
    pub outputs: &'a [Tensor],
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
}

impl Slot<'_> {
    fn get(&self) -> Option<&Tensor> {
        match self {
            Slot::Empty | Slot::Value(_) => None,
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

    /// Takes out of its slot the first of node `i`'s in-place candidates (`Plan::in_place`)
    /// that the kernel can write into as it is (an owned f32 tensor, contiguous, of the
    /// output's shape), with its input position; `None` leaves every slot as it was.
    fn take_in_place(
        &self,
        i: usize,
        point: Option<pointwise::Fused>,
        slots: &mut [Slot],
    ) -> Option<(usize, Tensor)> {
        let plan = &self.plan;
        let cands = &plan.in_place[i];
        if cands.is_empty() {
            return None;
        }
        let slot_of = |k: usize| plan.node_inputs[i][k].expect("a candidate is present");
        let k = {
            let ins: Vec<Option<&Tensor>> = plan.node_inputs[i]
                .iter()
                .map(|s| s.and_then(|s| slots[s].get()))
                .collect();
            let op = &self.graph.nodes[i].op;
            // A blocked input is here only when every input is (an Add of blocked values).
            cands.iter().copied().find(|&k| {
                matches!(slots[slot_of(k)], Slot::Owned(_) | Slot::Blocked(_))
                    && kernels::can_run_in_place(op, point, &ins, k)
            })?
        };
        match std::mem::replace(&mut slots[slot_of(k)], Slot::Empty) {
            Slot::Owned(t) | Slot::Blocked(t) => Some((k, t)),
            _ => unreachable!("checked owned above"),
        }
    }

    /// The interpreter loop. `on_node` is a type parameter passed as `None` by the plain
    /// runs, so the timing code is compiled out of them rather than tested per node.
    /// `fuse` applies the plan's activation fusion.
    fn run_inner<F: FnMut(NodeRun)>(
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
            if fuse && prep.forward[i] {
                // The Conv before applied this activation; its output (read by this node
                // only) moves over.
                if let (Some(Some(src)), Some(Some(dst))) =
                    (plan.node_inputs[i].first(), plan.node_outputs[i].first())
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
            // Blocked values are read as they are by a Conv, a MaxPool or an inference
            // BatchNorm (as X), by an Add of blocked values of one shape and by a channel
            // Concat of blocked values, and converted to planes in their slot for anyone else.
            let blocked_add = matches!(node.op, Op::Binary(BinaryOp::Add))
                && all_blocked_alike(&plan.node_inputs[i], &slots);
            let blocked_concat = matches!(node.op, Op::Concat { axis } if kernels::blocked::is_channel_axis(axis))
                && plan.extends[i].is_none()
                && all_blocked_concatenable(&plan.node_inputs[i], &slots);
            // An inference BatchNorm of a blocked value runs on it as it is.
            let blocked_bn = matches!(node.op, Op::BatchNorm { .. })
                && node.outputs.len() == 1
                && matches!(plan.node_inputs[i].first(), Some(Some(s)) if matches!(slots[*s], Slot::Blocked(_)));
            let reads_x = match node.op {
                Op::Conv(_) => true,
                Op::MaxPool(_) => node.outputs.len() == 1,
                _ => false,
            };
            let is_blocked = |k: usize| matches!(plan.node_inputs[i].get(k), Some(Some(s)) if matches!(slots[*s], Slot::Blocked(_)));
            // A SiLU (elementwise) and a GlobalAveragePool run on a blocked X as it is, and
            // so does a per-channel scale of a blocked X by a gate in planes.
            let silu_blocked = match prep.point[i].filter(|_| fuse) {
                Some(pointwise::Fused::Silu { x }) => is_blocked(x).then_some(x),
                _ => None,
            };
            let gap_blocked = matches!(node.op, Op::GlobalAveragePool) && is_blocked(0);
            let scale_blocked = match node.op {
                Op::Binary(BinaryOp::Mul) if fuse => {
                    blocked_scale_input(&plan.node_inputs[i], &slots)
                }
                _ => None,
            };
            for (k, s) in plan.node_inputs[i].iter().enumerate() {
                let native = blocked_add
                    || blocked_concat
                    || (k == 0 && (reads_x || blocked_bn || gap_blocked))
                    || silu_blocked == Some(k)
                    || scale_blocked == Some(k);
                if let (Some(s), false) = (*s, native) {
                    if let Slot::Blocked(t) = &slots[s] {
                        slots[s] = Slot::Owned(kernels::blocked::unblock(t)?);
                    }
                }
            }
            // A Conv applying a BatchNorm to its input reads the BatchNorm's X, in planes.
            let affine_bn = prep.input_affine[i].filter(|_| fuse);
            if let Some(Some(s)) = affine_bn.and_then(|bn| plan.node_inputs[bn].first()) {
                if let Slot::Blocked(t) = &slots[*s] {
                    slots[*s] = Slot::Owned(kernels::blocked::unblock(t)?);
                }
            }
            let x_blocked = reads_x
                && matches!(plan.node_inputs[i].first(), Some(Some(s)) if matches!(slots[*s], Slot::Blocked(_)));
            let point = prep.point[i].filter(|_| fuse);
            // A Mul by a per-channel gate asked to write blocked: which input is X.
            let scale_x = match (&node.op, fuse && prep.blocked[i] && point.is_none()) {
                (Op::Binary(BinaryOp::Mul), true) => scale_input(&plan.node_inputs[i], &slots),
                _ => None,
            };
            let taken = match (scale_x, scale_blocked) {
                (Some(_), _) => None,
                // A blocked X scaled in its own buffer where it dies here.
                (None, Some(k)) => match plan.node_inputs[i][k] {
                    Some(s) if plan.in_place[i].contains(&k) => {
                        match std::mem::replace(&mut slots[s], Slot::Empty) {
                            Slot::Blocked(t) => Some((k, t)),
                            other => {
                                slots[s] = other;
                                None
                            }
                        }
                    }
                    _ => None,
                },
                (None, None) => self.take_in_place(i, point, &mut slots),
            };
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
            // A taken input reads as absent (its slot is empty now).
            let ins: Vec<Option<&Tensor>> = plan.node_inputs[i]
                .iter()
                .map(|s| s.and_then(|s| slots[s].get()))
                .collect();
            let start = on_node.as_ref().map(|_| Instant::now());
            let act = prep.fused_act[i].filter(|_| fuse);
            let want_blocked = fuse && prep.blocked[i];
            // Whether this node's outputs are held blocked.
            let mut out_blocked = blocked_add || blocked_concat || silu_blocked.is_some();
            let layout = |b: bool| match b {
                true => Layout::Blocked,
                false => Layout::Planes,
            };
            let outs = match (&node.op, &prep.conv[i], taken, point) {
                (Op::Concat { axis }, _, _, _) if prefix.is_some() => {
                    let (prefix, k) = prefix.expect("checked");
                    let all: Option<Vec<&Tensor>> = ins.iter().copied().collect();
                    all.ok_or_else(|| anyhow!("Concat input missing"))
                        .and_then(|all| kernels::layout::concat_extending(prefix, k, &all, *axis))
                        .map(|t| vec![t])
                }
                (Op::Conv(attrs), conv, _, _) if affine_bn.is_some() => {
                    let bn = affine_bn.expect("checked");
                    let bn_ins: Vec<Option<&Tensor>> = plan.node_inputs[bn]
                        .iter()
                        .map(|s| s.and_then(|s| slots[s].get()))
                        .collect();
                    let clamp = match prep.point[bn] {
                        Some(pointwise::Fused::Clamp(a)) => a,
                        _ => kernels::sgemm::Activation::NONE,
                    };
                    let epsilon = match self.graph.nodes[bn].op {
                        Op::BatchNorm { epsilon } => epsilon,
                        _ => unreachable!("input_affine names BatchNorm nodes"),
                    };
                    let mut conv_ins = ins.clone();
                    conv_ins[0] = bn_ins.first().copied().flatten();
                    kernels::conv::InputAffine::batch_norm(epsilon, clamp, &bn_ins)
                        .and_then(|f| {
                            let act = act.unwrap_or_default();
                            kernels::conv::eval_affine(attrs, conv.as_ref(), act, &f, &conv_ins)
                        })
                        .map(|y| vec![y])
                }
                (Op::Conv(attrs), conv, _, _)
                    if conv.is_some() || act.is_some() || x_blocked || want_blocked =>
                {
                    let act = act.unwrap_or_default();
                    let io = (layout(x_blocked), layout(want_blocked));
                    kernels::conv::eval_io(attrs, conv.as_ref(), act, &ins, io).map(|(y, l)| {
                        out_blocked = l == Layout::Blocked;
                        vec![y]
                    })
                }
                (Op::Concat { .. }, _, _, _) if blocked_concat => {
                    let all: Result<Vec<&ndarray::ArrayD<f32>>> = ins
                        .iter()
                        .map(|t| t.ok_or_else(|| anyhow!("Concat input missing"))?.as_f32())
                        .collect();
                    all.and_then(|all| {
                        kernels::blocked::concat_channels(&all)
                            .ok_or_else(|| anyhow!("blocked inputs of different sizes (checked)"))
                    })
                    .map(|y| vec![Tensor::F32(y)])
                }
                (Op::Binary(BinaryOp::Mul), _, taken, _) if scale_blocked.is_some() => {
                    let k = scale_blocked.expect("checked");
                    let x = match taken {
                        Some((_, Tensor::F32(x))) => Some(x),
                        _ => match ins.get(k).copied().flatten() {
                            Some(Tensor::F32(x)) => Some(x.clone()),
                            _ => None,
                        },
                    };
                    let g = ins.get(1 - k).copied().flatten().map(Tensor::as_f32);
                    match (x, g) {
                        (Some(x), Some(Ok(g))) => kernels::blocked::scale_blocked(x, g, k == 1)
                            .map(|y| {
                                out_blocked = true;
                                vec![Tensor::F32(y)]
                            })
                            .ok_or_else(|| anyhow!("per-channel scale of other shapes")),
                        _ => Err(anyhow!("Mul inputs missing")),
                    }
                }
                (Op::GlobalAveragePool, _, _, _) if gap_blocked => {
                    let x = ins
                        .first()
                        .copied()
                        .flatten()
                        .ok_or_else(|| anyhow!("X missing"));
                    x.and_then(Tensor::as_f32).and_then(|x| {
                        kernels::blocked::global_average_pool(x)
                            .map(|y| vec![Tensor::F32(y)])
                            .ok_or_else(|| {
                                anyhow!("a blocked GlobalAveragePool got shape {:?}", x.shape())
                            })
                    })
                }
                (Op::Binary(BinaryOp::Mul), _, _, _) if scale_x.is_some() => {
                    let k = scale_x.expect("checked");
                    let f32_in = |j: usize| ins.get(j).copied().flatten().map(Tensor::as_f32);
                    match (f32_in(k), f32_in(1 - k)) {
                        (Some(Ok(x)), Some(Ok(g))) => {
                            kernels::blocked::scale_to_blocked(x, g, k == 1)
                                .map(|y| {
                                    out_blocked = true;
                                    vec![Tensor::F32(y)]
                                })
                                .ok_or_else(|| anyhow!("per-channel scale of other shapes"))
                        }
                        _ => Err(anyhow!("Mul inputs missing")),
                    }
                }
                (Op::MaxPool(attrs), _, _, _)
                    if (x_blocked || want_blocked)
                        && matches!(ins.first(), Some(Some(Tensor::F32(_)))) =>
                {
                    let Some(Some(Tensor::F32(x))) = ins.first() else {
                        unreachable!("checked above")
                    };
                    let io = (layout(x_blocked), layout(want_blocked));
                    kernels::pool::max_pool_io(x, io.0, attrs, io.1).map(|(y, l)| {
                        out_blocked = l == Layout::Blocked;
                        vec![Tensor::F32(y)]
                    })
                }
                (Op::BatchNorm { epsilon }, _, taken, _) if blocked_bn => {
                    let buf = match taken {
                        Some((_, t)) => Ok(t),
                        None => ins
                            .first()
                            .copied()
                            .flatten()
                            .cloned()
                            .ok_or_else(|| anyhow!("BatchNorm X missing")),
                    };
                    buf.and_then(|b| pointwise::batch_norm_blocked(*epsilon, point, b, &ins))
                        .map(|t| {
                            out_blocked = true;
                            vec![t]
                        })
                }
                (op, _, Some((k, buf)), _) => {
                    kernels::eval_in_place(op, point, buf, k, &ins).map(|t| vec![t])
                }
                (op, _, None, Some(f)) => pointwise::eval_fused(op, f, &ins).map(|t| vec![t]),
                (op, _, None, None) => kernels::eval(op, &ins, node.outputs.len()),
            }
            .with_context(ctx)?;
            if let (Some(f), Some(start)) = (on_node.as_mut(), start) {
                f(NodeRun {
                    index: i,
                    inputs: &ins,
                    outputs: &outs,
                    elapsed: start.elapsed(),
                });
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
        for (decl, &s) in self.graph.outputs.iter().zip(&plan.output_slots) {
            let v = match &slots[s] {
                Slot::Const(t) => Value::Tensor((*t).clone()),
                Slot::Owned(t) => Value::Tensor(t.clone()),
                Slot::Blocked(t) => Value::Tensor(kernels::blocked::unblock(t)?),
                Slot::Value(v) => v.clone(),
                Slot::Empty => bail!("graph output '{}' was not computed", decl.name),
            };
            result.push((decl.name.clone(), v));
        }
        Ok(result)
    }
}

/// Which of a Mul's two inputs is X when it is a per-channel scale written blocked
/// (`kernels::blocked::scale_blockable`: X an f32 `[N, C, H, W]` in planes, the other its
/// f32 `[N, C, 1, 1]` gate).
fn scale_input(inputs: &[Option<usize>], slots: &[Slot]) -> Option<usize> {
    let [Some(a), Some(b)] = inputs else {
        return None;
    };
    let planes_f32 = |s: usize| match &slots[s] {
        Slot::Owned(Tensor::F32(t)) => Some(t.shape()),
        Slot::Const(Tensor::F32(t)) => Some(t.shape()),
        _ => None,
    };
    let (sa, sb) = (planes_f32(*a)?, planes_f32(*b)?);
    let scale = kernels::blocked::scale_blockable;
    match (scale(sa, sb), scale(sb, sa)) {
        (true, _) => Some(0),
        (_, true) => Some(1),
        _ => None,
    }
}

/// Which of a Mul's two inputs is a blocked X scaled per channel by the other, a gate in
/// planes of X's `[N, C, 1, 1]` (`kernels::blocked::scale_blocked`).
fn blocked_scale_input(inputs: &[Option<usize>], slots: &[Slot]) -> Option<usize> {
    let [Some(a), Some(b)] = inputs else {
        return None;
    };
    let gate_of = |x: usize, g: usize| match (&slots[x], &slots[g]) {
        (
            Slot::Blocked(Tensor::F32(x)),
            Slot::Owned(Tensor::F32(g)) | Slot::Const(Tensor::F32(g)),
        ) => {
            let l = kernels::blocked::logical_shape(x.shape());
            x.ndim() == 5 && g.shape() == [l[0], l[1], 1, 1]
        }
        _ => false,
    };
    match (gate_of(*a, *b), gate_of(*b, *a)) {
        (true, _) => Some(0),
        (_, true) => Some(1),
        _ => None,
    }
}

/// Whether every input slot holds a blocked value, all of one batch and image size (at
/// least one input): what `kernels::blocked::concat_channels` takes. Other inputs go the
/// plain Concat's way, and its errors.
fn all_blocked_concatenable(inputs: &[Option<usize>], slots: &[Slot]) -> bool {
    all_blocked(inputs, slots, |a, b| a[0] == b[0] && a[2..] == b[2..])
}

/// Whether every input slot holds a blocked value, all of one shape (at least one input).
fn all_blocked_alike(inputs: &[Option<usize>], slots: &[Slot]) -> bool {
    all_blocked(inputs, slots, |a, b| a == b)
}

/// Whether every input slot holds a blocked value (at least one input) whose held shape
/// `fits` the first one's.
fn all_blocked(
    inputs: &[Option<usize>],
    slots: &[Slot],
    fits: impl Fn(&[usize], &[usize]) -> bool,
) -> bool {
    let mut shapes = inputs.iter().map(|s| match s.map(|s| &slots[s]) {
        Some(Slot::Blocked(t)) => Some(t.shape()),
        _ => None,
    });
    let Some(Some(first)) = shapes.next() else {
        return false;
    };
    shapes.all(|s| s.is_some_and(|s| fits(s, first)))
}
