//! Depthwise conv: every input channel convolved on its own (group == C), with M = C * mult
//! output channels, output channel `o` reading input channel `o / mult`. MobileNet,
//! EfficientNet and ShuffleNet spend much of their time here; as a GEMM each group would
//! be a single-row product, so this is a direct kernel instead.
//!
//! Per (batch, output channel) plane, one rayon task (fixed boundaries: results do not
//! depend on the thread count):
//! 1. The input plane is copied once into a zero-padded scratch volume whose rows are split
//!    into `stride` column phases (phase r holds padded columns r, r + s, r + 2s, ...). Every
//!    kernel tap then reads a contiguous run of the scratch for consecutive output columns,
//!    whatever the stride, dilation or padding: no bounds checks in the inner loop.
//! 2. Output columns are computed LANES at a time: the taps are summed into a fixed-size
//!    accumulator array (registers, once vectorized) and the row is written once, where an
//!    axpy per tap would read and write the row kh * kw times. A 2-D plane with short
//!    output rows (7x7, 14x14, 28x28; any stride) is computed as one run along the padded
//!    rows instead ([`flat_run`]), so its blocks hold 64 outputs, not one 16-column block
//!    per row.
//!
//! Per output element the taps are summed in (depth, row, column) order starting from +0.0,
//! each as a separate multiply and add (no FMA, so every instruction set rounds alike), and
//! the bias is added last. Padding taps add `w * 0.0`, which leaves a sum unchanged.
//!
//! Step 2 has two forms, picked once per conv as a [`Path`]: explicit AVX-512F intrinsics for
//! the common 2-D shapes (`depthwise_avx512.rs`: several output rows per pass, masked row
//! tails), and the portable blocks below, autovectorized, for every other shape and CPU. Both
//! sum in the order above, so they give the same bits.
//!
//! On AVX2 CPUs 2-D planes up to 112x112 skip all of this: `depthwise_interleaved.rs`
//! computes eight channels at a time, their planes interleaved so that a register holds one
//! position of all eight, again with the same sums.

use super::blocked::Layout;
#[cfg(target_arch = "x86_64")]
use super::depthwise_avx2;
use super::depthwise_avx512;
#[cfg(target_arch = "x86_64")]
use super::depthwise_interleaved;
use super::gemm::SendPtr;
use super::im2col::copy_short;
use super::sgemm::Activation;
use super::uninit;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output columns per accumulator block: one AVX-512 register, two AVX2 ones.
pub(super) const LANES: usize = 16;
/// Scratch beyond the padded plane, read (never used) by a row's last, partial block.
pub(super) const SLACK: usize = 4 * LANES;

#[cfg(target_arch = "x86_64")]
const PLANES: (Layout, Layout) = (Layout::Planes, Layout::Planes);

/// Whether the depthwise conv `g` can read and write blocked values (`blocked.rs`): on the
/// interleaved path, one channel per group, a multiple of 8 channels.
pub(super) fn blocked_capable(g: &Geometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Path::choose(g) == Path::Interleaved && depthwise_interleaved::blocked_io(g)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// [`depthwise`] with the input and output each in planes or blocked (`io`); only where
/// [`blocked_capable`].
pub(super) fn depthwise_blocked(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [MaybeUninit<f32>],
    io: (Layout, Layout),
) {
    assert!(blocked_capable(g), "not a blocked depthwise conv: {g:?}");
    if g.out_plane() == 0 || g.n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `blocked_capable` checked the CPU and shape.
    unsafe {
        depthwise_interleaved::depthwise(g, x, w, bias, act, out, io)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, w, bias, act, out, io);
}

/// Which code computes the planes of one depthwise conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Path {
    /// `depthwise_avx512.rs` (x86-64 with AVX-512F, shapes it [supports](depthwise_avx512::supports)).
    Avx512,
    /// `depthwise_interleaved.rs`: eight channels at a time (x86-64 with AVX2, 2-D planes
    /// up to 112x112 it [supports](depthwise_interleaved::supports)).
    Interleaved,
    /// [`plane`] with the AVX2 blocks of `depthwise_avx2.rs` (x86-64 with AVX2, any shape).
    Avx2,
    /// [`plane`] with the portable blocks, for any CPU.
    Portable,
}

impl Path {
    /// The fastest path for `g` on this CPU.
    pub(super) fn choose(g: &Geometry) -> Path {
        // The interleaved path first, also on AVX-512 CPUs, where it runs groups of 16
        // channels in zmm vectors (and reads and writes blocked values): against the
        // AVX-512 plane path, MobileNet v2 0.92 of the time, EfficientNet-B0 0.97,
        // ShuffleNet v2 0.99 (4 alternating rounds of 15 runs, paired medians).
        if Path::interleaved_takes(g) {
            Path::Interleaved
        } else if depthwise_avx512::available() && depthwise_avx512::supports(g) {
            Path::Avx512
        } else if Path::avx2_available() {
            Path::Avx2
        } else {
            Path::Portable
        }
    }

    fn interleaved_takes(g: &Geometry) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            depthwise_interleaved::available() && depthwise_interleaved::supports(g)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = g;
            false
        }
    }

    fn avx2_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            depthwise_avx2::available()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// A depthwise conv's geometry, lifted to 3 spatial dims (leading dims of size 1).
#[derive(Clone, Debug)]
pub struct Geometry {
    pub n: usize,
    pub c: usize,
    /// Output channels per input channel.
    pub mult: usize,
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub strides: [usize; 3],
    pub dilations: [usize; 3],
    /// Leading pads (the trailing ones follow from the output size).
    pub pads: [usize; 3],
    pub output: [usize; 3],
}

/// The padded, phase-split scratch layout of one input plane: padded column `c` of a row
/// is element `c / sw` of the row's column phase `c % sw`. Two arrangements of the rows:
/// - the row layout ([`Geometry::layout`]): padded rows one after another, each row's
///   phases side by side (`plen` apart), so a row is `sw * plen` elements;
/// - the flat layout ([`Geometry::flat_layout`], for [`flat_run`]s): the plane is further
///   split by row phase (`r % sh`), each column phase holding its row phases one after the
///   other, each a run of rows `plen` apart. Output row `oy` then reads the rows
///   `oy + (b * dh) / sh` of one (row, column) phase: consecutive output rows are `plen`
///   apart whatever the stride, so a flat run wastes only the few padded columns per row.
///
/// Both agree for stride 1.
pub(super) struct Padded {
    /// Padded height (rows per depth slice, all row phases).
    pub hp: usize,
    /// Elements per column phase of one padded row.
    pub plen: usize,
    /// Distance between consecutive rows of one row phase: `sw * plen` in the row layout,
    /// `plen` in the flat layout.
    pub row: usize,
    pub len: usize,
    /// Distance between column phases.
    col_phase: usize,
    /// Row phases (1 in the row layout, `sh` in the flat one) and the distance between them.
    row_phases: (usize, usize),
    /// Distance between depth slices.
    depth: usize,
}

impl Padded {
    /// Offset of padded row `r` of depth slice `z`, column phase 0 (phase `p` starts
    /// `p * col_phase` later).
    #[inline(always)]
    fn at(&self, z: usize, r: usize) -> usize {
        let (rp, rp_dist) = self.row_phases;
        // Constant divisors for the usual strides: a division per padded row took about a
        // tenth of the perf samples of a 14x14 stride-2 conv (576 channels).
        let (q, ph) = match rp {
            1 => (r, 0),
            2 => (r / 2, r % 2),
            _ => (r / rp, r % rp),
        };
        z * self.depth + ph * rp_dist + q * self.row
    }

    /// Offset of padded column `c` within its row.
    #[inline(always)]
    fn col(&self, c: usize, sw: usize) -> usize {
        (c % sw) * self.col_phase + c / sw
    }
}

impl Geometry {
    fn in_plane(&self) -> usize {
        self.input.iter().product()
    }

    fn out_plane(&self) -> usize {
        self.output.iter().product()
    }

    fn k_plane(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Extent of axis `i` once padded: enough for every tap of every output position.
    pub(super) fn padded(&self, i: usize) -> usize {
        let reach =
            (self.output[i] - 1) * self.strides[i] + (self.kernel[i] - 1) * self.dilations[i] + 1;
        reach.max(self.input[i] + self.pads[i])
    }

    /// The row layout (see [`Padded`]).
    pub(super) fn layout(&self) -> Padded {
        let (dp, hp, wp) = (self.padded(0), self.padded(1), self.padded(2));
        let plen = wp.div_ceil(self.strides[2]);
        let row = self.strides[2] * plen;
        Padded {
            hp,
            plen,
            row,
            len: dp * hp * row,
            col_phase: plen,
            row_phases: (1, 0),
            depth: hp * row,
        }
    }

    /// The flat layout (see [`Padded`]).
    fn flat_layout(&self) -> Padded {
        let (dp, hp, wp) = (self.padded(0), self.padded(1), self.padded(2));
        let [_, sh, sw] = self.strides;
        let plen = wp.div_ceil(sw);
        let rp_dist = hp.div_ceil(sh) * plen;
        let col_phase = sh * rp_dist;
        Padded {
            hp,
            plen,
            row: plen,
            len: dp * sw * col_phase,
            col_phase,
            row_phases: (sh, rp_dist),
            depth: sw * col_phase,
        }
    }
}

/// `out` (`[N, C * mult, output...]`) = depthwise conv of `x` (`[N, C, input...]`) with `w`
/// (`[C * mult, 1, kernel...]`) plus `bias` (`[C * mult]`).
pub fn depthwise(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [MaybeUninit<f32>],
) {
    depthwise_on(Path::choose(g), g, x, w, bias, act, out);
}

/// [`depthwise`] on a given path (the tests compare the paths).
pub(super) fn depthwise_on(
    path: Path,
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [MaybeUninit<f32>],
) {
    let (in_plane, out_plane, kp) = (g.in_plane(), g.out_plane(), g.k_plane());
    let m = g.c * g.mult;
    if out_plane == 0 || m == 0 || g.n == 0 {
        return;
    }
    debug_assert_eq!(out.len(), g.n * m * out_plane);
    if path == Path::Interleaved {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Path::choose` (or the test asking for it) checked the CPU and shape.
        unsafe {
            depthwise_interleaved::depthwise(g, x, w, bias, act, out, PLANES)
        };
        return;
    }
    // The per-plane paths write rows as `&mut [f32]`: filled first (`uninit`).
    let out = uninit::filled(out);
    // The AVX-512 path lays out its planes itself.
    let taps = (path != Path::Avx512).then(|| Taps::of(g));
    let outp = SendPtr(out.as_mut_ptr());
    (0..g.n * m).into_par_iter().for_each_init(
        <(Vec<f32>, Vec<f32>)>::default,
        |(scratch, flat), p| {
            let (b, o) = (p / m, p % m);
            let xc = &x[(b * g.c + o / g.mult) * in_plane..][..in_plane];
            let wk = &w[o * kp..(o + 1) * kp];
            let bv = bias.map_or(0.0, |bias| bias[o]);
            // SAFETY: output plane `p` is written by this task only, and lies within `out`
            // (p < N * M).
            let dst =
                unsafe { std::slice::from_raw_parts_mut(outp.get().add(p * out_plane), out_plane) };
            match path {
                // SAFETY: `Path::choose` (or the test asking for it) checked the CPU and shape.
                Path::Avx512 => unsafe {
                    depthwise_avx512::plane(g, xc, wk, bv, act, scratch, dst)
                },
                // SAFETY: as above.
                Path::Avx2 => unsafe {
                    let t = taps.as_ref().expect("computed for this path");
                    plane_avx2(g, t, xc, wk, (bv, act), (scratch, flat), dst)
                },
                Path::Interleaved => unreachable!("handled above"),
                Path::Portable => {
                    let t = taps.as_ref().expect("computed for this path");
                    plane::<Portable>(g, t, xc, wk, (bv, act), (scratch, flat), dst)
                }
            }
        },
    );
}

/// [`plane`] with the AVX2 blocks, compiled for AVX2 (the crate is built for baseline
/// x86-64).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn plane_avx2(
    g: &Geometry,
    taps: &Taps,
    x: &[f32],
    w: &[f32],
    epi: (f32, Activation),
    scratch: (&mut Vec<f32>, &mut Vec<f32>),
    dst: &mut [f32],
) {
    plane::<depthwise_avx2::Avx2>(g, taps, x, w, epi, scratch, dst);
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn plane_avx2(
    _: &Geometry,
    _: &Taps,
    _: &[f32],
    _: &[f32],
    _: (f32, Activation),
    _: (&mut Vec<f32>, &mut Vec<f32>),
    _: &mut [f32],
) {
    unreachable!("the AVX2 path is only chosen on x86-64")
}

/// `src`'s (even, odd) pairs into `even` and `odd`: a de-interleave the compiler vectorizes.
#[inline(always)]
pub(super) fn split_pairs(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks_exact(2)) {
        *e = pair[0];
        *o = pair[1];
    }
}

/// `src`, the columns `lo ..` of a row, into the row's two column phases: column `r` goes
/// to `even[r / 2]` or `odd[r / 2]`; the (even, odd) pairs through `split_pairs` (the
/// portable or an AVX-512 de-interleave).
#[inline(always)]
pub(super) fn split_row(
    src: &[f32],
    lo: usize,
    even: &mut [f32],
    odd: &mut [f32],
    split_pairs: &impl Fn(&[f32], &mut [f32], &mut [f32]),
) {
    let (mut r, mut src) = (lo, src);
    if r % 2 == 1 {
        let Some((&first, rest)) = src.split_first() else {
            return;
        };
        odd[r / 2] = first;
        (r, src) = (r + 1, rest);
    }
    let pairs = src.len() / 2;
    let j = r / 2;
    split_pairs(
        &src[..2 * pairs],
        &mut even[j..][..pairs],
        &mut odd[j..][..pairs],
    );
    if src.len() % 2 == 1 {
        even[j + pairs] = src[2 * pairs];
    }
}

/// Copies input plane `x` into the padded, phase-split `scratch` (see the module doc), with
/// `split_pairs(src, even, odd)` for the de-interleave of stride 2 (`src` in (even, odd)
/// pairs, as many as `even` and `odd` hold at least).
///
/// `scratch` is empty or holds a previous plane of the same conv (one `Vec` per rayon task
/// of one [`depthwise_on`] call): every plane writes the same interior positions, so the
/// zero padding is written once, not per plane.
#[inline(always)]
pub(super) fn pad_plane(
    g: &Geometry,
    lay: &Padded,
    x: &[f32],
    scratch: &mut Vec<f32>,
    split_pairs: impl Fn(&[f32], &mut [f32], &mut [f32]),
) {
    let [id, ih, iw] = g.input;
    let [pd, ph, pw] = g.pads;
    let sw = g.strides[2];
    // The slack lets the last block of a row read a whole block (see `plane`).
    if scratch.len() != lay.len + SLACK {
        scratch.clear();
        scratch.resize(lay.len + SLACK, 0.0);
    }
    for z in 0..id {
        for y in 0..ih {
            let src = &x[(z * ih + y) * iw..][..iw];
            let dst = &mut scratch[lay.at(z + pd, y + ph)..];
            match sw {
                // Not `copy_from_slice`: a libc memmove call per row of 7 to 112 floats
                // cost a sixth of a 28x28 conv's time.
                1 => copy_short(&mut dst[pw..pw + iw], src),
                2 => {
                    // Padded column c = k + pw goes to phase c % 2, index c / 2.
                    let (even, odd) = dst.split_at_mut(lay.col_phase);
                    split_row(src, pw, &mut even[..lay.plen], odd, &split_pairs);
                }
                _ => {
                    for (k, &v) in src.iter().enumerate() {
                        dst[lay.col(k + pw, sw)] = v;
                    }
                }
            }
        }
    }
}

/// How [`plane`] computes a block of `NB * LANES` consecutive output columns of one row:
/// the portable [`block`], or explicit AVX2 (`depthwise_avx2.rs`, where LLVM leaves the
/// portable block scalar), summing in the same order.
pub(super) trait Blocks {
    /// [`split_pairs`], the stride-2 de-interleave of [`pad_plane`] (LLVM leaves it scalar
    /// when compiled for AVX2).
    #[inline(always)]
    fn split_pairs(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        split_pairs(src, even, odd)
    }

    /// Writes the first `row.len()` (at most `NB * LANES`) columns; the arguments as
    /// [`block`]'s.
    fn block<const NB: usize>(
        row: &mut [f32],
        xp: &[f32],
        w: &[f32],
        col_off: &[usize],
        geo: [usize; 2],
        tap_row: impl Fn(usize, usize) -> usize,
        epi: (f32, Activation),
    );
}

/// [`block`] as written, autovectorized where LLVM manages.
struct Portable;

impl Blocks for Portable {
    #[inline(always)]
    fn block<const NB: usize>(
        row: &mut [f32],
        xp: &[f32],
        w: &[f32],
        col_off: &[usize],
        geo: [usize; 2],
        tap_row: impl Fn(usize, usize) -> usize,
        epi: (f32, Activation),
    ) {
        block::<NB>(row, xp, w, col_off, geo, tap_row, epi)
    }
}

/// `NB * LANES` consecutive output columns of one row, of which the first `row.len()` (at
/// most all) are written; `tap_row(a, b)` is the scratch offset of the first column's tap row (a, b).
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
    let mut acc = [[0f32; LANES]; NB];
    for a in 0..kd {
        for b in 0..kh {
            let r = tap_row(a, b);
            let wr = &w[(a * kh + b) * kw..][..kw];
            for (&wv, &co) in wr.iter().zip(col_off) {
                let xs = &xp[r + co..][..NB * LANES];
                for (acc, xs) in acc.iter_mut().zip(xs.chunks_exact(LANES)) {
                    for i in 0..LANES {
                        acc[i] += wv * xs[i];
                    }
                }
            }
        }
    }
    // `row` may be shorter than the block: the last block of a row.
    for (o, &v) in row.iter_mut().zip(acc.as_flattened()) {
        *o = act.apply(v + bias);
    }
}

/// Most outputs a plane computes as one flat run (see [`flat_run`]).
const FLAT_MAX: usize = 1024;

/// For a 2-D plane whose rows are short, the flat layout and the length of the flat run:
/// output positions counted along the layout's padded rows (`lay.row` apart), so that
/// output `(oy, ox)` is run element `oy * lay.row + ox` and each tap reads the scratch at a
/// fixed offset from it, as within one row (with stride 2 too: see [`Padded`]). Computed as
/// one long row, in blocks of 64 (eight independent sums) where a row of 7 or 14 outputs
/// alone would run one 16-column block of two sums waiting on each other's adds; the
/// columns past `ow` of each padded row are computed and dropped. The run stops at the last
/// output, so its reads stay inside the scratch and its slack.
fn flat_run(g: &Geometry) -> Option<(Padded, usize)> {
    if g.output.contains(&0) {
        return None;
    }
    let [od, oh, ow] = g.output;
    let lay = g.flat_layout();
    let n = (oh - 1) * lay.row + ow;
    (od == 1 && ow < 4 * LANES && n <= FLAT_MAX).then_some((lay, n))
}

/// What every plane of one conv shares, worked out once per conv rather than per plane
/// (no time difference measurable on this machine; simpler than per-plane offset arrays).
pub(super) struct Taps {
    lay: Padded,
    /// The flat run's length, or `None`: row by row.
    flat: Option<usize>,
    /// Scratch offset of tap row (a, b) from output (0, 0, 0)'s, at `a * kh + b`.
    rows: Vec<usize>,
    /// Scratch offset of kernel column `cc` within a row.
    cols: Vec<usize>,
}

impl Taps {
    fn of(g: &Geometry) -> Taps {
        let (lay, flat) = match flat_run(g) {
            Some((lay, n)) => (lay, Some(n)),
            None => (g.layout(), None),
        };
        let [kd, kh, kw] = g.kernel;
        let [dd, dh, dw] = g.dilations;
        let rows = (0..kd * kh)
            .map(|ab| lay.at(ab / kh * dd, ab % kh * dh))
            .collect();
        let cols = (0..kw).map(|cc| lay.col(cc * dw, g.strides[2])).collect();
        Taps {
            lay,
            flat,
            rows,
            cols,
        }
    }
}

/// One (batch, output channel) plane; see the module doc. `scratch` is the padded input's
/// and the flat run's, both reused between planes of a conv.
#[inline(always)]
fn plane<B: Blocks>(
    g: &Geometry,
    taps: &Taps,
    x: &[f32],
    w: &[f32],
    epi: (f32, Activation),
    (scratch, flat): (&mut Vec<f32>, &mut Vec<f32>),
    dst: &mut [f32],
) {
    let lay = &taps.lay;
    pad_plane(g, lay, x, scratch, B::split_pairs);
    let xp: &[f32] = scratch;
    let [kd, kh, _] = g.kernel;
    let [sd, sh, _] = g.strides;
    let [od, oh, ow] = g.output;
    let (cols, rows) = (&taps.cols[..], &taps.rows[..]);
    if let Some(n) = taps.flat {
        // Every element is written before it is read: no zeroing between planes.
        flat.resize(n, 0.0);
        let flat = &mut flat[..n];
        run::<B>(flat, xp, w, cols, [kd, kh], |a, b| rows[a * kh + b], epi);
        for (oy, row) in dst.chunks_exact_mut(ow).enumerate() {
            copy_short(row, &flat[oy * lay.row..][..ow]);
        }
        return;
    }
    // The row layout: rows `lay.row` apart, depth slices `lay.depth`.
    debug_assert_eq!(lay.row_phases.0, 1);
    for oz in 0..od {
        for oy in 0..oh {
            let row = &mut dst[(oz * oh + oy) * ow..][..ow];
            let base = oz * sd * lay.depth + oy * sh * lay.row;
            run::<B>(
                row,
                xp,
                w,
                cols,
                [kd, kh],
                |a, b| base + rows[a * kh + b],
                epi,
            );
        }
    }
}

/// The outputs `out`, consecutive columns of one row (or a flat run), output `j` reading
/// tap row `(a, b)` at `tap(a, b) + j`. Four independent accumulators where the run allows:
/// one alone would wait on the latency of each add (4 cycles) for every tap. The last
/// block is computed whole (its extra columns read the scratch's slack) and written in part.
#[inline(always)]
fn run<B: Blocks>(
    out: &mut [f32],
    xp: &[f32],
    w: &[f32],
    col_off: &[usize],
    geo: [usize; 2],
    tap: impl Fn(usize, usize) -> usize,
    epi: (f32, Activation),
) {
    let mut j0 = 0;
    while j0 < out.len() {
        let at = |a, b| tap(a, b) + j0;
        let dst = &mut out[j0..];
        // (No 3-register block: LLVM leaves that one scalar.)
        match dst.len().div_ceil(LANES) {
            1 => B::block::<1>(dst, xp, w, col_off, geo, at, epi),
            2 => B::block::<2>(dst, xp, w, col_off, geo, at, epi),
            _ => B::block::<4>(dst, xp, w, col_off, geo, at, epi),
        }
        j0 += 4 * LANES;
    }
}

#[cfg(test)]
mod tests {
    //! Through `conv::conv_f32`, which sends group == C convs here, against the f64 direct
    //! loop `conv::conv_reference`. (More geometries, through the same path, are in
    //! conv.rs's `depthwise_matches_reference` and tests/conv_properties.rs.)
    use crate::ir::op::ConvAttrs;
    use crate::kernels::conv::{conv_f32, conv_reference};
    use crate::kernels::test_data::conv_attrs as attrs;
    use ndarray::{ArrayD, IxDyn};

    fn data(shape: &[usize], seed: u64) -> ArrayD<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        ArrayD::from_shape_fn(IxDyn(shape), |_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
    }

    fn check(xs: &[usize], ws: &[usize], a: &ConvAttrs) {
        let (x, w, b) = (data(xs, 1), data(ws, 2), data(&[ws[0]], 3));
        let got = conv_f32(&x, &w, Some(&b), a).unwrap();
        let want = conv_reference(&x, &w, Some(&b), a).unwrap();
        assert_eq!(got.shape(), want.shape(), "{xs:?} {ws:?} {a:?}");
        for (g, r) in got.iter().zip(want.iter()) {
            assert!(
                (g - r).abs() <= 1e-5 * (1.0 + r.abs()),
                "{g} vs {r}: {xs:?} {ws:?} {a:?}"
            );
        }
    }

    /// Row widths around the block sizes (1, 15, 16, 17, 33, 64, 65, 100 output columns),
    /// every stride phase and pad parity, channel multipliers 1 to 3.
    #[test]
    fn matches_reference_across_block_edges_and_multipliers() {
        for ow in [1, 15, 16, 17, 33, 64, 65, 100] {
            for (s, d, p) in [
                (1, 1, [1, 1]),
                (2, 1, [1, 0]),
                (2, 1, [0, 2]),
                (3, 2, [3, 1]),
                (1, 2, [2, 2]),
            ] {
                // Input width giving `ow` output columns with kernel 3.
                let iw = (ow - 1) * s + 2 * d + 1 - p[0] - p[1];
                for mult in [1, 2, 3] {
                    let a = attrs(3, &[1, s], &[1, d], &[1, p[0], 1, p[1]]);
                    check(&[2, 3, 5, iw], &[3 * mult, 1, 3, 3], &a);
                }
            }
        }
        // 5x5 (EfficientNet), stride 2, on a plane with a partial last block.
        check(
            &[1, 4, 29, 37],
            &[4, 1, 5, 5],
            &attrs(4, &[2, 2], &[], &[2, 2, 2, 2]),
        );
    }

    /// Planes with short rows run as one flat run (`flat_run`), wide ones row by row: the
    /// same plane on the left of one 80 columns per unit of stride (zeros beyond, where the
    /// narrow one has padding) gives the bits of its columns. Strides 1 to 3, odd and even
    /// sizes (so the row and column phases differ in length), kernels 1 to 5, dilation.
    #[test]
    fn flat_run_gives_the_bits_of_rows() {
        for (k, s, d, p, h, w) in [
            (3, 1, 1, 1, 7, 7),
            (3, 1, 1, 1, 14, 14),
            (5, 1, 1, 2, 7, 7),
            (3, 1, 2, 2, 9, 12),
            (3, 1, 1, 0, 28, 28),
            (1, 1, 1, 0, 5, 3),
            (3, 2, 1, 1, 14, 14),
            (3, 2, 1, 1, 28, 28),
            (3, 2, 1, 1, 56, 56),
            (5, 2, 1, 2, 14, 14),
            (5, 2, 1, 2, 15, 13),
            (3, 2, 2, 1, 11, 9),
            (3, 3, 1, 0, 13, 14),
            (1, 2, 1, 0, 7, 7),
        ] {
            let a = attrs(4, &[s, s], &[d, d], &[p, p, p, p]);
            let (x, wt, b) = (
                data(&[2, 4, h, w], 7),
                data(&[8, 1, k, k], 8),
                data(&[8], 9),
            );
            let wide = ArrayD::from_shape_fn(IxDyn(&[2, 4, h, 80 * s]), |i| {
                if i[3] < w {
                    x[[i[0], i[1], i[2], i[3]]]
                } else {
                    0.0
                }
            });
            let narrow = conv_f32(&x, &wt, Some(&b), &a).unwrap();
            let g = super::Geometry {
                n: 2,
                c: 4,
                mult: 2,
                input: [1, h, w],
                kernel: [1, k, k],
                strides: [1, s, s],
                dilations: [1, d, d],
                pads: [0, p, p],
                output: [1, narrow.shape()[2], narrow.shape()[3]],
            };
            assert!(super::flat_run(&g).is_some(), "{g:?} runs flat");
            let wide = conv_f32(&wide, &wt, Some(&b), &a).unwrap();
            assert!(wide.shape()[3] >= 64, "the wide plane runs row by row");
            for (i, v) in narrow.indexed_iter() {
                let u = wide[[i[0], i[1], i[2], i[3]]];
                assert_eq!(
                    v.to_bits(),
                    u.to_bits(),
                    "k {k} s {s} d {d} p {p} {h}x{w} at {i:?}"
                );
            }
        }
    }

    #[test]
    fn same_bits_for_any_thread_count_with_multiplier() {
        let (x, w, b) = (
            data(&[2, 6, 23, 70], 4),
            data(&[12, 1, 3, 3], 5),
            data(&[12], 6),
        );
        let a = attrs(6, &[2, 1], &[], &[1, 1, 1, 1]);
        let run = |t| {
            crate::kernels::test_data::on_threads(t, || conv_f32(&x, &w, Some(&b), &a).unwrap())
        };
        assert_eq!(run(1), run(2));
    }
}
