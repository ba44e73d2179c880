//! The transforms of Winograd F(4x4, 3x3) (`winograd.rs` runs the units and the products):
//! 4x4 output tiles from 6x6 input patches, `V = B^T d B`, `U = G g G^T`, `Y = A^T M A`
//! with the interpolation points 0, ±1, ±2 (Lavin and Gray's matrices). Per tile and pair
//! of channels 36 multiply-adds for 16 outputs (2.25 per output, against 4 in F(2x2, 3x3)
//! and 9 in the direct sum).
//!
//! B and A hold 0, ±1, ±2, ±4, ±5 and ±8 and G fractions down to 1/24, so the rounding
//! error grows faster than in F(2x2, 3x3): a few times that of the direct sum on the
//! channel sums of ResNet's layers (tests: `winograd::tests`, against the f64 reference).
//! Every operation's order is fixed by the shape alone: the same bits for any thread count.

use super::conv::Plan;
use super::gemm::SendPtr;
use super::im2col::{copy_short, copy_short_uninit};
use super::sgemm::{Activation, NR};
use super::winograd::{prod_stride, spaced, Grid, L};
use std::mem::MaybeUninit;
use std::ops::Range;

/// Positions of a transformed 6x6 tile.
pub(super) const XI: usize = 36;

/// `G` of F(4x4, 3x3): `U = G g G^T` for a 3x3 kernel `g`.
const G: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// The coefficient of kernel tap `(r, s)` (`t = 3r + s`) in element `ξ = 6i + j` of
/// `G g G^T`: `G[i][r] * G[j][s]`.
const COEF: [[f64; 9]; XI] = {
    let mut c = [[0f64; 9]; XI];
    let mut xi = 0;
    while xi < XI {
        let mut t = 0;
        while t < 9 {
            c[xi][t] = G[xi / 6][t / 3] * G[xi % 6][t % 3];
            t += 1;
        }
        xi += 1;
    }
    c
};

/// The 36 elements of `G g G^T` of the 3x3 kernel `g` (row-major), element `ξ = 6i + j` at
/// index ξ; summed over the taps in order in f64 and rounded once.
pub(super) fn transformed(g: &[f32]) -> [f32; XI] {
    let mut u = [0f64; XI];
    for (t, &gt) in g[..9].iter().enumerate() {
        for (u, c) in u.iter_mut().zip(&COEF) {
            *u += c[t] * gt as f64;
        }
    }
    u.map(|v| v as f32)
}

/// Eight lanes of f32 with the operations the input transform needs: `[f32; 8]` for any
/// CPU, `__m256` on AVX2. Each lane does the same operations, so both give the same bits.
trait Lanes: Copy {
    /// # Safety
    /// `p` valid for reading 8 floats.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// `p` valid for writing 8 floats.
    unsafe fn store(self, p: *mut f32);
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn scale(self, c: f32) -> Self;
    fn splat(c: f32) -> Self;
    /// [`Activation::apply`] on each lane.
    fn clamp(self, act: Activation) -> Self;
    /// The 32 floats from `p` by column phase: lane l of phase f is float `4l + f`.
    ///
    /// # Safety
    /// `p` valid for reading 32 floats.
    unsafe fn phases(p: *const f32) -> [Self; 4];
    /// The inverse of [`Lanes::phases`]: 32 consecutive floats, float `4l + f` lane l of
    /// `f[f]`.
    fn rows(f: [Self; 4]) -> [Self; 4];
}

impl Lanes for [f32; L] {
    unsafe fn load(p: *const f32) -> Self {
        std::ptr::read_unaligned(p.cast())
    }
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p.cast(), self)
    }
    fn add(self, o: Self) -> Self {
        std::array::from_fn(|l| self[l] + o[l])
    }
    fn sub(self, o: Self) -> Self {
        std::array::from_fn(|l| self[l] - o[l])
    }
    fn scale(self, c: f32) -> Self {
        self.map(|v| c * v)
    }
    fn splat(c: f32) -> Self {
        [c; L]
    }
    fn clamp(self, act: Activation) -> Self {
        self.map(|v| act.apply(v))
    }
    unsafe fn phases(p: *const f32) -> [Self; 4] {
        std::array::from_fn(|f| std::array::from_fn(|l| *p.add(4 * l + f)))
    }
    fn rows(f: [Self; 4]) -> [Self; 4] {
        std::array::from_fn(|q| std::array::from_fn(|i| f[i % 4][2 * q + i / 4]))
    }
}

#[cfg(target_arch = "x86_64")]
mod lanes_avx2 {
    use std::arch::x86_64::*;

    // The intrinsics need AVX (their callers are compiled for AVX2: `input_avx2`).
    impl super::Lanes for __m256 {
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self)
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: only instantiated in code compiled for AVX2.
            unsafe { _mm256_add_ps(self, o) }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            // SAFETY: as `add`.
            unsafe { _mm256_sub_ps(self, o) }
        }
        #[inline(always)]
        fn scale(self, c: f32) -> Self {
            // SAFETY: as `add`.
            unsafe { _mm256_mul_ps(_mm256_set1_ps(c), self) }
        }
        #[inline(always)]
        fn splat(c: f32) -> Self {
            // SAFETY: as `add`.
            unsafe { _mm256_set1_ps(c) }
        }
        #[inline(always)]
        fn clamp(self, act: crate::kernels::sgemm::Activation) -> Self {
            // SAFETY: as `add`.
            unsafe { crate::kernels::sgemm::clamp_avx2(self, act) }
        }
        /// Unpacks give each pair of phases' lanes interleaved within the 128-bit halves,
        /// shuffles each tile's four floats (tiles l and l + 4 in the two halves), and
        /// 128-bit permutes put tiles 2q and 2q + 1 in vector q.
        #[inline(always)]
        fn rows(f: [Self; 4]) -> [Self; 4] {
            // SAFETY: as `add`.
            unsafe {
                let (t0, t1) = (
                    _mm256_unpacklo_ps(f[0], f[1]),
                    _mm256_unpackhi_ps(f[0], f[1]),
                );
                let (t2, t3) = (
                    _mm256_unpacklo_ps(f[2], f[3]),
                    _mm256_unpackhi_ps(f[2], f[3]),
                );
                let (u0, u1) = (
                    _mm256_shuffle_ps::<0x44>(t0, t2),
                    _mm256_shuffle_ps::<0xEE>(t0, t2),
                );
                let (u2, u3) = (
                    _mm256_shuffle_ps::<0x44>(t1, t3),
                    _mm256_shuffle_ps::<0xEE>(t1, t3),
                );
                [
                    _mm256_permute2f128_ps::<0x20>(u0, u1),
                    _mm256_permute2f128_ps::<0x20>(u2, u3),
                    _mm256_permute2f128_ps::<0x31>(u0, u1),
                    _mm256_permute2f128_ps::<0x31>(u2, u3),
                ]
            }
        }
        /// An 8x4 transpose: unpacks and shuffles within the 128-bit halves give each
        /// phase's lanes in the order 0 2 4 6 1 3 5 7, which one permute puts right.
        #[inline(always)]
        unsafe fn phases(p: *const f32) -> [Self; 4] {
            let a = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(p.add(o)));
            let (t0, t1) = (
                _mm256_unpacklo_ps(a[0], a[1]),
                _mm256_unpackhi_ps(a[0], a[1]),
            );
            let (t2, t3) = (
                _mm256_unpacklo_ps(a[2], a[3]),
                _mm256_unpackhi_ps(a[2], a[3]),
            );
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            [
                _mm256_shuffle_ps::<0x44>(t0, t2),
                _mm256_shuffle_ps::<0xEE>(t0, t2),
                _mm256_shuffle_ps::<0x44>(t1, t3),
                _mm256_shuffle_ps::<0xEE>(t1, t3),
            ]
            .map(|v| _mm256_permutevar8x32_ps(v, order))
        }
    }
}

/// `B^T d` for six values `d` (a column or a row of a patch) in each lane, in a fixed order.
#[inline(always)]
fn bt<V: Lanes>(d: [V; 6]) -> [V; 6] {
    let [d0, d1, d2, d3, d4, d5] = d;
    [
        d0.scale(4.0).sub(d2.scale(5.0)).add(d4),
        d3.add(d4).sub(d1.add(d2).scale(4.0)),
        d4.sub(d3).add(d1.sub(d2).scale(4.0)),
        d4.sub(d2).add(d3.sub(d1).scale(2.0)),
        d4.sub(d2).sub(d3.sub(d1).scale(2.0)),
        d1.scale(4.0).sub(d3.scale(5.0)).add(d5),
    ]
}

/// `A^T m` for six values `m` in each lane, in a fixed order.
#[inline(always)]
fn a_t<V: Lanes>(m: [V; 6]) -> [V; 4] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let (s12, d12, s34, d34) = (m1.add(m2), m1.sub(m2), m3.add(m4), m3.sub(m4));
    [
        m0.add(s12).add(s34),
        d12.add(d34.scale(2.0)),
        s12.add(s34.scale(4.0)),
        d12.add(d34.scale(8.0)).add(m5),
    ]
}

/// Floats of the input transform's scratch for `grid`: six rows of four column phases,
/// their vertical transforms, one input row, and six horizontal results.
pub(super) fn scratch_len(grid: Grid) -> usize {
    let hmax = phase_len(grid);
    2 * 6 * 4 * hmax + 4 * hmax + 6 * hmax
}

/// Floats per column phase in the scratch: a tile row's tiles in whole steps of L, and one
/// more step (tile k reads element k + 1; the vertical step runs whole steps).
fn phase_len(grid: Grid) -> usize {
    grid.tw.next_multiple_of(L) + L
}

/// [`input_channel_body`] compiled for AVX2 where the CPU has it (8-wide loops; the same
/// operations, so the same bits).
///
/// # Safety
/// As [`input_channel_body`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn input_channel(
    p: &Plan,
    grid: Grid,
    x: &[f32],
    tiles: Range<usize>,
    ci: usize,
    s: &mut [f32],
    v: SendPtr<f32>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return input_avx2(p, grid, x, tiles, ci, s, v);
    }
    input_channel_body::<[f32; L]>(p, grid, x, tiles, ci, s, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn input_avx2(
    p: &Plan,
    grid: Grid,
    x: &[f32],
    tiles: Range<usize>,
    ci: usize,
    s: &mut [f32],
    v: SendPtr<f32>,
) {
    input_channel_body::<std::arch::x86_64::__m256>(p, grid, x, tiles, ci, s, v)
}

/// [`output_channel_body`] compiled for AVX2 where the CPU has it.
///
/// # Safety
/// As [`output_channel_body`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn output_channel(
    p: &Plan,
    grid: Grid,
    prod: &[f32],
    tiles: Range<usize>,
    o: usize,
    bias: Option<f32>,
    act: Activation,
    out: SendPtr<f32>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return output_avx2(p, grid, prod, tiles, o, bias, act, out);
    }
    output_channel_body::<[f32; L]>(p, grid, prod, tiles, o, bias, act, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_avx2(
    p: &Plan,
    grid: Grid,
    prod: &[f32],
    tiles: Range<usize>,
    o: usize,
    bias: Option<f32>,
    act: Activation,
    out: SendPtr<f32>,
) {
    output_channel_body::<std::arch::x86_64::__m256>(p, grid, prod, tiles, o, bias, act, out)
}

/// Writes row `ci` of the 36 packed matrices `V[ξ]` for the tiles `tiles` (see
/// `winograd::transform_input`), with `s` as scratch ([`scratch_len`]).
///
/// Each input row a tile row reads is split by column phase (column mod 4), so that tile
/// k's six columns `4k .. 4k + 6` are elements k of the four phases and k + 1 of the first
/// two: both steps run over whole rows of tiles in loops the compiler vectorizes.
///
/// # Safety
/// `v` must point at the 36 packed matrices for `tiles`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn input_channel_body<V: Lanes>(
    p: &Plan,
    grid: Grid,
    x: &[f32],
    tiles: Range<usize>,
    ci: usize,
    s: &mut [f32],
    v: SendPtr<f32>,
) {
    let (c, len) = (p.c, tiles.len());
    let [_, h, w] = p.input;
    let (pt, pl) = (p.pads[1] as isize, p.pads[2] as isize);
    let stride = spaced(super::sgemm::packed_b_len(c, len));
    let plane = &x[ci * h * w..(ci + 1) * h * w];
    // Where column j of matrix ξ's row ci is.
    let at = |xi: usize, j: usize| xi * stride + ((j / NR) * c + ci) * NR + j % NR;
    // `vals` into matrix ξ from column j on, cut where the run crosses a panel edge.
    let put = |xi: usize, mut j: usize, mut vals: &[f32]| {
        while !vals.is_empty() {
            let n = (NR - j % NR).min(vals.len());
            let dst = std::slice::from_raw_parts_mut(v.get().add(at(xi, j)), n);
            copy_short(dst, &vals[..n]);
            j += n;
            vals = &vals[n..];
        }
    };
    // Phase length: a tile row's columns and one more element per phase.
    let hmax = phase_len(grid);
    let (rows, rest) = s.split_at_mut(6 * 4 * hmax);
    let (vert, rest) = rest.split_at_mut(6 * 4 * hmax);
    let (line, q) = rest.split_at_mut(4 * hmax);
    for (ty, txs) in grid.rows(tiles.clone()) {
        let n = txs.len();
        let nl = n.next_multiple_of(L);
        // Phase elements the tiles read: k and k + 1 for tile k, in whole steps of L. (The
        // horizontal step's lanes past `n` read up to element nl, past `hn` what the
        // scratch holds there; their results are written over or never put.)
        let hn = (n + 1).next_multiple_of(L);
        // Input columns 4 * txs.start - pl + col for col in 0 .. 4 * hn, zero outside the
        // plane, copied into `line`, then column col to phase col % 4 at col / 4.
        let x0 = 4 * txs.start as isize - pl;
        for (r, row) in rows.chunks_exact_mut(4 * hmax).enumerate() {
            let line = &mut line[..4 * hn];
            line.fill(0.0);
            let y = (4 * ty + r) as isize - pt;
            if y >= 0 && y < h as isize {
                let lo = (-x0).clamp(0, 4 * hn as isize) as usize;
                let hi = (w as isize - x0).clamp(0, 4 * hn as isize) as usize;
                if lo < hi {
                    let at = y as usize * w + (x0 + lo as isize) as usize;
                    copy_short(&mut line[lo..hi], &plane[at..][..hi - lo]);
                }
            }
            // Eight columns of each phase at a time, from 32 consecutive ones (`line` holds
            // 4 hn floats, each phase of `row` hmax >= hn).
            for k in (0..hn).step_by(L) {
                let ph = V::phases(line.as_ptr().add(4 * k));
                for (f, v) in ph.into_iter().enumerate() {
                    v.store(row.as_mut_ptr().add(f * hmax + k));
                }
            }
        }
        // B^T d, column by column: on each phase's elements, six rows at a time (all
        // within the six rows of four phases of hmax >= hn floats).
        let (rp, vp) = (rows.as_ptr(), vert.as_mut_ptr());
        for f in 0..4 {
            for k in (0..hn).step_by(L) {
                let at = |r: usize| (r * 4 + f) * hmax + k;
                let t = bt(std::array::from_fn(|r| V::load(rp.add(at(r)))));
                for (r, t) in t.into_iter().enumerate() {
                    t.store(vp.add(at(r)));
                }
            }
        }
        // (B^T d) B, per tile: its six columns are phases 0-3 at k and 0-1 at k + 1. Whole
        // steps of L tiles (lanes past `n` are computed on what the scratch holds; k + 1 +
        // L <= nl + L <= hmax). A step whose L columns lie in one panel stores straight
        // into it, lanes past `n` too: those columns are this channel's row, and the next
        // row of tiles (or the zero tail after the last) writes them again. Others go
        // through `q` and `put` (a store across the panel's edge would land in another
        // channel's row).
        let j0 = ty * grid.tw + txs.start - tiles.start;
        let qp = q.as_mut_ptr();
        for (i, vr) in vert.chunks_exact(4 * hmax).enumerate() {
            let vr = vr.as_ptr();
            for k in (0..nl).step_by(L) {
                let e = [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1)]
                    .map(|(f, from)| V::load(vr.add(f * hmax + k + from)));
                let j = j0 + k;
                let direct = j % NR + L <= NR;
                for (jj, t) in bt(e).into_iter().enumerate() {
                    match direct {
                        true => t.store(v.get().add(at(6 * i + jj, j))),
                        false => t.store(qp.add(jj * hmax + k)),
                    }
                }
                if !direct {
                    for (jj, qr) in q.chunks_exact(hmax).enumerate() {
                        put(6 * i + jj, j, &qr[k..n.min(k + L)]);
                    }
                }
            }
        }
    }
    for xi in 0..XI {
        let tail = len.next_multiple_of(NR) - len;
        put(xi, len, &[0.0; NR][..tail]);
    }
}

/// Writes output channel `o` of the tiles `tiles`: `Y = A^T M A` from the products, plus
/// bias, through the activation, trimmed at the plane's edges.
///
/// # Safety
/// `out` must point at the batch item's output; this writes channel `o` of the tiles.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn output_channel_body<V: Lanes>(
    p: &Plan,
    grid: Grid,
    prod: &[f32],
    tiles: Range<usize>,
    o: usize,
    bias: Option<f32>,
    act: Activation,
    out: SendPtr<f32>,
) {
    let (len, stride) = (tiles.len(), prod_stride(p.m, tiles.len()));
    let [_, oh, ow] = p.output;
    for (ty, txs) in grid.rows(tiles.clone()) {
        let j0 = ty * grid.tw + txs.start - tiles.start;
        let n = txs.len();
        for k in (0..n).step_by(L) {
            // L tiles, one vector per ξ (lanes past `cnt` read the next row or the room
            // after the last, `prod_stride`; their outputs are not stored). Loops, not
            // closures: a closure does not take the AVX2 target feature, and its vector
            // operations became calls.
            let cnt = L.min(n - k);
            let mut m = [V::splat(0.0); XI];
            for (xi, m) in m.iter_mut().enumerate() {
                *m = V::load(prod[xi * stride + o * len + j0 + k..][..L].as_ptr());
            }
            // A^T M on each column j (rows 6i + j), then the same on each result row.
            let mut cols = [[V::splat(0.0); 4]; 6];
            for (j, c) in cols.iter_mut().enumerate() {
                *c = a_t([m[j], m[6 + j], m[12 + j], m[18 + j], m[24 + j], m[30 + j]]);
            }
            let x0 = 4 * (txs.start + k);
            let wd = (4 * cnt).min(ow - x0);
            for dy in 0..4 {
                let yy = 4 * ty + dy;
                if yy >= oh {
                    break;
                }
                let c = &cols;
                let mut y = a_t([c[0][dy], c[1][dy], c[2][dy], c[3][dy], c[4][dy], c[5][dy]]);
                for v in y.iter_mut() {
                    if let Some(b) = bias {
                        *v = v.add(V::splat(b));
                    }
                    *v = v.clamp(act);
                }
                // Output row yy from column x0: tile l's four columns at 4l.
                let r = V::rows(y);
                let dst = out.get().add((o * oh + yy) * ow + x0);
                if wd == 4 * L {
                    for (q, v) in r.into_iter().enumerate() {
                        v.store(dst.add(L * q));
                    }
                } else {
                    let mut row = [0f32; 4 * L];
                    for (q, v) in r.into_iter().enumerate() {
                        v.store(row.as_mut_ptr().add(L * q));
                    }
                    let dst = std::slice::from_raw_parts_mut(dst.cast::<MaybeUninit<f32>>(), wd);
                    copy_short_uninit(dst, &row[..wd]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::ConvAttrs;
    use crate::kernels::conv::plan;
    use crate::kernels::test_data::{conv_attrs, noise};

    /// The transform tests' conv: 3 input channels on 29 x 30 with pads on both sides, `m`
    /// output channels, so partial tiles at the right and bottom edges; the unit starts and
    /// ends inside tile rows (tiles 5.. but the last 3).
    fn case(m: usize) -> (Plan, Grid, Range<usize>) {
        let a: ConvAttrs = conv_attrs(1, &[], &[], &[1, 2, 1, 0]);
        let p = plan(&[1, 3, 29, 30], &[m, 3, 3, 3], None, &a).unwrap();
        let grid = Grid {
            th: p.output[1].div_ceil(4),
            tw: p.output[2].div_ceil(4),
        };
        let tiles = 5..grid.th * grid.tw - 3;
        (p, grid, tiles)
    }

    /// The input transform on eight-float arrays and on AVX2 vectors (where the CPU has it)
    /// writes the same bits, for a plane with partial tiles, pads on both sides and a unit
    /// that starts and ends inside tile rows.
    #[test]
    fn input_transform_lanes_agree() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let (p, grid, tiles) = case(16);
            let x = noise(&[1, 3, 29, 30], 9);
            let x = x.as_slice().unwrap();
            let b_len = crate::kernels::sgemm::packed_b_len(p.c, tiles.len());
            let len = XI * spaced(b_len);
            let run = |avx2: bool| {
                let mut v = vec![f32::NAN; len];
                let mut s = vec![0f32; scratch_len(grid)];
                for ci in 0..p.c {
                    let vp = SendPtr(v.as_mut_ptr());
                    // SAFETY: `v` holds the 36 packed matrices of these tiles; AVX2 checked.
                    unsafe {
                        match avx2 {
                            true => input_avx2(&p, grid, x, tiles.clone(), ci, &mut s, vp),
                            false => input_channel_body::<[f32; L]>(
                                &p,
                                grid,
                                x,
                                tiles.clone(),
                                ci,
                                &mut s,
                                vp,
                            ),
                        }
                    }
                }
                v.iter().map(|f| f.to_bits()).collect::<Vec<_>>()
            };
            let portable = run(false);
            // Every float of the 36 matrices written (the floats between them are not).
            let written = portable.chunks(spaced(b_len)).flat_map(|m| &m[..b_len]);
            assert!(written.into_iter().all(|b| !f32::from_bits(*b).is_nan()));
            assert_eq!(portable, run(true));
        }
    }

    /// The output transform on eight-float arrays and on AVX2 vectors (where the CPU has it)
    /// writes the same bits, with a bias and a clamp, for partial tiles at the plane's right
    /// and bottom edges and a unit that starts and ends inside tile rows.
    #[test]
    fn output_transform_lanes_agree() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let (p, grid, tiles) = case(5);
            let prod = noise(&[XI * prod_stride(p.m, tiles.len())], 10);
            let prod = prod.as_slice().unwrap();
            let act = Activation {
                lo: Some(-0.5),
                hi: Some(0.75),
            };
            let run = |avx2: bool| {
                let mut out = vec![f32::NAN; p.m * p.out_plane()];
                for o in 0..p.m {
                    let op = SendPtr(out.as_mut_ptr());
                    let bias = Some(0.125 * o as f32);
                    // SAFETY: `out` holds the output planes; AVX2 checked.
                    unsafe {
                        match avx2 {
                            true => output_avx2(&p, grid, prod, tiles.clone(), o, bias, act, op),
                            false => output_channel_body::<[f32; L]>(
                                &p,
                                grid,
                                prod,
                                tiles.clone(),
                                o,
                                bias,
                                act,
                                op,
                            ),
                        }
                    }
                }
                out.iter().map(|f| f.to_bits()).collect::<Vec<_>>()
            };
            let portable = run(false);
            let written = portable.iter().filter(|b| !f32::from_bits(**b).is_nan());
            // Tiles 5.. of 8 x 8 (29 x 30 outputs, the last row and column of tiles
            // partial), but the last 3: all but 5 + 3 tiles of positions written.
            assert!(written.count() >= p.m * (p.out_plane() - 8 * 16));
            assert_eq!(portable, run(true));
        }
    }
}
