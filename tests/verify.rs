//! `verify` and `compare`, on the command line and as a library: rewrites and tract agree on
//! every shipped model; a model or graph with one changed weight is caught, and the node that
//! reads the weight is named as the first divergence.

use convgraph::passes::{Notes, PassOptions};
use convgraph::verify::{
    compare_graphs, compare_with_tract, seeded_samples, verify_passes, Tolerance,
};
use convgraph::{Graph, Tensor};
use prost::Message;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tract_onnx::pb::ModelProto;

mod common;
use common::{model_path, MODELS};

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("verify");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn convgraph(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convgraph"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Writes a copy of `model` with the float initializer `init` scaled by `factor`.
fn corrupted_copy(model: &Path, init: &str, factor: f32, out: &str) -> PathBuf {
    let bytes = std::fs::read(model).unwrap();
    let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name == init)
        .unwrap_or_else(|| panic!("no initializer {init}"));
    assert!(
        !t.float_data.is_empty(),
        "{init} is not stored as float_data"
    );
    for v in &mut t.float_data {
        *v *= factor;
    }
    let path = tmp(out);
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    path
}

#[test]
fn every_model_verifies_after_lowering_and_against_tract() {
    for name in MODELS {
        let path = model_path(name);
        let o = convgraph(&[
            "verify",
            path.to_str().unwrap(),
            "--passes",
            "lower-1x1-conv",
            "--reference",
            "tract",
        ]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("after lower-1x1-conv vs original: 3 sample(s)"),
            "{out}"
        );
        assert!(out.contains("convgraph vs tract: 3 sample(s)"), "{out}");
        assert_eq!(out.matches(": OK").count(), 2, "{out}");
    }
}

#[test]
fn compare_names_the_conv_whose_weight_changed() {
    let original = model_path("small_cnn");
    // The three middle convolutions: depthwise 3x3, 1x1, strided 1x1.
    for (init, node) in [("dw.w", "dw"), ("pw.w", "pw"), ("down.w", "down")] {
        let bad = corrupted_copy(&original, init, 1.01, &format!("small_cnn_{node}.onnx"));
        let o = convgraph(&[
            "compare",
            original.to_str().unwrap(),
            bad.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(1), "{node}: {}", text(&o));
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["samples"], 3);
        let d = &doc["first_divergence"];
        assert_eq!(d["node"], node, "{doc:#}");
        assert_eq!(d["op"], "Conv", "{doc:#}");
        assert_eq!(d["sample"], 0);
        assert!(d["report"]["outliers"].as_u64().unwrap() > 0);
        let out = &doc["outputs"][0];
        assert_eq!(out["name"], "logits");
        assert_eq!(out["ok"], false);
        assert!(out["max_abs"].as_f64().unwrap() > 1e-4);
        assert!(out["first_outlier"].is_array());

        // The same in plain text.
        let o = convgraph(&["compare", original.to_str().unwrap(), bad.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        let expected = format!("from node '{node}' (Conv)");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(&expected),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn compare_of_a_model_with_itself_passes() {
    let p = model_path("small_cnn");
    let o = convgraph(&[
        "compare",
        p.to_str().unwrap(),
        p.to_str().unwrap(),
        "--samples",
        "2",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["samples"], 2);
    assert_eq!(doc["outputs"][0]["max_abs"], 0.0);
    assert_eq!(doc["first_divergence"], Value::Null);
}

#[test]
fn compare_refuses_models_with_different_inputs() {
    let a = model_path("small_cnn");
    let b = model_path("lesson_multi_in");
    let o = convgraph(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("input 'x' has shape [1,3,32,32]"), "{err}");
    assert!(err.contains("small_cnn.onnx"), "{err}");
}

#[test]
fn verify_json_has_the_report_fields() {
    let p = model_path("small_cnn");
    let o = convgraph(&[
        "verify",
        p.to_str().unwrap(),
        "--passes",
        "lower-1x1-conv",
        "--reference",
        "tract",
        "--samples",
        "2",
        "--seed",
        "5",
        "--threads",
        "1",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    let cs = doc["comparisons"].as_array().unwrap();
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0]["reference"], "original");
    assert_eq!(cs[0]["candidate"], "after lower-1x1-conv");
    assert_eq!(cs[1]["reference"], "tract");
    for c in cs {
        assert_eq!(c["samples"], 2);
        assert_eq!(c["atol"], 1e-4);
        assert_eq!(c["rtol"], 1e-3);
        let out = &c["outputs"][0];
        assert_eq!(out["name"], "logits");
        assert_eq!(out["outliers"], 0);
        assert_eq!(out["first_outlier"], Value::Null);
        assert!(out["max_abs"].as_f64().unwrap() < 1e-4);
        assert!(out["max_rel"].is_number());
        assert!(out["max_ulp"].is_u64());
    }
}

#[test]
fn verify_bad_flags_exit_2() {
    let p = model_path("small_cnn");
    let p = p.to_str().unwrap();
    for (args, needle) in [
        (vec!["verify", p, "--atol=-1"], "--atol -1: must be"),
        (vec!["verify", p, "--samples", "0"], "--samples"),
        (
            vec!["verify", p, "--passes", "no-such-pass"],
            "no-such-pass",
        ),
        (vec!["verify", "missing.onnx"], "missing.onnx"),
        (
            vec!["verify", p, "--reference", "onnxruntime"],
            "onnxruntime",
        ),
    ] {
        let o = convgraph(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(needle),
            "{args:?}: {}",
            text(&o)
        );
    }
}

/// A test-only "rewrite" that is wrong on purpose: it changes one weight of the depthwise
/// conv `dw` (channel 4, the kernel centre) by half. (Channel 3 would not do: its
/// outputs are all negative on these inputs, and the Clip after it hides any change.)
fn corrupt_dw_weight(g: &mut Graph, _notes: &mut Notes) -> anyhow::Result<bool> {
    let w = g.constants.get_mut("dw.w").unwrap();
    let mut v = w.as_f32().unwrap().clone();
    v[[4, 0, 1, 1]] *= 1.5;
    *w = Tensor::F32(v);
    Ok(true)
}

#[test]
fn a_wrong_pass_is_caught_and_its_node_named() {
    let path = model_path("small_cnn");
    let original = convgraph::onnx::load_model(&path).unwrap();
    let samples = seeded_samples(&original, 3, 0).unwrap();
    let tol = Tolerance::default();

    // A correct pass: within tolerance.
    let good = verify_passes(
        &original,
        &["lower-1x1-conv".into()],
        &PassOptions::default(),
        &samples,
        tol,
    )
    .unwrap();
    assert!(good.ok(), "{good}");
    assert_eq!(good.divergence, None);

    let mut bad = original.clone();
    assert!(corrupt_dw_weight(&mut bad, &mut Notes::new()).unwrap());
    let c = compare_graphs(&original, &bad, &samples, tol).unwrap();
    assert!(!c.ok(), "{c}");
    let d = c.divergence.as_ref().expect("a divergence");
    assert_eq!(
        (d.node.as_str(), d.op.as_str(), d.tensor.as_str()),
        ("dw", "Conv", "d")
    );
    // Re-fed the reference's input, only channel 4 of dw's output can differ.
    assert_eq!(d.report.first_outlier.as_ref().unwrap()[1], 4);
    assert!(c.to_string().contains("from node 'dw' (Conv)"), "{c}");

    // tract as the reference: asked for its intermediate tensors by name, it names the same
    // node of the wrong graph.
    let t = compare_with_tract(&path, &bad, &samples, tol).unwrap();
    assert!(!t.ok(), "{t}");
    let d = t.divergence.as_ref().expect("a divergence against tract");
    assert_eq!((d.node.as_str(), d.op.as_str()), ("dw", "Conv"), "{t}");
    assert_eq!(t.reference, "tract");
}

#[test]
fn verify_on_given_inputs_runs_one_sample() {
    let graph = convgraph::onnx::load_model(&model_path("lesson_multi_in")).unwrap();
    let x = seeded_samples(&graph, 1, 42)
        .unwrap()
        .remove(0)
        .remove("x")
        .unwrap();
    let file = tmp("lesson_x.npy");
    convgraph::npy::write(&file, &x).unwrap();
    let spec = format!("x={}", file.display());
    let o = convgraph(&[
        "verify",
        model_path("lesson_multi_in").to_str().unwrap(),
        "--input",
        &spec,
        "--reference",
        "tract",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let cs = doc["comparisons"].as_array().unwrap();
    // No passes with a reference: only the tract comparison runs.
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0]["reference"], "tract");
    assert_eq!(cs[0]["samples"], 1);
    assert_eq!(cs[0]["outputs"][0]["outliers"], 0);
}
