//! State built once per plan from the graph's constants, so runs skip work that does not
//! depend on the inputs: Conv weights packed for the sgemm (on first use), and, for plain
//! runs only, a Relu or constant Clip fused into the Conv, Add or BatchNorm that feeds it,
//! Sigmoid + Mul(x, Sigmoid(x)) run as one SiLU pass, and an inference BatchNorm (with its
//! Relu or Clip) read only by a 1x1 Conv applied by that Conv to its input
//! (`input_affine`), and an Add of a Conv's output and a value of its shape run by that
//! Conv (`residual`, `residual.rs`).
//!
//! Fusion changes no bits (the Conv's epilogue clamps exactly as the Relu/Clip kernels do,
//! after the bias), but it does skip the Conv's own output tensor, so runs that look at
//! every intermediate value (`run_observed`, used by verify/compare/divergence) run
//! unfused: the `fuse` flag of the interpreter loop. Profiled runs (`run_profiled`) are
//! fused, to time what plain runs do.

use super::concat_into::ConcatInto;
use super::residual::ResidualAdd;
use crate::ir::analyze::{analyze, DimBindings};
use crate::ir::{BinaryOp, Graph, Op, UnaryOp};
use crate::kernels::conv;
use crate::kernels::pointwise::Fused;
use crate::kernels::sgemm::Activation;
use crate::tensor::Tensor;
use std::collections::HashMap;

pub struct Prepared {
    /// Per node: the packed weights of a Conv whose weights are a constant.
    pub conv: Vec<Option<conv::Prepared>>,
    /// Per node, fused runs only: the activation this Conv applies to its output.
    pub fused_act: Vec<Option<Activation>>,
    /// Per node, fused runs only: this activation node was fused into the Conv before it;
    /// its output is its first input, moved.
    pub forward: Vec<bool>,
    /// Per node, fused runs only: the pass an Add/BatchNorm (a Relu or Clip after it) or a
    /// Mul (SiLU) applies as well.
    pub point: Vec<Option<Fused>>,
    /// Per node, fused runs only: a Sigmoid whose one reader, a Mul by its own input,
    /// computes SiLU; it runs nothing and its output stays empty.
    pub skip: Vec<bool>,
    /// Per node, fused runs only: a Conv or Add asked to write its output blocked
    /// (`exec/blocked.rs`).
    pub blocked: Vec<bool>,
    /// Per node, fused runs only: for an ungrouped Conv with 1x1 constant weights, the
    /// inference BatchNorm (with the Relu or Clip fused into it, `point`) whose output only
    /// this Conv reads, as its X. The Conv applies it to the BatchNorm's own X as it packs
    /// it (`conv::InputAffine`); the BatchNorm and its activation node are skipped, and the
    /// plan keeps that X alive until the Conv.
    pub input_affine: Vec<Option<usize>>,
    /// Per node, fused runs only: for a Conv, the Add it runs (`residual.rs`): the Conv
    /// adds that Add's other input to its sums and applies the Add's clamp.
    pub residual: Vec<Option<ResidualAdd>>,
    /// Per node, fused runs only: for an Add run by a Conv, the input position of the
    /// Conv's output, which moves on as the Add's output.
    pub added: Vec<Option<usize>>,
    /// Fused runs on the planned input shapes only: the Convs that write their output into
    /// the buffer of the Concat that reads it (`concat_into.rs`).
    pub concat_into: ConcatInto,
}

impl Prepared {
    pub fn new(graph: &Graph) -> Prepared {
        let n = graph.nodes.len();
        let conv = graph
            .nodes
            .iter()
            .map(|node| match &node.op {
                Op::Conv(attrs) => node
                    .inputs
                    .get(1)
                    .and_then(|w| graph.constants.get(w))
                    .and_then(|w| conv::prepare(attrs, w)),
                _ => None,
            })
            .collect();
        let mut fused_act = vec![None; n];
        let mut forward = vec![false; n];
        // Readers of each value (a node reading it twice counts twice).
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (j, node) in graph.nodes.iter().enumerate() {
            for i in node.inputs.iter().filter(|i| !i.is_empty()) {
                readers.entry(i.as_str()).or_default().push(j);
            }
        }
        for (i, node) in graph.nodes.iter().enumerate() {
            let (Op::Conv(_), [out]) = (&node.op, node.outputs.as_slice()) else {
                continue;
            };
            if out.is_empty() || graph.outputs.iter().any(|o| &o.name == out) {
                continue;
            }
            let Some([j]) = readers.get(out.as_str()).map(Vec::as_slice) else {
                continue;
            };
            let next = &graph.nodes[*j];
            if next.inputs.first() != Some(out) || next.outputs.len() != 1 {
                continue;
            }
            if let Some(act) = activation(graph, &next.op, &next.inputs) {
                fused_act[i] = Some(act);
                forward[*j] = true;
            }
        }
        let mut point = vec![None; n];
        let mut skip = vec![false; n];
        for (i, node) in graph.nodes.iter().enumerate() {
            let Some(out) = single_use_output(graph, &readers, node) else {
                continue;
            };
            let j = readers[out.as_str()][0];
            let next = &graph.nodes[j];
            if next.outputs.len() != 1 {
                continue;
            }
            match (&node.op, &next.op) {
                (Op::Binary(BinaryOp::Add) | Op::BatchNorm { .. }, _)
                    if next.inputs.first() == Some(out) =>
                {
                    if let Some(act) = activation(graph, &next.op, &next.inputs) {
                        point[i] = Some(Fused::Clamp(act));
                        forward[j] = true;
                    }
                }
                (Op::Unary(UnaryOp::Sigmoid), Op::Binary(BinaryOp::Mul)) => {
                    let x = &node.inputs[0];
                    let x_at = match next.inputs.as_slice() {
                        [a, b] if a == x && b == out => 0,
                        [a, b] if a == out && b == x => 1,
                        _ => continue,
                    };
                    point[j] = Some(Fused::Silu { x: x_at });
                    skip[i] = true;
                }
                _ => {}
            }
        }
        // Shapes as the graph declares them (symbolic dims as 1): they guide choices only.
        let facts = analyze(graph, &DimBindings::default()).ok();
        let blocked = super::blocked::plan(graph, facts.as_ref(), &forward, &point, &skip);
        let mut input_affine = vec![None; n];
        for i in 0..n {
            let Some((j, k)) = affine_reader(graph, &readers, &forward, i) else {
                continue;
            };
            if blocked[i] || blocked[k] {
                continue;
            }
            input_affine[k] = Some(i);
            skip[i] = true;
            if let Some(j) = j {
                forward[j] = false;
                skip[j] = true;
            }
        }
        let mut prepared = Prepared {
            conv,
            fused_act,
            forward,
            point,
            skip,
            blocked,
            input_affine,
            residual: vec![None; n],
            added: vec![None; n],
            concat_into: ConcatInto::none(n),
        };
        for r in super::residual::plan(graph, facts.as_ref(), &readers, &prepared) {
            prepared.residual[r.conv] = Some(r);
            prepared.added[r.add] = Some(r.k);
        }
        prepared.concat_into = super::concat_into::plan(graph, facts.as_ref(), &readers, &prepared);
        prepared
    }
}

/// For an inference BatchNorm `i` with constant parameters: its activation node (fused
/// into it, `forward`), if any, and the Conv that alone reads the result, as its X, when
/// that Conv is ungrouped with constant 1x1 weights (`Prepared::input_affine`).
fn affine_reader(
    graph: &Graph,
    readers: &HashMap<&str, Vec<usize>>,
    forward: &[bool],
    i: usize,
) -> Option<(Option<usize>, usize)> {
    let node = &graph.nodes[i];
    let constant = |k: usize| {
        node.inputs
            .get(k)
            .is_some_and(|v| graph.constants.contains_key(v))
    };
    if !matches!(node.op, Op::BatchNorm { .. }) || node.inputs.len() != 5 || !(1..5).all(constant) {
        return None;
    }
    let mut out = single_use_output(graph, readers, node)?;
    let mut act = None;
    let mut k = readers[out.as_str()][0];
    if forward[k] {
        act = Some(k);
        out = single_use_output(graph, readers, &graph.nodes[k])?;
        k = readers[out.as_str()][0];
    }
    let conv = &graph.nodes[k];
    let Op::Conv(attrs) = &conv.op else {
        return None;
    };
    let w = conv.inputs.get(1).and_then(|w| graph.constants.get(w))?;
    let one_by_one = w.rank() >= 3 && w.shape()[2..].iter().all(|&d| d == 1);
    (attrs.group == 1 && one_by_one && conv.inputs.first() == Some(out)).then_some((act, k))
}

/// The node writing each value of `graph` (its index in `graph.nodes`).
pub(super) fn producers(graph: &Graph) -> HashMap<&str, usize> {
    graph
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, node)| node.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect()
}

/// The one output of `node`, when a single node reads it (once) and it is not a graph output.
fn single_use_output<'a>(
    graph: &Graph,
    readers: &HashMap<&str, Vec<usize>>,
    node: &'a crate::ir::Node,
) -> Option<&'a String> {
    let [out] = node.outputs.as_slice() else {
        return None;
    };
    if out.is_empty() || graph.outputs.iter().any(|o| &o.name == out) {
        return None;
    }
    matches!(readers.get(out.as_str()).map(Vec::len), Some(1)).then_some(out)
}

/// The clamp a Relu or Clip node applies, when its bounds are known before running (Clip's
/// attributes, or its bound inputs when those are f32 scalar constants, read as the Clip
/// kernel reads them).
fn activation(graph: &Graph, op: &Op, inputs: &[String]) -> Option<Activation> {
    match op {
        Op::Unary(UnaryOp::Relu) => Some(Activation::RELU),
        Op::Clip { min, max } => {
            let bound = |i: usize, attr: Option<f32>| -> Option<Option<f32>> {
                match inputs.get(i).filter(|s| !s.is_empty()) {
                    None => Some(attr),
                    Some(name) => match graph.constants.get(name)? {
                        Tensor::F32(t) if t.len() == 1 => Some(t.iter().next().copied()),
                        _ => None,
                    },
                }
            };
            Some(Activation {
                lo: bound(1, *min)?,
                hi: bound(2, *max)?,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_graph::{decl, node};
    use crate::exec::Runner;
    use crate::ir::op::{ConvAttrs, Padding, Window};

    fn values(shape: &[usize], seed: u32) -> Tensor {
        crate::exec::test_graph::values(shape, seed, 1.0)
    }

    /// x -> c1 -> relu (fused) -> c2 -> clip(const inputs) (fused) -> c3 -> relu2 (not: c3
    /// is also read by add) ; add(c3, r2) -> c4 -> y and c4 is also a graph output (c4's
    /// Relu is not fused).
    fn graph() -> Graph {
        let conv = Op::Conv(ConvAttrs {
            window: Window {
                kernel_shape: None,
                strides: vec![],
                dilations: vec![],
                padding: Padding::SameUpper,
            },
            group: 1,
        });
        let relu = Op::Unary(UnaryOp::Relu);
        let mut g = Graph {
            name: "fuse".into(),
            opset: 17,
            inputs: vec![decl("x", &[1, 4, 6, 6])],
            outputs: vec![decl("y", &[1, 4, 6, 6]), decl("c4", &[1, 4, 6, 6])],
            nodes: vec![
                node("conv1", conv.clone(), &["x", "w", "b"], "c1"),
                node("relu1", relu.clone(), &["c1"], "r1"),
                node("conv2", conv.clone(), &["r1", "w", ""], "c2"),
                node(
                    "clip",
                    Op::Clip {
                        min: None,
                        max: None,
                    },
                    &["c2", "lo", "hi"],
                    "k2",
                ),
                node("conv3", conv.clone(), &["k2", "w", "b"], "c3"),
                node("relu2", relu.clone(), &["c3"], "r2"),
                node(
                    "add",
                    Op::Binary(crate::ir::BinaryOp::Add),
                    &["c3", "r2"],
                    "a",
                ),
                node("conv4", conv, &["a", "w", "b"], "c4"),
                node("relu4", relu, &["c4"], "y"),
            ],
            ..Default::default()
        };
        g.constants.insert("w".into(), values(&[4, 4, 3, 3], 1));
        g.constants.insert("b".into(), values(&[4], 2));
        g.constants
            .insert("lo".into(), Tensor::from_vec(&[], vec![-0.2f32]).unwrap());
        g.constants
            .insert("hi".into(), Tensor::from_vec(&[], vec![0.3f32]).unwrap());
        g
    }

    #[test]
    fn fuses_single_use_conv_activations_only() {
        let g = graph();
        let p = Prepared::new(&g);
        let packed: Vec<usize> = (0..9).filter(|&i| p.conv[i].is_some()).collect();
        assert_eq!(packed, [0, 2, 4, 7]);
        let clip = Activation {
            lo: Some(-0.2),
            hi: Some(0.3),
        };
        let fused: Vec<_> = p
            .fused_act
            .iter()
            .map(|a| a.map(|a| (a.lo, a.hi)))
            .collect();
        let mut want = vec![None; 9];
        want[0] = Some((Some(0.0), None));
        want[2] = Some((clip.lo, clip.hi));
        assert_eq!(fused, want);
        let fwd: Vec<usize> = (0..9).filter(|&i| p.forward[i]).collect();
        assert_eq!(fwd, [1, 3]);
    }

    /// a = 1x1 conv(x); n = BatchNorm(a); r = relu(n); b = 1x1 conv(r); y = concat(a, b),
    /// and a second BatchNorm of `a` read twice (by a Relu and the output Concat), which
    /// stays a node of its own.
    fn affine_graph() -> Graph {
        let conv = Op::Conv(ConvAttrs {
            window: Window {
                kernel_shape: None,
                strides: vec![],
                dilations: vec![],
                padding: Padding::Explicit(vec![0; 4]),
            },
            group: 1,
        });
        let bn = Op::BatchNorm { epsilon: 1e-5 };
        let relu = Op::Unary(UnaryOp::Relu);
        let mut g = Graph {
            name: "affine".into(),
            opset: 17,
            inputs: vec![decl("x", &[1, 40, 6, 7])],
            outputs: vec![decl("y", &[1, 136, 6, 7])],
            nodes: vec![
                node("conv_a", conv.clone(), &["x", "wa", ""], "a"),
                node("norm", bn.clone(), &["a", "s", "b", "m", "v"], "n"),
                node("relu", relu.clone(), &["n"], "r"),
                node("conv_b", conv, &["r", "wb", "bb"], "c"),
                node("norm2", bn, &["a", "s", "b", "m", "v"], "n2"),
                node("relu2", relu, &["n2"], "r2"),
                node("cat", Op::Concat { axis: 1 }, &["a", "c", "n2"], "y0"),
                node("cat2", Op::Concat { axis: 1 }, &["y0", "r2"], "y"),
            ],
            ..Default::default()
        };
        for (name, shape, seed) in [
            ("wa", &[40, 40, 1, 1][..], 11),
            ("wb", &[16, 40, 1, 1], 12),
            ("bb", &[16], 13),
            ("s", &[40], 14),
            ("b", &[40], 15),
            ("m", &[40], 16),
        ] {
            g.constants.insert(name.into(), values(shape, seed));
        }
        let var = crate::exec::test_graph::values(&[40], 17, 0.5)
            .as_f32()
            .unwrap()
            .mapv(|v| v.abs() + 0.5);
        g.constants.insert("v".into(), Tensor::F32(var));
        g
    }

    #[test]
    fn fuses_a_batch_norm_read_only_by_a_1x1_conv_into_it() {
        let g = affine_graph();
        let p = Prepared::new(&g);
        let fused: Vec<(usize, usize)> = (0..g.nodes.len())
            .filter_map(|k| p.input_affine[k].map(|i| (k, i)))
            .collect();
        assert_eq!(fused, [(3, 1)]);
        let skipped: Vec<usize> = (0..g.nodes.len()).filter(|&i| p.skip[i]).collect();
        assert_eq!(skipped, [1, 2]);
        let fwd: Vec<usize> = (0..g.nodes.len()).filter(|&i| p.forward[i]).collect();
        assert!(fwd.is_empty(), "{fwd:?}");
        // The fused run (the BatchNorm and Relu applied as conv_b packs `a`) gives the bits
        // of the unfused one, which runs every node on its own.
        let runner = Runner::new(&g).unwrap();
        let x = values(&[1, 40, 6, 7], 18);
        let inputs = std::collections::HashMap::from([("x".to_string(), x)]);
        let fused = runner.run(inputs.clone()).unwrap();
        let unfused = runner.run_observed(inputs, |_, _| Ok(())).unwrap();
        assert_eq!(fused, unfused);
        let Tensor::F32(y) = &fused[0].1 else {
            panic!("f32 output")
        };
        assert_eq!(y.shape(), [1, 136, 6, 7]);
        // conv_b's output is channels 40..56: not all zero.
        assert!(y.iter().skip(40 * 42).take(16 * 42).any(|v| *v != 0.0));
    }

    /// The fused plain run gives the same bits as the unfused observed run, whose observed
    /// values include the Conv outputs the fused run skips.
    #[test]
    fn fused_run_matches_unfused_run() {
        let g = graph();
        let runner = Runner::new(&g).unwrap();
        let inputs = std::collections::HashMap::from([("x".to_string(), values(&[1, 4, 6, 6], 3))]);
        let fused = runner.run(inputs.clone()).unwrap();
        let mut seen = Vec::new();
        let unfused = runner
            .run_observed(inputs, |name, _| {
                seen.push(name.to_string());
                Ok(())
            })
            .unwrap();
        assert_eq!(fused, unfused);
        assert_eq!(seen, ["c1", "r1", "c2", "k2", "c3", "r2", "a", "c4", "y"]);
        // The Clip did clamp: every value of the graph's Relu input chain is within bounds.
        let Tensor::F32(y) = &fused[0].1 else {
            panic!("f32 output")
        };
        assert!(y.iter().all(|v| *v >= 0.0));
    }
}
