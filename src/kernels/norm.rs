//! Normalization kernels: BatchNormalization (inference form), Softmax and LRN.
//!
//! f32 runs natively; f64 runs natively through the same generic code; f16 is computed in
//! f32 and rounded back.

use crate::ir::{LrnAttrs, Op};
use crate::tensor::{f16, Elem, Tensor};
use anyhow::{bail, Result};
use ndarray::{ArrayD, Axis, NdFloat};
use rayon::prelude::*;

use super::input;

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    match op {
        Op::BatchNorm { epsilon } => {
            let x = input(inputs, 0, "X")?;
            let p = [
                input(inputs, 1, "scale")?,
                input(inputs, 2, "B")?,
                input(inputs, 3, "mean")?,
                input(inputs, 4, "var")?,
            ];
            Ok(vec![batch_norm(x, p, *epsilon)?])
        }
        Op::BatchNormTraining { epsilon, momentum } => {
            let x = input(inputs, 0, "X")?;
            let p = [
                input(inputs, 1, "scale")?,
                input(inputs, 2, "B")?,
                input(inputs, 3, "input_mean")?,
                input(inputs, 4, "input_var")?,
            ];
            let [y, mean, var] = batch_norm_training(x, p, *epsilon, *momentum)?;
            Ok([y, mean, var].into_iter().take(n_outputs.max(1)).collect())
        }
        Op::Softmax { axis } => Ok(vec![softmax(input(inputs, 0, "input")?, *axis)?]),
        Op::SoftmaxFlat { axis } => Ok(vec![softmax_flat(input(inputs, 0, "input")?, *axis)?]),
        Op::Lrn(a) => Ok(vec![lrn(input(inputs, 0, "X")?, a)?]),
        other => bail!("norm kernel cannot run {}", other.name()),
    }
}

/// The channel count of a BatchNorm input: dim 1 of `[N, C, ...]`.
pub(crate) fn batch_norm_channels(shape: &[usize]) -> Result<usize> {
    if shape.len() < 2 {
        bail!("BatchNormalization input must have rank >= 2 ([N, C, ...]), got {shape:?}");
    }
    Ok(shape[1])
}

/// The four per-channel parameters (scale, B, mean, var) as f64, each checked to be a float
/// vector of the channel count. They may have their own float dtype (ONNX's T1/T2).
fn bn_params(x_shape: &[usize], params: [&Tensor; 4]) -> Result<[Vec<f64>; 4]> {
    let c = batch_norm_channels(x_shape)?;
    let mut vals: [Vec<f64>; 4] = Default::default();
    for ((t, name), v) in params
        .iter()
        .zip(["scale", "B", "mean", "var"])
        .zip(vals.iter_mut())
    {
        if !t.dtype().is_float() {
            bail!("BatchNormalization {name} must be float, got {}", t.dtype());
        }
        if t.rank() != 1 || t.len() != c {
            bail!(
                "BatchNormalization {name} must have shape [{c}], got {:?}",
                t.shape()
            );
        }
        *v = t.to_f64_vec();
    }
    Ok(vals)
}

/// `y = (x - mean) / sqrt(var + eps) * scale + B`, folded per channel into `y = x * a + b`.
/// Parameters may have their own float dtype (ONNX's T1/T2); they are read as f64.
pub fn batch_norm(x: &Tensor, params: [&Tensor; 4], epsilon: f32) -> Result<Tensor> {
    let [scale, bias, mean, var] = bn_params(x.shape(), params)?;
    bn_apply(x, &scale, &bias, &mean, &var, epsilon)
}

/// Training-mode BatchNormalization (ONNX opset >= 14): normalizes with the batch's own
/// per-channel mean and biased variance (over every axis but 1, as the ONNX reference's
/// `x.var(axis)` does), and returns `[Y, running_mean, running_var]`, where
/// `running = input * momentum + batch stat * (1 - momentum)`. The running stats take the
/// dtype of the mean/var inputs they update. Statistics are summed in f64 in a fixed order.
pub fn batch_norm_training(
    x: &Tensor,
    params: [&Tensor; 4],
    epsilon: f32,
    momentum: f32,
) -> Result<[Tensor; 3]> {
    let [scale, bias, in_mean, in_var] = bn_params(x.shape(), params)?;
    let shape = x.shape();
    let c = shape[1];
    let inner: usize = shape[2..].iter().product();
    let count = shape[0] * inner;
    if count == 0 {
        // The mean of no elements is undefined; ONNX gives no answer, so neither do we.
        bail!("BatchNormalization in training mode needs a non-empty batch, got {shape:?}");
    }
    let xs = x.to_f64_vec();
    // Row-major [N, C, inner]: block `blk` belongs to channel `blk % c`.
    let mut sum = vec![0f64; c];
    for (blk, chunk) in xs.chunks(inner.max(1)).enumerate() {
        sum[blk % c] += chunk.iter().sum::<f64>();
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / count as f64).collect();
    // Two passes (mean first, then squared deviations) rather than E[x^2] - E[x]^2, which
    // loses precision when the mean is large next to the spread.
    let mut sq = vec![0f64; c];
    for (blk, chunk) in xs.chunks(inner.max(1)).enumerate() {
        let m = mean[blk % c];
        sq[blk % c] += chunk.iter().map(|v| (v - m) * (v - m)).sum::<f64>();
    }
    let var: Vec<f64> = sq.iter().map(|s| s / count as f64).collect();
    let y = bn_apply(x, &scale, &bias, &mean, &var, epsilon)?;
    let mo = f64::from(momentum);
    let running = |input: &[f64], batch: &[f64], like: &Tensor| -> Result<Tensor> {
        let v = input
            .iter()
            .zip(batch)
            .map(|(i, b)| i * mo + b * (1.0 - mo))
            .collect();
        Ok(Tensor::from_vec(&[c], v)?.cast(like.dtype()))
    };
    Ok([
        y,
        running(&in_mean, &mean, params[2])?,
        running(&in_var, &var, params[3])?,
    ])
}

/// The per-channel `(a, b)` of `y = x * a + b` for inference BatchNorm, parameters checked
/// against X's shape (what `batch_norm` computes with; `pointwise` reuses it in place).
pub(crate) fn bn_coeffs(
    x_shape: &[usize],
    params: [&Tensor; 4],
    epsilon: f32,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let [scale, bias, mean, var] = bn_params(x_shape, params)?;
    Ok(bn_fold(&scale, &bias, &mean, &var, epsilon))
}

fn bn_fold(
    scale: &[f64],
    bias: &[f64],
    mean: &[f64],
    var: &[f64],
    epsilon: f32,
) -> (Vec<f64>, Vec<f64>) {
    let eps = f64::from(epsilon);
    (0..scale.len())
        .map(|i| {
            let a = scale[i] / (var[i] + eps).sqrt();
            (a, bias[i] - mean[i] * a)
        })
        .unzip()
}

fn bn_apply(
    x: &Tensor,
    scale: &[f64],
    bias: &[f64],
    mean: &[f64],
    var: &[f64],
    epsilon: f32,
) -> Result<Tensor> {
    let (a, b) = bn_fold(scale, bias, mean, var, epsilon);
    Ok(match x {
        Tensor::F32(x) => Tensor::F32(bn_t(x, &a, &b)),
        Tensor::F64(x) => Tensor::F64(bn_t(x, &a, &b)),
        Tensor::F16(x) => Tensor::F16(bn_t(&x.mapv(|v| v.to_f32()), &a, &b).mapv(f16::from_f32)),
        _ => bail!("BatchNormalization needs a float input, got {}", x.dtype()),
    })
}

fn bn_t<T: NdFloat + Elem>(x: &ArrayD<T>, a: &[f64], b: &[f64]) -> ArrayD<T> {
    let c = x.shape()[1];
    let inner: usize = x.shape()[2..].iter().product();
    let x = x.as_standard_layout();
    let src = x.as_slice().expect("standard layout");
    let mut out = vec![T::zero(); src.len()];
    // Row-major [N, C, inner]: block `blk` is channel `blk % c`, one multiply-add per
    // element, read once and written once.
    let run = |first: usize, s: &[T], d: &mut [T]| {
        for (blk, (s, d)) in (first..).zip(s.chunks(inner).zip(d.chunks_mut(inner))) {
            let ch = blk % c;
            let (ca, cb) = (T::from_f64(a[ch]), T::from_f64(b[ch]));
            for (d, &v) in d.iter_mut().zip(s) {
                *d = v * ca + cb;
            }
        }
    };
    if inner > 0 {
        if super::par::worth_splitting(src.len()) {
            // Whole channel blocks per task.
            let per = super::par::units_per_task(inner) * inner;
            out.par_chunks_mut(per)
                .zip(src.par_chunks(per))
                .enumerate()
                .for_each(|(i, (d, s))| run(i * per / inner, s, d));
        } else {
            run(0, src, &mut out);
        }
    }
    ArrayD::from_shape_vec(x.raw_dim(), out).expect("same element count")
}

/// Softmax along one axis (the opset >= 13 definition), stabilized by subtracting the max.
pub fn softmax(x: &Tensor, axis: i64) -> Result<Tensor> {
    let ax = crate::ir::infer::norm_axis(axis, x.rank())?;
    Ok(match x {
        Tensor::F32(a) => Tensor::F32(softmax_t(a, ax)),
        Tensor::F64(a) => Tensor::F64(softmax_t(a, ax)),
        Tensor::F16(a) => Tensor::F16(softmax_t(&a.mapv(|v| v.to_f32()), ax).mapv(f16::from_f32)),
        _ => bail!("Softmax needs a float input, got {}", x.dtype()),
    })
}

/// The legacy axis: `0..=rank` (negative from opset 11, counted from the end).
pub(crate) fn flat_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a > r {
        bail!("axis {axis} is out of range for rank {rank}");
    }
    Ok(a as usize)
}

/// Softmax before opset 13: rows of the input seen as 2-D at `axis`.
pub fn softmax_flat(x: &Tensor, axis: i64) -> Result<Tensor> {
    let ax = flat_axis(axis, x.rank())?;
    let shape = x.shape().to_vec();
    let rows: usize = shape[..ax].iter().product();
    let cols: usize = shape[ax..].iter().product();
    let flat = x.clone().reshape(&[rows, cols])?;
    softmax(&flat, 1)?.reshape(&shape)
}

fn softmax_t<T: NdFloat>(x: &ArrayD<T>, ax: usize) -> ArrayD<T> {
    let mut out = x.as_standard_layout().into_owned();
    for mut lane in out.lanes_mut(Axis(ax)) {
        let m = lane.fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
        let mut sum = T::zero();
        for v in lane.iter_mut() {
            *v = (*v - m).exp();
            sum += *v;
        }
        for v in lane.iter_mut() {
            *v /= sum;
        }
    }
    out
}

/// LRN across channels: `y = x / (bias + alpha / size * sum_sq)^beta`, the sum over channels
/// `c - floor((size - 1) / 2) ..= c + ceil((size - 1) / 2)` clipped to the tensor. Sums of
/// squares are taken in f64 in channel order, then rounded to the tensor's type.
pub fn lrn(x: &Tensor, a: &LrnAttrs) -> Result<Tensor> {
    if x.rank() < 2 {
        bail!(
            "LRN input must have rank >= 2 ([N, C, ...]), got {:?}",
            x.shape()
        );
    }
    if a.size == 0 {
        bail!("LRN size is 0");
    }
    fn go<T: Elem>(x: &ArrayD<T>, a: &LrnAttrs) -> ArrayD<T> {
        let sh = x.shape();
        let (c, inner) = (sh[1], sh[2..].iter().product::<usize>());
        let x = x.as_standard_layout();
        let xd = x.as_slice().expect("standard layout");
        let before = (a.size - 1) / 2;
        let after = a.size - 1 - before;
        let scale = f64::from(a.alpha) / a.size as f64;
        let mut out = Vec::with_capacity(xd.len());
        for (i, &v) in xd.iter().enumerate() {
            let (n, ch, j) = (i / (c * inner), (i / inner) % c, i % inner);
            let lo = ch.saturating_sub(before);
            let hi = (ch + after).min(c - 1);
            let sum: f64 = (lo..=hi)
                .map(|k| xd[(n * c + k) * inner + j].to_f64().powi(2))
                .sum();
            let d = (f64::from(a.bias) + scale * sum).powf(f64::from(a.beta));
            out.push(T::from_f64(v.to_f64() / d));
        }
        ArrayD::from_shape_vec(x.raw_dim(), out).expect("same element count")
    }
    Ok(match x {
        Tensor::F32(t) => Tensor::F32(go(t, a)),
        Tensor::F64(t) => Tensor::F64(go(t, a)),
        Tensor::F16(t) => Tensor::F16(go(t, a)),
        _ => bail!("LRN needs a float input, got {}", x.dtype()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_norm_matches_per_element_formula_for_any_thread_count() {
        // [2, 5, 70, 70]: past two chunks, so the parallel split runs.
        let shape = [2usize, 5, 70, 70];
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1013) as f32 / 50.0 - 10.0)
            .collect();
        let x = Tensor::from_vec(&shape, x).unwrap();
        let p = |v: [f32; 5]| Tensor::from_vec(&[5], v.to_vec()).unwrap();
        let (scale, bias) = (
            p([1.0, 0.5, -2.0, 3.0, 0.1]),
            p([0.0, 1.0, -1.0, 0.25, 9.0]),
        );
        let (mean, var) = (p([0.5, -1.0, 2.0, 0.0, 3.0]), p([1.0, 4.0, 0.25, 2.0, 9.0]));
        let run = |t: usize| {
            crate::kernels::test_data::on_threads(t, || {
                batch_norm(&x, [&scale, &bias, &mean, &var], 1e-5).unwrap()
            })
        };
        let y = run(1);
        assert_eq!(y, run(3));
        let (xs, ys) = (x.to_f64_vec(), y.to_f64_vec());
        let [s, b, m, v] = [&scale, &bias, &mean, &var].map(|t| t.to_f64_vec());
        for (i, (&xv, &yv)) in xs.iter().zip(&ys).enumerate() {
            let c = (i / (70 * 70)) % 5;
            let want = (xv - m[c]) / (v[c] + 1e-5f32 as f64).sqrt() * s[c] + b[c];
            assert!(
                (yv - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{i}: {yv} vs {want}"
            );
        }
    }

    #[test]
    fn softmax_flat_rows() {
        // [1, 2, 2] at axis 1: one row of 4 values.
        let x = Tensor::from_vec(&[1, 2, 2], vec![0f64, 0., 0., (3f64).ln()]).unwrap();
        let r = softmax_flat(&x, 1).unwrap();
        assert_eq!(r.shape(), &[1, 2, 2]);
        let v = r.to_f64_vec();
        for (g, w) in v.iter().zip([1. / 6., 1. / 6., 1. / 6., 0.5]) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
        assert!(softmax_flat(&x, 4).is_err());
    }

    #[test]
    fn lrn_by_hand() {
        // C = 3, size 2: channel c sums c - 0 ..= c + 1. x = [1, 2, 3] on one pixel.
        let x = Tensor::from_vec(&[1, 3, 1], vec![1f64, 2., 3.]).unwrap();
        let a = LrnAttrs {
            alpha: 0.5,
            beta: 1.0,
            bias: 1.0,
            size: 2,
        };
        let r = lrn(&x, &a).unwrap().to_f64_vec();
        // Sums 1+4, 4+9, 9; y = x / (1 + 0.25 * sum).
        let want = [1. / 2.25, 2. / 4.25, 3. / 3.25];
        for (g, w) in r.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
    }

    #[test]
    fn batchnorm_tiny() {
        // X: N=1, C=2, 2 elements per channel.
        let x = Tensor::from_vec(&[1, 2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let scale = Tensor::from_vec(&[2], vec![2f32, 1.]).unwrap();
        let b = Tensor::from_vec(&[2], vec![0f32, 1.]).unwrap();
        let mean = Tensor::from_vec(&[2], vec![1f32, 3.]).unwrap();
        let var = Tensor::from_vec(&[2], vec![4f32, 1.]).unwrap();
        let r = batch_norm(&x, [&scale, &b, &mean, &var], 0.0).unwrap();
        // ch0: (x-1)/2*2+0 -> 0, 1 ; ch1: (x-3)/1*1+1 -> 1, 2
        assert_eq!(r.to_f64_vec(), vec![0., 1., 1., 2.]);
        let bad = Tensor::from_vec(&[3], vec![1f32, 1., 1.]).unwrap();
        assert!(batch_norm(&x, [&bad, &b, &mean, &var], 0.0).is_err());
    }

    #[test]
    fn batchnorm_training_by_hand() {
        // N=2, C=2, one element per channel per batch item: ch0 = {1, 3}, ch1 = {2, 6}.
        let x = Tensor::from_vec(&[2, 2, 1], vec![1f32, 2., 3., 6.]).unwrap();
        let scale = Tensor::from_vec(&[2], vec![1f32, 2.]).unwrap();
        let b = Tensor::from_vec(&[2], vec![0f32, 1.]).unwrap();
        let mean = Tensor::from_vec(&[2], vec![0f32, 10.]).unwrap();
        let var = Tensor::from_vec(&[2], vec![1f32, 1.]).unwrap();
        let [y, rm, rv] = batch_norm_training(&x, [&scale, &b, &mean, &var], 0.0, 0.5).unwrap();
        // Batch stats: ch0 mean 2, biased var 1; ch1 mean 4, biased var 4 (not 8: biased).
        // y ch0 = (x - 2) / 1 -> -1, 1; ch1 = (x - 4) / 2 * 2 + 1 -> -1, 3.
        assert_eq!(y.to_f64_vec(), vec![-1., -1., 1., 3.]);
        // running = input * 0.5 + batch * 0.5.
        assert_eq!(rm.to_f64_vec(), vec![1., 7.]);
        assert_eq!(rv.to_f64_vec(), vec![1., 2.5]);
        // The inputs' own stats are ignored for Y: same Y whatever they say.
        let r = eval(
            &Op::BatchNormTraining {
                epsilon: 0.0,
                momentum: 0.5,
            },
            &[Some(&x), Some(&scale), Some(&b), Some(&var), Some(&var)],
            1,
        )
        .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0], y);
        let empty = Tensor::from_vec(&[0, 2, 1], Vec::<f32>::new()).unwrap();
        assert!(batch_norm_training(&empty, [&scale, &b, &mean, &var], 0.0, 0.5).is_err());
    }

    #[test]
    fn softmax_rows() {
        let x = Tensor::from_vec(&[2, 2], vec![0f32, 0., 0., (3f32).ln()]).unwrap();
        let r = softmax(&x, -1).unwrap().to_f64_vec();
        let want = [0.5, 0.5, 0.25, 0.75];
        for (g, w) in r.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{r:?}");
        }
        // Along axis 0: columns [0,0] and [0, ln3].
        let r = softmax(&x, 0).unwrap().to_f64_vec();
        let want = [0.5, 0.25, 0.5, 0.75];
        for (g, w) in r.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{r:?}");
        }
    }
}
