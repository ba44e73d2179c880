//! Bad input exits with code 2 and one clear line naming the file (and node and op where
//! there is one); never a panic.

use convgraph::onnx::builder::{
    attr_int as int, attr_ints as ints, float_tensor, node, value_info, ModelBuilder,
};
use convgraph::tensor::DType;
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto, TensorProto};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_convgraph"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_errors");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// An f32 initializer of 0.5s.
fn weight(name: &str, dims: &[i64]) -> TensorProto {
    float_tensor(name, dims, vec![0.5; dims.iter().product::<i64>() as usize])
}

fn conv_node(name: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    node("Conv", name, inputs, &[output], attrs)
}

/// A model: x [1, 4, 5, 5] -> nodes -> y, with the given initializers.
fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> ModelProto {
    let mut b = ModelBuilder::new(17)
        .named("bad", "")
        .input("x", DType::F32, &[1, 4, 5, 5]);
    b.graph.output.push(value_info("y", DType::F32, Some(&[])));
    b.graph.node = nodes;
    b.graph.initializer = inits;
    b.build()
}

fn write_model(name: &str, m: &ModelProto) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

/// Runs `convgraph run` and asserts exit code 2 with one line naming `path` and containing
/// every one of `needles`.
fn assert_bad(path: &Path, extra: &[&str], needles: &[&str]) {
    let out = bin().arg("run").arg(path).args(extra).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}: stderr: {stderr}",
        path.display()
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal error"),
        "{stderr}"
    );
    let file = path.file_name().unwrap().to_string_lossy();
    assert!(
        stderr.contains(file.as_ref()),
        "does not name the file: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "missing '{n}' in: {stderr}");
    }
}

fn good_conv() -> NodeProto {
    conv_node("c1", &["x", "w"], "y", vec![])
}

#[test]
fn unreadable_files() {
    let empty = tmp("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    // An empty protobuf decodes as a model without a graph.
    assert_bad(&empty, &[], &[]);
    let garbage = tmp("garbage.onnx");
    std::fs::write(&garbage, b"\xff\xff\xff\xffthis is not a model").unwrap();
    assert_bad(&garbage, &[], &[]);
    let full = model(vec![good_conv()], vec![weight("w", &[2, 4, 3, 3])]).encode_to_vec();
    let truncated = tmp("truncated.onnx");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    assert_bad(&truncated, &[], &[]);
    assert_bad(&tmp("does_not_exist.onnx"), &[], &[]);
}

#[test]
fn bad_graphs_name_node_and_op() {
    let w = || weight("w", &[2, 4, 3, 3]);
    let mut unknown = good_conv();
    unknown.op_type = "FancyOp".into();
    assert_bad(
        &write_model("unknown_op.onnx", &model(vec![unknown], vec![w()])),
        &[],
        &["FancyOp", "c1"],
    );

    let dangling = conv_node("c1", &["x", "nowhere"], "y", vec![]);
    assert_bad(
        &write_model("dangling.onnx", &model(vec![dangling], vec![])),
        &[],
        &["nowhere"],
    );

    let a = conv_node("a", &["x", "w", "b_out"], "a_out", vec![]);
    let mut b = conv_node("b", &["a_out", "w2"], "b_out", vec![]);
    b.input = vec!["a_out".into(), "w2".into()];
    let cyc = model(
        vec![a, b, conv_node("c", &["a_out", "w2"], "y", vec![])],
        vec![w(), weight("w2", &[2, 2, 1, 1])],
    );
    assert_bad(&write_model("cycle.onnx", &cyc), &[], &["cycle"]);

    let rank = model(vec![good_conv()], vec![weight("w", &[2, 4, 3])]);
    assert_bad(
        &write_model("weight_rank.onnx", &rank),
        &[],
        &["c1", "Conv"],
    );
    let channels = model(vec![good_conv()], vec![weight("w", &[2, 3, 3, 3])]);
    assert_bad(
        &write_model("channels.onnx", &channels),
        &[],
        &["c1", "Conv"],
    );
    let group = model(
        vec![conv_node("c1", &["x", "w"], "y", vec![int("group", 3)])],
        vec![weight("w", &[2, 1, 3, 3])],
    );
    assert_bad(&write_model("group.onnx", &group), &[], &["c1", "Conv"]);
    let stride = model(
        vec![conv_node(
            "c1",
            &["x", "w"],
            "y",
            vec![ints("strides", &[0, 1])],
        )],
        vec![w()],
    );
    assert_bad(
        &write_model("zero_stride.onnx", &stride),
        &[],
        &["c1", "Conv"],
    );
    let big = model(vec![good_conv()], vec![weight("w", &[2, 4, 7, 7])]);
    assert_bad(
        &write_model("big_kernel.onnx", &big),
        &[],
        &["c1", "Conv", "larger"],
    );
}

#[test]
fn bad_tensors_in_the_model() {
    let mut short = weight("w", &[2, 4, 3, 3]);
    short.float_data.clear();
    short.raw_data = vec![0; 10];
    assert_bad(
        &write_model("short_raw.onnx", &model(vec![good_conv()], vec![short])),
        &[],
        &["w"],
    );
    let mut huge = weight("w", &[2, 4, 3, 3]);
    huge.dims = vec![1 << 40, 1 << 40, 1 << 40, 3];
    assert_bad(
        &write_model("overflow.onnx", &model(vec![good_conv()], vec![huge])),
        &[],
        &["w"],
    );
}

#[test]
fn bad_inputs() {
    let m = write_model(
        "ok_model.onnx",
        &model(vec![good_conv()], vec![weight("w", &[2, 4, 3, 3])]),
    );
    // Sanity: the model itself runs.
    let out = bin().arg("run").arg(&m).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let write_npy = |name: &str, t: &convgraph::Tensor| {
        let p = tmp(name);
        std::fs::write(&p, convgraph::npy::encode(t)).unwrap();
        p
    };
    let wrong_shape = write_npy(
        "wrong_shape.npy",
        &convgraph::Tensor::zeros(convgraph::DType::F32, &[1, 3, 5, 5]).unwrap(),
    );
    let arg = format!("x={}", wrong_shape.display());
    assert_bad(&m, &["--input", &arg], &["x", "shape"]);
    let wrong_dtype = write_npy(
        "wrong_dtype.npy",
        &convgraph::Tensor::zeros(convgraph::DType::F64, &[1, 4, 5, 5]).unwrap(),
    );
    let arg = format!("x={}", wrong_dtype.display());
    assert_bad(&m, &["--input", &arg], &["x", "f32"]);
    let corrupt = tmp("corrupt.npy");
    let mut bytes = convgraph::npy::encode(
        &convgraph::Tensor::zeros(convgraph::DType::F32, &[1, 4, 5, 5]).unwrap(),
    );
    bytes.truncate(bytes.len() - 7);
    std::fs::write(&corrupt, bytes).unwrap();
    let arg = format!("x={}", corrupt.display());
    assert_bad(&m, &["--input", &arg], &["corrupt.npy"]);

    // A tensor larger than the machine allows is refused before allocating.
    let out = bin()
        .arg("run")
        .arg(&m)
        .env("CONVGRAPH_MAX_TENSOR_BYTES", "64")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("more than"), "{stderr}");
}

#[test]
fn output_dir_gets_one_npy_per_output() {
    let m = write_model(
        "ok_model2.onnx",
        &model(vec![good_conv()], vec![weight("w", &[2, 4, 3, 3])]),
    );
    let dir = tmp("outdir");
    let _ = std::fs::remove_dir_all(&dir);
    let out = bin()
        .arg("run")
        .arg(&m)
        .arg("--output-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let y = convgraph::npy::read(&dir.join("y.npy")).unwrap();
    assert_eq!(y.shape(), &[1, 2, 3, 3]);
}

/// `w` stored in the side file `data_file` at `offset`, `length` bytes (as the dynamo
/// exporter writes every weight).
fn external_weight(dims: &[i64], location: &str, offset: u64, length: u64) -> TensorProto {
    use tract_onnx::pb::StringStringEntryProto as Entry;
    let entry = |k: &str, v: String| Entry {
        key: k.into(),
        value: v,
    };
    TensorProto {
        name: "w".into(),
        dims: dims.to_vec(),
        data_type: 1,
        data_location: Some(1),
        external_data: vec![
            entry("location", location.into()),
            entry("offset", offset.to_string()),
            entry("length", length.to_string()),
        ],
        ..Default::default()
    }
}

#[test]
fn external_weights_are_read_and_bad_ones_refused() {
    // A side file with 16 junk bytes, then the 72 weights of a (2,4,3,3) kernel.
    let w: Vec<f32> = (0..72).map(|i| i as f32 * 0.01 - 0.3).collect();
    let mut bytes = vec![7u8; 16];
    bytes.extend(w.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(tmp("ext_weights.bin"), &bytes).unwrap();
    let dims = [2, 4, 3, 3];

    let inline = TensorProto {
        float_data: w.clone(),
        ..weight("w", &dims)
    };
    let external = external_weight(&dims, "ext_weights.bin", 16, 288);
    let run = |name: &str, init: TensorProto| {
        let p = write_model(name, &model(vec![good_conv()], vec![init]));
        let out = bin().arg("run").arg(&p).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        run("ext_inline.onnx", inline),
        run("ext_good.onnx", external)
    );

    let bad = |name: &str, init: TensorProto, needle: &str| {
        assert_bad(
            &write_model(name, &model(vec![good_conv()], vec![init])),
            &[],
            &["'w'", needle],
        )
    };
    bad(
        "ext_missing.onnx",
        external_weight(&dims, "no_such_file.bin", 0, 288),
        "no_such_file.bin",
    );
    bad(
        "ext_past_end.onnx",
        external_weight(&dims, "ext_weights.bin", 100, 288),
        "past the end",
    );
    bad(
        "ext_escape.onnx",
        external_weight(&dims, "../cli_errors/ext_weights.bin", 16, 288),
        "inside the model's directory",
    );
    bad(
        "ext_short.onnx",
        external_weight(&dims, "ext_weights.bin", 16, 200),
        "raw_data has 200 bytes",
    );
}

/// A model whose graph input `x` is a `sequence(tensor(float))`, read by `op`: the node with
/// tract's types, then the input and output types with convgraph's own (concatenated
/// protobuf messages decode as one merged message).
fn sequence_model(name: &str, op: &str) -> PathBuf {
    use convgraph::onnx::value_proto::{ElemType, GraphTypes, ModelTypes, TypeProto, ValueInfo};
    let mut m = model(vec![], vec![]);
    let g = m.graph.as_mut().unwrap();
    g.input.clear();
    g.output.clear();
    g.node = vec![node(op, "n", &["x"], &["y"], vec![])];
    let seq = TypeProto {
        sequence_type: Some(Box::new(ElemType {
            elem_type: Some(Box::new(TypeProto {
                tensor_type: Some(tract_onnx::pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: None,
                }),
                ..Default::default()
            })),
        })),
        ..Default::default()
    };
    let info = |name: &str| ValueInfo {
        name: name.into(),
        r#type: Some(seq.clone()),
    };
    let types = ModelTypes {
        graph: Some(GraphTypes {
            input: vec![info("x")],
            output: vec![info("y")],
        }),
    };
    let p = tmp(name);
    let mut bytes = m.encode_to_vec();
    bytes.extend(types.encode_to_vec());
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn sequence_inputs_are_refused_by_the_command_line() {
    let m = sequence_model("sequence_identity.onnx", "Identity");
    let needles = ["input 'x' has type sequence(f32[?])", "tensors only"];
    assert_bad(&m, &[], &needles);
    let npy = tmp("seq_x.npy");
    let t = convgraph::Tensor::zeros(convgraph::DType::F32, &[2]).unwrap();
    std::fs::write(&npy, convgraph::npy::encode(&t)).unwrap();
    let arg = format!("x={}", npy.display());
    assert_bad(&m, &["--input", &arg], &needles);
    // Any op but Identity reading it: refused at load, naming the node and op.
    let m = sequence_model("sequence_relu.onnx", "Relu");
    assert_bad(
        &m,
        &[],
        &["node 'n' (Relu): input 0 'x' has type sequence(f32[?])"],
    );
}
