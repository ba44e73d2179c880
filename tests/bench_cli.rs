//! `convgraph bench`: the JSON fields and their consistency, `--vs tract`, `--profile`, and a
//! bad model. No test asserts a time: the machine is shared, only relations are checked.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_convgraph"))
}

fn small_cnn() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/small_cnn.onnx")
}

fn bench_json(extra: &[&str]) -> Value {
    let out = bin()
        .arg("bench")
        .arg(small_cnn())
        .args(["--iters", "3", "--warmup", "1", "--threads", "1", "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document on stdout")
}

fn num(doc: &Value, key: &str) -> f64 {
    doc[key]
        .as_f64()
        .unwrap_or_else(|| panic!("'{key}' missing or not a number in {doc}"))
}

#[test]
fn json_has_consistent_fields() {
    let doc = bench_json(&[]);
    let (median, min, max) = (
        num(&doc, "median_ms"),
        num(&doc, "min_ms"),
        num(&doc, "max_ms"),
    );
    assert!(min > 0.0 && min <= median && median <= max, "{doc}");
    assert_eq!(doc["iters"], 3);
    assert_eq!(doc["threads"], 1);
    assert!(doc.get("tract_median_ms").is_none() && doc.get("ratio").is_none());
}

#[test]
fn vs_tract_adds_its_median_and_the_ratio() {
    let doc = bench_json(&["--vs", "tract"]);
    let ours = num(&doc, "median_ms");
    let theirs = num(&doc, "tract_median_ms");
    assert!(theirs > 0.0, "{doc}");
    let ratio = num(&doc, "ratio");
    assert!(
        (ratio - ours / theirs).abs() <= 1e-9 * ratio.abs().max(1.0),
        "{doc}"
    );
}

#[test]
fn profile_lists_conv_with_gflops() {
    let doc = bench_json(&["--profile"]);
    let p = &doc["profile"];
    assert_eq!(p["runs"], 3, "{doc}");
    let ops = p["ops"].as_array().expect("profile.ops");
    let conv = ops.iter().find(|o| o["op"] == "Conv").expect("a Conv line");
    assert!(conv["gflops"].as_f64().is_some_and(|g| g > 0.0), "{conv}");
    let pct: f64 = ops.iter().map(|o| o["pct"].as_f64().unwrap()).sum();
    assert!((pct - 100.0).abs() < 1e-6, "shares sum to {pct}");
    let top = p["top_nodes"].as_array().expect("profile.top_nodes");
    assert!(!top.is_empty() && top.len() <= 10);
    assert!(top.iter().all(|n| n["name"].is_string()));

    // The plain text names Conv on a line with a GFLOP/s figure.
    let out = bin()
        .arg("bench")
        .arg(small_cnn())
        .args(["--iters", "2", "--warmup", "0", "--profile"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("GFLOP/s"), "{text}");
    let conv_line = text
        .lines()
        .find(|l| l.starts_with("Conv "))
        .unwrap_or_else(|| panic!("no Conv line in:\n{text}"));
    let last: f64 = conv_line
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .expect("a GFLOP/s figure at the end of the Conv line");
    assert!(last > 0.0);
}

#[test]
fn bad_model_exits_2_with_one_line() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench_cli");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("not_a_model.onnx");
    std::fs::write(&bad, b"this is not protobuf").unwrap();
    let out = bin()
        .arg("bench")
        .arg(&bad)
        .args(["--iters", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not_a_model.onnx"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn zero_iters_is_a_usage_error() {
    let out = bin()
        .arg("bench")
        .arg(small_cnn())
        .args(["--iters", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
