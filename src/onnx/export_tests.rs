//! Export: every op in every opset form comes back from import(export(g)) as the same IR,
//! computes the same numbers in convgraph and in tract, and IR forms the opset does not
//! allow are written in the form it does.

use super::builder::{
    attr_float, attr_int, attr_ints, attr_string, node, value_info, ModelBuilder,
};
use super::{export_model, import_model, save_model};
use crate::cli::random_tensor;
use crate::ir::{analyze, print::print, DimBindings, Graph, Op};
use crate::tensor::{DType, Tensor};
use crate::verify::{compare, tract, Tolerance};
use crate::Runner;
use std::collections::HashMap;
use std::path::PathBuf;
use tract_onnx::pb::{ModelProto, NodeProto};

fn w(shape: &[usize], seed: u64) -> Tensor {
    random_tensor(DType::F32, shape, seed).unwrap()
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(&[v.len()], v.to_vec()).unwrap()
}

/// Opset 9: Clip bounds, (Un)Squeeze axes and Slice bounds as attributes, Softmax on the
/// last axis written as a positive axis, SAME padding, legacy-free Gemm attributes.
fn opset_9() -> ModelProto {
    let mut b = ModelBuilder::new(9)
        .input("x", DType::F32, &[1, 2, 6, 6])
        .init("w", &w(&[4, 2, 3, 3], 1))
        .init("gw", &w(&[3, 4], 2))
        .init("gb", &w(&[3], 3))
        .node(node(
            "Conv",
            "conv",
            &["x", "w"],
            &["c"],
            vec![
                attr_string("auto_pad", "SAME_UPPER"),
                attr_ints("strides", &[2, 2]),
                attr_ints("kernel_shape", &[3, 3]),
            ],
        ))
        .node(node(
            "Clip",
            "clip",
            &["c"],
            &["cl"],
            vec![attr_float("min", -0.5), attr_float("max", 0.5)],
        ))
        .node(node(
            "Unsqueeze",
            "unsq",
            &["cl"],
            &["u"],
            vec![attr_ints("axes", &[0])],
        ))
        .node(node(
            "Squeeze",
            "sq",
            &["u"],
            &["s"],
            vec![attr_ints("axes", &[0])],
        ))
        .node(node(
            "Slice",
            "slice",
            &["s"],
            &["sl"],
            vec![
                attr_ints("starts", &[1]),
                attr_ints("ends", &[3]),
                attr_ints("axes", &[1]),
            ],
        ))
        .node(node(
            "MaxPool",
            "pool",
            &["sl"],
            &["p"],
            vec![
                attr_ints("kernel_shape", &[2, 2]),
                attr_ints("strides", &[1, 1]),
            ],
        ))
        .node(node(
            "ReduceMean",
            "rmean",
            &["p"],
            &["rm"],
            vec![attr_ints("axes", &[3]), attr_int("keepdims", 1)],
        ))
        .node(node("Flatten", "flat", &["rm"], &["f"], vec![]))
        .node(node(
            "Gemm",
            "gemm",
            &["f", "gw", "gb"],
            &["g"],
            vec![
                attr_float("alpha", 0.5),
                attr_float("beta", 2.0),
                attr_int("transB", 1),
            ],
        ))
        .node(node(
            "Softmax",
            "softmax",
            &["g"],
            &["sm"],
            vec![attr_int("axis", 1)],
        ))
        .node(node(
            "Transpose",
            "tr",
            &["sm"],
            &["t"],
            vec![attr_ints("perm", &[1, 0])],
        ))
        .node(node(
            "Cast",
            "cast",
            &["t"],
            &["y"],
            vec![attr_int("to", 11)],
        ))
        .node(node("Identity", "id", &["g"], &["g_copy"], vec![]))
        .output("y", DType::F64, None)
        .output("g_copy", DType::F32, Some(&[1, 3]));
    // The importer accepts Softmax before opset 13 only on a last axis it can see.
    b.graph
        .value_info
        .push(value_info("g", DType::F32, Some(&[1, 3])));
    b.build()
}

/// Opset 13: Clip bounds, (Un)Squeeze and ReduceSum axes, Split sizes as inputs; ReduceMean
/// axes still an attribute; explicit pads, groups, ceil_mode, count_include_pad.
fn opset_13() -> ModelProto {
    ModelBuilder::new(13)
        .input("x", DType::F32, &[1, 2, 6, 6])
        .init("w", &w(&[2, 1, 3, 3], 4))
        .init("b", &w(&[2], 5))
        .init("lo", &Tensor::scalar(-0.25f32))
        .init("ax0", &i64s(&[0]))
        .init("ax2", &i64s(&[2]))
        .init("sizes", &i64s(&[1, 1]))
        .init("unused", &i64s(&[7]))
        .node(node(
            "Conv",
            "conv",
            &["x", "w", "b"],
            &["c"],
            vec![
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_ints("dilations", &[1, 1]),
                attr_int("group", 2),
            ],
        ))
        .node(node("Clip", "clip", &["c", "lo"], &["cl"], vec![]))
        .node(node(
            "AveragePool",
            "pool",
            &["cl"],
            &["p"],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_int("ceil_mode", 1),
                attr_int("count_include_pad", 1),
            ],
        ))
        .node(node("Unsqueeze", "unsq", &["p", "ax0"], &["u"], vec![]))
        .node(node("Squeeze", "sq", &["u", "ax0"], &["s"], vec![]))
        .node(node(
            "Split",
            "split",
            &["s", "sizes"],
            &["s0", "s1"],
            vec![attr_int("axis", 1)],
        ))
        .node(node(
            "ReduceSum",
            "rsum",
            &["s0", "ax2"],
            &["rs"],
            vec![attr_int("keepdims", 0)],
        ))
        .node(node(
            "ReduceMean",
            "rmean",
            &["s1"],
            &["rm"],
            vec![attr_ints("axes", &[2]), attr_int("keepdims", 0)],
        ))
        .node(node(
            "Concat",
            "cat",
            &["rs", "rm"],
            &["ct"],
            vec![attr_int("axis", 1)],
        ))
        .node(node(
            "Softmax",
            "softmax",
            &["ct"],
            &["y"],
            vec![attr_int("axis", -1)],
        ))
        .node(node("Shape", "shape", &["ct"], &["shp"], vec![]))
        .node(node(
            "Gather",
            "gather",
            &["shp", "ax0"],
            &["n"],
            vec![attr_int("axis", 0)],
        ))
        // tract gives shapes as symbolic dims; as floats they compare like any output.
        .node(node(
            "Cast",
            "n_f",
            &["n"],
            &["nf"],
            vec![attr_int("to", 1)],
        ))
        .output("y", DType::F32, Some(&[1, 2, 4]))
        .output("nf", DType::F32, None)
        .build()
}

/// Opset 18: ReduceMean axes as input, Split by num_outputs, Shape start/end, Reshape
/// allowzero, GlobalAveragePool, MatMul, BatchNormalization.
fn opset_18() -> ModelProto {
    ModelBuilder::new(18)
        .input("x", DType::F32, &[1, 4, 4, 4])
        .init("scale", &w(&[4], 6))
        .init("bias", &w(&[4], 7))
        .init("mean", &w(&[4], 8))
        .init(
            "var",
            &Tensor::from_vec(&[4], vec![1f32, 2., 0.5, 1.5]).unwrap(),
        )
        .init("ax3", &i64s(&[3]))
        .init("shape", &i64s(&[1, 2, 4]))
        .init("mm", &w(&[4, 3], 9))
        .node(node(
            "BatchNormalization",
            "bn",
            &["x", "scale", "bias", "mean", "var"],
            &["b"],
            vec![attr_float("epsilon", 1e-3)],
        ))
        .node(node(
            "Split",
            "split",
            &["b"],
            &["h0", "h1"],
            vec![attr_int("axis", 1), attr_int("num_outputs", 2)],
        ))
        .node(node(
            "ReduceMean",
            "rmean",
            &["h0", "ax3"],
            &["rm"],
            vec![attr_int("keepdims", 1)],
        ))
        .node(node("GlobalAveragePool", "gap", &["h1"], &["gp"], vec![]))
        .node(node("Mul", "mul", &["rm", "gp"], &["m"], vec![]))
        .node(node(
            "Reshape",
            "reshape",
            &["m", "shape"],
            &["r"],
            vec![attr_int("allowzero", 1)],
        ))
        .node(node("MatMul", "matmul", &["r", "mm"], &["y"], vec![]))
        .node(node(
            "Shape",
            "shape_of",
            &["x"],
            &["hw"],
            vec![attr_int("start", 2), attr_int("end", 4)],
        ))
        .node(node(
            "Cast",
            "hw_f",
            &["hw"],
            &["hwf"],
            vec![attr_int("to", 1)],
        ))
        .output("y", DType::F32, Some(&[1, 2, 3]))
        .output("hwf", DType::F32, None)
        .build()
}

fn ir_text(g: &Graph) -> String {
    print(g, &analyze(g, &DimBindings::default()).unwrap())
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

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("convgraph-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn assert_close(actual: &[Tensor], expected: &[Tensor], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}");
    for (a, e) in actual.iter().zip(expected) {
        let r = compare(a, e, Tolerance::default());
        assert!(r.ok(), "{what}: {r}");
    }
}

fn exported_node<'m>(m: &'m ModelProto, name: &str) -> &'m NodeProto {
    let g = m.graph.as_ref().unwrap();
    g.node.iter().find(|n| n.name == name).unwrap()
}

fn attr_names(n: &NodeProto) -> Vec<&str> {
    n.attribute.iter().map(|a| a.name.as_str()).collect()
}

#[test]
fn every_opset_form_round_trips_and_computes_the_same() {
    for (label, model) in [("9", opset_9()), ("13", opset_13()), ("18", opset_18())] {
        let g = import_model(&model).unwrap();
        let exported = export_model(&g).unwrap();
        let back = import_model(&exported).unwrap();
        assert_eq!(ir_text(&back), ir_text(&g), "opset {label}");

        let shape: Vec<usize> = match &g.inputs[0].dims {
            Some(d) => d.iter().map(|d| d.to_string().parse().unwrap()).collect(),
            None => unreachable!(),
        };
        let x = w(&shape, 11);
        let ours = run(&g, &x);
        assert_eq!(
            run(&back, &x),
            ours,
            "opset {label}: convgraph on the export"
        );

        // tract on the original and on the exported file agree, with each other and with us.
        let original = tmp(&format!("opset{label}.orig.onnx"));
        std::fs::write(&original, prost::Message::encode_to_vec(&model)).unwrap();
        let written = tmp(&format!("opset{label}.onnx"));
        save_model(&g, &written).unwrap();
        let expected = tract::run(&original, std::slice::from_ref(&x)).unwrap();
        let got = tract::run(&written, std::slice::from_ref(&x)).unwrap();
        assert_close(
            &got,
            &expected,
            &format!("opset {label}: tract, export vs original"),
        );
        assert_close(
            &ours,
            &expected,
            &format!("opset {label}: convgraph vs tract"),
        );
    }
}

#[test]
fn attributes_and_inputs_follow_the_opset() {
    let m = export_model(&import_model(&opset_9()).unwrap()).unwrap();
    let clip = exported_node(&m, "clip");
    assert_eq!(clip.input, ["c"]);
    assert_eq!(attr_names(clip), ["min", "max"]);
    assert_eq!(exported_node(&m, "unsq").input, ["cl"]);
    let slice = exported_node(&m, "slice");
    assert_eq!(slice.input, ["s"]);
    assert_eq!(attr_names(slice), ["starts", "ends", "axes"]);
    // Softmax before opset 11: the last axis as a positive number, its input's rank declared.
    let sm = exported_node(&m, "softmax");
    assert_eq!(sm.attribute[0].i, 1);
    let vi = &m.graph.as_ref().unwrap().value_info;
    assert_eq!(vi.len(), 1);
    assert_eq!(vi[0].name, "g");
    let conv = exported_node(&m, "conv");
    assert_eq!(
        attr_names(conv),
        ["kernel_shape", "strides", "auto_pad", "group"]
    );
    assert_eq!(conv.attribute[2].s, b"SAME_UPPER");
    // The Slice bounds' constants were made by the importer and now live in attributes.
    let inits: Vec<&str> = m
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(inits, ["gb", "gw", "w"]);

    let m = export_model(&import_model(&opset_13()).unwrap()).unwrap();
    assert_eq!(exported_node(&m, "clip").input, ["c", "lo"]);
    assert_eq!(exported_node(&m, "rsum").input, ["s0", "ax2"]);
    assert_eq!(exported_node(&m, "rmean").input, ["s1"]);
    assert_eq!(attr_names(exported_node(&m, "rmean")), ["axes", "keepdims"]);
    assert_eq!(exported_node(&m, "split").input, ["s", "sizes"]);
    let inits: Vec<&str> = m
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    // A constant nothing reads is kept, as the importer kept it.
    assert!(inits.contains(&"unused"), "{inits:?}");

    let m = export_model(&import_model(&opset_18()).unwrap()).unwrap();
    let split = exported_node(&m, "split");
    assert_eq!(split.input, ["b"]);
    assert_eq!(attr_names(split), ["axis", "num_outputs"]);
    assert_eq!(split.attribute[1].i, 2);
    assert_eq!(exported_node(&m, "rmean").input, ["h0", "ax3"]);
    assert_eq!(attr_names(exported_node(&m, "shape_of")), ["start", "end"]);
}

/// IR forms that a pass (or a lenient import) may hold but the opset does not allow are
/// converted: attribute-held axes and bounds become constant inputs from opset 13, and
/// constant inputs become attributes before it.
#[test]
fn ir_forms_are_converted_to_the_opsets_form() {
    let mut g = import_model(&opset_13()).unwrap();
    let x = w(&[1, 2, 6, 6], 12);
    for n in &mut g.nodes {
        match n.name.as_str() {
            "clip" => {
                n.op = Op::Clip {
                    min: Some(-0.25),
                    max: Some(0.75),
                };
                n.inputs.truncate(1);
            }
            "unsq" => {
                n.op = Op::Unsqueeze {
                    axes: Some(vec![0]),
                };
                n.inputs.truncate(1);
            }
            "rsum" => {
                n.op = match &n.op {
                    Op::ReduceSum(a) => Op::ReduceSum(crate::ir::ReduceAttrs {
                        axes: Some(vec![2]),
                        ..a.clone()
                    }),
                    other => panic!("{other:?}"),
                };
                n.inputs.truncate(1);
            }
            _ => {}
        }
    }
    // The interpreter runs the IR forms directly: the reference for the exported file.
    let want = run(&g, &x);
    let m = export_model(&g).unwrap();
    let clip = exported_node(&m, "clip");
    assert_eq!(clip.input.len(), 3);
    assert!(clip.attribute.is_empty());
    assert_eq!(exported_node(&m, "unsq").input.len(), 2);
    assert!(exported_node(&m, "unsq").attribute.is_empty());
    assert_eq!(exported_node(&m, "rsum").input.len(), 2);
    let back = import_model(&m).unwrap();
    assert_eq!(run(&back, &x), want);

    // And down: opset 9 with the axes as a constant input becomes an attribute.
    let mut g = import_model(&opset_9()).unwrap();
    let x = w(&[1, 2, 6, 6], 13);
    let want = run(&g, &x);
    let axes = "unsq.axes_in".to_string();
    g.constants.insert(axes.clone(), i64s(&[0]));
    let unsq = g.nodes.iter_mut().find(|n| n.name == "unsq").unwrap();
    unsq.op = Op::Unsqueeze { axes: None };
    unsq.inputs.push(axes.clone());
    let m = export_model(&g).unwrap();
    let unsq = exported_node(&m, "unsq");
    assert_eq!(unsq.input, ["cl"]);
    assert_eq!(unsq.attribute[0].ints, [0]);
    let inits = &m.graph.as_ref().unwrap().initializer;
    assert!(inits.iter().all(|t| t.name != axes));
    assert_eq!(run(&import_model(&m).unwrap(), &x), want);
}

#[test]
fn unexportable_node_is_named_and_no_file_is_written() {
    let mut g = import_model(&opset_9()).unwrap();
    // Softmax over axis 0 of a rank-2 tensor is not expressible before opset 13.
    let sm = g.nodes.iter_mut().find(|n| n.name == "softmax").unwrap();
    sm.op = Op::Softmax { axis: 0 };
    let path = tmp("unexportable.onnx");
    let _ = std::fs::remove_file(&path);
    let e = format!("{:#}", save_model(&g, &path).unwrap_err());
    assert!(e.contains("node 'softmax' (Softmax)"), "{e}");
    assert!(!path.exists());

    // A non-constant axes input cannot become an attribute.
    let mut g = import_model(&opset_9()).unwrap();
    let unsq = g.nodes.iter_mut().find(|n| n.name == "unsq").unwrap();
    unsq.op = Op::Unsqueeze { axes: None };
    unsq.inputs.push("x".into());
    let e = format!("{:#}", export_model(&g).unwrap_err());
    assert!(
        e.contains("node 'unsq' (Unsqueeze)") && e.contains("must be a constant"),
        "{e}"
    );

    // Writing into a directory that does not exist fails cleanly.
    let g = import_model(&opset_9()).unwrap();
    let nowhere = tmp("missing_dir").join("out.onnx");
    let e = format!("{:#}", save_model(&g, &nowhere).unwrap_err());
    assert!(e.contains("out.onnx") && e.contains("cannot write"), "{e}");
}
