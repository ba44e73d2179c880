//! The AVX-512F micro-kernel: an `MR x NR` = 8 x 32 tile in 16 zmm accumulators; per K step
//! two loads of B and eight broadcasts of A feed 16 FMAs. An edge tile storing at most 16
//! columns runs only the first vector (8 accumulators, 8 FMAs per step).

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
        // An edge tile of at most 16 stored columns runs one vector of B per K step, not
        // two: half the FMAs (the last panel of a 14x14 plane stores 4 of 32 columns, of a
        // 28x28 block 16). Alternating in one process: ResNet-18 0.94, ResNet-50 0.97,
        // SqueezeNet 0.98, RegNet 0.99 of the time, the other nets 0.98-1.00.
        match t.cols > 16 {
            true => tile_v::<2>(t, a, b, c, ldc),
            false => tile_v::<1>(t, a, b, c, ldc),
        }
    }

    /// The tile's first `16 * V` columns (`V` = 2: all of them).
    #[inline(always)]
    unsafe fn tile_v<const V: usize>(
        t: &Tile,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
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
        let masks = [m0, m1];
        let mut acc = [[_mm512_setzero_ps(); V]; MR];
        debug_assert!(!(t.transposed && t.accumulate));
        if t.accumulate {
            for (i, row) in acc.iter_mut().enumerate().take(rows) {
                let cp = c.add(i * ldc);
                for (v, x) in row.iter_mut().enumerate() {
                    *x = _mm512_maskz_loadu_ps(masks[v], cp.add(16 * v));
                }
            }
        }
        // The residual's rows, far apart (a plane each) and read only once the sums are
        // done: fetched now, so that they arrive while the K loop runs.
        if let Some(e) = t.epilogue.as_ref().filter(|e| !e.residual.is_null()) {
            for i in 0..rows {
                for v in 0..V {
                    let r = e.residual.wrapping_add(i * ldc + 16 * v);
                    _mm_prefetch::<_MM_HINT_T0>(r.cast());
                }
            }
        }
        // C's lines, when the tile only writes them (no earlier K block to reload): asked
        // for in the exclusive state now, so that the stores at the end do not wait for
        // them (a fresh output buffer is rarely cached). Paired medians of 4 alternating
        // rounds, 1 thread: DenseNet 0.978, EfficientNet 0.974, MobileNet v2 0.98-0.99,
        // ResNet-50 0.993, ResNet-18 1.000, SqueezeNet 1.002, GoogLeNet 1.011.
        if !t.accumulate && !t.transposed {
            for i in 0..rows {
                for v in 0..V {
                    _mm_prefetch::<_MM_HINT_ET0>(c.wrapping_add(i * ldc + 16 * v).cast());
                }
            }
        }
        let (mut a, mut b) = (a, b);
        // A macro, not a closure: a closure does not inherit `target_feature`, and its
        // intrinsics would then be calls (40x slower).
        macro_rules! step {
            () => {
                let bv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(b.add(16 * v)));
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(i));
                    for (x, &bv) in row.iter_mut().zip(&bv) {
                        *x = _mm512_fmadd_ps(av, bv, *x);
                    }
                }
                a = a.add(t.a_step);
                b = b.add(NR);
            };
        }
        // The next tile's A block, a cache line (two K steps of MR floats) per two steps of
        // this one: weights too big for the caches come from memory, and the hardware
        // prefetcher, restarting on every block, left the FMAs waiting. In C (A 512 x 4608
        // from memory, B in L2): 103 -> 128 GFLOP/s; 512 x 512 x 32: 83 -> 145.
        // Without a next block, the current one is "prefetched": already in L1, so it costs
        // a load slot and nothing else, and one loop serves both (with two, the accumulators
        // went through the stack: ShuffleNet v2 1.03x the time). `next` is only ever
        // prefetched, which never faults, so it may run past the end of A.
        debug_assert!(t.next_a.is_null() || t.a_step == MR);
        let mut next = match t.next_a.is_null() {
            true => a,
            false => t.next_a,
        };
        for _ in 0..t.kc / 2 {
            _mm_prefetch::<_MM_HINT_T0>(next.cast());
            step!();
            step!();
            next = next.wrapping_add(2 * t.a_step);
        }
        if t.kc % 2 == 1 {
            step!();
        }
        let _ = (a, b);
        if t.transposed {
            let mut all = [_mm512_setzero_ps(); 2 * MR];
            for (i, row) in acc.iter().enumerate() {
                all[2 * i..2 * i + V].copy_from_slice(row);
            }
            return store_transposed(t, &mut all, (m0, m1), c, ldc);
        }
        if let Some(e) = &t.epilogue {
            let residual = (!e.residual.is_null()).then_some(e.residual);
            for (i, row) in acc.iter_mut().enumerate().take(rows) {
                let bv = e.bias.map(|bias| _mm512_set1_ps(bias[i]));
                for (v, x) in row.iter_mut().enumerate() {
                    if let Some(bv) = bv {
                        *x = _mm512_add_ps(*x, bv);
                    }
                    if let Some(r) = residual {
                        let rv = _mm512_maskz_loadu_ps(masks[v], r.add(i * ldc + 16 * v));
                        *x = _mm512_add_ps(*x, rv);
                    }
                    *x = clamp(*x, e.act);
                }
            }
        }
        for (i, row) in acc.iter().enumerate().take(rows) {
            let cp = c.add(i * ldc);
            for (v, &x) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(cp.add(16 * v), masks[v], x);
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
