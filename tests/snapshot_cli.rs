//! `convgraph snapshot`: the same text on every run and for any thread count; JSON with the
//! same summaries.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn model(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(format!("{name}.onnx"))
        .to_str()
        .unwrap()
        .to_string()
}

fn snapshot(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_convgraph"))
        .arg("snapshot")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn same_text_across_runs_and_thread_counts() {
    let m = model("small_cnn");
    let one = snapshot(&[&m, "--threads", "1"]);
    let two = snapshot(&[&m, "--threads", "2"]);
    let again = snapshot(&[&m, "--threads", "2"]);
    assert_eq!(one, two);
    assert_eq!(two, again);
    // The library's summary of the same run, as tests/models.rs keeps it.
    assert!(
        one.starts_with("logits: f32 [1, 10] min -1.4 max 0.835 mean -0.172 std 0.648"),
        "{one}"
    );
    assert_eq!(one.lines().count(), 1);
    // A rewrite within tolerance keeps the text; another seed changes it.
    assert_eq!(snapshot(&[&m, "--passes", "lower-1x1-conv"]), one);
    assert_ne!(snapshot(&[&m, "--seed", "1"]), one);
}

#[test]
fn json_has_one_entry_per_output_with_its_summary() {
    let m = model("lesson_multi_in_out");
    let text = snapshot(&[&m]);
    let doc: Value = serde_json::from_str(&snapshot(&[&m, "--json"])).unwrap();
    let outs = doc["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0]["name"], "y");
    assert_eq!(outs[0]["dtype"], "f32");
    assert_eq!(outs[0]["shape"], serde_json::json!([1, 3, 2, 2]));
    let summary = outs[0]["summary"].as_str().unwrap();
    assert_eq!(text, format!("y: {summary}\n"));
}
