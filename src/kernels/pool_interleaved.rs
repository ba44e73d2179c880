//! MaxPool on small planes, eight planes at a time: the planes are interleaved into one
//! padded buffer whose position `(r, c)` holds the eight planes' values side by side, so
//! every window tap is one 8-wide max at a fixed offset (what onnxruntime's NCHWc layout
//! gives it), then spread back into the eight output planes. Plane by plane
//! (`pool_flat`), 7x7 outputs spent most of their time in per-plane and per-row set-up:
//! GoogLeNet's 14x14 -> 7x7 MaxPool on 832 planes took 0.34 ms, onnxruntime 0.03.
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
/// Largest output and input planes this path takes. In GoogLeNet (one thread, in the net)
/// its 7x7 outputs took half the per-plane path's time (832 planes: 0.19 -> 0.10 ms, and
/// 14x14 -> 7x7 at stride 2 0.34 -> 0.17), but its 14x14 outputs 1.2-1.4x as long (the
/// scalar gather into the interleaved buffer and the scatter out cost more than the
/// per-plane set-up they save), and 28x28 ones 1.6x.
const MAX_OUT_PLANE: usize = 8 * 8;
const MAX_IN_PLANE: usize = 16 * 16;

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
    let run = |i: usize, dst: &mut [T], buf: &mut Vec<[T; GROUP]>| {
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
            .for_each_init(Vec::new, |buf, (i, dst)| run(i, dst, buf));
    } else {
        let mut buf = Vec::new();
        for (i, dst) in head.chunks_mut(group_out).enumerate() {
            run(i, dst, &mut buf);
        }
    }
    groups * GROUP
}

fn group_dispatch<T: Elem, const NAN: bool>(
    g: &Geometry,
    l: &Layout,
    src: &[T],
    dst: &mut [T],
    buf: &mut Vec<[T; GROUP]>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { group_avx2::<T, NAN>(g, l, src, dst, buf) };
    }
    group::<T, NAN>(g, l, src, dst, buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn group_avx2<T: Elem, const NAN: bool>(
    g: &Geometry,
    l: &Layout,
    src: &[T],
    dst: &mut [T],
    buf: &mut Vec<[T; GROUP]>,
) {
    group::<T, NAN>(g, l, src, dst, buf)
}

/// One group: `src` and `dst` hold `GROUP` planes each.
#[inline(always)]
fn group<T: Elem, const NAN: bool>(
    g: &Geometry,
    l: &Layout,
    src: &[T],
    dst: &mut [T],
    buf: &mut Vec<[T; GROUP]>,
) {
    let fill = T::from_f64(f64::NEG_INFINITY);
    let [_, ih, iw] = g.input;
    let [_, pt, pl] = g.pb;
    let [_, sy, sx] = g.strides;
    let [_, oh, ow] = g.output;
    let (ip, op) = (g.in_plane, g.out_plane);
    buf.clear();
    buf.resize(l.hp * l.wp, [fill; GROUP]);
    // The padded interleaved plane: rows and columns inside the input gathered from the
    // eight planes, the rest left at -inf.
    let cols = pl.min(l.wp)..(iw + pl).min(l.wp);
    for r in pt..(ih + pt).min(l.hp) {
        let y = r - pt;
        let row = &mut buf[r * l.wp..][..l.wp];
        for j in cols.clone() {
            let at = y * iw + j - pl;
            row[j] = std::array::from_fn(|c| src[c * ip + at]);
        }
    }
    // The last position any output's tap reads is inside the buffer.
    let last_tap = l.taps.iter().max().copied().unwrap_or(0);
    assert!((oh - 1) * sy * l.wp + (ow - 1) * sx + last_tap < buf.len());
    assert!(dst.len() >= (GROUP - 1) * op + oh * ow);
    for oy in 0..oh {
        let mut ox = 0;
        // Four outputs at a time (four independent chains of max), then one at a time.
        while ox + 4 <= ow {
            fold::<T, NAN, 4>(l, buf, oy * sy * l.wp + ox * sx, sx, dst, op, oy * ow + ox);
            ox += 4;
        }
        while ox < ow {
            fold::<T, NAN, 1>(l, buf, oy * sy * l.wp + ox * sx, sx, dst, op, oy * ow + ox);
            ox += 1;
        }
    }
}

/// `Q` outputs of one row, `sx` positions apart from `base`, into the eight planes at `at`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fold<T: Elem, const NAN: bool, const Q: usize>(
    l: &Layout,
    buf: &[[T; GROUP]],
    base: usize,
    sx: usize,
    dst: &mut [T],
    op: usize,
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
    for (q, acc) in acc.iter().enumerate() {
        for (c, &a) in acc.iter().enumerate() {
            dst[c * op + at + q] = a;
        }
    }
}
