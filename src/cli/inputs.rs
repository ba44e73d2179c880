//! Graph inputs from the command line: `.npy` or TensorProto `.pb` files, by name or by
//! position, and seeded random tensors for the rest.

use crate::ir::{DimBindings, Graph};
use crate::tensor::{DType, Tensor};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// The input flags of the subcommands that run a model once (run, snapshot).
#[derive(clap::Args)]
pub struct InputArgs {
    /// An input tensor (.npy or .pb), as NAME=FILE or FILE for the next input in order.
    #[arg(long = "input")]
    pub inputs: Vec<String>,
    /// Seed for the inputs not given.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Value of a symbolic input dim, NAME=N (default 1).
    #[arg(long = "dim")]
    pub dims: Vec<String>,
}

impl InputArgs {
    /// Every input of `graph`: the files given, seeded tensors for the rest.
    pub fn gather(&self, graph: &Graph) -> Result<HashMap<String, Tensor>> {
        gather_inputs(graph, &self.inputs, self.seed, parse_dims(&self.dims)?)
    }
}

/// Reads a tensor file by its extension.
pub fn load_tensor(path: &Path) -> Result<Tensor> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => crate::npy::read(path),
        Some("pb") => crate::onnx::load_tensor_pb(path),
        _ => bail!("{}: input files must be .npy or .pb", path.display()),
    }
}

/// Parses `--dim NAME=N` flags.
pub fn parse_dims(dims: &[String]) -> Result<HashMap<String, usize>> {
    dims.iter()
        .map(|d| {
            let (k, v) = d
                .split_once('=')
                .ok_or_else(|| anyhow!("--dim '{d}' must be NAME=N"))?;
            let n = v
                .parse()
                .map_err(|_| anyhow!("--dim '{d}': '{v}' is not a size"))?;
            Ok((k.to_string(), n))
        })
        .collect()
}

/// Builds every graph input: the given ones (`NAME=FILE`, or `FILE` for the next input in
/// declaration order) and seeded random ones for the rest. Tensors only: a model with a
/// sequence or optional input is refused.
pub fn gather_inputs(
    graph: &Graph,
    specs: &[String],
    seed: u64,
    symbols: HashMap<String, usize>,
) -> Result<HashMap<String, Tensor>> {
    if let Some(d) = graph.inputs.iter().find(|d| !d.is_tensor()) {
        bail!(
            "input '{}' has type {}: the command line feeds tensors only (.npy or TensorProto .pb files)",
            d.name,
            d.type_text()
        );
    }
    let mut given: HashMap<String, Tensor> = HashMap::new();
    let mut positional = 0;
    for spec in specs {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) if graph.inputs.iter().any(|d| d.name == n) => (n.to_string(), f),
            _ => {
                let decl = graph.inputs.get(positional).ok_or_else(|| {
                    anyhow!(
                        "--input '{spec}': the model has only {} inputs",
                        graph.inputs.len()
                    )
                })?;
                positional += 1;
                (decl.name.clone(), spec.as_str())
            }
        };
        let t = load_tensor(Path::new(file)).with_context(|| format!("input '{name}'"))?;
        given.insert(name, t);
    }
    let bindings = DimBindings {
        symbols,
        shapes: HashMap::new(),
    };
    let mut inputs = HashMap::new();
    for (i, decl) in graph.inputs.iter().enumerate() {
        if let Some(t) = given.remove(&decl.name) {
            inputs.insert(decl.name.clone(), t);
            continue;
        }
        let shape = bindings.input_shape(decl).ok_or_else(|| {
            anyhow!(
                "input '{}' has no declared shape: give it with --input",
                decl.name
            )
        })?;
        inputs.insert(
            decl.name.clone(),
            random_tensor(decl.dtype, &shape, seed.wrapping_add(i as u64))?,
        );
    }
    Ok(inputs)
}

/// A deterministic pseudo-random tensor: floats uniform in [-1, 1), integers in [0, 10),
/// bools fair. SplitMix64, so the same seed gives the same bits everywhere.
pub fn random_tensor(dtype: DType, shape: &[usize], seed: u64) -> Result<Tensor> {
    crate::tensor::limits::check_alloc(shape, dtype)?;
    let n: usize = shape.iter().product();
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let t = if dtype.is_float() {
        let v: Vec<f64> = (0..n)
            .map(|_| (next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0)
            .collect();
        Tensor::from_vec(shape, v)?.cast(dtype)
    } else if dtype == DType::Bool {
        Tensor::from_vec(
            shape,
            (0..n).map(|_| next() & 1 == 1).collect::<Vec<bool>>(),
        )?
    } else {
        Tensor::from_vec(
            shape,
            (0..n).map(|_| (next() % 10) as i64).collect::<Vec<i64>>(),
        )?
        .cast(dtype)
    };
    Ok(t)
}

/// A file name for a value: characters outside `[A-Za-z0-9_.-]` become `_`.
pub fn file_name_for(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
