//! The in-place plan and the elementwise fusions on a small graph: a value that is a graph
//! input, a graph output or read twice is never overwritten (nor taken by a view op such as
//! Reshape), and fused/in-place runs give
//! the same bits as every node run on its own by `kernels::eval`.

use super::*;
use crate::ir::{BinaryOp, Node, Op, UnaryOp};
use crate::kernels::pointwise::Fused;
use crate::kernels::sgemm::Activation;

use super::test_graph::{decl, reference};

/// A node whose one output is named after it.
fn node(name: &str, op: Op, inputs: &[&str]) -> Node {
    super::test_graph::node(name, op, inputs, name)
}

fn values(shape: &[usize], seed: u32) -> Tensor {
    super::test_graph::values(shape, seed, 2.0)
}

const S: [usize; 4] = [1, 4, 5, 5];

/// Each node is named after its output.
fn graph() -> Graph {
    let un = |u| Op::Unary(u);
    let bin = |b| Op::Binary(b);
    let mut g = Graph {
        name: "in_place".into(),
        opset: 17,
        inputs: vec![decl("x", &S)],
        outputs: vec![
            decl("d", &S),
            decl("e", &S),
            decl("k", &S),
            decl("n", &[4, 25]),
        ],
        nodes: vec![
            // 0: x is a graph input (read again by d): not overwritten.
            node("a", un(UnaryOp::Sigmoid), &["x"]),
            // 1: a dies here: in place.
            node("b", un(UnaryOp::Relu), &["a"]),
            // 2: b read twice by this node: not in place.
            node("c", bin(BinaryOp::Add), &["b", "b"]),
            // 3: c dies here (x does not): in place on c.
            node("d", bin(BinaryOp::Mul), &["c", "x"]),
            // 4: d is a graph output: not overwritten.
            node("e", un(UnaryOp::Relu), &["d"]),
            // 5, 6: SiLU of e, a graph output: fused, out of place.
            node("f", un(UnaryOp::Sigmoid), &["e"]),
            node("g", bin(BinaryOp::Mul), &["f", "e"]),
            // 7, 8: BatchNorm + Relu, in place on g.
            node(
                "h",
                Op::BatchNorm { epsilon: 1e-5 },
                &["g", "s", "bb", "m", "v"],
            ),
            node("i", un(UnaryOp::Relu), &["h"]),
            // 9, 10: Add of a per-channel constant + Clip (both bounds bite), in place on i.
            node("j", bin(BinaryOp::Add), &["cc", "i"]),
            node(
                "k",
                Op::Clip {
                    min: Some(-0.25),
                    max: Some(0.5),
                },
                &["j"],
            ),
            // 11: a view of x, a graph input: copied.
            node("l", Op::Flatten { axis: 1 }, &["x"]),
            // 12: l dies here: keeps its buffer under the new shape.
            node("n", Op::Reshape { allowzero: false }, &["l", "shp"]),
        ],
        ..Default::default()
    };
    for (name, seed) in [("s", 1), ("bb", 2), ("m", 3), ("cc", 5)] {
        g.constants.insert(name.into(), values(&[4], seed));
    }
    g.constants.insert(
        "v".into(),
        Tensor::from_vec(&[4], vec![0.5f32, 1.0, 2.0, 3.0]).unwrap(),
    );
    g.constants.insert(
        "shp".into(),
        Tensor::from_vec(&[2], vec![4i64, 25]).unwrap(),
    );
    let cc = g.constants.remove("cc").unwrap();
    g.constants
        .insert("cc".into(), cc.reshape(&[1, 4, 1, 1]).unwrap());
    g
}

#[test]
fn plans_in_place_only_for_dying_single_read_node_outputs() {
    let g = graph();
    let plan = Plan::new(&g).unwrap();
    let want: Vec<Vec<usize>> = vec![
        vec![],  // a: x is a graph input
        vec![0], // b
        vec![],  // c: b read twice
        vec![0], // d: c, not x
        vec![],  // e: d is a graph output
        vec![],  // f: e is a graph output
        vec![0], // g: f dies here (e does not)
        vec![0], // h
        vec![0], // i
        vec![1], // j: i, not the constant
        vec![],  // k: Clip has no in-place form (fused runs apply it in j's pass)
        vec![],  // l: x is a graph input
        vec![0], // n: l, not the shape
    ];
    assert_eq!(plan.in_place, want);
    let p = &plan.prepared;
    let point: Vec<(usize, Fused)> = (0..g.nodes.len())
        .filter_map(|i| p.point[i].map(|f| (i, f)))
        .collect();
    assert_eq!(
        point,
        [
            (6, Fused::Silu { x: 1 }),
            (7, Fused::Clamp(Activation::RELU)),
            (
                9,
                Fused::Clamp(Activation {
                    lo: Some(-0.25),
                    hi: Some(0.5)
                })
            )
        ]
    );
    let skipped: Vec<usize> = (0..g.nodes.len()).filter(|&i| p.skip[i]).collect();
    assert_eq!(skipped, [5]);
    let forwarded: Vec<usize> = (0..g.nodes.len()).filter(|&i| p.forward[i]).collect();
    assert_eq!(forwarded, [8, 10]);
}

#[test]
fn in_place_and_fused_runs_match_the_reference() {
    let g = graph();
    let x = values(&S, 7);
    let want = reference(&g, &x);
    let runner = Runner::new(&g).unwrap();
    let inputs = HashMap::from([("x".to_string(), x)]);
    let expect: Vec<(String, Tensor)> = ["d", "e", "k", "n"]
        .iter()
        .map(|n| (n.to_string(), want[*n].clone()))
        .collect();
    assert_eq!(runner.run(inputs.clone()).unwrap(), expect);
    let mut seen = Vec::new();
    let observed = runner
        .run_observed(inputs, |name, t| {
            // Each value as computed, before any later node could overwrite its buffer.
            assert_eq!(t, &want[name], "{name}");
            seen.push(name.to_string());
            Ok(())
        })
        .unwrap();
    assert_eq!(observed, expect);
    assert_eq!(seen.len(), g.nodes.len());
}

/// The run's outputs are moved out of their slots, not copied, but a value listed twice as
/// a graph output (and a graph input listed as one) comes out whole each time.
#[test]
fn outputs_listed_twice_come_out_whole() {
    let mut g = graph();
    g.outputs = vec![decl("d", &S), decl("x", &S), decl("d", &S), decl("e", &S)];
    let x = values(&S, 11);
    let want = reference(&g, &x);
    let runner = Runner::new(&g).unwrap();
    let got = runner
        .run(HashMap::from([("x".to_string(), x.clone())]))
        .unwrap();
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["d", "x", "d", "e"]);
    for (name, t) in &got {
        assert_eq!(t, &want[name.as_str()], "{name}");
    }
    assert_eq!(got[1].1, x);
}
