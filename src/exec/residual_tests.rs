//! Tests of the Adds fused runs fold into Convs (`residual.rs`): which are chosen, and that
//! the fused run gives the bits of every node run on its own.

use super::prepare::Prepared;
use super::residual::ResidualAdd;
use super::test_graph::{decl, node, values};
use super::Runner;
use crate::ir::op::{ConvAttrs, Padding, Window};
use crate::ir::{BinaryOp, Dim, Graph, Op, UnaryOp};
use crate::tensor::Tensor;
use std::collections::HashMap;

fn conv(padding: Padding) -> Op {
    Op::Conv(ConvAttrs {
        window: Window {
            kernel_shape: None,
            strides: vec![],
            dilations: vec![],
            padding,
        },
        group: 1,
    })
}

const ADD: Op = Op::Binary(BinaryOp::Add);
const RELU: Op = Op::Unary(UnaryOp::Relu);

/// A residual stage, channels `c` on 6x6 planes:
/// ya = relu(conv3x3(x)) (fused); yb = conv3x3(ya); ys = conv1x1(x) (the shortcut, after
/// yb); r1 = relu(yb + ys) (into ys's conv: the later one); yc = conv3x3(r1);
/// s2 = r1 + yc (into yc's conv); yd = conv1x1(s2); ye = conv1x1(s2); z = relu(ye);
/// s3 = yd + z (not: z is computed after yd's conv, and is no Conv's output itself);
/// y = s3 + g (g a [1, c, 1, 1] constant: broadcast, not fused either).
fn stage(c: usize) -> Graph {
    let same = conv(Padding::SameUpper);
    let one = conv(Padding::Explicit(vec![0; 4]));
    let mut g = Graph {
        name: "residual".into(),
        opset: 17,
        inputs: vec![decl("x", &[1, c, 6, 6])],
        outputs: vec![decl("y", &[1, c, 6, 6])],
        nodes: vec![
            node("conv_a", same.clone(), &["x", "w3", "b"], "ya"),
            node("relu_a", RELU, &["ya"], "ra"),
            node("conv_b", same.clone(), &["ra", "w3", "b"], "yb"),
            node("conv_s", one.clone(), &["x", "w1", ""], "ys"),
            node("add1", ADD, &["yb", "ys"], "s1"),
            node("relu1", RELU, &["s1"], "r1"),
            node("conv_c", same, &["r1", "w3", "b"], "yc"),
            node("add2", ADD, &["r1", "yc"], "s2"),
            node("conv_d", one.clone(), &["s2", "w1", "b"], "yd"),
            node("conv_e", one, &["s2", "w1", ""], "ye"),
            node("relu_e", RELU, &["ye"], "z"),
            node("add3", ADD, &["yd", "z"], "s3"),
            node("add4", ADD, &["s3", "g"], "y"),
        ],
        ..Default::default()
    };
    g.constants
        .insert("w3".into(), values(&[c, c, 3, 3], 1, 0.3));
    g.constants
        .insert("w1".into(), values(&[c, c, 1, 1], 2, 0.3));
    g.constants.insert("b".into(), values(&[c], 3, 1.0));
    g.constants
        .insert("g".into(), values(&[1, c, 1, 1], 4, 1.0));
    g
}

fn run_both(g: &Graph, inputs: HashMap<String, Tensor>) -> (Vec<u32>, Vec<u32>) {
    let runner = Runner::new(g).unwrap();
    let fused = runner.run(inputs.clone()).unwrap();
    let unfused = runner.run_observed(inputs, |_, _| Ok(())).unwrap();
    let bits = |outs: Vec<(String, Tensor)>| -> Vec<u32> {
        outs.into_iter()
            .flat_map(|(_, t)| {
                let Tensor::F32(a) = t else {
                    panic!("f32 outputs")
                };
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            })
            .collect()
    };
    (bits(fused), bits(unfused))
}

/// 40 channels: every conv on the patch path, which takes a residual (on CPUs with AVX2 or
/// AVX-512; the portable kernel's transposed orientation does not).
#[test]
fn folds_an_add_into_the_later_conv_whose_residual_is_ready() {
    let p = Prepared::new(&stage(40));
    let chosen: Vec<ResidualAdd> = p.residual.iter().flatten().copied().collect();
    let want = [
        ResidualAdd {
            conv: 3,
            add: 4,
            k: 1,
        },
        ResidualAdd {
            conv: 6,
            add: 7,
            k: 1,
        },
    ];
    assert_eq!(chosen, want);
    let added: Vec<(usize, usize)> = (0..13).filter_map(|i| p.added[i].map(|k| (i, k))).collect();
    assert_eq!(added, [(4, 1), (7, 1)]);
    // The Relu after add1 moves its value on, as after any fused clamp.
    assert!(p.forward[5]);
}

/// The fused run gives the bits of the unfused one (every node its own kernel): 40 channels
/// (both Adds fused) and 5 (the 1x1 shortcut on `conv_direct` on AVX2 CPUs, so add1 runs
/// apart; add2 fused).
#[test]
fn fused_residual_adds_give_the_bits_of_separate_adds() {
    for c in [40, 5] {
        let g = stage(c);
        let x = values(&[1, c, 6, 6], 9, 2.0);
        let (fused, unfused) = run_both(&g, HashMap::from([("x".to_string(), x)]));
        assert_eq!(fused, unfused, "{c} channels");
    }
}

/// Shapes analyzed with symbolic dims as 1 can differ at run time: the Conv's output
/// `[n, 5, 6, 6]` plus a graph input `[m, 5, 6, 6]` with n = 1, m = 2 broadcasts. The plan
/// fuses the Add; the run then computes the Conv and the Add apart, with the Add's Relu.
#[test]
fn a_residual_of_another_shape_at_run_time_runs_the_add_apart() {
    let sym = |name: &str, dim: &str| {
        let mut d = decl(name, &[1, 5, 6, 6]);
        d.dims.as_mut().unwrap()[0] = Dim::Sym(dim.into());
        d
    };
    let mut g = Graph {
        name: "symbolic".into(),
        opset: 17,
        inputs: vec![sym("x", "n"), sym("r", "m")],
        outputs: vec![sym("y", "m")],
        nodes: vec![
            node("conv", conv(Padding::SameUpper), &["x", "w3", "b"], "yc"),
            node("add", ADD, &["r", "yc"], "s"),
            node("relu", RELU, &["s"], "y"),
        ],
        ..Default::default()
    };
    g.constants
        .insert("w3".into(), values(&[5, 5, 3, 3], 1, 0.3));
    g.constants.insert("b".into(), values(&[5], 3, 1.0));
    let p = Prepared::new(&g);
    assert_eq!(
        p.residual[0],
        Some(ResidualAdd {
            conv: 0,
            add: 1,
            k: 1
        })
    );
    let inputs = HashMap::from([
        ("x".to_string(), values(&[1, 5, 6, 6], 9, 2.0)),
        ("r".to_string(), values(&[2, 5, 6, 6], 8, 2.0)),
    ]);
    let (fused, unfused) = run_both(&g, inputs);
    assert_eq!(fused.len(), 2 * 5 * 36);
    assert_eq!(fused, unfused);
}
