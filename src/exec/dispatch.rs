//! How one node of a run is evaluated. `Runner::run_inner` (mod.rs) walks the nodes and
//! keeps the slots; per node it asks this file which kernel variant runs it, given the
//! plan's fusions (`Prepared`) and the layouts its inputs are held in at that moment
//! ([`Fusion::of`]), converts to planes the blocked inputs the variant does not read as they
//! are ([`Fusion::unblock_inputs`]), takes the buffer the output may be written into
//! ([`Runner::take_buffer`]), and calls the variant ([`Runner::eval_node`]). A new fused
//! variant is a field of `Fusion`, the inputs it reads blocked in `native`, and an arm of
//! `eval_node` with a function of its own here.

use super::residual::ResidualAdd;
use super::{Runner, Slot};
use crate::ir::op::ConvAttrs;
use crate::ir::{BinaryOp, Op};
use crate::kernels;
use crate::kernels::blocked::Layout;
use crate::kernels::conv::{Dest, Finish};
use crate::kernels::pointwise::{self, Fused};
use crate::kernels::sgemm::Activation;
use crate::tensor::Tensor;
use anyhow::{anyhow, Result};

/// Node `i`'s variant in this run. Blocked values are read as they are by a Conv, a MaxPool
/// or an inference BatchNorm (as X), by an Add of blocked values of one shape (or of one
/// blocked and one in planes it is asked to write blocked, the planes one converted), by a channel
/// Concat of blocked values, by a SiLU, a GlobalAveragePool and a per-channel scale (as X),
/// and converted to planes in their slot for anyone else.
pub(super) struct Fusion {
    /// An Add of blocked values of one shape (after `unblock_inputs`): runs blocked.
    blocked_add: bool,
    /// A channel Concat of blocked values (not extending a kept one): runs blocked.
    blocked_concat: bool,
    /// An inference BatchNorm of a blocked X: runs on it as it is.
    blocked_bn: bool,
    /// A Conv or a single-output MaxPool: reads X (input 0) in either layout.
    reads_x: bool,
    /// A SiLU Mul (elementwise) whose X, this input, is blocked.
    silu_blocked: Option<usize>,
    /// A GlobalAveragePool (or a ReduceMean as one) of a blocked X.
    gap_blocked: bool,
    /// A Mul scaling this input, a blocked X, by a per-channel gate in planes.
    scale_blocked: Option<usize>,
    /// A Conv applying this BatchNorm (and its clamp) to its input (`Prepared::input_affine`).
    affine_bn: Option<usize>,
    /// The elementwise ops fused into this node (`Prepared::point`).
    point: Option<Fused>,
    /// The activation fused into this Conv (`Prepared::fused_act`).
    act: Option<Activation>,
    /// The Add this Conv runs (`Prepared::residual`).
    residual: Option<ResidualAdd>,
    /// The plan asks this node to write its output blocked.
    want_blocked: bool,
    /// A `blocked_add` of one blocked input and one in planes, converted by
    /// `unblock_inputs` (`blockable_pair`).
    mixed_add: bool,
    /// Set by `unblock_inputs`: a Conv or MaxPool whose X is blocked.
    x_blocked: bool,
    /// Set by `unblock_inputs`: a Mul by a per-channel gate asked to write blocked, this
    /// input its X in planes.
    scale_x: Option<usize>,
}

fn held_blocked(inputs: &[Option<usize>], k: usize, slots: &[Slot]) -> bool {
    matches!(inputs.get(k), Some(Some(s)) if matches!(slots[*s], Slot::Blocked(_)))
}

impl Fusion {
    /// Node `i`'s variant given its inputs' slots now; `fuse` false (observed runs) leaves
    /// only the variants that read blocked values, which unfused runs never hold.
    pub(super) fn of(runner: &Runner, i: usize, slots: &[Slot], fuse: bool) -> Fusion {
        let (node, plan) = (&runner.graph.nodes[i], &runner.plan);
        let prep = &plan.prepared;
        let inputs = plan.node_inputs[i].as_slice();
        let blocked = |k: usize| held_blocked(inputs, k, slots);
        let want_blocked = fuse && prep.blocked[i];
        let is_add = matches!(node.op, Op::Binary(BinaryOp::Add));
        // An Add asked to write blocked with one input blocked and one in planes (a stage's
        // first residual Add, whose projection read planes) converts the planes one.
        let mixed_add = is_add && want_blocked && blockable_pair(inputs, slots);
        let blocked_add = is_add && (all_blocked_alike(inputs, slots) || mixed_add);
        let channel_concat =
            matches!(node.op, Op::Concat { axis } if kernels::blocked::is_channel_axis(axis));
        let blocked_concat =
            channel_concat && plan.extends[i].is_none() && all_blocked_concatenable(inputs, slots);
        let blocked_bn =
            matches!(node.op, Op::BatchNorm { .. }) && node.outputs.len() == 1 && blocked(0);
        let reads_x = match node.op {
            Op::Conv(_) => true,
            Op::MaxPool(_) => node.outputs.len() == 1,
            _ => false,
        };
        let point = prep.point[i].filter(|_| fuse);
        let silu_blocked = match point {
            Some(Fused::Silu { x }) => blocked(x).then_some(x),
            _ => None,
        };
        let scale_blocked = match node.op {
            Op::Binary(BinaryOp::Mul) if fuse => blocked_scale_input(inputs, slots),
            _ => None,
        };
        Fusion {
            blocked_add,
            blocked_concat,
            blocked_bn,
            reads_x,
            silu_blocked,
            gap_blocked: super::blocked::spatial_mean(runner.graph, node) && blocked(0),
            scale_blocked,
            affine_bn: prep.input_affine[i].filter(|_| fuse),
            point,
            act: prep.fused_act[i].filter(|_| fuse),
            residual: prep.residual[i].filter(|_| fuse),
            want_blocked,
            mixed_add,
            x_blocked: false,
            scale_x: None,
        }
    }

    /// Whether input `k` is read in the layout it is held in.
    fn native(&self, k: usize) -> bool {
        self.blocked_add
            || self.blocked_concat
            || (k == 0 && (self.reads_x || self.blocked_bn || self.gap_blocked))
            || self.silu_blocked == Some(k)
            || self.scale_blocked == Some(k)
    }

    /// Converts to planes, in their slots, the blocked inputs node `i` does not read as they
    /// are, and the X of the BatchNorm a Conv applies to its input (read in planes); then
    /// settles what depends on the layouts left.
    pub(super) fn unblock_inputs(
        &mut self,
        runner: &Runner,
        i: usize,
        slots: &mut [Slot],
    ) -> Result<()> {
        let plan = &runner.plan;
        let inputs = plan.node_inputs[i].as_slice();
        for (k, s) in inputs.iter().enumerate() {
            if let (Some(s), false) = (*s, self.native(k)) {
                unblock(slots, s)?;
            }
        }
        if self.mixed_add {
            for s in inputs.iter().flatten() {
                if let Slot::Owned(t) = &slots[*s] {
                    let b = kernels::blocked::to_blocked(t.as_f32()?);
                    slots[*s] = Slot::Blocked(Tensor::F32(b));
                }
            }
        }
        if let Some(Some(s)) = self.affine_bn.and_then(|bn| plan.node_inputs[bn].first()) {
            unblock(slots, *s)?;
        }
        if let Some(Some(s)) = self.residual.map(|r| plan.node_inputs[r.add][1 - r.k]) {
            unblock(slots, s)?;
        }
        self.x_blocked = self.reads_x && held_blocked(inputs, 0, slots);
        self.scale_x = match (&runner.graph.nodes[i].op, self.want_blocked) {
            (Op::Binary(BinaryOp::Mul), true) if self.point.is_none() => scale_input(inputs, slots),
            _ => None,
        };
        Ok(())
    }

    /// Whether the node's outputs are held blocked when its variant does not say otherwise.
    pub(super) fn out_blocked(&self) -> bool {
        self.blocked_add || self.blocked_concat || self.silu_blocked.is_some()
    }
}

/// Converts slot `s` to planes if it holds a blocked value.
fn unblock(slots: &mut [Slot], s: usize) -> Result<()> {
    if let Slot::Blocked(t) = &slots[s] {
        slots[s] = Slot::Owned(kernels::blocked::unblock(t)?);
    }
    Ok(())
}

/// A node's outputs and whether they are held blocked.
pub(super) type Outputs = (Vec<Tensor>, bool);

/// Where a node's output may be written instead of a buffer of its own.
pub(super) struct OutBuf<'b> {
    /// An input's buffer (its position and tensor), taken out of its slot
    /// ([`Runner::take_buffer`]).
    pub taken: Option<(usize, Tensor)>,
    /// For a Concat extending an earlier one's kept output: that output, and how many of
    /// the first inputs it joined (`Plan::extends`).
    pub prefix: Option<(Tensor, usize)>,
    /// For a Conv, its part of a Concat's buffer (`concat_into.rs`): written there when
    /// its output fits it, and then no output is returned.
    pub dest: Option<Dest<'b>>,
}

impl Runner<'_> {
    /// Takes out of its slot the buffer node `i`'s output is written into, with its input
    /// position: a blocked X scaled in its own buffer where it dies here, or else the first
    /// in-place candidate the kernel takes (`take_in_place`). `None` leaves the slots alone.
    pub(super) fn take_buffer(
        &self,
        i: usize,
        f: &Fusion,
        slots: &mut [Slot],
    ) -> Option<(usize, Tensor)> {
        let plan = &self.plan;
        match (f.scale_x, f.scale_blocked) {
            (Some(_), _) => None,
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
            (None, None) => self.take_in_place(i, f.point, slots),
        }
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

    /// Runs node `i` as `f` says on `ins` (a taken input reads as absent), into the buffer
    /// `out` gives, if any (see [`OutBuf`]).
    pub(super) fn eval_node(
        &self,
        i: usize,
        f: &Fusion,
        ins: &[Option<&Tensor>],
        out: OutBuf,
        slots: &[Slot],
    ) -> Result<Outputs> {
        let OutBuf {
            taken,
            prefix,
            dest,
        } = out;
        let node = &self.graph.nodes[i];
        let conv = &self.plan.prepared.conv[i];
        // Held blocked as the variant says, or as `Fusion::out_blocked` when it does not.
        let as_is = |t: Result<Tensor>| t.map(|t| (vec![t], f.out_blocked()));
        let blocked = |t: Result<Tensor>| t.map(|t| (vec![t], true));
        match (&node.op, taken) {
            (Op::Concat { axis }, _) if prefix.is_some() => {
                let (prefix, k) = prefix.expect("checked");
                let all: Option<Vec<&Tensor>> = ins.iter().copied().collect();
                as_is(
                    all.ok_or_else(|| anyhow!("Concat input missing"))
                        .and_then(|all| kernels::layout::concat_extending(prefix, k, &all, *axis)),
                )
            }
            (Op::Conv(attrs), _) if f.affine_bn.is_some() => {
                as_is(self.conv_with_input_affine((attrs, conv.as_ref()), f, ins, slots))
            }
            (Op::Conv(attrs), _) if f.residual.is_some() => {
                as_is(self.conv_with_residual((attrs, conv.as_ref()), f, ins, slots))
            }
            (Op::Conv(attrs), _)
                if conv.is_some() || f.act.is_some() || f.x_blocked || f.want_blocked =>
            {
                let fin = Finish {
                    residual: None,
                    act: f.act.unwrap_or_default(),
                };
                let io = (Layout::of(f.x_blocked), Layout::of(f.want_blocked));
                let written = match dest {
                    // Into a Concat's buffer: no output back when it went there.
                    Some(d) => kernels::conv::eval_dest(attrs, conv.as_ref(), fin, ins, io, d),
                    None => kernels::conv::eval_io(attrs, conv.as_ref(), fin, ins, io).map(Some),
                };
                written.map(|w| match w {
                    Some((y, l)) => (vec![y], l == Layout::Blocked),
                    None => (Vec::new(), false),
                })
            }
            (Op::Concat { .. }, _) if f.blocked_concat => blocked(concat_blocked(ins)),
            (Op::Binary(BinaryOp::Mul), taken) if f.scale_blocked.is_some() => {
                let k = f.scale_blocked.expect("checked");
                blocked(scale_blocked(ins, k, taken))
            }
            // A GlobalAveragePool, or a ReduceMean as one (`blocked::spatial_mean`).
            (_, _) if f.gap_blocked => as_is(global_average_pool_blocked(ins)),
            (Op::Binary(BinaryOp::Mul), _) if f.scale_x.is_some() => {
                let k = f.scale_x.expect("checked");
                blocked(scale_to_blocked(ins, k))
            }
            (Op::MaxPool(attrs), _)
                if (f.x_blocked || f.want_blocked)
                    && matches!(ins.first(), Some(Some(Tensor::F32(_)))) =>
            {
                let Some(Some(Tensor::F32(x))) = ins.first() else {
                    unreachable!("checked above")
                };
                let io = (Layout::of(f.x_blocked), Layout::of(f.want_blocked));
                kernels::pool::max_pool_io(x, io.0, attrs, io.1)
                    .map(|(y, l)| (vec![Tensor::F32(y)], l == Layout::Blocked))
            }
            (Op::BatchNorm { epsilon }, taken) if f.blocked_bn => {
                let buf = match taken {
                    Some((_, t)) => Ok(t),
                    None => ins
                        .first()
                        .copied()
                        .flatten()
                        .cloned()
                        .ok_or_else(|| anyhow!("BatchNorm X missing")),
                };
                blocked(buf.and_then(|b| pointwise::batch_norm_blocked(*epsilon, f.point, b, ins)))
            }
            (op, Some((k, buf))) => {
                kernels::eval_in_place(op, f.point, buf, k, ins).map(|t| (vec![t], f.out_blocked()))
            }
            (op, None) => match f.point {
                Some(p) => pointwise::eval_fused(op, p, ins).map(|t| vec![t]),
                None => kernels::eval(op, ins, node.outputs.len()),
            }
            .map(|ts| (ts, f.out_blocked())),
        }
    }

    /// A Conv on the output of the BatchNorm `f.affine_bn` (skipped in this run), which it
    /// applies to that BatchNorm's X as it reads it (`conv::InputAffine`).
    fn conv_with_input_affine(
        &self,
        (attrs, conv): (&ConvAttrs, Option<&kernels::conv::Prepared>),
        f: &Fusion,
        ins: &[Option<&Tensor>],
        slots: &[Slot],
    ) -> Result<Tensor> {
        let (plan, prep) = (&self.plan, &self.plan.prepared);
        let bn = f.affine_bn.expect("a Conv with an input affine");
        let bn_ins: Vec<Option<&Tensor>> = plan.node_inputs[bn]
            .iter()
            .map(|s| s.and_then(|s| slots[s].get()))
            .collect();
        let clamp = clamp_of(prep.point[bn]);
        let epsilon = match self.graph.nodes[bn].op {
            Op::BatchNorm { epsilon } => epsilon,
            _ => unreachable!("input_affine names BatchNorm nodes"),
        };
        let mut conv_ins = ins.to_vec();
        conv_ins[0] = bn_ins.first().copied().flatten();
        let affine = kernels::conv::InputAffine::batch_norm(epsilon, clamp, &bn_ins)?;
        let act = f.act.unwrap_or_default();
        kernels::conv::eval_affine(attrs, conv, act, &affine, &conv_ins)
    }

    /// A Conv that runs the Add `f.residual` (skipped in this run): its output plus the
    /// Add's other input, then the Add's clamp, in planes. Where that input is not an f32
    /// value of the output's shape after all (shapes analyzed with symbolic dims as 1), the
    /// Conv and then the Add, as the Add would have run.
    fn conv_with_residual(
        &self,
        (attrs, conv): (&ConvAttrs, Option<&kernels::conv::Prepared>),
        f: &Fusion,
        ins: &[Option<&Tensor>],
        slots: &[Slot],
    ) -> Result<Tensor> {
        let r = f.residual.expect("a Conv with a residual");
        let point = self.plan.prepared.point[r.add];
        let act = clamp_of(point);
        let residual = self.plan.node_inputs[r.add][1 - r.k]
            .and_then(|s| slots[s].get())
            .ok_or_else(|| anyhow!("the Add's other input is missing"))?;
        let io = (Layout::of(f.x_blocked), Layout::Planes);
        let out_shape = kernels::conv::output_shape(attrs, ins, f.x_blocked)?;
        if let Tensor::F32(t) = residual {
            if let (true, Some(r)) = (t.shape() == out_shape, t.as_slice()) {
                let fin = Finish {
                    residual: Some(r),
                    act,
                };
                return kernels::conv::eval_io(attrs, conv, fin, ins, io).map(|(y, _)| y);
            }
        }
        let (y, _) = kernels::conv::eval_io(attrs, conv, Finish::default(), ins, io)?;
        let mut add_ins = [Some(residual), Some(residual)];
        add_ins[r.k] = Some(&y);
        let add = &self.graph.nodes[r.add].op;
        match point {
            Some(p) => pointwise::eval_fused(add, p, &add_ins),
            None => kernels::eval(add, &add_ins, 1)?
                .pop()
                .ok_or_else(|| anyhow!("Add gave no output")),
        }
    }
}

/// The clamp a fused pass applies (none but for `Fused::Clamp`).
fn clamp_of(point: Option<Fused>) -> Activation {
    match point {
        Some(Fused::Clamp(a)) => a,
        _ => Activation::NONE,
    }
}

/// A channel Concat of blocked values, blocked.
fn concat_blocked(ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let all: Vec<&ndarray::ArrayD<f32>> = ins
        .iter()
        .map(|t| t.ok_or_else(|| anyhow!("Concat input missing"))?.as_f32())
        .collect::<Result<_>>()?;
    kernels::blocked::concat_channels(&all)
        .map(Tensor::F32)
        .ok_or_else(|| anyhow!("blocked inputs of different sizes (checked)"))
}

/// A blocked X (input `k`, or its buffer `taken`) times a per-channel gate in planes.
fn scale_blocked(
    ins: &[Option<&Tensor>],
    k: usize,
    taken: Option<(usize, Tensor)>,
) -> Result<Tensor> {
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
            .map(Tensor::F32)
            .ok_or_else(|| anyhow!("per-channel scale of other shapes")),
        _ => Err(anyhow!("Mul inputs missing")),
    }
}

/// A GlobalAveragePool of a blocked X, in planes.
fn global_average_pool_blocked(ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = ins
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| anyhow!("X missing"))?;
    let x = x.as_f32()?;
    kernels::blocked::global_average_pool(x)
        .map(Tensor::F32)
        .ok_or_else(|| anyhow!("a blocked GlobalAveragePool got shape {:?}", x.shape()))
}

/// X (input `k`, in planes) times a per-channel gate, written blocked.
fn scale_to_blocked(ins: &[Option<&Tensor>], k: usize) -> Result<Tensor> {
    let f32_in = |j: usize| ins.get(j).copied().flatten().map(Tensor::as_f32);
    match (f32_in(k), f32_in(1 - k)) {
        (Some(Ok(x)), Some(Ok(g))) => kernels::blocked::scale_to_blocked(x, g, k == 1)
            .map(Tensor::F32)
            .ok_or_else(|| anyhow!("per-channel scale of other shapes")),
        _ => Err(anyhow!("Mul inputs missing")),
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

/// Two inputs, one held blocked and the other an owned f32 value in planes of the first's
/// logical shape: the planes one can be converted for a blocked Add.
fn blockable_pair(inputs: &[Option<usize>], slots: &[Slot]) -> bool {
    let [Some(a), Some(b)] = inputs else {
        return false;
    };
    let held = |s: &Slot| match s {
        Slot::Blocked(t) => Some(kernels::blocked::logical_shape(t.shape())),
        _ => None,
    };
    let planes = |s: &Slot| match s {
        Slot::Owned(Tensor::F32(t)) => Some(t.shape().to_vec()),
        _ => None,
    };
    let (a, b) = (&slots[*a], &slots[*b]);
    match (held(a), held(b)) {
        (Some(x), None) => planes(b).is_some_and(|y| y == x),
        (None, Some(y)) => planes(a).is_some_and(|x| x == y),
        _ => false,
    }
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
