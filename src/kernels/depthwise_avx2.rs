//! The depthwise blocks in explicit AVX2 (x86-64 only): LLVM leaves the portable
//! `depthwise::block` scalar for some block widths (a 28-column row took 1.7 ms for 192
//! channels, 3x3, against tract's 0.5). Same sums as the portable block: per tap a separate
//! multiply and add (no FMA), taps in the same order from +0.0, bias last, the same clamp;
//! so the same bits.

use super::depthwise::{Blocks, LANES};
use super::im2col::copy_short;
use super::sgemm::{clamp_avx2 as clamp, Activation};
use std::arch::x86_64::*;

/// Whether this CPU runs the AVX2 blocks.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// The AVX2 blocks; only used inside `depthwise::plane_avx2` (compiled with AVX2).
pub(super) struct Avx2;

impl Blocks for Avx2 {
    /// `depthwise::split_pairs` in 8- and 4-pair steps (LLVM leaves the portable loop
    /// scalar, a tenth of a 14x14 stride-2 plane's time); moves only, so the same values.
    #[inline(always)]
    fn split_pairs(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        let n = even.len().min(odd.len()).min(src.len() / 2);
        let (src, even, odd) = (&src[..2 * n], &mut even[..n], &mut odd[..n]);
        let mut i = 0;
        // SAFETY: only reached from `plane_avx2` (AVX2 checked by its caller); every access
        // is below `2 * n` in `src` and `n` in `even` and `odd`.
        unsafe {
            let (s, e, o) = (src.as_ptr(), even.as_mut_ptr(), odd.as_mut_ptr());
            while i + 8 <= n {
                let (a, b) = (
                    _mm256_loadu_ps(s.add(2 * i)),
                    _mm256_loadu_ps(s.add(2 * i + 8)),
                );
                // Per 128-bit lane: (a0 a2 b0 b2), (a1 a3 b1 b3); then the lanes in order.
                let ev = _mm256_castps_pd(_mm256_shuffle_ps::<0x88>(a, b));
                let od = _mm256_castps_pd(_mm256_shuffle_ps::<0xDD>(a, b));
                let ev = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(ev));
                let od = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(od));
                _mm256_storeu_ps(e.add(i), ev);
                _mm256_storeu_ps(o.add(i), od);
                i += 8;
            }
            if i + 4 <= n {
                let (a, b) = (_mm_loadu_ps(s.add(2 * i)), _mm_loadu_ps(s.add(2 * i + 4)));
                _mm_storeu_ps(e.add(i), _mm_shuffle_ps::<0x88>(a, b));
                _mm_storeu_ps(o.add(i), _mm_shuffle_ps::<0xDD>(a, b));
                i += 4;
            }
        }
        for ((e, o), pair) in even[i..]
            .iter_mut()
            .zip(&mut odd[i..])
            .zip(src[2 * i..].chunks_exact(2))
        {
            *e = pair[0];
            *o = pair[1];
        }
    }

    #[inline(always)]
    fn block<const NB: usize>(
        row: &mut [f32],
        xp: &[f32],
        w: &[f32],
        col_off: &[usize],
        [kd, kh]: [usize; 2],
        tap_row: impl Fn(usize, usize) -> usize,
        (bias, act): (f32, Activation),
    ) {
        let kw = col_off.len();
        // SAFETY: only reached from `plane_avx2`, whose caller checked the CPU has AVX2;
        // every load is from a slice of `NB * LANES` floats taken with bounds checks.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; NB];
            for a in 0..kd {
                for b in 0..kh {
                    let r = tap_row(a, b);
                    let wr = &w[(a * kh + b) * kw..][..kw];
                    for (&wv, &co) in wr.iter().zip(col_off) {
                        let xs = &xp[r + co..][..NB * LANES];
                        let wv = _mm256_set1_ps(wv);
                        for (v, acc) in acc.as_flattened_mut().iter_mut().enumerate() {
                            let x = _mm256_loadu_ps(xs.as_ptr().add(8 * v));
                            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(wv, x));
                        }
                    }
                }
            }
            let bv = _mm256_set1_ps(bias);
            // `row` may be shorter than the block (the last block of a row): then through
            // a buffer.
            let mut buf = [0f32; 4 * LANES];
            let whole = row.len() >= NB * LANES;
            let dst = match whole {
                true => row.as_mut_ptr(),
                false => buf.as_mut_ptr(),
            };
            for (v, &acc) in acc.as_flattened().iter().enumerate() {
                let y = clamp(_mm256_add_ps(acc, bv), act);
                _mm256_storeu_ps(dst.add(8 * v), y);
            }
            if !whole {
                copy_short(row, &buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The AVX2 blocks against the portable ones: the same bits over output widths 1 to 70
    //! (every tail of the 1-, 2- and 4-register blocks, several blocks per row), kernels 3,
    //! 5 and 7, strides 1 to 3, column dilation, pads, multipliers, bias and clamps.
    use super::super::depthwise::Path;
    use super::super::depthwise_avx512::tests::{geometry, run};
    use super::available;
    use crate::kernels::sgemm::Activation;

    #[test]
    fn same_bits_as_portable_blocks() {
        if !available() {
            return; // Nothing to compare on this CPU.
        }
        let acts = [
            Activation::NONE,
            Activation::RELU,
            Activation {
                lo: Some(-6.0),
                hi: Some(6.0),
            },
        ];
        let mut checked = 0;
        for k in [3, 5, 7] {
            for strides in [(1, 1), (2, 2), (1, 3)] {
                for dw in [1, 2] {
                    for ow in 1..=70 {
                        let oh = 1 + (ow + k) % 4;
                        let p = [0, 1, k / 2, k][ow % 4];
                        let pads = [p, (p + 1) % 3, k / 2, p];
                        let mult = 1 + ow % 2;
                        let Some(g) = geometry(2, mult, k, strides, (1, dw), pads, (oh, ow)) else {
                            continue;
                        };
                        let (bias, act) = (ow % 2 == 0, acts[ow % 3]);
                        let seed = checked as u64;
                        assert_eq!(
                            run(&g, Path::Avx2, bias, act, seed),
                            run(&g, Path::Portable, bias, act, seed),
                            "{g:?} bias {bias} {act:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 1000, "only {checked} geometries");
    }
}
