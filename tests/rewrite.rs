//! `rewrite` end to end: every shipped model, rewritten with each pass set and written out as
//! ONNX, still gives tract's numbers when tract loads the written file, and when convgraph
//! reads it back; import(export(g)) is the same IR; the `rewrite` command's contract.

use convgraph::ir::{analyze, print::print, DimBindings};
use convgraph::onnx::{export_model, import_model, load_model, save_model};
use convgraph::passes::{run_pipeline, PassOptions};
use convgraph::verify::{compare, tract, Tolerance};
use convgraph::{Graph, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;
use tract_onnx::pb::{attribute_proto::AttributeType, ModelProto, NodeProto};

mod common;
use common::{model_path, run, seeded_inputs};

const MODELS: &[&str] = &[
    "lesson_multi_in",
    "lesson_multi_in_out",
    "lesson_conv_1x1",
    "small_cnn",
];

const PASS_SETS: &[&[&str]] = &[
    &[],
    &["lower-1x1-conv"],
    &["lower-stack"],
    &["eliminate-identity"],
    &["lower-1x1-conv", "lower-stack", "eliminate-identity"],
    &["lower-stack", "raise-stack"],
];

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rewrite");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn passes(set: &[&str]) -> Vec<String> {
    set.iter().map(|s| s.to_string()).collect()
}

fn assert_close(actual: &[Tensor], expected: &[Tensor], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: output count");
    for (a, e) in actual.iter().zip(expected) {
        let r = compare(a, e, Tolerance::default());
        assert!(r.ok(), "{what}: {r}");
    }
}

fn decode(path: &Path) -> ModelProto {
    let bytes = std::fs::read(path).unwrap();
    <ModelProto as prost::Message>::decode(bytes.as_slice()).unwrap()
}

fn ir_text(g: &Graph) -> String {
    print(g, &analyze(g, &DimBindings::default()).unwrap())
}

#[test]
fn every_rewritten_file_agrees_with_tract_on_the_original() {
    for name in MODELS {
        let graph = load_model(&model_path(name)).unwrap();
        let inputs = seeded_inputs(&graph, 3);
        let expected = tract::run(&model_path(name), &inputs).unwrap();
        for set in PASS_SETS {
            let what = format!("{name} with [{}]", set.join(","));
            let mut g = graph.clone();
            run_pipeline(&mut g, &passes(set), &PassOptions::default()).unwrap();
            let out = tmp(&format!("{name}.{}.onnx", set.join("+")));
            save_model(&g, &out).unwrap();

            let proto = decode(&out);
            let graph_proto = proto.graph.as_ref().unwrap();
            assert!(
                !graph_proto.node.iter().any(|n| n.op_type == "Stack"),
                "{what}: Stack written to ONNX"
            );
            assert_eq!(proto.opset_import[0].version, graph.opset, "{what}");

            let by_tract = tract::run(&out, &inputs).unwrap();
            assert_close(
                &by_tract,
                &expected,
                &format!("{what}: tract on the written file"),
            );
            let reimported = load_model(&out).unwrap();
            assert_close(
                &run(&reimported, &inputs),
                &expected,
                &format!("{what}: convgraph on the written file"),
            );
            assert_close(&run(&g, &inputs), &expected, &format!("{what}: in memory"));
        }
    }
}

#[test]
fn import_of_export_prints_the_same_ir() {
    for name in MODELS {
        let graph = load_model(&model_path(name)).unwrap();
        for set in PASS_SETS {
            let mut g = graph.clone();
            run_pipeline(&mut g, &passes(set), &PassOptions::default()).unwrap();
            let back = import_model(&export_model(&g).unwrap()).unwrap();
            // The importer raises Unsqueeze+Concat into Stack, so a lowered Stack comes back
            // raised: compare with the graph as the importer would see it.
            let mut want = g.clone();
            run_pipeline(
                &mut want,
                &passes(&["raise-stack"]),
                &PassOptions::default(),
            )
            .unwrap();
            assert_eq!(
                ir_text(&back),
                ir_text(&want),
                "{name} with [{}]",
                set.join(",")
            );
        }
        // Without passes, the round trip is the identity on the printed IR.
        let back = import_model(&export_model(&graph).unwrap()).unwrap();
        assert_eq!(ir_text(&back), ir_text(&graph), "{name}");
    }
}

fn ints_attr(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    n.attribute
        .iter()
        .find(|a| a.name == name)
        .inspect(|a| assert_eq!(a.r#type, AttributeType::Ints as i32))
        .map(|a| a.ints.clone())
}

fn int_attr(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute
        .iter()
        .find(|a| a.name == name)
        .inspect(|a| assert_eq!(a.r#type, AttributeType::Int as i32))
        .map(|a| a.i)
}

#[test]
fn exported_stack_becomes_unsqueeze_concat() {
    let graph = load_model(&model_path("small_cnn")).unwrap();
    assert!(graph.nodes.iter().any(|n| n.op.name() == "Stack"));
    let inputs = seeded_inputs(&graph, 0);
    let expected = tract::run(&model_path("small_cnn"), &inputs).unwrap();
    // Opset 17 (the model's): axes as a constant input. Opset 12: axes as an attribute.
    for opset in [17, 12] {
        let mut g = graph.clone();
        g.opset = opset;
        let model = export_model(&g).unwrap();
        let gp = model.graph.as_ref().unwrap();
        let concat = gp.node.iter().find(|n| n.name == "stack").unwrap();
        assert_eq!(concat.op_type, "Concat");
        assert_eq!(int_attr(concat, "axis"), Some(1));
        assert_eq!(concat.output, ["st"]);
        assert_eq!(concat.input.len(), 2);
        for (input, source) in concat.input.iter().zip(["dn", "dg"]) {
            let u = gp
                .node
                .iter()
                .find(|n| n.output == [input.clone()])
                .unwrap();
            assert_eq!(u.op_type, "Unsqueeze", "opset {opset}");
            assert_eq!(u.input[0], source);
            if opset >= 13 {
                assert_eq!(u.input.len(), 2);
                let axes = gp
                    .initializer
                    .iter()
                    .find(|t| t.name == u.input[1])
                    .unwrap();
                let axes = convgraph::onnx::tensor_from_proto(axes).unwrap();
                assert_eq!(axes.to_i64_vec().unwrap(), [1]);
                assert_eq!(ints_attr(u, "axes"), None);
            } else {
                assert_eq!(u.input.len(), 1);
                assert_eq!(ints_attr(u, "axes"), Some(vec![1]));
            }
        }
        assert!(gp.node.iter().all(|n| n.op_type != "Stack"));
        let out = tmp(&format!("small_cnn.opset{opset}.onnx"));
        save_model(&g, &out).unwrap();
        assert_close(
            &tract::run(&out, &inputs).unwrap(),
            &expected,
            &format!("small_cnn at opset {opset}"),
        );
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_convgraph"))
}

#[test]
fn rewrite_command_writes_a_model_with_the_passes_applied() {
    let out = tmp("cli_small_cnn.onnx");
    let _ = std::fs::remove_file(&out);
    let model = model_path("small_cnn");
    let o = bin()
        .args(["rewrite", model.to_str().unwrap()])
        .args(["--passes", "lower-1x1-conv,lower-stack", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
    // The depthwise 3x3 and the stem cannot be lowered: the command says so.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("note stem: not lowered"), "{stdout}");

    let proto = decode(&out);
    let ops: Vec<&str> = proto
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    // stem and dw stay Conv; pw and down (1x1) became MatMuls.
    assert_eq!(ops.iter().filter(|o| **o == "Conv").count(), 2, "{ops:?}");
    assert_eq!(ops.iter().filter(|o| **o == "MatMul").count(), 2, "{ops:?}");
    assert_eq!(ops.iter().filter(|o| **o == "Unsqueeze").count(), 2);

    let g = load_model(&out).unwrap();
    let inputs = seeded_inputs(&g, 5);
    let expected = tract::run(&model, &inputs).unwrap();
    assert_close(&tract::run(&out, &inputs).unwrap(), &expected, "cli output");
}

/// Runs `rewrite` expecting exit 2, one stderr line containing each needle, and no file at
/// `out` nor a temporary one beside it.
fn assert_rewrite_fails(model: &Path, extra: &[&str], out: &Path, needles: &[&str]) {
    let _ = std::fs::remove_file(out);
    let o = bin()
        .arg("rewrite")
        .arg(model)
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panick"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "missing '{n}' in: {stderr}");
    }
    assert!(!out.exists(), "{} was written", out.display());
    if let Some(dir) = out.parent().filter(|d| d.exists()) {
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}

#[test]
fn rewrite_of_a_bad_model_exits_2_with_one_line_and_writes_nothing() {
    // Its own folder: the leftover check must not see the temporary files of rewrites that
    // other tests run at the same time in tmp("").
    let dir = tmp("failing");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("garbage.onnx");
    std::fs::write(&bad, b"this is not a protobuf").unwrap();
    let out = dir.join("garbage.out.onnx");
    assert_rewrite_fails(&bad, &["--passes", "lower-stack"], &out, &["garbage.onnx"]);

    let missing = dir.join("does_not_exist.onnx");
    assert_rewrite_fails(&missing, &[], &out, &["does_not_exist.onnx"]);

    // A good model with an unknown pass: the file and the pass are named.
    let model = model_path("small_cnn");
    assert_rewrite_fails(
        &model,
        &["--passes", "no-such-pass"],
        &out,
        &["small_cnn.onnx", "no-such-pass"],
    );

    // The output directory does not exist: the output path is named.
    let nowhere = dir.join("no_such_dir").join("out.onnx");
    assert_rewrite_fails(&model, &[], &nowhere, &["out.onnx", "cannot write"]);
}
