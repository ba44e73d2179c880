//! tract as the reference runtime: the same ONNX file, the same input tensors.

use crate::tensor::{DType, Tensor};
#[allow(unused_imports)]
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::prelude as tp;
use tract_onnx::prelude::*;

fn to_tract(t: &Tensor) -> Result<tp::Tensor> {
    Ok(match t {
        Tensor::F32(a) => {
            tp::Tensor::from_shape(a.shape(), &a.iter().copied().collect::<Vec<_>>())?
        }
        Tensor::F64(a) => {
            tp::Tensor::from_shape(a.shape(), &a.iter().copied().collect::<Vec<_>>())?
        }
        Tensor::I64(a) => {
            tp::Tensor::from_shape(a.shape(), &a.iter().copied().collect::<Vec<_>>())?
        }
        Tensor::I32(a) => {
            tp::Tensor::from_shape(a.shape(), &a.iter().copied().collect::<Vec<_>>())?
        }
        other => bail!(
            "tract reference: inputs of dtype {} are not supported",
            other.dtype()
        ),
    })
}

fn from_tract(t: &tp::Tensor) -> Result<Tensor> {
    let shape = t.shape().to_vec();
    match t.datum_type() {
        tp::DatumType::F32 => Tensor::from_vec(
            &shape,
            t.to_plain_array_view::<f32>()?
                .iter()
                .copied()
                .collect::<Vec<_>>(),
        ),
        tp::DatumType::F64 => Tensor::from_vec(
            &shape,
            t.to_plain_array_view::<f64>()?
                .iter()
                .copied()
                .collect::<Vec<_>>(),
        ),
        tp::DatumType::I64 => Tensor::from_vec(
            &shape,
            t.to_plain_array_view::<i64>()?
                .iter()
                .copied()
                .collect::<Vec<_>>(),
        ),
        tp::DatumType::I32 => Tensor::from_vec(
            &shape,
            t.to_plain_array_view::<i32>()?
                .iter()
                .copied()
                .collect::<Vec<_>>(),
        ),
        dt => bail!("tract reference: output dtype {dt:?} is not supported"),
    }
}

/// Loads `model` into tract with the input facts of `inputs`.
fn load(model: &Path, inputs: &[Tensor]) -> Result<tp::InferenceModel> {
    let mut m = tract_onnx::onnx()
        .model_for_path(model)
        .with_context(|| format!("{}: tract cannot load it", model.display()))?;
    for (i, t) in inputs.iter().enumerate() {
        let dt = match t.dtype() {
            DType::F32 => tp::DatumType::F32,
            DType::F64 => tp::DatumType::F64,
            DType::I64 => tp::DatumType::I64,
            DType::I32 => tp::DatumType::I32,
            d => bail!("tract reference: input dtype {d} is not supported"),
        };
        m.set_input_fact(i, tp::InferenceFact::dt_shape(dt, t.shape()))?;
    }
    Ok(m)
}

fn run_model(m: tp::InferenceModel, inputs: &[Tensor]) -> Result<tp::TVec<tp::TValue>> {
    m.into_optimized()?
        .into_runnable()?
        .run(Prepared::values(inputs)?)
}

/// Runs `model` with tract on `inputs` (in the model's input order) and returns its outputs.
pub fn run(model: &Path, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    Prepared::new(model, inputs)?.run(inputs)
}

/// A model loaded and optimized by tract once, for inputs of fixed dtypes and shapes, so that
/// repeated runs (`convgraph bench`, criterion) time only the run.
///
/// tract runs single-threaded here: its multithreaded matmul needs tract-linalg's
/// `multithread-mm` feature, which this crate does not enable.
pub struct Prepared {
    plan: std::sync::Arc<tp::TypedRunnableModel>,
}

impl Prepared {
    /// Loads `model`, fixes its inputs to the dtypes and shapes of `inputs` (in the model's
    /// input order), and optimizes it (`into_optimized().into_runnable()`).
    pub fn new(model: &Path, inputs: &[Tensor]) -> Result<Prepared> {
        let plan = load(model, inputs)?.into_optimized()?.into_runnable()?;
        Ok(Prepared { plan })
    }

    /// Converts our tensors to tract's values once, outside any timed region.
    pub fn values(inputs: &[Tensor]) -> Result<tp::TVec<tp::TValue>> {
        inputs
            .iter()
            .map(|t| to_tract(t).map(|t| t.into()))
            .collect()
    }

    /// Runs on values made by [`Prepared::values`]; cloning them is cheap (shared buffers).
    pub fn run_values(&self, values: tp::TVec<tp::TValue>) -> Result<tp::TVec<tp::TValue>> {
        self.plan.run(values)
    }

    /// Runs on our tensors and converts the outputs back.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let outs = self.run_values(Self::values(inputs)?)?;
        outs.iter().map(|t| from_tract(t)).collect()
    }
}

/// Runs `model` with tract on `inputs` and returns, besides its outputs, the values tract
/// computes for the ONNX value names in `names` (tract labels each node output with its
/// ONNX name; those outlets are made extra outputs before optimising, so tract keeps them).
/// Names tract does not know, and values of dtypes convgraph does not read back (tract's
/// symbolic `TDim` shapes are cast to i64), are left out of the map.
pub fn run_with_values(
    model: &Path,
    inputs: &[Tensor],
    names: &[String],
) -> Result<(Vec<Tensor>, HashMap<String, Tensor>)> {
    let mut m = load(model, inputs)?;
    let mut outlets: Vec<tp::OutletId> = m.output_outlets()?.to_vec();
    let n_outputs = outlets.len();
    let mut wanted: Vec<(String, usize)> = Vec::new();
    for name in names {
        if let Some(o) = m.find_outlet_label(name) {
            let ix = match outlets.iter().position(|x| *x == o) {
                Some(ix) => ix,
                None => {
                    outlets.push(o);
                    outlets.len() - 1
                }
            };
            wanted.push((name.clone(), ix));
        }
    }
    m.select_output_outlets(&outlets)?;
    let outs = run_model(m, inputs)?;
    // tract returns one value per selected outlet; checked all the same, never indexed blind.
    if outs.len() != outlets.len() {
        bail!(
            "tract returned {} values for {} requested outputs",
            outs.len(),
            outlets.len()
        );
    }
    let outputs = outs[..n_outputs]
        .iter()
        .map(|t| from_tract(t))
        .collect::<Result<Vec<_>>>()?;
    let mut values = HashMap::new();
    for (name, ix) in wanted {
        let t = &outs[ix];
        let converted = if t.datum_type() == tp::DatumType::TDim {
            t.cast_to::<i64>().and_then(|c| from_tract(&c))
        } else {
            from_tract(t)
        };
        if let Ok(v) = converted {
            values.insert(name, v);
        }
    }
    Ok((outputs, values))
}
