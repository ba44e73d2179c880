//! A DenseNet-like chain of Concats, each joining every feature so far: the plan keeps each
//! Concat's output alive until the next one extends it (`Plan::extends`), the BatchNorm +
//! Relu between them runs out of place, and runs give the bits of every node run on its
//! own, on batch 1 (extended) and batch 2 (the plain concat).

use super::*;
use crate::ir::{BinaryOp, Node, Op, UnaryOp};

use super::test_graph::{decl, reference};

fn node(name: &str, op: Op, inputs: &[&str]) -> Node {
    super::test_graph::node(name, op, inputs, name)
}

fn values(shape: &[usize], seed: u32) -> Tensor {
    super::test_graph::values(shape, seed, 2.0)
}

/// BatchNorm of a `c`-channel input, its parameters named `{p}s`, `{p}b`, `{p}m`, `{p}v`.
fn bn(g: &mut Graph, name: &str, input: &str, p: &str, c: usize) -> Node {
    for (k, seed) in [("s", 1), ("b", 2), ("m", 3)] {
        g.constants.insert(format!("{p}{k}"), values(&[c], seed));
    }
    let var = (0..c).map(|i| 0.5 + i as f32 / 4.0).collect();
    g.constants
        .insert(format!("{p}v"), Tensor::from_vec(&[c], var).unwrap());
    let [s, b, m, v] = ["s", "b", "m", "v"].map(|k| format!("{p}{k}"));
    node(
        name,
        Op::BatchNorm { epsilon: 1e-5 },
        &[input, &s, &b, &m, &v],
    )
}

/// Features f1..f3 of 4 channels each on input x; Concats c1 = [x f1], c2 = [x f1 f2],
/// c3 = [x f1 f2 f3] (a graph output), c4 = [x f1 f2 f3 f1].
fn graph(batch: usize) -> Graph {
    let s = [batch, 4, 3, 3];
    let cat = Op::Concat { axis: 1 };
    let mut g = Graph {
        name: "concat_chain".into(),
        opset: 17,
        inputs: vec![decl("x", &s)],
        outputs: vec![
            decl("c3", &[batch, 16, 3, 3]),
            decl("r2", &[batch, 12, 3, 3]),
            decl("c4", &[batch, 20, 3, 3]),
        ],
        ..Default::default()
    };
    let bn1 = bn(&mut g, "h1", "c1", "p", 8);
    let bn2 = bn(&mut g, "h2", "c2", "q", 12);
    g.nodes = vec![
        node("f1", Op::Unary(UnaryOp::Neg), &["x"]),
        // 1: c1 is read by h1 only, then kept for c2.
        node("c1", cat.clone(), &["x", "f1"]),
        bn1,
        node("r1", Op::Unary(UnaryOp::Relu), &["h1"]),
        node("f2", Op::Binary(BinaryOp::Mul), &["f1", "x"]),
        // 5: extends c1.
        node("c2", cat.clone(), &["x", "f1", "f2"]),
        bn2,
        node("r2", Op::Unary(UnaryOp::Relu), &["h2"]),
        node("f3", Op::Unary(UnaryOp::Sigmoid), &["f2"]),
        // 9: extends c2.
        node("c3", cat.clone(), &["x", "f1", "f2", "f3"]),
        // 10: c3 is a graph output: copied, not extended.
        node("c4", cat, &["x", "f1", "f2", "f3", "f1"]),
    ];
    g
}

#[test]
fn plans_each_concat_to_extend_the_last_dead_prefix() {
    let g = graph(1);
    let plan = Plan::new(&g).unwrap();
    let slot = |n: &str| plan.slots[n];
    let mut want = vec![None; g.nodes.len()];
    want[5] = Some((slot("c1"), 2));
    want[9] = Some((slot("c2"), 3));
    assert_eq!(plan.extends, want);
    // The kept Concats die at the Concat that extends them, so the BatchNorms reading them
    // cannot overwrite them.
    assert!(plan.frees[5].contains(&slot("c1")));
    assert!(plan.frees[9].contains(&slot("c2")));
    assert!(plan.in_place[2].is_empty() && plan.in_place[6].is_empty());
}

#[test]
fn extended_concats_match_the_reference_on_batch_1_and_2() {
    for batch in [1, 2] {
        let g = graph(batch);
        let x = values(&[batch, 4, 3, 3], 7);
        let want = reference(&g, &x);
        let runner = Runner::new(&g).unwrap();
        let inputs = HashMap::from([("x".to_string(), x)]);
        let expect: Vec<(String, Tensor)> = ["c3", "r2", "c4"]
            .iter()
            .map(|n| (n.to_string(), want[*n].clone()))
            .collect();
        assert_eq!(runner.run(inputs.clone()).unwrap(), expect, "batch {batch}");
        let observed = runner
            .run_observed(inputs, |name, t| {
                assert_eq!(t, &want[name], "{name}, batch {batch}");
                Ok(())
            })
            .unwrap();
        assert_eq!(observed, expect, "batch {batch}");
    }
}

#[test]
fn concat_extending_refuses_a_prefix_that_does_not_fit() {
    let a = values(&[1, 2, 2], 1);
    let b = values(&[1, 3, 2], 2);
    let want = kernels::layout::concat(&[&a, &b], 1).unwrap();
    // The right prefix: extended.
    let got = kernels::layout::concat_extending(a.clone(), 1, &[&a, &b], 1).unwrap();
    assert_eq!(got, want);
    // A prefix of the wrong shape or dtype, or a k that covers every input: the plain concat.
    for (prefix, k) in [
        (values(&[1, 3, 2], 3), 1),
        (Tensor::from_vec(&[1, 2, 2], vec![0i64; 4]).unwrap(), 1),
        (a.clone(), 2),
    ] {
        let got = kernels::layout::concat_extending(prefix, k, &[&a, &b], 1).unwrap();
        assert_eq!(got, want);
    }
}
