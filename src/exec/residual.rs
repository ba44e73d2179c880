//! Which Adds fused runs fold into the Conv that produces one of their inputs (a residual
//! block's `conv(x) + shortcut`, then its Relu): the Conv adds the other input, the
//! residual, to each sum after its bias and before the clamp (`conv::Finish`), as the patch
//! path stores its tiles, so the Conv's output is not written, read back and written again
//! by a separate Add. ResNet-50's 16 Adds took 1.7-1.8 ms of a 62 ms run apart; fused, its
//! layer1 blocks' convs took 0.06-0.3 ms less than conv and Add had (the residual's rows
//! prefetched as each tile starts; without, they took as long).
//!
//! An Add `j` of two inputs is folded into the Conv `c` producing its input `k` when: that
//! output is read by the Add alone and is not a graph output; the Conv has no activation or
//! input affine of its own fused; the Add's only fused pass is a clamp (Relu, Clip), which
//! the Conv then applies; the residual, the other input, is ready before the Conv runs (a
//! constant, a graph input or an earlier node's output); the analyzed shapes of both are
//! f32 and equal (no broadcasting); and no blocked value is in play (neither node writes
//! blocked, nor does the node the residual comes from). Where both inputs are such Convs,
//! the later one takes the Add: the earlier one's output is its residual (ResNet's
//! downsampling blocks, whose shortcut conv runs after the main branch's last). Only Convs
//! whose path adds the residual as it stores are chosen (`conv::residual_applies`, for the
//! analyzed shapes): after any other, a pass over the output costs what the Add did.
//!
//! At run time the Runner hands the Conv the residual in planes; if the shapes turn out to
//! differ (symbolic dims analyzed as 1), it runs the Conv and then the Add as they are.

use super::prepare::Prepared;
use crate::ir::analyze::Facts;
use crate::ir::{BinaryOp, Graph, Op};
use crate::kernels::conv;
use crate::kernels::pointwise::Fused;
use crate::tensor::DType;
use std::collections::HashMap;

/// An Add folded into a Conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResidualAdd {
    pub conv: usize,
    pub add: usize,
    /// The Add's input position holding the Conv's output; the other is the residual.
    pub k: usize,
}

/// The residual Adds of `graph`, in node order.
/// `f` holds the fusions chosen before (activations, passes, blocked values, input affines).
pub fn plan(
    graph: &Graph,
    facts: Option<&Facts>,
    readers: &HashMap<&str, Vec<usize>>,
    f: &Prepared,
) -> Vec<ResidualAdd> {
    let Some(facts) = facts else {
        return Vec::new();
    };
    let producer = super::prepare::producers(graph);
    let f32_shape = |v: &str| {
        facts
            .get(v)
            .filter(|f| f.dtype == DType::F32)
            .and_then(|f| f.shape.as_ref())
    };
    // The node whose kernel writes value `v`, past the activations fused into it.
    let writer = |v: &str| {
        let mut q = *producer.get(v)?;
        while f.forward[q] {
            q = *producer.get(graph.nodes[q].inputs.first()?.as_str())?;
        }
        Some(q)
    };
    let mut found = Vec::new();
    for (j, add) in graph.nodes.iter().enumerate() {
        let ([a, b], [_]) = (add.inputs.as_slice(), add.outputs.as_slice()) else {
            continue;
        };
        let clamp_only = matches!(f.point[j], None | Some(Fused::Clamp(_)));
        if !matches!(add.op, Op::Binary(BinaryOp::Add))
            || a.is_empty()
            || b.is_empty()
            || a == b
            || !clamp_only
            || f.blocked[j]
            || f.skip[j]
            || f.forward[j]
        {
            continue;
        }
        let ins = [a, b];
        let candidate = |k: usize| -> Option<usize> {
            let (y, r) = (ins[k].as_str(), ins[1 - k].as_str());
            let c = *producer.get(y)?;
            let conv = &graph.nodes[c];
            let single = readers.get(y).is_some_and(|rs| rs == &[j])
                && !graph.outputs.iter().any(|o| o.name == y);
            let ready = match producer.get(r) {
                Some(&q) => q < c && writer(r).is_some_and(|w| !f.blocked[w]),
                None => true,
            };
            let fits = matches!((f32_shape(y), f32_shape(r)), (Some(s), Some(t)) if s == t);
            let native = match (&conv.op, conv.inputs.as_slice()) {
                (Op::Conv(attrs), [x, w, ..]) => match (f32_shape(x), f32_shape(w)) {
                    (Some(xs), Some(ws)) => conv::residual_applies(xs, ws, attrs),
                    _ => false,
                },
                _ => false,
            };
            (matches!(conv.op, Op::Conv(_))
                && conv.outputs.len() == 1
                && single
                && f.fused_act[c].is_none()
                && f.input_affine[c].is_none()
                && !f.blocked[c]
                && !f.skip[c]
                && ready
                && fits
                && native)
                .then_some(c)
        };
        let best = (0..2)
            .filter_map(|k| candidate(k).map(|c| (c, k)))
            .max_by_key(|&(c, _)| c);
        if let Some((conv, k)) = best {
            found.push(ResidualAdd { conv, add: j, k });
        }
    }
    found
}
