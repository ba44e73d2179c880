//! Grouped convs (RegNet's 3x3 convs of 16 channels per group) on AVX2 + FMA, with the
//! output channels in the vector lanes: per group, 16 (or 8) output channels times up to 6
//! consecutive positions of a row in 12 registers, each reduction step one broadcast input
//! value per position times one weight vector per 8 channels. That is the layout
//! onnxruntime's NCHWc kernels use; it needs no patch matrix and wastes no lanes on short
//! rows, where im2col ran RegNet's 14x14 and 7x7 grouped convs (a reduction of 144, 16
//! output rows, 49 or 196 columns per group) at 1.7-1.9x onnxruntime's time.
//!
//! Per (batch, group) task: the group's input planes are copied into a zero-padded buffer,
//! the outputs computed into an interleaved buffer (position by position, the group's
//! channels side by side) and spread into the output planes by 8x8 transposes.
//!
//! Each output is the FMA chain `w * x` over the reduction in im2col's order (channel, then
//! kernel row, then kernel column) from +0.0, then `+ bias` (only with one), then the clamp:
//! the sgemm micro-kernels' operations in the same order, so the same bits as the im2col
//! path (tests below), on any number of threads.

use super::conv::Plan;
use super::gemm::SendPtr;
use super::sgemm::{Activation, Kernel};
use rayon::prelude::*;

/// Output channels per vector.
const LANES: usize = 8;
/// Most positions computed together (2 vectors of channels x 6 positions = 12 accumulators,
/// plus 2 weight vectors and a broadcast, within the 16 ymm registers).
const MAX_R: usize = 6;
/// Largest padded input plane this path takes (positions): RegNet's 112x112 -> 56x56 one
/// (two groups, an 830 KiB buffer) still gains. RegNet-X 400MF in the net (one thread, min
/// over 4 alternating runs): its 7x7 grouped convs 0.18 -> 0.09 ms (onnxruntime 0.14), 14x14
/// 0.22 -> 0.12 (0.17), 28x28 0.25 -> 0.18 and 56x56 -> 28x28 0.36 -> 0.20 (both on
/// `conv_direct` before), 112x112 -> 56x56 0.62 -> 0.55.
const MAX_PADDED: usize = 114 * 114;

/// Whether this path takes `p`: 2-D grouped (not depthwise) convs whose groups have a
/// multiple of 8 output channels, column stride 1 or 2, on a CPU whose sgemm kernel is AVX2.
pub(super) fn applies(p: &Plan) -> bool {
    Kernel::detect() == Kernel::Avx2
        && p.group > 1
        && p.cg() > 1
        && p.mg().is_multiple_of(LANES)
        && p.input[0] == 1
        && p.kernel[0] == 1
        && p.output[0] == 1
        && p.pads[0] == 0
        && matches!(p.strides[2], 1 | 2)
        && padded(p, 1) * padded(p, 2) <= MAX_PADDED
}

/// Extent of spatial axis `i` once padded: enough for every tap of every output.
fn padded(p: &Plan, i: usize) -> usize {
    let reach = (p.output[i] - 1) * p.strides[i] + (p.kernel[i] - 1) * p.dilations[i] + 1;
    reach.max(p.input[i] + p.pads[i])
}

/// The weights with the output channels innermost: group `g`'s reduction step `k` is
/// `mg` floats at `(g * K + k) * mg`, where the Conv's weights hold them `K` apart. Built
/// once per Conv (kept in `conv::Prepared`) or per call.
pub(super) fn pack_weights(p: &Plan, w: &[f32]) -> Vec<f32> {
    let (mg, kdim) = (p.mg(), p.cg() * p.k_plane());
    let mut out = vec![0f32; p.m * kdim];
    for g in 0..p.group {
        for o in 0..mg {
            let src = &w[(g * mg + o) * kdim..][..kdim];
            for (k, &v) in src.iter().enumerate() {
                out[(g * kdim + k) * mg + o] = v;
            }
        }
    }
    out
}

/// Per-task buffers, kept between the groups of one call.
#[derive(Default)]
struct Scratch {
    /// The group's padded input planes.
    input: Vec<f32>,
    /// The group's outputs, `mg` channels per position.
    output: Vec<f32>,
}

/// `out` = the grouped conv of `x` with the weights `wp` (from [`pack_weights`]), `+ bias`,
/// clamped.
pub(super) fn conv(
    p: &Plan,
    x: &[f32],
    wp: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [f32],
) {
    let kdim = p.cg() * p.k_plane();
    assert!(x.len() >= p.n * p.c * p.in_plane());
    assert!(wp.len() >= p.m * kdim && bias.is_none_or(|b| b.len() >= p.m));
    assert!(out.len() >= p.n * p.m * p.out_plane());
    let (hp, wpad) = (padded(p, 1), padded(p, 2));
    let [_, kh, kw] = p.kernel;
    let [_, dh, dw] = p.dilations;
    // Offset of tap (a, b) in a padded plane.
    let taps: Vec<usize> = (0..kh * kw)
        .map(|t| (t / kw) * dh * wpad + (t % kw) * dw)
        .collect();
    let outp = SendPtr(out.as_mut_ptr());
    (0..p.n * p.group)
        .into_par_iter()
        .for_each_init(Scratch::default, |s, t| {
            let (b, g) = (t / p.group, t % p.group);
            let job = Job {
                p,
                hp,
                wp: wpad,
                taps: &taps,
                x,
                w: &wp[g * kdim * p.mg()..][..kdim * p.mg()],
                bias: bias.map(|b| &b[g * p.mg()..][..p.mg()]),
                act,
            };
            // SAFETY: `applies` checked the CPU (the AVX2 sgemm kernel implies AVX2 and
            // FMA); the task writes the planes of its own (batch, group) only.
            unsafe {
                match p.strides[2] {
                    1 => imp::group::<1>(&job, b, g, s, outp),
                    _ => imp::group::<2>(&job, b, g, s, outp),
                }
            }
        });
}

/// What every task of one call shares.
struct Job<'a> {
    p: &'a Plan,
    /// Padded height and width.
    hp: usize,
    wp: usize,
    /// Offset of each kernel tap in a padded plane.
    taps: &'a [usize],
    x: &'a [f32],
    /// This group's packed weights (`K x mg`).
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    act: Activation,
}

mod imp {
    use super::super::im2col::copy_short;
    use super::super::sgemm::clamp_avx2 as clamp;
    use super::super::transpose_avx2::spread;
    use super::{Job, Scratch, SendPtr, LANES, MAX_R};
    use std::arch::x86_64::*;

    /// Group `g` of batch `b`, column stride `SW`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn group<const SW: usize>(
        j: &Job,
        b: usize,
        g: usize,
        s: &mut Scratch,
        out: SendPtr<f32>,
    ) {
        let p = j.p;
        let (cg, mg) = (p.cg(), p.mg());
        let [_, ih, iw] = p.input;
        let [_, oh, ow] = p.output;
        let [_, ph, pw] = p.pads;
        let (in_plane, out_plane) = (ih * iw, oh * ow);
        let plane = j.hp * j.wp;
        // Every group writes the same interior positions: the zero padding once per task.
        if s.input.len() != cg * plane {
            s.input.clear();
            s.input.resize(cg * plane, 0.0);
        }
        for ci in 0..cg {
            let src = &j.x[(b * p.c + g * cg + ci) * in_plane..][..in_plane];
            let dst = &mut s.input[ci * plane..][..plane];
            for y in 0..ih {
                let at = (y + ph) * j.wp + pw;
                copy_short(&mut dst[at..at + iw], &src[y * iw..][..iw]);
            }
        }
        // Every position is written before the spread reads it; 8 more read and dropped.
        s.output.resize((out_plane + LANES) * mg, 0.0);
        let xp = s.input.as_ptr();
        let op = s.output.as_mut_ptr();
        let sh = p.strides[1];
        for v0 in (0..mg).step_by(2 * LANES) {
            let two = mg - v0 >= 2 * LANES;
            for oy in 0..oh {
                let mut ox = 0;
                while ox < ow {
                    // Chunks of 6, a remainder of 7 to 11 split in two near-equal chunks
                    // (a chunk of 1 or 2 would wait on the FMA latency).
                    let rem = ow - ox;
                    let r = if rem > MAX_R && rem < 2 * MAX_R {
                        rem.div_ceil(2)
                    } else {
                        rem.min(MAX_R)
                    };
                    let at = (oy * sh * j.wp + ox * SW, (oy * ow + ox) * mg + v0);
                    match (two, r) {
                        (true, 6) => chunk::<SW, 6, 2>(j, xp, plane, at, v0, op),
                        (true, 5) => chunk::<SW, 5, 2>(j, xp, plane, at, v0, op),
                        (true, 4) => chunk::<SW, 4, 2>(j, xp, plane, at, v0, op),
                        (true, 3) => chunk::<SW, 3, 2>(j, xp, plane, at, v0, op),
                        (true, 2) => chunk::<SW, 2, 2>(j, xp, plane, at, v0, op),
                        (true, _) => chunk::<SW, 1, 2>(j, xp, plane, at, v0, op),
                        (false, 6) => chunk::<SW, 6, 1>(j, xp, plane, at, v0, op),
                        (false, 5) => chunk::<SW, 5, 1>(j, xp, plane, at, v0, op),
                        (false, 4) => chunk::<SW, 4, 1>(j, xp, plane, at, v0, op),
                        (false, 3) => chunk::<SW, 3, 1>(j, xp, plane, at, v0, op),
                        (false, 2) => chunk::<SW, 2, 1>(j, xp, plane, at, v0, op),
                        (false, _) => chunk::<SW, 1, 1>(j, xp, plane, at, v0, op),
                    }
                    ox += r;
                }
            }
        }
        // Spread: per 8 channels, transposed into their planes.
        for c0 in (0..mg).step_by(LANES) {
            let dst = out.get().add((b * p.m + g * mg + c0) * out_plane);
            spread((op.add(c0), mg), out_plane, LANES, (dst, out_plane));
        }
    }

    /// `R` consecutive positions of one output row (the first at padded offset `at.0`) times
    /// `V` vectors of channels from `v0`, stored at `out + at.1` (`mg` floats per position).
    /// A function of its own: inlined into `group`, its twelve variants side by side, the
    /// accumulators went through the stack on every reduction step (RegNet's 14x14 grouped
    /// convs took 1.3x im2col's time).
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn chunk<const SW: usize, const R: usize, const V: usize>(
        j: &Job,
        xp: *const f32,
        plane: usize,
        at: (usize, usize),
        v0: usize,
        out: *mut f32,
    ) {
        let mg = j.p.mg();
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        let mut w = j.w.as_ptr().add(v0);
        for ci in 0..j.p.cg() {
            let x = xp.add(ci * plane + at.0);
            for &t in j.taps {
                let x = x.add(t);
                let mut wv = [_mm256_setzero_ps(); V];
                for (v, wv) in wv.iter_mut().enumerate() {
                    *wv = _mm256_loadu_ps(w.add(v * LANES));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let xv = _mm256_broadcast_ss(&*x.add(r * SW));
                    for (a, &wv) in acc.iter_mut().zip(&wv) {
                        *a = _mm256_fmadd_ps(wv, xv, *a);
                    }
                }
                w = w.add(mg);
            }
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
                _mm256_storeu_ps(out.add(at.1 + r * mg + v * LANES), clamp(a, j.act));
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
    use crate::kernels::sgemm::Activation;
    use crate::kernels::test_data::{conv_attrs, noise, on_threads};

    fn run(xs: &[usize], ws: &[usize], a: &crate::ir::op::ConvAttrs, act: Activation, seed: u64) {
        let p = plan(xs, ws, Some(&[ws[0]]), a).unwrap();
        assert!(applies(&p), "{p:?}");
        let x = noise(xs, seed);
        let w = noise(ws, seed + 1);
        let bias = noise(&[ws[0]], seed + 2);
        let (xd, wd) = (x.as_slice().unwrap(), w.as_slice().unwrap());
        for bias in [None, Some(bias.as_slice().unwrap())] {
            let want = im2col_path(&p, xd, &w, bias, act, false);
            let wp = super::pack_weights(&p, wd);
            let mut got = vec![f32::NAN; want.len()];
            super::conv(&p, xd, &wp, bias, act, &mut got);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{p:?} bias {}", bias.is_some());
        }
    }

    #[test]
    fn same_bits_as_im2col() {
        if super::super::sgemm::Kernel::detect() != super::super::sgemm::Kernel::Avx2 {
            return; // The path is AVX2-only.
        }
        let acts = [
            Activation::NONE,
            Activation::RELU,
            Activation {
                lo: Some(-1.0),
                hi: Some(1.0),
            },
        ];
        let mut checked = 0;
        for (groups, cg, mg) in [(3, 16, 16), (2, 4, 8), (2, 5, 24)] {
            for k in [1, 3] {
                for (s, d, pad) in [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 1, 0)] {
                    for w in [1, 5, 7, 8, 11, 13, 14, 17, 23] {
                        let h = 1 + w % 5;
                        let pad = pad.min(k - 1);
                        let a = conv_attrs(groups, &[s, s], &[d, d], &[pad, pad, pad, pad]);
                        let (xs, ws) = ([2, groups * cg, h, w], [groups * mg, cg, k, k]);
                        if plan(&xs, &ws, None, &a).is_err() {
                            continue;
                        }
                        run(&xs, &ws, &a, acts[checked % 3], checked as u64);
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 150, "only {checked} shapes");
    }

    #[test]
    fn same_bits_for_any_thread_count() {
        if super::super::sgemm::Kernel::detect() != super::super::sgemm::Kernel::Avx2 {
            return;
        }
        let a = conv_attrs(5, &[2, 2], &[], &[1, 1, 1, 1]);
        let p = plan(&[2, 40, 13, 13], &[80, 8, 3, 3], None, &a).unwrap();
        let x = noise(&[2, 40, 13, 13], 3);
        let w = noise(&[80, 8, 3, 3], 4);
        let wp = super::pack_weights(&p, w.as_slice().unwrap());
        let run = |t| {
            on_threads(t, || {
                let mut out = vec![0f32; 2 * 80 * 49];
                super::conv(
                    &p,
                    x.as_slice().unwrap(),
                    &wp,
                    None,
                    Activation::RELU,
                    &mut out,
                );
                out
            })
        };
        assert_eq!(run(1), run(2));
    }
}
