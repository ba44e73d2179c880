//! Reductions: ReduceMean and ReduceSum over any set of axes.

use crate::ir::{Op, ReduceAttrs};
use crate::tensor::{f16, Elem, Tensor};
use anyhow::{bail, Result};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use std::borrow::Cow;

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
        Tensor::F32(a) => Tensor::F32(reduce_t(a, plan, mean)),
        Tensor::F64(a) => Tensor::F64(reduce_t(a, plan, mean)),
        Tensor::F16(a) => Tensor::F16(reduce_t::<f16>(a, plan, mean)),
        Tensor::Bool(_) => bail!("reductions are not defined on bool tensors"),
        _ => crate::map_tensor!(x, a => reduce_int(a, plan, mean)),
    })
}

/// The reduced elements of `a` as one contiguous run per output element, and the run
/// length. Borrowed when the reduced axes are already the last ones of a standard-layout
/// array (ReduceMean over H and W, the squeeze-excitation pooling of exported nets); else
/// copied with the reduced axes moved last.
fn runs<'a, T: Elem>(a: &'a ArrayD<T>, plan: &ReducePlan) -> (Cow<'a, [T]>, usize) {
    let rank = a.ndim();
    let r: usize = plan.axes.iter().map(|&i| a.shape()[i]).product();
    let first = rank - plan.axes.len();
    let trailing = plan.axes.iter().enumerate().all(|(i, &ax)| ax == first + i);
    if let (true, Some(s)) = (trailing, a.as_slice()) {
        return (Cow::Borrowed(s), r);
    }
    let perm: Vec<usize> = (0..rank)
        .filter(|i| !plan.axes.contains(i))
        .chain(plan.axes.iter().copied())
        .collect();
    let v = a.view().permuted_axes(IxDyn(&perm));
    (
        Cow::Owned(v.as_standard_layout().iter().copied().collect()),
        r,
    )
}

fn reduce_t<T: Elem>(a: &ArrayD<T>, plan: &ReducePlan, mean: bool) -> ArrayD<T> {
    let (data, r) = runs(a, plan);
    let n_out: usize = plan.out_shape.iter().product();
    let out: Vec<T> = if r == 0 {
        // Empty reduction: sum 0, mean 0/0 = NaN (numpy and onnxruntime agree).
        vec![T::from_f64(if mean { f64::NAN } else { 0.0 }); n_out]
    } else {
        // Floats accumulate in f64, in the fixed order of `sum_f64` (the one GlobalAveragePool
        // uses, so a ReduceMean over H and W gives its bits), whatever the thread count.
        let one = |c: &[T]| {
            let s = super::pool::sum_f64(c);
            T::from_f64(if mean { s / r as f64 } else { s })
        };
        let mut out = vec![T::default(); n_out];
        if super::par::worth_splitting(data.len()) {
            let per = super::par::units_per_task(r);
            out.par_chunks_mut(per)
                .zip(data.par_chunks(per * r))
                .for_each(|(dst, src)| {
                    dst.iter_mut()
                        .zip(src.chunks(r))
                        .for_each(|(d, c)| *d = one(c))
                });
        } else {
            out.iter_mut()
                .zip(data.chunks(r))
                .for_each(|(d, c)| *d = one(c));
        }
        out
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

    /// ReduceMean over H and W (borrowed runs, split over tasks for a big input) gives the
    /// bits of GlobalAveragePool, and both match a naive f64 mean; the permuted path (axes
    /// 1 and 3) matches the naive mean too.
    #[test]
    fn mean_over_trailing_axes_is_global_average_pool() {
        let shape = [2usize, 24, 40, 40];
        let n: usize = shape.iter().product();
        let a = crate::kernels::test_data::noise(&shape, 7);
        let v: Vec<f32> = a.iter().copied().collect();
        assert_eq!(v.len(), n);
        let x = Tensor::F32(a);
        let op = Op::ReduceMean(attrs(Some(vec![2, 3]), true));
        let r = crate::kernels::test_data::on_threads(2, || eval(&op, &[Some(&x)], 1).unwrap());
        let g = crate::kernels::eval(&Op::GlobalAveragePool, &[Some(&x)], 1).unwrap();
        assert_eq!(r[0].shape(), &[2, 24, 1, 1]);
        assert_eq!(r[0], g[0]);
        let plane = 40 * 40;
        let naive: Vec<f64> = v
            .chunks(plane)
            .map(|c| c.iter().map(|&e| e as f64).sum::<f64>() / plane as f64)
            .collect();
        for (a, b) in r[0].to_f64_vec().iter().zip(&naive) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
        let op = Op::ReduceSum(attrs(Some(vec![1, 3]), false));
        let r = eval(&op, &[Some(&x)], 1).unwrap();
        assert_eq!(r[0].shape(), &[2, 40]);
        let at =
            |b: usize, c: usize, h: usize, w: usize| v[((b * 24 + c) * 40 + h) * 40 + w] as f64;
        for (i, got) in r[0].to_f64_vec().iter().enumerate() {
            let (b, h) = (i / 40, i % 40);
            let want: f64 = (0..24)
                .flat_map(|c| (0..40).map(move |w| (c, w)))
                .map(|(c, w)| at(b, c, h, w))
                .sum();
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
    }
}
