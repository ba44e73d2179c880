//! Windowed pooling of 1-D and 2-D planes as a few long contiguous loops.
//!
//! Each plane is first copied into a padded scratch, split by stride phase (row phase `py`,
//! column phase `px` hold the padded rows `r * sy + py` and columns `j * sx + px`), with
//! padding (and the ceil_mode overhang) filled with a value that cannot change the result:
//! -inf (or the integer minimum) for max, 0 for sums. Then every window tap reads one phase
//! at a fixed offset, and output element `(oy, ox)`, laid out with the phase's row width,
//! reads it at `oy * pw + ox + offset`: every tap a contiguous read. MaxPool
//! folds every tap of a block of 64 outputs in registers before one store; the sums of
//! AveragePool take one vectorized pass per tap (the SIMD width chosen at run time). Columns
//! past the output width are computed and dropped.
//!
//! Each output element still meets its taps in window order and the fill is neutral (max:
//! `m >= -inf` keeps `m`; sums: `s + 0.0 == s` exactly, and sums start at +0), so the bits
//! are those of the element-by-element definition.

use super::blocked::Layout::Planes;
use super::pool::{Geometry, PoolSum};
use crate::tensor::Elem;
use rayon::prelude::*;

/// Whether the geometry is (lifted) 1-D or 2-D, no depth to walk, and the phase-split
/// scratch stays near the plane's size (strides far beyond the kernel would make it
/// strides^2 times the output; the row-by-row form takes those).
pub(super) fn applies(g: &Geometry) -> bool {
    let flat = g.input[0] == 1 && g.output[0] == 1 && g.kernel[0] == 1 && g.pb[0] == 0;
    let taps = g.kernel[1].saturating_mul(g.kernel[2]);
    let work = g.in_plane.saturating_add(g.out_plane.saturating_mul(taps));
    flat && Layout::new(g).scratch_len() <= work.saturating_mul(4).saturating_add(4096)
}

/// The phase-split layout of one padded plane.
struct Layout {
    sy: usize,
    sx: usize,
    /// Rows and columns of each phase.
    ph: usize,
    pw: usize,
    /// Per tap in window order: its offset into the phase-stacked scratch.
    taps: Vec<usize>,
}

impl Layout {
    fn new(g: &Geometry) -> Layout {
        let (sy, sx) = (g.strides[1], g.strides[2]);
        let (dy, dx) = (g.dil[1], g.dil[2]);
        let (kh, kw) = (g.kernel[1], g.kernel[2]);
        let (oh, ow) = (g.output[1], g.output[2]);
        let pw = ow + (kw - 1) * dx / sx;
        // One spare row: the dropped columns of the last output row read past it.
        let ph = oh + (kh - 1) * dy / sy + 1;
        let mut taps = Vec::with_capacity(kh * kw);
        for ky in 0..kh {
            for kx in 0..kw {
                let (y, x) = (ky * dy, kx * dx);
                let phase = (y % sy) * sx + x % sx;
                taps.push(phase * ph * pw + (y / sy) * pw + x / sx);
            }
        }
        Layout {
            sy,
            sx,
            ph,
            pw,
            taps,
        }
    }

    fn scratch_len(&self) -> usize {
        [self.sy, self.sx, self.ph, self.pw]
            .iter()
            .fold(1usize, |a, &b| a.saturating_mul(b))
    }
}

/// Copies plane `src` (`ih` x `iw`) into the phase-split padded scratch.
fn fill_scratch<T: Elem>(g: &Geometry, l: &Layout, src: &[T], fill: T, scratch: &mut [T]) {
    let (ih, iw) = (g.input[1] as isize, g.input[2]);
    let (pby, pbx) = (g.pb[1] as isize, g.pb[2]);
    let mut chunks = scratch.chunks_mut(l.pw);
    for py in 0..l.sy {
        for px in 0..l.sx {
            // Columns j of this phase read input column j * sx + px - pbx; the valid j.
            let lo = pbx.saturating_sub(px).div_ceil(l.sx).min(l.pw);
            let hi = if iw + pbx > px {
                ((iw + pbx - px - 1) / l.sx + 1).clamp(lo, l.pw)
            } else {
                lo
            };
            let first = (lo * l.sx + px).saturating_sub(pbx);
            for r in 0..l.ph {
                let dst = chunks.next().expect("sized by the layout");
                let iy = (r * l.sy + py) as isize - pby;
                if iy < 0 || iy >= ih || lo == hi {
                    dst.fill(fill);
                    continue;
                }
                let row = &src[iy as usize * iw..(iy as usize + 1) * iw];
                dst[..lo].fill(fill);
                dst[hi..].fill(fill);
                if l.sx == 1 {
                    dst[lo..hi].copy_from_slice(&row[first..first + hi - lo]);
                } else {
                    strided_copy(&mut dst[lo..hi], &row[first..], l.sx);
                }
            }
        }
    }
}

/// `dst[j] = src[j * step]`. Stride 2 (the usual pooling stride) as a loop over pairs that
/// compiles to vector shuffles; an iterator with a run-time step stays scalar, and this copy
/// was most of a stride-2 MaxPool's time (and a third of a 3x3 stride-2 stem's in
/// `conv_direct`'s phase split).
pub(super) fn strided_copy<T: Copy>(dst: &mut [T], src: &[T], step: usize) {
    #[inline(always)]
    fn body<T: Copy, const S: usize>(dst: &mut [T], src: &[T]) {
        let full = dst.len().min(src.len() / S);
        for (d, c) in dst[..full].iter_mut().zip(src.chunks_exact(S)) {
            *d = c[0];
        }
        for (j, d) in dst.iter_mut().enumerate().skip(full) {
            *d = src[j * S];
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn pairs_avx2<T: Copy>(dst: &mut [T], src: &[T]) {
        body::<T, 2>(dst, src)
    }
    match step {
        1 => dst.copy_from_slice(&src[..dst.len()]),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2, checked in the guard.
        2 if std::arch::is_x86_feature_detected!("avx2") => unsafe { pairs_avx2(dst, src) },
        2 => body::<T, 2>(dst, src),
        _ => {
            for (d, &v) in dst.iter_mut().zip(src.iter().step_by(step)) {
                *d = v;
            }
        }
    }
}

/// Output elements computed together in registers: every tap of a block is read and folded
/// before the block's one store. 64 f32 are four AVX-512 registers, four independent chains
/// of max instructions (one chain waits on each max's latency); the rest of a plane goes in
/// blocks of 16, then one by one.
const MAX_LANES: usize = 64;
const MAX_LANES_TAIL: usize = 16;

/// MaxPool's rule for one tap: keep `m` unless `v` is larger or is NaN while `m` is not
/// (NaN propagates, the first NaN stays). With `NAN = false` the caller has checked that
/// the plane holds no NaN, and the rule is the plain `v > m` select that compiles to one
/// vector max instruction; both forms give the same bits on NaN-free data.
#[inline(always)]
pub(super) fn pick<T: Copy + PartialOrd, const NAN: bool>(m: T, v: T) -> T {
    // `!(v > m)`, not `m >= v`: the same on NaN-free data, and `v > m ? v : m` is exactly
    // the x86 max instruction, which the other form is not.
    #[allow(clippy::eq_op, clippy::neg_cmp_op_on_partial_ord)]
    let keep = if NAN { (m >= v) | (m != m) } else { !(v > m) };
    if keep {
        m
    } else {
        v
    }
}

/// `ext[p] = ` the max over the taps of `padded[t + p]`, the taps folded in window order.
/// The first tap against the initial -inf is that tap's values, bit for bit (`-inf >= v`
/// only for v = -inf; NaN is taken), so the fold starts from it.
#[inline(always)]
fn max_body<T: Copy + PartialOrd, const NAN: bool>(padded: &[T], taps: &[usize], ext: &mut [T]) {
    let done = max_blocks::<T, NAN, MAX_LANES>(padded, taps, ext, 0);
    let done = max_blocks::<T, NAN, MAX_LANES_TAIL>(padded, taps, ext, done);
    let (t0, rest) = taps.split_first().expect("a window has taps");
    for (p, d) in ext.iter_mut().enumerate().skip(done) {
        *d = rest
            .iter()
            .fold(padded[t0 + p], |m, &t| pick::<T, NAN>(m, padded[t + p]));
    }
}

/// `max_body` for the whole blocks of `L` elements from `start` on; returns where they end.
#[inline(always)]
fn max_blocks<T: Copy + PartialOrd, const NAN: bool, const L: usize>(
    padded: &[T],
    taps: &[usize],
    ext: &mut [T],
    start: usize,
) -> usize {
    let (t0, rest) = taps.split_first().expect("a window has taps");
    let mut pos = start;
    for block in ext[start..].chunks_exact_mut(L) {
        let mut acc: [T; L] = padded[t0 + pos..t0 + pos + L]
            .try_into()
            .expect("block length");
        for &t in rest {
            let src = &padded[t + pos..t + pos + L];
            for (a, &v) in acc.iter_mut().zip(src) {
                *a = pick::<T, NAN>(*a, v);
            }
        }
        block.copy_from_slice(&acc);
        pos += L;
    }
    pos
}

#[inline(always)]
fn sum_body<T: Elem>(acc: &mut [f64], src: &[T]) {
    for (a, &v) in acc.iter_mut().zip(src) {
        *a += v.to_f64();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn max_avx512<T: Copy + PartialOrd, const NAN: bool>(padded: &[T], taps: &[usize], ext: &mut [T]) {
    max_body::<T, NAN>(padded, taps, ext)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn max_avx2<T: Copy + PartialOrd, const NAN: bool>(padded: &[T], taps: &[usize], ext: &mut [T]) {
    max_body::<T, NAN>(padded, taps, ext)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_avx2<T: Elem>(acc: &mut [f64], src: &[T]) {
    sum_body(acc, src)
}

/// The max over the window taps for every element of `ext` (see `max_body`).
fn max_taps<T: Copy + PartialOrd>(padded: &[T], taps: &[usize], ext: &mut [T]) {
    #[allow(clippy::eq_op)]
    let nan = padded.iter().fold(false, |any, &v| any | (v != v));
    if nan {
        return max_taps_with::<T, true>(padded, taps, ext);
    }
    max_taps_with::<T, false>(padded, taps, ext)
}

fn max_taps_with<T: Copy + PartialOrd, const NAN: bool>(
    padded: &[T],
    taps: &[usize],
    ext: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { max_avx512::<T, NAN>(padded, taps, ext) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { max_avx2::<T, NAN>(padded, taps, ext) };
        }
    }
    max_body::<T, NAN>(padded, taps, ext)
}

fn tap_sum<T: Elem>(acc: &mut [f64], src: &[T]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { sum_avx2(acc, src) };
        return;
    }
    sum_body(acc, src)
}

/// Whether every window is a whole 2x2 block at stride 2 inside the plane (DenseNet's
/// transitions): no padding or dilation, the ceil_mode overhang (if any) unused.
fn whole_pairs(g: &Geometry) -> bool {
    g.kernel[1..] == [2, 2]
        && g.strides[1..] == [2, 2]
        && g.dil[1..] == [1, 1]
        && g.pb[1..] == [0, 0]
        && 2 * g.output[1] <= g.input[1]
        && 2 * g.output[2] <= g.input[2]
}

/// AveragePool over [`whole_pairs`] windows read straight from the planes: no padded
/// scratch, no pass per tap. The same arithmetic as the general path: an f64 sum from +0
/// over the taps in window order, divided by the count (4 for every window here).
fn average_pairs<T: Elem>(g: &Geometry, xd: &[T], out: &mut [T]) {
    let (iw, ow) = (g.input[2], g.output[2]);
    let plane = |src: &[T], dst: &mut [T]| {
        for (oy, d) in dst.chunks_mut(ow).enumerate() {
            let top = &src[2 * oy * iw..][..2 * ow];
            let bottom = &src[(2 * oy + 1) * iw..][..2 * ow];
            for ((d, t), b) in d
                .iter_mut()
                .zip(top.chunks_exact(2))
                .zip(bottom.chunks_exact(2))
            {
                let mut acc = 0.0f64;
                for v in [t[0], t[1], b[0], b[1]] {
                    acc += v.to_f64();
                }
                *d = T::from_f64(acc / 4.0);
            }
        }
    };
    if super::par::worth_splitting(out.len().saturating_mul(4)) {
        let per = super::par::units_per_task(g.out_plane.saturating_mul(4));
        out.par_chunks_mut(per * g.out_plane)
            .zip(xd.par_chunks(per * g.in_plane))
            .for_each(|(dst, src)| {
                for (d, s) in dst.chunks_mut(g.out_plane).zip(src.chunks(g.in_plane)) {
                    plane(s, d);
                }
            });
    } else {
        for (d, s) in out.chunks_mut(g.out_plane).zip(xd.chunks(g.in_plane)) {
            plane(s, d);
        }
    }
}

/// Per-task buffers, reused across the planes of a task.
struct Scratch<T> {
    padded: Vec<T>,
    ext: Vec<T>,
    sums: Vec<f64>,
}

/// Pools every plane of `xd` into `out` (planes of `g.out_plane`); `sum` is `None` for max.
pub(super) fn pool_planes<T: Elem>(g: &Geometry, xd: &[T], out: &mut [T], sum: Option<PoolSum>) {
    let l = Layout::new(g);
    let (oh, ow) = (g.output[1], g.output[2]);
    let ext_len = oh * l.pw;
    let fill = if sum.is_some() {
        T::from_f64(0.0)
    } else {
        T::from_f64(f64::NEG_INFINITY)
    };
    // Small planes, eight at a time (`pool_interleaved`); the rest plane by plane below,
    // `plane` counted from the first of them.
    let first = match sum.is_none() && super::pool_interleaved::applies(g) {
        true => super::pool_interleaved::max_planes(g, xd, out, (Planes, Planes)),
        false => 0,
    };
    let out = &mut out[first * g.out_plane..];
    if sum.is_some() && whole_pairs(g) {
        return average_pairs(g, &xd[first * g.in_plane..], out);
    }
    // AveragePool: each column's factor of the count.
    let cols: Vec<f64> = match sum {
        Some(how) => g.axes[2][..ow]
            .iter()
            .map(|t| how.share(t) as f64)
            .collect(),
        None => Vec::new(),
    };
    let run_plane = |plane: usize, dst: &mut [T], s: &mut Scratch<T>| {
        let src = &xd[(first + plane) * g.in_plane..][..g.in_plane];
        s.padded.resize(l.scratch_len(), fill);
        fill_scratch(g, &l, src, fill, &mut s.padded);
        match sum {
            None => {
                s.ext.resize(ext_len, fill);
                max_taps(&s.padded, &l.taps, &mut s.ext);
                for (d, e) in dst.chunks_mut(ow).zip(s.ext.chunks(l.pw)) {
                    d.copy_from_slice(&e[..ow]);
                }
            }
            Some(how) => {
                s.sums.clear();
                s.sums.resize(ext_len, 0.0);
                for &t in &l.taps {
                    tap_sum(&mut s.sums, &s.padded[t..t + ext_len]);
                }
                // The count of (oy, ox) as the f64 product of its row's and its column's
                // factors, exactly `count as f64` (integers far below 2^53), so the loop
                // vectorizes; counted per element through `AxisTaps`, with a branch on zero,
                // it did not (DenseNet's 2x2 AveragePools 0.94 -> 0.75 ms in the net).
                for (oy, (d, e)) in dst.chunks_mut(ow).zip(s.sums.chunks(l.pw)).enumerate() {
                    let row = (how.depth_share() * how.share(&g.axes[1][oy])) as f64;
                    for ((d, &acc), &col) in d.iter_mut().zip(e).zip(cols.as_slice()) {
                        // Divided first, the zero count selected after: no branch.
                        let count = row * col;
                        let q = acc / count;
                        *d = T::from_f64(if count == 0.0 { 0.0 } else { q });
                    }
                }
            }
        }
    };
    let new_scratch = || Scratch {
        padded: Vec::new(),
        ext: Vec::new(),
        sums: Vec::new(),
    };
    let work = out.len().saturating_mul(l.taps.len());
    if super::par::worth_splitting(work) {
        // Whole planes per task; the split does not change any element's arithmetic.
        let per = super::par::units_per_task(g.out_plane.saturating_mul(l.taps.len()));
        // The scratch per rayon job, not per task: tasks are often one plane, and a fresh
        // scratch's fill (its `resize`) was a quarter of SqueezeNet's first MaxPool.
        out.par_chunks_mut(per * g.out_plane)
            .enumerate()
            .for_each_init(new_scratch, |s, (i, chunk)| {
                for (j, dst) in chunk.chunks_mut(g.out_plane).enumerate() {
                    run_plane(i * per + j, dst, s);
                }
            });
    } else {
        let mut s = new_scratch();
        for (plane, dst) in out.chunks_mut(g.out_plane).enumerate() {
            run_plane(plane, dst, &mut s);
        }
    }
}
