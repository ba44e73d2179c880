//! The interpreter with sequence and optional values, on graphs built in the IR directly (the
//! importer's side is in `onnx/value_proto_tests.rs`).

use super::{Runner, Value};
use crate::ir::{Dim, Graph, Node, Op, UnaryOp, ValueDecl, Wrapper};
use crate::tensor::{DType, Tensor};
use std::collections::HashMap;

fn decl(name: &str, dims: Option<Vec<Dim>>, wrappers: &[Wrapper]) -> ValueDecl {
    ValueDecl {
        name: name.into(),
        dtype: DType::F32,
        dims,
        wrappers: wrappers.to_vec(),
    }
}

fn node(name: &str, op: Op, input: &str, output: &str) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: vec![input.into()],
        outputs: vec![output.into()],
    }
}

/// x: sequence(f32[2]) -> Identity -> y, beside a tensor path a: f32[2] -> Relu -> b.
fn mixed_graph() -> Graph {
    let seq = [Wrapper::Sequence];
    Graph {
        name: "g".into(),
        opset: 17,
        inputs: vec![
            decl("x", Some(vec![Dim::Fixed(2)]), &seq),
            decl("a", Some(vec![Dim::Fixed(2)]), &[]),
        ],
        outputs: vec![decl("y", None, &seq), decl("b", None, &[])],
        nodes: vec![
            node("id", Op::Identity, "x", "y"),
            node("relu", Op::Unary(UnaryOp::Relu), "a", "b"),
        ],
        ..Default::default()
    }
}

fn t(v: Vec<f32>) -> Tensor {
    Tensor::from_vec(&[v.len()], v).unwrap()
}

fn err(r: anyhow::Result<Vec<(String, impl std::fmt::Debug)>>) -> String {
    format!("{:#}", r.unwrap_err())
}

#[test]
fn identity_passes_a_sequence_on_beside_the_tensor_path() {
    let g = mixed_graph();
    crate::ir::check(&g).unwrap();
    let runner = Runner::new(&g).unwrap();
    let x = Value::Sequence(vec![
        Value::Tensor(t(vec![1.0, 2.0])),
        Value::Tensor(t(vec![3.0, -4.0])),
    ]);
    let out = runner
        .run_values(HashMap::from([
            ("x".to_string(), x.clone()),
            ("a".to_string(), Value::Tensor(t(vec![-1.0, 5.0]))),
        ]))
        .unwrap();
    assert_eq!(
        out,
        vec![
            ("y".to_string(), x),
            ("b".to_string(), Value::Tensor(t(vec![0.0, 5.0])))
        ]
    );
}

#[test]
fn inputs_of_the_wrong_kind_are_refused() {
    let g = mixed_graph();
    let runner = Runner::new(&g).unwrap();
    let a = || ("a".to_string(), Value::Tensor(t(vec![1.0, 2.0])));
    // The tensor-only entry point cannot feed the sequence.
    assert_eq!(
        err(runner.run(HashMap::from([("a".to_string(), t(vec![1.0, 2.0]))]))),
        "input 'x' (sequence(f32[2])) was not given (Runner::run feeds tensors only; run_values feeds sequences and optionals)"
    );
    let run = |x: Value| err(runner.run_values(HashMap::from([("x".to_string(), x), a()])));
    assert_eq!(
        run(Value::Tensor(t(vec![1.0, 2.0]))),
        "input 'x' must be sequence(f32[2]), got a tensor"
    );
    assert_eq!(
        run(Value::Optional(None)),
        "input 'x' must be sequence(f32[2]): got an absent optional"
    );
    let i64s = Tensor::from_vec(&[2], vec![1i64, 2]).unwrap();
    assert_eq!(
        run(Value::Sequence(vec![
            Value::Tensor(t(vec![1.0, 2.0])),
            Value::Tensor(i64s)
        ])),
        "input 'x' must be sequence(f32[2]): element 1: got dtype i64"
    );
    assert_eq!(
        run(Value::Sequence(vec![Value::Tensor(t(vec![1.0, 2.0, 3.0]))])),
        "input 'x' must be sequence(f32[2]): element 0: got a tensor of shape [3]"
    );
    // Seeded samples (verify, compare, bench) are tensors only.
    assert_eq!(
        format!("{:#}", crate::verify::seeded_samples(&g, 1, 0).unwrap_err()),
        "input 'x' has type sequence(f32[2]): seeded samples are tensors only"
    );
    // A sequence for a tensor input.
    let r = runner.run_values(HashMap::from([
        ("x".to_string(), Value::Sequence(vec![])),
        ("a".to_string(), Value::Sequence(vec![])),
    ]));
    assert_eq!(
        err(r),
        "input 'a' must be a f32[2] tensor, got a sequence of 0"
    );
}

#[test]
fn a_graph_where_another_op_reads_a_sequence_is_refused_before_running() {
    let mut g = mixed_graph();
    g.nodes[0].op = Op::Unary(UnaryOp::Relu);
    g.outputs[0].wrappers.clear();
    let msg = "node 'id' (Relu): input 0 'x' has type sequence(f32[2]), but Relu takes tensors only (only Identity passes a sequence or optional on)";
    assert_eq!(format!("{:#}", Runner::new(&g).err().unwrap()), msg);
    assert_eq!(format!("{:#}", crate::ir::check(&g).unwrap_err()), msg);
}
