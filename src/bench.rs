//! Timing model runs: the logic behind `convgraph bench`, shared with the criterion benches.
//!
//! A [`Case`] is a model loaded and passed through the pipeline once, with its seeded
//! inputs; [`interleaved`] times several engines on it one run each in turn, so that noise
//! from other processes on the machine hits all of them alike; [`Profile`] sums the time
//! of each node (from [`Runner::run_profiled`]) and derives GFLOP/s from shapes.

use crate::cli::inputs::gather_inputs;
use crate::exec::{NodeRun, Runner};
use crate::ir::{Graph, Op};
use crate::passes::{run_pipeline, PassOptions};
use crate::tensor::Tensor;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A model ready to time: the graph after the passes, and one seeded input per graph input.
pub struct Case {
    pub model: PathBuf,
    pub graph: Graph,
    pub inputs: HashMap<String, Tensor>,
}

impl Case {
    /// Loads `model`, runs `passes`, and seeds every input as `convgraph run` does (input
    /// `i` from `seed + i`; a symbolic dim from `dims`, else 1).
    pub fn load(
        model: &Path,
        passes: &[String],
        opts: &PassOptions,
        seed: u64,
        dims: HashMap<String, usize>,
    ) -> Result<Case> {
        let name = model.display().to_string();
        let mut graph = crate::onnx::load_model(model)?;
        run_pipeline(&mut graph, passes, opts).with_context(|| name.clone())?;
        let inputs = gather_inputs(&graph, &[], seed, dims).with_context(|| name.clone())?;
        Ok(Case {
            model: model.to_path_buf(),
            graph,
            inputs,
        })
    }

    /// The inputs in the graph's declaration order (the ONNX order, which tract uses).
    pub fn ordered_inputs(&self) -> Vec<Tensor> {
        self.graph
            .inputs
            .iter()
            .filter_map(|d| self.inputs.get(&d.name).cloned())
            .collect()
    }

    /// Plans the graph once; the runner borrows it.
    pub fn runner(&self) -> Result<Runner<'_>> {
        Runner::new(&self.graph).with_context(|| self.model.display().to_string())
    }

    /// One timed run in milliseconds. The inputs are cloned before the clock starts (a run
    /// consumes them) and the outputs are dropped after it stops. With a profile, each
    /// node's kernel time is added to it.
    pub fn time_run(&self, runner: &Runner, profile: Option<&mut Profile>) -> Result<f64> {
        let inputs = self.inputs.clone();
        let start = Instant::now();
        let outputs = match profile {
            Some(p) => p.run(runner, &self.graph, inputs)?,
            None => runner.run(inputs)?,
        };
        let ms = start.elapsed().as_secs_f64() * 1e3;
        drop(outputs);
        Ok(ms)
    }
}

/// One timed run of an engine: `measured` is false during warm-up (a profile should skip
/// those runs); returns the run's time in milliseconds.
pub type TimedRun<'a> = dyn FnMut(bool) -> Result<f64> + 'a;

/// Runs every engine `warmup` times, then `iters` times, one run of each in turn, so that a
/// burst of load from elsewhere lands on all engines rather than on one. Returns the
/// measured times in milliseconds, one vector per engine.
pub fn interleaved(
    warmup: usize,
    iters: usize,
    engines: &mut [&mut TimedRun<'_>],
) -> Result<Vec<Vec<f64>>> {
    for _ in 0..warmup {
        for e in engines.iter_mut() {
            e(false)?;
        }
    }
    let mut samples = vec![Vec::with_capacity(iters); engines.len()];
    for _ in 0..iters {
        for (e, s) in engines.iter_mut().zip(samples.iter_mut()) {
            s.push(e(true)?);
        }
    }
    Ok(samples)
}

/// Median, minimum and maximum of a set of run times.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub iters: usize,
}

/// Summarizes run times (the median of an even count is the mean of the middle two).
pub fn summarize(samples_ms: &[f64]) -> Result<Summary> {
    if samples_ms.is_empty() {
        bail!("no runs were timed");
    }
    let mut s = samples_ms.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Ok(Summary {
        median_ms: median,
        min_ms: s[0],
        max_ms: s[n - 1],
        iters: n,
    })
}

/// Floating-point operations of one node, from its shapes, for the ops whose cost is a
/// product (a multiply-add counts 2): Conv `2 * |Y| * Cin/group * kh * kw` (the weight's
/// dims after the first), MatMul `2 * |Y| * K`, Gemm `2 * M * N * K`. `None` for other ops.
/// K comes from the first input when it is there, else from the second (the weights): a
/// fused run hands a node an input it took over, or never computed (a BatchNorm applied by
/// the Conv as it packs X), as absent. `|Y|` is `output_len`, the first output's elements
/// (`NodeRun::output_len`: a Conv may have written it into a Concat's buffer).
pub fn node_flops(op: &Op, inputs: &[Option<&Tensor>], output_len: Option<usize>) -> Option<f64> {
    let out = output_len? as f64;
    let a = inputs.first().copied().flatten().map(|t| t.shape());
    let b = inputs.get(1).copied().flatten().map(|t| t.shape());
    let k = match op {
        Op::Conv(_) => b?.iter().skip(1).product(),
        // A 1-D A is a row vector, a 1-D B a column: K is its only dim.
        Op::MatMul => match (a, b) {
            (Some(a), _) => *a.last()?,
            (None, Some([k])) => *k,
            (None, b) => *b?.iter().rev().nth(1)?,
        },
        Op::Gemm(g) => match (a, b) {
            (Some(a), _) => *a.get(usize::from(!g.trans_a))?,
            (None, b) => *b?.get(usize::from(g.trans_b))?,
        },
        _ => return None,
    };
    Some(2.0 * out * k as f64)
}

/// Per-node time and FLOPs summed over the measured runs.
pub struct Profile {
    runs: usize,
    node_secs: Vec<f64>,
    node_flops: Vec<Option<f64>>,
}

/// One line of a profile report: an op type or a node.
#[derive(Clone, Debug)]
pub struct ProfileLine {
    /// The node's name, or the op's name for a by-op line.
    pub name: String,
    pub op: String,
    /// Nodes behind the line (1 for a node).
    pub count: usize,
    /// Mean milliseconds per run.
    pub ms: f64,
    /// Share of the summed node time, in percent.
    pub pct: f64,
    /// For Conv, MatMul and Gemm: FLOPs over time (a by-op line: over the time of its
    /// nodes whose FLOPs are known).
    pub gflops: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct ProfileReport {
    pub runs: usize,
    /// Sum of the nodes' mean times (excludes the interpreter's own bookkeeping).
    pub total_ms: f64,
    /// One line per op type, slowest first.
    pub by_op: Vec<ProfileLine>,
    /// The slowest nodes, slowest first.
    pub top_nodes: Vec<ProfileLine>,
}

impl Profile {
    pub fn new(graph: &Graph) -> Profile {
        Profile {
            runs: 0,
            node_secs: vec![0.0; graph.nodes.len()],
            node_flops: vec![None; graph.nodes.len()],
        }
    }

    /// One run of `graph` by `runner`, each node's time and FLOPs added. Runs are counted
    /// here, not at a node: a fused run skips nodes, at times the first (a BatchNorm that
    /// the Conv after it applies), whose count was 0 runs and a total for a mean.
    pub fn run(
        &mut self,
        runner: &Runner,
        graph: &Graph,
        inputs: HashMap<String, Tensor>,
    ) -> Result<Vec<(String, Tensor)>> {
        let outputs = runner.run_profiled(inputs, |r| self.record(graph, &r))?;
        self.runs += 1;
        Ok(outputs)
    }

    /// Adds one node's run.
    fn record(&mut self, graph: &Graph, r: &NodeRun) {
        let (Some(secs), Some(node)) = (self.node_secs.get_mut(r.index), graph.nodes.get(r.index))
        else {
            return;
        };
        *secs += r.elapsed.as_secs_f64();
        // Shapes are fixed for a case, so the last run's FLOPs are every run's.
        self.node_flops[r.index] = node_flops(&node.op, r.inputs, r.output_len);
    }

    /// Mean times per run, by op type and for the `top` slowest nodes.
    pub fn report(&self, graph: &Graph, top: usize) -> ProfileReport {
        let runs = self.runs.max(1) as f64;
        let total_secs: f64 = self.node_secs.iter().sum::<f64>() / runs;
        let pct = |secs: f64| {
            if total_secs > 0.0 {
                100.0 * secs / total_secs
            } else {
                0.0
            }
        };
        let gflops =
            |flops: Option<f64>, secs: f64| flops.filter(|_| secs > 0.0).map(|f| f / secs / 1e9);
        let mut nodes: Vec<ProfileLine> = Vec::with_capacity(graph.nodes.len());
        // Per op: count, seconds, FLOPs (None when no node of the op has a FLOP count) and
        // the seconds of the nodes that have one, which its GFLOP/s divides by.
        let mut ops: Vec<(&'static str, usize, f64, Option<f64>, f64)> = Vec::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            let secs = self.node_secs.get(i).copied().unwrap_or(0.0) / runs;
            let flops = self.node_flops.get(i).copied().flatten();
            let op = node.op.name();
            nodes.push(ProfileLine {
                name: node.name.clone(),
                op: op.to_string(),
                count: 1,
                ms: secs * 1e3,
                pct: pct(secs),
                gflops: gflops(flops, secs),
            });
            let entry = match ops.iter_mut().find(|e| e.0 == op) {
                Some(e) => e,
                None => {
                    ops.push((op, 0, 0.0, None, 0.0));
                    ops.last_mut().expect("just pushed")
                }
            };
            entry.1 += 1;
            entry.2 += secs;
            if let Some(f) = flops {
                entry.3 = Some(entry.3.unwrap_or(0.0) + f);
                entry.4 += secs;
            }
        }
        let mut by_op: Vec<ProfileLine> = ops
            .into_iter()
            .map(|(op, count, secs, flops, flop_secs)| ProfileLine {
                name: op.to_string(),
                op: op.to_string(),
                count,
                ms: secs * 1e3,
                pct: pct(secs),
                gflops: gflops(flops, flop_secs),
            })
            .collect();
        by_op.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        nodes.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        nodes.truncate(top);
        ProfileReport {
            runs: self.runs,
            total_ms: total_secs * 1e3,
            by_op,
            top_nodes: nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_and_even_counts() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            (s.median_ms, s.min_ms, s.max_ms, s.iters),
            (2.0, 1.0, 3.0, 3)
        );
        let s = summarize(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median_ms, 2.5);
        assert!(summarize(&[]).is_err());
    }

    #[test]
    fn interleaving_alternates_engines_and_skips_warmup() {
        let log = std::cell::RefCell::new(Vec::new());
        let mut a = |m: bool| {
            log.borrow_mut().push(('a', m));
            Ok(1.0)
        };
        let mut b = |m: bool| {
            log.borrow_mut().push(('b', m));
            Ok(2.0)
        };
        let s = interleaved(1, 2, &mut [&mut a, &mut b]).unwrap();
        assert_eq!(s, vec![vec![1.0, 1.0], vec![2.0, 2.0]]);
        assert_eq!(
            *log.borrow(),
            vec![
                ('a', false),
                ('b', false),
                ('a', true),
                ('b', true),
                ('a', true),
                ('b', true)
            ]
        );
    }

    #[test]
    fn conv_flops_from_shapes() {
        let x = Tensor::from_vec(&[1, 4, 5, 5], vec![0f32; 100]).unwrap();
        // group 2: the weight holds Cin/group = 2 channels.
        let w = Tensor::from_vec(&[6, 2, 3, 3], vec![0f32; 108]).unwrap();
        let y = Tensor::from_vec(&[1, 6, 3, 3], vec![0f32; 54]).unwrap();
        let op = Op::Conv(crate::ir::op::ConvAttrs {
            window: crate::ir::op::Window {
                kernel_shape: None,
                strides: vec![],
                dilations: vec![],
                padding: crate::ir::op::Padding::Valid,
            },
            group: 2,
        });
        let f = node_flops(&op, &[Some(&x), Some(&w)], Some(y.len())).unwrap();
        assert_eq!(f, 2.0 * 54.0 * 18.0);
    }

    fn conv_op(group: usize) -> Op {
        Op::Conv(crate::ir::op::ConvAttrs {
            window: crate::ir::op::Window {
                kernel_shape: None,
                strides: vec![],
                dilations: vec![],
                padding: crate::ir::op::Padding::Valid,
            },
            group,
        })
    }

    #[test]
    fn flops_without_the_first_input_come_from_the_weights() {
        let zeros = |s: &[usize]| Tensor::from_vec(s, vec![0f32; s.iter().product()]).unwrap();
        let (x, w, y) = (
            zeros(&[1, 4, 5, 5]),
            zeros(&[6, 2, 3, 3]),
            zeros(&[1, 6, 3, 3]),
        );
        let with = node_flops(&conv_op(2), &[Some(&x), Some(&w)], Some(y.len()));
        assert_eq!(
            node_flops(&conv_op(2), &[None, Some(&w)], Some(y.len())),
            with
        );
        assert_eq!(with, Some(2.0 * 54.0 * 18.0));
        // MatMul [2, 3, 5] x [5, 7]; Gemm 3 x 5 by 5 x 7, B stored transposed.
        let (a, b, y) = (zeros(&[2, 3, 5]), zeros(&[5, 7]), zeros(&[2, 3, 7]));
        let mm = 2.0 * 42.0 * 5.0;
        assert_eq!(
            node_flops(&Op::MatMul, &[Some(&a), Some(&b)], Some(y.len())),
            Some(mm)
        );
        assert_eq!(
            node_flops(&Op::MatMul, &[None, Some(&b)], Some(y.len())),
            Some(mm)
        );
        let v = zeros(&[5]);
        assert_eq!(
            node_flops(&Op::MatMul, &[None, Some(&v)], Some(zeros(&[2, 3]).len())),
            Some(2.0 * 6.0 * 5.0)
        );
        let gemm = Op::Gemm(crate::ir::op::GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: true,
            trans_b: true,
        });
        let (a, b, y) = (zeros(&[5, 3]), zeros(&[7, 5]), zeros(&[3, 7]));
        let g = 2.0 * 21.0 * 5.0;
        assert_eq!(
            node_flops(&gemm, &[Some(&a), Some(&b)], Some(y.len())),
            Some(g)
        );
        assert_eq!(node_flops(&gemm, &[None, Some(&b)], Some(y.len())), Some(g));
        assert_eq!(node_flops(&Op::MatMul, &[None, None], Some(2)), None);
    }

    /// x -> BatchNorm -> Relu -> 1x1 Conv: the fused run applies the BatchNorm as the Conv
    /// packs X, so node 0 never runs and the Conv's X reaches the profile as absent. The
    /// runs are still counted, the Conv still gets its FLOPs, and the by-op GFLOP/s divides
    /// the FLOPs by the time of the nodes that have them only.
    #[test]
    fn profile_of_a_conv_that_applies_a_batch_norm() {
        use crate::exec::test_graph::{decl, node};
        use crate::ir::UnaryOp;
        let mut g = Graph {
            name: "bn_conv".into(),
            opset: 17,
            inputs: vec![decl("x", &[1, 16, 6, 6])],
            outputs: vec![decl("y", &[1, 24, 6, 6])],
            nodes: vec![
                node(
                    "norm",
                    Op::BatchNorm { epsilon: 1e-5 },
                    &["x", "s", "b", "m", "v"],
                    "n",
                ),
                node("relu", Op::Unary(UnaryOp::Relu), &["n"], "r"),
                node("conv", conv_op(1), &["r", "w"], "y"),
            ],
            ..Default::default()
        };
        let ramp = |s: &[usize], scale: f32| {
            let n = s.iter().product();
            Tensor::from_vec(s, (0..n).map(|i| 0.5 + (i % 7) as f32 * scale).collect()).unwrap()
        };
        for (name, t) in [
            ("s", ramp(&[16], 0.1)),
            ("b", ramp(&[16], -0.2)),
            ("m", ramp(&[16], 0.05)),
            ("v", ramp(&[16], 0.3)),
            ("w", ramp(&[24, 16, 1, 1], -0.01)),
        ] {
            g.constants.insert(name.into(), t);
        }
        let runner = Runner::new(&g).unwrap();
        let x = HashMap::from([("x".to_string(), ramp(&[1, 16, 6, 6], -0.03))]);
        // The fusion this test is about happens: the BatchNorm and Relu run no kernel and
        // the Conv gets no X.
        let mut ran = Vec::new();
        runner
            .run_profiled(x.clone(), |r| ran.push((r.index, r.inputs[0].is_some())))
            .unwrap();
        assert_eq!(ran, [(2, false)]);
        let mut profile = Profile::new(&g);
        for _ in 0..2 {
            profile.run(&runner, &g, x.clone()).unwrap();
        }
        // Two runs, though none ran node 0: the times are means over two runs.
        let summed = profile.node_secs[2];
        let report = profile.report(&g, 3);
        assert_eq!(report.runs, 2);
        assert_eq!(report.total_ms, summed / 2.0 * 1e3);
        let flops = 2.0 * 24.0 * 36.0 * 16.0;
        assert_eq!(profile.node_flops[2], Some(flops));
        // By op: Conv's GFLOP/s from its one node; a second Conv without FLOPs (as an op
        // this function does not count) adds time but not to the GFLOP/s.
        profile.node_secs = vec![0.0, 0.0, 2e-3];
        profile.runs = 1;
        drop(runner);
        let line = |p: &Profile, g: &Graph| {
            let r = p.report(g, 3);
            r.by_op.iter().find(|l| l.op == "Conv").unwrap().gflops
        };
        assert_eq!(line(&profile, &g), Some(flops / 2e-3 / 1e9));
        g.nodes[0] = node("conv0", conv_op(1), &["x", "w"], "n");
        profile.node_secs[0] = 2e-3;
        assert_eq!(line(&profile, &g), Some(flops / 2e-3 / 1e9));
    }
}
