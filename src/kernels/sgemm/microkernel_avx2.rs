//! The AVX2 + FMA micro-kernel, for x86-64 CPUs without AVX-512 (AMD before Zen 4, most
//! Intel client parts). Its 16 ymm registers cannot hold the `MR x NR` = 8 x 32 tile (32
//! accumulators), so the tile is computed as four 4 x 16 passes over the same K steps: 8
//! accumulators, two vectors of B and one broadcast of A per step, 8 FMAs for 6 loads. The
//! tile's B and A rows are read once per pass from L1.
//!
//! Each output element is the same FMA chain, in the same order, as in the AVX-512 kernel,
//! so the two give the same bits.

use super::Tile;

/// Whether this CPU runs [`tile`].
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs one tile; see `gemm_packed`.
///
/// # Safety
/// [`available`] must be true; the pointers as for the AVX-512 kernel's `tile`.
pub(super) unsafe fn tile(t: &Tile, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        imp::tile(t, a, b, c, ldc)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (t, a, b, c, ldc);
        unreachable!("the AVX2 kernel is only selected on x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::{Activation, Tile, MR, NR};
    use std::arch::x86_64::*;

    const _: () = assert!(MR == 8 && NR == 32);
    /// Rows and columns of one pass.
    const PR: usize = 4;
    const PC: usize = 16;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(t: &Tile, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        debug_assert!(!(t.transposed && t.accumulate));
        // A whole, untransposed tile is loaded and stored in place; any other goes through
        // a tile-sized buffer on the stack, copied element by element at the edges.
        let direct = !t.transposed && t.rows == MR && t.cols == NR;
        let mut buf = [[0f32; NR]; MR];
        if t.accumulate && !direct {
            for (i, row) in buf.iter_mut().enumerate().take(t.rows) {
                for (j, v) in row.iter_mut().enumerate().take(t.cols) {
                    *v = *c.add(i * ldc + j);
                }
            }
        }
        let (dst, ld) = match direct {
            true => (c, ldc),
            false => (buf.as_mut_ptr().cast::<f32>(), NR),
        };
        // Passes over the stored part of the tile only (its rows and columns past `rows` and
        // `cols` are zero padding of the packed operands).
        for r0 in (0..t.rows).step_by(PR) {
            for c0 in (0..t.cols).step_by(PC) {
                pass(t, a.add(r0), b.add(c0), dst.add(r0 * ld + c0), ld, r0, c0);
            }
        }
        if direct {
            return;
        }
        for (i, row) in buf.iter().enumerate().take(t.rows) {
            for (j, &v) in row.iter().enumerate().take(t.cols) {
                let at = match t.transposed {
                    true => j * ldc + i,
                    false => i * ldc + j,
                };
                *c.add(at) = v;
            }
        }
    }

    /// Rows `r0..r0 + 4`, columns `c0..c0 + 16` of the tile, over every K step, with the
    /// epilogue; `a`, `b` and `c` already point at the pass's first row and column.
    #[inline(always)]
    unsafe fn pass(
        t: &Tile,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        r0: usize,
        c0: usize,
    ) {
        let mut acc = [_mm256_setzero_ps(); 2 * PR];
        if t.accumulate {
            for i in 0..PR {
                acc[2 * i] = _mm256_loadu_ps(c.add(i * ldc));
                acc[2 * i + 1] = _mm256_loadu_ps(c.add(i * ldc + 8));
            }
        }
        let (mut a, mut b) = (a, b);
        for _ in 0..t.kc {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for i in 0..PR {
                let av = _mm256_broadcast_ss(&*a.add(i));
                acc[2 * i] = _mm256_fmadd_ps(av, b0, acc[2 * i]);
                acc[2 * i + 1] = _mm256_fmadd_ps(av, b1, acc[2 * i + 1]);
            }
            a = a.add(t.a_step);
            b = b.add(NR);
        }
        if let Some(e) = &t.epilogue {
            if let Some(bias) = e.bias {
                if t.transposed {
                    // Per tile column: the bias of columns c0..c0 + 16 (zero past `cols`;
                    // those columns are never stored).
                    let mut bv = [0f32; PC];
                    for (j, v) in bv.iter_mut().enumerate().take(t.cols.saturating_sub(c0)) {
                        *v = bias[c0 + j];
                    }
                    let (b0, b1) = (
                        _mm256_loadu_ps(bv.as_ptr()),
                        _mm256_loadu_ps(bv.as_ptr().add(8)),
                    );
                    for i in 0..PR {
                        acc[2 * i] = _mm256_add_ps(acc[2 * i], b0);
                        acc[2 * i + 1] = _mm256_add_ps(acc[2 * i + 1], b1);
                    }
                } else {
                    for i in 0..PR.min(t.rows - r0) {
                        let bv = _mm256_set1_ps(bias[r0 + i]);
                        acc[2 * i] = _mm256_add_ps(acc[2 * i], bv);
                        acc[2 * i + 1] = _mm256_add_ps(acc[2 * i + 1], bv);
                    }
                }
            }
            for v in acc.iter_mut() {
                *v = clamp(*v, e.act);
            }
        }
        for i in 0..PR {
            _mm256_storeu_ps(c.add(i * ldc), acc[2 * i]);
            _mm256_storeu_ps(c.add(i * ldc + 8), acc[2 * i + 1]);
        }
    }

    /// `v < lo -> lo`, then `v > hi -> hi` (ordered compares: NaN stays NaN), as
    /// `Activation::apply`.
    #[inline(always)]
    unsafe fn clamp(mut v: __m256, act: Activation) -> __m256 {
        if let Some(l) = act.lo {
            let lv = _mm256_set1_ps(l);
            v = _mm256_blendv_ps(v, lv, _mm256_cmp_ps::<_CMP_LT_OQ>(v, lv));
        }
        if let Some(h) = act.hi {
            let hv = _mm256_set1_ps(h);
            v = _mm256_blendv_ps(v, hv, _mm256_cmp_ps::<_CMP_GT_OQ>(v, hv));
        }
        v
    }
}
