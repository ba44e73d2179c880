//! Every model under models/: convgraph against tract on the same seeded inputs, before and
//! after `lower-1x1-conv`, with snapshots of the IR; and the lesson's numbers exactly.

use convgraph::ir::{analyze, print::print, DimBindings, Op};
use convgraph::passes::{run_pipeline, PassOptions};
use convgraph::snapshot::summarize;
use convgraph::verify::{compare, tract, Tolerance};
use convgraph::Tensor;

mod common;
use common::{model_path, run, seeded_inputs, MODELS};

#[test]
fn every_model_agrees_with_tract_before_and_after_lowering() {
    for name in MODELS {
        let path = model_path(name);
        let graph = convgraph::onnx::load_model(&path).unwrap();
        let mut lowered = graph.clone();
        run_pipeline(
            &mut lowered,
            &["lower-1x1-conv".to_string()],
            &PassOptions::default(),
        )
        .unwrap();
        for seed in [0, 1] {
            let inputs = seeded_inputs(&graph, seed);
            let expected = tract::run(&path, &inputs).unwrap();
            for (which, g) in [("original", &graph), ("lowered", &lowered)] {
                let actual = run(g, &inputs);
                assert_eq!(actual.len(), expected.len());
                for (a, e) in actual.iter().zip(&expected) {
                    let r = compare(a, e, Tolerance::default());
                    assert!(r.ok(), "{name} ({which}, seed {seed}) vs tract: {r}");
                }
            }
        }
    }
}

#[test]
fn output_summaries_on_seed_0() {
    for name in MODELS {
        let graph = convgraph::onnx::load_model(&model_path(name)).unwrap();
        let inputs = seeded_inputs(&graph, 0);
        let expected = tract::run(&model_path(name), &inputs).unwrap();
        let outs = run(&graph, &inputs);
        let mut text = String::new();
        for ((decl, a), e) in graph.outputs.iter().zip(&outs).zip(&expected) {
            assert!(compare(a, e, Tolerance::default()).ok(), "{name} vs tract");
            text.push_str(&format!("{}: {}\n", decl.name, summarize(a)));
        }
        insta::assert_snapshot!(format!("{name}.outputs"), text);
    }
}

#[test]
fn ir_snapshots_before_and_after_lowering() {
    for name in MODELS {
        let mut graph = convgraph::onnx::load_model(&model_path(name)).unwrap();
        let facts = analyze(&graph, &DimBindings::default()).unwrap();
        insta::assert_snapshot!(format!("{name}.ir"), print(&graph, &facts));
        let notes = run_pipeline(
            &mut graph,
            &["lower-1x1-conv".to_string()],
            &PassOptions::default(),
        )
        .unwrap();
        let facts = analyze(&graph, &DimBindings::default()).unwrap();
        insta::assert_snapshot!(
            format!("{name}.lowered.ir"),
            format!("{}notes: {notes:?}\n", print(&graph, &facts))
        );
    }
}

/// The lesson's X (2x3x3) = [[0..8], [1..9]].
fn lesson_x() -> Tensor {
    Tensor::from_vec(
        &[1, 2, 3, 3],
        (0..9).chain(1..10).map(|v| v as f32).collect(),
    )
    .unwrap()
}

#[test]
fn lesson_multi_input_channels_gives_its_numbers() {
    let g = convgraph::onnx::load_model(&model_path("lesson_multi_in")).unwrap();
    let y = run(&g, &[lesson_x()]);
    assert_eq!(
        y[0],
        Tensor::from_vec(&[1, 1, 2, 2], vec![56f32, 72., 104., 120.]).unwrap()
    );
}

#[test]
fn lesson_multi_output_channels_stacks_one_sum_per_kernel() {
    let g = convgraph::onnx::load_model(&model_path("lesson_multi_in_out")).unwrap();
    let y = run(&g, &[lesson_x()]);
    // K+1 adds the sum of the 8 window inputs to each output; K+2 twice that.
    let expected = vec![
        56f32, 72., 104., 120., 76., 100., 148., 172., 96., 128., 192., 224.,
    ];
    assert_eq!(y[0], Tensor::from_vec(&[1, 3, 2, 2], expected).unwrap());
}

#[test]
fn lesson_1x1_conv_equals_one_matrix_product() {
    let mut g = convgraph::onnx::load_model(&model_path("lesson_conv_1x1")).unwrap();
    let x = seeded_inputs(&g, 7);
    let conv = run(&g, &x);
    run_pipeline(
        &mut g,
        &["lower-1x1-conv".to_string()],
        &PassOptions::default(),
    )
    .unwrap();
    assert!(
        !g.nodes.iter().any(|n| matches!(n.op, Op::Conv(_))),
        "a 1x1 Conv was left"
    );
    assert!(g.nodes.iter().any(|n| matches!(n.op, Op::MatMul)));
    let mm = run(&g, &x);
    let (a, b) = (conv[0].as_f32().unwrap(), mm[0].as_f32().unwrap());
    let diff: f32 = a.iter().zip(b.iter()).map(|(p, q)| (p - q).abs()).sum();
    assert!(diff < 1e-6, "sum |conv - matmul| = {diff}");
}
