//! The blocked layout (NCHW8c) a 4-D f32 value may take between the kernels that read and
//! write it natively (`conv_lanes`, `depthwise_interleaved`, elementwise Add): channels in
//! blocks of 8, each position's 8 channels side by side, so a kernel with channels in the
//! vector lanes loads them without the 8x8 transposes it needs on planes (onnxruntime's
//! NCHWc, with AVX2's width). Held as a 5-D tensor `[N, C/8, H, W, 8]`; only fused runs
//! use it, and only for values whose channel count is a multiple of 8 (see
//! `exec/prepare.rs`). Moves only: a value keeps its bits through either conversion.

use ndarray::{ArrayD, IxDyn};

/// Channels per block.
pub const BLOCK: usize = 8;

/// How a 4-D value's floats are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// NCHW: each channel's plane contiguous.
    Planes,
    /// NCHW8c: `[N, C/8, H, W, 8]`.
    Blocked,
}

impl Layout {
    /// `Blocked` when `blocked`, else `Planes`.
    pub fn of(blocked: bool) -> Layout {
        match blocked {
            true => Layout::Blocked,
            false => Layout::Planes,
        }
    }
}

/// Whether a value of logical shape `shape` can be held blocked: 4-D, its channels a
/// multiple of 8.
pub fn blockable(shape: &[usize]) -> bool {
    shape.len() == 4 && shape[1] > 0 && shape[1].is_multiple_of(BLOCK)
}

/// The 5-D shape a blocked value of logical shape `[N, C, H, W]` is held in.
pub fn blocked_shape(shape: &[usize]) -> Vec<usize> {
    debug_assert!(blockable(shape));
    vec![shape[0], shape[1] / BLOCK, shape[2], shape[3], BLOCK]
}

/// The logical `[N, C, H, W]` shape of a blocked value held as `[N, C/8, H, W, 8]`.
pub fn logical_shape(held: &[usize]) -> Vec<usize> {
    debug_assert!(held.len() == 5 && held[4] == BLOCK);
    vec![held[0], held[1] * BLOCK, held[2], held[3]]
}

/// `x` (`[N, C, H, W]`, C a multiple of 8) blocked.
pub fn to_blocked(x: &ArrayD<f32>) -> ArrayD<f32> {
    let shape = x.shape().to_vec();
    assert!(blockable(&shape), "to_blocked: shape {shape:?}");
    let x = x.as_standard_layout();
    let src = x.as_slice().expect("standard layout");
    let plane = shape[2] * shape[3];
    let mut out = vec![0f32; src.len()];
    // Per block of 8 planes: position q's 8 values side by side.
    for (dst, planes) in out
        .chunks_exact_mut(plane * BLOCK)
        .zip(src.chunks_exact(plane * BLOCK))
    {
        for (l, p) in planes.chunks_exact(plane).enumerate() {
            for (q, &v) in p.iter().enumerate() {
                dst[q * BLOCK + l] = v;
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(&blocked_shape(&shape)), out).expect("same length")
}

/// A blocked value (`[N, C/8, H, W, 8]`) back in planes, `[N, C, H, W]`.
pub fn to_planes(x: &ArrayD<f32>) -> ArrayD<f32> {
    let held = x.shape().to_vec();
    assert!(
        held.len() == 5 && held[4] == BLOCK,
        "to_planes: shape {held:?}"
    );
    let x = x.as_standard_layout();
    let src = x.as_slice().expect("standard layout");
    let plane = held[2] * held[3];
    let mut out = vec![0f32; src.len()];
    for (planes, blk) in out
        .chunks_exact_mut(plane * BLOCK)
        .zip(src.chunks_exact(plane * BLOCK))
    {
        for (l, p) in planes.chunks_exact_mut(plane).enumerate() {
            for (q, v) in p.iter_mut().enumerate() {
                *v = blk[q * BLOCK + l];
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(&logical_shape(&held)), out).expect("same length")
}

/// A blocked f32 tensor back in planes (`to_planes`), for a reader that needs them.
pub fn unblock(t: &crate::tensor::Tensor) -> anyhow::Result<crate::tensor::Tensor> {
    Ok(crate::tensor::Tensor::F32(to_planes(t.as_f32()?)))
}

/// Whether `axis` of a 4-D value is its channel axis.
pub fn is_channel_axis(axis: i64) -> bool {
    axis == 1 || axis == -3
}

/// Blocked values (`[N, Ci/8, H, W, 8]`, one N, H and W) concatenated along the channels:
/// per image, each input's blocks one after another, as ONNX Concat on axis 1 orders the
/// channels. `None` when the shapes do not line up (the caller then concatenates planes).
pub fn concat_channels(ts: &[&ArrayD<f32>]) -> Option<ArrayD<f32>> {
    let first = ts.first()?.shape();
    let alike =
        |s: &[usize]| s.len() == 5 && s[0] == first[0] && s[2..] == first[2..] && s[4] == BLOCK;
    if !ts.iter().all(|t| alike(t.shape())) {
        return None;
    }
    let n = first[0];
    let blocks: usize = ts.iter().map(|t| t.shape()[1]).sum();
    let block = first[2] * first[3] * BLOCK;
    let srcs: Vec<_> = ts.iter().map(|t| t.as_standard_layout()).collect();
    let mut out = Vec::with_capacity(n * blocks * block);
    for img in 0..n {
        for src in &srcs {
            let per_image = src.len() / n;
            let d = src.as_slice().expect("standard layout");
            out.extend_from_slice(&d[img * per_image..][..per_image]);
        }
    }
    let shape = [n, blocks, first[2], first[3], BLOCK];
    Some(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("sizes add up"))
}

/// Whether `Mul(x, gate)` (or `Mul(gate, x)`) of f32 values of these logical shapes is a
/// per-channel scale [`scale_to_blocked`] writes blocked: `x` `[N, C, H, W]` blockable,
/// `gate` `[N, C, 1, 1]`; on AVX2, where the transposes are.
pub fn scale_blockable(x: &[usize], gate: &[usize]) -> bool {
    blockable(x) && gate == [x[0], x[1], 1, 1] && has_avx2()
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x * gate` (`gate_first`: `gate * x`) for `x` in planes `[N, C, H, W]` and a per-channel
/// `gate` `[N, C, 1, 1]` (EfficientNet's squeeze-and-excitation scale), written blocked:
/// the Mul and the conversion in one pass, eight planes transposed at a time and each
/// position's 8 channels multiplied by the block's 8 gates in one vector. The products are
/// the Mul kernel's (one f32 multiply each). `None` unless [`scale_blockable`].
pub fn scale_to_blocked(
    x: &ArrayD<f32>,
    gate: &ArrayD<f32>,
    gate_first: bool,
) -> Option<ArrayD<f32>> {
    if !scale_blockable(x.shape(), gate.shape()) {
        return None;
    }
    let shape = x.shape().to_vec();
    let (x, gate) = (x.as_standard_layout(), gate.as_standard_layout());
    let (src, g) = (x.as_slice()?, gate.as_slice()?);
    let plane = shape[2] * shape[3];
    // Not zeroed (the zeroing took a fifth of the kernel's time): every float is written
    // below, through a raw pointer, before any read.
    let mut out = super::uninit::alloc(src.len());
    #[cfg(target_arch = "x86_64")]
    {
        let blocks = out
            .chunks_exact_mut(plane * BLOCK)
            .zip(src.chunks_exact(plane * BLOCK))
            .zip(g.chunks_exact(BLOCK));
        for ((dst, planes), g) in blocks {
            // SAFETY: `scale_blockable` checked AVX2; `dst` is one block.
            unsafe { scale_block_avx2(planes, plane, g, gate_first, dst.as_mut_ptr().cast()) };
        }
    }
    // SAFETY: each block's `plane` positions of 8 floats were stored (`scale_block_avx2`
    // walks every position), and the blocks cover `out`.
    let out = unsafe { super::uninit::assume_init(out) };
    Some(ArrayD::from_shape_vec(IxDyn(&blocked_shape(&shape)), out).expect("same length"))
}

/// One block: the 8 planes of `src` (`plane` floats each) times the lanes of `g`, into the
/// blocked `d`.
///
/// # Safety
/// AVX2; `d` writable for `8 * plane` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scale_block_avx2(src: &[f32], plane: usize, g: &[f32], gate_first: bool, d: *mut f32) {
    use super::transpose_avx2::{lane_mask, store_positions, transpose8};
    use std::arch::x86_64::*;
    assert!(src.len() == BLOCK * plane && g.len() == BLOCK);
    let gv = _mm256_loadu_ps(g.as_ptr());
    let s = src.as_ptr();
    let mut q = 0;
    while q < plane {
        let n = BLOCK.min(plane - q);
        let rows: [__m256; BLOCK] = std::array::from_fn(|l| {
            let p = s.add(l * plane + q);
            match n {
                BLOCK => _mm256_loadu_ps(p),
                _ => _mm256_maskload_ps(p, lane_mask(n)),
            }
        });
        let t = transpose8(rows).map(|v| match gate_first {
            true => _mm256_mul_ps(gv, v),
            false => _mm256_mul_ps(v, gv),
        });
        store_positions(t, n, d.add(q * BLOCK));
        q += BLOCK;
    }
}

/// `x * gate` (`gate_first`: `gate * x`) for a blocked `x` (`[N, C/8, H, W, 8]`) and a
/// per-channel `gate` `[N, C, 1, 1]`, in `x`'s own buffer: each position's 8 channels times
/// the block's 8 gates, the Mul kernel's products. `None` (and `x` untouched) unless the
/// shapes are such a scale.
pub fn scale_blocked(
    mut x: ArrayD<f32>,
    gate: &ArrayD<f32>,
    gate_first: bool,
) -> Option<ArrayD<f32>> {
    let held = x.shape().to_vec();
    if held.len() != 5 || held[4] != BLOCK {
        return None;
    }
    let logical = logical_shape(&held);
    if gate.shape() != [logical[0], logical[1], 1, 1] {
        return None;
    }
    let gate = gate.as_standard_layout();
    let g = gate.as_slice()?;
    let block = held[2] * held[3] * BLOCK;
    let d = x.as_slice_mut()?;
    if block > 0 {
        for (d, g) in d.chunks_mut(block).zip(g.chunks(BLOCK)) {
            let g: &[f32; BLOCK] = g.try_into().expect("a block of gates");
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                // SAFETY: the CPU has AVX2, checked just above.
                unsafe { scale_block_blocked_avx2(d, g, gate_first) };
                continue;
            }
            scale_block_blocked(d, g, gate_first);
        }
    }
    Some(x)
}

/// One block of [`scale_blocked`]: every position's 8 channels times the 8 gates.
#[inline(always)]
fn scale_block_blocked(d: &mut [f32], g: &[f32; BLOCK], gate_first: bool) {
    for d in d.chunks_exact_mut(BLOCK) {
        for l in 0..BLOCK {
            d[l] = match gate_first {
                true => g[l] * d[l],
                false => d[l] * g[l],
            };
        }
    }
}

/// [`scale_block_blocked`] compiled for AVX2: one vector per position.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scale_block_blocked_avx2(d: &mut [f32], g: &[f32; BLOCK], gate_first: bool) {
    scale_block_blocked(d, g, gate_first)
}

/// GlobalAveragePool of a blocked `x` (`[N, C/8, H, W, 8]`) into planes (`[N, C, 1, 1]`):
/// each channel's mean with `pool::sum_f64`'s order of additions (sixteen interleaved
/// partial sums, folded in halves, then the tail in order), eight channels side by side, so
/// the bits of the pool on planes.
pub fn global_average_pool(x: &ArrayD<f32>) -> Option<ArrayD<f32>> {
    let held = x.shape();
    if held.len() != 5 || held[4] != BLOCK || held[2] * held[3] == 0 {
        return None;
    }
    let logical = logical_shape(held);
    let plane = held[2] * held[3];
    let x = x.as_standard_layout();
    let src = x.as_slice()?;
    let mut out = vec![0f32; logical[0] * logical[1]];
    for (o, s) in out
        .chunks_exact_mut(BLOCK)
        .zip(src.chunks_exact(plane * BLOCK))
    {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU has AVX2, checked just above.
            let sum = unsafe { block_sums_avx2(s, plane) };
            for (o, s) in o.iter_mut().zip(sum) {
                *o = (s / plane as f64) as f32;
            }
            continue;
        }
        for (o, s) in o.iter_mut().zip(block_sums(s, plane)) {
            *o = (s / plane as f64) as f32;
        }
    }
    Some(ArrayD::from_shape_vec(IxDyn(&[logical[0], logical[1], 1, 1]), out).expect("N x C"))
}

/// [`block_sums`] compiled for AVX2: each position's 8 channels in two 4-lane f64 adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn block_sums_avx2(s: &[f32], plane: usize) -> [f64; BLOCK] {
    block_sums(s, plane)
}

/// The sums of one block's 8 channels over its `plane` positions, in `pool::sum_f64`'s order.
#[inline(always)]
fn block_sums(s: &[f32], plane: usize) -> [f64; BLOCK] {
    const SUMS: usize = 16;
    let mut acc = [[0f64; BLOCK]; SUMS];
    let whole = plane / SUMS * SUMS;
    for group in s[..whole * BLOCK].chunks_exact(SUMS * BLOCK) {
        for (a, pos) in acc.iter_mut().zip(group.chunks_exact(BLOCK)) {
            for (a, &v) in a.iter_mut().zip(pos) {
                *a += f64::from(v);
            }
        }
    }
    let mut width = SUMS;
    while width > 1 {
        width /= 2;
        let (lo, hi) = acc.split_at_mut(width);
        for (a, b) in lo.iter_mut().zip(hi.iter()) {
            for (a, b) in a.iter_mut().zip(b) {
                *a += *b;
            }
        }
    }
    let mut sum = acc[0];
    for pos in s[whole * BLOCK..plane * BLOCK].chunks_exact(BLOCK) {
        for (a, &v) in sum.iter_mut().zip(pos) {
            *a += f64::from(v);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_element_order() {
        let x = ArrayD::from_shape_fn(IxDyn(&[2, 16, 3, 5]), |i| {
            (i[0] * 1000 + i[1] * 100 + i[2] * 10 + i[3]) as f32
        });
        let b = to_blocked(&x);
        assert_eq!(b.shape(), &[2, 2, 3, 5, 8]);
        assert_eq!(b[[1, 1, 2, 4, 3]], x[[1, 11, 2, 4]]);
        assert_eq!(b[[0, 0, 1, 0, 7]], x[[0, 7, 1, 0]]);
        assert_eq!(to_planes(&b), x);
        assert!(!blockable(&[1, 12, 3, 3]) && !blockable(&[1, 16, 3]));
    }

    #[test]
    fn channel_concat_of_blocked_values_is_the_blocked_concat() {
        let a = ArrayD::from_shape_fn(IxDyn(&[2, 8, 3, 4]), |i| {
            (i[0] * 1000 + i[1] * 100 + i[2] * 10 + i[3]) as f32
        });
        let b = a.mapv(|v| -v - 0.5);
        let b = ndarray::concatenate(ndarray::Axis(1), &[b.view(), b.view()]).unwrap();
        let want = ndarray::concatenate(ndarray::Axis(1), &[a.view(), b.view()]).unwrap();
        let got = concat_channels(&[&to_blocked(&a), &to_blocked(&b)]).unwrap();
        assert_eq!(got.shape(), [2, 3, 3, 4, 8]);
        assert_eq!(to_planes(&got), want);
        let other = to_blocked(&a.slice(ndarray::s![.., .., ..2, ..]).to_owned().into_dyn());
        assert!(concat_channels(&[&to_blocked(&a), &other]).is_none());
    }

    #[test]
    fn scale_to_blocked_is_the_mul_blocked() {
        if !has_avx2() {
            assert!(!scale_blockable(&[1, 16, 3, 3], &[1, 16, 1, 1]));
            return;
        }
        // 7x7 planes: six whole transposes and a tail of one position.
        let x = ArrayD::from_shape_fn(IxDyn(&[2, 16, 7, 7]), |i| {
            (i[0] * 1000 + i[1] * 100 + i[2] * 10 + i[3]) as f32 * 0.37 - 50.0
        });
        let g = ArrayD::from_shape_fn(IxDyn(&[2, 16, 1, 1]), |i| (i[0] * 16 + i[1]) as f32 / 7.0);
        let want = to_blocked(&(&x * &g));
        for gate_first in [false, true] {
            let got = scale_to_blocked(&x, &g, gate_first).unwrap();
            assert_eq!(got, want);
        }
        let one = g.slice(ndarray::s![..1, .., .., ..]).to_owned().into_dyn();
        assert!(scale_to_blocked(&x, &one, false).is_none());
        assert!(!scale_blockable(&[1, 12, 3, 3], &[1, 12, 1, 1]));
    }

    /// The blocked pool and scale against the planes kernels, bit for bit: planes of one
    /// position, fewer than sixteen, and many with a tail.
    #[test]
    fn blocked_pool_and_scale_give_the_planes_bits() {
        for (i, hw) in [[1, 1], [3, 5], [7, 7], [13, 11]].into_iter().enumerate() {
            let shape = [2, 16, hw[0], hw[1]];
            let x = crate::kernels::test_data::noise(&shape, 40 + i as u64).mapv(|v| v * 3.0 + 1.0);
            let xb = to_blocked(&x);
            let want = crate::kernels::pool::global_pool(&x, false).unwrap();
            let got = global_average_pool(&xb).unwrap();
            let bits = |a: &ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(got.shape(), want.shape());
            assert_eq!(bits(&got), bits(&want), "{shape:?}");
            let g = crate::kernels::test_data::noise(&[2, 16, 1, 1], 50 + i as u64);
            for gate_first in [false, true] {
                let want = match gate_first {
                    true => &g * &x,
                    false => &x * &g,
                };
                let got = scale_blocked(xb.clone(), &g, gate_first).unwrap();
                assert_eq!(to_planes(&got), want);
            }
        }
    }
}
