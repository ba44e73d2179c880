//! How a model's runs scale from one thread to two, node by node. Runs on a 1-thread and a
//! 2-thread pool alternate in one process, so that the machine's slow and fast phases hit
//! both alike (on this project's shared machine, two `convgraph bench --threads N`
//! processes a minute apart can differ by 1.5x). Prints the median per-pair speedup of
//! plain runs and the nodes that lose the most time against a perfect 2x (from profiled,
//! unfused runs). `cargo run --release --example thread_scaling -- MODEL [PAIRS]`.

use anyhow::{Context, Result};
use convgraph::bench::Case;
use convgraph::passes::PassOptions;
use std::collections::HashMap;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).context("usage: thread_scaling MODEL [PAIRS]")?;
    let pairs: usize = args.get(2).map_or(Ok(10), |s| s.parse())?;
    anyhow::ensure!(pairs > 0, "PAIRS must be at least 1");
    let case = Case::load(
        model.as_ref(),
        &[],
        &PassOptions::default(),
        0,
        HashMap::new(),
    )?;
    let runner = case.runner()?;
    let pools = [1, 2].map(|t| rayon::ThreadPoolBuilder::new().num_threads(t).build());
    let nodes = case.graph.nodes.len();
    let (mut total, mut per_node) = ([vec![], vec![]], [vec![0f64; nodes], vec![0f64; nodes]]);
    // Two warm-up pairs (lazily packed weights, allocator), then the measured ones.
    for pair in 0..pairs + 2 {
        for (k, pool) in pools.iter().enumerate() {
            let pool = pool.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
            let ms = pool.install(|| case.time_run(&runner, None))?;
            let times = &mut per_node[k];
            pool.install(|| {
                runner.run_profiled(case.inputs.clone(), |r| {
                    if pair >= 2 {
                        times[r.index] += r.elapsed.as_secs_f64() * 1e3 / pairs as f64;
                    }
                })
            })?;
            if pair >= 2 {
                total[k].push(ms);
            }
        }
    }
    let ratios: Vec<f64> = total[0].iter().zip(&total[1]).map(|(a, b)| a / b).collect();
    println!(
        "{model}: 1 thread {:.1} ms, 2 threads {:.1} ms (medians); speedup per pair: median \
         {:.2}, min {:.2}, max {:.2}",
        median(&total[0]),
        median(&total[1]),
        median(&ratios),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
    );
    let [one, two] = &per_node;
    let mut lost: Vec<usize> = (0..nodes).collect();
    lost.sort_by(|&a, &b| (two[b] - one[b] / 2.0).total_cmp(&(two[a] - one[a] / 2.0)));
    println!("ms lost against 2x   1 thread   2 threads  speedup  node");
    for &i in lost.iter().take(15) {
        let n = &case.graph.nodes[i];
        println!(
            "{:>18.3} {:>10.3} {:>11.3} {:>8.2}  {} {}",
            two[i] - one[i] / 2.0,
            one[i],
            two[i],
            one[i] / two[i],
            n.op.name(),
            n.name
        );
    }
    Ok(())
}
