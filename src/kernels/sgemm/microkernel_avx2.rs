//! The AVX2 + FMA micro-kernel, for x86-64 CPUs without AVX-512 (AMD before Zen 4, most
//! Intel client parts). Its 16 ymm registers cannot hold the `MR x NR` = 8 x 32 tile (32
//! accumulators), so the tile is computed in passes over the same K steps, K cut in chunks
//! that keep both operands in L1 across the passes. A whole tile (all 8 rows and 32
//! columns, stored in place) runs two 6 x 16 passes (12 accumulators, two vectors of B and
//! one broadcast of A per step) and one 2 x 32 (8 accumulators, four vectors of B), in
//! `whole`, a function of its own whose accumulators never leave the registers; written
//! inline, with runtime branches on them, they went through the stack around each K loop
//! (`gemm_packed` on 256 x 64 x 3136 ran at 74-77 GFLOP/s that way, 87-92 with four 4 x 16
//! passes in `whole`). Eight FMA chains, as a 4 x 16 pass has, are exactly the two FMA
//! units times their 4-cycle latency on Zen 3, so any late load stalls them; twelve leave
//! slack. The same loops in C (gcc -O3, packed A and B panels in L1, K = 256, 40 windows
//! alternating with a loop of ten FMA chains on registers, 2026-12-07): a 4 x 16 pass ran
//! at 59-62 GFLOP/s while the machine was contended and 80 when it was not, a 6 x 16 pass
//! at 67-70 and 92, the FMA-only loop at 88-94 throughout.
//! (Session 14 measured the opposite on a probe with the 2 x 32 pass included, and session
//! 26's rejection of this layout rested on thirds sorted by the baseline's times alone,
//! which regression to the mean biases.) In the nets, alternating runs of the two (paired
//! medians of 10-12 rounds): ResNet-50 0.90, DenseNet 0.98, RegNet 0.98, ResNet-18 0.96,
//! SqueezeNet 1.00, MobileNet v2 1.00, GoogLeNet 1.04 (its best run 31.6 against 33.3 ms).
//! An edge tile (fewer than 32 columns stored, the last panel of most blocks of output
//! positions) runs only the 8-column vectors its columns need and stores the last one
//! masked, in place, a remainder of at most 8 columns as one 8 x 8 pass (unless it is the
//! last one or two columns and there are panels enough: `column_avx2.rs`; two 4 x 8 ones
//! have 4 FMA chains each and wait on the FMA latency: 1x1 convs on 7x7 planes, whose 49
//! columns end in 17, took 1.06-1.15x as long). Through a zeroed buffer with whole passes
//! an edge tile cost almost a whole tile for a few columns (the nine nets of the README
//! 0.92-1.01 of the time without, geomean 0.96, in-process A/B). `whole` is `pass`
//! without the masks, bias kinds and buffer: the tile run through the general pass alone
//! was up to 10% slower on `gemm_packed` (256 x 64 x 3136: 83 against 92 GFLOP/s).
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
        let halves: &[usize] = if t.rows > 4 { &[0, 4] } else { &[0] };
        let mut k0 = 0;
        loop {
            let kn = KCH.min(t.kc - k0);
            let chunk = Chunk {
                kc: kn,
                accumulate: t.accumulate || k0 > 0,
                last: k0 + kn == t.kc,
            };
            let (a, b) = (a.add(k0 * t.a_step), b.add(k0 * NR));
            if direct && t.cols == NR {
                // A whole tile stored in place, in three passes without masks: rows 0-5 of
                // each 16-column half (12 accumulators), then rows 6-7 across all 32 (8).
                let epi = t.epilogue.as_ref().filter(|_| chunk.last);
                let st = t.a_step;
                let (six, two) = match chunk.accumulate {
                    true => (
                        whole::<true, 6, 2> as WholeFn,
                        whole::<true, 2, 4> as WholeFn,
                    ),
                    false => (
                        whole::<false, 6, 2> as WholeFn,
                        whole::<false, 2, 4> as WholeFn,
                    ),
                };
                six(kn, st, epi, 0, a, b, dst, ld);
                six(kn, st, epi, 0, a, b.add(16), dst.add(16), ld);
                two(kn, st, epi, 6, a.add(6), b, dst.add(6 * ld), ld);
            } else {
                for c0 in [0, 16] {
                    // The columns this pass stores: in place, up to `cols` (the last vector
                    // masked); in the buffer, whole vectors (what lands past `cols` is never
                    // copied out).
                    let n = t.cols.saturating_sub(c0).min(16);
                    let n = if direct { n } else { n.next_multiple_of(8) };
                    // At most 8 columns of both row halves: one 8 x 8 pass (8 accumulators)
                    // rather than two 4 x 8 (4 each, half the FMA rate: each waits on the
                    // FMA latency).
                    if n <= 8 && halves.len() == 2 {
                        let (b, dst, at) = (b.add(c0), dst.add(c0), (0, c0));
                        match (n, chunk.accumulate) {
                            (0, _) => {}
                            (_, false) => pass::<8, 1, false>(t, &chunk, a, b, dst, ld, at, n),
                            (_, true) => pass::<8, 1, true>(t, &chunk, a, b, dst, ld, at, n),
                        }
                        continue;
                    }
                    for &r0 in halves {
                        let (a, b, dst) = (a.add(r0), b.add(c0), dst.add(r0 * ld + c0));
                        let at = (r0, c0);
                        match (n, chunk.accumulate) {
                            (0, _) => {}
                            (1..=8, false) => pass::<4, 1, false>(t, &chunk, a, b, dst, ld, at, n),
                            (1..=8, true) => pass::<4, 1, true>(t, &chunk, a, b, dst, ld, at, n),
                            (_, false) => pass::<4, 2, false>(t, &chunk, a, b, dst, ld, at, n),
                            (_, true) => pass::<4, 2, true>(t, &chunk, a, b, dst, ld, at, n),
                        }
                    }
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
    /// row and column and the chunk's first K step; `n` (at most `8 * V`) columns are loaded
    /// and stored, the last vector masked when not whole; from C's values when `ACC`.
    /// `R * V` accumulators, `V` vectors of B and one broadcast of A per step.
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pass<const R: usize, const V: usize, const ACC: bool>(
        t: &Tile,
        chunk: &Chunk,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        (r0, c0): (usize, usize),
        n: usize,
    ) {
        // As in `whole`: no runtime branch on the accumulators before the K loop.
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        if ACC {
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = load(c.add(i * ldc + 8 * v), n - 8 * v);
                }
            }
        }
        let (mut a, mut b) = (a, b);
        for _ in 0..chunk.kc {
            let mut bv = [_mm256_setzero_ps(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(b.add(8 * v));
            }
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
            // One bias vector per row, or per column of a transposed tile (zero past
            // `cols`: those columns are never stored); rows past `rows` are never stored.
            let (mut rb, mut cb) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); V]);
            let (rows_bias, cols_bias) = match e.bias {
                Some(bias) if t.transposed => {
                    let mut bs = [0f32; NR];
                    let n = t.cols.saturating_sub(c0).min(8 * V);
                    bs[..n].copy_from_slice(&bias[c0..c0 + n]);
                    for (v, x) in cb.iter_mut().enumerate() {
                        *x = _mm256_loadu_ps(bs.as_ptr().add(8 * v));
                    }
                    (false, true)
                }
                Some(bias) => {
                    for (x, &b) in rb.iter_mut().zip(bias.iter().skip(r0)) {
                        *x = _mm256_set1_ps(b);
                    }
                    (true, false)
                }
                None => (false, false),
            };
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    if rows_bias {
                        *x = _mm256_add_ps(*x, rb[i]);
                    }
                    if cols_bias {
                        *x = _mm256_add_ps(*x, cb[v]);
                    }
                    *x = clamp(*x, e.act);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                store(c.add(i * ldc + 8 * v), n - 8 * v, x);
            }
        }
    }

    /// A `whole` pass, for choosing its variant once per chunk.
    type WholeFn = unsafe fn(
        usize,
        usize,
        Option<&super::super::TileEpilogue>,
        usize,
        *const f32,
        *const f32,
        *mut f32,
        usize,
    );

    /// An `R` x `8 V` pass of a whole untransposed tile stored in place, rows `r0..r0 + R`,
    /// starting from C's values when `ACC`. A function of its own, with no branch on the
    /// accumulators but the epilogue's: inlined into `tile`, or with `accumulate` a runtime
    /// branch, its accumulators went through the stack around the K loop, which cost 12%
    /// of a 256 x 64 x 3136 product.
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn whole<const ACC: bool, const R: usize, const V: usize>(
        kc: usize,
        a_step: usize,
        epi: Option<&super::super::TileEpilogue>,
        r0: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        if ACC {
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(c.add(i * ldc + 8 * v));
                }
            }
        }
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let mut bv = [_mm256_setzero_ps(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(b.add(8 * v));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(i));
                for (x, &bv) in row.iter_mut().zip(&bv) {
                    *x = _mm256_fmadd_ps(av, bv, *x);
                }
            }
            a = a.add(a_step);
            b = b.add(NR);
        }
        if let Some(e) = epi {
            for (i, row) in acc.iter_mut().enumerate() {
                for x in row.iter_mut() {
                    if let Some(bias) = e.bias {
                        // The tile's bias holds its MR rows (a whole tile).
                        *x = _mm256_add_ps(*x, _mm256_set1_ps(bias[r0 + i]));
                    }
                    *x = clamp(*x, e.act);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                _mm256_storeu_ps(c.add(i * ldc + 8 * v), x);
            }
        }
    }

    /// 8 floats from `p`, or its first `lanes` (the rest 0) when fewer.
    #[inline(always)]
    unsafe fn load(p: *const f32, lanes: usize) -> __m256 {
        if lanes >= 8 {
            _mm256_loadu_ps(p)
        } else {
            _mm256_maskload_ps(p, lane_mask(lanes))
        }
    }

    /// Stores `x` at `p`, only its first `lanes` when fewer than 8.
    #[inline(always)]
    unsafe fn store(p: *mut f32, lanes: usize, x: __m256) {
        if lanes >= 8 {
            _mm256_storeu_ps(p, x)
        } else {
            _mm256_maskstore_ps(p, lane_mask(lanes), x)
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
    #[inline]
    #[target_feature(enable = "avx")]
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
