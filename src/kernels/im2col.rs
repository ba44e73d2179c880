//! Conv's patch matrix, packed straight into the sgemm's B panels.
//!
//! For a block of output positions `p0..p0 + len` of one (batch, group), row `r` = (input
//! channel, kernel tap) of the patch matrix holds, per output position, the input value that
//! tap reads (0 in the padding). The rows are written directly into the packed layout
//! ([`sgemm::NR`]-column panels, `kdim` rows each): no intermediate im2col matrix.
//!
//! The input the block reads is first copied into a zero-padded scratch, so that no tap
//! needs a bounds test, and each block column gets its offset there; every patch-matrix row
//! is then one indexed load per column, `padded[tap + offs[col]]`, whatever the stride,
//! dilation or row length. Where those offsets form long runs (stride-1 output rows of 14
//! or more positions), a row is copied run by run instead, in the short fixed-size moves
//! of [`copy_short`]. (A run-by-run copy through memmove, before the indexed loads, cost a
//! few dozen cycles per run whatever its length: 10 cycles per float for the 7-position
//! rows of late layers, where 3x3 grouped convs spent three quarters of their time
//! packing.)

use super::conv::{InputAffine, Plan};
use super::pool_flat::strided_copy;
use super::sgemm::{self, NR};
use super::uninit;
use std::mem::MaybeUninit;

/// Per-task scratch: the padded input of the block and its columns' offsets there.
/// Shortest mean run (floats) for the run-by-run copy. Output rows of 7 (mean runs of
/// about 5 per 32-column panel) timed the same either way; from 28 wide on, the runs took
/// 0.86-0.95 of the time of indexed loads (single 3x3 convs, 1 thread, in-process A/B).
const MIN_RUN: usize = 8;

#[derive(Default)]
pub(super) struct Scratch {
    padded: Vec<f32>,
    offs: Vec<usize>,
    /// Runs of consecutive offsets within a panel: (column in the panel, length, offset).
    runs: Vec<(usize, usize, usize)>,
    /// Where each panel's runs start in `runs` (one more entry than panels).
    panel_runs: Vec<usize>,
}

/// `d = s[..d.len()]` for short runs, in fixed-size moves the compiler keeps inline:
/// 8-float moves, the last one overlapping the one before, then 4-float moves, then single
/// floats. `copy_from_slice` (or a loop of single floats, which the compiler turns into
/// one) calls libc's memmove for a run-time length, and for runs of 7 to 32 floats that
/// call cost a quarter of a 3x3 conv's packing. (Also used by the depthwise and Winograd
/// kernels.)
#[inline(always)]
pub(super) fn copy_short(d: &mut [f32], s: &[f32]) {
    // SAFETY: copy_short_uninit writes initialized floats only.
    copy_short_uninit(unsafe { uninit::of_init(d) }, s)
}

/// [`copy_short`] into floats that may not be initialized yet (a conv's output).
#[inline(always)]
pub(super) fn copy_short_uninit(d: &mut [MaybeUninit<f32>], s: &[f32]) {
    let n = d.len();
    let s = &s[..n];
    if n >= 8 {
        let mut i = 0;
        loop {
            let at = i.min(n - 8);
            *<&mut [MaybeUninit<f32>; 8]>::try_from(&mut d[at..at + 8]).expect("8") =
                <[f32; 8]>::try_from(&s[at..at + 8])
                    .expect("8")
                    .map(MaybeUninit::new);
            if at == n - 8 {
                break;
            }
            i += 8;
        }
    } else if n >= 4 {
        for at in [0, n - 4] {
            *<&mut [MaybeUninit<f32>; 4]>::try_from(&mut d[at..at + 4]).expect("4") =
                <[f32; 4]>::try_from(&s[at..at + 4])
                    .expect("4")
                    .map(MaybeUninit::new);
        }
    } else {
        for j in 0..3 {
            if j < n {
                d[j] = MaybeUninit::new(s[j]);
            }
        }
    }
}

/// `d = 0` for short runs (at most [`NR`] floats), in fixed-size moves as [`copy_short`].
#[inline(always)]
fn zero_short(d: &mut [f32]) {
    copy_short(d, &[0.0; NR]);
}

/// Most positions [`pack_strided_1x1`] packs at once (the im2col blocks hold at most 256).
const STRIDED_MAX: usize = 256;

/// A 2-D 1x1 unpadded conv with a stride (the downsampling shortcuts of ResNet and RegNet):
/// each patch is one input element, every `sw`-th of every `sh`-th row. Unpadded at the
/// end too: every output reads inside the input (`pads` holds the leading pads only).
fn strided_1x1(p: &Plan) -> bool {
    let inside = |i: usize| p.output[i].saturating_sub(1) * p.strides[i] < p.input[i];
    p.kernel == [1; 3]
        && p.pads == [0; 3]
        && p.input[0] == 1
        && p.output[0] == 1
        && inside(1)
        && inside(2)
}

/// The patches of a [`strided_1x1`] conv: per input channel, the block's positions row
/// segment by row segment, every `sw`-th input column (`strided_copy`, vectorized for
/// stride 2), then into the panels as the pointwise path does. The general path copied every
/// input row the block spans into its padded scratch, the rows between the strided ones
/// too, then loaded each patch element by index: RegNet-X's 32 -> 32 stride-2 shortcut on
/// 112x112 took 0.28 ms there, against 0.095 in onnxruntime.
fn pack_strided_1x1(p: &Plan, x: &[f32], (p0, len): (usize, usize), packed: &mut [f32]) {
    let [_, _, iw] = p.input;
    let [_, ow] = [p.output[1], p.output[2]];
    let [_, sh, sw] = p.strides;
    let (cg, in_plane) = (p.cg(), p.in_plane());
    let mut row = [0f32; STRIDED_MAX];
    for c in 0..cg {
        let xc = &x[c * in_plane..(c + 1) * in_plane];
        let mut j = 0;
        while j < len {
            let (oy, ox) = ((p0 + j) / ow, (p0 + j) % ow);
            let run = (ow - ox).min(len - j);
            strided_copy(&mut row[j..j + run], &xc[oy * sh * iw + ox * sw..], sw);
            j += run;
        }
        for (q, src) in row[..len].chunks(NR).enumerate() {
            let d = &mut packed[(q * cg + c) * NR..][..NR];
            copy_short(&mut d[..src.len()], src);
            zero_short(&mut d[src.len()..]);
        }
    }
}

/// How [`pack_patches`] reads a conv's input.
#[derive(Clone, Copy)]
pub(super) enum Patches<'a> {
    /// Any conv: each patch gathered from a zero-padded copy of the rows it reads.
    Gather,
    /// A 1x1 stride-1 unpadded conv: each input position read once, in order (its input
    /// plane already is the patch matrix), through the ungrouped conv's input affine when
    /// given (`InputAffine::apply`'s expression, so the bits of the affine's own pass).
    Pointwise(Option<&'a InputAffine>),
}

/// Packs the patch matrix (`kdim x len`) of output positions `p0..p0 + len` of one (batch,
/// group) straight into the sgemm's B panels in `packed` (`packed_b_len(kdim, len)` floats).
/// `x` is the group's input channels.
pub(super) fn pack_patches(
    p: &Plan,
    x: &[f32],
    cols: (usize, usize),
    patches: Patches,
    s: &mut Scratch,
    packed: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { pack_avx2(p, x, cols, patches, s, packed) };
        return;
    }
    pack_body(p, x, cols, patches, s, packed)
}

/// [`pack_body`] compiled for AVX2 (the crate is built for baseline x86-64): 32-byte moves
/// for the zero fills and row copies; the indexed loads stay scalar (no gathers). About
/// 10% faster than the baseline copy on 3x3 grouped convs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_avx2(
    p: &Plan,
    x: &[f32],
    cols: (usize, usize),
    patches: Patches,
    s: &mut Scratch,
    packed: &mut [f32],
) {
    pack_body(p, x, cols, patches, s, packed)
}

#[inline(always)]
fn pack_body(
    p: &Plan,
    x: &[f32],
    (p0, len): (usize, usize),
    patches: Patches,
    s: &mut Scratch,
    packed: &mut [f32],
) {
    let kdim = p.cg() * p.k_plane();
    debug_assert_eq!(packed.len(), sgemm::packed_b_len(kdim, len));
    if len == 0 {
        return;
    }
    if let Patches::Pointwise(affine) = patches {
        let in_plane = p.in_plane();
        for c in 0..p.cg() {
            let row = &x[c * in_plane + p0..c * in_plane + p0 + len];
            for (q, src) in row.chunks(NR).enumerate() {
                let d = &mut packed[(q * kdim + c) * NR..][..NR];
                match affine {
                    None => copy_short(&mut d[..src.len()], src),
                    Some(f) => f.apply_row(c, &mut d[..src.len()], src),
                }
                zero_short(&mut d[src.len()..]);
            }
        }
        return;
    }
    if strided_1x1(p) && len <= STRIDED_MAX {
        pack_strided_1x1(p, x, (p0, len), packed);
        return;
    }
    let [id, ih, iw] = p.input;
    let [kd, kh, kw] = p.kernel;
    let [sd, sh, sw] = p.strides;
    let [dd, dh, dw] = p.dilations;
    let [pd, ph, pw] = p.pads;
    let [_, oh, ow] = p.output;
    let (cg, in_plane) = (p.cg(), p.in_plane());
    // The block's output depth slices z0..=z1 and rows ya..=yb (all rows when it spans
    // several slices); the padded extent they read. Padded (0, 0, 0) is input (z0 * sd -
    // pd, ya * sh - ph, -pw).
    let (first, last) = (p0 / ow, (p0 + len - 1) / ow);
    let (z0, z1) = (first / oh, last / oh);
    let (ya, yb) = match z0 == z1 {
        true => (first % oh, last % oh),
        false => (0, oh - 1),
    };
    let dp = (z1 - z0) * sd + (kd - 1) * dd + 1;
    let hp = (yb - ya) * sh + (kh - 1) * dh + 1;
    let wp = (ow - 1) * sw + (kw - 1) * dw + 1;
    let vol = dp * hp * wp;
    let (front, top) = (
        (z0 * sd) as isize - pd as isize,
        (ya * sh) as isize - ph as isize,
    );
    // Padded columns lo..hi hold input columns 0..hi - lo.
    let (lo, hi) = (pw.min(wp), (pw + iw).min(wp));
    s.padded.clear();
    s.padded.resize(cg * vol, 0.0);
    for c in 0..cg {
        for zz in 0..dp {
            let z = front + zz as isize;
            if z < 0 || z as usize >= id {
                continue;
            }
            for r in 0..hp {
                let y = top + r as isize;
                if y < 0 || y as usize >= ih {
                    continue;
                }
                let src = &x[c * in_plane + (z as usize * ih + y as usize) * iw..][..hi - lo];
                s.padded[c * vol + (zz * hp + r) * wp + lo..][..hi - lo].copy_from_slice(src);
            }
        }
    }
    s.offs.clear();
    s.offs.extend((p0..p0 + len).map(|pos| {
        let (row, ox) = (pos / ow, pos % ow);
        ((row / oh - z0) * sd * hp + (row % oh - ya) * sh) * wp + ox * sw
    }));
    // The largest offset plus the largest tap stays inside a channel's padded volume.
    let far = s.offs.iter().max().copied().unwrap_or(0);
    assert!(far + ((kd - 1) * dd * hp + (kh - 1) * dh) * wp + (kw - 1) * dw < vol);
    // Stride-1 rows are runs of consecutive offsets (an output row's positions read
    // consecutive input columns): copied run by run when the runs are long enough.
    s.runs.clear();
    s.panel_runs.clear();
    for offs in s.offs.chunks(NR) {
        s.panel_runs.push(s.runs.len());
        let mut at = 0;
        for run in offs.chunk_by(|a, b| *b == a + 1) {
            s.runs.push((at, run.len(), run[0]));
            at += run.len();
        }
    }
    s.panel_runs.push(s.runs.len());
    let by_runs = s.runs.len() * MIN_RUN <= len;
    let mut r = 0;
    for c in 0..cg {
        let chan = &s.padded[c * vol..(c + 1) * vol];
        for a in 0..kd {
            for bb in 0..kh {
                for cc in 0..kw {
                    let tap = (a * dd * hp + bb * dh) * wp + cc * dw;
                    if by_runs {
                        for (q, w) in s.panel_runs.windows(2).enumerate() {
                            let d = &mut packed[(q * kdim + r) * NR..][..NR];
                            for &(at, n, o) in &s.runs[w[0]..w[1]] {
                                copy_short(&mut d[at..at + n], &chan[tap + o..tap + o + n]);
                            }
                            zero_short(&mut d[NR.min(len - q * NR)..]);
                        }
                        r += 1;
                        continue;
                    }
                    for (q, offs) in s.offs.chunks(NR).enumerate() {
                        let d = &mut packed[(q * kdim + r) * NR..][..NR];
                        for (v, &o) in d.iter_mut().zip(offs) {
                            // SAFETY: tap + o <= tap + far < chan.len(), asserted above.
                            *v = unsafe { *chan.get_unchecked(tap + o) };
                        }
                        zero_short(&mut d[offs.len()..]);
                    }
                    r += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_data::conv_attrs;

    /// The packed patch matrix, element by element from the definition.
    fn naive(p: &Plan, x: &[f32], p0: usize, len: usize) -> Vec<f32> {
        let kdim = p.cg() * p.k_plane();
        let mut out = vec![0.0; sgemm::packed_b_len(kdim, len)];
        let [kd, kh, kw] = p.kernel;
        let [_, oh, ow] = p.output;
        for r in 0..kdim {
            let (c, tap) = (r / p.k_plane(), r % p.k_plane());
            let k = [tap / (kh * kw), tap / kw % kh, tap % kw];
            debug_assert!(k[0] < kd);
            for col in 0..len {
                let pos = p0 + col;
                let o = [pos / (oh * ow), pos / ow % oh, pos % ow];
                let i: [isize; 3] = std::array::from_fn(|d| {
                    (o[d] * p.strides[d] + k[d] * p.dilations[d]) as isize - p.pads[d] as isize
                });
                let inside = (0..3).all(|d| i[d] >= 0 && (i[d] as usize) < p.input[d]);
                let v = if inside {
                    let [z, y, xx] = i.map(|v| v as usize);
                    x[c * p.in_plane() + (z * p.input[1] + y) * p.input[2] + xx]
                } else {
                    0.0
                };
                out[((col / NR) * kdim + r) * NR + col % NR] = v;
            }
        }
        out
    }

    /// Both move sets write every slot of the packed panels exactly as the definition says
    /// (the buffer starts as NaN, so a slot left unwritten fails), for strides, dilations,
    /// pads, kernels wider than the padding, rows cut at panel edges and blocks shorter
    /// than a panel, by indexed loads and (long stride-1 rows) run by run.
    #[test]
    fn packed_patches_match_the_definition() {
        type Case<'a> = (
            &'a [usize],
            &'a [usize],
            &'a [usize],
            &'a [usize],
            &'a [usize],
        );
        let cases: &[Case] = &[
            // (input, kernel, strides, dilations, pads begin ++ end)
            (&[1, 3, 9, 13], &[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1]),
            (&[1, 2, 56, 56], &[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1]),
            (&[1, 2, 15, 17], &[3, 3], &[2, 2], &[1, 1], &[1, 1, 1, 1]),
            (&[1, 2, 9, 70], &[3, 3], &[2, 2], &[1, 1], &[1, 1, 1, 1]),
            (&[1, 2, 6, 40], &[1, 5], &[1, 1], &[1, 1], &[0, 2, 0, 2]),
            (&[1, 3, 23, 23], &[7, 7], &[2, 2], &[1, 1], &[3, 3, 3, 3]),
            (&[1, 2, 11, 40], &[3, 5], &[1, 3], &[2, 1], &[0, 2, 3, 1]),
            (&[1, 2, 7, 7], &[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0]),
            (&[1, 2, 5, 6], &[3, 3], &[1, 1], &[1, 1], &[2, 2, 2, 2]),
            (&[1, 2, 33], &[4], &[1], &[1], &[2, 1]),
            // Pads wider than the kernel reaches; a row that reads only padding.
            (&[1, 2, 4, 4], &[3, 3], &[1, 1], &[1, 1], &[3, 3, 3, 3]),
            (&[1, 1, 3, 1], &[1, 1], &[1, 10], &[1, 1], &[0, 5, 0, 0]),
            // Strided 1x1 (`pack_strided_1x1`): odd widths, rows cut by the blocks, a stride
            // of 3 and one on rows only, 1-D, and a block over STRIDED_MAX (the general path).
            (&[1, 3, 14, 15], &[1, 1], &[2, 2], &[1, 1], &[0, 0, 0, 0]),
            (&[1, 2, 20, 70], &[1, 1], &[2, 2], &[1, 1], &[0, 0, 0, 0]),
            (&[1, 2, 10, 31], &[1, 1], &[3, 3], &[1, 1], &[0, 0, 0, 0]),
            (&[1, 2, 9, 12], &[1, 1], &[2, 1], &[1, 1], &[0, 0, 0, 0]),
            (&[1, 2, 33], &[1], &[2], &[1], &[0, 0]),
            // Padded at the end only: outputs past the input read the padding (general path).
            (&[1, 2, 5, 7], &[1, 1], &[2, 2], &[1, 1], &[0, 0, 1, 2]),
            (&[1, 1, 3, 4], &[1, 1], &[1, 2], &[1, 1], &[0, 0, 0, 3]),
            // Long stride-1 rows over depth slices (copied run by run).
            (
                &[1, 2, 3, 4, 20],
                &[2, 3, 3],
                &[1, 1, 1],
                &[1, 1, 1],
                &[1, 1, 1, 0, 1, 1],
            ),
            (
                &[1, 1, 4, 5, 6],
                &[2, 3, 3],
                &[1, 2, 1],
                &[2, 1, 1],
                &[1, 1, 1, 0, 1, 1],
            ),
        ];
        for &(xs, ks, strides, dils, pads) in cases {
            let ws: Vec<usize> = [4, xs[1]].iter().chain(ks).copied().collect();
            let a = conv_attrs(1, strides, dils, pads);
            let p = super::super::conv::plan(xs, &ws, None, &a).unwrap();
            let x: Vec<f32> = (0..xs.iter().product::<usize>())
                .map(|i| (i as f32 * 0.37).sin() + 1.5)
                .collect();
            let patches = match p.kernel == [1; 3] && p.strides == [1; 3] && p.pads == [0; 3] {
                true => Patches::Pointwise(None),
                false => Patches::Gather,
            };
            let plane = p.out_plane();
            let kdim = p.cg() * p.k_plane();
            for (p0, len) in [
                (0, plane),
                (plane / 3, plane - plane / 3),
                (1, 5.min(plane - 1)),
            ] {
                let want = naive(&p, &x, p0, len);
                let mut s = Scratch::default();
                let mut got = vec![f32::NAN; sgemm::packed_b_len(kdim, len)];
                pack_body(&p, &x, (p0, len), patches, &mut s, &mut got);
                assert_eq!(got, want, "baseline {xs:?} {ks:?} block {p0}+{len}");
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    got.fill(f32::NAN);
                    // SAFETY: the CPU has AVX2.
                    unsafe { pack_avx2(&p, &x, (p0, len), patches, &mut s, &mut got) };
                    assert_eq!(got, want, "avx2 {xs:?} {ks:?} block {p0}+{len}");
                }
            }
        }
    }
}
