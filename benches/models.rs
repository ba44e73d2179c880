//! Criterion benchmarks: convgraph against tract on the same model and seeded input, one
//! thread each (tract runs single-threaded in this build). One group per model:
//! `models/small_cnn.onnx`, three torchvision exports and the nine ONNX `light` nets
//! (AlexNet ... ZFNet-512, opset 9) that `scripts/fetch-data.sh` writes under `data/` (each
//! skipped with a note when missing, so `cargo bench` works on a fresh checkout).
//!
//! Run: `cargo bench --bench models` (add `-- resnet18` or `-- light_` to pick groups).

use convgraph::bench::Case;
use convgraph::passes::{PassOptions, DEFAULT_PASSES};
use convgraph::verify::tract::Prepared;
use criterion::{criterion_group, BatchSize, Criterion};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

fn models() -> Vec<(String, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut v = vec![("small_cnn".to_string(), root.join("models/small_cnn.onnx"))];
    for net in ["resnet18", "mobilenet_v2", "squeezenet1_1"] {
        let p = root.join(format!("data/torchvision/{net}-legacy/model.onnx"));
        if p.exists() {
            v.push((net.to_string(), p));
        } else {
            eprintln!(
                "skipping {net}: {} is missing (scripts/fetch-data.sh)",
                p.display()
            );
        }
    }
    let light = root.join("data/onnx-cases/light");
    for net in [
        "bvlc_alexnet",
        "densenet121",
        "inception_v1",
        "inception_v2",
        "resnet50",
        "shufflenet",
        "squeezenet",
        "vgg19",
        "zfnet512",
    ] {
        let p = light.join(format!("test_{net}/model.onnx"));
        if p.exists() {
            v.push((format!("light_{net}"), p));
        } else {
            eprintln!(
                "skipping light_{net}: {} is missing (scripts/fetch-data.sh)",
                p.display()
            );
        }
    }
    v
}

fn bench_models(c: &mut Criterion) {
    // One thread for convgraph, as for tract: the comparison is per core.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    for (name, path) in models() {
        // The passes `convgraph bench` applies by default, so both time the same graph.
        let passes: Vec<String> = DEFAULT_PASSES.iter().map(|p| p.to_string()).collect();
        let case = match Case::load(&path, &passes, &PassOptions::default(), 0, HashMap::new()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skipping {name}: {e:#}");
                continue;
            }
        };
        let runner = case.runner().expect("plan");
        let ordered = case.ordered_inputs();
        let tract = Prepared::new(&path, &ordered).expect("tract loads the model");
        let values = Prepared::values(&ordered).expect("tract inputs");

        let mut g = c.benchmark_group(&name);
        // Real nets take tens of ms a run: fewer samples keep a group near a minute.
        if name != "small_cnn" {
            g.sample_size(10).measurement_time(Duration::from_secs(5));
        }
        g.bench_function("convgraph", |b| {
            pool.install(|| {
                b.iter_batched(
                    || case.inputs.clone(),
                    |inputs| runner.run(inputs).expect("convgraph runs"),
                    BatchSize::LargeInput,
                )
            })
        });
        g.bench_function("tract", |b| {
            b.iter_batched(
                || values.clone(),
                |v| tract.run_values(v).expect("tract runs"),
                BatchSize::LargeInput,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, bench_models);
#[global_allocator]
static ALLOCATOR: convgraph::malloc_tuning::LineAligned = convgraph::malloc_tuning::LineAligned;

// `criterion_main!`'s body, after the allocator settings of the command line (huge pages,
// freed memory kept for the next run), which must come before anything else runs.
fn main() {
    convgraph::malloc_tuning::with_huge_pages();
    convgraph::malloc_tuning::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
