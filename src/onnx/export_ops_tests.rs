//! Export of the ops added for the conformance cases: each comes back from
//! import(export(g)) as the same IR and computes the same numbers, in the legacy forms of
//! old opsets (PRelu's per-channel slope, broadcast=1, Dropout's ratio attribute) as well.

use super::builder::{attr_float, attr_int, attr_ints, node, value_info, ModelBuilder};
use super::{export_model, import_model};
use crate::cli::random_tensor;
use crate::ir::{analyze, print::print, DimBindings, Graph, Op};
use crate::tensor::{DType, Tensor};
use crate::Runner;
use std::collections::HashMap;
use tract_onnx::pb::ModelProto;

fn w(shape: &[usize], seed: u64) -> Tensor {
    random_tensor(DType::F32, shape, seed).unwrap()
}

fn run(g: &Graph, x: &Tensor) -> Vec<Tensor> {
    let inputs = HashMap::from([(g.inputs[0].name.clone(), x.clone())]);
    Runner::new(g)
        .unwrap()
        .run(inputs)
        .unwrap()
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

fn ir_text(g: &Graph) -> String {
    print(g, &analyze(g, &DimBindings::default()).unwrap())
}

/// Opset 6: per-channel PRelu, Add with broadcast/axis, the variadic ops.
fn opset_6() -> ModelProto {
    let mut b = ModelBuilder::new(6)
        .input("x", DType::F32, &[1, 3, 4, 4])
        .init("slope", &w(&[3], 1))
        .init("b", &w(&[4], 2))
        .node(node("PRelu", "prelu", &["x", "slope"], &["p"], vec![]))
        .node(node(
            "Add",
            "add",
            &["p", "b"],
            &["a"],
            vec![attr_int("broadcast", 1), attr_int("axis", 3)],
        ))
        .node(node("Sum", "sum", &["a", "x", "p"], &["s"], vec![]))
        .node(node("Max", "max", &["s", "x"], &["mx"], vec![]))
        .node(node("Min", "min", &["mx", "a"], &["mn"], vec![]))
        .node(node("Mean", "mean", &["mn", "s"], &["y"], vec![]))
        .output("y", DType::F32, None);
    // The legacy axis is checked against both ranks, which must be declared.
    b.graph
        .value_info
        .push(value_info("p", DType::F32, Some(&[1, 3, 4, 4])));
    b.build()
}

/// Opset 9: ConvTranspose, LRN, LeakyRelu, HardSigmoid, inference Dropout with a ratio,
/// ConstantOfShape + Expand, and the flattening Softmax (rank not declared).
fn opset_9() -> ModelProto {
    ModelBuilder::new(9)
        .input("x", DType::F32, &[1, 2, 5, 5])
        .init("w", &w(&[2, 3, 3, 3], 3))
        .init("bias", &w(&[3], 4))
        .init(
            "cshape",
            &Tensor::from_vec(&[4], vec![1i64, 3, 1, 1]).unwrap(),
        )
        .init(
            "eshape",
            &Tensor::from_vec(&[4], vec![1i64, 3, 10, 10]).unwrap(),
        )
        .node(node(
            "ConvTranspose",
            "ct",
            &["x", "w", "bias"],
            &["c"],
            vec![
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_ints("output_padding", &[1, 1]),
            ],
        ))
        .node(node(
            "LRN",
            "lrn",
            &["c"],
            &["l"],
            vec![attr_int("size", 3), attr_float("alpha", 0.01)],
        ))
        .node(node(
            "LeakyRelu",
            "leaky",
            &["l"],
            &["lr"],
            vec![attr_float("alpha", 0.2)],
        ))
        .node(node("HardSigmoid", "hs", &["lr"], &["h"], vec![]))
        .node(node(
            "Dropout",
            "drop",
            &["h"],
            &["d"],
            vec![attr_float("ratio", 0.3)],
        ))
        .node(node("ConstantOfShape", "cos", &["cshape"], &["k"], vec![]))
        .node(node("Expand", "expand", &["k", "eshape"], &["e"], vec![]))
        .node(node("Add", "add", &["d", "e"], &["s"], vec![]))
        .node(node(
            "Softmax",
            "softmax",
            &["s"],
            &["y"],
            vec![attr_int("axis", 1)],
        ))
        .output("y", DType::F32, None)
        .build()
}

/// Opset 14: HardSwish, and Dropout whose mask is a graph output.
fn opset_14() -> ModelProto {
    ModelBuilder::new(14)
        .input("x", DType::F32, &[2, 3])
        .node(node("HardSwish", "hswish", &["x"], &["h"], vec![]))
        .node(node("Dropout", "drop", &["h"], &["y", "mask"], vec![]))
        .output("y", DType::F32, None)
        .output("mask", DType::Bool, None)
        .build()
}

/// Opset 15: training-mode BatchNormalization with its running stats as graph outputs, and
/// MaxPool with a column-major Indices output.
fn opset_15() -> ModelProto {
    ModelBuilder::new(15)
        .input("x", DType::F32, &[2, 3, 4, 4])
        .init("s", &w(&[3], 1))
        .init("b", &w(&[3], 2))
        .init("m", &w(&[3], 3))
        .init("v", &Tensor::from_vec(&[3], vec![1f32, 2., 3.]).unwrap())
        .node(node(
            "BatchNormalization",
            "bn",
            &["x", "s", "b", "m", "v"],
            &["y", "rm", "rv"],
            vec![
                attr_int("training_mode", 1),
                attr_float("momentum", 0.8),
                attr_float("epsilon", 1e-3),
            ],
        ))
        .node(node(
            "MaxPool",
            "pool",
            &["y"],
            &["p", "idx"],
            vec![
                attr_ints("kernel_shape", &[2, 2]),
                attr_ints("strides", &[2, 2]),
                attr_int("storage_order", 1),
            ],
        ))
        .output("p", DType::F32, None)
        .output("idx", DType::I64, None)
        .output("rm", DType::F32, None)
        .output("rv", DType::F32, None)
        .build()
}

#[test]
fn training_batchnorm_and_maxpool_indices() {
    let g = import_model(&opset_15()).unwrap();
    assert!(matches!(
        g.nodes[0].op,
        Op::BatchNormTraining { momentum, .. } if momentum == 0.8
    ));
    assert!(matches!(&g.nodes[1].op, Op::MaxPool(p) if p.column_major_indices));
    let m = export_model(&g).unwrap();
    let nodes = &m.graph.as_ref().unwrap().node;
    assert_eq!(nodes[0].op_type, "BatchNormalization");
    assert!(nodes[1]
        .attribute
        .iter()
        .any(|a| a.name == "storage_order" && a.i == 1));
    let x = w(&[2, 3, 4, 4], 11);
    let r = run(&g, &x);
    assert_eq!(r.len(), 4);
    assert_eq!(r[1].dtype(), DType::I64);
    assert_eq!(r[1].shape(), &[2, 3, 2, 2]);
    // Training mode cannot be written before opset 14, nor Indices before 8.
    let mut old = g.clone();
    old.opset = 13;
    let e = format!("{:#}", export_model(&old).unwrap_err());
    assert!(e.contains("node 'bn'") && e.contains("opset 14"), "{e}");
    // Nor read: opset 13 has no training_mode attribute.
    let mut model = opset_15();
    model.opset_import[0].version = 13;
    let e = format!("{:#}", import_model(&model).unwrap_err());
    assert!(e.contains("node 'bn' (BatchNormalization)"), "{e}");
    // storage_order is 0 or 1.
    let mut model = opset_15();
    let pool = &mut model.graph.as_mut().unwrap().node[1];
    pool.attribute.retain(|a| a.name != "storage_order");
    pool.attribute.push(attr_int("storage_order", 2));
    let e = format!("{:#}", import_model(&model).unwrap_err());
    assert!(
        e.contains("node 'pool' (MaxPool)") && e.contains("storage_order"),
        "{e}"
    );
}

#[test]
fn new_ops_round_trip_in_each_opset_form() {
    for (label, model, shape) in [
        ("6", opset_6(), vec![1, 3, 4, 4]),
        ("9", opset_9(), vec![1, 2, 5, 5]),
        ("14", opset_14(), vec![2, 3]),
        ("15", opset_15(), vec![2, 3, 4, 4]),
    ] {
        let g = import_model(&model).unwrap();
        let exported = export_model(&g).unwrap();
        let back = import_model(&exported).unwrap();
        assert_eq!(ir_text(&back), ir_text(&g), "opset {label}");
        let x = w(&shape, 11);
        assert_eq!(run(&back, &x), run(&g, &x), "opset {label}");
    }
}

#[test]
fn legacy_forms_are_what_the_importer_reads() {
    let g = import_model(&opset_6()).unwrap();
    // The opset-6 per-channel slope became a [3, 1, 1] constant that broadcasts numpy-style.
    let prelu = g.nodes.iter().find(|n| n.name == "prelu").unwrap();
    assert_eq!(g.constants[&prelu.inputs[1]].shape(), &[3, 1, 1]);
    let g = import_model(&opset_9()).unwrap();
    let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
    // Inference Dropout with no mask read is an Identity; the softmax's rank is unknown.
    assert!(
        ops.contains(&"Identity") && !ops.contains(&"Dropout"),
        "{ops:?}"
    );
    assert!(matches!(
        g.nodes.last().unwrap().op,
        Op::SoftmaxFlat { axis: 1 }
    ));
    let m = export_model(&g).unwrap();
    let sm = m.graph.as_ref().unwrap().node.last().unwrap();
    assert_eq!(sm.op_type, "Softmax");
    // HardSwish cannot be written before opset 14.
    let mut g = import_model(&opset_14()).unwrap();
    g.opset = 13;
    let e = format!("{:#}", export_model(&g).unwrap_err());
    assert!(e.contains("node 'hswish' (HardSwish)"), "{e}");
}
