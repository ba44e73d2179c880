//! Which values fused runs hold blocked (NCHW8c, `kernels::blocked`): the outputs of Convs,
//! Adds, MaxPools, channel Concats, BatchNorms and SiLUs whose every reader reads them
//! blocked natively, so chains such as MobileNet's 1x1 -> depthwise -> 1x1 -> Add,
//! SqueezeNet's MaxPool -> squeeze -> expand -> Concat or EfficientNet's 1x1 -> SiLU ->
//! depthwise -> SiLU -> squeeze-and-excitation -> 1x1 pass their values without the 8x8
//! transposes each kernel with the channels in its vector lanes would otherwise do on the
//! way in and out. (EfficientNet-B0 held blocked through its SiLUs, pools and scales too:
//! 0.87 of the time, the paired median of 16 alternating runs.)
//!
//! A node's output is held blocked when the node writes it so natively (a Conv whose path
//! does for its shapes, `conv::blocked_native`; an Add of two values of one shape, at least
//! one of them held: the Runner converts the other, as a stage's first residual Add reads a
//! projection the sgemm wrote in planes; RegNet-X 400MF held no residual value before, its
//! 1x1 convs reading the sums ran on the sgemm, and took 1.11x as long in all);
//! a MaxPool `pool::max_pool_blocked_capable` takes, from either layout; a channel Concat of
//! blocked values; a Mul of a value in planes by its per-channel gate, squeeze-and-excitation's
//! scale, `blocked::scale_to_blocked`; an inference BatchNorm of a blocked value,
//! `pointwise::batch_norm_blocked`; a SiLU Mul of a blocked value, elementwise), it is not a
//! graph output, and every node that reads it (past fused
//! activations, which pass the value on) is such a Conv reading it as its input, itself
//! writing its output blocked or having no more output channels than input channels, or
//! such a BatchNorm writing its output blocked, or such an Add whose output is held, or an
//! Add or Concat of held values (which
//! runs on them as they are whether its own output is held or not: a stage of residual Adds
//! ending in a reader of planes, RegNet's last, stays blocked up to its last Add, whose output
//! is converted once), or such a MaxPool (which reads a
//! blocked input by row copies, whatever it writes), or a SiLU Mul or a per-channel scale
//! (as X: `blocked::scale_blocked`) of it, held or not, or a GlobalAveragePool
//! (`blocked::global_average_pool`, writing planes), or a node fused runs skip. (A Conv
//! reading a blocked input but writing planes runs on `conv_lanes`, with its spread, where
//! the sgemm would run a widening one faster: EfficientNet-B0's 1x1 expansions, whose
//! outputs went to SiLU in planes then, took the whole net 1.07x as long; they now write
//! blocked for the SiLU, see `conv_lanes::MAX_WIDENING_INPUTS`.) Shapes come
//! from `analyze` with the graph's declared input shapes (symbolic dims as 1); they only
//! guide the choice: at run time a Conv given other shapes writes planes, and any node
//! handed a blocked value it does not read natively gets it converted first
//! (`Runner::run_inner`), so the choice never changes a result, only its speed.

use crate::ir::analyze::Facts;
use crate::ir::{BinaryOp, Graph, Node, Op};
use crate::kernels::pointwise::Fused;
use crate::kernels::{blocked, conv, pool};
use crate::tensor::DType;
use std::collections::HashMap;

/// Whether `node` is a GlobalAveragePool, or a ReduceMean computing one on a 4-D value: over
/// axes 2 and 3 (as an attribute or a constant input), keeping them. PyTorch's dynamo
/// exporter writes EfficientNet-B0's squeeze-and-excitation pools so; read as planes, their
/// inputs took the SiLUs before them out of the blocked layout, and the net ran 1.2x as long
/// as its legacy export. The mean over trailing axes sums in `pool::sum_f64`'s order (the
/// bits of GlobalAveragePool, `reduce.rs`), so either layout gives the same bits. A value
/// held blocked is 4-D, so the axes are checked against rank 4.
pub(super) fn spatial_mean(graph: &Graph, node: &Node) -> bool {
    let attrs = match &node.op {
        Op::GlobalAveragePool => return true,
        Op::ReduceMean(a) if a.keepdims => a,
        _ => return false,
    };
    let axes = match (&attrs.axes, node.inputs.get(1).filter(|v| !v.is_empty())) {
        (Some(axes), None) => axes.clone(),
        (None, Some(v)) => match graph.constants.get(v).map(|t| t.to_i64_vec()) {
            Some(Ok(axes)) => axes,
            _ => return false,
        },
        _ => return false,
    };
    let mut axes: Vec<i64> = axes
        .iter()
        .map(|&a| if a < 0 { a + 4 } else { a })
        .collect();
    axes.sort_unstable();
    axes == [2, 3]
}

/// Per node: whether fused runs ask it to write its output blocked. `forward` marks the
/// activation nodes fused into the node before them (their output is that node's, moved),
/// `point` the fused passes (a SiLU Mul's `Fused::Silu`), `skip` the nodes that run
/// nothing (a SiLU's Sigmoid).
pub fn plan(
    graph: &Graph,
    facts: Option<&Facts>,
    forward: &[bool],
    point: &[Option<Fused>],
    skip: &[bool],
) -> Vec<bool> {
    let n = graph.nodes.len();
    let Some(facts) = facts else {
        return vec![false; n];
    };
    let f32_shape = |v: &str| {
        facts
            .get(v)
            .filter(|f| f.dtype == DType::F32)
            .and_then(|f| f.shape.clone())
    };
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, node) in graph.nodes.iter().enumerate() {
        for i in node.inputs.iter().filter(|i| !i.is_empty()) {
            readers.entry(i.as_str()).or_default().push(j);
        }
    }
    // The value node `i`'s output ends up as, past the fused activations that move it on.
    let final_value = |i: usize| -> Option<&str> {
        let [out] = graph.nodes[i].outputs.as_slice() else {
            return None;
        };
        let mut v = out.as_str();
        while let Some([j]) = readers.get(v).map(Vec::as_slice) {
            match (forward[*j], graph.nodes[*j].outputs.as_slice()) {
                (true, [next]) => v = next.as_str(),
                _ => break,
            }
        }
        Some(v)
    };
    // Convs that read and write blocked values natively for their analyzed shapes, with a
    // blocked input (`native_in`) or with an input in planes (`native`; fewer convs).
    let native_when = |x_blocked: bool| -> Vec<bool> {
        graph
            .nodes
            .iter()
            .map(|node| {
                let Op::Conv(attrs) = &node.op else {
                    return false;
                };
                let w = node.inputs.get(1).and_then(|w| graph.constants.get(w));
                match (f32_shape(&node.inputs[0]), w) {
                    (Some(xs), Some(w)) => conv::blocked_native(&xs, w.shape(), attrs, x_blocked),
                    _ => false,
                }
            })
            .collect()
    };
    let (native, native_in) = (native_when(false), native_when(true));
    // Convs with no more output channels than input channels: read blocked and written in
    // planes (`conv_lanes` spreads its output), they still beat converting their input
    // for the sgemm, whose patch packing copies the (larger) input.
    let narrowing: Vec<bool> = graph
        .nodes
        .iter()
        .map(|node| {
            let w = node.inputs.get(1).and_then(|w| graph.constants.get(w));
            match (&node.op, w.map(|w| w.shape())) {
                (Op::Conv(a), Some([m, cg, ..])) => *m <= cg * a.group,
                _ => false,
            }
        })
        .collect();
    // Concats whose inputs begin with all of another Concat's (`Plan::extends` may chain
    // them).
    let concats: Vec<usize> = (0..n)
        .filter(|&i| matches!(graph.nodes[i].op, Op::Concat { .. }))
        .collect();
    let chained: Vec<usize> = concats
        .iter()
        .copied()
        .filter(|&i| {
            let prefix_of = |a: usize, b: usize| {
                let (a, b) = (&graph.nodes[a].inputs, &graph.nodes[b].inputs);
                a.len() < b.len() && b[..a.len()] == a[..]
            };
            concats
                .iter()
                .any(|&j| j != i && (prefix_of(i, j) || prefix_of(j, i)))
        })
        .collect();
    let is_add = |i: usize| {
        let node = &graph.nodes[i];
        matches!(node.op, Op::Binary(BinaryOp::Add))
            && node.inputs.len() == 2
            && match (f32_shape(&node.inputs[0]), f32_shape(&node.inputs[1])) {
                (Some(a), Some(b)) => a == b && blocked::blockable(&a),
                _ => false,
            }
    };
    // MaxPools whose kernel reads and writes blocked values for their shapes.
    let is_pool = |i: usize| {
        let node = &graph.nodes[i];
        match &node.op {
            Op::MaxPool(a) => {
                node.outputs.len() == 1
                    && f32_shape(&node.inputs[0])
                        .is_some_and(|xs| pool::max_pool_blocked_capable(&xs, a))
            }
            _ => false,
        }
    };
    // Channel Concats of blockable values of one image size, not in a chain of Concats
    // extending one another (DenseNet's; the Runner runs those on their kept planes).
    let is_concat = |i: usize| {
        let node = &graph.nodes[i];
        let Op::Concat { axis } = node.op else {
            return false;
        };
        let shapes: Option<Vec<Vec<usize>>> = node.inputs.iter().map(|v| f32_shape(v)).collect();
        let Some(shapes) = shapes.filter(|s| !s.is_empty()) else {
            return false;
        };
        blocked::is_channel_axis(axis)
            && !chained.contains(&i)
            && shapes
                .iter()
                .all(|s| blocked::blockable(s) && s[0] == shapes[0][0] && s[2..] == shapes[0][2..])
    };
    // Inference BatchNorms of a blockable f32 value (exports that keep them after their
    // Convs), which run on a blocked input as it is.
    let is_bn = |i: usize| {
        let node = &graph.nodes[i];
        matches!(node.op, Op::BatchNorm { .. })
            && node.outputs.len() == 1
            && f32_shape(&node.inputs[0]).is_some_and(|s| blocked::blockable(&s))
    };
    // Muls of an f32 value in planes by its per-channel gate (squeeze-and-excitation),
    // which write their output blocked in the pass that multiplies.
    let is_scale = |i: usize| {
        let node = &graph.nodes[i];
        matches!(node.op, Op::Binary(BinaryOp::Mul))
            && node.inputs.len() == 2
            && match (f32_shape(&node.inputs[0]), f32_shape(&node.inputs[1])) {
                (Some(a), Some(b)) => {
                    blocked::scale_blockable(&a, &b) || blocked::scale_blockable(&b, &a)
                }
                _ => false,
            }
    };
    // SiLU Muls (`Fused::Silu`, X at input `x`) of a blockable f32 value, elementwise on a
    // blocked one as on planes.
    let silu_x = |i: usize| match point[i] {
        Some(Fused::Silu { x }) => graph.nodes[i]
            .inputs
            .get(x)
            .filter(|v| f32_shape(v).is_some_and(|s| blocked::blockable(&s)))
            .map(String::as_str),
        _ => None,
    };
    // GlobalAveragePools (or ReduceMeans as one) of a blockable f32 value, which read it
    // blocked (their output, `[N, C, 1, 1]`, in planes).
    let is_gap = |i: usize| {
        let node = &graph.nodes[i];
        spatial_mean(graph, node)
            && f32_shape(&node.inputs[0]).is_some_and(|s| blocked::blockable(&s))
    };
    let mut held: Vec<bool> = (0..n)
        .map(|i| {
            native_in[i]
                || is_add(i)
                || is_pool(i)
                || is_concat(i)
                || is_scale(i)
                || is_bn(i)
                || silu_x(i).is_some()
        })
        .collect();
    // Drop candidates until every held value's readers read it natively and every held Add
    // reads held values only; each round drops at least one, so this ends.
    loop {
        let source: HashMap<&str, usize> = (0..n)
            .filter(|&i| held[i])
            .filter_map(|i| final_value(i).map(|v| (v, i)))
            .collect();
        let reads_natively = |r: usize, v: &str| {
            let node = &graph.nodes[r];
            let conv_input = (held[r] || narrowing[r])
                && native_in[r]
                && node.inputs.first().map(String::as_str) == Some(v)
                && node.inputs[1..].iter().all(|i| i != v);
            let all_held = || node.inputs.iter().all(|i| source.contains_key(i.as_str()));
            // An Add or Concat of blocked values runs on them as they are, held output or
            // not (the Runner converts a blocked output that is not held for its readers):
            // a chain of residual Adds ending in a reader of planes stays blocked up to its
            // last Add.
            let add = is_add(r) && (all_held() || held[r]);
            let concat = is_concat(r) && all_held();
            // A MaxPool reads a blocked value with row copies, held output or not.
            let pool = is_pool(r) && node.inputs[0] == v;
            let bn = held[r]
                && is_bn(r)
                && node.inputs[0] == v
                && node.inputs[1..].iter().all(|i| i != v);
            // A SiLU Mul, a per-channel scale (as X, the gate in planes) and a
            // GlobalAveragePool read a blocked value as it is (the SiLU and the scale write
            // blocked then, held or not); a skipped node (a SiLU's Sigmoid) reads nothing.
            let silu = silu_x(r) == Some(v);
            let scale = is_scale(r)
                && node.inputs.iter().filter(|i| *i == v).count() == 1
                && node.inputs.iter().any(|i| {
                    i != v && f32_shape(i).is_some_and(|g| g.len() == 4 && g[2..] == [1, 1])
                });
            let gap = is_gap(r) && node.inputs[0] == v;
            conv_input || add || concat || pool || bn || silu || scale || gap || skip[r]
        };
        let keep = |i: usize| {
            let Some(v) = final_value(i) else {
                return false;
            };
            let inputs_held = |i: usize| {
                graph.nodes[i]
                    .inputs
                    .iter()
                    .all(|x| source.contains_key(x.as_str()))
            };
            let writes_natively = if is_add(i) {
                // One held input will do: the Runner converts the other (a stage's first
                // residual Add, its projection having read planes).
                graph.nodes[i]
                    .inputs
                    .iter()
                    .any(|x| source.contains_key(x.as_str()))
            } else if is_concat(i) {
                inputs_held(i)
            } else if is_bn(i) {
                source.contains_key(graph.nodes[i].inputs[0].as_str())
            } else if let Some(x) = silu_x(i) {
                source.contains_key(x)
            } else {
                // A MaxPool from either layout, a scale from planes; a Conv from its input
                // held blocked, or in planes where it takes those too.
                is_pool(i)
                    || is_scale(i)
                    || native[i]
                    || source.contains_key(graph.nodes[i].inputs[0].as_str())
            };
            let out_shape_ok = f32_shape(v).is_some_and(|s| blocked::blockable(&s));
            writes_natively
                && out_shape_ok
                && !graph.outputs.iter().any(|o| o.name == v)
                && readers
                    .get(v)
                    .is_some_and(|rs| rs.iter().all(|&r| reads_natively(r, v)))
        };
        let drop: Vec<usize> = (0..n).filter(|&i| held[i] && !keep(i)).collect();
        if drop.is_empty() {
            return held;
        }
        for i in drop {
            held[i] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The plan on a small MobileNet-like graph, and fused runs holding values blocked
    //! against the unfused run, which holds none.
    use super::*;
    use crate::exec::test_graph::{decl, node, values};
    use crate::exec::Runner;
    use crate::ir::op::{ConvAttrs, Padding, Window};
    use crate::ir::UnaryOp;
    use crate::tensor::Tensor;

    fn conv(group: usize, pad: usize) -> Op {
        Op::Conv(ConvAttrs {
            window: Window {
                kernel_shape: None,
                strides: vec![],
                dilations: vec![],
                padding: Padding::Explicit(vec![pad; 4]),
            },
            group,
        })
    }

    /// a = relu(dw(x)), b = relu(dw2(x)), s = a + b, p = 1x1 16 -> 8 of s (read blocked),
    /// y = relu(1x1 8 -> 16 of p): a, b and s can be held blocked; p cannot: its reader
    /// writes planes (y is a graph output) and widens.
    fn graph() -> Graph {
        let relu = Op::Unary(UnaryOp::Relu);
        let mut g = Graph {
            name: "blocked".into(),
            opset: 17,
            inputs: vec![decl("x", &[1, 16, 9, 11])],
            outputs: vec![decl("y", &[1, 16, 9, 11])],
            nodes: vec![
                node("dw", conv(16, 1), &["x", "wd", "bd"], "d"),
                node("relu_a", relu.clone(), &["d"], "a"),
                node("dw2", conv(16, 1), &["x", "wd2", ""], "d2"),
                node("relu_b", relu.clone(), &["d2"], "b"),
                node("add", Op::Binary(BinaryOp::Add), &["a", "b"], "s"),
                node("project", conv(1, 0), &["s", "wp", "bp"], "p"),
                node("last", conv(1, 0), &["p", "wl", ""], "l"),
                node("relu_y", relu, &["l"], "y"),
            ],
            ..Default::default()
        };
        add_values(
            &mut g,
            &[
                ("wd", &[16, 1, 3, 3][..], 1),
                ("bd", &[16], 2),
                ("wd2", &[16, 1, 3, 3], 3),
                ("wp", &[8, 16, 1, 1], 4),
                ("bp", &[8], 5),
                ("wl", &[16, 8, 1, 1], 6),
            ],
        );
        g
    }

    fn avx2() -> bool {
        crate::kernels::sgemm::Kernel::detect() == crate::kernels::sgemm::Kernel::Avx2
    }

    fn avx512() -> bool {
        crate::kernels::sgemm::Kernel::detect() == crate::kernels::sgemm::Kernel::Avx512
    }

    /// The nodes the plan asks to write their output blocked.
    fn held(g: &Graph) -> Vec<&str> {
        let p = crate::exec::prepare::Prepared::new(g);
        (0..g.nodes.len())
            .filter(|&i| p.blocked[i])
            .map(|i| g.nodes[i].name.as_str())
            .collect()
    }

    /// Adds constants of seeded values (scale 0.5) to `g`: (name, shape, seed) each.
    fn add_values(g: &mut Graph, table: &[(&str, &[usize], u32)]) {
        for &(name, shape, seed) in table {
            g.constants.insert(name.into(), values(shape, seed, 0.5));
        }
    }

    /// Runs `g` fused (values held blocked as planned) and unfused (planes only) on input
    /// `x` of `shape`: the same output bits, of shape `y_shape`, not all zero.
    fn fused_gives_the_unfused_bits(g: &Graph, shape: &[usize], seed: u32, y_shape: &[usize]) {
        let runner = Runner::new(g).unwrap();
        let inputs = HashMap::from([("x".to_string(), values(shape, seed, 1.0))]);
        let fused = runner.run(inputs.clone()).unwrap();
        let unfused = runner.run_observed(inputs, |_, _| Ok(())).unwrap();
        let Tensor::F32(y) = &fused[0].1 else {
            panic!("f32 output")
        };
        assert_eq!(y.shape(), y_shape);
        assert!(y.iter().any(|v| *v > 0.0));
        assert_eq!(fused, unfused);
    }

    #[test]
    fn holds_the_chain_between_native_readers() {
        let g = graph();
        let held = held(&g);
        // On AVX-512 `project` (16 -> 8 channels) runs on the AVX2 chunk
        // (`conv_lanes::narrow_pays`), so the same values are held.
        match avx2() || avx512() {
            true => assert_eq!(held, ["dw", "dw2", "add"]),
            false => assert!(held.is_empty(), "{held:?}"),
        }
    }

    #[test]
    fn fused_blocked_run_gives_the_unfused_bits() {
        fused_gives_the_unfused_bits(&graph(), &[1, 16, 9, 11], 7, &[1, 16, 9, 11]);
    }

    /// A residual chain whose last Add is the graph output (RegNet's and MobileNet's
    /// stages end in a reader of planes): a = relu(dw(x)), s = a + 1x1(a), y = s + 1x1(s).
    /// Every value up to the last Add's inputs is held: that Add runs on blocked values
    /// whether its output is held or not (the output is converted for its reader).
    #[test]
    fn holds_a_residual_chain_up_to_its_last_add() {
        let mut g = Graph {
            name: "residual".into(),
            opset: 17,
            inputs: vec![decl("x", &[1, 16, 9, 11])],
            outputs: vec![decl("y", &[1, 16, 9, 11])],
            nodes: vec![
                node("dw", conv(16, 1), &["x", "wd", "bd"], "d"),
                node("relu", Op::Unary(UnaryOp::Relu), &["d"], "a"),
                node("c1", conv(1, 0), &["a", "w1", "b1"], "c"),
                node("add1", Op::Binary(BinaryOp::Add), &["a", "c"], "s"),
                node("c2", conv(1, 0), &["s", "w2", ""], "e"),
                node("add2", Op::Binary(BinaryOp::Add), &["s", "e"], "y"),
            ],
            ..Default::default()
        };
        add_values(
            &mut g,
            &[
                ("wd", &[16, 1, 3, 3][..], 21),
                ("bd", &[16], 22),
                ("w1", &[16, 16, 1, 1], 23),
                ("b1", &[16], 24),
                ("w2", &[16, 16, 1, 1], 25),
            ],
        );
        let held = held(&g);
        // On AVX-512 alike: 16 channels, one wide vector of `conv_lanes`.
        match avx2() || avx512() {
            true => assert_eq!(held, ["dw", "c1", "add1", "c2"]),
            false => assert!(held.is_empty(), "{held:?}"),
        }
        fused_gives_the_unfused_bits(&g, &[1, 16, 9, 11], 26, &[1, 16, 9, 11]);
    }

    /// A RegNet-like stage start: a 1x1 projection of the stage input in planes (the sgemm
    /// writes planes), a grouped 3x3 conv of it (held), a 1x1 conv, their residual Add, a
    /// second block: p = 1x1(x), a = relu(grouped(x)), s = 1x1(a) + p, y = s + 1x1(s). The
    /// first Add is held with one held input: the Runner converts `p`, and everything
    /// after it stays blocked.
    #[test]
    fn holds_an_add_of_a_held_value_and_one_in_planes() {
        let mut g = Graph {
            name: "stage".into(),
            opset: 17,
            inputs: vec![decl("x", &[1, 16, 9, 11])],
            outputs: vec![decl("y", &[1, 16, 9, 11])],
            nodes: vec![
                node("proj", conv(1, 0), &["x", "wp", ""], "p"),
                node("g", conv(2, 1), &["x", "wg", "bg"], "d"),
                node("relu", Op::Unary(UnaryOp::Relu), &["d"], "a"),
                node("c", conv(1, 0), &["a", "w1", "b1"], "c"),
                node("add1", Op::Binary(BinaryOp::Add), &["c", "p"], "s"),
                node("c2", conv(1, 0), &["s", "w2", ""], "e"),
                node("add2", Op::Binary(BinaryOp::Add), &["s", "e"], "y"),
            ],
            ..Default::default()
        };
        add_values(
            &mut g,
            &[
                ("wp", &[16, 16, 1, 1][..], 31),
                ("wg", &[16, 8, 3, 3], 32),
                ("bg", &[16], 33),
                ("w1", &[16, 16, 1, 1], 34),
                ("b1", &[16], 35),
                ("w2", &[16, 16, 1, 1], 36),
            ],
        );
        let held_nodes: Vec<String> = held(&g).into_iter().map(String::from).collect();
        match avx2() {
            true => assert_eq!(held_nodes, ["g", "c", "add1", "c2"]),
            false => assert!(held_nodes.is_empty(), "{held_nodes:?}"),
        }
        fused_gives_the_unfused_bits(&g, &[1, 16, 9, 11], 37, &[1, 16, 9, 11]);
        // The planes input second or first alike.
        g.nodes[4].inputs.swap(0, 1);
        assert_eq!(held(&g), held_nodes);
        fused_gives_the_unfused_bits(&g, &[1, 16, 9, 11], 38, &[1, 16, 9, 11]);
    }

    /// A SqueezeNet-like fire module after a MaxPool: pool -> squeeze (1x1) -> expand 1x1
    /// and 3x3 -> Concat -> last 1x1 (the graph output): everything but `last` is held.
    fn fire() -> Graph {
        let relu = Op::Unary(UnaryOp::Relu);
        let pool = Op::MaxPool(crate::ir::op::PoolAttrs {
            window: Window {
                kernel_shape: Some(vec![3, 3]),
                strides: vec![2, 2],
                dilations: vec![],
                padding: Padding::Explicit(vec![0; 4]),
            },
            ceil_mode: true,
            count_include_pad: false,
            column_major_indices: false,
        });
        let mut g = Graph {
            name: "fire".into(),
            opset: 17,
            inputs: vec![decl("x", &[1, 16, 12, 12])],
            outputs: vec![decl("y", &[1, 8, 6, 6])],
            nodes: vec![
                node("pool", pool, &["x"], "p"),
                node("squeeze", conv(1, 0), &["p", "ws", "bs"], "s0"),
                node("relu_s", relu.clone(), &["s0"], "s"),
                node("e1", conv(1, 0), &["s", "w1", "b1"], "a0"),
                node("relu_1", relu.clone(), &["a0"], "a"),
                node("e3", conv(1, 1), &["s", "w3", "b3"], "b0"),
                node("relu_3", relu, &["b0"], "b"),
                node("cat", Op::Concat { axis: 1 }, &["a", "b"], "c"),
                node("last", conv(1, 0), &["c", "wl", ""], "y"),
            ],
            ..Default::default()
        };
        add_values(
            &mut g,
            &[
                ("ws", &[8, 16, 1, 1][..], 11),
                ("bs", &[8], 12),
                ("w1", &[16, 8, 1, 1], 13),
                ("b1", &[16], 14),
                ("w3", &[16, 8, 3, 3], 15),
                ("b3", &[16], 16),
                ("wl", &[8, 32, 1, 1], 17),
            ],
        );
        g
    }

    #[test]
    fn holds_a_fire_module_from_its_max_pool_to_its_concat() {
        let g = fire();
        let held = held(&g);
        // On AVX-512 the squeeze (16 -> 8) runs on the AVX2 chunk, the expansions (8 -> 16)
        // on the wide one (`conv_lanes::narrow_pays`, `MAX_WIDENING_INPUTS`).
        match avx2() || avx512() {
            true => assert_eq!(held, ["pool", "squeeze", "e1", "e3", "cat"]),
            false => assert!(held.is_empty(), "{held:?}"),
        }
        fused_gives_the_unfused_bits(&g, &[1, 16, 12, 12], 18, &[1, 8, 6, 6]);
    }

    /// An export that keeps its BatchNorms: depthwise 3x3 -> BatchNorm -> Clip(0, 6) (fused
    /// into the BatchNorm's pass) -> 1x1 16 -> 8 (the graph output). The depthwise conv
    /// writes blocked, the BatchNorm runs on that value as it is and writes it blocked for
    /// the projection.
    #[test]
    fn holds_a_batch_norm_between_convs() {
        let clip = Op::Clip {
            min: Some(0.0),
            max: Some(6.0),
        };
        let mut g = Graph {
            name: "bn".into(),
            opset: 17,
            inputs: vec![decl("x", &[1, 16, 9, 11])],
            outputs: vec![decl("y", &[1, 8, 9, 11])],
            nodes: vec![
                node("dw", conv(16, 1), &["x", "wd", ""], "d"),
                node(
                    "bn",
                    Op::BatchNorm { epsilon: 1e-5 },
                    &["d", "s", "b", "m", "v"],
                    "n",
                ),
                node("clip", clip, &["n"], "c"),
                node("project", conv(1, 0), &["c", "wp", "bp"], "y"),
            ],
            ..Default::default()
        };
        add_values(
            &mut g,
            &[
                ("wd", &[16, 1, 3, 3][..], 31),
                ("s", &[16], 32),
                ("b", &[16], 33),
                ("m", &[16], 34),
                ("wp", &[8, 16, 1, 1], 35),
                ("bp", &[8], 36),
            ],
        );
        let Tensor::F32(v) = values(&[16], 37, 1.0) else {
            unreachable!("f32")
        };
        g.constants
            .insert("v".into(), Tensor::F32(v.mapv(|v| v.abs() + 0.1)));
        let held = held(&g);
        match avx2() || avx512() {
            true => assert_eq!(held, ["dw", "bn"]),
            false => assert!(held.is_empty(), "{held:?}"),
        }
        fused_gives_the_unfused_bits(&g, &[1, 16, 9, 11], 38, &[1, 8, 9, 11]);
    }

    /// Squeeze-and-excitation: x * sigmoid(fc(avgpool(x))) -> 1x1 16 -> 8 (the graph
    /// output). The Mul writes blocked for the projection, which reads it natively.
    #[test]
    fn holds_a_per_channel_scale_read_by_a_projection() {
        let x = "x".to_string();
        let mut g = Graph {
            name: "se".into(),
            opset: 17,
            inputs: vec![decl("x", &[1, 16, 6, 6])],
            outputs: vec![decl("y", &[1, 8, 6, 6])],
            nodes: vec![
                node("pool", Op::GlobalAveragePool, &[&x], "p"),
                node("fc", conv(1, 0), &["p", "wf", "bf"], "f"),
                node("gate", Op::Unary(UnaryOp::Sigmoid), &["f"], "s"),
                node("mul", Op::Binary(BinaryOp::Mul), &[&x, "s"], "m"),
                node("project", conv(1, 0), &["m", "wp", ""], "y"),
            ],
            ..Default::default()
        };
        add_values(
            &mut g,
            &[
                ("wf", &[16, 16, 1, 1][..], 21),
                ("bf", &[16], 22),
                ("wp", &[8, 16, 1, 1], 23),
            ],
        );
        let held = held(&g);
        match avx2() || avx512() {
            true => assert_eq!(held, ["mul"]),
            false => assert!(held.is_empty(), "{held:?}"),
        }
        fused_gives_the_unfused_bits(&g, &[1, 16, 6, 6], 24, &[1, 8, 6, 6]);
    }

    /// EfficientNet's block: d = dw(x); a = d * sigmoid(d) (SiLU); squeeze-and-excitation
    /// of a (`pool`, fc, sigmoid, scale); 1x1 16 -> 8 of the scaled value, then SiLU (the
    /// graph output). `pool` reads `a` and writes `p`, with the constants `extra`.
    fn mbconv(pool: Node, extra: &[(&str, Tensor)]) -> Graph {
        let sigmoid = Op::Unary(UnaryOp::Sigmoid);
        let mul = Op::Binary(BinaryOp::Mul);
        let mut g = Graph {
            name: "mbconv".into(),
            opset: 18,
            inputs: vec![decl("x", &[1, 16, 7, 9])],
            outputs: vec![decl("y", &[1, 8, 7, 9])],
            nodes: vec![
                node("dw", conv(16, 1), &["x", "wd", "bd"], "d"),
                node("sig", sigmoid.clone(), &["d"], "sd"),
                node("silu", mul.clone(), &["d", "sd"], "a"),
                pool,
                node("fc", conv(1, 0), &["p", "wf", "bf"], "f"),
                node("gate", sigmoid.clone(), &["f"], "s"),
                node("scale", mul.clone(), &["s", "a"], "m"),
                node("project", conv(1, 0), &["m", "wp", ""], "q"),
                node("sig2", sigmoid, &["q"], "sq"),
                node("silu2", mul, &["sq", "q"], "y"),
            ],
            ..Default::default()
        };
        add_values(
            &mut g,
            &[
                ("wd", &[16, 1, 3, 3][..], 31),
                ("bd", &[16], 32),
                ("wf", &[16, 16, 1, 1], 33),
                ("bf", &[16], 34),
                ("wp", &[8, 16, 1, 1], 35),
            ],
        );
        for (name, t) in extra {
            g.constants.insert(name.to_string(), t.clone());
        }
        g
    }

    /// [`mbconv`] with a GlobalAveragePool: the convs, the first SiLU and the scale write
    /// blocked: the SiLUs and the pool read a blocked value as it is, the scale multiplies
    /// it blocked; the last SiLU's output, the graph's, is converted once.
    #[test]
    fn holds_silu_and_squeeze_excitation_between_convs() {
        let g = mbconv(node("pool", Op::GlobalAveragePool, &["a"], "p"), &[]);
        let held = held(&g);
        // On AVX-512 too: `project` (16 -> 8 channels) runs on the wide chunk's half vector.
        match avx2() || avx512() {
            true => assert_eq!(held, ["dw", "silu", "scale", "project"]),
            false => assert!(held.is_empty(), "{held:?}"),
        }
        fused_gives_the_unfused_bits(&g, &[1, 16, 7, 9], 36, &[1, 8, 7, 9]);
    }

    /// [`mbconv`] with the pool a ReduceMean over the spatial axes keeping them (the dynamo
    /// exporter's), its axes an input or an attribute: held alike. Over other axes, or
    /// dropping them, it reads planes, and the SiLU before it is not held.
    #[test]
    fn reads_a_reduce_mean_over_the_planes_as_a_pool() {
        use crate::ir::op::ReduceAttrs;
        let mean = |axes: Option<Vec<i64>>, keepdims: bool| {
            Op::ReduceMean(ReduceAttrs {
                axes,
                keepdims,
                noop_with_empty_axes: false,
            })
        };
        let axes = |v: Vec<i64>| Tensor::from_vec(&[v.len()], v).unwrap();
        let as_input = mbconv(
            node("pool", mean(None, true), &["a", "axes"], "p"),
            &[("axes", axes(vec![2, 3]))],
        );
        let as_attr = mbconv(
            node("pool", mean(Some(vec![-1, -2]), true), &["a"], "p"),
            &[],
        );
        for g in [&as_input, &as_attr] {
            match avx2() || avx512() {
                true => assert_eq!(held(g), ["dw", "silu", "scale", "project"]),
                false => assert!(held(g).is_empty()),
            }
            fused_gives_the_unfused_bits(g, &[1, 16, 7, 9], 37, &[1, 8, 7, 9]);
        }
        let channels_too = mbconv(
            node("pool", mean(None, true), &["a", "axes"], "p"),
            &[("axes", axes(vec![1, 2, 3]))],
        );
        assert!(!held(&channels_too).contains(&"silu"));
        assert!(!super::spatial_mean(&channels_too, &channels_too.nodes[3]));
        let dropped = mean(Some(vec![2, 3]), false);
        let g = mbconv(node("pool", dropped, &["a"], "p"), &[]);
        assert!(!super::spatial_mean(&g, &g.nodes[3]));
    }
}
