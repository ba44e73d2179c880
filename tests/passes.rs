//! The rewrite passes on every model under models/ and on small built graphs: each rewritten
//! graph gives the original's numbers (within the tolerance rule) on seeded inputs, with
//! snapshots of the IR before and after; the lesson's decomposition replayed with its exact
//! numbers; property tests of `lower-1x1-conv` and `decompose-channels` on random convs.

use convgraph::cli::random_tensor;
use convgraph::ir::{
    analyze, check, print::print, ConvAttrs, Dim, DimBindings, Node, Op, PadAttrs, PadMode,
    Padding, ValueDecl, Window,
};
use convgraph::passes::{lookup, run_pipeline, Notes, PassOptions};
use convgraph::verify::{compare, Tolerance};
use convgraph::{DType, Graph, Tensor};
use proptest::prelude::*;
use std::path::PathBuf;

mod common;
use common::{load, run, seeded_inputs};

const MODELS: &[&str] = &[
    "lesson_multi_in",
    "lesson_multi_in_out",
    "lesson_conv_1x1",
    "small_cnn",
];

/// The passes this file covers (other passes have their own tests).
const PASSES: &[&str] = &[
    "lower-1x1-conv",
    "fold-batchnorm",
    "fold-constants",
    "decompose-channels",
];

/// Runs one pass as the pipeline would (checker after it); returns whether it changed the
/// graph and its notes.
fn apply(g: &mut Graph, pass: &str, opts: &PassOptions) -> (bool, Notes) {
    let mut notes = Notes::new();
    let changed = lookup(pass).unwrap()(g, opts, &mut notes).unwrap();
    check(g).unwrap_or_else(|e| panic!("checker after {pass}: {e:#}"));
    (changed, notes)
}

fn assert_same_numbers(a: &Graph, b: &Graph, what: &str) {
    for seed in [0, 1] {
        let inputs = seeded_inputs(a, seed);
        let (x, y) = (run(a, &inputs), run(b, &inputs));
        assert_eq!(x.len(), y.len(), "{what}");
        for (p, q) in x.iter().zip(&y) {
            let r = compare(q, p, Tolerance::default());
            assert!(r.ok(), "{what} (seed {seed}): {r}");
        }
    }
}

fn ir(g: &Graph) -> String {
    print(g, &analyze(g, &DimBindings::default()).unwrap())
}

fn count(g: &Graph, op: &str) -> usize {
    g.nodes.iter().filter(|n| n.op.name() == op).count()
}

#[test]
fn every_pass_on_every_model_keeps_the_numbers() {
    let mut applied = Vec::new();
    for model in MODELS {
        let graph = load(model);
        for pass in PASSES {
            let mut g = graph.clone();
            let (changed, notes) = apply(&mut g, pass, &PassOptions::default());
            if !changed {
                assert_eq!(g, graph, "{pass} on {model} said unchanged but changed");
                continue;
            }
            applied.push(format!("{model}: {pass}"));
            assert_same_numbers(&graph, &g, &format!("{pass} on {model}"));
            insta::assert_snapshot!(
                format!("{model}.{pass}"),
                format!(
                    "before:\n{}\nafter:\n{}notes: {notes:?}\n",
                    ir(&graph),
                    ir(&g)
                )
            );
        }
    }
    // A pass that silently stops applying fails here, not only in a missing snapshot.
    assert_eq!(
        applied,
        vec![
            "lesson_multi_in: decompose-channels",
            "lesson_multi_in_out: decompose-channels",
            "lesson_conv_1x1: lower-1x1-conv",
            "lesson_conv_1x1: decompose-channels",
            "small_cnn: lower-1x1-conv",
            "small_cnn: fold-batchnorm",
            "small_cnn: decompose-channels",
        ]
    );
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
fn lesson_replayed_sum_over_inputs_stack_over_outputs() {
    let mut g = load("lesson_multi_in_out");
    let conv = run(&g, &[lesson_x()]);
    apply(&mut g, "decompose-channels", &PassOptions::default());
    // c_o = 3 kernels, c_i = 2 channels: 6 single-channel correlations, 3 sums of 2, one Stack.
    assert_eq!(count(&g, "Conv"), 6);
    assert_eq!(count(&g, "Add"), 3);
    assert_eq!(count(&g, "Slice"), 2);
    assert_eq!(count(&g, "Squeeze"), 3);
    assert_eq!(count(&g, "Stack"), 1);
    assert_eq!(g.nodes.len(), 15);
    for n in g.nodes.iter().filter(|n| matches!(n.op, Op::Conv(_))) {
        assert_eq!(
            g.constants[&n.inputs[1]].shape(),
            &[1, 1, 2, 2],
            "{}",
            n.name
        );
    }
    let y = run(&g, &[lesson_x()]);
    let expected = vec![
        56f32, 72., 104., 120., 76., 100., 148., 172., 96., 128., 192., 224.,
    ];
    assert_eq!(y[0], Tensor::from_vec(&[1, 3, 2, 2], expected).unwrap());
    assert_eq!(y, conv);

    // One output channel: the sum alone, `corr2d_multi_in`.
    let mut g = load("lesson_multi_in");
    apply(&mut g, "decompose-channels", &PassOptions::default());
    assert_eq!((count(&g, "Conv"), count(&g, "Add")), (2, 1));
    let y = run(&g, &[lesson_x()]);
    assert_eq!(
        y[0],
        Tensor::from_vec(&[1, 1, 2, 2], vec![56f32, 72., 104., 120.]).unwrap()
    );
}

#[test]
fn decompose_channels_refuses_past_the_node_budget() {
    let graph = load("small_cnn");
    let mut g = graph.clone();
    let opts = PassOptions { max_nodes: 100 };
    let e = run_pipeline(&mut g, &["decompose-channels".to_string()], &opts).unwrap_err();
    let text = format!("{e:#}");
    // stem (60 nodes) and dw (25) fit; pw, 8x8 channels with bias, takes
    // 8 slices + 64 convs + 56 adds + 8 bias adds + 8 squeezes + 1 stack = 145.
    assert!(
        text.contains("node 'pw' (Conv)") && text.contains("145 nodes") && text.contains("100"),
        "{text}"
    );
    assert_eq!(g, graph, "a refused decomposition left the graph changed");
    // The default budget takes the whole model.
    let (changed, _) = apply(&mut g, "decompose-channels", &PassOptions::default());
    assert!(changed);
    assert_eq!(count(&g, "Conv"), 24 + 8 + 64 + 128);
}

/// `--max-nodes` sets the same budget on the command line: refused with exit 2 and one line
/// naming the Conv; the default budget takes it.
#[test]
fn max_nodes_flag_sets_the_budget() {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/small_cnn.onnx");
    let inspect = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_convgraph"))
            .arg("inspect")
            .arg(&model)
            .args(["--passes", "decompose-channels"])
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = inspect(&["--max-nodes", "100"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("node 'pw' (Conv)") && stderr.contains("145 nodes"),
        "{stderr}"
    );
    let ok = inspect(&[]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn fold_batchnorm_removes_small_cnns_batchnorm() {
    let graph = load("small_cnn");
    let mut g = graph.clone();
    let (changed, notes) = apply(&mut g, "fold-batchnorm", &PassOptions::default());
    assert!(changed && notes.is_empty(), "{notes:?}");
    assert_eq!(count(&g, "BatchNormalization"), 0);
    let stem = g.nodes.iter().find(|n| n.name == "stem").unwrap();
    assert_eq!(stem.outputs, vec!["s_bn".to_string()]);
    assert!(!g.constants.contains_key("bn.scale") && !g.constants.contains_key("stem.w"));
    assert_same_numbers(&graph, &g, "fold-batchnorm on small_cnn");
}

#[test]
fn fold_batchnorm_leaves_a_conv_output_used_twice() {
    let mut g = load("small_cnn");
    // Make the stem's output a second graph output: the unnormalized value is needed.
    g.outputs.push(ValueDecl {
        name: "s".into(),
        dtype: DType::F32,
        dims: None,
        wrappers: vec![],
    });
    let before = g.clone();
    let (changed, notes) = apply(&mut g, "fold-batchnorm", &PassOptions::default());
    assert!(!changed);
    assert_eq!(g, before);
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("bn: not folded") && notes[0].contains("graph output"));
}

/// x -> Conv(x, Mul(Transpose(w_t), 2)) -> y, plus two graph outputs made of constants only.
fn graph_with_constant_subgraphs() -> Graph {
    let mut g = Graph {
        name: "fold".into(),
        opset: 17,
        ..Default::default()
    };
    g.inputs.push(ValueDecl {
        name: "x".into(),
        dtype: DType::F32,
        dims: Some([1, 2, 4, 4].map(Dim::Fixed).to_vec()),
        wrappers: vec![],
    });
    let t = |shape: &[usize], v: Vec<f32>| Tensor::from_vec(shape, v).unwrap();
    g.constants.insert(
        "w_t".into(),
        t(&[2, 3, 1, 1], (0..6).map(|v| v as f32 - 2.5).collect()),
    );
    g.constants.insert("two".into(), Tensor::scalar(2f32));
    g.constants
        .insert("ones".into(), t(&[1, 3], vec![1., 1., 1.]));
    let node = |name: &str, op: Op, inputs: &[&str]| Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![name.into()],
    };
    g.nodes = vec![
        node(
            "w",
            Op::Transpose {
                perm: Some(vec![1, 0, 2, 3]),
            },
            &["w_t"],
        ),
        node(
            "w2",
            Op::Binary(convgraph::ir::BinaryOp::Mul),
            &["w", "two"],
        ),
        node(
            "y",
            Op::Conv(ConvAttrs {
                window: Window {
                    kernel_shape: None,
                    strides: vec![],
                    dilations: vec![],
                    padding: Padding::Explicit(vec![]),
                },
                group: 1,
            }),
            &["x", "w2"],
        ),
        node(
            "k",
            Op::Binary(convgraph::ir::BinaryOp::Add),
            &["ones", "two"],
        ),
    ];
    for (name, dtype) in [("y", DType::F32), ("k", DType::F32)] {
        g.outputs.push(ValueDecl {
            name: name.into(),
            dtype,
            dims: None,
            wrappers: vec![],
        });
    }
    g
}

#[test]
fn fold_constants_evaluates_constant_nodes_once() {
    let graph = graph_with_constant_subgraphs();
    let mut g = graph.clone();
    let (changed, notes) = apply(&mut g, "fold-constants", &PassOptions::default());
    assert!(changed);
    let left: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(left, vec!["y"]);
    assert!(notes.is_empty(), "{notes:?}");
    // The folded weight: w_t transposed, doubled; its sources are gone.
    let w2 = g.constants["w2"].as_f32().unwrap();
    assert_eq!(w2.shape(), &[3, 2, 1, 1]);
    assert_eq!(
        w2.iter().copied().collect::<Vec<_>>(),
        vec![-5., 1., -3., 3., -1., 5.]
    );
    assert!(!g.constants.contains_key("w_t") && !g.constants.contains_key("w"));
    // A graph output produced by a folded node is still an output, now a constant.
    assert_eq!(
        g.constants["k"],
        Tensor::from_vec(&[1, 3], vec![3f32, 3., 3.]).unwrap()
    );
    assert!(g.is_output("k"));
    assert_same_numbers(&graph, &g, "fold-constants");
    insta::assert_snapshot!(
        "built.fold-constants",
        format!(
            "before:\n{}\nafter:\n{}notes: {notes:?}\n",
            ir(&graph),
            ir(&g)
        )
    );
}

#[test]
fn fold_constants_keeps_a_node_whose_result_would_not_fit() {
    let mut g = graph_with_constant_subgraphs();
    // (1, 3 + 2^50) f32: petabytes, refused by tensor::limits before anything is computed.
    g.nodes.push(Node {
        name: "huge".into(),
        op: Op::Pad(PadAttrs {
            mode: PadMode::Constant,
            pads: Some(vec![0, 0, 0, 1 << 50]),
            value: 0.0,
        }),
        inputs: vec!["ones".into()],
        outputs: vec!["huge".into()],
    });
    g.nodes.push(Node {
        name: "h".into(),
        op: Op::Shape {
            start: 0,
            end: None,
        },
        inputs: vec!["huge".into()],
        outputs: vec!["h".into()],
    });
    g.outputs.push(ValueDecl {
        name: "h".into(),
        dtype: DType::I64,
        dims: None,
        wrappers: vec![],
    });
    let (changed, notes) = apply(&mut g, "fold-constants", &PassOptions::default());
    assert!(changed);
    let left: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(left, vec!["y", "huge", "h"]);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].starts_with("huge: not folded"), "{notes:?}");
    assert!(
        g.constants.contains_key("ones"),
        "the kept node's input was dropped"
    );
}

#[allow(clippy::too_many_arguments)]
fn conv_graph(
    n: usize,
    c: usize,
    m: usize,
    hw: [usize; 2],
    k: [usize; 2],
    a: ConvAttrs,
    bias: bool,
    seed: u64,
) -> Graph {
    let mut g = Graph {
        name: "p".into(),
        opset: 17,
        ..Default::default()
    };
    g.inputs.push(ValueDecl {
        name: "x".into(),
        dtype: DType::F32,
        dims: Some([n, c, hw[0], hw[1]].map(Dim::Fixed).to_vec()),
        wrappers: vec![],
    });
    let w = random_tensor(DType::F32, &[m, c / a.group, k[0], k[1]], seed).unwrap();
    g.constants.insert("w".into(), w);
    let mut inputs = vec!["x".to_string(), "w".to_string()];
    if bias {
        g.constants.insert(
            "b".into(),
            random_tensor(DType::F32, &[m], seed + 1).unwrap(),
        );
        inputs.push("b".into());
    }
    g.nodes.push(Node {
        name: "c".into(),
        op: Op::Conv(a),
        inputs,
        outputs: vec!["y".into()],
    });
    g.outputs.push(ValueDecl {
        name: "y".into(),
        dtype: DType::F32,
        dims: None,
        wrappers: vec![],
    });
    g
}

fn max_abs_diff(a: &Graph, b: &Graph, seed: u64) -> f32 {
    let x = seeded_inputs(a, seed);
    let (p, q) = (run(a, &x), run(b, &x));
    assert_eq!(p[0].shape(), q[0].shape());
    p[0].as_f32()
        .unwrap()
        .iter()
        .zip(q[0].as_f32().unwrap().iter())
        .map(|(u, v)| (u - v).abs())
        .fold(0f32, f32::max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    #[test]
    fn lowering_any_1x1_conv_keeps_the_numbers(
        n in 1usize..3, groups in 1usize..4, cg in 1usize..4, mg in 1usize..4,
        h in 1usize..9, w in 1usize..9, stride in [1usize..4, 1usize..4],
        pads in [0usize..3, 0usize..3, 0usize..3, 0usize..3], same in any::<bool>(),
        bias in any::<bool>(), seed in 0u64..1000,
    ) {
        let padding = if same { Padding::SameUpper } else { Padding::Explicit(pads.to_vec()) };
        let a = ConvAttrs {
            window: Window { kernel_shape: None, strides: stride.to_vec(), dilations: vec![], padding },
            group: groups,
        };
        let g = conv_graph(n, groups * cg, groups * mg, [h, w], [1, 1], a, bias, seed);
        let mut lowered = g.clone();
        let (changed, notes) = apply(&mut lowered, "lower-1x1-conv", &PassOptions::default());
        prop_assert!(changed, "{:?}", notes);
        prop_assert!(!lowered.nodes.iter().any(|n| matches!(n.op, Op::Conv(_))));
        let d = max_abs_diff(&g, &lowered, seed + 2);
        prop_assert!(d <= 1e-5, "max |conv - lowered| = {}", d);
    }

    #[test]
    fn decomposing_any_conv_keeps_the_numbers(
        groups in 1usize..3, cg in 1usize..4, mg in 1usize..3, h in 2usize..7, w in 2usize..7,
        k in [1usize..3, 1usize..3], stride in [1usize..3, 1usize..3], dil in [1usize..3, 1usize..3],
        pads in [0usize..2, 0usize..2, 0usize..2, 0usize..2], bias in any::<bool>(), seed in 0u64..1000,
    ) {
        prop_assume!((k[0] - 1) * dil[0] < h + pads[0] + pads[2]);
        prop_assume!((k[1] - 1) * dil[1] < w + pads[1] + pads[3]);
        let a = ConvAttrs {
            window: Window {
                kernel_shape: None,
                strides: stride.to_vec(),
                dilations: dil.to_vec(),
                padding: Padding::Explicit(pads.to_vec()),
            },
            group: groups,
        };
        let g = conv_graph(1, groups * cg, groups * mg, [h, w], k, a, bias, seed);
        let mut d = g.clone();
        let (changed, notes) = apply(&mut d, "decompose-channels", &PassOptions::default());
        prop_assert!(changed, "{:?}", notes);
        prop_assert_eq!(count(&d, "Conv"), groups * mg * cg);
        let diff = max_abs_diff(&g, &d, seed + 2);
        prop_assert!(diff <= 1e-5, "max |conv - decomposed| = {}", diff);
    }
}
