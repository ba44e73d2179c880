//! MaxPool on planes up to 112x112, eight planes at a time: the planes are interleaved into one
//! padded buffer whose position `(r, c)` holds the eight planes' values side by side, so
//! every window tap is one 8-wide max at a fixed offset (what onnxruntime's NCHWc layout
//! gives it), then spread back into the eight output planes. Plane by plane
//! (`pool_flat`), 7x7 outputs spent most of their time in per-plane and per-row set-up:
//! GoogLeNet's 14x14 -> 7x7 MaxPool on 832 planes took 0.34 ms, onnxruntime 0.03.
//!
//! For f32 on AVX2 the gather and the spread are 8x8 transposes in registers
//! (`transpose_avx2.rs`), other types go element by element.
//!
//! Padding holds -inf (the integer minimum), as in `pool_flat`. Each output element folds
//! its taps in window order from the first with `pool_flat`'s `pick` rule, so the bits are
//! the per-plane path's (tests in `pool_flat`).

use super::pool::Geometry;
use super::pool_flat::pick;
use crate::tensor::Elem;
use rayon::prelude::*;

/// Planes per group (eight f32 lanes of an AVX2 register).
pub(super) const GROUP: usize = 8;
/// Largest output and input planes this path takes: the 112x112 -> 56x56 MaxPools of
/// GoogLeNet and SqueezeNet (a 400 KiB buffer) still gain. With the f32 gather and spread
/// as 8x8 transposes, per node in the nets (one thread, min over 4 alternating runs):
/// GoogLeNet 112 -> 56 0.45 -> 0.40 ms, 56 -> 28 0.42 -> 0.25, 28 -> 14 0.39 -> 0.16, its 14x14
/// stride-1 ones 0.13 -> 0.10 and 7x7 0.09 -> 0.05 (MaxPool total 2.60 -> 1.80); SqueezeNet
/// 0.84 -> 0.62. Gathered and spread element by element, 14x14 outputs had taken 1.2-1.4x
/// the per-plane path's time.
const MAX_OUT_PLANE: usize = 56 * 56;
const MAX_IN_PLANE: usize = 114 * 114;

/// Whether MaxPool on `g` (already 2-D, see `pool_flat::applies`) takes this path.
pub(super) fn applies(g: &Geometry) -> bool {
    g.out_plane <= MAX_OUT_PLANE && g.in_plane <= MAX_IN_PLANE
}

/// The padded plane (`hp` x `wp` positions) and the window taps' offsets into it.
struct Layout {
    hp: usize,
    wp: usize,
    taps: Vec<usize>,
}

impl Layout {
    fn new(g: &Geometry) -> Layout {
        let [_, kh, kw] = g.kernel;
        let [_, sy, sx] = g.strides;
        let [_, dy, dx] = g.dil;
        let [_, oh, ow] = g.output;
        let wp = (ow - 1) * sx + (kw - 1) * dx + 1;
        let hp = (oh - 1) * sy + (kh - 1) * dy + 1;
        let taps = (0..kh * kw)
            .map(|t| (t / kw) * dy * wp + (t % kw) * dx)
            .collect();
        Layout { hp, wp, taps }
    }
}

/// Max-pools the first `GROUP * floor(planes / GROUP)` planes of `xd` into `out` (planes
/// of `g.out_plane`); returns how many planes it did.
pub(super) fn max_planes<T: Elem>(g: &Geometry, xd: &[T], out: &mut [T]) -> usize {
    let planes = out.len() / g.out_plane;
    let groups = planes / GROUP;
    let l = Layout::new(g);
    let group_out = GROUP * g.out_plane;
    let run = |i: usize, dst: &mut [T], buf: &mut Scratch<T>| {
        let src = &xd[i * GROUP * g.in_plane..][..GROUP * g.in_plane];
        // A fold, not `any`: it vectorizes.
        #[allow(clippy::eq_op)]
        let nan = src.iter().fold(false, |any, &v| any | (v != v));
        match nan {
            true => group_dispatch::<T, true>(g, &l, src, dst, buf),
            false => group_dispatch::<T, false>(g, &l, src, dst, buf),
        }
    };
    let head = &mut out[..groups * group_out];
    let work = head.len().saturating_mul(l.taps.len());
    if super::par::worth_splitting(work) {
        head.par_chunks_mut(group_out)
            .enumerate()
            .for_each_init(Scratch::default, |buf, (i, dst)| run(i, dst, buf));
    } else {
        let mut buf = Scratch::default();
        for (i, dst) in head.chunks_mut(group_out).enumerate() {
            run(i, dst, &mut buf);
        }
    }
    groups * GROUP
}

/// Per-task buffers, kept between the groups of one call.
struct Scratch<T> {
    /// The padded, interleaved input plane.
    input: Vec<[T; GROUP]>,
    /// The interleaved outputs (and `GROUP` more), before they are spread into the planes.
    output: Vec<[T; GROUP]>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Scratch {
            input: Vec::new(),
            output: Vec::new(),
        }
    }
}

fn group_dispatch<T: Elem, const NAN: bool>(
    g: &Geometry,
    l: &Layout,
    src: &[T],
    dst: &mut [T],
    buf: &mut Scratch<T>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { group_avx2::<T, NAN>(g, l, src, dst, buf) };
    }
    group::<T, NAN, false>(g, l, src, dst, buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn group_avx2<T: Elem, const NAN: bool>(
    g: &Geometry,
    l: &Layout,
    src: &[T],
    dst: &mut [T],
    buf: &mut Scratch<T>,
) {
    group::<T, NAN, true>(g, l, src, dst, buf)
}

/// Whether `T` is f32 (then the AVX2 transposes apply).
fn is_f32<T: Elem>() -> bool {
    std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
}

/// `s` as f32, when `T` is f32.
fn as_f32<T: Elem>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: `T` is f32 itself.
    is_f32::<T>().then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
}

/// `s` as f32, when `T` is f32.
fn as_f32_mut<T: Elem>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`.
    is_f32::<T>()
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) })
}

/// One group: `src` and `dst` hold `GROUP` planes each. With `AVX2` (compiled and checked
/// for it), f32 planes are gathered and spread by 8x8 transposes (`transpose_avx2.rs`),
/// eight positions at a time; element by element, the 14x14 and 28x28 outputs took longer
/// this way than plane by plane.
#[inline(always)]
fn group<T: Elem, const NAN: bool, const AVX2: bool>(
    g: &Geometry,
    l: &Layout,
    src: &[T],
    dst: &mut [T],
    s: &mut Scratch<T>,
) {
    let fill = T::from_f64(f64::NEG_INFINITY);
    let [_, ih, iw] = g.input;
    let [_, pt, pl] = g.pb;
    let [_, sy, sx] = g.strides;
    let [_, oh, ow] = g.output;
    let (ip, op) = (g.in_plane, g.out_plane);
    // The padded interleaved plane: rows and columns inside the input gathered from the
    // eight planes, the rest left at -inf. Every group of a call writes the same positions,
    // so the padding is written once per task.
    let buf = &mut s.input;
    if buf.len() != l.hp * l.wp {
        buf.clear();
        buf.resize(l.hp * l.wp, [fill; GROUP]);
    }
    let (rows, cols) = (
        ih.min(l.hp.saturating_sub(pt)),
        iw.min(l.wp.saturating_sub(pl)),
    );
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(src)) = (AVX2, as_f32(src)) {
        let buf = as_f32_mut(buf.as_flattened_mut()).expect("f32 like src");
        // SAFETY: AVX2 was checked by the caller of `group_avx2`, the only one to pass
        // AVX2; `src` holds the eight planes and `buf` the padded plane (asserted inside).
        unsafe { avx2::gather(src, ip, iw, (rows, cols), (pt * l.wp + pl, l.wp), buf) };
    }
    if !(AVX2 && cfg!(target_arch = "x86_64") && is_f32::<T>()) {
        for y in 0..rows {
            let row = &mut buf[(y + pt) * l.wp + pl..][..cols];
            for (j, v) in row.iter_mut().enumerate() {
                *v = std::array::from_fn(|c| src[c * ip + y * iw + j]);
            }
        }
    }
    // The last position any output's tap reads is inside the buffer.
    let last_tap = l.taps.iter().max().copied().unwrap_or(0);
    assert!((oh - 1) * sy * l.wp + (ow - 1) * sx + last_tap < buf.len());
    assert!(dst.len() >= (GROUP - 1) * op + oh * ow);
    let out = &mut s.output;
    out.resize(op + GROUP, [fill; GROUP]);
    for oy in 0..oh {
        let mut ox = 0;
        // Four outputs at a time (four independent chains of max), then one at a time.
        while ox + 4 <= ow {
            fold::<T, NAN, 4>(l, buf, oy * sy * l.wp + ox * sx, sx, out, oy * ow + ox);
            ox += 4;
        }
        while ox < ow {
            fold::<T, NAN, 1>(l, buf, oy * sy * l.wp + ox * sx, sx, out, oy * ow + ox);
            ox += 1;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(dst)) = (AVX2, as_f32_mut(dst)) {
        let out = as_f32(out.as_flattened()).expect("f32 like dst");
        // SAFETY: as for the gather; `out` holds `op + GROUP` positions, `dst` the eight
        // planes (asserted inside).
        unsafe { avx2::spread(out, op, dst) };
        return;
    }
    for (q, v) in out[..op].iter().enumerate() {
        for (c, &v) in v.iter().enumerate() {
            dst[c * op + q] = v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::transpose_avx2::{lane_mask, transpose8};
    use super::GROUP;
    use std::arch::x86_64::*;

    /// `rows x cols` positions of the eight planes of `src` (`ip` apart, rows `iw` long)
    /// into the interleaved `buf`, position `(y, c)` to `at + y * wp + c`; eight columns of
    /// a row at a time, transposed.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn gather(
        src: &[f32],
        ip: usize,
        iw: usize,
        (rows, cols): (usize, usize),
        (at, wp): (usize, usize),
        buf: &mut [f32],
    ) {
        if rows == 0 || cols == 0 {
            return;
        }
        assert!(src.len() >= (GROUP - 1) * ip + (rows - 1) * iw + cols);
        assert!(buf.len() >= (at + (rows - 1) * wp + cols) * GROUP);
        let (s, b) = (src.as_ptr(), buf.as_mut_ptr());
        for y in 0..rows {
            let row = b.add((at + y * wp) * GROUP);
            let mut c = 0;
            while c < cols {
                let n = GROUP.min(cols - c);
                let mut v = [_mm256_setzero_ps(); GROUP];
                for (k, v) in v.iter_mut().enumerate() {
                    let p = s.add(k * ip + y * iw + c);
                    *v = match n {
                        GROUP => _mm256_loadu_ps(p),
                        _ => _mm256_maskload_ps(p, lane_mask(n)),
                    };
                }
                for (j, v) in transpose8(v).into_iter().enumerate().take(n) {
                    _mm256_storeu_ps(row.add((c + j) * GROUP), v);
                }
                c += GROUP;
            }
        }
    }

    /// The interleaved outputs `out` (`op` positions and `GROUP` more, read and dropped)
    /// into the eight planes of `dst`, eight positions at a time, transposed.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn spread(out: &[f32], op: usize, dst: &mut [f32]) {
        assert!(out.len() >= (op + GROUP) * GROUP && dst.len() >= GROUP * op);
        super::super::transpose_avx2::spread(
            (out.as_ptr(), GROUP),
            op,
            GROUP,
            (dst.as_mut_ptr(), op),
        );
    }
}

/// `Q` outputs of one row, `sx` positions apart from `base`, into `out` from `at`.
#[inline(always)]
fn fold<T: Elem, const NAN: bool, const Q: usize>(
    l: &Layout,
    buf: &[[T; GROUP]],
    base: usize,
    sx: usize,
    out: &mut [[T; GROUP]],
    at: usize,
) {
    let (t0, rest) = l.taps.split_first().expect("a window has taps");
    // SAFETY (the unchecked reads): `group` asserted that the last output's last tap is
    // inside `buf`, and every read here is at most that.
    let get = |q: usize, t: usize| unsafe { *buf.get_unchecked(base + q * sx + t) };
    let mut acc: [[T; GROUP]; Q] = std::array::from_fn(|q| get(q, *t0));
    for &t in rest {
        for (q, acc) in acc.iter_mut().enumerate() {
            let v = get(q, t);
            for (a, &v) in acc.iter_mut().zip(&v) {
                *a = pick::<T, NAN>(*a, v);
            }
        }
    }
    out[at..at + Q].copy_from_slice(&acc);
}
