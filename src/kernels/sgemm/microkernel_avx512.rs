//! The AVX-512F micro-kernel: an `MR x NR` = 8 x 32 tile in 16 zmm accumulators; per K step
//! two loads of B and eight broadcasts of A feed 16 FMAs.

use super::Tile;

/// Whether this CPU runs [`tile`].
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs one tile; see `gemm_packed`.
///
/// # Safety
/// [`available`] must be true; `a` holds `kc` steps of `MR` floats, `a_step` apart, `b` `kc *
/// NR` (its panel's rows `k0..k0 + kc`), and `c` is valid for the `rows x cols` tile with row
/// stride `ldc` (`cols x rows` when transposed).
pub(super) unsafe fn tile(t: &Tile, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        imp::tile(t, a, b, c, ldc)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (t, a, b, c, ldc);
        unreachable!("the AVX-512 kernel is only selected on x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use imp::clamp;

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::{Activation, Tile, MR, NR};
    use std::arch::x86_64::*;

    const _: () = assert!(MR == 8 && NR == 32);

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(t: &Tile, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        let rows = t.rows;
        // Column masks of the two 16-wide halves (the edge tile stores fewer columns).
        let m0: __mmask16 = if t.cols >= 16 {
            0xffff
        } else {
            ((1u32 << t.cols) - 1) as u16
        };
        let m1: __mmask16 = if t.cols >= 32 {
            0xffff
        } else if t.cols > 16 {
            ((1u32 << (t.cols - 16)) - 1) as u16
        } else {
            0
        };
        let mut acc = [_mm512_setzero_ps(); 2 * MR];
        debug_assert!(!(t.transposed && t.accumulate));
        if t.accumulate {
            for i in 0..MR {
                if i < rows {
                    let cp = c.add(i * ldc);
                    acc[2 * i] = _mm512_maskz_loadu_ps(m0, cp);
                    acc[2 * i + 1] = _mm512_maskz_loadu_ps(m1, cp.add(16));
                }
            }
        }
        let (mut a, mut b) = (a, b);
        for _ in 0..t.kc {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for i in 0..MR {
                let av = _mm512_set1_ps(*a.add(i));
                acc[2 * i] = _mm512_fmadd_ps(av, b0, acc[2 * i]);
                acc[2 * i + 1] = _mm512_fmadd_ps(av, b1, acc[2 * i + 1]);
            }
            a = a.add(t.a_step);
            b = b.add(NR);
        }
        if t.transposed {
            return store_transposed(t, &mut acc, (m0, m1), c, ldc);
        }
        if let Some(e) = &t.epilogue {
            for i in 0..MR {
                if i < rows {
                    if let Some(bias) = e.bias {
                        let bv = _mm512_set1_ps(bias[i]);
                        acc[2 * i] = _mm512_add_ps(acc[2 * i], bv);
                        acc[2 * i + 1] = _mm512_add_ps(acc[2 * i + 1], bv);
                    }
                    acc[2 * i] = clamp(acc[2 * i], e.act);
                    acc[2 * i + 1] = clamp(acc[2 * i + 1], e.act);
                }
            }
        }
        for i in 0..MR {
            if i < rows {
                let cp = c.add(i * ldc);
                _mm512_mask_storeu_ps(cp, m0, acc[2 * i]);
                _mm512_mask_storeu_ps(cp.add(16), m1, acc[2 * i + 1]);
            }
        }
    }

    /// The transposed store: bias per tile column, the clamp, then tile element `(i, j)` to
    /// `c[j * ldc + i]` through a buffer on the stack. Once per tile (a transposed tile has a
    /// single K block), so the scalar copy costs little against the `kc` FMA steps.
    #[inline(always)]
    unsafe fn store_transposed(
        t: &Tile,
        acc: &mut [__m512; 2 * MR],
        (m0, m1): (__mmask16, __mmask16),
        c: *mut f32,
        ldc: usize,
    ) {
        if let Some(e) = &t.epilogue {
            let (b0, b1) = match e.bias {
                Some(bias) => (
                    _mm512_maskz_loadu_ps(m0, bias.as_ptr()),
                    _mm512_maskz_loadu_ps(m1, bias.as_ptr().add(16)),
                ),
                None => (_mm512_setzero_ps(), _mm512_setzero_ps()),
            };
            for i in 0..MR {
                if e.bias.is_some() {
                    acc[2 * i] = _mm512_add_ps(acc[2 * i], b0);
                    acc[2 * i + 1] = _mm512_add_ps(acc[2 * i + 1], b1);
                }
                acc[2 * i] = clamp(acc[2 * i], e.act);
                acc[2 * i + 1] = clamp(acc[2 * i + 1], e.act);
            }
        }
        let mut buf = [[0f32; NR]; MR];
        for (i, row) in buf.iter_mut().enumerate() {
            _mm512_storeu_ps(row.as_mut_ptr(), acc[2 * i]);
            _mm512_storeu_ps(row.as_mut_ptr().add(16), acc[2 * i + 1]);
        }
        for j in 0..t.cols {
            let cj = c.add(j * ldc);
            for (i, row) in buf.iter().enumerate().take(t.rows) {
                *cj.add(i) = row[j];
            }
        }
    }

    /// `v < lo -> lo`, then `v > hi -> hi` (ordered compares: NaN stays NaN), as
    /// `Activation::apply`; also the depthwise kernel's epilogue.
    #[inline(always)]
    pub(crate) unsafe fn clamp(mut v: __m512, act: Activation) -> __m512 {
        if let Some(l) = act.lo {
            let lv = _mm512_set1_ps(l);
            let lt = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, lv);
            v = _mm512_mask_mov_ps(v, lt, lv);
        }
        if let Some(h) = act.hi {
            let hv = _mm512_set1_ps(h);
            let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, hv);
            v = _mm512_mask_mov_ps(v, gt, hv);
        }
        v
    }
}
