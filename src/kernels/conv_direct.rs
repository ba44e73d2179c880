//! Direct conv for convs with few input channels: the stems of image nets, which read the
//! 3 colour planes through a 7x7 or 3x3 kernel at stride 2.
//!
//! Through im2col these are short products (27 to 147 reduction steps) over a patch matrix
//! 9 to 49 times the input, and ran at 12 to 35 GFLOP/s, about half onnxruntime's speed
//! (the slowest node of SqueezeNet, ShuffleNet and MobileNet). Here the output is computed
//! in place instead: 16 consecutive positions of one output row (two 8-float vectors)
//! times 6 output channels in 12 registers (AVX2; on AVX-512, 32 positions x 12 channels in
//! 24, `conv_direct_avx512.rs`), each tap adding one weight (broadcast) times the 16 input
//! values it reads. To make those 16 values one contiguous run whatever the
//! stride, the input is first copied into a zero-padded buffer with each row split by
//! column phase (`x mod stride`): column `X` of a padded row is element `X / s` of phase
//! `X mod s`, so positions `x .. x + 16` at tap column `kx` read elements
//! `x + (kx * d) / s ..` of phase `(kx * d) mod s`.
//!
//! Grouped convs with at most 16 input channels per group and rows of 28 or more (RegNet's
//! 3x3 convs of 16 channels per group; on AVX2 CPUs `conv_lanes.rs` takes those whose
//! groups have a multiple of 8 output channels) run group by group: a group's taps start at its first
//! input channel, its output channels form their own blocks.
//!
//! 1x1 stride-1 unpadded convs with few input channels (up to 32: MobileNet's and
//! EfficientNet's 16 -> 96 expansions on 112x112) are the same products with one tap per
//! channel and rows of the whole plane; they read the input in place.
//!
//! Each output is the FMA chain `w * x` over the taps in im2col's order (channel, then
//! kernel row, then kernel column) from +0.0, then `+ bias`, then the clamp: the same
//! operations in the same order as the sgemm's micro-kernels, so the same bits as the
//! im2col path, on any number of threads (every output is computed by one task alone).

use super::conv::{with_pack_buffer, Plan};
use super::gemm::SendPtr;
use super::pool_flat::strided_copy;
use super::sgemm::{Activation, Kernel};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Most input channels for this path. With more, im2col's patch matrix is reused by
/// enough output channels, and the packed sgemm is as fast.
const MAX_INPUTS: usize = 4;

/// The vector instructions a conv runs on, and the register block each is built for: up to
/// 2 vectors of consecutive positions times [`Isa::channels`] output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    /// AVX2 + FMA: 8-float vectors; 6 channels x 2 vectors is 12 accumulators, plus 2 input
    /// vectors and a broadcast weight, within the 16 ymm registers (4 x 3, one more input
    /// vector, made LLVM spill an accumulator in the tap loop, and the store and reload put
    /// the loop at the speed of the im2col path).
    Avx2,
    /// AVX-512F: 16-float vectors; 12 channels x 2 vectors is 24 accumulators of the 32 zmm
    /// registers (see `conv_direct_avx512.rs`).
    Avx512,
}

impl Isa {
    /// The widest this CPU runs (the sgemm's choice), if any.
    fn detect() -> Option<Isa> {
        match Kernel::detect() {
            Kernel::Avx512 => Some(Isa::Avx512),
            Kernel::Avx2 => Some(Isa::Avx2),
            Kernel::Portable => None,
        }
    }

    /// Every one this CPU runs (the tests compare them with the im2col path).
    #[cfg(test)]
    fn available() -> Vec<Isa> {
        let ks = Kernel::available();
        [(Kernel::Avx2, Isa::Avx2), (Kernel::Avx512, Isa::Avx512)]
            .into_iter()
            .filter(|(k, _)| ks.contains(k))
            .map(|(_, i)| i)
            .collect()
    }

    /// Floats per vector.
    const fn lanes(self) -> usize {
        match self {
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
        }
    }

    /// Output channels per register block (the weights are regrouped in blocks of this).
    pub(super) const fn channels(self) -> usize {
        match self {
            Isa::Avx2 => 6,
            Isa::Avx512 => 12,
        }
    }
}

/// Most input channels per group of a grouped conv on this path (RegNet's and ResNeXt's
/// 3x3 convs of 16 channels per group). Through im2col each group is a product of only
/// `M / group` rows, so its patch matrix is packed for few uses: 16 -> 16 per group on
/// 28x28, 3x3, ran at 35 GFLOP/s and spent a sixth of RegNet's time packing.
const MAX_GROUP_INPUTS: usize = 16;

/// Shortest output rows of a grouped conv on this path. In RegNet-X 400MF (1 thread, in
/// the net) it took 0.62 ms against im2col's 0.81 on 56-wide rows (stride 2), 0.37 against
/// 0.41 and 0.26 against 0.32 on 28-wide ones, but 0.35 against 0.27 on 14-wide rows at
/// stride 2 (a 16-position block of which 14 are stored, channels in blocks of 6, 6, 4).
const MIN_GROUPED_ROW: usize = 28;

/// Most input channels of a [`flat`] conv on this path: its reduction is that short, and
/// through the sgemm such a product is mostly tile overhead (16 -> 96 channels on 112x112
/// ran at 15 GFLOP/s).
const MAX_FLAT_INPUTS: usize = 32;

/// Positions per task of a [`flat`] conv.
const FLAT_CHUNK: usize = 512;

/// Whether the conv is a 1x1, stride-1, unpadded one: then the plane is one long row, read
/// in place when it is whole vectors long (else from a copy with planes padded to whole
/// vectors, so that every vector read is inside the buffer).
fn flat(p: &Plan) -> bool {
    p.kernel == [1; 3] && p.strides == [1; 3] && p.pads == [0; 3] && p.input == p.output
}

/// Whether the conv takes this path, on a CPU with AVX2 and FMA: [`flat`] with one group
/// and at most [`MAX_FLAT_INPUTS`] input channels; or at most 2 spatial dims (depth 1,
/// kernel depth 1), output rows of at least 8 positions, and either at most [`MAX_INPUTS`]
/// input channels in one group or several groups of at most [`MAX_GROUP_INPUTS`] each.
pub(super) fn applies(p: &Plan) -> bool {
    if Isa::detect().is_none() {
        return false;
    }
    if flat(p) {
        return p.group == 1 && p.c <= MAX_FLAT_INPUTS;
    }
    let narrow = match p.group {
        1 => p.c <= MAX_INPUTS,
        _ => p.cg() <= MAX_GROUP_INPUTS && p.output[2] >= MIN_GROUPED_ROW,
    };
    narrow && p.input[0] == 1 && p.kernel[0] == 1 && p.output[0] == 1 && p.output[2] >= 8
}

/// The padded, phase-split input of one batch item: `C x rows x s x wq` floats.
#[derive(Clone, Copy, Debug)]
struct Padded {
    /// Padded rows: the rows the output rows' taps read.
    rows: usize,
    /// Column stride `s` (the number of phases).
    s: usize,
    /// Elements per phase: the output row rounded up to whole vectors (of `lanes`) plus
    /// the kernel's reach, so every lane of every block reads inside the buffer.
    wq: usize,
}

impl Padded {
    fn of(p: &Plan, lanes: usize) -> Padded {
        let [_, oh, ow] = p.output;
        let [_, kh, kw] = p.kernel;
        let [_, sh, s] = p.strides;
        let [_, dh, dw] = p.dilations;
        Padded {
            rows: (oh - 1) * sh + (kh - 1) * dh + 1,
            s,
            wq: ow.next_multiple_of(lanes) + (kw - 1) * dw / s + 1,
        }
    }
    fn len(&self, c: usize) -> usize {
        c * self.channel()
    }
    /// Distance between channels.
    fn channel(&self) -> usize {
        self.rows * self.s * self.wq
    }
    /// The offset of each tap (channel of the group, kernel row, kernel column, in im2col's
    /// order) from an output row's first element in the group's first channel.
    fn taps(&self, p: &Plan) -> Vec<usize> {
        let [_, kh, kw] = p.kernel;
        let [_, dh, dw] = p.dilations;
        let mut t = Vec::with_capacity(p.cg() * kh * kw);
        for c in 0..p.cg() {
            for ky in 0..kh {
                for kx in 0..kw {
                    let (phase, j) = ((kx * dw) % self.s, (kx * dw) / self.s);
                    t.push(((c * self.rows + ky * dh) * self.s + phase) * self.wq + j);
                }
            }
        }
        t
    }
}

/// The dims of the padded input copy [`conv`] allocates (for [`flat`] convs only when
/// their planes are not whole vectors), for the caller's size check: with a large stride
/// and few output channels it can exceed the output.
pub(super) fn scratch_dims(p: &Plan) -> [usize; 4] {
    let lanes = Isa::detect().map_or(8, Isa::lanes);
    match flat(p) {
        true => [p.c, p.in_plane().next_multiple_of(lanes), 1, 1],
        false => {
            let pd = Padded::of(p, lanes);
            [p.c, pd.rows, pd.s, pd.wq]
        }
    }
}

/// The conv: `out` (`N x M x OH x OW`) from `x` (`N x C x H x W`) and `w` (`M x C x KH x
/// KW`), bias and activation applied as each output is stored.
pub(super) fn conv(
    p: &Plan,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [MaybeUninit<f32>],
) {
    debug_assert!(applies(p));
    let isa = Isa::detect().expect("applies() checked for AVX2");
    conv_on(isa, p, x, w, bias, act, out)
}

/// [`conv`] on the given instructions (the tests run each this CPU has).
fn conv_on(
    isa: Isa,
    p: &Plan,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [MaybeUninit<f32>],
) {
    let (in_plane, out_plane) = (p.in_plane(), p.out_plane());
    let flat = flat(p);
    let lanes = isa.lanes();
    let pd = Padded::of(p, lanes);
    let taps = match flat {
        true => (0..p.c)
            .map(|c| c * in_plane.next_multiple_of(lanes))
            .collect(),
        false => pd.taps(p),
    };
    let k = taps.len();
    // Weights regrouped as [group][block of R channels][tap][R], zero past the group's last
    // channel, so a tap's R broadcasts read one run.
    let r_max = isa.channels();
    let mg = p.mg();
    let group_len = mg.div_ceil(r_max) * k * r_max;
    // Written in order, with no division per weight: with four per weight this loop took a
    // third of the samples of a 25-group conv on 7x7 planes (400 x 144 weights; a flat-run
    // form of this path that was then dropped, see README).
    let mut wp = vec![0f32; p.group * group_len];
    let mut dst = wp.chunks_exact_mut(r_max);
    for g in 0..p.group {
        for j0 in (0..mg).step_by(r_max) {
            let block = &w[(g * mg + j0) * k..(g * mg + (j0 + r_max).min(mg)) * k];
            for t in 0..k {
                let d = dst.next().expect("sized for every block and tap");
                for (d, wo) in d.iter_mut().zip(block.chunks_exact(k)) {
                    *d = wo[t];
                }
            }
        }
    }
    let [_, oh, ow] = p.output;
    // Every output is written (stored once) through this pointer, never read.
    let outp = SendPtr(out.as_mut_ptr().cast::<f32>());
    let run = |row: Row| {
        debug_assert!(row
            .taps
            .iter()
            .all(|&t| t + row.span.end.next_multiple_of(lanes) <= row.x.len()));
        // SAFETY: `isa` is one this CPU runs (detected, or listed by `Isa::available` in
        // the tests); `Row` holds what the row functions read (see there).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match isa {
                Isa::Avx2 => row_avx2(&row),
                Isa::Avx512 => super::conv_direct_avx512::row(&row),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("the direct conv is only selected on x86-64: {}", row.m)
    };
    // A task's row of group g, but for its input (set by the caller).
    let row = |n: usize, g: usize, at: usize, span: Range<usize>| Row {
        x: &[],
        taps: &taps,
        w: &wp[g * group_len..],
        bias: bias.map(|b| &b[g * mg..]),
        act,
        m: mg,
        span,
        // SAFETY: batch item n's output plane, the group's first channel, from position
        // `at`: inside `out` (the callers' spans stay inside the plane).
        out: SendPtr(unsafe { outp.get().add((n * p.m + g * mg) * out_plane + at) }),
        channel_stride: out_plane,
    };
    if flat {
        // The plane as one row, in chunks of FLAT_CHUNK positions; the input as it is when
        // its planes are whole vectors, else copied with each plane zero-padded to whole
        // vectors (so the last vector of the last plane reads inside the buffer).
        let chunks = out_plane.div_ceil(FLAT_CHUNK);
        let stride = in_plane.next_multiple_of(lanes);
        let mut copy = Vec::new();
        for n in 0..p.n {
            let xn = &x[n * p.c * in_plane..][..p.c * in_plane];
            let xs: &[f32] = match stride == in_plane {
                true => xn,
                false => {
                    copy.resize(p.c * stride, 0.0);
                    for (d, s) in copy.chunks_exact_mut(stride).zip(xn.chunks_exact(in_plane)) {
                        d[..in_plane].copy_from_slice(s);
                    }
                    &copy
                }
            };
            (0..chunks).into_par_iter().for_each(|ch| {
                let span = ch * FLAT_CHUNK..((ch + 1) * FLAT_CHUNK).min(out_plane);
                run(Row {
                    x: xs,
                    ..row(n, 0, 0, span)
                })
            });
        }
        return;
    }
    // The scratch is the thread's reused packing buffer (`fill` writes all of it): a fresh
    // zeroed one per call was zeroed twice, and memset was a sixth of MobileNet's 3 -> 32
    // stem.
    with_pack_buffer(pd.len(p.c), |padded| {
        for n in 0..p.n {
            fill(p, pd, &x[n * p.c * in_plane..][..p.c * in_plane], padded);
            let padded = &*padded;
            // One task per output row (each writes that row of every channel, group by
            // group; a group's taps start at its first input channel).
            (0..oh).into_par_iter().for_each(|oy| {
                let x = &padded[oy * p.strides[1] * pd.s * pd.wq..];
                for g in 0..p.group {
                    run(Row {
                        x: &x[g * p.cg() * pd.channel()..],
                        ..row(n, g, oy * ow, 0..ow)
                    })
                }
            });
        }
    })
}

/// Copies the batch item's input `x` (`C x H x W`) into `buf` padded and phase-split (see
/// [`Padded`]); zeros outside the input. Writes every float of `buf[..pd.len(C)]`.
fn fill(p: &Plan, pd: Padded, x: &[f32], buf: &mut [f32]) {
    let [_, h, w] = p.input;
    let (pt, pl, s, wq) = (p.pads[1], p.pads[2], pd.s, pd.wq);
    let row_len = s * wq;
    buf[..pd.len(p.c)]
        .par_chunks_mut(row_len)
        .with_min_len(16)
        .enumerate()
        .for_each(|(i, dst)| {
            let (c, yy) = (i / pd.rows, i % pd.rows);
            let Some(y) = yy.checked_sub(pt).filter(|&y| y < h) else {
                dst.fill(0.0);
                return;
            };
            let src = &x[(c * h + y) * w..][..w];
            for (phase, dst) in dst.chunks_exact_mut(wq).enumerate() {
                // Element j is padded column j * s + phase, input column that minus pl:
                // inside the input for j in lo..hi, from input column `first` on.
                let lo = pl.saturating_sub(phase).div_ceil(s).min(wq);
                let hi = match w + pl > phase {
                    true => ((w + pl - phase - 1) / s + 1).clamp(lo, wq),
                    false => lo,
                };
                dst[..lo].fill(0.0);
                dst[hi..].fill(0.0);
                if lo < hi {
                    let first = lo * s + phase - pl;
                    strided_copy(&mut dst[lo..hi], &src[first..], s);
                }
            }
        });
}

/// One output row's work, all output channels.
pub(super) struct Row<'a> {
    /// The padded input from the row's first tap row on.
    pub(super) x: &'a [f32],
    pub(super) taps: &'a [usize],
    /// Regrouped weights (see [`conv`]).
    pub(super) w: &'a [f32],
    pub(super) bias: Option<&'a [f32]>,
    pub(super) act: Activation,
    pub(super) m: usize,
    /// The positions of the row this task computes.
    pub(super) span: Range<usize>,
    /// Channel 0's output row (its position 0); channel `o`'s is `channel_stride * o`
    /// further.
    pub(super) out: SendPtr<f32>,
    pub(super) channel_stride: usize,
}

/// # Safety
/// The CPU must have AVX2 and FMA; `row.out` must be valid for writes of the positions
/// `span` at each of the `m` channel offsets. (Every load is inside `row.x`: the largest
/// tap offset plus the span's end rounded up to a vector stays inside the padded buffer by
/// [`Padded`]'s sizes, or inside the plane for [`flat`] convs; checked in debug builds
/// by the caller.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(row: &Row) {
    const R_MAX: usize = Isa::Avx2.channels();
    let k = row.taps.len();
    let mut o0 = 0;
    while o0 < row.m {
        let r = (row.m - o0).min(R_MAX);
        let w = row.w.as_ptr().add(o0 * k);
        match r {
            6 => imp::channels::<6>(row, o0, w),
            5 => imp::channels::<5>(row, o0, w),
            4 => imp::channels::<4>(row, o0, w),
            3 => imp::channels::<3>(row, o0, w),
            2 => imp::channels::<2>(row, o0, w),
            _ => imp::channels::<1>(row, o0, w),
        }
        o0 += r;
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::{Isa, Row};
    const R_MAX: usize = Isa::Avx2.channels();
    use crate::kernels::sgemm::clamp_avx2 as clamp;
    use std::arch::x86_64::*;

    /// Output channels `o0 .. o0 + R` of the row, in blocks of up to 16 positions.
    #[inline(always)]
    pub(super) unsafe fn channels<const R: usize>(row: &Row, o0: usize, w: *const f32) {
        let mut x0 = row.span.start;
        while x0 < row.span.end {
            let v = (row.span.end - x0).div_ceil(8).min(2);
            match v {
                2 => block::<R, 2>(row, o0, x0, w),
                _ => block::<R, 1>(row, o0, x0, w),
            }
            x0 += 8 * v;
        }
    }

    /// Positions `x0 .. x0 + 8V` (stored up to the row's end) of channels `o0 .. o0 + R`.
    #[inline(always)]
    unsafe fn block<const R: usize, const V: usize>(
        row: &Row,
        o0: usize,
        x0: usize,
        w: *const f32,
    ) {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        let xb = row.x.as_ptr().add(x0);
        for (t, &off) in row.taps.iter().enumerate() {
            let xs = xb.add(off);
            let xv: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(xs.add(8 * v)));
            let wt = w.add(t * R_MAX);
            for (r, acc) in acc.iter_mut().enumerate() {
                let wv = _mm256_broadcast_ss(&*wt.add(r));
                for (a, &xv) in acc.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(wv, xv, *a);
                }
            }
        }
        let valid = (row.span.end - x0).min(8 * V);
        for (r, acc) in acc.iter().enumerate() {
            let b = row.bias.map(|b| _mm256_set1_ps(b[o0 + r]));
            let dst = row.out.get().add((o0 + r) * row.channel_stride + x0);
            for (v, &a) in acc.iter().enumerate() {
                let a = match b {
                    Some(b) => _mm256_add_ps(a, b),
                    None => a,
                };
                let y = clamp(a, row.act);
                if 8 * v + 8 <= valid {
                    _mm256_storeu_ps(dst.add(8 * v), y);
                } else if 8 * v < valid {
                    let mut buf = [0f32; 8];
                    _mm256_storeu_ps(buf.as_mut_ptr(), y);
                    let n = valid - 8 * v;
                    std::ptr::copy_nonoverlapping(buf.as_ptr(), dst.add(8 * v), n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::{im2col_path, plan};
    use super::super::test_data::{conv_attrs, noise, on_threads};
    use super::super::uninit::of_init;
    use super::*;

    /// The direct conv against the im2col path in both sgemm orientations, bit for bit.
    fn check(xs: &[usize], ws: &[usize], strides: &[usize], dil: &[usize], pads: &[usize]) {
        check_grouped(1, xs, ws, strides, dil, pads)
    }

    fn check_grouped(
        group: usize,
        xs: &[usize],
        ws: &[usize],
        strides: &[usize],
        dil: &[usize],
        pads: &[usize],
    ) {
        let a = conv_attrs(group, strides, dil, pads);
        let (x, w, b) = (noise(xs, 1), noise(ws, 2), noise(&[ws[0]], 3));
        let p = plan(xs, ws, Some(&[ws[0]]), &a).unwrap();
        assert!(applies(&p), "{xs:?} {ws:?} should take the direct path");
        let clip = Activation {
            lo: Some(-20.0),
            hi: Some(30.0),
        };
        let (xd, wd, bd) = (
            x.as_slice().unwrap(),
            w.as_slice().unwrap(),
            b.as_slice().unwrap(),
        );
        for (bias, act) in [
            (None, Activation::NONE),
            (Some(bd), Activation::RELU),
            (Some(bd), clip),
        ] {
            let wants = [false, true].map(|cols| im2col_path(&p, xd, &w, bias, act, cols));
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; p.out_shape.iter().product()];
                // SAFETY: conv_on writes floats only.
                conv_on(isa, &p, xd, wd, bias, act, unsafe { of_init(&mut got) });
                for (want, cols) in wants.iter().zip([false, true]) {
                    for (i, (g, r)) in got.iter().zip(want).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            r.to_bits(),
                            "{g} vs {r} at {i}: {xs:?} {ws:?} s{strides:?} d{dil:?} p{pads:?} \
                             cols {cols} {isa:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn same_bits_as_im2col() {
        if Isa::detect().is_none() {
            eprintln!("no AVX2 + FMA: the direct conv is not used on this CPU");
            return;
        }
        // ResNet's stem, smaller: 7x7 stride 2 pad 3.
        check(&[1, 3, 40, 44], &[8, 3, 7, 7], &[2, 2], &[], &[3, 3, 3, 3]);
        // MobileNet's: 3x3 stride 2 pad 1, odd sizes; 8 channels (a block of 6 and one of 2).
        check(&[1, 3, 29, 35], &[8, 3, 3, 3], &[2, 2], &[], &[1, 1, 1, 1]);
        // 30 channels (AVX-512: blocks of 12, 12 and 6), 40-wide rows (32 + 8 positions).
        check(&[1, 3, 20, 80], &[30, 3, 3, 3], &[2, 2], &[], &[1, 1, 1, 1]);
        // SqueezeNet's: no padding, 111-wide rows (the last 16-position block stores 15).
        check(&[1, 3, 31, 223], &[5, 3, 3, 3], &[2, 2], &[], &[0, 0, 0, 0]);
        // Stride 1 and 3, dilation 2, asymmetric pads, one channel, batch 2, 1x5 kernel.
        check(
            &[2, 1, 12, 30],
            &[7, 1, 3, 3],
            &[1, 1],
            &[2, 2],
            &[0, 2, 3, 1],
        );
        check(
            &[1, 2, 17, 50],
            &[3, 2, 1, 5],
            &[3, 3],
            &[1, 2],
            &[1, 4, 0, 2],
        );
        check(&[1, 4, 9, 9], &[9, 4, 2, 2], &[1, 1], &[], &[0, 0, 0, 0]);
        // 1-D.
        check(&[2, 3, 70], &[4, 3, 5], &[2], &[], &[2, 1]);
        // Flat 1x1 convs: 16 -> 13 channels on a plane of 3 chunks (the last one partial),
        // batch 2; 32 -> 7 on a 1-D plane of 24.
        check(&[2, 16, 40, 30], &[13, 16, 1, 1], &[], &[], &[0, 0, 0, 0]);
        check(&[1, 32, 24], &[7, 32, 1], &[], &[], &[0, 0]);
        // Planes of 49 and 196 positions (copied, each padded to whole vectors), batch 2.
        check(&[2, 24, 7, 7], &[10, 24, 1, 1], &[], &[], &[0, 0, 0, 0]);
        check(&[1, 5, 14, 14], &[8, 5, 1, 1], &[], &[], &[0, 0, 0, 0]);
        // Grouped: RegNet's 16 channels per group at stride 2 (2 groups, 56-wide rows; each
        // group's 16 channels in blocks of 6, 6 and 4), at stride 1 on 28-wide rows (3
        // groups of 5 -> 7, batch 2), and 12 groups of 4 -> 2 with a dilation.
        check_grouped(
            2,
            &[1, 32, 29, 111],
            &[32, 16, 3, 3],
            &[2, 2],
            &[],
            &[1, 1, 1, 1],
        );
        check_grouped(
            3,
            &[2, 15, 6, 28],
            &[21, 5, 3, 3],
            &[1, 1],
            &[],
            &[1, 1, 1, 1],
        );
        check_grouped(
            12,
            &[1, 48, 9, 40],
            &[24, 4, 3, 3],
            &[1, 1],
            &[2, 2],
            &[2, 2, 2, 2],
        );
    }

    #[test]
    fn same_bits_on_one_and_two_threads() {
        if Isa::detect().is_none() {
            return;
        }
        let (xs, ws) = ([1, 3, 64, 64], [16, 3, 7, 7]);
        let a = conv_attrs(1, &[2, 2], &[], &[3, 3, 3, 3]);
        let (x, w) = (noise(&xs, 4), noise(&ws, 5));
        let p = plan(&xs, &ws, None, &a).unwrap();
        let run = || {
            let mut out = vec![f32::NAN; p.out_shape.iter().product()];
            conv(
                &p,
                x.as_slice().unwrap(),
                w.as_slice().unwrap(),
                None,
                Activation::NONE,
                // SAFETY: conv writes floats only.
                unsafe { of_init(&mut out) },
            );
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(on_threads(1, run), on_threads(2, run));
    }

    #[test]
    fn which_convs_take_the_path() {
        if Isa::detect().is_none() {
            return;
        }
        let takes = |xs: &[usize], ws: &[usize], group: usize| {
            let a = conv_attrs(group, &[], &[], &[]);
            applies(&plan(xs, ws, None, &a).unwrap())
        };
        assert!(takes(&[1, 3, 16, 16], &[8, 3, 3, 3], 1));
        assert!(
            !takes(&[1, 5, 16, 16], &[8, 5, 3, 3], 1),
            "5 input channels"
        );
        assert!(
            takes(&[1, 32, 56, 56], &[32, 16, 3, 3], 2),
            "16 inputs per group"
        );
        assert!(
            !takes(&[1, 34, 56, 56], &[34, 17, 3, 3], 2),
            "17 inputs per group"
        );
        assert!(
            !takes(&[1, 32, 14, 14], &[32, 16, 3, 3], 2),
            "grouped, 14-wide rows"
        );
        assert!(!takes(&[1, 32, 56, 56], &[32, 16, 1, 1], 2), "grouped flat");
        assert!(
            !takes(&[1, 3, 16, 9], &[8, 3, 3, 3], 1),
            "7-wide output rows"
        );
        assert!(!takes(&[1, 3, 4, 16, 16], &[8, 3, 3, 3, 3], 1), "3-D");
        assert!(takes(&[1, 32, 8, 8], &[64, 32, 1, 1], 1), "flat, 32 inputs");
        assert!(
            !takes(&[1, 33, 8, 8], &[64, 33, 1, 1], 1),
            "flat, 33 inputs"
        );
        assert!(
            takes(&[1, 16, 7, 7], &[64, 16, 1, 1], 1),
            "1x1 on 49 positions"
        );
        assert!(takes(&[1, 8, 3, 4, 4], &[8, 8, 1, 1, 1], 1), "flat 3-D");
    }
}
