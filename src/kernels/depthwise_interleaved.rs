//! Depthwise convs on 2-D planes up to 112x112, eight channels at a time (x86-64 with AVX2;
//! sixteen in zmm vectors on AVX-512 CPUs, `imp::wide`, the rest eight at a time): the
//! eight input planes are interleaved into one zero-padded buffer whose position `(r, c)`
//! holds the eight channels' values side by side, every kernel tap is then one 8-wide
//! multiply and add at a fixed offset for any stride, dilation or padding (the layout
//! onnxruntime's NCHWc gives its depthwise kernel), and the results are spread back into
//! the eight output planes. The gather and the spread are 8x8 transposes in registers.
//!
//! Plane by plane (`depthwise::plane`), a 7x7 or 14x14 plane spent most of its time outside
//! the taps: the padded copy row by row, a flat run whose padded columns are computed and
//! dropped, the copy of each output row, all per plane. MobileNet v2's 960-channel 7x7
//! convs took 2.5-4x onnxruntime's time that way.
//!
//! The sums are the plane path's: per output the taps in (row, column) order from +0.0,
//! each a separate multiply and add, padding taps adding `w * 0.0`, then `+ bias` (`+ 0.0`
//! without one) and the clamp; so the same bits (tests below).

use super::blocked;
use super::depthwise::Geometry;
use super::gemm::SendPtr;
use super::sgemm::Activation;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Channels per group: the eight f32 lanes of an AVX2 register.
const GROUP: usize = 8;
/// Most kernel taps (7x7).
const MAX_TAPS: usize = 49;
/// Largest padded input plane (positions) this path takes: 112x112 planes with their pads
/// (a 400 KiB buffer). MobileNet v2 in the net, one thread, min over 4 alternating runs:
/// its 112x112 ones 0.36 -> 0.31 ms (32 channels) and 0.46 -> 0.39 (96, stride 2), 56x56
/// 0.65 -> 0.48 (144), 14x14 0.17 -> 0.10, 7x7 0.12 -> 0.06.
const MAX_PADDED: usize = 114 * 114;
/// Positions past the padded plane that the last outputs of a row may read: a row is
/// computed in whole chunks of eight outputs, the last one up to seven past the row's end.
const SLACK: usize = 8 * 2;

/// Whether this CPU runs the path.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Channels per group of the AVX-512 form: two blocks of 8, one zmm vector.
const WIDE: usize = 2 * GROUP;

/// Whether this CPU runs the AVX-512 form (`imp::wide`).
fn wide_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Whether the path takes `g`: 2-D, column stride 1 or 2, at most 7x7 taps, padded input
/// planes up to 114x114.
pub(super) fn supports(g: &Geometry) -> bool {
    g.input[0] == 1
        && g.kernel[0] == 1
        && g.pads[0] == 0
        && g.output[0] == 1
        && matches!(g.strides[2], 1 | 2)
        && g.kernel[1] * g.kernel[2] <= MAX_TAPS
        && g.padded(1) * g.padded(2) <= MAX_PADDED
}

/// Whether the path can read and write `g`'s input and output blocked: one channel per
/// group, a multiple of 8 channels.
pub(super) fn blocked_io(g: &Geometry) -> bool {
    g.mult == 1 && g.c.is_multiple_of(GROUP)
}

/// The padded plane (`hp` x `wp` positions) and the taps' offsets into it.
struct Padded {
    hp: usize,
    wp: usize,
    /// Position offset of tap `t` (row-major in the kernel) from its output's first tap.
    taps: Vec<usize>,
}

/// Per-task buffers, kept between the groups of one conv.
#[derive(Default)]
struct Scratch {
    /// The interleaved, padded input (`(hp * wp + SLACK) * GROUP` floats), from its first
    /// cache line: see [`Scratch::input`].
    input: Vec<f32>,
    /// The interleaved outputs, before they are spread into their planes.
    output: Vec<f32>,
    /// The geometry whose padding `input` holds zeroed: `(hp, wp, ph, pw, ih, iw, lanes)`.
    zeroed_for: Option<[usize; 7]>,
}

/// Floats in a cache line.
const LINE: usize = 16;

impl Scratch {
    /// The padded input buffer for `lanes` channels a position, starting on a cache line,
    /// its padding (every position but the `ih x iw` interior from `(ph, pw)`, and the
    /// `SLACK` past the plane) zeroed: the gather writes every interior position, all
    /// lanes, so nothing else is. The buffer is the thread's, kept between calls
    /// ([`with_scratch`]), its padding zeroed once per geometry: a fresh buffer zeroed whole
    /// for every rayon split was 3.5% of MobileNet v2's profile (`memset`), and zeroing the
    /// border on every task cost EfficientNet-B0 2% (its many small 5x5 planes). From a
    /// cache line: every position holds
    /// a whole number of vectors, so no load of the taps splits across two lines; from a
    /// buffer 16 bytes off a line half of the zmm loads did (the taps' loop in C: 0.119
    /// against 0.078 ms for 144 channels on 56x56).
    fn input(
        &mut self,
        lay: &Padded,
        (ph, pw): (usize, usize),
        (ih, iw): (usize, usize),
        lanes: usize,
    ) -> *mut f32 {
        let (hp, wp) = (lay.hp, lay.wp);
        let len = (hp * wp + SLACK) * lanes;
        if self.input.len() < len + LINE {
            // A new allocation may start elsewhere relative to a line: zero it again.
            self.input = vec![0.0; len + LINE];
            self.zeroed_for = None;
        }
        let skip = self.input.as_ptr().align_offset(4 * LINE).min(LINE);
        let buf = &mut self.input[skip..skip + len];
        // Once per geometry: the tasks of one conv on this thread find it done.
        let key = [hp, wp, ph, pw, ih, iw, lanes];
        if self.zeroed_for != Some(key) {
            let mut zero = |from: usize, to: usize| buf[from * lanes..to * lanes].fill(0.0);
            zero(0, ph * wp);
            for y in ph..ph + ih {
                zero(y * wp, y * wp + pw);
                zero(y * wp + pw + iw, (y + 1) * wp);
            }
            zero((ph + ih) * wp, hp * wp + SLACK);
            self.zeroed_for = Some(key);
        }
        buf.as_mut_ptr()
    }

    /// Where a task writes its interleaved outputs (`lanes` channels a position): in the
    /// scratch when the output is in planes (spread into them at the end; every position
    /// is written before it is read, and the spread reads whole groups of eight
    /// positions), or in the blocked output itself, from `group_at` (its group's place).
    fn outputs(
        &mut self,
        out: blocked::Layout,
        group_at: *mut f32,
        out_plane: usize,
        lanes: usize,
    ) -> *mut f32 {
        match out {
            blocked::Layout::Planes => {
                self.output
                    .resize(out_plane.next_multiple_of(GROUP) * lanes, 0.0);
                self.output.as_mut_ptr()
            }
            blocked::Layout::Blocked => group_at,
        }
    }

    /// What a task of either form (8 or 16 channels, `lanes`) unpacks first: the sizes of
    /// `g`, its padded input buffer ([`Scratch::input`]) and where its outputs go
    /// ([`Scratch::outputs`]) for output channels `o0..` of batch item `b`.
    ///
    /// # Safety
    /// `out` points at the conv's whole output, `b` and `o0` inside it.
    pub(super) unsafe fn frame(
        &mut self,
        g: &Geometry,
        lay: &Padded,
        (b, o0): (usize, usize),
        (out, io): (SendPtr<f32>, (blocked::Layout, blocked::Layout)),
        lanes: usize,
    ) -> Frame {
        let m = g.c * g.mult;
        let [_, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let [_, ph, pw] = g.pads;
        let out_plane = oh * ow;
        let buf = self.input(lay, (ph, pw), (ih, iw), lanes);
        // SAFETY: the caller's promise; blocked, the group's place is block `o0 / 8`.
        let group_at = unsafe { out.get().add((b * m + o0) * out_plane) };
        let obuf = self.outputs(io.1, group_at, out_plane, lanes);
        Frame {
            m,
            ih,
            iw,
            oh,
            ow,
            ph,
            pw,
            sh: g.strides[1],
            in_plane: ih * iw,
            out_plane,
            wp: lay.wp,
            buf,
            obuf,
        }
    }
}

/// A task's sizes and buffers ([`Scratch::frame`]).
pub(super) struct Frame {
    pub m: usize,
    pub ih: usize,
    pub iw: usize,
    pub oh: usize,
    pub ow: usize,
    pub ph: usize,
    pub pw: usize,
    pub sh: usize,
    pub in_plane: usize,
    pub out_plane: usize,
    pub wp: usize,
    pub buf: *mut f32,
    pub obuf: *mut f32,
}

thread_local! {
    /// Each thread's scratch, kept between calls (see [`Scratch::input`]).
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// `f` on this thread's scratch. Taken out rather than borrowed, so a nested call (a rayon
/// task stolen while `f` waits) gets an empty one of its own instead of a panic.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut s = cell.take();
        let r = f(&mut s);
        cell.replace(s);
        r
    })
}

/// `out` = depthwise conv of `x` with `w` and `bias`, clamped, as `depthwise::depthwise`;
/// one rayon task per (batch, group of eight output channels). `x` and `out` each in planes
/// or blocked (NCHW8c, which is this path's interleaved layout), as `io` says; blocked
/// ones need one channel per group and a multiple of 8 channels ([`blocked_io`]).
///
/// # Safety
/// [`available`] and [`supports`]`(g)` must be true.
pub(super) unsafe fn depthwise(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [MaybeUninit<f32>],
    io: (blocked::Layout, blocked::Layout),
) {
    let m = g.c * g.mult;
    assert!(io == (blocked::Layout::Planes, blocked::Layout::Planes) || blocked_io(g));
    let [_, kh, kw] = g.kernel;
    let [_, dh, dw] = g.dilations;
    let (hp, wp) = (g.padded(1), g.padded(2));
    let lay = Padded {
        hp,
        wp,
        taps: (0..kh * kw)
            .map(|t| (t / kw) * dh * wp + (t % kw) * dw)
            .collect(),
    };
    assert!(x.len() >= g.n * g.c * g.input[1] * g.input[2]);
    assert!(w.len() >= m * kh * kw && bias.is_none_or(|b| b.len() >= m));
    assert!(out.len() >= g.n * m * g.output[1] * g.output[2]);
    // Per batch item: groups of 16 channels on AVX-512 CPUs (`imp::wide`), then groups of
    // 8 for the rest.
    let wide = match wide_available() {
        true => m / WIDE,
        false => 0,
    };
    let groups = wide + (m - wide * WIDE).div_ceil(GROUP);
    // Every output is written (spread once) through this pointer, never read.
    let outp = SendPtr(out.as_mut_ptr().cast::<f32>());
    (0..g.n * groups).into_par_iter().for_each(|t| {
        let (b, i) = (t / groups, t % groups);
        let args = (x, w, bias, act);
        // SAFETY: the caller checked the CPU and shape (and `wide_available` the
        // AVX-512 one); the slices' lengths above; the task writes the planes of its own
        // output channels only.
        with_scratch(|s| unsafe {
            if i < wide {
                let o0 = i * WIDE;
                match g.strides[2] {
                    1 => imp::wide::<1>(g, &lay, args, (b, o0), s, (outp, io)),
                    _ => imp::wide::<2>(g, &lay, args, (b, o0), s, (outp, io)),
                }
                return;
            }
            let o0 = wide * WIDE + (i - wide) * GROUP;
            match g.strides[2] {
                1 => imp::group::<1>(g, &lay, args, (b, o0), s, (outp, io)),
                _ => imp::group::<2>(g, &lay, args, (b, o0), s, (outp, io)),
            }
        })
    });
}

mod imp {
    use super::super::blocked::Layout;
    use super::super::gemm::SendPtr;
    use super::super::sgemm::{clamp_avx2 as clamp, clamp_avx512 as clamp512, Activation};
    use super::super::transpose_avx2::{lane_mask, spread, store_positions, transpose8};
    use super::{Frame, Geometry, Padded, Scratch, GROUP, MAX_TAPS, WIDE};
    use std::arch::x86_64::*;

    /// Output channels `o0 .. o0 + 8` (fewer in the last group) of batch `b`, column stride
    /// `SW`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn group<const SW: usize>(
        g: &Geometry,
        lay: &Padded,
        (x, w, bias, act): (&[f32], &[f32], Option<&[f32]>, Activation),
        (b, o0): (usize, usize),
        s: &mut Scratch,
        (out, io): (SendPtr<f32>, (Layout, Layout)),
    ) {
        // Every group writes the same interior positions, all eight lanes (a short group
        // repeats its last channel).
        let Frame {
            m,
            ih,
            iw,
            oh,
            ow,
            ph,
            pw,
            sh,
            in_plane,
            out_plane,
            wp,
            buf,
            obuf,
        } = s.frame(g, lay, (b, o0), (out, io), GROUP);
        let lanes = GROUP.min(m - o0);

        // Gather, row by row: eight consecutive columns of the eight planes, transposed,
        // each column's eight values to its padded place (eight consecutive positions).
        let mut planes = [std::ptr::null::<f32>(); GROUP];
        for (l, p) in planes.iter_mut().enumerate() {
            let ch = (o0 + l.min(lanes - 1)) / g.mult;
            *p = x[(b * g.c + ch) * in_plane..][..in_plane].as_ptr();
        }
        // A blocked input is interleaved already: its rows are copied as they are.
        for y in 0..ih {
            let row = buf.add(((y + ph) * wp + pw) * GROUP);
            if io.0 == Layout::Blocked {
                // One channel per group (`blocked_io`): block `o0 / 8` of the input.
                let src = x[(b * g.c + o0) * in_plane + y * iw * GROUP..].as_ptr();
                std::ptr::copy_nonoverlapping(src, row, iw * GROUP);
                continue;
            }
            let mut c = 0;
            while c < iw {
                let n = GROUP.min(iw - c);
                let mut rows = [_mm256_setzero_ps(); GROUP];
                for (r, p) in rows.iter_mut().zip(planes) {
                    let p = p.add(y * iw + c);
                    *r = match n {
                        GROUP => _mm256_loadu_ps(p),
                        _ => _mm256_maskload_ps(p, lane_mask(n)),
                    };
                }
                let dst = row.add(c * GROUP);
                store_positions(transpose8(rows), n, dst);
                c += GROUP;
            }
        }

        // The taps' weights and the bias, one lane per channel (zero past `lanes`).
        let kp = lay.taps.len();
        let mut wv = [_mm256_setzero_ps(); MAX_TAPS];
        for (t, v) in wv.iter_mut().enumerate().take(kp) {
            let mut lane = [0f32; GROUP];
            for (l, x) in lane.iter_mut().enumerate().take(lanes) {
                *x = w[(o0 + l) * kp + t];
            }
            *v = _mm256_loadu_ps(lane.as_ptr());
        }
        let mut lane = [0f32; GROUP];
        if let Some(bias) = bias {
            lane[..lanes].copy_from_slice(&bias[o0..o0 + lanes]);
        }
        let bv = _mm256_loadu_ps(lane.as_ptr());

        // Compute: each row in chunks of eight outputs (eight independent sums).
        for oy in 0..oh {
            let mut ox = 0;
            while ox < ow {
                let base = buf.add((oy * sh * wp + ox * SW) * GROUP);
                let mut acc = [_mm256_setzero_ps(); GROUP];
                for (&wt, &off) in wv.iter().zip(&lay.taps) {
                    let p = base.add(off * GROUP);
                    for (j, a) in acc.iter_mut().enumerate() {
                        let v = _mm256_loadu_ps(p.add(j * SW * GROUP));
                        *a = _mm256_add_ps(*a, _mm256_mul_ps(wt, v));
                    }
                }
                let dst = obuf.add((oy * ow + ox) * GROUP);
                for (j, &a) in acc.iter().enumerate().take(ow - ox) {
                    _mm256_storeu_ps(dst.add(j * GROUP), clamp(_mm256_add_ps(a, bv), act));
                }
                ox += GROUP;
            }
        }

        if io.1 == Layout::Blocked {
            return;
        }
        // Spread: the eight channels' outputs, transposed, to their planes.
        let dst = out.get().add((b * m + o0) * out_plane);
        spread((obuf, GROUP), out_plane, lanes, (dst, out_plane));
    }

    /// [`group`] for the 16 output channels `o0 .. o0 + 16` (all of them there), in zmm
    /// vectors: the padded buffer holds 16 channels a position (two blocks' 8 side by
    /// side), every tap one 16-wide multiply and add. The same operations per output: the
    /// same bits.
    #[target_feature(enable = "avx2,avx512f")]
    pub(super) unsafe fn wide<const SW: usize>(
        g: &Geometry,
        lay: &Padded,
        (x, w, bias, act): (&[f32], &[f32], Option<&[f32]>, Activation),
        (b, o0): (usize, usize),
        s: &mut Scratch,
        (out, io): (SendPtr<f32>, (Layout, Layout)),
    ) {
        // Blocked: block `o0 / 8`; the upper 8 channels in the next block, `8 * out_plane` on.
        let Frame {
            m,
            ih,
            iw,
            oh,
            ow,
            ph,
            pw,
            sh,
            in_plane,
            out_plane,
            wp,
            buf,
            obuf,
        } = s.frame(g, lay, (b, o0), (out, io), WIDE);
        debug_assert!(o0 + WIDE <= m);

        // Gather, row by row: per half, eight columns of eight planes transposed, or a
        // blocked input's two blocks' rows side by side.
        let mut planes = [std::ptr::null::<f32>(); WIDE];
        for (l, p) in planes.iter_mut().enumerate() {
            let ch = (o0 + l) / g.mult;
            *p = x[(b * g.c + ch) * in_plane..][..in_plane].as_ptr();
        }
        for y in 0..ih {
            let row = buf.add(((y + ph) * wp + pw) * WIDE);
            if io.0 == Layout::Blocked {
                let lo = x[(b * g.c + o0) * in_plane + y * iw * GROUP..].as_ptr();
                let hi = x[(b * g.c + o0 + GROUP) * in_plane + y * iw * GROUP..].as_ptr();
                for c in 0..iw {
                    let d = row.add(c * WIDE);
                    _mm256_storeu_ps(d, _mm256_loadu_ps(lo.add(c * GROUP)));
                    _mm256_storeu_ps(d.add(GROUP), _mm256_loadu_ps(hi.add(c * GROUP)));
                }
                continue;
            }
            let mut c = 0;
            while c < iw {
                let n = GROUP.min(iw - c);
                for half in 0..2 {
                    let mut rows = [_mm256_setzero_ps(); GROUP];
                    for (r, p) in rows.iter_mut().zip(&planes[half * GROUP..]) {
                        let p = p.add(y * iw + c);
                        *r = match n {
                            GROUP => _mm256_loadu_ps(p),
                            _ => _mm256_maskload_ps(p, lane_mask(n)),
                        };
                    }
                    let t = transpose8(rows);
                    let dst = row.add(c * WIDE + half * GROUP);
                    for (j, &v) in t.iter().enumerate().take(n) {
                        _mm256_storeu_ps(dst.add(j * WIDE), v);
                    }
                }
                c += GROUP;
            }
        }

        // The taps' weights and the bias, one lane per channel.
        let kp = lay.taps.len();
        let mut wv = [_mm512_setzero_ps(); MAX_TAPS];
        for (t, v) in wv.iter_mut().enumerate().take(kp) {
            let mut lane = [0f32; WIDE];
            for (l, x) in lane.iter_mut().enumerate() {
                *x = w[(o0 + l) * kp + t];
            }
            *v = _mm512_loadu_ps(lane.as_ptr());
        }
        let mut lane = [0f32; WIDE];
        if let Some(bias) = bias {
            lane.copy_from_slice(&bias[o0..o0 + WIDE]);
        }
        let bv = _mm512_loadu_ps(lane.as_ptr());

        // Compute: each row in chunks of eight outputs (eight independent sums).
        for oy in 0..oh {
            let mut ox = 0;
            while ox < ow {
                let base = buf.add((oy * sh * wp + ox * SW) * WIDE);
                let mut acc = [_mm512_setzero_ps(); GROUP];
                for (&wt, &off) in wv.iter().zip(&lay.taps) {
                    let p = base.add(off * WIDE);
                    for (j, a) in acc.iter_mut().enumerate() {
                        let v = _mm512_loadu_ps(p.add(j * SW * WIDE));
                        *a = _mm512_add_ps(*a, _mm512_mul_ps(wt, v));
                    }
                }
                let q = oy * ow + ox;
                for (j, &a) in acc.iter().enumerate().take(ow - ox) {
                    let v = clamp512(_mm512_add_ps(a, bv), act);
                    match io.1 {
                        Layout::Planes => _mm512_storeu_ps(obuf.add((q + j) * WIDE), v),
                        Layout::Blocked => {
                            let lo = obuf.add((q + j) * GROUP);
                            _mm256_storeu_ps(lo, _mm512_castps512_ps256(v));
                            // Lanes 8..16 to the next block: a masked store from 8 floats
                            // before their place (masked-off lanes are not touched).
                            let hi = lo.add(out_plane * GROUP);
                            _mm512_mask_storeu_ps(hi.wrapping_sub(GROUP), 0xff00, v);
                        }
                    }
                }
                ox += GROUP;
            }
        }

        if io.1 == Layout::Blocked {
            return;
        }
        // Spread: each half's eight channels, transposed, to their planes.
        for half in 0..2 {
            let dst = out.get().add((b * m + o0 + half * GROUP) * out_plane);
            spread(
                (obuf.add(half * GROUP), WIDE),
                out_plane,
                GROUP,
                (dst, out_plane),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! The interleaved path against the portable one (the same sums in the same order: the
    //! same bits): output widths 1 to 30 (every tail of the eight-output chunks and of the
    //! eight-position transposes), heights 1 to 9, kernels 1, 3, 5 and 7, strides, row and
    //! column dilation, pads, channel counts not a multiple of eight, multipliers, batches,
    //! bias and clamps.
    use super::super::depthwise::Path;
    use super::super::depthwise_avx512::tests::{geometry, run};
    use super::{available, supports};
    use crate::kernels::blocked::{blocked_shape, to_blocked, to_planes, Layout};
    use crate::kernels::depthwise::Geometry;
    use crate::kernels::sgemm::Activation;
    use crate::kernels::test_data::{noise, on_threads};

    #[test]
    fn same_bits_as_portable_blocks() {
        if !available() {
            return; // Nothing to compare on this CPU.
        }
        let acts = [
            Activation::NONE,
            Activation::RELU,
            Activation {
                lo: Some(-6.0),
                hi: Some(6.0),
            },
        ];
        let mut checked = 0;
        for k in [1, 3, 5, 7] {
            for strides in [(1, 1), (2, 2), (3, 1), (1, 2)] {
                for dil in [(1, 1), (2, 1), (1, 2)] {
                    for ow in 1..=30 {
                        let oh = 1 + (ow + k) % 9;
                        let p = [0, 1, k / 2, k][ow % 4];
                        let pads = [p, (p + 1) % 3, k / 2, p];
                        // 16 and more output channels: groups of 16 on AVX-512 CPUs.
                        let (c, mult) = ([3, 8, 13, 16, 24][ow % 5], 1 + ow % 2);
                        let Some(mut g) = geometry(c, mult, k, strides, dil, pads, (oh, ow)) else {
                            continue;
                        };
                        g.n = 1 + ow % 2;
                        assert!(supports(&g), "{g:?}");
                        let (bias, act) = (ow % 2 == 0, acts[ow % 3]);
                        let seed = checked as u64;
                        assert_eq!(
                            run(&g, Path::Interleaved, bias, act, seed),
                            run(&g, Path::Portable, bias, act, seed),
                            "{g:?} bias {bias} {act:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 1000, "only {checked} geometries");
    }

    /// The shapes left to the plane path.
    #[test]
    fn other_shapes_stay_per_plane() {
        let g = geometry(1, 1, 3, (1, 3), (1, 1), [1; 4], (5, 5)).unwrap();
        assert!(!supports(&g), "column stride 3");
        let g = geometry(1, 1, 9, (1, 1), (1, 1), [4; 4], (5, 5)).unwrap();
        assert!(!supports(&g), "9x9");
        let g = geometry(1, 1, 3, (1, 1), (1, 1), [1; 4], (113, 112)).unwrap();
        assert!(!supports(&g), "more than 114x114 padded positions");
        let mut g = geometry(1, 1, 3, (1, 1), (1, 1), [1; 4], (5, 5)).unwrap();
        g.kernel[0] = 2;
        g.input[0] = 2;
        assert!(!supports(&g), "3-D kernel");
    }

    /// Blocked inputs and outputs (this path's interleaved layout, read and written as
    /// they are) give the planes' bits, over widths (every tail of the eight-output chunks),
    /// kernels, strides, pads and batches.
    #[test]
    fn blocked_layouts_give_the_same_bits() {
        if !available() {
            return;
        }
        let mut checked = 0;
        for k in [1, 3, 5] {
            for strides in [(1, 1), (2, 2)] {
                for ow in 1..=19 {
                    let p = [0, 1, k / 2][ow % 3];
                    let c = [8, 16, 24][ow % 3];
                    let Some(mut g) = geometry(c, 1, k, strides, (1, 1), [p; 4], (1 + ow % 4, ow))
                    else {
                        continue;
                    };
                    g.n = 1 + ow % 2;
                    assert!(supports(&g) && super::blocked_io(&g), "{g:?}");
                    let act = Activation::RELU;
                    let want = run(&g, Path::Interleaved, true, act, ow as u64);
                    for io in [
                        (Layout::Blocked, Layout::Planes),
                        (Layout::Planes, Layout::Blocked),
                        (Layout::Blocked, Layout::Blocked),
                    ] {
                        assert_eq!(run_blocked(&g, act, ow as u64, io), want, "{g:?} {io:?}");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked >= 100, "only {checked} geometries");
    }

    /// `run`'s data (same seeds) through the interleaved path in layouts `io`; the output
    /// bits in planes.
    fn run_blocked(g: &Geometry, act: Activation, seed: u64, io: (Layout, Layout)) -> Vec<u32> {
        let [_, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let x = noise(&[g.n, g.c, ih, iw], seed);
        let w = noise(&[g.c * g.kernel.iter().product::<usize>()], seed + 1);
        let b = noise(&[g.c], seed + 2);
        let x = match io.0 {
            Layout::Planes => x,
            Layout::Blocked => to_blocked(&x),
        };
        let mut out = vec![f32::NAN; g.n * g.c * oh * ow];
        // SAFETY: the test checked the CPU and the shape; the path writes floats only.
        unsafe {
            super::depthwise(
                g,
                x.as_slice().unwrap(),
                w.as_slice().unwrap(),
                Some(b.as_slice().unwrap()),
                act,
                crate::kernels::uninit::of_init(&mut out),
                io,
            )
        };
        if io.1 == Layout::Blocked {
            let held = ndarray::ArrayD::from_shape_vec(blocked_shape(&[g.n, g.c, oh, ow]), out);
            out = to_planes(&held.unwrap()).into_raw_vec_and_offset().0;
        }
        out.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn same_bits_for_any_thread_count() {
        if !available() {
            return;
        }
        let mut g = geometry(21, 2, 3, (2, 2), (1, 1), [1; 4], (13, 13)).unwrap();
        g.n = 2;
        let act = Activation::RELU;
        let one = on_threads(1, || run(&g, Path::Interleaved, true, act, 7));
        assert_eq!(
            one,
            on_threads(2, || run(&g, Path::Interleaved, true, act, 7))
        );
    }
}
