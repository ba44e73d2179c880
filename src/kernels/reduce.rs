//! Reductions: ReduceMean and ReduceSum over any set of axes.

use crate::ir::{Op, ReduceAttrs};
use crate::tensor::{f16, Elem, Tensor};
use anyhow::{bail, Result};
use ndarray::{ArrayD, IxDyn};

use super::input;

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], _n_outputs: usize) -> Result<Vec<Tensor>> {
    let (attrs, mean) = match op {
        Op::ReduceMean(a) => (a, true),
        Op::ReduceSum(a) => (a, false),
        other => bail!("reduce kernel cannot run {}", other.name()),
    };
    let x = input(inputs, 0, "data")?;
    let axes_input = match inputs.get(1).copied().flatten() {
        Some(t) => Some(t.to_i64_vec()?),
        None => None,
    };
    let plan = reduce_plan(x.shape(), attrs, axes_input.as_deref())?;
    Ok(vec![reduce(x, &plan, mean)?])
}

/// Which axes a reduction folds and the output shape.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ReducePlan {
    /// Sorted, unique; empty with `noop` means the op is the identity.
    pub axes: Vec<usize>,
    pub out_shape: Vec<usize>,
}

/// Resolves the axes (attribute first, then the axes input; none means all axes unless
/// `noop_with_empty_axes`) and the output shape.
pub(crate) fn reduce_plan(
    shape: &[usize],
    attrs: &ReduceAttrs,
    axes_input: Option<&[i64]>,
) -> Result<ReducePlan> {
    let given: &[i64] = attrs.axes.as_deref().or(axes_input).unwrap_or(&[]);
    let rank = shape.len();
    let axes: Vec<usize> = if given.is_empty() {
        if attrs.noop_with_empty_axes {
            return Ok(ReducePlan {
                axes: vec![],
                out_shape: shape.to_vec(),
            });
        }
        (0..rank).collect()
    } else {
        let mut v = given
            .iter()
            .map(|&a| crate::ir::infer::norm_axis(a, rank))
            .collect::<Result<Vec<_>>>()?;
        v.sort_unstable();
        let n = v.len();
        v.dedup();
        if v.len() != n {
            bail!("duplicate reduce axes {given:?}");
        }
        v
    };
    let out_shape = (0..rank)
        .filter_map(|i| {
            if axes.contains(&i) {
                attrs.keepdims.then_some(1)
            } else {
                Some(shape[i])
            }
        })
        .collect();
    Ok(ReducePlan { axes, out_shape })
}

pub(crate) fn reduce(x: &Tensor, plan: &ReducePlan, mean: bool) -> Result<Tensor> {
    if plan.axes.is_empty() {
        // noop_with_empty_axes: the input unchanged.
        return Ok(x.clone().into_standard_layout());
    }
    Ok(match x {
        // Floats accumulate in f64 for accuracy; the sum order is fixed (row-major), so the
        // result does not depend on threading.
        Tensor::F32(a) => Tensor::F32(reduce_t(a, plan, mean)),
        Tensor::F64(a) => Tensor::F64(reduce_t(a, plan, mean)),
        Tensor::F16(a) => Tensor::F16(reduce_t::<f16>(a, plan, mean)),
        Tensor::Bool(_) => bail!("reductions are not defined on bool tensors"),
        _ => crate::map_tensor!(x, a => reduce_int(a, plan, mean)),
    })
}

/// Moves the reduced axes last, so each output element folds one contiguous run.
fn runs<T: Elem>(a: &ArrayD<T>, plan: &ReducePlan) -> (Vec<T>, usize) {
    let rank = a.ndim();
    let perm: Vec<usize> = (0..rank)
        .filter(|i| !plan.axes.contains(i))
        .chain(plan.axes.iter().copied())
        .collect();
    let r: usize = plan.axes.iter().map(|&i| a.shape()[i]).product();
    let v = a.view().permuted_axes(IxDyn(&perm));
    (v.as_standard_layout().iter().copied().collect(), r)
}

fn reduce_t<T: Elem>(a: &ArrayD<T>, plan: &ReducePlan, mean: bool) -> ArrayD<T> {
    let (data, r) = runs(a, plan);
    let n_out: usize = plan.out_shape.iter().product();
    let out: Vec<T> = if r == 0 {
        // Empty reduction: sum 0, mean 0/0 = NaN (numpy and onnxruntime agree).
        vec![T::from_f64(if mean { f64::NAN } else { 0.0 }); n_out]
    } else {
        data.chunks(r)
            .map(|c| {
                let s: f64 = c.iter().map(|v| v.to_f64()).sum();
                T::from_f64(if mean { s / r as f64 } else { s })
            })
            .collect()
    };
    ArrayD::from_shape_vec(IxDyn(&plan.out_shape), out).expect("output count matches")
}

fn reduce_int<T: Elem>(a: &ArrayD<T>, plan: &ReducePlan, mean: bool) -> ArrayD<T> {
    let (data, r) = runs(a, plan);
    let n_out: usize = plan.out_shape.iter().product();
    let out: Vec<T> = if r == 0 {
        vec![T::default(); n_out]
    } else {
        data.chunks(r)
            .map(|c| {
                // i64 wrapping sum; the mean truncates toward zero like integer division.
                let s = c.iter().fold(0i64, |s, v| s.wrapping_add(v.to_i64()));
                T::from_i64(if mean { s / r as i64 } else { s })
            })
            .collect()
    };
    ArrayD::from_shape_vec(IxDyn(&plan.out_shape), out).expect("output count matches")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(axes: Option<Vec<i64>>, keepdims: bool) -> ReduceAttrs {
        ReduceAttrs {
            axes,
            keepdims,
            noop_with_empty_axes: false,
        }
    }

    #[test]
    fn reduce_mean_keepdims() {
        let x = Tensor::from_vec(&[2, 3], vec![1f32, 2., 3., 4., 5., 6.]).unwrap();
        let op = Op::ReduceMean(attrs(Some(vec![-1]), true));
        let r = eval(&op, &[Some(&x)], 1).unwrap();
        assert_eq!(r[0].shape(), &[2, 1]);
        assert_eq!(r[0].to_f64_vec(), vec![2., 5.]);
        let op = Op::ReduceMean(attrs(Some(vec![0]), true));
        let r = eval(&op, &[Some(&x)], 1).unwrap();
        assert_eq!(r[0].shape(), &[1, 3]);
        assert_eq!(r[0].to_f64_vec(), vec![2.5, 3.5, 4.5]);
    }

    #[test]
    fn reduce_sum_axes_input_and_all() {
        let x = Tensor::from_vec(&[2, 2, 2], (1..=8).collect::<Vec<i64>>()).unwrap();
        let axes = Tensor::from_vec(&[2], vec![0i64, 2]).unwrap();
        let op = Op::ReduceSum(attrs(None, false));
        let r = eval(&op, &[Some(&x), Some(&axes)], 1).unwrap();
        // axis 1 kept: j=0 -> 1+2+5+6, j=1 -> 3+4+7+8
        assert_eq!(r[0], Tensor::from_vec(&[2], vec![14i64, 22]).unwrap());
        let r = eval(&op, &[Some(&x)], 1).unwrap();
        assert_eq!(r[0], Tensor::from_vec(&[], vec![36i64]).unwrap());
    }
}
