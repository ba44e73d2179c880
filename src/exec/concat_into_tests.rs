//! Tests of the Convs that write into their Concat's buffer (`concat_into.rs`): which are
//! chosen, that they do write there in a run on the planned shapes and not in a run on
//! others, that fused runs give the bits of every node run on its own either way, and that
//! the Concat converts what came out in the other layout.

use super::concat_into::{finish, Part, Sink};
use super::test_graph::{node, reference, values};
use super::{Runner, Slot};
use crate::ir::op::{ConvAttrs, Padding, PoolAttrs, Window};
use crate::ir::{Dim, Graph, Op, UnaryOp, ValueDecl};
use crate::kernels::blocked;
use crate::kernels::uninit;
use crate::tensor::{DType, Tensor};
use std::collections::HashMap;

fn window(k: usize, pad: usize) -> Window {
    Window {
        kernel_shape: Some(vec![k, k]),
        strides: vec![],
        dilations: vec![],
        padding: Padding::Explicit(vec![pad; 4]),
    }
}

fn conv(k: usize) -> Op {
    Op::Conv(ConvAttrs {
        window: window(k, k / 2),
        group: 1,
    })
}

/// An f32 declaration whose first dim is the symbolic `batch`, as torchvision exports it.
fn batched(name: &str, dims: &[usize]) -> ValueDecl {
    let mut all = vec![Dim::Sym("batch".into())];
    all.extend(dims.iter().map(|&d| Dim::Fixed(d)));
    ValueDecl {
        name: name.into(),
        dtype: DType::F32,
        dims: Some(all),
        wrappers: vec![],
    }
}

/// A fire-module-like Concat of 8-channel x on 10x10 planes: cat = [relu(conv1x1(x)) (16),
/// relu(conv3x3(x)) (16), maxpool(x) (8, not a Conv), conv1x1(x) (8, also read by `neg`)],
/// then y = conv1x1(cat) (48 -> 8).
fn fire() -> Graph {
    let pool = Op::MaxPool(PoolAttrs {
        window: window(3, 1),
        ceil_mode: false,
        count_include_pad: false,
        column_major_indices: false,
    });
    let mut g = Graph {
        name: "fire".into(),
        opset: 17,
        inputs: vec![batched("x", &[8, 10, 10])],
        outputs: vec![batched("y", &[8, 10, 10]), batched("n", &[8, 10, 10])],
        nodes: vec![
            node("c1", conv(1), &["x", "w1", "b16"], "y1"),
            node("r1", Op::Unary(UnaryOp::Relu), &["y1"], "a1"),
            node("c3", conv(3), &["x", "w3", "b16"], "y3"),
            node("r3", Op::Unary(UnaryOp::Relu), &["y3"], "a3"),
            node("pool", pool, &["x"], "m"),
            node("cs", conv(1), &["x", "ws", ""], "s"),
            node("neg", Op::Unary(UnaryOp::Neg), &["s"], "n"),
            node(
                "cat",
                Op::Concat { axis: 1 },
                &["a1", "a3", "m", "s"],
                "cat",
            ),
            node("cy", conv(1), &["cat", "wy", ""], "y"),
        ],
        ..Default::default()
    };
    let c = &mut g.constants;
    c.insert("w1".into(), values(&[16, 8, 1, 1], 1, 0.3));
    c.insert("w3".into(), values(&[16, 8, 3, 3], 2, 0.3));
    c.insert("b16".into(), values(&[16], 3, 1.0));
    c.insert("ws".into(), values(&[8, 8, 1, 1], 4, 0.3));
    c.insert("wy".into(), values(&[8, 48, 1, 1], 5, 0.3));
    g
}

#[test]
fn plans_the_convs_read_by_the_concat_alone() {
    let g = fire();
    let runner = Runner::new(&g).unwrap();
    let into = &runner.plan.prepared.concat_into;
    let cat = 7;
    let mut want = vec![None; g.nodes.len()];
    want[0] = Some(Part {
        concat: cat,
        input: 0,
    });
    want[2] = Some(Part {
        concat: cat,
        input: 1,
    });
    assert_eq!(into.parts, want);
    let sink = into.sinks[cat].as_ref().expect("the Concat is a sink");
    assert_eq!(sink.shape, [1, 48, 10, 10]);
    assert_eq!(
        sink.parts,
        [(0, 1600), (1600, 1600), (3200, 800), (4000, 800)]
    );
    assert!(into
        .sinks
        .iter()
        .enumerate()
        .all(|(i, s)| (i == cat) == s.is_some()));
}

#[test]
fn convs_write_into_the_concat_on_the_planned_shapes_with_the_same_bits() {
    let g = fire();
    let runner = Runner::new(&g).unwrap();
    for batch in [1, 2] {
        let x = values(&[batch, 8, 10, 10], 9, 2.0);
        let want = reference(&g, &x);
        let expect: Vec<(String, Tensor)> = ["y", "n"]
            .iter()
            .map(|n| (n.to_string(), want[*n].clone()))
            .collect();
        let inputs = HashMap::from([("x".to_string(), x)]);
        assert!(runner.plan.prepared.concat_into.applies(&inputs) == (batch == 1));
        assert_eq!(runner.run(inputs.clone()).unwrap(), expect, "batch {batch}");
        // The nodes that handed back no output wrote it into the Concat's buffer; the
        // profile still has each one's size.
        let mut into = Vec::new();
        let profiled = runner
            .run_profiled(inputs, |r| {
                if r.outputs.is_empty() {
                    into.push((r.index, r.output_len));
                }
            })
            .unwrap();
        assert_eq!(profiled, expect, "batch {batch}");
        let planned = match batch {
            1 => vec![(0, Some(1600)), (2, Some(1600))],
            _ => vec![],
        };
        assert_eq!(into, planned, "batch {batch}");
    }
}

/// `finish` copies in the inputs no Conv wrote, converting those held in the other layout,
/// and refuses one of a shape the plan did not give it.
#[test]
fn finish_converts_inputs_held_in_the_other_layout() {
    let a = values(&[1, 8, 3, 3], 1, 2.0);
    let b = values(&[1, 16, 3, 3], 2, 2.0);
    let c = values(&[1, 8, 3, 3], 3, 2.0);
    let all = crate::kernels::layout::concat(&[&a, &b, &c], 1).unwrap();
    let f = |t: &Tensor| t.as_f32().unwrap().clone();
    let held = |t: &Tensor| Tensor::F32(blocked::to_blocked(&f(t)));
    for sink_blocked in [false, true] {
        let sink = Sink {
            shape: vec![1, 32, 3, 3],
            blocked: sink_blocked,
            parts: vec![(0, 72), (72, 144), (216, 72)],
        };
        // `a` written into the buffer already (in the sink's layout), `b` held blocked,
        // `c` in planes.
        let mut buf = uninit::alloc(288);
        let a_in = if sink_blocked { held(&a) } else { a.clone() };
        for (d, &v) in buf[..72].iter_mut().zip(f(&a_in).iter()) {
            d.write(v);
        }
        let slots = [
            Slot::InConcat,
            Slot::Blocked(held(&b)),
            Slot::Owned(c.clone()),
        ];
        let inputs = [Some(0), Some(1), Some(2)];
        let got = finish(&sink, buf, &inputs, &slots).unwrap();
        let want = if sink_blocked {
            held(&all)
        } else {
            all.clone()
        };
        assert_eq!(got, want, "blocked sink: {sink_blocked}");
        // An input of the wrong shape: an error, not a wrong result.
        let slots = [
            Slot::InConcat,
            Slot::Owned(values(&[1, 16, 3, 4], 4, 1.0)),
            Slot::Owned(c.clone()),
        ];
        let err = finish(&sink, uninit::alloc(288), &inputs, &slots).unwrap_err();
        assert!(err
            .to_string()
            .contains("Concat input 1 has shape [1, 16, 3, 4]"));
    }
}
