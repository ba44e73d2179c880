//! The direct conv's register blocks on AVX-512F (`conv_direct.rs` has the layout and the
//! AVX2 blocks): 32 consecutive positions of an output row (two 16-float vectors) times up
//! to 12 output channels, 24 accumulators of the 32 zmm registers plus 2 input vectors and
//! a broadcast weight. Per tap that is 2 loads and 12 broadcasts for 24 FMAs, where the AVX2
//! block's 16 positions x 6 channels does 12; on a CPU with AVX-512 the AVX2 blocks ran the
//! RGB stems at 28-65 GFLOP/s against onnxruntime's 74-114.
//!
//! The FMA chain of each output is the AVX2 block's (taps in im2col's order from +0.0, then
//! `+ bias`, then the clamp), so both give the sgemm's bits.

use super::conv_direct::{Isa, Row};
use crate::kernels::sgemm::clamp_avx512 as clamp;
use std::arch::x86_64::*;

const R_MAX: usize = Isa::Avx512.channels();

/// Every output channel of the row's span, in blocks of [`R_MAX`].
///
/// # Safety
/// The CPU must have AVX-512F; otherwise as `row_avx2` in `conv_direct.rs`, with vectors of
/// 16 (the caller pads rows and planes to whole 16-float vectors for this path).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn row(row: &Row) {
    let k = row.taps.len();
    let mut o0 = 0;
    while o0 < row.m {
        let r = (row.m - o0).min(R_MAX);
        let w = row.w.as_ptr().add(o0 * k);
        match r {
            12 => channels::<12>(row, o0, w),
            11 => channels::<11>(row, o0, w),
            10 => channels::<10>(row, o0, w),
            9 => channels::<9>(row, o0, w),
            8 => channels::<8>(row, o0, w),
            7 => channels::<7>(row, o0, w),
            6 => channels::<6>(row, o0, w),
            5 => channels::<5>(row, o0, w),
            4 => channels::<4>(row, o0, w),
            3 => channels::<3>(row, o0, w),
            2 => channels::<2>(row, o0, w),
            _ => channels::<1>(row, o0, w),
        }
        o0 += r;
    }
}

/// Output channels `o0 .. o0 + R` of the row, in blocks of up to 32 positions.
#[inline(always)]
unsafe fn channels<const R: usize>(row: &Row, o0: usize, w: *const f32) {
    let mut x0 = row.span.start;
    while x0 < row.span.end {
        let v = (row.span.end - x0).div_ceil(16).min(2);
        match v {
            2 => block::<R, 2>(row, o0, x0, w),
            _ => block::<R, 1>(row, o0, x0, w),
        }
        x0 += 16 * v;
    }
}

/// Positions `x0 .. x0 + 16V` (stored up to the span's end) of channels `o0 .. o0 + R`.
#[inline(always)]
unsafe fn block<const R: usize, const V: usize>(row: &Row, o0: usize, x0: usize, w: *const f32) {
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let xb = row.x.as_ptr().add(x0);
    for (t, &off) in row.taps.iter().enumerate() {
        let xs = xb.add(off);
        let xv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(xs.add(16 * v)));
        let wt = w.add(t * R_MAX);
        for (r, acc) in acc.iter_mut().enumerate() {
            let wv = _mm512_set1_ps(*wt.add(r));
            for (a, &xv) in acc.iter_mut().zip(&xv) {
                *a = _mm512_fmadd_ps(wv, xv, *a);
            }
        }
    }
    let valid = (row.span.end - x0).min(16 * V);
    for (r, acc) in acc.iter().enumerate() {
        let b = row.bias.map(|b| _mm512_set1_ps(b[o0 + r]));
        let dst = row.out.get().add((o0 + r) * row.channel_stride + x0);
        for (v, &a) in acc.iter().enumerate() {
            let a = match b {
                Some(b) => _mm512_add_ps(a, b),
                None => a,
            };
            let y = clamp(a, row.act);
            let n = valid.saturating_sub(16 * v).min(16);
            if n == 16 {
                _mm512_storeu_ps(dst.add(16 * v), y);
            } else if n > 0 {
                _mm512_mask_storeu_ps(dst.add(16 * v), ((1u32 << n) - 1) as u16, y);
            }
        }
    }
}
