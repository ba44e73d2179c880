//! Writes the ONNX models under `models/`: the lesson's three convolutions with its exact
//! tensors, and a small CNN that mixes the ops real conv nets use. Run with
//! `cargo run --example make_models`; the output is deterministic, so the committed files
//! change only when this program does.

use convgraph::onnx::builder::{
    attr_int, attr_ints, float_tensor as floats, int64_tensor as ints, node, value_info,
    ModelBuilder,
};
use convgraph::tensor::DType::F32;
use prost::Message;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto, ValueInfoProto};

fn model(
    name: &str,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> ModelProto {
    let mut b = ModelBuilder::new(17).named(name, "convgraph make_models");
    b.graph.node = nodes;
    b.graph.initializer = inits;
    b.graph.input = inputs;
    b.graph.output = outputs;
    b.build()
}

/// Deterministic weights in [-0.5, 0.5): a fixed LCG, so the files are reproducible.
fn weights(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// The lesson's K (2x2x2) = [[[0,1],[2,3]], [[1,2],[3,4]]].
fn lesson_k() -> Vec<f32> {
    vec![0., 1., 2., 3., 1., 2., 3., 4.]
}

fn multi_in() -> ModelProto {
    // The input is an initializer-free graph input; the lesson's X is given by the tests.
    model(
        "multi_in",
        vec![node("Conv", "conv", &["x", "k"], &["y"], vec![])],
        vec![floats("k", &[1, 2, 2, 2], lesson_k())],
        vec![value_info("x", F32, Some(&[1, 2, 3, 3]))],
        vec![value_info("y", F32, Some(&[1, 1, 2, 2]))],
    )
}

fn multi_in_out() -> ModelProto {
    // K stacked with K+1 and K+2: three output channels.
    let k = lesson_k();
    let stacked: Vec<f32> = (0..3)
        .flat_map(|i| k.iter().map(move |v| v + i as f32))
        .collect();
    model(
        "multi_in_out",
        vec![node("Conv", "conv", &["x", "k"], &["y"], vec![])],
        vec![floats("k", &[3, 2, 2, 2], stacked)],
        vec![value_info("x", F32, Some(&[1, 2, 3, 3]))],
        vec![value_info("y", F32, Some(&[1, 3, 2, 2]))],
    )
}

fn conv_1x1() -> ModelProto {
    model(
        "conv_1x1",
        vec![node("Conv", "conv", &["x", "k"], &["y"], vec![])],
        vec![floats("k", &[2, 3, 1, 1], weights(3, 6))],
        vec![value_info("x", F32, Some(&[1, 3, 3, 3]))],
        vec![value_info("y", F32, Some(&[1, 2, 3, 3]))],
    )
}

/// A small CNN with the shapes of real ones: 3x3 stem with stride, BatchNorm, Relu, a
/// depthwise 3x3, pointwise 1x1 (one strided), a residual Add, a Stack of two branches
/// (Unsqueeze + Concat, as exporters write torch.stack), MaxPool, GlobalAveragePool, Flatten
/// and Gemm.
fn small_cnn() -> ModelProto {
    let c = 8i64;
    let mut inits = vec![
        floats("stem.w", &[c, 3, 3, 3], weights(10, (c * 27) as usize)),
        floats("stem.b", &[c], weights(11, c as usize)),
        floats(
            "bn.scale",
            &[c],
            weights(12, c as usize).iter().map(|v| v + 1.0).collect(),
        ),
        floats("bn.bias", &[c], weights(13, c as usize)),
        floats("bn.mean", &[c], weights(14, c as usize)),
        floats(
            "bn.var",
            &[c],
            weights(15, c as usize).iter().map(|v| v + 1.0).collect(),
        ),
        floats("dw.w", &[c, 1, 3, 3], weights(16, (c * 9) as usize)),
        floats("pw.w", &[c, c, 1, 1], weights(17, (c * c) as usize)),
        floats("pw.b", &[c], weights(18, c as usize)),
        floats(
            "down.w",
            &[2 * c, c, 1, 1],
            weights(19, (2 * c * c) as usize),
        ),
        floats("fc.w", &[10, 4 * c], weights(20, (40 * c) as usize)),
        floats("fc.b", &[10], weights(21, 10)),
    ];
    inits.push(ints("axes1", vec![1]));
    inits.push(floats("clip.min", &[], vec![0.0]));
    inits.push(floats("clip.max", &[], vec![6.0]));
    let nodes = vec![
        node(
            "Conv",
            "stem",
            &["x", "stem.w", "stem.b"],
            &["s"],
            vec![
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
            ],
        ),
        node(
            "BatchNormalization",
            "bn",
            &["s", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
            &["s_bn"],
            vec![],
        ),
        node("Relu", "relu", &["s_bn"], &["a"], vec![]),
        node(
            "Conv",
            "dw",
            &["a", "dw.w"],
            &["d"],
            vec![attr_int("group", c), attr_ints("pads", &[1, 1, 1, 1])],
        ),
        node(
            "Clip",
            "relu6",
            &["d", "clip.min", "clip.max"],
            &["d6"],
            vec![],
        ),
        node("Conv", "pw", &["d6", "pw.w", "pw.b"], &["p"], vec![]),
        node("Add", "residual", &["p", "a"], &["r"], vec![]),
        node(
            "MaxPool",
            "pool",
            &["r"],
            &["m"],
            vec![
                attr_ints("kernel_shape", &[2, 2]),
                attr_ints("strides", &[2, 2]),
            ],
        ),
        node(
            "Conv",
            "down",
            &["m", "down.w"],
            &["dn"],
            vec![attr_ints("strides", &[2, 2])],
        ),
        node("Unsqueeze", "u1", &["dn", "axes1"], &["u1"], vec![]),
        node("Sigmoid", "gate", &["dn"], &["g"], vec![]),
        node("Mul", "gated", &["dn", "g"], &["dg"], vec![]),
        node("Unsqueeze", "u2", &["dg", "axes1"], &["u2"], vec![]),
        node(
            "Concat",
            "stack",
            &["u1", "u2"],
            &["st"],
            vec![attr_int("axis", 1)],
        ),
        node("Reshape", "merge", &["st", "merge_shape"], &["mg"], vec![]),
        node("GlobalAveragePool", "gap", &["mg"], &["gp"], vec![]),
        node("Flatten", "flat", &["gp"], &["f"], vec![]),
        node(
            "Gemm",
            "fc",
            &["f", "fc.w", "fc.b"],
            &["logits"],
            vec![attr_int("transB", 1)],
        ),
    ];
    inits.push(ints("merge_shape", vec![0, 4 * c, 4, 4]));
    model(
        "small_cnn",
        nodes,
        inits,
        vec![value_info("x", F32, Some(&[1, 3, 32, 32]))],
        vec![value_info("logits", F32, Some(&[1, 10]))],
    )
}

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    std::fs::create_dir_all(&dir)?;
    for (name, m) in [
        ("lesson_multi_in", multi_in()),
        ("lesson_multi_in_out", multi_in_out()),
        ("lesson_conv_1x1", conv_1x1()),
        ("small_cnn", small_cnn()),
    ] {
        let path = dir.join(format!("{name}.onnx"));
        std::fs::write(&path, m.encode_to_vec())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
