//! Real exported conv nets: torchvision architectures exported by both PyTorch exporters
//! (TorchScript at opset 17 with a symbolic batch, dynamo at opsets 18 and 20 with external
//! weights), run by convgraph and checked against onnxruntime's outputs recorded at export
//! time and against tract run here on the same input, before and after `lower-1x1-conv`.
//!
//! The models are not in the repository: `scripts/fetch-data.sh` exports them (random seeded
//! weights) into `data/torchvision/`, one ONNX backend-test case folder each. A missing case
//! fails its test with the command to run.

use convgraph::exec::Runner;
use convgraph::passes::{run_pipeline, PassOptions};
use convgraph::verify::{compare, tract, Tolerance};
use convgraph::{Graph, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

fn case_dir(case: &str) -> PathBuf {
    let root = std::env::var_os("CONVGRAPH_TORCHVISION_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/torchvision"));
    let dir = root.join(case);
    assert!(
        dir.join("model.onnx").exists() && dir.join("test_data_set_0/output_0.pb").exists(),
        "{} is missing: run `scripts/fetch-data.sh` (exports the torchvision nets with PyTorch)",
        dir.display()
    );
    dir
}

fn run(g: &Graph, input: &Tensor) -> Tensor {
    let map = HashMap::from([(g.inputs[0].name.clone(), input.clone())]);
    let mut outs = Runner::new(g).unwrap().run(map).unwrap();
    assert_eq!(outs.len(), 1, "the nets have one output");
    outs.remove(0).1
}

fn check_case(case: &str) {
    let dir = case_dir(case);
    let model = dir.join("model.onnx");
    let data = dir.join("test_data_set_0");
    let input = convgraph::onnx::load_tensor_pb(&data.join("input_0.pb")).unwrap();
    let from_ort = convgraph::onnx::load_tensor_pb(&data.join("output_0.pb")).unwrap();

    let graph = convgraph::onnx::load_model(&model).unwrap();
    assert_eq!(graph.inputs.len(), 1);
    let ours = run(&graph, &input);
    let r = compare(&ours, &from_ort, Tolerance::default());
    assert!(r.ok(), "{case}: convgraph vs onnxruntime: {r}");

    let from_tract = tract::run(&model, std::slice::from_ref(&input)).unwrap();
    let r = compare(&ours, &from_tract[0], Tolerance::default());
    assert!(r.ok(), "{case}: convgraph vs tract: {r}");

    let mut lowered = graph.clone();
    run_pipeline(
        &mut lowered,
        &["lower-1x1-conv".to_string()],
        &PassOptions::default(),
    )
    .unwrap();
    let r = compare(&run(&lowered, &input), &from_ort, Tolerance::default());
    assert!(
        r.ok(),
        "{case}: convgraph after lower-1x1-conv vs onnxruntime: {r}"
    );
}

macro_rules! cases {
    ($($test:ident => $case:literal,)*) => {
        $( #[test] fn $test() { check_case($case); } )*

        /// The folder holds exactly the cases tested here: a net the export script adds
        /// must get a test too.
        #[test]
        fn every_exported_case_is_tested() {
            let root = case_dir("resnet18-legacy").parent().unwrap().to_path_buf();
            let mut on_disk: Vec<String> = std::fs::read_dir(&root)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("model.onnx").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            on_disk.sort();
            let mut tested = vec![$($case.to_string()),*];
            tested.sort();
            assert_eq!(on_disk, tested);
        }
    };
}

cases! {
    resnet18_legacy => "resnet18-legacy",
    resnet18_dynamo18 => "resnet18-dynamo18",
    resnet18_dynamo20 => "resnet18-dynamo20",
    resnet50_legacy => "resnet50-legacy",
    resnet50_dynamo18 => "resnet50-dynamo18",
    resnet50_dynamo20 => "resnet50-dynamo20",
    mobilenet_v2_legacy => "mobilenet_v2-legacy",
    mobilenet_v2_dynamo18 => "mobilenet_v2-dynamo18",
    mobilenet_v2_dynamo20 => "mobilenet_v2-dynamo20",
    squeezenet1_1_legacy => "squeezenet1_1-legacy",
    squeezenet1_1_dynamo18 => "squeezenet1_1-dynamo18",
    squeezenet1_1_dynamo20 => "squeezenet1_1-dynamo20",
    shufflenet_v2_legacy => "shufflenet_v2_x1_0-legacy",
    shufflenet_v2_dynamo18 => "shufflenet_v2_x1_0-dynamo18",
    shufflenet_v2_dynamo20 => "shufflenet_v2_x1_0-dynamo20",
    googlenet_legacy => "googlenet-legacy",
    googlenet_dynamo18 => "googlenet-dynamo18",
    googlenet_dynamo20 => "googlenet-dynamo20",
    densenet121_legacy => "densenet121-legacy",
    densenet121_dynamo18 => "densenet121-dynamo18",
    densenet121_dynamo20 => "densenet121-dynamo20",
    efficientnet_b0_legacy => "efficientnet_b0-legacy",
    efficientnet_b0_dynamo18 => "efficientnet_b0-dynamo18",
    efficientnet_b0_dynamo20 => "efficientnet_b0-dynamo20",
    regnet_x_400mf_legacy => "regnet_x_400mf-legacy",
    regnet_x_400mf_dynamo18 => "regnet_x_400mf-dynamo18",
    regnet_x_400mf_dynamo20 => "regnet_x_400mf-dynamo20",
}
