//! `convgraph run --engine tract`: tract runs the model file on the inputs convgraph would
//! feed; its outputs agree with convgraph's, and options that only concern convgraph's graph
//! are refused.

mod common;

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_convgraph"))
}

/// `run --json --seed SEED` on small_cnn with `extra` flags: the values of its single output.
fn output_values(seed: &str, extra: &[&str]) -> Vec<f64> {
    let out = bin()
        .arg("run")
        .arg(common::model_path("small_cnn"))
        .args(["--seed", seed, "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outputs = doc["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0]["name"], "logits");
    assert_eq!(outputs[0]["shape"], serde_json::json!([1, 10]));
    outputs[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn tract_engine_runs_the_same_inputs_and_agrees() {
    let ours = output_values("3", &[]);
    let tract = output_values("3", &["--engine", "tract"]);
    assert_eq!(ours.len(), 10);
    for (a, b) in ours.iter().zip(&tract) {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
            "{ours:?} vs {tract:?}"
        );
    }
    // A different seed feeds different inputs to both engines alike.
    let other = output_values("4", &["--engine", "tract"]);
    assert_ne!(other, tract);
}

#[test]
fn tract_engine_refuses_passes() {
    let out = bin()
        .arg("run")
        .arg(common::model_path("small_cnn"))
        .args(["--engine", "tract", "--passes", "lower-1x1-conv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--passes"), "{err}");
}
