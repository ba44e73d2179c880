//! `conv_lanes`' reduction on AVX-512F: 16 output channels a vector (two blocks of 8; a
//! group's last one may hold 8), up to
//! 8 positions times 2 vectors or 12 positions times 1 in 16 or 12 of the 32 zmm registers
//! (`conv_lanes::imp::wide_passes` picks). The weights are packed 16
//! channels innermost (`conv_lanes::pack_weights` with `wide`), so each reduction step
//! loads one contiguous 16-float vector per 16 channels and broadcasts one input value per
//! position, as the AVX2 chunk does with 8. Each output is the same FMA chain as the AVX2
//! chunk's (and im2col's): the same bits.
//!
//! The accumulators leave in halves of 8 channels, each at its own address (`vs` floats
//! apart), so one code path writes both layouts: interleaved rows of a task's buffer (the
//! halves adjacent) and blocked outputs (the halves in consecutive blocks).

use super::conv_lanes::{Block, Job, LANES};
use super::sgemm::clamp_avx512 as clamp;
use std::arch::x86_64::*;

/// Most positions a wide chunk computes.
pub(super) const MAX_R: usize = 12;

/// Floats per wide vector.
const WIDE: usize = 2 * LANES;

/// The lower 8 lanes of `v` at `lo`, the upper 8 at `hi`.
#[inline(always)]
unsafe fn store_halves(v: __m512, lo: *mut f32, hi: *mut f32) {
    _mm256_storeu_ps(lo, _mm512_castps512_ps256(v));
    // Lanes 8..16 land at `hi`: a masked store from 8 floats before it (masked-off lanes
    // are neither written nor checked).
    _mm512_mask_storeu_ps(hi.wrapping_sub(LANES), 0xff00, v);
}

/// 8 floats from `lo` in the lower lanes, 8 from `hi` in the upper ones.
#[inline(always)]
unsafe fn load_halves(lo: *const f32, hi: *const f32) -> __m512 {
    let v = _mm512_castps256_ps512(_mm256_loadu_ps(lo));
    _mm512_mask_loadu_ps(v, 0xff00, hi.wrapping_sub(LANES))
}

/// `R` output positions (at input offsets `offs`) times `V` wide vectors of channels from
/// `v0` (a multiple of 16 within the group), the reduction over `b`'s channels; position
/// `r`'s channels `v0 + 8h..` (`h` counting halves) go to `out.0 + r * out.1.0 + h *
/// out.1.1`. `BY_BLOCKS`: a 1x1 conv on a blocked input, each block's 8 channels unrolled.
/// `half`: the last vector holds 8 channels (the group's last, its weights' upper lanes
/// zero); its upper lanes are computed but neither loaded nor stored. The flag is read
/// only outside the reduction loop.
///
/// # Safety
/// AVX-512F; `j`, `b`, `offs` and `out` as `conv_lanes`' AVX2 chunk takes them, the
/// weights packed wide.
#[inline(never)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn chunk<const R: usize, const V: usize, const BY_BLOCKS: bool>(
    j: &Job,
    b: &Block,
    offs: &[usize; MAX_R],
    (v0, half): (usize, bool),
    out: (*mut f32, (usize, usize)),
) {
    let (qs, vs) = out.1;
    // Whether vector `v` stores its upper half.
    let whole = |v: usize| !half || v + 1 < V;
    let kdim = j.p.cg() * j.taps.len();
    let offs: [usize; R] = std::array::from_fn(|r| offs[r]);
    // Where half `h` of position `r` lives.
    let at = |r: usize, h: usize| out.0.add(r * qs + h * vs);
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    if !b.first {
        for (r, acc) in acc.iter_mut().enumerate() {
            for (v, a) in acc.iter_mut().enumerate() {
                *a = match whole(v) {
                    true => load_halves(at(r, 2 * v), at(r, 2 * v + 1)),
                    false => _mm512_maskz_loadu_ps(0x00ff, at(r, 2 * v)),
                };
            }
        }
    }
    // Wide vector `v0 / 16 + v`'s weights from the block's first reduction step.
    let mut w =
        j.w.as_ptr()
            .add((v0 / WIDE * kdim + b.ci0 * j.taps.len()) * WIDE);
    let xp = j.x.as_ptr();
    if BY_BLOCKS {
        for cb in (b.ci0..b.ci1).step_by(LANES) {
            let x = xp.add(j.chan[cb]);
            for l in 0..LANES {
                let wv: [__m512; V] =
                    std::array::from_fn(|v| _mm512_loadu_ps(w.add(v * kdim * WIDE + l * WIDE)));
                for (acc, &o) in acc.iter_mut().zip(&offs) {
                    let xv = _mm512_set1_ps(*x.add(o + l));
                    for (a, &wv) in acc.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(wv, xv, *a);
                    }
                }
            }
            w = w.add(LANES * WIDE);
        }
    }
    for ci in (b.ci0..b.ci1).filter(|_| !BY_BLOCKS) {
        let x = xp.add(j.chan[ci]);
        for &t in j.taps {
            let x = x.add(t);
            let wv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(w.add(v * kdim * WIDE)));
            for (acc, &o) in acc.iter_mut().zip(&offs) {
                let xv = _mm512_set1_ps(*x.add(o));
                for (a, &wv) in acc.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(wv, xv, *a);
                }
            }
            w = w.add(WIDE);
        }
    }
    let store = |a: __m512, r: usize, v: usize| match whole(v) {
        true => store_halves(a, at(r, 2 * v), at(r, 2 * v + 1)),
        false => _mm256_storeu_ps(at(r, 2 * v), _mm512_castps512_ps256(a)),
    };
    if !b.last {
        for (r, acc) in acc.iter().enumerate() {
            for (v, &a) in acc.iter().enumerate() {
                store(a, r, v);
            }
        }
        return;
    }
    let bv: [Option<__m512>; V] = std::array::from_fn(|v| {
        j.bias.map(|bias| {
            let lanes = if whole(v) { WIDE } else { LANES };
            let bias = bias[v0 + v * WIDE..][..lanes].as_ptr();
            _mm512_maskz_loadu_ps(((1u32 << lanes) - 1) as u16, bias)
        })
    });
    for (r, acc) in acc.iter().enumerate() {
        for (v, &a) in acc.iter().enumerate() {
            let a = match bv[v] {
                Some(bv) => _mm512_add_ps(a, bv),
                None => a,
            };
            store(clamp(a, j.act), r, v);
        }
    }
}
