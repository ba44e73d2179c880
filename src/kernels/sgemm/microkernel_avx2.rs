//! The AVX2 + FMA micro-kernel, for x86-64 CPUs without AVX-512 (AMD before Zen 4, most
//! Intel client parts). Its 16 ymm registers cannot hold the `MR x NR` = 8 x 32 tile (32
//! accumulators), so the tile is computed in three passes over the same K steps: rows 0..6
//! as two 6 x 16 passes (12 accumulators, two vectors of B and one broadcast of A per step)
//! and rows 6..8 as one 2 x 32 pass, K cut in chunks that keep both operands in L1 across
//! the passes. An edge tile (fewer than 32 columns stored, the last panel of most blocks of
//! output positions) runs only the 8-column vectors its columns need and stores the last
//! one masked, in place: through a zeroed buffer with whole passes it cost almost a whole
//! tile for a few columns (the nine nets of the README 0.92-1.01 of the time without, geomean
//! 0.96, in-process A/B).
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
pub(crate) use imp::clamp;

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::{Activation, Tile, MR, NR};
    use std::arch::x86_64::*;

    const _: () = assert!(MR == 8 && NR == 32);

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(t: &Tile, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        debug_assert!(!(t.transposed && t.accumulate));
        // An untransposed tile of all MR rows is loaded and stored in place, its columns
        // past `cols` left alone by masked loads and stores; any other goes through a
        // tile-sized buffer on the stack, copied element by element.
        let direct = !t.transposed && t.rows == MR;
        // Only buffered tiles zero one (1 KiB per tile call adds up).
        let mut buf = if direct { None } else { Some([[0f32; NR]; MR]) };
        if let Some(buf) = buf.as_mut().filter(|_| t.accumulate) {
            for (i, row) in buf.iter_mut().enumerate().take(t.rows) {
                for (j, v) in row.iter_mut().enumerate().take(t.cols) {
                    *v = *c.add(i * ldc + j);
                }
            }
        }
        let (dst, ld) = match buf.as_mut() {
            None => (c, ldc),
            Some(buf) => (buf.as_mut_ptr().cast::<f32>(), NR),
        };
        // K in chunks of KCH steps, each chunk's passes before the next chunk, so the
        // operands' chunks stay in L1 across the passes (a transposed tile runs the whole K,
        // thousands of steps); the partial sums wait in C or the buffer, stored and reloaded
        // as f32, which changes no bit. Passes cover the stored part of the tile only (its
        // rows and columns past `rows` and `cols` are zero padding of the packed operands),
        // in as few 8-column vectors as it needs; the two row halves of a column half run
        // one after the other, sharing its B.
        let cols = t.cols;
        let mut k0 = 0;
        loop {
            let kn = KCH.min(t.kc - k0);
            let chunk = Chunk {
                kc: kn,
                accumulate: t.accumulate || k0 > 0,
                last: k0 + kn == t.kc,
            };
            let (a, b) = (a.add(k0 * t.a_step), b.add(k0 * NR));
            // Rows 0..6 in 6 x 16 passes (12 accumulators: enough independent FMA chains
            // to cover the FMA latency, which 8 barely do), rows 6..8 in one 2 x 32.
            for c0 in [0, 16] {
                let (b, dst, at) = (b.add(c0), dst.add(c0), (0, c0));
                match cols.saturating_sub(c0) {
                    0 => {}
                    1..=8 => pass::<6, 1>(t, &chunk, a, b, dst, ld, at),
                    _ => pass::<6, 2>(t, &chunk, a, b, dst, ld, at),
                }
            }
            if t.rows > 6 {
                let (a, dst, at) = (a.add(6), dst.add(6 * ld), (6, 0));
                match cols {
                    0..=8 => pass::<2, 1>(t, &chunk, a, b, dst, ld, at),
                    9..=16 => pass::<2, 2>(t, &chunk, a, b, dst, ld, at),
                    17..=24 => pass::<2, 3>(t, &chunk, a, b, dst, ld, at),
                    _ => pass::<2, 4>(t, &chunk, a, b, dst, ld, at),
                }
            }
            k0 += kn;
            if k0 >= t.kc {
                break;
            }
        }
        let Some(buf) = buf else { return };
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

    /// K steps per chunk: B's 32 columns for 128 steps fill 16 KiB, A's 8 rows (read a
    /// cache line apart in a transposed tile) at most as much.
    const KCH: usize = 128;

    /// One chunk of K steps of the tile.
    struct Chunk {
        kc: usize,
        /// Start from C's (or the buffer's) values.
        accumulate: bool,
        /// Apply the tile's epilogue.
        last: bool,
    }

    /// `R` rows from `r0`, `V` vectors of 8 columns from `c0` of the tile over one chunk,
    /// with the epilogue after the last; `a`, `b` and `c` already point at the pass's first
    /// row and column and the chunk's first K step. `R * V` accumulators, `V` vectors of B
    /// and one broadcast of A: at most the 16 ymm registers.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pass<const R: usize, const V: usize>(
        t: &Tile,
        chunk: &Chunk,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        (r0, c0): (usize, usize),
    ) {
        // The pass's columns in C when its last vector is not whole (an edge tile stored in
        // place; a buffered tile's buffer is NR wide, and what lands past `cols` is never
        // copied out). Such a pass loads and stores through the separate `*_edge`
        // functions, whose masks would otherwise stay in registers across the K loop and
        // push an accumulator out to the stack (measured: MobileNet 1.5x slower).
        let buffered = t.transposed || t.rows < MR;
        let edge = (!buffered && t.cols < c0 + 8 * V).then(|| t.cols - c0);
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        if chunk.accumulate {
            match edge {
                Some(n) => acc = load_edge(c, ldc, n),
                None => {
                    for (i, row) in acc.iter_mut().enumerate() {
                        for (v, x) in row.iter_mut().enumerate() {
                            *x = _mm256_loadu_ps(c.add(i * ldc + 8 * v));
                        }
                    }
                }
            }
        }
        let (mut a, mut b) = (a, b);
        for _ in 0..chunk.kc {
            let bv: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(b.add(8 * v)));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(i));
                for (x, &bv) in row.iter_mut().zip(&bv) {
                    *x = _mm256_fmadd_ps(av, bv, *x);
                }
            }
            a = a.add(t.a_step);
            b = b.add(NR);
        }
        if let Some(e) = t.epilogue.as_ref().filter(|_| chunk.last) {
            if let Some(bias) = e.bias {
                if t.transposed {
                    // Per tile column: the bias of the pass's columns (zero past `cols`;
                    // those columns are never stored).
                    let mut bs = [0f32; NR];
                    let n = t.cols.saturating_sub(c0).min(8 * V);
                    bs[..n].copy_from_slice(&bias[c0..c0 + n]);
                    let bv: [__m256; V] =
                        std::array::from_fn(|v| _mm256_loadu_ps(bs.as_ptr().add(8 * v)));
                    for row in acc.iter_mut() {
                        for (x, &bv) in row.iter_mut().zip(&bv) {
                            *x = _mm256_add_ps(*x, bv);
                        }
                    }
                } else {
                    let n = R.min(t.rows.saturating_sub(r0));
                    for (row, &bias) in acc.iter_mut().zip(&bias[r0..r0 + n]) {
                        let bv = _mm256_set1_ps(bias);
                        for x in row.iter_mut() {
                            *x = _mm256_add_ps(*x, bv);
                        }
                    }
                }
            }
            for x in acc.iter_mut().flatten() {
                *x = clamp(*x, e.act);
            }
        }
        match edge {
            Some(n) => store_edge(acc, c, ldc, n),
            None => {
                for (i, row) in acc.iter().enumerate() {
                    for (v, &x) in row.iter().enumerate() {
                        _mm256_storeu_ps(c.add(i * ldc + 8 * v), x);
                    }
                }
            }
        }
    }

    /// `R` rows of `8 * V` columns from `c`, of which the first `n` are loaded (the rest 0).
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_edge<const R: usize, const V: usize>(
        c: *const f32,
        ldc: usize,
        n: usize,
    ) -> [[__m256; V]; R] {
        std::array::from_fn(|i| {
            std::array::from_fn(|v| {
                let lanes = n.saturating_sub(8 * v).min(8);
                _mm256_maskload_ps(c.add(i * ldc + 8 * v), lane_mask(lanes))
            })
        })
    }

    /// Stores the first `n` columns of `acc`'s `R` rows of `8 * V` into `c`.
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_edge<const R: usize, const V: usize>(
        acc: [[__m256; V]; R],
        c: *mut f32,
        ldc: usize,
        n: usize,
    ) {
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                let lanes = n.saturating_sub(8 * v).min(8);
                _mm256_maskstore_ps(c.add(i * ldc + 8 * v), lane_mask(lanes), x);
            }
        }
    }

    /// The first `n` (at most 8) lanes set.
    #[inline(always)]
    unsafe fn lane_mask(n: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
    }

    /// `v < lo -> lo`, then `v > hi -> hi` (ordered compares: NaN stays NaN), as
    /// `Activation::apply`; also the AVX2 depthwise blocks' epilogue.
    #[inline(always)]
    pub(crate) unsafe fn clamp(mut v: __m256, act: Activation) -> __m256 {
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
