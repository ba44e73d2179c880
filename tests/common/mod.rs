//! Helpers the integration tests share: the shipped models, seeded inputs, running a graph.
//! (Each test file compiles this module on its own, so not every file uses every helper.)
#![allow(dead_code)]

use convgraph::cli::random_tensor;
use convgraph::exec::Runner;
use convgraph::ir::DimBindings;
use convgraph::{Graph, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// Every model under models/ (written by `cargo run --example make_models`).
pub const MODELS: &[&str] = &[
    "lesson_multi_in",
    "lesson_multi_in_out",
    "lesson_conv_1x1",
    "small_cnn",
];

pub fn model_path(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(format!("{name}.onnx"));
    assert!(
        p.exists(),
        "{} is missing: run `cargo run --example make_models`",
        p.display()
    );
    p
}

pub fn load(name: &str) -> Graph {
    convgraph::onnx::load_model(&model_path(name)).unwrap()
}

/// One seeded tensor per graph input, as `convgraph run --seed` makes them (input `i` from
/// `seed + i`, symbolic dims 1).
pub fn seeded_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let b = DimBindings::default();
    g.inputs
        .iter()
        .enumerate()
        .map(|(i, d)| random_tensor(d.dtype, &b.input_shape(d).unwrap(), seed + i as u64).unwrap())
        .collect()
}

/// Runs `g` on `inputs` (in the graph's input order); its outputs in declaration order.
pub fn run(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    let map: HashMap<String, Tensor> = g
        .inputs
        .iter()
        .map(|d| d.name.clone())
        .zip(inputs.iter().cloned())
        .collect();
    Runner::new(g)
        .unwrap()
        .run(map)
        .unwrap()
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

/// A folder of its own under the test target's tmp dir.
pub fn tmp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
