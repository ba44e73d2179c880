//! Runs ONNX backend-test case folders: `model.onnx` and `test_data_set_N/input_K.pb`,
//! `output_K.pb`. The layout of onnx's own `node`, `pytorch-*`, `simple` and `light` suites,
//! and of the exports that `scripts/export_torchvision.py` writes. Each file holds a
//! TensorProto, or a SequenceProto / OptionalProto where the graph declares that type (as
//! onnx's cmd_tools writes them).

use crate::exec::{Runner, Value};
use crate::onnx::{load_model, load_value_pb};
use crate::verify::{compare, Tolerance};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The rule the conformance figures are measured with (tract's and onnxruntime's results in
/// the project's notes used it too): rtol 1e-3, atol 1e-5, dtype and shape exact.
pub const CONFORMANCE_TOLERANCE: Tolerance = Tolerance {
    atol: 1e-5,
    rtol: 1e-3,
};

/// onnx's own runner compares with atol 1e-7 (and rtol 1e-3).
pub const ONNX_RUNNER_TOLERANCE: Tolerance = Tolerance {
    atol: 1e-7,
    rtol: 1e-3,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    /// Ran, but an output differs; the reason names the data set and output.
    Fail(String),
    /// Did not run: the model or data could not be loaded, or an op is unsupported.
    Error(String),
}

#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The case's path relative to the folder it was found under (`node/test_add`).
    pub name: String,
    pub status: Status,
    /// Whether the case also passes at `ONNX_RUNNER_TOLERANCE` (false unless it passed).
    pub passes_strict: bool,
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.status {
            Status::Pass => write!(f, "PASS {}", self.name),
            Status::Fail(r) => write!(f, "FAIL {}: {r}", self.name),
            Status::Error(r) => write!(f, "ERROR {}: {r}", self.name),
        }
    }
}

/// Every case folder at or under `root` (a folder holding `model.onnx`), sorted by path, with
/// its display name relative to `root` (its own folder name when `root` is the case).
pub fn find_cases(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        if dir.join("model.onnx").is_file() {
            out.push(dir.to_path_buf());
            return Ok(());
        }
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("{}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        for d in subdirs {
            walk(&d, out)?;
        }
        Ok(())
    }
    if !root.is_dir() {
        bail!("{}: not a folder", root.display());
    }
    let mut dirs = Vec::new();
    walk(root, &mut dirs)?;
    Ok(dirs
        .into_iter()
        .map(|d| {
            let name = match d.strip_prefix(root) {
                Ok(rel) if !rel.as_os_str().is_empty() => rel.to_string_lossy().into_owned(),
                _ => d
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            (name, d)
        })
        .collect())
}

/// Runs one case folder: every data set, every output compared by `CONFORMANCE_TOLERANCE`.
pub fn run_case(name: &str, dir: &Path) -> CaseResult {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case_inner(dir)))
        .unwrap_or_else(|_| Err(anyhow!("internal error: convgraph panicked (a bug)")));
    let (status, passes_strict) = match result {
        Ok(Outcome::Pass { strict }) => (Status::Pass, strict),
        Ok(Outcome::Fail(r)) => (Status::Fail(r), false),
        // Errors start with the model's or data file's path; the case name already says it.
        Err(e) => {
            let prefix = format!("{}/", dir.display());
            (Status::Error(format!("{e:#}").replace(&prefix, "")), false)
        }
    };
    CaseResult {
        name: name.to_string(),
        status,
        passes_strict,
    }
}

enum Outcome {
    Pass { strict: bool },
    Fail(String),
}

/// `dir/prefix_K.pb` for K = 0, 1, ... while they exist.
fn numbered_pbs(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    loop {
        let p = dir.join(format!("{prefix}_{}.pb", out.len()));
        if !p.exists() {
            return out;
        }
        out.push(p);
    }
}

/// Why `actual` differs from `expected` beyond `tol`, or `None`: tensors by `compare`
/// (dtype and shape exact), sequences element by element (length exact), optionals by
/// presence, then their values.
fn value_mismatch(actual: &Value, expected: &Value, tol: Tolerance) -> Option<String> {
    match (actual, expected) {
        (Value::Tensor(a), Value::Tensor(e)) => {
            let r = compare(a, e, tol);
            (!r.ok()).then(|| r.to_string())
        }
        (Value::Sequence(a), Value::Sequence(e)) if a.len() == e.len() => {
            a.iter().zip(e).enumerate().find_map(|(i, (a, e))| {
                value_mismatch(a, e, tol).map(|m| format!("element {i}: {m}"))
            })
        }
        (Value::Optional(None), Value::Optional(None)) => None,
        (Value::Optional(Some(a)), Value::Optional(Some(e))) => value_mismatch(a, e, tol),
        _ => Some(format!("{}, expected {}", actual.kind(), expected.kind())),
    }
}

fn run_case_inner(dir: &Path) -> Result<Outcome> {
    let graph = load_model(&dir.join("model.onnx"))?;
    let runner = Runner::new(&graph)?;
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    if sets.is_empty() {
        bail!("no test_data_set_N folder");
    }
    let mut strict = true;
    for set in &sets {
        let set_name = set
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let inputs = numbered_pbs(set, "input");
        let expected = numbered_pbs(set, "output");
        // Data sets feed the graph's run-time inputs in order (initializers listed as inputs
        // by old models are not among them).
        if inputs.len() != graph.inputs.len() {
            bail!(
                "{set_name}: {} input files for {} graph inputs",
                inputs.len(),
                graph.inputs.len()
            );
        }
        let feed: HashMap<String, Value> = graph
            .inputs
            .iter()
            .zip(&inputs)
            .map(|(d, p)| Ok((d.name.clone(), load_value_pb(p, d)?)))
            .collect::<Result<_>>()?;
        let actual = runner.run_values(feed).with_context(|| set_name.clone())?;
        if actual.len() != expected.len() {
            return Ok(Outcome::Fail(format!(
                "{set_name}: {} outputs, expected {}",
                actual.len(),
                expected.len()
            )));
        }
        // The run returns one value per declared graph output, so `graph.outputs[k]` exists.
        for (k, ((name, a), p)) in actual.iter().zip(&expected).enumerate() {
            let e = load_value_pb(p, &graph.outputs[k])?;
            if let Some(why) = value_mismatch(a, &e, CONFORMANCE_TOLERANCE) {
                return Ok(Outcome::Fail(format!(
                    "{set_name}: output {k} '{name}': {why}"
                )));
            }
            strict &= value_mismatch(a, &e, ONNX_RUNNER_TOLERANCE).is_none();
        }
    }
    Ok(Outcome::Pass { strict })
}

/// Totals over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    /// Failed or errored.
    pub failed: usize,
    pub passed_strict: usize,
}

pub fn summarize(results: &[CaseResult]) -> Summary {
    let mut s = Summary::default();
    for r in results {
        if r.status == Status::Pass {
            s.passed += 1;
        } else {
            s.failed += 1;
        }
        s.passed_strict += r.passes_strict as usize;
    }
    s
}
