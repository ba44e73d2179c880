//! Importer tests on tiny models built in code.

use super::builder::*;
use super::{import_model, tensor_from_proto, tensor_to_proto};
use crate::ir::{Dim, Op, UnaryOp};
use crate::tensor::{f16, DType, Tensor};
use tract_onnx::pb::TensorProto;

fn err_text<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

#[test]
fn raw_roundtrip_every_dtype() {
    let tensors = vec![
        Tensor::from_vec(&[2, 2], vec![1.0f32, -2.0, 3.5, 0.0]).unwrap(),
        Tensor::from_vec(&[3], vec![1i64, -7, i64::MAX]).unwrap(),
        Tensor::from_vec(&[2], vec![f16::from_f32(1.5), f16::from_f32(-0.25)]).unwrap(),
        Tensor::from_vec(&[3], vec![true, false, true]).unwrap(),
        Tensor::from_vec(&[2], vec![1.25f64, -3.0]).unwrap(),
        Tensor::from_vec(&[2], vec![-3i8, 100]).unwrap(),
        Tensor::from_vec(&[2], vec![65535u16, 7]).unwrap(),
        Tensor::from_vec(&[1], vec![u64::MAX]).unwrap(),
        Tensor::scalar(42i32),
        Tensor::from_vec(&[0, 3], Vec::<f32>::new()).unwrap(),
    ];
    for t in tensors {
        let p = tensor_to_proto("x", &t);
        assert_eq!(tensor_from_proto(&p).unwrap(), t);
    }
}

#[test]
fn typed_fields() {
    let f = TensorProto {
        dims: vec![2],
        data_type: DType::F32.onnx_code(),
        float_data: vec![1.0, 2.0],
        ..Default::default()
    };
    assert_eq!(
        tensor_from_proto(&f).unwrap(),
        Tensor::from_vec(&[2], vec![1.0f32, 2.0]).unwrap()
    );
    let i = TensorProto {
        dims: vec![1, 2],
        data_type: DType::I64.onnx_code(),
        int64_data: vec![5, -6],
        ..Default::default()
    };
    assert_eq!(
        tensor_from_proto(&i).unwrap(),
        Tensor::from_vec(&[1, 2], vec![5i64, -6]).unwrap()
    );
    let h = TensorProto {
        dims: vec![2],
        data_type: DType::F16.onnx_code(),
        int32_data: vec![
            f16::from_f32(2.0).to_bits() as i32,
            f16::from_f32(-1.0).to_bits() as i32,
        ],
        ..Default::default()
    };
    assert_eq!(
        tensor_from_proto(&h).unwrap(),
        Tensor::from_vec(&[2], vec![f16::from_f32(2.0), f16::from_f32(-1.0)]).unwrap()
    );
    let b = TensorProto {
        dims: vec![3],
        data_type: DType::Bool.onnx_code(),
        int32_data: vec![1, 0, 1],
        ..Default::default()
    };
    assert_eq!(
        tensor_from_proto(&b).unwrap(),
        Tensor::from_vec(&[3], vec![true, false, true]).unwrap()
    );
    // A typed field of the wrong length.
    let short = TensorProto {
        float_data: vec![1.0],
        ..f
    };
    assert!(err_text(tensor_from_proto(&short)).contains("float_data has 1 elements"));
}

#[test]
fn refusals() {
    let mut p = tensor_to_proto("w", &Tensor::from_vec(&[4], vec![1.0f32; 4]).unwrap());
    p.raw_data.truncate(12);
    let e = err_text(tensor_from_proto(&p));
    assert!(
        e.contains("tensor 'w'") && e.contains("raw_data has 12 bytes"),
        "{e}"
    );

    let huge = TensorProto {
        dims: vec![i64::MAX, i64::MAX],
        data_type: DType::F32.onnx_code(),
        ..Default::default()
    };
    assert!(err_text(tensor_from_proto(&huge)).contains("overflow"));

    let too_big = TensorProto {
        dims: vec![1 << 40, 1 << 10],
        data_type: DType::F32.onnx_code(),
        ..Default::default()
    };
    assert!(err_text(tensor_from_proto(&too_big)).contains("bytes"));

    let neg = TensorProto {
        dims: vec![-1],
        data_type: DType::F32.onnx_code(),
        ..Default::default()
    };
    assert!(err_text(tensor_from_proto(&neg)).contains("negative"));

    let s = TensorProto {
        dims: vec![1],
        data_type: 8,
        string_data: vec![b"a".to_vec()],
        ..Default::default()
    };
    assert!(err_text(tensor_from_proto(&s)).contains("STRING"));

    let bf = TensorProto {
        data_type: 16,
        ..Default::default()
    };
    assert!(err_text(tensor_from_proto(&bf)).contains("BFLOAT16"));

    let ext = TensorProto {
        dims: vec![1],
        data_type: 1,
        data_location: Some(1),
        ..Default::default()
    };
    assert!(err_text(tensor_from_proto(&ext)).contains("external"));
}

#[test]
fn initializers_and_inputs() {
    let w = Tensor::from_vec(&[2], vec![1.0f32, 2.0]).unwrap();
    let mut b = ModelBuilder::new(13)
        .input("x", DType::F32, &[2])
        .init("w", &w)
        .node(node("Add", "", &["x", "w"], &["y"], vec![]))
        .output("y", DType::F32, None);
    // An initializer listed among the inputs (IR < 4 style) is not a run-time input.
    b.graph.input.push(value_info("w", DType::F32, Some(&[2])));
    let mut m = b.build();
    // A symbolic and an unnamed dim.
    if let Some(tract_onnx::pb::type_proto::Value::TensorType(tt)) = m.graph.as_mut().unwrap().input
        [0]
    .r#type
    .as_mut()
    .unwrap()
    .value
    .as_mut()
    {
        let dims = &mut tt.shape.as_mut().unwrap().dim;
        dims[0].value =
            Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimParam("N".into()));
        dims.push(Default::default());
    }
    let g = import_model(&m).unwrap();
    assert_eq!(g.opset, 13);
    assert_eq!(g.inputs.len(), 1);
    assert_eq!(
        g.inputs[0].dims,
        Some(vec![Dim::Sym("N".into()), Dim::Sym("?".into())])
    );
    assert_eq!(g.constants["w"], w);
    assert_eq!(g.nodes[0].name, "Add_0");
    assert_eq!(g.outputs[0].dims, None);
}

#[test]
fn unknown_op_names_op_and_node() {
    let m = ModelBuilder::new(13)
        .input("x", DType::F32, &[1])
        .node(node("Foo", "foo1", &["x"], &["y"], vec![]))
        .output("y", DType::F32, None)
        .build();
    let e = err_text(import_model(&m));
    assert_eq!(e, "node 'foo1' (Foo): unsupported op 'Foo'");
}

#[test]
fn bad_attribute_names_node() {
    let m = ModelBuilder::new(13)
        .input("x", DType::F32, &[1, 1, 3, 3])
        .init("w", &Tensor::zeros(DType::F32, &[1, 1, 1, 1]).unwrap())
        .node(node(
            "Conv",
            "conv3",
            &["x", "w"],
            &["y"],
            vec![attr_int("group", 0)],
        ))
        .output("y", DType::F32, None)
        .build();
    assert_eq!(
        err_text(import_model(&m)),
        "node 'conv3' (Conv): attribute 'group' = 0 must be positive"
    );
}

#[test]
fn non_default_domain_refused() {
    let mut n = node("Relu", "r", &["x"], &["y"], vec![]);
    n.domain = "com.microsoft".into();
    let m = ModelBuilder::new(13)
        .input("x", DType::F32, &[1])
        .node(n)
        .output("y", DType::F32, None)
        .build();
    assert!(err_text(import_model(&m)).contains("com.microsoft"));
}

#[test]
fn out_of_order_nodes_are_sorted_and_cycles_refused() {
    let m = ModelBuilder::new(13)
        .input("x", DType::F32, &[1])
        .node(node("Neg", "b", &["t"], &["y"], vec![]))
        .node(node("Relu", "a", &["x"], &["t"], vec![]))
        .output("y", DType::F32, None)
        .build();
    let g = import_model(&m).unwrap();
    let names: Vec<_> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(g.nodes[0].op, Op::Unary(UnaryOp::Relu));

    let m = ModelBuilder::new(13)
        .input("x", DType::F32, &[1])
        .node(node("Add", "a", &["x", "u"], &["t"], vec![]))
        .node(node("Relu", "b", &["t"], &["u"], vec![]))
        .node(node("Relu", "c", &["u"], &["y"], vec![]))
        .output("y", DType::F32, None)
        .build();
    let e = err_text(import_model(&m));
    assert!(
        e.contains("cycle") && (e.contains("'a'") || e.contains("'b'")),
        "{e}"
    );
}

#[test]
fn unsqueeze_concat_raised_to_stack() {
    let axes = Tensor::from_vec(&[1], vec![0i64]).unwrap();
    let m = ModelBuilder::new(13)
        .input("a", DType::F32, &[2])
        .input("b", DType::F32, &[2])
        .init("ax", &axes)
        .node(node("Unsqueeze", "ua", &["a", "ax"], &["a1"], vec![]))
        .node(node("Unsqueeze", "ub", &["b", "ax"], &["b1"], vec![]))
        .node(node(
            "Concat",
            "cat",
            &["a1", "b1"],
            &["y"],
            vec![attr_int("axis", 0)],
        ))
        .output("y", DType::F32, None)
        .build();
    let g = import_model(&m).unwrap();
    assert_eq!(g.nodes.len(), 1);
    let n = &g.nodes[0];
    assert_eq!(n.name, "cat");
    assert_eq!(n.op, Op::Stack { axis: 0 });
    assert_eq!(n.inputs, ["a", "b"]);
    assert_eq!(n.outputs, ["y"]);
    assert!(!g.constants.contains_key("ax"));

    // Different axis: not raised.
    let m = ModelBuilder::new(11)
        .input("a", DType::F32, &[2])
        .input("b", DType::F32, &[2])
        .node(node(
            "Unsqueeze",
            "ua",
            &["a"],
            &["a1"],
            vec![attr_ints("axes", &[0])],
        ))
        .node(node(
            "Unsqueeze",
            "ub",
            &["b"],
            &["b1"],
            vec![attr_ints("axes", &[0])],
        ))
        .node(node(
            "Concat",
            "cat",
            &["a1", "b1"],
            &["y"],
            vec![attr_int("axis", 1)],
        ))
        .output("y", DType::F32, None)
        .build();
    assert_eq!(import_model(&m).unwrap().nodes.len(), 3);
}

#[test]
fn constant_nodes_become_constants() {
    let c = Tensor::from_vec(&[2], vec![3.0f32, 4.0]).unwrap();
    let m = ModelBuilder::new(13)
        .input("x", DType::F32, &[2])
        .node(node(
            "Constant",
            "k",
            &[],
            &["c"],
            vec![attr_tensor("value", &c)],
        ))
        .node(node(
            "Constant",
            "",
            &[],
            &["s"],
            vec![attr_float("value_float", 2.0)],
        ))
        .node(node(
            "Constant",
            "",
            &[],
            &["i"],
            vec![attr_ints("value_ints", &[1, 2])],
        ))
        .node(node("Mul", "m", &["x", "c"], &["y"], vec![]))
        .output("y", DType::F32, None)
        .build();
    let g = import_model(&m).unwrap();
    assert_eq!(g.nodes.len(), 1);
    assert_eq!(g.constants["c"], c);
    assert_eq!(g.constants["s"], Tensor::scalar(2.0f32));
    assert_eq!(
        g.constants["i"],
        Tensor::from_vec(&[2], vec![1i64, 2]).unwrap()
    );
}

#[test]
fn old_slice_attributes_become_constant_inputs() {
    let m = ModelBuilder::new(9)
        .input("x", DType::F32, &[4])
        .node(node(
            "Slice",
            "s",
            &["x"],
            &["y"],
            vec![attr_ints("starts", &[1]), attr_ints("ends", &[3])],
        ))
        .output("y", DType::F32, None)
        .build();
    let g = import_model(&m).unwrap();
    let n = &g.nodes[0];
    assert_eq!(n.op, Op::Slice);
    assert_eq!(n.inputs.len(), 3);
    assert_eq!(
        g.constants[&n.inputs[1]],
        Tensor::from_vec(&[1], vec![1i64]).unwrap()
    );
}

#[test]
fn dropout_and_conv_attrs() {
    let m = ModelBuilder::new(13)
        .input("x", DType::F32, &[1, 1, 4, 4])
        .init("w", &Tensor::zeros(DType::F32, &[1, 1, 3, 3]).unwrap())
        .node(node(
            "Conv",
            "c",
            &["x", "w"],
            &["t"],
            vec![
                attr_string("auto_pad", "SAME_UPPER"),
                attr_ints("strides", &[2, 2]),
            ],
        ))
        .node(node("Dropout", "d", &["t"], &["y", "mask"], vec![]))
        .output("y", DType::F32, None)
        .build();
    let g = import_model(&m).unwrap();
    match &g.nodes[0].op {
        Op::Conv(a) => {
            assert_eq!(a.window.padding, crate::ir::Padding::SameUpper);
            assert_eq!(a.window.strides, [2, 2]);
            assert_eq!(a.group, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(g.nodes[1].op, Op::Identity);
    assert_eq!(g.nodes[1].outputs, ["y"]);

    // A used mask keeps a Dropout node (its kernel makes the all-true mask)...
    let m = ModelBuilder::new(13)
        .input("x", DType::F32, &[1])
        .node(node("Dropout", "d", &["x"], &["y", "mask"], vec![]))
        .output("y", DType::F32, None)
        .output("mask", DType::Bool, None)
        .build();
    let g = import_model(&m).unwrap();
    assert_eq!(g.nodes[0].op, Op::Dropout);
    assert_eq!(g.nodes[0].outputs, ["y", "mask"]);
    // ... but before opset 10 the mask had the data's dtype, which is refused.
    let m = ModelBuilder::new(9)
        .input("x", DType::F32, &[1])
        .node(node("Dropout", "d", &["x"], &["y", "mask"], vec![]))
        .output("y", DType::F32, None)
        .output("mask", DType::F32, None)
        .build();
    assert!(err_text(import_model(&m)).starts_with("node 'd' (Dropout): the mask output"));
    // Training mode with a constant non-zero ratio is refused at import.
    let m = ModelBuilder::new(13)
        .input("x", DType::F32, &[1])
        .init("r", &Tensor::scalar(0.5f32))
        .init("t", &Tensor::scalar(true))
        .node(node("Dropout", "d", &["x", "r", "t"], &["y"], vec![]))
        .output("y", DType::F32, None)
        .build();
    assert!(err_text(import_model(&m)).contains("random mask"));
}

#[test]
fn bundled_models_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "onnx") {
            let g = super::load_model(&p).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(!g.nodes.is_empty(), "{}", p.display());
        }
    }
}

#[test]
fn load_errors_start_with_the_path() {
    let p = std::path::Path::new("/nonexistent/model.onnx");
    assert!(err_text(super::load_model(p)).starts_with("/nonexistent/model.onnx: "));
}

#[test]
fn pad_attribute_and_input_forms() {
    use crate::ir::{PadAttrs, PadMode};
    use std::collections::HashMap;
    let x = Tensor::from_vec(&[1, 3], vec![1f32, 2., 3.]).unwrap();
    let run = |g: &crate::ir::Graph, feed: Vec<(&str, Tensor)>| {
        let feed: HashMap<String, Tensor> =
            feed.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        crate::exec::Runner::new(g)
            .unwrap()
            .run(feed)
            .unwrap()
            .remove(0)
            .1
    };
    // Opset 2: pads and value are attributes.
    let m = ModelBuilder::new(2)
        .input("x", DType::F32, &[1, 3])
        .node(node(
            "Pad",
            "p",
            &["x"],
            &["y"],
            vec![attr_ints("pads", &[0, 2, 0, 1]), attr_float("value", 4.5)],
        ))
        .output("y", DType::F32, None)
        .build();
    let g = import_model(&m).unwrap();
    assert_eq!(
        g.nodes[0].op,
        Op::Pad(PadAttrs {
            mode: PadMode::Constant,
            pads: Some(vec![0, 2, 0, 1]),
            value: 4.5
        })
    );
    let y = run(&g, vec![("x", x.clone())]);
    assert_eq!(
        y,
        Tensor::from_vec(&[1, 6], vec![4.5f32, 4.5, 1., 2., 3., 4.5]).unwrap()
    );
    // Opset 18: pads are a run-time input, axes a constant; reflect mode.
    let m = ModelBuilder::new(18)
        .input("x", DType::F32, &[1, 3])
        .input("pads", DType::I64, &[2])
        .init("axes", &Tensor::from_vec(&[1], vec![1i64]).unwrap())
        .node(node(
            "Pad",
            "p",
            &["x", "pads", "", "axes"],
            &["y"],
            vec![attr_string("mode", "reflect")],
        ))
        .output("y", DType::F32, None)
        .build();
    let g = import_model(&m).unwrap();
    let pads = Tensor::from_vec(&[2], vec![2i64, 1]).unwrap();
    let y = run(&g, vec![("x", x.clone()), ("pads", pads)]);
    assert_eq!(
        y,
        Tensor::from_vec(&[1, 6], vec![3f32, 2., 1., 2., 3., 2.]).unwrap()
    );
    // Refusals name the attribute: an unknown mode, missing pads.
    let bad = ModelBuilder::new(13)
        .input("x", DType::F32, &[1, 3])
        .node(node(
            "Pad",
            "p",
            &["x"],
            &["y"],
            vec![attr_string("mode", "mirror")],
        ))
        .output("y", DType::F32, None)
        .build();
    let e = err_text(import_model(&bad));
    assert!(e.contains("node 'p' (Pad)") && e.contains("mode"), "{e}");
}

/// Our Pad against tract's on the same ONNX files, for the modes tract implements.
#[test]
fn pad_agrees_with_tract() {
    use prost::Message;
    use std::collections::HashMap;
    let x = Tensor::from_vec(
        &[1, 2, 3, 4],
        (0..24).map(|v| v as f32 * 0.5 - 3.0).collect(),
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("convgraph-pad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (mode, pads) in [
        ("constant", vec![0i64, 1, 2, 0, 0, 0, 1, 3]),
        ("reflect", vec![0, 0, 2, 3, 0, 0, 1, 2]),
        ("edge", vec![0, 0, 3, 1, 0, 0, 0, 2]),
    ] {
        let m = ModelBuilder::new(13)
            .input("x", DType::F32, &[1, 2, 3, 4])
            .init("pads", &Tensor::from_vec(&[8], pads.clone()).unwrap())
            .init("v", &Tensor::scalar(1.25f32))
            .node(node(
                "Pad",
                "p",
                // tract 0.23 fills with constant_value whenever it is given, whatever the
                // mode; ONNX reads it only in constant mode. Give it only there.
                if mode == "constant" {
                    &["x", "pads", "v"]
                } else {
                    &["x", "pads"]
                },
                &["y"],
                vec![attr_string("mode", mode)],
            ))
            .output("y", DType::F32, None)
            .build();
        let path = dir.join(format!("{mode}.onnx"));
        std::fs::write(&path, m.encode_to_vec()).unwrap();
        let expected = crate::verify::tract::run(&path, std::slice::from_ref(&x)).unwrap();
        let g = import_model(&m).unwrap();
        let feed = HashMap::from([("x".to_string(), x.clone())]);
        let ours = crate::exec::Runner::new(&g).unwrap().run(feed).unwrap();
        assert_eq!(ours[0].1, expected[0], "mode {mode}, pads {pads:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
