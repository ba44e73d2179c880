//! MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool on f32, f64 and f16; the max
//! pools also on integers of up to 32 bits.
//!
//! Values are combined in f64 (exact for max, and an accurate sum for averages), then
//! converted back. Work is split per (batch, channel) plane, so it is the same for any thread
//! count. Windowed pools are written for 3 spatial dims; 1-D and 2-D inputs are lifted by
//! leading spatial dims of size 1.

use super::blocked::{self, Layout};
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
pub(super) struct AxisTaps {
    first: usize,
    n: usize,
    in_padded: usize,
}

/// How an AveragePool divides: by the taps inside the input, or (count_include_pad) inside
/// input + pads, the depth axis's share given.
#[derive(Clone, Copy)]
pub(super) struct PoolSum {
    count_include_pad: bool,
    depth: (usize, usize),
}

/// The count an output divides by is the product of its three axes' factors.
impl PoolSum {
    /// The depth axis's factor of the count.
    pub(super) fn depth_share(&self) -> usize {
        match self.count_include_pad {
            true => self.depth.1,
            false => self.depth.0,
        }
    }

    /// A row's or column's factor of the count.
    pub(super) fn share(&self, t: &AxisTaps) -> usize {
        match self.count_include_pad {
            true => t.in_padded,
            false => t.n,
        }
    }
}

/// A windowed pool. `max` selects MaxPool, else AveragePool.
pub fn window_pool<T: Elem>(x: &ArrayD<T>, p: &PoolAttrs, max: bool) -> Result<ArrayD<T>> {
    window_pool_rows(x, p, max)
}

/// MaxPool of an f32 `x` held in layout `lin` (a blocked input is `[N, C/8, H, W, 8]`),
/// writing the output blocked when `want` says so and [`max_pool_blocked_capable`] holds
/// for it; returns the output and its layout. Any other MaxPool runs on planes, a blocked
/// input converted first. Either way the same bits.
pub fn max_pool_io(
    x: &ArrayD<f32>,
    lin: Layout,
    p: &PoolAttrs,
    want: Layout,
) -> Result<(ArrayD<f32>, Layout)> {
    let xs = match lin {
        Layout::Planes => x.shape().to_vec(),
        Layout::Blocked => blocked::logical_shape(x.shape()),
    };
    if !max_pool_blocked_capable(&xs, p) || (lin, want) == (Layout::Planes, Layout::Planes) {
        let y = match lin {
            Layout::Planes => window_pool(x, p, true)?,
            Layout::Blocked => window_pool(&blocked::to_planes(x), p, true)?,
        };
        return Ok((y, Layout::Planes));
    }
    let g = Geometry::new(&xs, p, DType::F32, false)?;
    let x = x.as_standard_layout();
    let xd = x.as_slice().expect("standard layout");
    let mut out = vec![0f32; g.out_shape.iter().product()];
    let done = super::pool_interleaved::max_planes(&g, xd, &mut out, (lin, want));
    debug_assert_eq!(done * g.out_plane, out.len());
    let shape = match want {
        Layout::Planes => g.out_shape.clone(),
        Layout::Blocked => blocked::blocked_shape(&g.out_shape),
    };
    Ok((ArrayD::from_shape_vec(IxDyn(&shape), out)?, want))
}

/// Whether MaxPool reads and writes an f32 input of logical shape `x_shape` blocked
/// natively: 2-D windows on planes `pool_interleaved` takes, channels a multiple of 8, on
/// AVX2.
pub fn max_pool_blocked_capable(x_shape: &[usize], p: &PoolAttrs) -> bool {
    if !blocked::blockable(x_shape) || !cfg!(target_arch = "x86_64") {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if !std::arch::is_x86_feature_detected!("avx2") {
        return false;
    }
    Geometry::new(x_shape, p, DType::F32, false)
        .is_ok_and(|g| super::pool_flat::applies(&g) && super::pool_interleaved::applies(&g))
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

/// The window geometry lifted to 3 spatial dims, and the taps per axis and output index.
pub(super) struct Geometry {
    pub(super) out_shape: Vec<usize>,
    pub(super) input: [usize; 3],
    pub(super) kernel: [usize; 3],
    pub(super) strides: [usize; 3],
    pub(super) dil: [usize; 3],
    pub(super) pb: [usize; 3],
    pub(super) output: [usize; 3],
    pub(super) in_plane: usize,
    pub(super) out_plane: usize,
    pub(super) axes: [Vec<AxisTaps>; 3],
}

impl Geometry {
    fn new(x_shape: &[usize], p: &PoolAttrs, dtype: DType, want_indices: bool) -> Result<Self> {
        let (out_shape, g) = crate::ir::infer::window_pool_geometry(p, x_shape)?;
        crate::tensor::limits::check_alloc(&out_shape, dtype)?;
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

        // Per axis and output index: the kernel taps that fall inside the input, as the
        // first input index and a count (they step by the dilation), and (for
        // count_include_pad) how many fall inside input + pads. With ceil_mode the last
        // window may run past the end padding; those taps count for nothing. They depend on
        // the output index alone, so they are computed once here rather than per element.
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
        Ok(Geometry {
            out_shape,
            input,
            kernel,
            strides,
            dil,
            pb,
            output,
            in_plane,
            out_plane,
            axes,
        })
    }

    /// The input indices of the taps `t` along axis `i`.
    fn taps(&self, t: &AxisTaps, i: usize) -> impl Iterator<Item = usize> {
        let (first, step) = (t.first, self.dil[i]);
        (0..t.n).map(move |j| first + j * step)
    }
}

/// One tap of the window along the last axis: the output columns `lo..hi` whose tap falls
/// inside the input row, and the input column that `lo` reads (then every stride on).
struct ColumnTap {
    lo: usize,
    hi: usize,
    start: usize,
}

fn column_taps(g: &Geometry) -> Vec<ColumnTap> {
    let (iw, ow, s) = (g.input[2] as isize, g.output[2], g.strides[2]);
    (0..g.kernel[2])
        .map(|k| {
            // Output column o reads input column o * s + off.
            let off = (k * g.dil[2]) as isize - g.pb[2] as isize;
            let lo = if off >= 0 { 0 } else { (-off) as usize }.div_ceil(s);
            let last = iw - 1 - off; // o * s <= last
            let hi = if last < 0 {
                0
            } else {
                (last as usize / s + 1).min(ow)
            };
            let lo = lo.min(hi);
            ColumnTap {
                lo,
                hi,
                start: (lo as isize * s as isize + off).max(0) as usize,
            }
        })
        .collect()
}

/// `g(dst[j], row[start + j * stride])` for every j: the inner loop of the row kernels,
/// contiguous (and vectorized) for stride 1.
#[inline(always)]
fn over_row<T: Copy, A>(
    dst: &mut [A],
    row: &[T],
    start: usize,
    stride: usize,
    g: impl Fn(&mut A, T),
) {
    if dst.is_empty() {
        return;
    }
    if stride == 1 {
        let n = dst.len();
        for (d, &v) in dst.iter_mut().zip(&row[start..start + n]) {
            g(d, v);
        }
    } else {
        for (d, &v) in dst.iter_mut().zip(row[start..].iter().step_by(stride)) {
            g(d, v);
        }
    }
}

/// The windowed pool without indices, an output row at a time: for each input row the
/// window covers, and each tap along the row, one strided pass over the output columns
/// whose tap falls inside (ranges computed once), so there is no per-element bounds test.
/// Each output element still sees its taps in window order (row-major), so results are the
/// bits of the element-by-element definition: maxima exact with the same NaN rule, sums in
/// f64 in the same order.
fn window_pool_rows<T: Elem>(x: &ArrayD<T>, p: &PoolAttrs, max: bool) -> Result<ArrayD<T>> {
    let g = Geometry::new(x.shape(), p, T::DTYPE, false)?;
    if super::pool_flat::applies(&g) {
        let x = x.as_standard_layout();
        let xd = x.as_slice().expect("standard layout");
        let total: usize = g.out_shape.iter().product();
        let mut out = vec![T::default(); total];
        if g.out_plane > 0 {
            let sum = (!max).then(|| PoolSum {
                count_include_pad: p.count_include_pad,
                depth: (g.axes[0][0].n, g.axes[0][0].in_padded),
            });
            super::pool_flat::pool_planes(&g, xd, &mut out, sum);
        }
        return Ok(ArrayD::from_shape_vec(IxDyn(&g.out_shape), out)?);
    }
    let cols = column_taps(&g);
    let (ow, iw, ih, oh) = (g.output[2], g.input[2], g.input[1], g.output[1]);
    let sx = g.strides[2];
    let x = x.as_standard_layout();
    let xd = x.as_slice().expect("standard layout");
    let neg_inf = T::from_f64(f64::NEG_INFINITY);

    // One (batch, channel) plane.
    let run_plane = |plane: usize, dst: &mut [T], acc: &mut Vec<f64>| {
        let src = &xd[plane * g.in_plane..(plane + 1) * g.in_plane];
        for (r, drow) in dst.chunks_mut(ow).enumerate() {
            let (tz, ty) = (&g.axes[0][r / oh], &g.axes[1][r % oh]);
            if max {
                drow.fill(neg_inf);
            } else {
                acc.clear();
                acc.resize(ow, 0.0);
            }
            for z in g.taps(tz, 0) {
                for y in g.taps(ty, 1) {
                    let row = &src[(z * ih + y) * iw..(z * ih + y + 1) * iw];
                    for c in &cols {
                        if max {
                            // Keep the maximum so far unless `v` is larger, or is NaN while
                            // it is not: NaN propagates and the first NaN stays.
                            over_row(&mut drow[c.lo..c.hi], row, c.start, sx, |m, v| {
                                #[allow(clippy::eq_op)]
                                let keep = *m >= v || *m != *m;
                                *m = if keep { *m } else { v };
                            });
                        } else {
                            over_row(&mut acc[c.lo..c.hi], row, c.start, sx, |a, v| {
                                *a += v.to_f64()
                            });
                        }
                    }
                }
            }
            if !max {
                for (o, (d, &sum)) in drow.iter_mut().zip(acc.iter()).enumerate() {
                    let tx = &g.axes[2][o];
                    let count = if p.count_include_pad {
                        tz.in_padded * ty.in_padded * tx.in_padded
                    } else {
                        tz.n * ty.n * tx.n
                    };
                    *d = T::from_f64(if count == 0 { 0.0 } else { sum / count as f64 });
                }
            }
        }
    };
    let total: usize = g.out_shape.iter().product();
    let mut out = vec![T::default(); total];
    if g.out_plane > 0 {
        let taps: usize = g.kernel.iter().product();
        // Whole planes per task; the split does not change any element's arithmetic.
        if super::par::worth_splitting(total.saturating_mul(taps)) {
            let per = super::par::units_per_task(g.out_plane.saturating_mul(taps));
            out.par_chunks_mut(per * g.out_plane)
                .enumerate()
                .for_each(|(i, chunk)| {
                    let mut acc = Vec::new();
                    for (j, dst) in chunk.chunks_mut(g.out_plane).enumerate() {
                        run_plane(i * per + j, dst, &mut acc);
                    }
                });
        } else {
            let mut acc = Vec::new();
            for (plane, dst) in out.chunks_mut(g.out_plane).enumerate() {
                run_plane(plane, dst, &mut acc);
            }
        }
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&g.out_shape), out)?)
}

/// The windowed pool element by element, with the argmax indices too when `want_indices`
/// (MaxPool only).
fn window_pool_impl<T: Elem>(
    x: &ArrayD<T>,
    p: &PoolAttrs,
    max: bool,
    want_indices: bool,
) -> Result<(ArrayD<T>, Option<Vec<i64>>)> {
    let g = Geometry::new(x.shape(), p, T::DTYPE, want_indices)?;
    let Geometry {
        input,
        output,
        in_plane,
        out_plane,
        ..
    } = g;
    let axes = &g.axes;
    let out_shape = g.out_shape.clone();
    let taps_of = |t: &AxisTaps, i: usize| g.taps(t, i);

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
    let one = |i: usize| -> T {
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
            sum_f64(src) / plane as f64
        };
        T::from_f64(r)
    };
    // Whole planes per task (a task per plane costs more than a 7x7 plane's sum).
    if super::par::worth_splitting(out.len().saturating_mul(plane)) {
        let per = super::par::units_per_task(plane);
        out.par_chunks_mut(per).enumerate().for_each(|(c, dst)| {
            for (j, v) in dst.iter_mut().enumerate() {
                *v = one(c * per + j);
            }
        });
    } else {
        for (i, v) in out.iter_mut().enumerate() {
            *v = one(i);
        }
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&out_shape), out)?)
}

/// The sum in f64 in sixteen interleaved partial sums (element i into sum i % 16; then sums
/// 8..16 added onto 0..8, 4..8 onto 0..4, 2..4 onto 0..2, 1 onto 0; then the tail in
/// order): a fixed order on any CPU, and four AVX2 vectors of independent add chains. With
/// four sums (compiled for SSE2: two chains of two lanes) EfficientNet-B0's 17
/// GlobalAveragePools took 0.575 ms, 0.412 now (minima of 4 profiles in the net).
pub(crate) fn sum_f64<T: Elem>(src: &[T]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { sum_f64_avx2(src) };
    }
    sum_f64_body(src)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_f64_avx2<T: Elem>(src: &[T]) -> f64 {
    sum_f64_body(src)
}

#[inline(always)]
fn sum_f64_body<T: Elem>(src: &[T]) -> f64 {
    const LANES: usize = 16;
    let mut acc = [0f64; LANES];
    let chunks = src.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v.to_f64();
        }
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        let (lo, hi) = acc.split_at_mut(width);
        for (a, b) in lo.iter_mut().zip(hi.iter()) {
            *a += *b;
        }
    }
    let mut s = acc[0];
    for v in tail {
        s += v.to_f64();
    }
    s
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

    /// Deterministic pseudo-random values in [-4, 4) with exact zeros of both signs mixed
    /// in, so ties between +0 and -0 test the window order.
    use crate::kernels::test_data::noise;

    fn same_bits(a: &ArrayD<f32>, b: &ArrayD<f32>) -> bool {
        a.shape() == b.shape() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    /// The fast pools (plane-flattened for 1-D/2-D, row by row for 3-D) against the
    /// element-by-element definition, bit for bit, over edge geometries.
    #[test]
    fn fast_paths_match_element_by_element() {
        struct Case {
            shape: Vec<usize>,
            ks: Vec<usize>,
            strides: Vec<usize>,
            dil: Vec<usize>,
            pads: Vec<usize>,
            ceil: bool,
        }
        let c = |shape: &[usize],
                 ks: &[usize],
                 strides: &[usize],
                 dil: &[usize],
                 pads: &[usize],
                 ceil| Case {
            shape: shape.to_vec(),
            ks: ks.to_vec(),
            strides: strides.to_vec(),
            dil: dil.to_vec(),
            pads: pads.to_vec(),
            ceil,
        };
        let cases = [
            c(&[2, 3, 11, 13], &[3, 3], &[2, 2], &[], &[], true), // GoogLeNet's ceil_mode pool
            c(&[1, 2, 5, 71], &[3, 3], &[2, 2], &[], &[1, 1, 1, 1], true), // wide stride-2 copy
            c(&[1, 4, 12, 12], &[3, 3], &[1, 1], &[], &[1, 1, 1, 1], false),
            c(&[1, 2, 9, 10], &[3, 3], &[2, 2], &[], &[1, 1, 1, 1], false),
            c(&[1, 2, 9, 10], &[2, 3], &[3, 2], &[], &[0, 1, 1, 0], true),
            c(&[1, 2, 7, 8], &[2, 2], &[4, 5], &[], &[], true), // strides > kernel
            c(&[1, 3, 8, 10], &[2, 2], &[2, 2], &[], &[], false), // DenseNet's 2x2 pairs
            c(&[1, 2, 7, 9], &[2, 2], &[2, 2], &[], &[], false), // pairs, last row unread
            c(&[1, 2, 7, 9], &[2, 2], &[2, 2], &[], &[], true), // clipped: not pairs
            c(&[1, 2, 8, 8], &[2, 2], &[2, 2], &[], &[0, 0, 1, 1], false), // end pads unread
            c(&[1, 40, 30, 30], &[2, 2], &[2, 2], &[], &[], false), // pairs, split in tasks
            c(
                &[1, 2, 5, 5],
                &[2, 2],
                &[100, 100],
                &[],
                &[1, 1, 1, 1],
                true,
            ), // row-by-row
            c(
                &[1, 2, 9, 9],
                &[3, 2],
                &[2, 1],
                &[2, 3],
                &[2, 1, 1, 2],
                true,
            ), // dilations
            c(&[1, 1, 1, 1], &[1, 1], &[1, 1], &[], &[], false),
            c(&[1, 1, 1, 6], &[1, 3], &[1, 2], &[], &[0, 1, 0, 1], true), // size-1 dims
            c(&[3, 5, 1], &[1], &[1], &[], &[], false),
            c(&[2, 3, 17], &[4], &[3], &[2], &[2, 3], true), // 1-D
            c(
                &[1, 2, 5, 6, 7],
                &[2, 3, 2],
                &[2, 1, 2],
                &[],
                &[1, 0, 1, 0, 1, 1],
                true,
            ), // 3-D
            c(
                &[1, 1, 4, 4, 4],
                &[1, 3, 3],
                &[1, 1, 1],
                &[],
                &[0, 1, 1, 0, 1, 1],
                false,
            ),
        ];
        for (i, case) in cases.iter().enumerate() {
            let x = noise(&case.shape, i as u64 + 1);
            for (ceil, cip) in [(case.ceil, false), (case.ceil, true)] {
                let mut a = attrs(&case.ks, &case.strides, &case.pads, ceil, cip);
                a.window.dilations = case.dil.clone();
                for max in [true, false] {
                    let want = window_pool_impl(&x, &a, max, false).unwrap().0;
                    let got = window_pool(&x, &a, max).unwrap();
                    assert!(
                        same_bits(&got, &want),
                        "case {i} max {max} cip {cip}: {got:?} vs {want:?}"
                    );
                }
            }
            // Non-contiguous input: a transposed view of the last two axes.
            let mut xt = x.clone();
            let r = xt.ndim();
            xt.swap_axes(r - 1, r - 2);
            let a = attrs(&case.ks, &case.strides, &case.pads, case.ceil, false);
            let want = window_pool_impl(&xt.as_standard_layout().into_owned(), &a, true, false);
            let got = window_pool(&xt, &a, true);
            match (got, want) {
                (Ok(g), Ok((w, _))) => assert!(same_bits(&g, &w), "case {i} transposed"),
                (g, w) => assert_eq!(g.is_err(), w.is_err(), "case {i} transposed"),
            }
        }
        // An AveragePool sum starts at +0: a window of -0.0s averages to +0.0.
        let z = ArrayD::from_elem(IxDyn(&[1, 1, 2, 2]), -0.0f32);
        let a = attrs(&[2, 2], &[2, 2], &[], false, false);
        let got = window_pool(&z, &a, false).unwrap();
        assert_eq!(got.iter().next().map(|v| v.to_bits()), Some(0));
        // NaN propagates (the first NaN stays) and an all-padding window gives -inf / 0.
        let mut x = noise(&[1, 1, 6, 6], 99);
        x[[0, 0, 2, 3]] = f32::NAN;
        let a = attrs(&[3, 3], &[2, 2], &[1, 1, 1, 1], true, false);
        let want = window_pool_impl(&x, &a, true, false).unwrap().0;
        let got = window_pool(&x, &a, true).unwrap();
        assert!(got.iter().any(|v| v.is_nan()));
        assert!(same_bits(&got, &want));
        // The same on planes wide enough for the register blocks, with two NaN payloads in
        // one window (the first in window order stays) and signed zeros (ties keep the first).
        let mut w = noise(&[1, 2, 9, 70], 98);
        w[[0, 0, 4, 40]] = f32::from_bits(0x7fc0_0001);
        w[[0, 0, 4, 41]] = f32::from_bits(0xffc0_0002);
        w[[0, 1, 3, 5]] = -0.0;
        w[[0, 1, 3, 6]] = 0.0;
        w[[0, 1, 3, 7]] = -0.0;
        for (strides, pads) in [([1, 1], [1, 1, 1, 1]), ([2, 2], [0, 0, 0, 0])] {
            let a = attrs(&[3, 3], &strides, &pads, true, false);
            let want = window_pool_impl(&w, &a, true, false).unwrap().0;
            let got = window_pool(&w, &a, true).unwrap();
            assert!(got.iter().any(|v| v.is_nan()));
            assert!(same_bits(&got, &want), "strides {strides:?}");
        }
        // Integers and f64 through the same generic path.
        let xi = x.mapv(|v| if v.is_nan() { 7 } else { (v * 10.0) as i32 });
        let a = attrs(&[2, 3], &[1, 2], &[1, 0, 0, 2], true, false);
        assert_eq!(
            window_pool(&xi, &a, true).unwrap(),
            window_pool_impl(&xi, &a, true, false).unwrap().0
        );
        let xd = x.mapv(f64::from);
        let want = window_pool_impl(&xd, &a, false, false).unwrap().0;
        let got = window_pool(&xd, &a, false).unwrap();
        assert!(got
            .iter()
            .zip(&want)
            .all(|(g, w)| g.to_bits() == w.to_bits()));
    }

    /// A 2-D window test case: shape, kernel, strides, dilations, pads, ceil_mode.
    type WindowCase = (
        &'static [usize],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 4],
        bool,
    );

    /// MaxPool on small planes goes eight planes at a time through `pool_interleaved`, the
    /// planes past the last whole group plane by plane: both against the element-by-element
    /// definition, with NaN payloads and signed-zero ties inside a group (and signed zeros in
    /// a NaN-free group), integers and f64.
    #[test]
    fn interleaved_groups_match_element_by_element() {
        let cases: [WindowCase; 6] = [
            (&[2, 13, 7, 7], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false), // 3 groups + 2
            (&[1, 17, 14, 14], [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], true), // GoogLeNet's 14 -> 7
            (&[1, 8, 5, 6], [2, 3], [1, 2], [2, 1], [0, 1, 1, 0], true),   // dilation, pads
            (&[1, 9, 3, 3], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),  // 2x2 outputs
            // Rows of 21 (two whole transposes and 5 columns), 273 outputs (one past 34 x 8).
            (
                &[1, 17, 13, 21],
                [3, 3],
                [1, 1],
                [1, 1],
                [1, 1, 1, 1],
                false,
            ),
            // Input columns and rows past the last window (not gathered), ceil.
            (&[2, 8, 12, 19], [3, 2], [2, 3], [1, 1], [0, 0, 0, 0], false),
        ];
        for (i, (shape, ks, strides, dil, pads, ceil)) in cases.into_iter().enumerate() {
            let mut x = noise(shape, 50 + i as u64);
            let mut a = attrs(&ks, &strides, &pads, ceil, false);
            a.window.dilations = dil.to_vec();
            let g = Geometry::new(shape, &a, DType::F32, false).unwrap();
            assert!(
                super::super::pool_interleaved::applies(&g),
                "case {i} is interleaved"
            );
            // Plane 3: two NaN payloads side by side (the first in window order stays);
            // plane 5: signed zeros (ties keep the first).
            x[[0, 3, 1, 1]] = f32::from_bits(0x7fc0_0001);
            x[[0, 3, 1, 2]] = f32::from_bits(0xffc0_0002);
            for j in 0..3 {
                x[[0, 5, 1, j]] = if j % 2 == 0 { -0.0 } else { 0.0 };
            }
            // Signed zeros in a NaN-free group too (f32 there folds by `vmaxps`).
            if shape[1] >= 16 {
                for j in 0..3 {
                    x[[0, 10, 1, j]] = if j % 2 == 0 { 0.0 } else { -0.0 };
                    x[[0, 11, 2, j]] = if j % 2 == 0 { -0.0 } else { 0.0 };
                }
            }
            let want = window_pool_impl(&x, &a, true, false).unwrap().0;
            let got = window_pool(&x, &a, true).unwrap();
            assert!(got.iter().any(|v| v.is_nan()), "case {i}");
            assert!(same_bits(&got, &want), "case {i}: {got:?} vs {want:?}");
            let xi = x.mapv(|v| if v.is_nan() { 7 } else { (v * 10.0) as i32 });
            let want = window_pool_impl(&xi, &a, true, false).unwrap().0;
            assert_eq!(window_pool(&xi, &a, true).unwrap(), want, "case {i} i32");
            let xd = x.mapv(f64::from);
            let want = window_pool_impl(&xd, &a, true, false).unwrap().0;
            let got = window_pool(&xd, &a, true).unwrap();
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(g, w)| g.to_bits() == w.to_bits()),
                "case {i} f64"
            );
        }
    }

    /// Windows whose maximum is a zero held by several taps of both signs, everywhere: the
    /// interleaved f32 fold (`vmaxps`, NaN-free groups) keeps the first zero in window
    /// order, as the element-by-element definition does, whatever the window's shape.
    #[test]
    fn interleaved_max_keeps_the_first_of_tied_signed_zeros() {
        let cases: [WindowCase; 4] = [
            // GoogLeNet's branch pools; dilated rows with stride 2 across; 5x5; stride 2.
            (
                &[1, 16, 14, 14],
                [3, 3],
                [1, 1],
                [1, 1],
                [1, 1, 1, 1],
                false,
            ),
            (&[1, 8, 9, 11], [3, 2], [1, 2], [2, 1], [1, 0, 1, 1], false),
            (&[1, 8, 12, 12], [5, 5], [1, 1], [1, 1], [2, 2, 2, 2], false),
            (&[1, 8, 14, 14], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
        ];
        for (i, (shape, ks, strides, dil, pads, ceil)) in cases.into_iter().enumerate() {
            // Negative values, and about half the elements zeros of either sign.
            let x = noise(shape, 90 + i as u64).mapv(|v| match (v * 1000.0) as i32 % 4 {
                0 => 0.0,
                1 | -1 => -0.0,
                _ => -1.0 - v.abs(),
            });
            let mut a = attrs(&ks, &strides, &pads, ceil, false);
            a.window.dilations = dil.to_vec();
            let g = Geometry::new(shape, &a, DType::F32, false).unwrap();
            assert!(super::super::pool_interleaved::applies(&g), "case {i}");
            let want = window_pool_impl(&x, &a, true, false).unwrap().0;
            let got = window_pool(&x, &a, true).unwrap();
            let zeros = |t: &ArrayD<f32>, neg: bool| {
                t.iter()
                    .filter(|v| **v == 0.0 && v.is_sign_negative() == neg)
                    .count()
            };
            assert!(
                zeros(&want, true) > 10 && zeros(&want, false) > 10,
                "case {i}"
            );
            assert!(same_bits(&got, &want), "case {i}: {got:?} vs {want:?}");
        }
    }

    /// MaxPool reading and writing blocked values (every layout pair) gives the bits of the
    /// plain run on planes, NaN groups and padding included; shapes it does not take come
    /// back in planes.
    #[test]
    fn blocked_layouts_give_the_same_bits() {
        use crate::kernels::blocked::{to_blocked, to_planes, Layout};
        // Shape, strides, pads, ceil_mode (3x3 windows).
        type Case = (&'static [usize], [usize; 2], [usize; 4], bool);
        let cases: [Case; 4] = [
            (&[1, 64, 111, 111], [2, 2], [0, 0, 0, 0], true), // SqueezeNet's first
            (&[2, 16, 28, 28], [2, 2], [1, 1, 1, 1], false),  // ResNet-like, 2 images
            (&[1, 24, 14, 14], [1, 1], [1, 1, 1, 1], false),  // GoogLeNet's stride 1
            (&[1, 8, 13, 21], [2, 1], [0, 1, 1, 0], true),
        ];
        for (i, (shape, strides, pads, ceil)) in cases.into_iter().enumerate() {
            let a = attrs(&[3, 3], &strides, &pads, ceil, false);
            let mut x = noise(shape, 70 + i as u64);
            // A NaN in the last group of the first image (its group folds by the NaN rule,
            // the others by vmaxps).
            x[[0, shape[1] - 7, 2, 2]] = f32::from_bits(0x7fc0_0003);
            let want = window_pool(&x, &a, true).unwrap();
            let capable = max_pool_blocked_capable(shape, &a);
            assert_eq!(capable, avx2(), "case {i}");
            let xb = to_blocked(&x);
            for lin in [Layout::Planes, Layout::Blocked] {
                for lout in [Layout::Planes, Layout::Blocked] {
                    let src = if lin == Layout::Blocked { &xb } else { &x };
                    let (y, l) = max_pool_io(src, lin, &a, lout).unwrap();
                    let expected = if capable { lout } else { Layout::Planes };
                    assert_eq!(l, expected, "case {i} {lin:?} -> {lout:?}");
                    let y = if l == Layout::Blocked {
                        to_planes(&y)
                    } else {
                        y
                    };
                    assert!(y.iter().any(|v| v.is_nan()));
                    assert!(same_bits(&y, &want), "case {i} {lin:?} -> {lout:?}");
                }
            }
        }
        // Channels not a multiple of 8: never blocked.
        let a = attrs(&[3, 3], &[2, 2], &[0; 4], false, false);
        assert!(!max_pool_blocked_capable(&[1, 12, 9, 9], &a));
    }

    fn avx2() -> bool {
        cfg!(target_arch = "x86_64") && {
            #[cfg(target_arch = "x86_64")]
            let has = std::arch::is_x86_feature_detected!("avx2");
            #[cfg(not(target_arch = "x86_64"))]
            let has = false;
            has
        }
    }

    #[test]
    fn same_bits_for_any_thread_count() {
        let x = noise(&[2, 40, 57, 61], 3);
        let run = |t: usize, f: &(dyn Fn() -> ArrayD<f32> + Sync)| {
            crate::kernels::test_data::on_threads(t, f)
        };
        let a = attrs(&[3, 3], &[2, 2], &[1, 1, 1, 1], true, true);
        for max in [true, false] {
            let f = || window_pool(&x, &a, max).unwrap();
            assert!(same_bits(&run(1, &f), &run(3, &f)));
        }
        let f = || global_pool(&x, false).unwrap();
        assert!(same_bits(&run(1, &f), &run(3, &f)));
        let x3 = noise(&[1, 8, 12, 30, 30], 4);
        let a = attrs(&[2, 3, 3], &[2, 2, 2], &[], false, false);
        let f = || window_pool(&x3, &a, false).unwrap();
        assert!(same_bits(&run(1, &f), &run(3, &f)));
    }

    #[test]
    fn global_average_against_f64_sum() {
        // Plane sizes around the sixteen partial sums exercise their tail.
        for hw in [1usize, 3, 7, 15, 16, 17, 49, 50, 3136] {
            let x = noise(&[2, 3, hw], hw as u64);
            let y = global_pool(&x, false).unwrap();
            for (i, plane) in x.as_slice().unwrap().chunks(hw).enumerate() {
                let want = plane.iter().map(|&v| f64::from(v)).sum::<f64>() / hw as f64;
                assert!(
                    (f64::from(y.as_slice().unwrap()[i]) - want).abs()
                        <= 1e-6 * want.abs().max(1.0)
                );
            }
        }
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
