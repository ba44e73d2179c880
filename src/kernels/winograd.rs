//! Winograd F(2x2, 3x3) and F(4x4, 3x3): 3x3 stride-1 convs with 2.25x or 4x fewer
//! multiply-adds. F(4x4, 3x3) (`winograd4.rs` holds its transforms) on output planes of
//! at least [`F4_MIN_SIDE`] on each side, F(2x2, 3x3) (below) on smaller ones.
//!
//! The output plane is cut into 2x2 tiles. Tile t's 4x4 input patch `d` becomes
//! `V = B^T d B`, each 3x3 kernel `g` becomes `U = G g G^T` (once per model), and the tile's
//! output is `Y = A^T M A`, where `M[ξ] = sum over input channels of U[ξ] V[ξ]` for each of
//! the 16 positions ξ of a transformed 4x4 tile: one matrix product per ξ, `(output
//! channels x input channels) x (input channels x tiles)`, on the packed sgemm. Per tile and
//! pair of channels that is 16 multiply-adds for 4 outputs instead of 36.
//!
//! The transforms only add and subtract (B and A hold 0 and ±1, G also ±1/2), so the result
//! differs from the direct sum by float rounding, a few ULP of the channel sums. The order
//! of every sum depends on the shape alone: the same bits for any thread count.
//!
//! Work is cut into units of at most [`TILES`] tiles of one batch item; each unit
//! transforms its input patches, runs the 16 products and writes its outputs while the
//! transformed values are still in cache.

use super::conv::{cols_cheaper, Plan, Weights, MIN_UNITS};
use super::depthwise::{split_pairs, split_row};
use super::gemm::SendPtr;
use super::im2col::{copy_short, copy_short_uninit};
use super::sgemm::{self, Activation, Epilogue, Kernel, NR};
use ndarray::ArrayD;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Most tiles per unit: 64 tiles (256 output positions, as conv.rs's im2col blocks) keep a
/// unit's transformed input and products (`16 x 64 x (C + M)` floats) near the L2 size for
/// 64 to 128 channels; F(4x4, 3x3)'s 32 tiles (512 positions, `36 x 32 x (C + M)` floats)
/// about as much.
const TILES: usize = 64;
const TILES_F4: usize = 32;

/// Positions of a transformed 4x4 tile.
const XI: usize = 16;

/// Fewest output rows and columns for F(4x4, 3x3). Below, its tiles waste more of the plane
/// (14x14 takes 16x16 of them) and its 36 transformed weight matrices (4x the weights,
/// against 1.8x) stream from memory for few tiles each.
pub(super) const F4_MIN_SIDE: usize = 28;

/// Which Winograd transform a conv runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Variant {
    F2,
    F4,
}

impl Variant {
    /// The variant for `p`'s output plane.
    pub(super) fn of(p: &Plan) -> Variant {
        match p.output[1] >= F4_MIN_SIDE && p.output[2] >= F4_MIN_SIDE {
            true => Variant::F4,
            false => Variant::F2,
        }
    }
    /// Output rows and columns per tile.
    fn side(self) -> usize {
        match self {
            Variant::F2 => 2,
            Variant::F4 => 4,
        }
    }
    /// Transformed positions: products per unit.
    fn xi(self) -> usize {
        match self {
            Variant::F2 => XI,
            Variant::F4 => super::winograd4::XI,
        }
    }
    fn tiles_per_unit(self) -> usize {
        match self {
            Variant::F2 => TILES,
            Variant::F4 => TILES_F4,
        }
    }
}

/// Fewest input channels for the Winograd path: the products' reduction is the input
/// channels (not 9 times them, as in im2col), and below 64 the micro-kernel's stores and the
/// transforms cost more than the 2.25x fewer multiply-adds save (single convs, 1 thread:
/// 16 -> 64 channels on 56x56 1.5 -> 2.3 ms, 48 -> 192 on 14x14 0.59 -> 0.70 ms, 32 -> 64 on
/// 28x28 no change; 64 -> 64 on 56x56 4.0 -> 2.9 ms).
const MIN_INPUTS: usize = 64;
/// Fewest output channels: the products' rows.
const MIN_OUTPUTS: usize = 16;

/// Whether the conv takes this path: a 2-D 3x3 conv with stride and dilation 1, one group,
/// enough channels.
pub(super) fn applies(p: &Plan) -> bool {
    p.input[0] == 1
        && p.output[0] == 1
        && p.kernel == [1, 3, 3]
        && p.strides == [1; 3]
        && p.dilations == [1; 3]
        && p.group == 1
        && p.c >= MIN_INPUTS
        && p.m >= MIN_OUTPUTS
}

/// The grid of 2x2 or 4x4 output tiles over an output plane.
#[derive(Clone, Copy, Debug)]
pub(super) struct Grid {
    /// Tile rows and columns.
    pub th: usize,
    pub tw: usize,
}

impl Grid {
    fn of(p: &Plan, v: Variant) -> Grid {
        Grid {
            th: p.output[1].div_ceil(v.side()),
            tw: p.output[2].div_ceil(v.side()),
        }
    }
    fn tiles(&self) -> usize {
        self.th * self.tw
    }
    /// The tile rows that `tiles` touches, each with its range of tile columns.
    pub(super) fn rows(&self, tiles: Range<usize>) -> impl Iterator<Item = (usize, Range<usize>)> {
        let tw = self.tw;
        let first = tiles.start / tw;
        let last = tiles.end.div_ceil(tw);
        (first..last).map(move |ty| {
            let lo = tiles.start.max(ty * tw) - ty * tw;
            let hi = tiles.end.min((ty + 1) * tw) - ty * tw;
            (ty, lo..hi)
        })
    }
}

/// The units' tile ranges: `ceil(tiles / per unit)` blocks of whole groups of tiles, as
/// equal as the groups allow: for F(2x2, 3x3) of 8 tiles (the transposed sgemm's tile
/// width), for F(4x4, 3x3) of 32 (the sgemm's B panel: its units of 32 tiles are whole
/// panels but the last, where groups of 8 made units of 24 and 28 tiles on 56x56 planes,
/// all edge tiles).
fn block(v: Variant, tiles: usize, n_blocks: usize, blk: usize) -> Range<usize> {
    let group = match v {
        Variant::F2 => sgemm::MR,
        Variant::F4 => sgemm::NR,
    };
    let groups = tiles.div_ceil(group);
    let start = |b: usize| (b * groups / n_blocks * group).min(tiles);
    start(blk)..start(blk + 1)
}

/// Whether the products run in the transposed orientation (output channels along the
/// vectors), by the padded work of every unit, as for im2col.
pub(super) fn prefer_cols(p: &Plan) -> bool {
    let v = Variant::of(p);
    let tiles = Grid::of(p, v).tiles();
    let n_blocks = tiles.div_ceil(v.tiles_per_unit());
    let lens = (0..n_blocks).map(|b| block(v, tiles, n_blocks, b).len());
    cols_cheaper(p.m, p.c, lens)
}

/// `G` of F(2x2, 3x3): `U = G g G^T` for a 3x3 kernel `g`.
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// The coefficient of kernel tap `(r, s)` (row-major `t = 3r + s`) in element `ξ = 4i + j`
/// of `G g G^T`: `G[i][r] * G[j][s]`, exact (0, ±1, ±1/2 or 1/4).
const COEF: [[f64; 9]; XI] = {
    let mut c = [[0f64; 9]; XI];
    let mut xi = 0;
    while xi < XI {
        let mut t = 0;
        while t < 9 {
            c[xi][t] = G[xi / 4][t / 3] * G[xi % 4][t % 3];
            t += 1;
        }
        xi += 1;
    }
    c
};

/// The 16 elements of the transformed kernel `G g G^T` of the 3x3 kernel `g` (row-major),
/// element `ξ = 4i + j` at index ξ; each summed over the taps in order in f64 (every product
/// exact) and rounded once.
fn transformed(g: &[f32]) -> [f32; XI] {
    let mut u = [0f64; XI];
    for (t, &gt) in g[..9].iter().enumerate() {
        for (u, c) in u.iter_mut().zip(&COEF) {
            *u += c[t] * gt as f64;
        }
    }
    u.map(|v| v as f32)
}

/// The 16 (F(2x2, 3x3)) or 36 (F(4x4, 3x3)) transformed weight matrices `U[ξ]` of `w`
/// (`M x C x 3 x 3`): `U[ξ][o][c]` is element ξ of the transformed kernel of output `o` and
/// input `c`, packed for the sgemm in orientation `P`. All are packed together from each
/// kernel's transform (each kernel read and transformed once), with no unpacked copy of
/// them (1.8 or 4 times the weights) held.
pub(super) fn pack_weights<P: super::conv::PackWeights>(w: &ArrayD<f32>, v: Variant) -> Vec<P> {
    let (m, c) = (w.shape()[0], w.shape()[1]);
    let w = w.as_standard_layout();
    let wd = w.as_slice().expect("standard layout");
    let kernel = |o: usize, ci: usize| &wd[(o * c + ci) * 9..][..9];
    match v {
        Variant::F2 => P::from_fn_n(m, c, |o, ci| transformed(kernel(o, ci))).into(),
        Variant::F4 => {
            P::from_fn_n(m, c, |o, ci| super::winograd4::transformed(kernel(o, ci))).into()
        }
    }
}

/// The conv: `out` (`N x M x OH x OW`) from `x` (`N x C x H x W`), the transformed weights
/// packed in either orientation, bias and activation applied to each output as it is
/// written.
pub(super) fn conv(
    p: &Plan,
    x: &[f32],
    weights: Weights,
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [MaybeUninit<f32>],
) {
    let v = Variant::of(p);
    let grid = Grid::of(p, v);
    let tiles = grid.tiles();
    let n_blocks = tiles.div_ceil(v.tiles_per_unit());
    let units = p.n * n_blocks;
    let (in_plane, out_plane) = (p.in_plane(), p.out_plane());
    // Every output is written once through this pointer (by `transform_output`), never read.
    let outp = SendPtr(out.as_mut_ptr().cast::<f32>());
    let unit = |u: usize, par: bool| {
        let (n, range) = (u / n_blocks, block(v, tiles, n_blocks, u % n_blocks));
        let xn = &x[n * p.c * in_plane..(n + 1) * p.c * in_plane];
        let v_len = v.xi() * spaced(sgemm::packed_b_len(p.c, range.len()));
        let m_len = v.xi() * prod_stride(p.m, range.len());
        super::conv::with_pack_buffer(v_len + m_len, |buf| {
            let (vb, prod) = buf.split_at_mut(v_len);
            transform_input(p, (v, grid), xn, range.clone(), vb, par);
            multiply(weights, vb, prod, range.len(), par);
            // SAFETY: batch item n's output is inside `out`; units write disjoint tiles.
            let outn = SendPtr(unsafe { outp.get().add(n * p.m * out_plane) });
            transform_output(p, (v, grid), prod, range, bias, act, outn, par);
        });
    };
    // Many units: one task each. Few: one after another, each spread over the threads (by
    // channel and by ξ), so 7x7 and 14x14 planes keep both cores busy.
    if units >= MIN_UNITS {
        (0..units).into_par_iter().for_each(|u| unit(u, false));
    } else {
        (0..units).for_each(|u| unit(u, true));
    }
}

/// Floats from the start of one of a unit's transformed matrices (or products) to the next,
/// for matrices of `len` floats: `len` rounded up to an odd number of 64-byte lines. The
/// transforms write (or read) one row of each of the 16 or 36 matrices in turn; a multiple
/// of 4 KiB apart, as 128 channels x 32 tiles or 64 x 64 are, those rows all fall in one
/// 8-way set of L1. Spaced this way, DenseNet-121's 3x3 convs (128 -> 32 channels) on
/// 56x56 and 28x28 took 0.91 and 0.93 of the time (per-node minima of 4 profiles).
pub(super) fn spaced(len: usize) -> usize {
    (len.div_ceil(16) | 1) * 16
}

/// Floats from the start of one of a unit's products (`m x len`) to the next: [`spaced`],
/// with room for `L` floats more, so the output transforms read whole steps of `L` tiles
/// even where a row has fewer left (a partial step copied into a vector's worth first,
/// two stores then one load across both, stalled on the failed store forwarding: half the
/// output transform's time on 56x56 planes, 14 tiles a row).
pub(super) fn prod_stride(m: usize, len: usize) -> usize {
    spaced(m * len + L)
}

/// `f(i)` for each `i` in `range`, over rayon's pool when `par`, each task with its own
/// scratch from `init`.
fn each<S>(
    range: Range<usize>,
    par: bool,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize) + Sync + Send,
) {
    if par {
        range.into_par_iter().for_each_init(init, f);
    } else {
        let mut s = init();
        range.for_each(|i| f(&mut s, i));
    }
}

/// Writes `V[ξ]` for the tiles `tiles` into `v`: 16 or 36 matrices of `C x len` packed as
/// the sgemm's B (`packed_b_len(C, len)` floats each, [`spaced`] apart), columns past
/// `len` in the last panel 0.
fn transform_input(
    p: &Plan,
    (var, grid): (Variant, Grid),
    x: &[f32],
    tiles: Range<usize>,
    v: &mut [f32],
    par: bool,
) {
    let vp = SendPtr(v.as_mut_ptr());
    let len = match var {
        Variant::F2 => 10 * scratch_width(grid),
        Variant::F4 => super::winograd4::scratch_len(grid),
    };
    each(
        0..p.c,
        par,
        || vec![0f32; len],
        |s, ci| {
            // SAFETY: channel ci writes row ci of each packed matrix of `v` (inside it, as
            // `input_channel` computes), which no other task writes.
            unsafe {
                match var {
                    Variant::F2 => dispatch!(input_channel(p, grid, x, tiles.clone(), ci, s, vp)),
                    Variant::F4 => {
                        super::winograd4::input_channel(p, grid, x, tiles.clone(), ci, s, vp)
                    }
                }
            }
        },
    );
}

/// Tiles per step of the transforms' inner loops: one 8-float vector per value.
pub(super) const L: usize = 8;

/// The width of the transforms' row scratch: a tile row's input columns (`2 * tw + 2`),
/// rounded up so whole steps of `L` tiles read inside it.
fn scratch_width(grid: Grid) -> usize {
    2 * grid.tw.next_multiple_of(L) + 2
}

/// Runs `$f` compiled for AVX2 when the CPU has it (the transforms' loops then run 8-wide;
/// the same adds in the same order, so the same bits), else as it is.
macro_rules! dispatch {
    ($f:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            unsafe fn avx2(f: impl FnOnce()) {
                f()
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                avx2(|| $f($($arg),*))
            } else {
                $f($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $f($($arg),*)
        }
    }};
}
use dispatch;

/// [`transform_input`] for input channel `ci`, with `s` as scratch (`10 * scratch_width`).
///
/// Each input row the tile row reads is copied split by column phase (even columns, then
/// odd), so that the horizontal step's four columns of a tile, `2 tx .. 2 tx + 4`, are
/// elements `tx` and `tx + 1` of the two phases: the step runs over whole rows of tiles in
/// a loop the compiler vectorizes, instead of a stride-2 gather it left scalar (64 -> 64
/// channels on 56x56: 0.95 of the time, in-process A/B).
///
/// # Safety
/// `v` must point at the 16 packed matrices for `tiles`; this writes their row `ci`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn input_channel(
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
    let stride = spaced(sgemm::packed_b_len(c, len));
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
    let width = scratch_width(grid);
    // A row of the scratch: its even columns in the first half, its odd ones in the second.
    let half = width / 2;
    let (rows, rest) = s.split_at_mut(4 * width);
    let (vert, horiz) = rest.split_at_mut(4 * width);
    for (ty, txs) in grid.rows(tiles.clone()) {
        let n = txs.len();
        // Input columns 2 * tx - pl .. + 4 for tx in txs, zero outside the plane (and in
        // the step's lanes past the last tile): `hn` of each phase.
        let hn = n.next_multiple_of(L) + 1;
        let x0 = 2 * txs.start as isize - pl;
        for (r, row) in rows.chunks_exact_mut(width).enumerate() {
            let (even, odd) = row.split_at_mut(half);
            let (even, odd) = (&mut even[..hn], &mut odd[..hn]);
            even.fill(0.0);
            odd.fill(0.0);
            let y = (2 * ty + r) as isize - pt;
            if y < 0 || y >= h as isize {
                continue;
            }
            let lo = (-x0).clamp(0, 2 * hn as isize) as usize;
            let hi = (w as isize - x0).clamp(0, 2 * hn as isize) as usize;
            if lo < hi {
                let src = &plane[y as usize * w + (x0 + lo as isize) as usize..][..hi - lo];
                split_row(src, lo, even, odd, &split_pairs);
            }
        }
        // B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3; column by column, so on each phase.
        {
            let (r0, rest) = rows.split_at(width);
            let (r1, rest) = rest.split_at(width);
            let (r2, r3) = rest.split_at(width);
            let (v0, rest) = vert.split_at_mut(width);
            let (v1, rest) = rest.split_at_mut(width);
            let (v2, v3) = rest.split_at_mut(width);
            for phase in [0..hn, half..half + hn] {
                let (r0, r1, r2, r3) = (
                    &r0[phase.clone()],
                    &r1[phase.clone()],
                    &r2[phase.clone()],
                    &r3[phase.clone()],
                );
                let (v0, v1, v2) = (
                    &mut v0[phase.clone()],
                    &mut v1[phase.clone()],
                    &mut v2[phase.clone()],
                );
                let v3 = &mut v3[phase];
                for k in 0..hn {
                    v0[k] = r0[k] - r2[k];
                    v1[k] = r1[k] + r2[k];
                    v2[k] = r2[k] - r1[k];
                    v3[k] = r1[k] - r3[k];
                }
            }
        }
        // (B^T d) B, per tile: e0 - e1, o0 + e1, e1 - o0, o0 - o1 of its 4 columns (e, o:
        // the even and odd ones; tile k's are phase elements k and k + 1), as four rows.
        // Whole steps of L tiles (the lanes past `n` read what the scratch holds there,
        // zeros or the row's next columns): a remainder loop would run scalar, and rows of
        // 4 or 7 tiles (7x7 and 14x14 outputs) are all remainder. When the steps' columns
        // lie in one panel, they are stored straight into it, lanes past `n` too: those
        // columns are this channel's row, and the next row of tiles (or the zero tail after
        // the last) writes them again. Else through `horiz` and `put` (a store across the
        // panel's edge would land in another channel's row).
        let j0 = ty * grid.tw + txs.start - tiles.start;
        let nl = n.next_multiple_of(L);
        let direct = j0 % NR + nl <= NR;
        for (i, vr) in vert.chunks_exact(width).enumerate() {
            let (ve, vo) = vr.split_at(half);
            let (e0, e1, o0, o1) = (&ve[..nl], &ve[1..=nl], &vo[..nl], &vo[1..=nl]);
            let [q0, q1, q2, q3] = match direct {
                // SAFETY: four matrices' runs of nl columns in row ci of one panel, apart.
                true => [0, 1, 2, 3].map(|jj| unsafe {
                    std::slice::from_raw_parts_mut(v.get().add(at(4 * i + jj, j0)), nl)
                }),
                false => {
                    let (q0, rest) = horiz.split_at_mut(half);
                    let (q1, rest) = rest.split_at_mut(half);
                    let (q2, q3) = rest.split_at_mut(half);
                    [&mut q0[..nl], &mut q1[..nl], &mut q2[..nl], &mut q3[..nl]]
                }
            };
            for k in 0..nl {
                q0[k] = e0[k] - e1[k];
                q1[k] = o0[k] + e1[k];
                q2[k] = e1[k] - o0[k];
                q3[k] = o0[k] - o1[k];
            }
            if !direct {
                for (jj, q) in [q0, q1, q2, q3].into_iter().enumerate() {
                    put(4 * i + jj, j0, &q[..n]);
                }
            }
        }
    }
    for xi in 0..XI {
        let tail = len.next_multiple_of(NR) - len;
        put(xi, len, &[0.0; NR][..tail]);
    }
}

/// `prod[ξ] = U[ξ] V[ξ]` (`M x len`, row-major, [`spaced`] apart) for the 16 or 36 ξ (one
/// per weight matrix); `v` holds the `V[ξ]`, as many packed B's, as far apart.
fn multiply(weights: Weights, v: &[f32], prod: &mut [f32], len: usize, par: bool) {
    let kernel = Kernel::detect();
    let epi = Epilogue::default();
    let (m, k, xis) = match weights {
        Weights::Rows(a) => (a[0].m(), a[0].k(), a.len()),
        Weights::Cols(a) => (a[0].m(), a[0].k(), a.len()),
    };
    let b_len = sgemm::packed_b_len(k, len);
    let (stride, prod_stride) = (spaced(b_len), prod_stride(m, len));
    let pp = SendPtr(prod.as_mut_ptr());
    each(
        0..xis,
        par,
        || (),
        |_, xi| {
            let b = &v[xi * stride..][..b_len];
            // SAFETY: product ξ writes its own `M x len` matrix of `prod`.
            unsafe {
                let c = pp.get().add(xi * prod_stride);
                match weights {
                    Weights::Rows(a) => {
                        let a = &a[xi];
                        sgemm::gemm_packed(kernel, a, 0..a.panels(), b, len, c, len, &epi)
                    }
                    Weights::Cols(a) => {
                        let a = &a[xi];
                        sgemm::gemm_cols(kernel, a, 0..a.panels(), b, len, c, len, &epi)
                    }
                }
            }
        },
    );
}

/// Writes the outputs of the tiles `tiles`: `Y = A^T M A` from the products, plus bias,
/// through the activation, trimmed at the plane's edges.
#[allow(clippy::too_many_arguments)]
fn transform_output(
    p: &Plan,
    (var, grid): (Variant, Grid),
    prod: &[f32],
    tiles: Range<usize>,
    bias: Option<&[f32]>,
    act: Activation,
    out: SendPtr<f32>,
    par: bool,
) {
    each(
        0..p.m,
        par,
        || (),
        |_, o| {
            let b = bias.map(|b| b[o]);
            // SAFETY: only this task writes output channel o of these tiles.
            unsafe {
                match var {
                    Variant::F2 => {
                        dispatch!(output_channel(p, grid, prod, tiles.clone(), o, b, act, out))
                    }
                    Variant::F4 => super::winograd4::output_channel(
                        p,
                        grid,
                        prod,
                        tiles.clone(),
                        o,
                        b,
                        act,
                        out,
                    ),
                }
            }
        },
    );
}

/// [`transform_output`] for output channel `o`.
///
/// # Safety
/// `out` must point at the batch item's output; this writes channel `o` of the tiles.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // lane loops index arrays
unsafe fn output_channel(
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
    for (ty, txs) in grid.rows(tiles.clone()) {
        let j0 = ty * grid.tw + txs.start - tiles.start;
        let n = txs.len();
        for k in (0..n).step_by(L) {
            let cnt = L.min(n - k);
            // Whole steps of L tiles (lanes past `cnt` read the next row or the room after
            // the last, `prod_stride`; their outputs are not stored): `cnt` floats copied
            // were reloaded across two stores, a failed store forwarding.
            let mut mx = [[0f32; L]; XI];
            for (xi, mv) in mx.iter_mut().enumerate() {
                mv.copy_from_slice(&prod[xi * stride + o * len + j0 + k..][..L]);
            }
            // A^T M: rows m0 + m1 + m2, m1 - m2 - m3; then the same on columns. y[dy][dx].
            let mut y = [[[0f32; L]; 2]; 2];
            for l in 0..L {
                let s0: [f32; 4] = std::array::from_fn(|c| mx[c][l] + mx[4 + c][l] + mx[8 + c][l]);
                let s1: [f32; 4] =
                    std::array::from_fn(|c| mx[4 + c][l] - mx[8 + c][l] - mx[12 + c][l]);
                y[0][0][l] = s0[0] + s0[1] + s0[2];
                y[0][1][l] = s0[1] - s0[2] - s0[3];
                y[1][0][l] = s1[0] + s1[1] + s1[2];
                y[1][1][l] = s1[1] - s1[2] - s1[3];
            }
            store_tiles(p, &y, (ty, txs.start + k, cnt), o, (bias, act), out);
        }
    }
}

/// Stores output channel `o` of `cnt` tiles of side `S` from tile column `tx` of tile row
/// `ty`: `y[dy][dx][l]` is tile `tx + l`'s output at (`dy`, `dx`), stored plus bias,
/// through the activation, the tiles' rows interleaved, trimmed at the plane's edges.
/// F(2x2)'s (F(4x4) stores vectors of its rows itself).
///
/// # Safety
/// `out` must point at the batch item's output.
#[inline(always)]
unsafe fn store_tiles<const S: usize>(
    p: &Plan,
    y: &[[[f32; L]; S]; S],
    (ty, tx, cnt): (usize, usize, usize),
    o: usize,
    (bias, act): (Option<f32>, Activation),
    out: SendPtr<f32>,
) {
    let [_, oh, ow] = p.output;
    let x0 = S * tx;
    let wd = (S * cnt).min(ow - x0);
    for (dy, yr) in y.iter().enumerate() {
        let yy = S * ty + dy;
        if yy >= oh {
            break;
        }
        // Sized for the largest tiles (4 x 4); the first `S * L` used.
        let mut row = [0f32; 4 * L];
        for l in 0..L {
            for dx in 0..S {
                let v = bias.map_or(yr[dx][l], |b| yr[dx][l] + b);
                row[S * l + dx] = act.apply(v);
            }
        }
        let dst = out.get().add((o * oh + yy) * ow + x0);
        let dst = std::slice::from_raw_parts_mut(dst.cast::<MaybeUninit<f32>>(), wd);
        copy_short_uninit(dst, &row[..S * L]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::{conv_f32_with, conv_reference, plan, prepare};
    use super::super::test_data::{conv_attrs, noise, on_threads};
    use super::super::uninit::of_init;
    use super::*;
    use crate::ir::op::ConvAttrs;

    /// Our Winograd conv in the given orientation, against the f64 direct reference.
    fn check(xs: &[usize], ws: &[usize], pads: &[usize], cols: bool, act: Activation) {
        let a = conv_attrs(1, &[], &[], pads);
        let (x, w, b) = (noise(xs, 1), noise(ws, 2), noise(&[ws[0]], 3));
        let p = plan(xs, ws, Some(&[ws[0]]), &a).unwrap();
        let got = run(&p, &x, &w, &b, cols, act);
        let want = conv_reference(&x, &w, Some(&b), &a).unwrap();
        assert_eq!(got.len(), want.len());
        // The sums run over C * 9 products of values up to 8 in magnitude: allow 1e-6 of
        // the largest possible partial sum (64 * C * 9), a few ULP of it (F(2x2, 3x3)), or
        // 4e-6 (F(4x4, 3x3), whose transforms scale values by up to 5 and 8 on the way).
        let scale = match Variant::of(&p) {
            Variant::F2 => 1e-6,
            Variant::F4 => 4e-6,
        };
        let tol = 64.0 * (ws[1] * 9) as f32 * scale;
        for (i, (g, r)) in got.iter().zip(want.iter()).enumerate() {
            let r = act.apply(*r);
            assert!(
                (g - r).abs() <= tol,
                "{g} vs {r} at {i} for {xs:?} {ws:?} {pads:?} cols {cols}"
            );
        }
    }

    fn run(
        p: &Plan,
        x: &ArrayD<f32>,
        w: &ArrayD<f32>,
        b: &ArrayD<f32>,
        cols: bool,
        act: Activation,
    ) -> Vec<f32> {
        let mut out = vec![f32::NAN; p.out_shape.iter().product()];
        let (xd, bd) = (x.as_slice().unwrap(), b.as_slice().unwrap());
        let (rows_w, cols_w);
        let weights = match cols {
            false => {
                rows_w = pack_weights(w, Variant::of(p));
                Weights::Rows(&rows_w)
            }
            true => {
                cols_w = pack_weights(w, Variant::of(p));
                Weights::Cols(&cols_w)
            }
        };
        // SAFETY: conv writes floats only.
        conv(p, xd, weights, Some(bd), act, unsafe { of_init(&mut out) });
        out
    }

    #[test]
    fn matches_the_direct_definition() {
        let clip = Activation {
            lo: Some(-20.0),
            hi: Some(30.0),
        };
        /// Input shape, weight shape, pads, activation.
        type Case<'a> = (&'a [usize], &'a [usize], &'a [usize], Activation);
        #[rustfmt::skip]
        let cases: [Case; 9] = [
            // One unit, odd plane, symmetric pads (ResNet's 7x7 and 14x14 layers, smaller).
            (&[1, 16, 7, 7], &[24, 16, 3, 3], &[1, 1, 1, 1], Activation::NONE),
            // Odd channel counts, no pads, an output of 1 x 1.
            (&[1, 17, 3, 3], &[19, 17, 3, 3], &[0, 0, 0, 0], Activation::RELU),
            // Asymmetric pads, a non-square plane, two units (22 x 13 output: 77 tiles).
            (&[1, 20, 21, 13], &[40, 20, 3, 3], &[2, 0, 1, 2], clip),
            // Batch 3 and two units each: the parallel path over units.
            (&[3, 16, 18, 18], &[16, 16, 3, 3], &[1, 1, 1, 1], Activation::RELU),
            // More input channels than one K block of the sgemm (256).
            (&[1, 300, 5, 6], &[33, 300, 3, 3], &[1, 1, 1, 1], Activation::NONE),
            // F(4x4, 3x3): planes of 28 and more. Partial tiles on both sides (30 x 29), two
            // units of a panel and a remainder (8 x 8 tiles), and a clamp.
            (&[1, 16, 30, 29], &[24, 16, 3, 3], &[1, 1, 1, 1], clip),
            // Asymmetric pads, no pads on one side (31 x 28 output).
            (&[1, 20, 31, 30], &[40, 20, 3, 3], &[2, 0, 1, 0], Activation::RELU),
            // Batch 2: the parallel path over units; 56 x 56 as ResNet's first layers.
            (&[2, 16, 56, 56], &[16, 16, 3, 3], &[1, 1, 1, 1], Activation::NONE),
            // More input channels than one K block.
            (&[1, 260, 28, 28], &[16, 260, 3, 3], &[1, 1, 1, 1], Activation::RELU),
        ];
        for cols in [false, true] {
            for (xs, ws, pads, act) in cases {
                check(xs, ws, pads, cols, act);
            }
        }
    }

    /// 2-D 3x3 stride-1 convs with enough channels take this path through `conv_f32_with`
    /// (and their prepared weights are used); others do not.
    #[test]
    fn chosen_for_3x3_stride_1_only() {
        let yes =
            |xs: &[usize], ws: &[usize], a: &ConvAttrs| applies(&plan(xs, ws, None, a).unwrap());
        let same = conv_attrs(1, &[], &[], &[1, 1, 1, 1]);
        let (x, w) = ([1, 64, 8, 8], [16, 64, 3, 3]);
        assert!(yes(&x, &w, &same));
        assert!(!yes(&[1, 32, 8, 8], &[16, 32, 3, 3], &same)); // few input channels
        assert!(!yes(&x, &[8, 64, 3, 3], &same)); // few output channels
        assert!(!yes(&x, &w, &conv_attrs(1, &[2, 2], &[], &[1, 1, 1, 1])));
        assert!(!yes(&x, &w, &conv_attrs(1, &[], &[2, 2], &[2, 2, 2, 2])));
        let grouped = conv_attrs(2, &[], &[], &[1, 1, 1, 1]);
        assert!(!yes(&[1, 128, 8, 8], &[32, 64, 3, 3], &grouped));
        assert!(!yes(&x, &[16, 64, 5, 5], &same));
        let three_d = conv_attrs(1, &[], &[], &[0; 6]);
        assert!(!yes(&[1, 64, 4, 8, 8], &[16, 64, 1, 3, 3], &three_d));
        // Through the public entry, with prepared weights: the same bits as packed per call,
        // for either variant, and each run of one prepared conv with the other plane size
        // (a variant's weights in their own slot).
        let w = noise(&[48, 64, 3, 3], 5);
        let prep = prepare(&same, &crate::tensor::Tensor::F32(w.clone()));
        for (side, scale) in [(9, 1e-6), (30, 4e-6), (9, 1e-6)] {
            let x = noise(&[1, 64, side, side], 4);
            let plain = conv_f32_with(&x, &w, None, &same, None, Activation::NONE).unwrap();
            let with = conv_f32_with(&x, &w, None, &same, prep.as_ref(), Activation::NONE).unwrap();
            assert_eq!(plain, with, "{side}x{side}");
            let want = conv_reference(&x, &w, None, &same).unwrap();
            let tol = 64.0 * (64 * 9) as f32 * scale;
            assert!(plain
                .iter()
                .zip(want.iter())
                .all(|(g, r)| (g - r).abs() <= tol));
        }
    }

    #[test]
    fn same_bits_for_any_thread_count() {
        // One unit (spread over channels and ξ) and many units (one task each), of both
        // variants.
        for xs in [
            [1, 32, 14, 14],
            [2, 32, 26, 26],
            [1, 32, 28, 28],
            [2, 32, 60, 60],
        ] {
            let ws = [40, 32, 3, 3];
            let p = plan(
                &xs,
                &ws,
                Some(&[40]),
                &conv_attrs(1, &[], &[], &[1, 1, 1, 1]),
            )
            .unwrap();
            let (x, w, b) = (noise(&xs, 6), noise(&ws, 7), noise(&[40], 8));
            for cols in [false, true] {
                let one = on_threads(1, || run(&p, &x, &w, &b, cols, Activation::RELU));
                let two = on_threads(2, || run(&p, &x, &w, &b, cols, Activation::RELU));
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&one), bits(&two), "{xs:?} cols {cols}");
            }
        }
    }

    /// F(4x4, 3x3)'s weight transform against `G g G^T` as two f64 matrix products.
    #[test]
    fn weight_transform_f4_is_g_g_gt() {
        let g: Vec<f32> = [1.0, -2.0, 3.5, 0.25, 5.0, -6.0, 7.0, 8.0, -0.5].to_vec();
        let gm = [
            [0.25, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        let got = super::super::winograd4::transformed(&g);
        for i in 0..6 {
            for j in 0..6 {
                let mut want = 0f64;
                for r in 0..3 {
                    for s in 0..3 {
                        want += gm[i][r] * g[3 * r + s] as f64 * gm[j][s];
                    }
                }
                let d = (got[6 * i + j] as f64 - want).abs();
                assert!(
                    d <= want.abs() * 1e-7 + 1e-12,
                    "({i}, {j}): {} vs {want}",
                    got[6 * i + j]
                );
            }
        }
    }

    /// The weight transform against `G g G^T` written out for one kernel.
    #[test]
    fn weight_transform_is_g_g_gt() {
        let g: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        // G g: [1 2 3], [6 7.5 9], [2 2.5 3], [7 8 9]; then the same on each row's columns.
        let want = [
            [1.0, 3.0, 1.0, 3.0],
            [6.0, 11.25, 3.75, 9.0],
            [2.0, 3.75, 1.25, 3.0],
            [7.0, 12.0, 4.0, 9.0],
        ];
        for (i, row) in want.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(transformed(&g)[4 * i + j], v, "({i}, {j})");
            }
        }
    }
}
