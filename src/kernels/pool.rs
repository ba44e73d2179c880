//! MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool on f32, f64 and f16; the max
//! pools also on integers of up to 32 bits.
//!
//! Values are combined in f64 (exact for max, and an accurate sum for averages), then
//! converted back. Work is split per (batch, channel) plane, so it is the same for any thread
//! count. Windowed pools are written for 3 spatial dims; 1-D and 2-D inputs are lifted by
//! leading spatial dims of size 1.

use super::input;
use crate::ir::op::PoolAttrs;
use crate::ir::Op;
use crate::tensor::{f16, DType, Elem, Tensor};
use anyhow::{bail, ensure, Result};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "X")?;
    if n_outputs > 1 {
        // MaxPool's second output, Indices; it needs the dtype-generic loop below.
        let Op::MaxPool(p) = op else {
            bail!(
                "{} has one output, the node asks for {n_outputs}",
                op.name()
            );
        };
        if n_outputs > 2 {
            bail!("MaxPool has at most 2 outputs, the node asks for {n_outputs}");
        }
        fn go<T: Elem>(x: &ArrayD<T>, p: &PoolAttrs) -> Result<Vec<Tensor>> {
            let (y, idx) = max_pool_with_indices(x, p)?;
            Ok(vec![T::wrap(y), Tensor::I64(idx)])
        }
        return match x.dtype() {
            DType::F32 => go::<f32>(x.view()?, p),
            DType::F64 => go::<f64>(x.view()?, p),
            DType::F16 => go::<f16>(x.view()?, p),
            DType::I8 => go::<i8>(x.view()?, p),
            DType::I16 => go::<i16>(x.view()?, p),
            DType::I32 => go::<i32>(x.view()?, p),
            DType::U8 => go::<u8>(x.view()?, p),
            DType::U16 => go::<u16>(x.view()?, p),
            DType::U32 => go::<u32>(x.view()?, p),
            other => bail!("MaxPool on {other} is not supported"),
        };
    }
    let out = match x.dtype() {
        DType::F32 => pool::<f32>(op, x.view()?)?,
        DType::F64 => pool::<f64>(op, x.view()?)?,
        DType::F16 => pool::<f16>(op, x.view()?)?,
        // Max of integers up to 32 bits is exact through f64; averages of integers are not
        // defined by ONNX, and 64-bit integers would not survive f64.
        d if matches!(op, Op::MaxPool(_) | Op::GlobalMaxPool) => match d {
            DType::I8 => pool::<i8>(op, x.view()?)?,
            DType::I16 => pool::<i16>(op, x.view()?)?,
            DType::I32 => pool::<i32>(op, x.view()?)?,
            DType::U8 => pool::<u8>(op, x.view()?)?,
            DType::U16 => pool::<u16>(op, x.view()?)?,
            DType::U32 => pool::<u32>(op, x.view()?)?,
            other => bail!("{} on {other} is not supported", op.name()),
        },
        other => bail!("{} on {other} is not supported", op.name()),
    };
    Ok(vec![out])
}

fn pool<T: Elem>(op: &Op, x: &ArrayD<T>) -> Result<Tensor> {
    Ok(T::wrap(match op {
        Op::MaxPool(p) => window_pool(x, p, true)?,
        Op::AveragePool(p) => window_pool(x, p, false)?,
        Op::GlobalMaxPool => global_pool(x, true)?,
        Op::GlobalAveragePool => global_pool(x, false)?,
        other => bail!("pool kernel called for {}", other.name()),
    }))
}

fn lift(v: &[usize], fill: usize) -> [usize; 3] {
    let mut out = [fill; 3];
    out[3 - v.len()..].copy_from_slice(v);
    out
}

/// The taps of one window along one axis that fall inside the input (`n` of them from
/// `first`, a dilation apart), and how many fall inside the input and its pads.
struct AxisTaps {
    first: usize,
    n: usize,
    in_padded: usize,
}

/// A windowed pool. `max` selects MaxPool, else AveragePool.
pub fn window_pool<T: Elem>(x: &ArrayD<T>, p: &PoolAttrs, max: bool) -> Result<ArrayD<T>> {
    Ok(window_pool_impl(x, p, max, false)?.0)
}

/// MaxPool and its Indices output: for each output element, the flat index into X of the
/// maximum it took (the first one in window order on ties, the first NaN if any), counting
/// the (batch, channel) planes row-major and, within a plane, the spatial axes row-major, or
/// column-major when `p.column_major_indices` (ONNX storage_order = 1, as onnxruntime
/// computes it). A window with no tap inside the input (possible with ceil_mode and padding)
/// gives -1, there being no element to point at.
pub fn max_pool_with_indices<T: Elem>(
    x: &ArrayD<T>,
    p: &PoolAttrs,
) -> Result<(ArrayD<T>, ArrayD<i64>)> {
    let (y, idx) = window_pool_impl(x, p, true, true)?;
    let idx = ArrayD::from_shape_vec(y.raw_dim(), idx.unwrap_or_default())?;
    Ok((y, idx))
}

/// The windowed pool, with the argmax indices too when `want_indices` (MaxPool only).
fn window_pool_impl<T: Elem>(
    x: &ArrayD<T>,
    p: &PoolAttrs,
    max: bool,
    want_indices: bool,
) -> Result<(ArrayD<T>, Option<Vec<i64>>)> {
    let (out_shape, g) = crate::ir::infer::window_pool_geometry(p, x.shape())?;
    crate::tensor::limits::check_alloc(&out_shape, T::DTYPE)?;
    if want_indices {
        crate::tensor::limits::check_alloc(&out_shape, DType::I64)?;
    }

    let input = lift(&g.input, 1);
    let kernel = lift(&g.kernel, 1);
    let strides = lift(&g.strides, 1);
    let dil = lift(&g.dilations, 1);
    let pb = lift(&g.pads_begin, 0);
    let pe = lift(&g.pads_end, 0);
    let output = lift(&g.output, 1);
    let in_plane: usize = input.iter().product();
    let out_plane: usize = output.iter().product();

    // Per axis and output index: the kernel taps that fall inside the input, as the first
    // input index and a count (they step by the dilation), and (for count_include_pad) how
    // many fall inside input + pads. With ceil_mode the last window may run past the end
    // padding; those taps count for nothing. They depend on the output index alone, so they
    // are computed once here rather than per output element (which allocated three vectors
    // per element and made MaxPool two thirds of GoogLeNet's time).
    let axes: [Vec<AxisTaps>; 3] = std::array::from_fn(|i| {
        (0..output[i])
            .map(|o| {
                let start = (o * strides[i]) as isize - pb[i] as isize;
                let mut t = AxisTaps {
                    first: 0,
                    n: 0,
                    in_padded: 0,
                };
                for k in 0..kernel[i] {
                    let c = start + (k * dil[i]) as isize;
                    if c >= -(pb[i] as isize) && c < (input[i] + pe[i]) as isize {
                        t.in_padded += 1;
                    }
                    if c >= 0 && c < input[i] as isize {
                        if t.n == 0 {
                            t.first = c as usize;
                        }
                        t.n += 1;
                    }
                }
                t
            })
            .collect()
    });
    let taps_of = |t: &AxisTaps, i: usize| {
        let (first, step) = (t.first, dil[i]);
        (0..t.n).map(move |j| first + j * step)
    };

    let x = x.as_standard_layout();
    let xd = x.as_slice().expect("standard layout");
    // Offset of spatial position (z, y, x) within a plane as the Indices output counts it.
    // Lifted leading axes have size 1 and coordinate 0, so they drop out of both orders.
    let spatial_index = |z: usize, y: usize, xx: usize| -> usize {
        if p.column_major_indices {
            z + (y + xx * input[1]) * input[0]
        } else {
            (z * input[1] + y) * input[2] + xx
        }
    };
    // One (batch, channel) plane: `dst` gets the pooled values, `idx` (when asked for) the
    // flat input index of each maximum.
    let run_plane = |plane: usize, dst: &mut [T], mut idx: Option<&mut [i64]>| {
        let src = &xd[plane * in_plane..(plane + 1) * in_plane];
        for (pos, v) in dst.iter_mut().enumerate() {
            let o = [
                pos / (output[1] * output[2]),
                (pos / output[2]) % output[1],
                pos % output[2],
            ];
            let t = [&axes[0][o[0]], &axes[1][o[1]], &axes[2][o[2]]];
            let padded_count = t[0].in_padded * t[1].in_padded * t[2].in_padded;
            let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
            let mut n = 0usize;
            // -1 until some tap is seen (an empty window points at nothing).
            let mut best: i64 = -1;
            for z in taps_of(t[0], 0) {
                for y in taps_of(t[1], 1) {
                    for xx in taps_of(t[2], 2) {
                        let val = src[(z * input[1] + y) * input[2] + xx].to_f64();
                        if max {
                            // NaN propagates, as in numpy's max; the first NaN stays.
                            if n == 0 || val > acc || (val.is_nan() && !acc.is_nan()) {
                                acc = val;
                                best = spatial_index(z, y, xx) as i64;
                            }
                        } else {
                            acc += val;
                        }
                        n += 1;
                    }
                }
            }
            let r = if max {
                acc
            } else {
                let count = if p.count_include_pad { padded_count } else { n };
                if count == 0 {
                    0.0
                } else {
                    acc / count as f64
                }
            };
            *v = T::from_f64(r);
            if let Some(idx) = idx.as_deref_mut() {
                idx[pos] = if best < 0 {
                    -1
                } else {
                    (plane * in_plane) as i64 + best
                };
            }
        }
    };
    let total: usize = out_shape.iter().product();
    let mut out = vec![T::default(); total];
    let mut indices = want_indices.then(|| vec![0i64; total]);
    if out_plane > 0 {
        match indices.as_mut() {
            Some(idx) => out
                .par_chunks_mut(out_plane)
                .zip(idx.par_chunks_mut(out_plane))
                .enumerate()
                .for_each(|(plane, (dst, idx))| run_plane(plane, dst, Some(idx))),
            None => out
                .par_chunks_mut(out_plane)
                .enumerate()
                .for_each(|(plane, dst)| run_plane(plane, dst, None)),
        }
    }
    Ok((ArrayD::from_shape_vec(IxDyn(&out_shape), out)?, indices))
}

/// GlobalMaxPool / GlobalAveragePool: every spatial dim reduced to 1.
pub fn global_pool<T: Elem>(x: &ArrayD<T>, max: bool) -> Result<ArrayD<T>> {
    let xs = x.shape();
    ensure!(
        xs.len() >= 2,
        "input has rank {} ({xs:?}); global pooling needs [N, C, spatial...]",
        xs.len()
    );
    let mut out_shape = xs.to_vec();
    out_shape[2..].fill(1);
    let plane: usize = xs[2..].iter().product();
    let x = x.as_standard_layout();
    let xd = x.as_slice().expect("standard layout");
    let mut out = vec![T::default(); xs[0] * xs[1]];
    out.par_iter_mut().enumerate().for_each(|(i, v)| {
        let src = &xd[i * plane..(i + 1) * plane];
        let r = if max {
            src.iter()
                .map(|v| v.to_f64())
                .fold(
                    f64::NEG_INFINITY,
                    |a, b| {
                        if b > a || b.is_nan() {
                            b
                        } else {
                            a
                        }
                    },
                )
        } else {
            src.iter().map(|v| v.to_f64()).sum::<f64>() / plane as f64
        };
        *v = T::from_f64(r);
    });
    Ok(ArrayD::from_shape_vec(IxDyn(&out_shape), out)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::{Padding, Window};

    fn attrs(ks: &[usize], strides: &[usize], pads: &[usize], ceil: bool, cip: bool) -> PoolAttrs {
        PoolAttrs {
            window: Window {
                kernel_shape: Some(ks.to_vec()),
                strides: strides.to_vec(),
                dilations: vec![],
                padding: Padding::Explicit(pads.to_vec()),
            },
            ceil_mode: ceil,
            count_include_pad: cip,
            column_major_indices: false,
        }
    }

    fn x44() -> ArrayD<f32> {
        // [[0,1,2,3],[4,5,6,7],[8,9,10,11],[12,13,14,15]]
        ArrayD::from_shape_vec(IxDyn(&[1, 1, 4, 4]), (0..16).map(|v| v as f32).collect()).unwrap()
    }

    fn vals(a: &ArrayD<f32>) -> Vec<f32> {
        a.iter().copied().collect()
    }

    #[test]
    fn max_and_avg_by_hand() {
        let x = x44();
        let a = attrs(&[2, 2], &[2, 2], &[], false, false);
        let y = window_pool(&x, &a, true).unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(vals(&y), vec![5., 7., 13., 15.]);
        let y = window_pool(&x, &a, false).unwrap();
        assert_eq!(vals(&y), vec![2.5, 4.5, 10.5, 12.5]);
    }

    #[test]
    fn padding_and_count_include_pad() {
        let x = x44();
        // 3x3, stride 2, pad 1: windows centred on (0,0), (0,2), (2,0), (2,2).
        let a = attrs(&[3, 3], &[2, 2], &[1, 1, 1, 1], false, false);
        assert_eq!(
            vals(&window_pool(&x, &a, true).unwrap()),
            vec![5., 7., 13., 15.]
        );
        // (0,0): taps {0,1,4,5} -> 10/4; (0,2): {1,2,3,5,6,7} -> 24/6.
        let y = window_pool(&x, &a, false).unwrap();
        assert_eq!(vals(&y), vec![2.5, 4.0, 8.5, 10.0]);
        let a = attrs(&[3, 3], &[2, 2], &[1, 1, 1, 1], false, true);
        let y = window_pool(&x, &a, false).unwrap();
        assert_eq!(vals(&y), vec![10. / 9., 24. / 9., 51. / 9., 90. / 9.]);
    }

    #[test]
    fn ceil_mode_clips_windows() {
        // 1-D: [0,1,2,3,4], k=2, s=2, ceil: windows [0,1], [2,3], [4] -> last clipped.
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 5]), vec![0., 1., 2., 3., 4.]).unwrap();
        let a = attrs(&[2], &[2], &[], true, false);
        assert_eq!(vals(&window_pool(&x, &a, true).unwrap()), vec![1., 3., 4.]);
        assert_eq!(
            vals(&window_pool(&x, &a, false).unwrap()),
            vec![0.5, 2.5, 4.]
        );
        // count_include_pad counts only positions within input + pads (no pads here).
        let a = attrs(&[2], &[2], &[], true, true);
        assert_eq!(
            vals(&window_pool(&x, &a, false).unwrap()),
            vec![0.5, 2.5, 4.]
        );
    }

    #[test]
    fn max_pool_indices_by_hand() {
        // Two planes (C = 2) of the 4x4 ramp, the second negated so its maxima sit at the
        // windows' top-left corners instead.
        let mut v: Vec<f32> = (0..16).map(|v| v as f32).collect();
        v.extend((0..16).map(|v| -(v as f32)));
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 2, 4, 4]), v).unwrap();
        let a = attrs(&[2, 2], &[2, 2], &[], false, false);
        let (y, idx) = max_pool_with_indices(&x, &a).unwrap();
        assert_eq!(vals(&y), vec![5., 7., 13., 15., 0., -2., -8., -10.]);
        // Row-major: (1,1)=5, (1,3)=7, (3,1)=13, (3,3)=15; plane 1 adds 16 to (0,0), (0,2),
        // (2,0), (2,2).
        let want: Vec<i64> = vec![5, 7, 13, 15, 16, 18, 24, 26];
        assert_eq!(idx.iter().copied().collect::<Vec<_>>(), want);
        assert_eq!(idx.shape(), &[1, 2, 2, 2]);
        // Column-major within a plane: h + w * H, so (1,3) -> 13 and (3,1) -> 7.
        let mut a = a;
        a.column_major_indices = true;
        let (_, idx) = max_pool_with_indices(&x, &a).unwrap();
        let want: Vec<i64> = vec![5, 13, 7, 15, 16, 24, 18, 26];
        assert_eq!(idx.iter().copied().collect::<Vec<_>>(), want);
        // Pads: a 3x3 window at (0,0) with pad 1 sees rows/cols 0..=1; the index is of the
        // unpadded input. Ties keep the first maximum in window order.
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![1f32, 3., 3., 0.]).unwrap();
        let a = attrs(&[3, 3], &[2, 2], &[1, 1, 1, 1], false, false);
        let (y, idx) = max_pool_with_indices(&x, &a).unwrap();
        assert_eq!(vals(&y), vec![3.]);
        assert_eq!(idx.iter().copied().collect::<Vec<_>>(), vec![1]);
        // Through eval, on an integer dtype: values keep their dtype, indices are i64.
        let t = Tensor::from_vec(&[1, 1, 2, 2], vec![3u8, 250, 7, 1]).unwrap();
        let op = Op::MaxPool(attrs(&[2, 2], &[], &[], false, false));
        let r = eval(&op, &[Some(&t)], 2).unwrap();
        assert_eq!(r[0], Tensor::from_vec(&[1, 1, 1, 1], vec![250u8]).unwrap());
        assert_eq!(r[1], Tensor::from_vec(&[1, 1, 1, 1], vec![1i64]).unwrap());
    }

    #[test]
    fn global_pools() {
        let x = x44();
        let y = global_pool(&x, false).unwrap();
        assert_eq!(y.shape(), &[1, 1, 1, 1]);
        assert_eq!(vals(&y), vec![7.5]);
        assert_eq!(vals(&global_pool(&x, true).unwrap()), vec![15.]);
        let t = Tensor::F64(x.mapv(|v| v as f64));
        let y = eval(&Op::GlobalAveragePool, &[Some(&t)], 1).unwrap();
        assert_eq!(y[0].to_f64_vec(), vec![7.5]);
    }

    #[test]
    fn max_pool_u8() {
        let x = Tensor::from_vec(&[1, 1, 2, 2], vec![3u8, 250, 7, 1]).unwrap();
        let op = Op::MaxPool(attrs(&[2, 2], &[], &[], false, false));
        let r = eval(&op, &[Some(&x)], 1).unwrap();
        assert_eq!(r[0], Tensor::from_vec(&[1, 1, 1, 1], vec![250u8]).unwrap());
        assert!(eval(&Op::GlobalAveragePool, &[Some(&x)], 1).is_err());
    }

    #[test]
    fn refuses() {
        let t = Tensor::F32(x44());
        let op = Op::MaxPool(attrs(&[2, 2], &[], &[], false, false));
        assert!(eval(&op, &[Some(&t)], 3).is_err());
        let avg = Op::AveragePool(attrs(&[2, 2], &[], &[], false, false));
        assert!(eval(&avg, &[Some(&t)], 2).is_err());
        let mut a = attrs(&[2, 2], &[], &[], false, false);
        a.window.kernel_shape = None;
        assert!(eval(&Op::AveragePool(a), &[Some(&t)], 1).is_err());
    }
}
