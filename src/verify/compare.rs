//! Comparing two runs of a model on the same input samples: a rewritten graph against the
//! original, one model against another, convgraph against tract. Each gives a
//! [`Comparison`]: one [`Report`] per output over all samples and, when they disagree, the
//! first diverging tensor.

use super::divergence::{all_values, first_divergence, Divergence, Values};
use super::tolerance::{compare, json_f64, Report, Tolerance};
use super::tract;
use crate::exec::Runner;
use crate::ir::{DimBindings, Graph};
use crate::passes::{run_pipeline, PassOptions};
use crate::tensor::Tensor;
use anyhow::{anyhow, bail, Context, Result};
use std::fmt;
use std::path::Path;

/// One output over every sample.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputComparison {
    /// The output's name (the reference's, should the two differ).
    pub name: String,
    /// The errors over all samples merged (see [`Report::merge`]).
    pub report: Report,
    /// The sample in which the first outlier (or mismatch) was found.
    pub first_bad_sample: Option<usize>,
}

/// The outcome of comparing a candidate with a reference on a set of input samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// What was the reference (`original`, a file, `tract`).
    pub reference: String,
    /// What was checked against it.
    pub candidate: String,
    /// The rule every output was held to.
    pub tolerance: Tolerance,
    /// Number of input samples run.
    pub samples: usize,
    /// One per output, in the reference's declaration order.
    pub outputs: Vec<OutputComparison>,
    /// When the outputs disagree: the first tensor that left tolerance.
    pub divergence: Option<Divergence>,
    /// Why there is no divergence although the outputs disagree (no shared tensor left
    /// tolerance, or the search itself failed).
    pub note: Option<String>,
}

impl Comparison {
    /// Every output within tolerance on every sample.
    pub fn ok(&self) -> bool {
        self.outputs.iter().all(|o| o.report.ok())
    }

    /// The comparison as one JSON object (`ok`, `outputs`, `first_divergence` ...).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "reference": self.reference,
            "candidate": self.candidate,
            "atol": json_f64(self.tolerance.atol),
            "rtol": json_f64(self.tolerance.rtol),
            "samples": self.samples,
            "ok": self.ok(),
            "outputs": self.outputs.iter().map(|o| {
                let mut v = o.report.to_json();
                v["name"] = serde_json::json!(o.name);
                v["first_bad_sample"] = serde_json::json!(o.first_bad_sample);
                v
            }).collect::<Vec<_>>(),
            "first_divergence": self.divergence.as_ref().map(Divergence::to_json),
            "note": self.note,
        })
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} vs {}: {} sample(s), atol {:e} rtol {:e}: {}",
            self.candidate,
            self.reference,
            self.samples,
            self.tolerance.atol,
            self.tolerance.rtol,
            if self.ok() { "OK" } else { "FAILED" }
        )?;
        for o in &self.outputs {
            write!(f, "  output '{}': {}", o.name, o.report)?;
            if let Some(s) = o.first_bad_sample {
                write!(f, " (sample {s})")?;
            }
            writeln!(f)?;
        }
        if let Some(d) = &self.divergence {
            writeln!(f, "  {d}")?;
        }
        if let Some(n) = &self.note {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// One input sample: a tensor per graph input name.
pub type Inputs = Values;

/// `n` seeded input samples for `graph` (sample `k` uses seed `seed + k`; input `i` of it
/// `seed + k + i`, as `convgraph run --seed` does). Symbolic dims take 1. A sequence or
/// optional input is refused.
pub fn seeded_samples(graph: &Graph, n: usize, seed: u64) -> Result<Vec<Inputs>> {
    let b = DimBindings::default();
    (0..n as u64)
        .map(|k| {
            graph
                .inputs
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    if !d.is_tensor() {
                        bail!(
                            "input '{}' has type {}: seeded samples are tensors only",
                            d.name,
                            d.type_text()
                        );
                    }
                    let shape = b.input_shape(d).ok_or_else(|| {
                        anyhow!("input '{}' has no declared shape: give it", d.name)
                    })?;
                    let s = seed.wrapping_add(k).wrapping_add(i as u64);
                    Ok((
                        d.name.clone(),
                        crate::cli::random_tensor(d.dtype, &shape, s)?,
                    ))
                })
                .collect()
        })
        .collect()
}

/// The skeleton every comparison shares: run both sides on each sample, merge the reports
/// per output, and on the first sample that disagrees look for the first divergence.
fn compare_samples(
    reference: String,
    candidate: String,
    names: Vec<String>,
    samples: &[Inputs],
    tol: Tolerance,
    mut run_both: impl FnMut(&Inputs) -> Result<(Vec<Tensor>, Vec<Tensor>)>,
    mut diverge: impl FnMut(&Inputs, usize) -> Result<Option<Divergence>>,
) -> Result<Comparison> {
    let mut outputs: Vec<OutputComparison> = names
        .into_iter()
        .map(|name| OutputComparison {
            name,
            report: Report::default(),
            first_bad_sample: None,
        })
        .collect();
    let mut divergence = None;
    let mut note = None;
    let mut searched = false;
    for (k, inputs) in samples.iter().enumerate() {
        let (r, c) = run_both(inputs).with_context(|| format!("sample {k}"))?;
        if r.len() != outputs.len() || c.len() != outputs.len() {
            bail!(
                "sample {k}: {} has {} outputs, {} has {}",
                reference,
                r.len(),
                candidate,
                c.len()
            );
        }
        let mut all_ok = true;
        for (o, (e, a)) in outputs.iter_mut().zip(r.iter().zip(&c)) {
            let rep = compare(a, e, tol);
            if !rep.ok() {
                all_ok = false;
                o.first_bad_sample.get_or_insert(k);
            }
            o.report.merge(&rep);
        }
        if !all_ok && !searched {
            // Once is enough: the first sample that disagrees names the node.
            searched = true;
            match diverge(inputs, k) {
                Ok(Some(d)) => divergence = Some(d),
                Ok(None) => note = Some(
                    "no tensor shared by name left tolerance when re-fed the reference's inputs"
                        .to_string(),
                ),
                Err(e) => note = Some(format!("first-divergence search failed: {e:#}")),
            }
        }
    }
    Ok(Comparison {
        reference,
        candidate,
        tolerance: tol,
        samples: samples.len(),
        outputs,
        divergence,
        note,
    })
}

fn run_graph(runner: &Runner, inputs: &Inputs) -> Result<Vec<Tensor>> {
    Ok(runner
        .run(inputs.clone())?
        .into_iter()
        .map(|(_, t)| t)
        .collect())
}

/// Compares `candidate` with `reference`, both run by convgraph, on `samples`; outputs are
/// paired in declaration order. The divergence search feeds each candidate node the
/// reference's values of the names both graphs share.
///
/// ```
/// use convgraph::verify::{compare_graphs, seeded_samples, Tolerance};
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/small_cnn.onnx");
/// let original = convgraph::onnx::load_model(std::path::Path::new(path)).unwrap();
/// let mut changed = original.clone();
/// // Scale the depthwise conv's weight: its node is the one that diverges first.
/// let w = changed.constants.get_mut("dw.w").unwrap();
/// *w = convgraph::Tensor::from_vec(w.shape(), w.to_f64_vec().iter().map(|v| (v * 1.1) as f32).collect()).unwrap();
/// let samples = seeded_samples(&original, 2, 0).unwrap();
/// let c = compare_graphs(&original, &changed, &samples, Tolerance::default()).unwrap();
/// assert!(!c.ok());
/// assert_eq!(c.divergence.as_ref().unwrap().node, "dw");
/// println!("{c}");
/// ```
pub fn compare_graphs(
    reference: &Graph,
    candidate: &Graph,
    samples: &[Inputs],
    tol: Tolerance,
) -> Result<Comparison> {
    if reference.outputs.len() != candidate.outputs.len() {
        bail!(
            "the reference has {} outputs, the candidate {}",
            reference.outputs.len(),
            candidate.outputs.len()
        );
    }
    let r = Runner::new(reference).context("reference")?;
    let c = Runner::new(candidate).context("candidate")?;
    compare_samples(
        "reference".into(),
        "candidate".into(),
        reference.outputs.iter().map(|d| d.name.clone()).collect(),
        samples,
        tol,
        |inputs| {
            let e = run_graph(&r, inputs).context("reference")?;
            let a = run_graph(&c, inputs).context("candidate")?;
            Ok((e, a))
        },
        |inputs, k| {
            let values = all_values(reference, inputs)?;
            first_divergence(&values, candidate, inputs, k, tol)
        },
    )
}

/// Verifies a rewrite: applies the named passes to a copy of `graph` and compares the result
/// with `graph` on `samples`. Tensors whose names survive the rewrite are the ones the
/// divergence search can compare.
pub fn verify_passes(
    graph: &Graph,
    passes: &[String],
    opts: &PassOptions,
    samples: &[Inputs],
    tol: Tolerance,
) -> Result<Comparison> {
    let mut rewritten = graph.clone();
    run_pipeline(&mut rewritten, passes, opts)?;
    let mut c = compare_graphs(graph, &rewritten, samples, tol)?;
    c.reference = "original".into();
    c.candidate = format!("after {}", passes.join(","));
    Ok(c)
}

/// Compares `graph` as convgraph runs it (the candidate) with tract running the ONNX file
/// `model` (the reference). For the divergence search tract is asked for every node output
/// of `graph` by name, and each convgraph node is fed tract's values of its inputs.
pub fn compare_with_tract(
    model: &Path,
    graph: &Graph,
    samples: &[Inputs],
    tol: Tolerance,
) -> Result<Comparison> {
    let runner = Runner::new(graph)?;
    let ordered = |inputs: &Inputs| -> Result<Vec<Tensor>> {
        graph
            .inputs
            .iter()
            .map(|d| {
                inputs
                    .get(&d.name)
                    .cloned()
                    .ok_or_else(|| anyhow!("input '{}' was not given", d.name))
            })
            .collect()
    };
    let names: Vec<String> = graph
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().cloned())
        .collect();
    compare_samples(
        "tract".into(),
        "convgraph".into(),
        graph.outputs.iter().map(|d| d.name.clone()).collect(),
        samples,
        tol,
        |inputs| {
            let e = tract::run(model, &ordered(inputs)?).context("tract")?;
            let a = run_graph(&runner, inputs).context("convgraph")?;
            Ok((e, a))
        },
        |inputs, k| {
            let (_, mut values) = tract::run_with_values(model, &ordered(inputs)?, &names)?;
            values.extend(inputs.iter().map(|(k, v)| (k.clone(), v.clone())));
            first_divergence(&values, graph, inputs, k, tol)
        },
    )
}

/// Checks that two graphs take the same inputs: the same names, dtypes and declared shapes.
pub fn check_same_inputs(a: &Graph, b: &Graph) -> Result<()> {
    for d in &a.inputs {
        let Some(e) = b.inputs.iter().find(|e| e.name == d.name) else {
            bail!(
                "input '{}' of the first model is not an input of the second",
                d.name
            );
        };
        if e.dtype != d.dtype {
            bail!(
                "input '{}' is {} in the first model but {} in the second",
                d.name,
                d.dtype,
                e.dtype
            );
        }
        if e.dims != d.dims {
            let show = |v: &Option<Vec<crate::ir::Dim>>| match v {
                None => "unknown".to_string(),
                Some(v) => format!(
                    "[{}]",
                    v.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
            bail!(
                "input '{}' has shape {} in the first model but {} in the second",
                d.name,
                show(&d.dims),
                show(&e.dims)
            );
        }
    }
    if let Some(e) = b
        .inputs
        .iter()
        .find(|e| !a.inputs.iter().any(|d| d.name == e.name))
    {
        bail!(
            "input '{}' of the second model is not an input of the first",
            e.name
        );
    }
    Ok(())
}
