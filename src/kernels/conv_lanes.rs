//! Convs on AVX2 + FMA with the output channels in the vector lanes: 16 (or 8, or 24)
//! output channels times up to 6 (or 3) positions in 12 (9) registers, each reduction step one
//! broadcast input value per position times one weight vector per 8 channels. That is the
//! layout onnxruntime's NCHWc kernels use; it needs no patch matrix and wastes no lanes on
//! short rows. It takes grouped convs (RegNet's 3x3 convs of 16 channels per group, where
//! im2col ran the 14x14 and 7x7 ones at 1.7-1.9x onnxruntime's time) and the ungrouped
//! ones it runs faster than im2col or Winograd ([`ungrouped_pays`]: few input channels,
//! few output channels on a small plane, as DenseNet's 3x3 convs, or strides, as the
//! ResNets' 3x3 stride-2 convs). On AVX-512 CPUs groups of a multiple of 16 output
//! channels run on the wide chunk of `conv_lanes_avx512.rs` instead (16 channels a zmm
//! vector, the same FMA chains), under [`wide_pays`]' rule; the AVX2 chunk runs on AVX2
//! CPUs only (8 lanes lost to the AVX-512 sgemm).
//!
//! The input planes are copied once per call into a zero-padded buffer (unpadded convs read
//! them in place); each task computes a band of positions (across rows, in output order)
//! for some of a group's channels into an interleaved buffer (position by position, the
//! channels side by side) and spreads it into the output planes by 8x8 transposes. The
//! reduction runs in blocks of input channels whose weights stay in L1 while a pass walks
//! the band ([`BLOCK_WEIGHTS`]).
//!
//! Each output is the FMA chain `w * x` over the reduction in im2col's order (channel, then
//! kernel row, then kernel column) from +0.0, then `+ bias` (only with one), then the clamp:
//! the sgemm micro-kernels' operations in the same order, so the same bits as the im2col
//! path (tests below), on any number of threads.

use super::blocked::Layout;
use super::conv::Plan;
use super::gemm::SendPtr;
use super::im2col::copy_short;
use super::sgemm::{Activation, Kernel};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output channels per vector (per half of a wide, AVX-512 vector).
pub(super) const LANES: usize = 8;
/// Most positions computed together (2 vectors of channels x 6 positions = 12 accumulators,
/// plus 2 weight vectors and a broadcast, within the 16 ymm registers).
const MAX_R: usize = 6;
/// Largest padded input plane this path takes (positions): RegNet's 112x112 -> 56x56 one
/// (two groups, an 830 KiB buffer) still gains. RegNet-X 400MF in the net (one thread, min
/// over 4 alternating runs): its 7x7 grouped convs 0.18 -> 0.09 ms (onnxruntime 0.14), 14x14
/// 0.22 -> 0.12 (0.17), 28x28 0.25 -> 0.18 and 56x56 -> 28x28 0.36 -> 0.20 (both on
/// `conv_direct` before), 112x112 -> 56x56 0.62 -> 0.55.
const MAX_PADDED: usize = 114 * 114;

/// Whether this path takes `p`: 2-D convs, grouped (not depthwise) or ungrouped where that
/// pays, whose groups have a multiple of 8 output channels, column stride 1 or 2, on a CPU
/// whose sgemm kernel is AVX2; on one whose sgemm kernel is AVX-512 (which runs them all on
/// the [`wide`] chunk), groups of a multiple of 16 output channels as [`wide_pays`] says,
/// and the others where [`narrow_pays`] says.
pub(super) fn applies(p: &Plan, blocked: bool) -> bool {
    let takes = match Kernel::detect() {
        Kernel::Avx2 => p.group > 1 || ungrouped_pays(p) || (blocked && blocked_pays(p)),
        Kernel::Avx512 => match p.mg().is_multiple_of(2 * LANES) {
            true => wide_pays(p, blocked),
            false => narrow_pays(p, blocked),
        },
        Kernel::Portable => false,
    };
    takes
        && p.cg() > 1
        && p.in_plane() > 0
        && p.mg().is_multiple_of(LANES)
        && p.input[0] == 1
        && p.kernel[0] == 1
        && p.output[0] == 1
        && p.pads[0] == 0
        && matches!(p.strides[2], 1 | 2)
        && padded(p, 1) * padded(p, 2) <= MAX_PADDED
}

/// Whether an ungrouped conv runs faster here than on the patch matrix or Winograd
/// (single convs, one thread, alternating runs): with fewer than 64 input channels, which
/// im2col packs 9 or more times over (GoogLeNet's 16 -> 32 on 28x28 0.12 -> 0.087 ms,
/// 32 -> 64 on 14x14 0.110 -> 0.081, SqueezeNet's 16 -> 64 on 55x55 0.78 -> 0.74); with
/// at most 32 output channels on planes smaller than 28x28, where Winograd F(2x2, 3x3)'s
/// transforms outweigh its products (DenseNet's 128 -> 32: 7x7 0.11 -> 0.043, 14x14 0.25 ->
/// 0.16; on 28x28 F(4x4, 3x3) beats this path, best medians of 5 rounds of 40: 0.71 against
/// 0.61 ms, DenseNet-121 in all 77.5 -> 73.2 ms); strided (ResNets' 3x3 stride-2 convs, which Winograd does not take, minima of 50:
/// 64 -> 128 on 56x56 1.62 -> 1.31 ms, 128 -> 128 3.19 -> 2.60, 256 -> 256 on 28x28 3.09
/// -> 2.53, 512 -> 512 on 14x14 3.40 -> 2.58; onnxruntime 2.55-2.65 on the last three).
/// Not 1x1 convs (the sgemm runs them 1.0-1.4x faster), nor stride-1 ones Winograd takes
/// (128 -> 32 on 56x56 2.40 against 2.58, 96 -> 128 on 28x28 1.46 against 1.89).
fn ungrouped_pays(p: &Plan) -> bool {
    let strided = p.strides[1] > 1 || p.strides[2] > 1;
    p.k_plane() > 1 && (p.c < 64 || (p.m <= 32 && p.out_plane() < 28 * 28) || strided)
}

/// Whether an ungrouped conv whose input is blocked (read with no gather) runs here: every
/// 1x1 conv. With the reduction walking each block's 8 channels unrolled (`chunk`'s
/// `BY_BLOCKS`), blocked in and out here against planes on the sgemm (one thread, min of
/// 200): MobileNet v2's projections 144 -> 24 on 56x56 0.241 against 0.342 ms, 192 -> 32
/// on 28x28 0.103 / 0.141, 576 -> 96 on 14x14 0.228 / 0.285, 960 -> 160 on 7x7 0.165 /
/// 0.186; its expansions 24 -> 144 on 56x56 0.311 / 0.328, 96 -> 576 on 14x14 0.240 /
/// 0.242, 16 -> 96 on 112x112 0.640 / 0.643; 256 -> 64 on 56x56 1.13 / 1.34, 400 -> 400
/// on 7x7 0.205 / 0.198, 512 -> 2048 on 7x7 1.31 / 1.29. Not with an input in planes, which
/// this path reads one broadcast per plane at a time (DenseNet-121's 1x1 convs writing
/// blocked values for its 3x3 convs: 29.6 -> 31.1 ms in all), nor the convs Winograd takes.
fn blocked_pays(p: &Plan) -> bool {
    p.k_plane() == 1
}

/// Whether the path runs on the AVX-512 chunk (`conv_lanes_avx512.rs`): on AVX-512 CPUs,
/// every conv it takes. A group whose output channels are an odd multiple of 8 ends in a
/// half vector, its upper lanes computed on zero weights and never stored. Those convs
/// (`narrow_pays`) ran on the AVX2 chunk before, MobileNet v2's 144 -> 24 projections on
/// 56x56 at 93-99 GFLOP/s in the net; on this one MobileNet v2 took 0.973 of the time,
/// EfficientNet-B0 0.983, GoogLeNet 0.991 (paired medians of 6 alternating rounds of 20).
fn wide() -> bool {
    Kernel::detect() == Kernel::Avx512
}

/// Output channels of one group in the packed weights: on the wide chunk, whole wide vectors.
fn packed_mg(p: &Plan) -> usize {
    match wide() {
        true => p.mg().next_multiple_of(2 * LANES),
        false => p.mg(),
    }
}

/// Which convs the AVX-512 chunk takes: those the AVX2 chunk takes but for widening 1x1
/// convs on a blocked input of more than [`MAX_WIDENING_INPUTS`] channels. Grouped (RegNet's
/// 3x3 convs of 16 channels a group, which `conv_direct`'s AVX-512 kernel and im2col ran at
/// 1.5-2.5x onnxruntime's time): RegNet-X 400MF 0.835 of the time. Ungrouped where
/// `ungrouped_pays` (strided, few channels), against the AVX-512 im2col: DenseNet-121 0.93,
/// ResNet-50 0.97, the others 0.997-1.004; single convs 16 -> 64 3x3 on 55x55 0.92, 128 ->
/// 128 3x3 stride 2 on 56x56 0.97. 1x1 convs on a blocked input with no more output than
/// input channels: RegNet 0.92, GoogLeNet 0.97, MobileNet v2 0.98, the others 0.99-1.01.
/// Strided 1x1 convs of at most 32 input channels, in either layout, where the sgemm's
/// strided pack outweighed its short products: RegNet-X 400MF's first shortcut (32 -> 32,
/// 112x112 -> 56x56) 0.107 -> 0.066 ms, the net 0.978 (8 rounds of 20); with up to 64
/// ResNet-18's first downsample (64 -> 128) took 0.146 ms against 0.132.
/// (Alternating rounds of `bench`, paired medians.)
fn wide_pays(p: &Plan, blocked: bool) -> bool {
    let one_by_one = blocked && blocked_pays(p);
    let strided = p.strides[1] > 1 || p.strides[2] > 1;
    p.group > 1
        || ungrouped_pays(p)
        || (one_by_one && (p.m <= p.c || p.c <= MAX_WIDENING_INPUTS))
        || (p.k_plane() == 1 && strided && p.c <= 32)
}

/// Most input channels of a widening 1x1 conv the AVX-512 chunk takes on a blocked input.
/// Taking them lets the values before them stay blocked: SqueezeNet's expand 1x1 convs (16
/// -> 64 to 64 -> 256, so its squeeze convs, expand convs and Concats all run blocked),
/// MobileNet v2's and EfficientNet-B0's expansions (up to 160 -> 960 and 192 -> 1152),
/// RegNet's 64 -> 160 and 160 -> 400. Paired medians of 12 alternating rounds of 20, one
/// thread, against the build taking none (2026-12-07): SqueezeNet 0.926, MobileNet v2
/// 0.951, RegNet 0.962, EfficientNet-B0 0.980 with up to 128 channels; against that, up to
/// 192 (two runs of 10 and 12 rounds): EfficientNet-B0 0.991 and 0.988, MobileNet v2 0.987
/// and 1.001, RegNet 0.987 and 0.994; the other nets have none in that range. With every
/// widening one (ResNet-50's 256 -> 1024 and the like) ResNet-50 mixed layouts at its
/// residual Adds, converting inputs, and took 1.045x as long (1.075x up to 256 channels).
const MAX_WIDENING_INPUTS: usize = 192;

/// Which convs with output channels a multiple of 8 but not of 16 per group (the wide
/// chunk's half vector) the path takes on an AVX-512 CPU: 1x1 convs on a blocked input with
/// at most half as many output channels as input channels. Otherwise the conv converts its
/// whole input to planes first, which for such a projection costs more than the product:
/// EfficientNet-B0's 144 -> 24 on 56x56 (with its residual Add) took 0.50 ms in the net
/// against 0.29 here (per-node profile, one thread), and its 96 -> 24, 144 -> 40 and
/// 240 -> 40 come here too; MobileNet v2's 144 -> 24 then reads its depthwise conv's output
/// blocked. Not square ones: ShuffleNet v2's 232 -> 232 on 7x7 took the net 1.025x as long
/// on the AVX2 chunk (paired medians of 6 alternating rounds); taking every conv
/// `wide_pays` takes on the wide chunk's half vectors was no faster (ShuffleNet v2 1.001,
/// GoogLeNet 1.006, EfficientNet-B0 1.002, MobileNet v2 0.989).
fn narrow_pays(p: &Plan, blocked: bool) -> bool {
    blocked && blocked_pays(p) && 2 * p.m <= p.c
}

/// Extent of spatial axis `i` once padded: enough for every tap of every output.
fn padded(p: &Plan, i: usize) -> usize {
    let reach = (p.output[i] - 1) * p.strides[i] + (p.kernel[i] - 1) * p.dilations[i] + 1;
    reach.max(p.input[i] + p.pads[i])
}

/// The weights with the output channels innermost, in vectors of 8: group `g`'s vector `v`
/// (channels `8v..8v + 8` of the group) at reduction step `k` is the 8 floats at
/// `((g * mg / 8 + v) * K + k) * 8`, where the Conv's weights hold them `K` apart. One
/// vector's weights are one contiguous stream, so a reduction block's weights stay in L1
/// (rows of all `mg` channels, 512 bytes apart for 128 channels, fell on 8 of L1's 64 sets).
/// Built once per Conv (kept in `conv::Prepared`) or per call.
/// For the AVX-512 chunk ([`wide`]), vectors of 16 channels alike, a group's last one
/// padded with zeros to 16 ([`packed_mg`] channels a group).
pub(super) fn pack_weights(p: &Plan, w: &[f32]) -> Vec<f32> {
    let kdim = p.cg() * p.k_plane();
    let lanes = match wide() {
        true => 2 * LANES,
        false => LANES,
    };
    let (mg, pmg) = (p.mg(), packed_mg(p));
    let mut out = vec![0f32; p.group * pmg * kdim];
    // Output channel `o` of group `g` is lane `o % lanes` of the group's vector `o / lanes`.
    for (i, src) in w.chunks_exact(kdim).take(p.m).enumerate() {
        let (g, o) = (i / mg, i % mg);
        let dst = &mut out[(g * pmg + o / lanes * lanes) * kdim..][..kdim * lanes];
        for (k, &v) in src.iter().enumerate() {
            dst[k * lanes + o % lanes] = v;
        }
    }
    out
}

/// Floats of one vector's weights per reduction block: a pass (up to 3 vectors) keeps the
/// block's weights in L1 while it walks its band of positions, each chunk's accumulators
/// stored after one block and loaded before the next (exact: the FMA chain is the
/// unblocked one). Unblocked, every chunk streamed all its weights from L2: 64 -> 128 3x3
/// stride 2 on 56x56 took 1.80 ms against im2col's 1.58, 1.31 blocked. 1024 to 2048
/// floats measured alike on the ResNets' and DenseNet's convs.
const BLOCK_WEIGHTS: usize = 1536;

/// [`BLOCK_WEIGHTS`] for 1x1 convs (a blocked input's, `BY_BLOCKS`): up to 512 input
/// channels in one block. Each block costs every chunk a store and a reload of its 12
/// accumulators and a call, about as much as 10-20 of its reduction steps, and the walk
/// of a 1x1 conv reads each weight vector once per 6 positions, so L1 misses on weights
/// cost it little. Chains of ten 1x1 convs, blocked in and out, one thread (`bench`,
/// alternating, paired medians of 6 rounds of 200 runs) against 1536: 512 -> 512 on 7x7
/// 0.97 (128 channels a block: 1.05, 64: 1.12), 400 -> 400 on 7x7 0.96, 232 -> 232 on
/// 14x14 0.98.
const BLOCK_WEIGHTS_POINTWISE: usize = 4096;

/// Input channels per reduction block: as few blocks as keep a vector's weights within
/// `BLOCK_WEIGHTS` (`BLOCK_WEIGHTS_POINTWISE` for a 1x1 conv), of near-equal size.
fn block_channels(p: &Plan) -> usize {
    let per_channel = p.k_plane() * LANES;
    let limit = match p.k_plane() {
        1 => BLOCK_WEIGHTS_POINTWISE,
        _ => BLOCK_WEIGHTS,
    };
    let blocks = (p.cg() * per_channel).div_ceil(limit).max(1);
    match p.k_plane() {
        // Whole blocks of 8 channels, which a blocked input's 1x1 reduction walks unrolled.
        1 => p.cg().div_ceil(blocks).next_multiple_of(LANES).min(p.cg()),
        _ => p.cg().div_ceil(blocks),
    }
}

/// Output positions per task (a band of whole or partial rows, in output order): the
/// task's interleaved outputs (`BAND x mg` floats) stay in L2 until they are spread.
const BAND: usize = 256;

/// `out` = the conv of `x` with the weights `wp` (from [`pack_weights`]), `+ bias`, clamped;
/// `x` and `out` each in planes (NCHW) or blocked (NCHW8c: the 8 channels of a block side by
/// side at each position, which needs a multiple of 8 channels), as `io` says. A blocked
/// input is read as it is; a blocked output takes the accumulators as they are, with no
/// spread.
///
/// Tasks are (batch, group, band of positions, part of the group's channels); bands and
/// parts are cut finer only when there are fewer than two tasks per thread. Each output is
/// one FMA chain whatever the task, so the bits depend neither on the cut nor on the
/// thread count.
pub(super) fn conv(
    p: &Plan,
    x: &[f32],
    wp: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [MaybeUninit<f32>],
    io: (Layout, Layout),
) {
    let kdim = p.cg() * p.k_plane();
    assert!(io.0 == Layout::Planes || p.c.is_multiple_of(LANES));
    assert!(io.1 == Layout::Planes || p.m.is_multiple_of(LANES));
    // Floats from one position to the next in the (padded) input.
    let ps = match io.0 {
        Layout::Planes => 1,
        Layout::Blocked => LANES,
    };
    assert!(x.len() >= p.n * p.c * p.in_plane());
    let pmg = packed_mg(p);
    assert!(wp.len() >= p.group * pmg * kdim && bias.is_none_or(|b| b.len() >= p.m));
    assert!(out.len() >= p.n * p.m * p.out_plane());
    let (hp, wpad) = (padded(p, 1), padded(p, 2));
    let [_, ih, iw] = p.input;
    let [_, kh, kw] = p.kernel;
    let [_, dh, dw] = p.dilations;
    // Offset of tap (a, b) in a padded plane.
    let taps: Vec<usize> = (0..kh * kw)
        .map(|t| ((t / kw) * dh * wpad + (t % kw) * dw) * ps)
        .collect();
    let plane = hp * wpad;
    // Offset of each input channel's first (padded) position in a batch item.
    let chan: Vec<usize> = (0..p.c)
        .map(|c| match io.0 {
            Layout::Planes => c * plane,
            Layout::Blocked => (c / LANES * plane) * LANES + c % LANES,
        })
        .collect();
    // Unpadded convs (1x1, valid) read the input where it is.
    let in_place = (hp, wpad) == (ih, iw);
    let len = if in_place { 0 } else { p.n * p.c * plane };
    super::conv::with_pack_buffer(len, |buf| {
        if !in_place {
            // Planes, or blocks of 8 planes: rows of `iw * ps` floats either way.
            let [_, ph, pw] = p.pads;
            buf.par_chunks_mut(plane * ps)
                .zip(x.par_chunks(ih * iw * ps))
                .for_each(|(dst, src)| {
                    dst.fill(0.0);
                    for y in 0..ih {
                        let at = ((y + ph) * wpad + pw) * ps;
                        copy_short(&mut dst[at..at + iw * ps], &src[y * iw * ps..][..iw * ps]);
                    }
                });
        }
        let xs: &[f32] = if in_place { x } else { buf };
        let cut = Cut::of(p);
        // Every output is written (spread once) through this pointer, never read.
        let outp = SendPtr(out.as_mut_ptr().cast::<f32>());
        (0..cut.tasks())
            .into_par_iter()
            .for_each_init(Vec::new, |obuf, t| {
                let task = cut.task(t);
                let g = task.g;
                let job = Job {
                    p,
                    wp: wpad,
                    ps,
                    taps: &taps,
                    x: &xs[task.b * p.c * plane..][..p.c * plane],
                    chan: &chan[g * p.cg()..][..p.cg()],
                    out: io.1,
                    w: &wp[g * kdim * pmg..][..kdim * pmg],
                    bias: bias.map(|b| &b[g * p.mg()..][..p.mg()]),
                    act,
                };
                // SAFETY: `applies` checked the CPU (the AVX2 sgemm kernel implies AVX2 and
                // FMA); the task writes its own positions of its own channels only.
                unsafe { imp::task(&job, &task, obuf, outp) }
            });
    });
}

/// How one call's work is cut into tasks.
struct Cut {
    n: usize,
    group: usize,
    /// Output positions per plane and per band.
    positions: usize,
    band: usize,
    /// Vectors of 8 channels per group, and per part (the last part may have fewer).
    vectors: usize,
    part: usize,
}

/// One task: positions `q0..q1` of channels `c0..c1` (within the group) of one (batch, group).
struct Task {
    b: usize,
    g: usize,
    q0: usize,
    q1: usize,
    c0: usize,
    c1: usize,
}

impl Cut {
    fn of(p: &Plan) -> Cut {
        let positions = p.out_plane();
        let vectors = p.mg() / LANES;
        let units = p.n * p.group;
        // Each output is one FMA chain in every cut, so the cut may follow the thread count:
        // on one thread, finer tasks only cost (a 7x7 conv of 32 channels in four tasks took
        // 1.45x as long), on more, two tasks per thread at least.
        let want = match rayon::current_num_threads() {
            1 => 1,
            t => 2 * t,
        };
        let mut bands = positions.div_ceil(BAND);
        let mut parts = 1;
        if units * bands < want {
            // Parts of two vectors at least: a pass of one vector has half the FMA chains.
            parts = (vectors / 2).clamp(1, want.div_ceil(units * bands));
        }
        if units * bands * parts < want {
            bands = positions.min(want.div_ceil(units * parts));
        }
        let mut part = vectors.div_ceil(parts);
        if wide() {
            // Whole wide vectors.
            part = part.next_multiple_of(2);
        }
        Cut {
            n: p.n,
            group: p.group,
            positions,
            band: positions.div_ceil(bands),
            vectors,
            part,
        }
    }

    fn tasks(&self) -> usize {
        self.n * self.group * self.positions.div_ceil(self.band) * self.vectors.div_ceil(self.part)
    }

    fn task(&self, t: usize) -> Task {
        let parts = self.vectors.div_ceil(self.part);
        let bands = self.positions.div_ceil(self.band);
        let (part, t) = (t % parts, t / parts);
        let (band, t) = (t % bands, t / bands);
        let (g, b) = (t % self.group, t / self.group);
        Task {
            b,
            g,
            q0: band * self.band,
            q1: ((band + 1) * self.band).min(self.positions),
            c0: part * self.part * LANES,
            c1: ((part + 1) * self.part).min(self.vectors) * LANES,
        }
    }
}

/// What every task of one call shares.
pub(super) struct Job<'a> {
    pub(super) p: &'a Plan,
    /// Positions per padded row, and floats from one position to the next.
    pub(super) wp: usize,
    pub(super) ps: usize,
    /// Offset of each kernel tap from its output's first tap.
    pub(super) taps: &'a [usize],
    /// This batch item's padded input.
    pub(super) x: &'a [f32],
    /// Offset in `x` of each of this group's input channels.
    pub(super) chan: &'a [usize],
    /// The output's layout.
    pub(super) out: super::blocked::Layout,
    /// This group's packed weights (`K x packed_mg`).
    pub(super) w: &'a [f32],
    pub(super) bias: Option<&'a [f32]>,
    pub(super) act: Activation,
}

/// Input channels `ci0..ci1` of the reduction; the first block starts the sums at +0.0, the
/// others load them from the task's buffer; the last adds the bias and clamps.
pub(super) struct Block {
    pub ci0: usize,
    pub ci1: usize,
    pub first: bool,
    pub last: bool,
}

mod imp {
    use super::super::conv_lanes_avx512 as wide;
    use super::super::sgemm::clamp_avx2 as clamp;
    use super::super::transpose_avx2::spread;
    use super::{Block, Job, Layout, SendPtr, Task, LANES, MAX_R};
    use std::arch::x86_64::*;

    /// Positions of a 3-vector pass: 9 accumulators. With 4 (12 accumulators, 3 weight
    /// vectors and a broadcast: all 16 registers) the compiler spilled one to the stack in
    /// the reduction loop: MobileNet's 144 -> 24 1x1 conv 0.50 ms, 0.27 with 3.
    const R3: usize = 3;

    /// The channel passes of a part of `vectors` vectors: 2 at a time (6 positions, 12
    /// accumulators), an odd count starting with a pass of 3 (3 positions, 9), a single
    /// vector alone (6 positions).
    fn passes(vectors: usize) -> impl Iterator<Item = usize> {
        let first = match vectors {
            1 => 1,
            v if v % 2 == 1 => 3,
            _ => 2,
        };
        let rest = vectors.saturating_sub(first) / 2;
        (vectors > 0)
            .then_some(first)
            .into_iter()
            .chain(std::iter::repeat_n(2, rest))
    }

    /// One task: its positions for its channels into `obuf` (position by position, the
    /// part's channels side by side), then spread into the output planes; or, for a
    /// blocked output, straight into the output's blocks.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn task(j: &Job, t: &Task, obuf: &mut Vec<f32>, out: SendPtr<f32>) {
        let p = j.p;
        let [_, _, ow] = p.output;
        let [_, sh, sw] = p.strides;
        let pm = t.c1 - t.c0;
        let n = t.q1 - t.q0;
        let positions = p.out_plane();
        // Where position `q` (from `t.q0`) of vector `v` (from `t.c0 / 8`) goes: `op +
        // q * stride.0 + v * stride.1`.
        let (op, stride) = match j.out {
            Layout::Planes => {
                // Every position is written before the spread reads it; up to 7 more read,
                // dropped.
                obuf.resize(n.next_multiple_of(LANES) * pm, 0.0);
                (obuf.as_mut_ptr(), (pm, LANES))
            }
            Layout::Blocked => {
                let first = (t.b * p.m + t.g * p.mg() + t.c0) / LANES * positions + t.q0;
                (out.get().add(first * LANES), (LANES, positions * LANES))
            }
        };
        let offset = |q: usize| ((q / ow) * sh * j.wp + (q % ow) * sw) * j.ps;
        let (cg, cb) = (p.cg(), super::block_channels(p));
        for ci0 in (0..cg).step_by(cb) {
            let block = Block {
                ci0,
                ci1: (ci0 + cb).min(cg),
                first: ci0 == 0,
                last: ci0 + cb >= cg,
            };
            // A 1x1 conv on a blocked input whose reduction block is whole blocks of 8
            // channels: the reduction walks each block's 8 channels unrolled.
            let by_blocks = j.taps.len() == 1
                && j.ps == LANES
                && block.ci0.is_multiple_of(LANES)
                && block.ci1.is_multiple_of(LANES);
            if super::wide() {
                wide_passes(j, t, &block, by_blocks, offset, (op, stride));
                continue;
            }
            let mut v0 = t.c0;
            for v in passes(pm / LANES) {
                let r_max = if v == 3 { R3 } else { MAX_R };
                let mut q = t.q0;
                while q < t.q1 {
                    let r = chunk_len(t.q1 - q, r_max);
                    let mut offs = [0usize; MAX_R];
                    for (i, o) in offs.iter_mut().enumerate().take(r) {
                        *o = offset(q + i);
                    }
                    let at = (q - t.q0) * stride.0 + (v0 - t.c0) / LANES * stride.1;
                    macro_rules! run {
                        ($(($v:literal, $r:literal))*) => {
                            match (v, r) {
                                $(($v, $r) => {
                                    let out = (op.add(at), stride);
                                    match by_blocks {
                                        true => chunk::<$r, $v, true>(j, &block, &offs, v0, out),
                                        false => chunk::<$r, $v, false>(j, &block, &offs, v0, out),
                                    }
                                })*
                                _ => unreachable!("passes of 1 to 3 vectors, chunks of 1 to 6"),
                            }
                        };
                    }
                    run!(
                        (1, 1)(1, 2)(1, 3)(1, 4)(1, 5)(1, 6)(2, 1)(2, 2)(2, 3)(2, 4)(2, 5)(2, 6)(
                            3, 1
                        )(3, 2)(3, 3)
                    );
                    q += r;
                }
                v0 += v * LANES;
            }
        }
        if j.out == Layout::Blocked {
            return;
        }
        // Spread: per 8 channels, transposed into their planes.
        let (m, mg) = (p.m, p.mg());
        for c in (t.c0..t.c1).step_by(LANES) {
            let dst = out.get().add((t.b * m + t.g * mg + c) * positions + t.q0);
            spread((op.add(c - t.c0), pm), n, LANES, (dst, positions));
        }
    }

    /// Positions of the next chunk when `rem` are left: chunks of `r_max`, a remainder
    /// between one and two chunks split in two near-equal ones (a chunk of 1 or 2 would
    /// wait on the FMA latency).
    fn chunk_len(rem: usize, r_max: usize) -> usize {
        if rem > r_max && rem < 2 * r_max {
            rem.div_ceil(2)
        } else {
            rem.min(r_max)
        }
    }

    /// [`task`]'s passes over one reduction block on the AVX-512 chunk: two wide vectors (32
    /// channels) at a time, 8 positions a chunk, then a last single wide vector, 12. A part
    /// ending in 8 channels ends in a half vector, the last of its last pass.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn wide_passes(
        j: &Job,
        t: &Task,
        block: &Block,
        by_blocks: bool,
        offset: impl Fn(usize) -> usize,
        (op, stride): (*mut f32, (usize, usize)),
    ) {
        const R_MAX: usize = wide::MAX_R;
        // Positions of a 2-vector pass: 16 accumulators. With 12 (24) the compiler kept
        // copies of accumulators and offsets on the stack in the reduction loop: 128 -> 128
        // 3x3 stride 2 on 56x56 3.08 ms against 1.68 with 8 (10: 2.81; 6: 1.80). A
        // 1-vector pass keeps 12 (RegNet's grouped convs: 8 or 6 took 1.04-1.06x as long).
        const R2_MAX: usize = 8;
        let wides = (t.c1 - t.c0).div_ceil(2 * LANES);
        let ends_half = !(t.c1 - t.c0).is_multiple_of(2 * LANES);
        let mut v0 = t.c0;
        for v in std::iter::repeat_n(2, wides / 2).chain((wides % 2 == 1).then_some(1)) {
            let half = ends_half && v0 + v * 2 * LANES >= t.c1;
            let r_max = match v {
                2 => R2_MAX,
                _ => R_MAX,
            };
            let mut q = t.q0;
            while q < t.q1 {
                let r = chunk_len(t.q1 - q, r_max);
                let mut offs = [0usize; R_MAX];
                for (i, o) in offs.iter_mut().enumerate().take(r) {
                    *o = offset(q + i);
                }
                let at = (q - t.q0) * stride.0 + (v0 - t.c0) / LANES * stride.1;
                let out = (op.add(at), stride);
                macro_rules! run {
                    ($($r:literal)*) => {
                        match (v, r, by_blocks) {
                            $((1, $r, true) => wide::chunk::<$r, 1, true>(j, block, &offs, (v0, half), out),
                              (1, $r, false) => wide::chunk::<$r, 1, false>(j, block, &offs, (v0, half), out),
                              (2, $r, true) => wide::chunk::<$r, 2, true>(j, block, &offs, (v0, half), out),
                              (2, $r, false) => wide::chunk::<$r, 2, false>(j, block, &offs, (v0, half), out),)*
                            _ => unreachable!("passes of 1 or 2 wide vectors, chunks of 1 to 12"),
                        }
                    };
                }
                run!(1 2 3 4 5 6 7 8 9 10 11 12);
                q += r;
            }
            v0 += v * 2 * LANES;
        }
    }

    /// `R` output positions (at input offsets `offs`) times `V` vectors of channels from
    /// `v0`, the reduction over `b`'s channels, stored at `out.0` (`out.1.0` floats per
    /// position, `out.1.1` per vector). A function of its own: inlined into `task`, its variants side by side,
    /// the accumulators went through the stack on every reduction step (RegNet's 14x14
    /// grouped convs took 1.3x im2col's time).
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn chunk<const R: usize, const V: usize, const BY_BLOCKS: bool>(
        j: &Job,
        b: &Block,
        offs: &[usize; MAX_R],
        v0: usize,
        out: (*mut f32, (usize, usize)),
    ) {
        let (qs, vs) = out.1;
        let kdim = j.p.cg() * j.taps.len();
        let offs: [usize; R] = std::array::from_fn(|r| offs[r]);
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        if !b.first {
            for (r, acc) in acc.iter_mut().enumerate() {
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(out.0.add(r * qs + v * vs));
                }
            }
        }
        // Vector `v0 / 8 + v`'s weights from the block's first reduction step.
        let mut w =
            j.w.as_ptr()
                .add((v0 / LANES * kdim + b.ci0 * j.taps.len()) * LANES);
        let xp = j.x.as_ptr();
        if BY_BLOCKS {
            // One tap at offset 0 (`taps == [0]`); channel `cb + l` at `chan[cb] + l`.
            for cb in (b.ci0..b.ci1).step_by(LANES) {
                let x = xp.add(j.chan[cb]);
                for l in 0..LANES {
                    let mut wv = [_mm256_setzero_ps(); V];
                    for (v, wv) in wv.iter_mut().enumerate() {
                        *wv = _mm256_loadu_ps(w.add(v * kdim * LANES + l * LANES));
                    }
                    for (acc, &o) in acc.iter_mut().zip(&offs) {
                        let xv = _mm256_broadcast_ss(&*x.add(o + l));
                        for (a, &wv) in acc.iter_mut().zip(&wv) {
                            *a = _mm256_fmadd_ps(wv, xv, *a);
                        }
                    }
                }
                w = w.add(LANES * LANES);
            }
        }
        for ci in (b.ci0..b.ci1).filter(|_| !BY_BLOCKS) {
            let x = xp.add(j.chan[ci]);
            for &t in j.taps {
                let x = x.add(t);
                let mut wv = [_mm256_setzero_ps(); V];
                for (v, wv) in wv.iter_mut().enumerate() {
                    *wv = _mm256_loadu_ps(w.add(v * kdim * LANES));
                }
                for (acc, &o) in acc.iter_mut().zip(&offs) {
                    let xv = _mm256_broadcast_ss(&*x.add(o));
                    for (a, &wv) in acc.iter_mut().zip(&wv) {
                        *a = _mm256_fmadd_ps(wv, xv, *a);
                    }
                }
                w = w.add(LANES);
            }
        }
        if !b.last {
            for (r, acc) in acc.iter().enumerate() {
                for (v, &a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(out.0.add(r * qs + v * vs), a);
                }
            }
            return;
        }
        let mut bv = [_mm256_setzero_ps(); V];
        if let Some(bias) = j.bias {
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm256_loadu_ps(bias[v0 + v * LANES..][..LANES].as_ptr());
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, &a) in acc.iter().enumerate() {
                let a = match j.bias {
                    Some(_) => _mm256_add_ps(a, bv[v]),
                    None => a,
                };
                _mm256_storeu_ps(out.0.add(r * qs + v * vs), clamp(a, j.act));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against the im2col path (the same FMA chains: the same bits), across group sizes,
    //! row widths (every chunk split), strides, dilations, pads, bias and clamps.
    use super::super::conv::{im2col_path, plan};
    use super::applies;
    use crate::kernels::blocked::{blockable, blocked_shape, to_blocked, to_planes, Layout};
    use crate::kernels::sgemm::{Activation, Kernel};
    use crate::kernels::test_data::{conv_attrs, noise, on_threads};
    use crate::kernels::uninit::of_init;

    /// Against im2col, in every pair of layouts the shapes allow (a blocked input needs a
    /// multiple of 8 input channels, a blocked output of 8 output channels).
    fn run(xs: &[usize], ws: &[usize], a: &crate::ir::op::ConvAttrs, act: Activation, seed: u64) {
        let p = plan(xs, ws, Some(&[ws[0]]), a).unwrap();
        assert!(applies(&p, false) || applies(&p, true), "{p:?}");
        let x = noise(xs, seed);
        let w = noise(ws, seed + 1);
        let bias = noise(&[ws[0]], seed + 2);
        let (xd, wd) = (x.as_slice().unwrap(), w.as_slice().unwrap());
        let xb = blockable(xs).then(|| to_blocked(&x));
        let wp = super::pack_weights(&p, wd);
        for bias in [None, Some(bias.as_slice().unwrap())] {
            let want = im2col_path(&p, xd, &w, bias, act, false);
            let mut ios = vec![(Layout::Planes, Layout::Planes)];
            if xb.is_some() {
                ios.push((Layout::Blocked, Layout::Planes));
            }
            if blockable(&p.out_shape) {
                ios.push((Layout::Planes, Layout::Blocked));
                if xb.is_some() {
                    ios.push((Layout::Blocked, Layout::Blocked));
                }
            }
            for io in ios {
                let xd = match io.0 {
                    Layout::Planes => xd,
                    Layout::Blocked => xb.as_ref().unwrap().as_slice().unwrap(),
                };
                let mut got = vec![f32::NAN; want.len()];
                // SAFETY: conv writes floats only.
                super::conv(&p, xd, &wp, bias, act, unsafe { of_init(&mut got) }, io);
                if io.1 == Layout::Blocked {
                    let held = blocked_shape(&p.out_shape);
                    let y = ndarray::ArrayD::from_shape_vec(held, got).unwrap();
                    got = to_planes(&y).into_raw_vec_and_offset().0;
                }
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{p:?} bias {} {io:?}",
                    bias.is_some()
                );
            }
        }
    }

    /// Whether this CPU runs the path: AVX2 (every conv on the AVX2 chunk) or AVX-512 (every
    /// conv on the wide chunk, those of an odd multiple of 8 channels a group on its half
    /// vectors, where `narrow_pays`).
    fn path_runs() -> Option<Kernel> {
        let k = Kernel::detect();
        matches!(k, Kernel::Avx2 | Kernel::Avx512).then_some(k)
    }

    #[test]
    fn same_bits_as_im2col() {
        let Some(kernel) = path_runs() else {
            return; // The path needs AVX2 or AVX-512.
        };
        let acts = [
            Activation::NONE,
            Activation::RELU,
            Activation {
                lo: Some(-1.0),
                hi: Some(1.0),
            },
        ];
        let mut checked = 0;
        // Grouped (on AVX-512, the wide chunk takes those of 16, 32 and 48 channels a group:
        // passes of 1, 2, and 2 + 1 wide vectors; 200 input channels a group reduce a 3x3 in
        // blocks, 528 a 1x1), then ungrouped (passes of 2, 3 + 2, 1 vectors; 3x3 or larger,
        // and the 1x1 48 -> 24, 80 -> 40 and 528 -> 16 a blocked input brings here, the
        // first two ending in a half vector on AVX-512 CPUs, the last reduced in two blocks of
        // 264 channels; 50 channels: a 3x3 reduction in blocks of 17, 17 and 16).
        let shapes = [
            (3, 16, 16),
            (2, 4, 8),
            (2, 5, 24),
            (2, 8, 32),
            (2, 4, 48),
            (2, 200, 16),
            (2, 528, 16),
            (1, 16, 32),
            (1, 5, 40),
            (1, 3, 8),
            (1, 50, 16),
            (1, 48, 24),
            (1, 80, 40),
            (1, 528, 16),
        ];
        let (mut blocked, mut blocked_1x1) = (0, 0);
        for (groups, cg, mg) in shapes {
            for k in [1, 3] {
                // Ungrouped 1x1 convs only where a blocked input brings them here (narrowing
                // ones, or widening ones of few input channels).
                if groups == 1 && k == 1 && 2 * mg > cg && cg > super::MAX_WIDENING_INPUTS {
                    continue;
                }
                for (s, d, pad) in [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 1, 0)] {
                    for w in [1, 5, 7, 8, 11, 13, 14, 17, 23] {
                        let h = 1 + w % 5;
                        let pad = pad.min(k - 1);
                        let a = conv_attrs(groups, &[s, s], &[d, d], &[pad, pad, pad, pad]);
                        let (xs, ws) = ([2, groups * cg, h, w], [groups * mg, cg, k, k]);
                        let Ok(p) = plan(&xs, &ws, None, &a) else {
                            continue;
                        };
                        if !applies(&p, false) && !applies(&p, true) {
                            continue; // Not on this CPU (AVX-512: 8 a group, or most ungrouped).
                        }
                        run(&xs, &ws, &a, acts[checked % 3], checked as u64);
                        let split = usize::from(super::block_channels(&p) < cg);
                        blocked += split;
                        blocked_1x1 += split * usize::from(k == 1);
                        checked += 1;
                    }
                }
            }
        }
        // How many shapes each CPU's path takes (a change to `applies` shows here).
        let at_least = match kernel {
            Kernel::Avx2 => [300, 30, 10],
            _ => [200, 30, 10],
        };
        assert!(checked >= at_least[0], "only {checked} shapes");
        assert!(
            blocked >= at_least[1],
            "only {blocked} shapes with more than one reduction block"
        );
        assert!(
            blocked_1x1 >= at_least[2],
            "only {blocked_1x1} 1x1 convs reduced in blocks"
        );
        // Two bands of positions (more than `BAND`) in one task's part; a 5x5 kernel.
        let a = conv_attrs(2, &[1, 1], &[], &[2, 2, 2, 2]);
        run(&[1, 32, 20, 20], &[64, 16, 5, 5], &a, Activation::RELU, 7);
    }

    /// On AVX-512 CPUs, the projections of an odd multiple of 8 output channels (24 or 40)
    /// run here (on half vectors) when their input is blocked, and only then; square
    /// 1x1 convs of such widths and inputs in planes stay on the sgemm. Widening ones on a
    /// blocked input run on the wide chunk up to `MAX_WIDENING_INPUTS` input channels.
    #[test]
    fn which_1x1_convs_on_avx512() {
        if path_runs() != Some(Kernel::Avx512) {
            return; // The rule is AVX-512's; on AVX2 the chunk takes every blocked 1x1.
        }
        let a = conv_attrs(1, &[1, 1], &[], &[0, 0, 0, 0]);
        let takes = |c: usize, m: usize, blocked: bool| {
            let p = plan(&[1, c, 56, 56], &[m, c, 1, 1], None, &a).unwrap();
            applies(&p, blocked)
        };
        assert!(takes(144, 24, true) && takes(96, 24, true) && takes(240, 40, true));
        assert!(!takes(144, 24, false), "input in planes");
        assert!(
            !takes(232, 232, true) && !takes(40, 24, true),
            "not narrowing by half"
        );
        assert!(takes(144, 32, true), "wide, as before");
        assert!(
            takes(16, 64, true) && takes(128, 512, true),
            "widening, few inputs"
        );
        assert!(
            !takes(256, 1024, true) && !takes(64, 256, false),
            "many inputs, or planes"
        );
        let strided = |c: usize, m: usize, blocked: bool| {
            let a = conv_attrs(1, &[2, 2], &[], &[0, 0, 0, 0]);
            applies(
                &plan(&[1, c, 56, 56], &[m, c, 1, 1], None, &a).unwrap(),
                blocked,
            )
        };
        assert!(
            strided(32, 32, false) && strided(32, 64, true),
            "strided, few inputs"
        );
        assert!(!strided(64, 128, false), "strided, more inputs");
    }

    const PLANES: (Layout, Layout) = (Layout::Planes, Layout::Planes);

    #[test]
    fn same_bits_for_any_thread_count() {
        if path_runs().is_none() {
            return;
        }
        // Grouped (one task per group either way); ungrouped, cut into parts and bands on
        // more than one thread only.
        for (xs, ws, group, stride) in [
            ([2, 40, 13, 13], [80, 8, 3, 3], 5, 2),
            ([1, 16, 13, 13], [32, 16, 3, 3], 1, 1),
        ] {
            let a = conv_attrs(group, &[stride, stride], &[], &[1, 1, 1, 1]);
            let p = plan(&xs, &ws, None, &a).unwrap();
            if !applies(&p, false) {
                assert_eq!(group, 1, "{p:?}"); // AVX-512 takes grouped convs only.
                continue;
            }
            let x = noise(&xs, 3);
            let w = noise(&ws, 4);
            let wp = super::pack_weights(&p, w.as_slice().unwrap());
            let run = |t| {
                on_threads(t, || {
                    let mut out = vec![f32::NAN; p.out_shape.iter().product()];
                    let xd = x.as_slice().unwrap();
                    // SAFETY: conv writes floats only.
                    let o = unsafe { of_init(&mut out) };
                    super::conv(&p, xd, &wp, None, Activation::RELU, o, PLANES);
                    out
                })
            };
            let bits = |v: Vec<f32>| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(run(1)), bits(run(2)));
        }
    }
}
