//! MaxPool on planes up to 112x112, eight planes at a time: the planes are interleaved into one
//! padded buffer whose position `(r, c)` holds the eight planes' values side by side, so
//! every window tap is one 8-wide max at a fixed offset (what onnxruntime's NCHWc layout
//! gives it), then spread back into the eight output planes. Plane by plane
//! (`pool_flat`), 7x7 outputs spent most of their time in per-plane and per-row set-up:
//! GoogLeNet's 14x14 -> 7x7 MaxPool on 832 planes took 0.34 ms, onnxruntime 0.03.
//!
//! For f32 on AVX2 (`avx2::group`) the gather and the spread are 8x8 transposes in registers
//! (`transpose_avx2.rs`), the gather notes any NaN on the way, and NaN-free groups fold by
//! `vmaxps` in registers; other types, and groups holding a NaN, fold element by element.
//! A 111x111 -> 55x55 MaxPool on 64 planes (SqueezeNet's first; one thread, min of 300)
//! took 0.31-0.46 ms before that path, with a separate NaN pass, the whole padded buffer
//! set to -inf per call and a memcpy per transpose, and 0.23-0.24 ms with it.
//!
//! Padding holds -inf (the integer minimum), as in `pool_flat`. Each output element folds
//! its taps in window order from the first with `pool_flat`'s `pick` rule, so the bits are
//! the per-plane path's (tests in `pool_flat`).

use super::blocked::Layout;
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
struct Padded {
    hp: usize,
    wp: usize,
    taps: Vec<usize>,
}

impl Padded {
    fn new(g: &Geometry) -> Padded {
        let [_, kh, kw] = g.kernel;
        let [_, sy, sx] = g.strides;
        let [_, dy, dx] = g.dil;
        let [_, oh, ow] = g.output;
        let wp = (ow - 1) * sx + (kw - 1) * dx + 1;
        let hp = (oh - 1) * sy + (kh - 1) * dy + 1;
        let taps = (0..kh * kw)
            .map(|t| (t / kw) * dy * wp + (t % kw) * dx)
            .collect();
        Padded { hp, wp, taps }
    }
}

/// Max-pools the first `GROUP * floor(planes / GROUP)` planes of `xd` into `out` (planes
/// of `g.out_plane`); returns how many planes it did. `io` gives the layouts of `xd` and
/// `out`; a blocked one (`kernels::blocked`) only for f32 on AVX2
/// (`pool::max_pool_blocked_capable`),
/// where group `i` of eight planes is block `i`, at the same offsets.
pub(super) fn max_planes<T: Elem>(
    g: &Geometry,
    xd: &[T],
    out: &mut [T],
    io: (Layout, Layout),
) -> usize {
    let planes = out.len() / g.out_plane;
    let groups = planes / GROUP;
    let l = Padded::new(g);
    let group_out = GROUP * g.out_plane;
    let run = |i: usize, dst: &mut [T], buf: &mut Scratch<T>| {
        let src = &xd[i * GROUP * g.in_plane..][..GROUP * g.in_plane];
        group_dispatch(g, &l, src, dst, io, buf)
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

impl<T: Elem> Scratch<T> {
    /// Sizes the buffers for `l` and `op` output positions (they only grow) and sets the
    /// input buffer's padding, the positions outside the input's rows and columns, to -inf
    /// (the rest is gathered). Setting the whole buffer per call took 12% of a 111x111 ->
    /// 55x55 MaxPool; the padding is a border of a row or two.
    fn size(&mut self, l: &Padded, ((rows, cols), (pt, pl)): Inside, op: usize) {
        let fill = [T::from_f64(f64::NEG_INFINITY); GROUP];
        if self.input.len() < l.hp * l.wp {
            self.input.resize(l.hp * l.wp, fill);
        }
        if self.output.len() < op + GROUP {
            self.output.resize(op + GROUP, fill);
        }
        let buf = &mut self.input[..l.hp * l.wp];
        let (top, rest) = buf.split_at_mut(pt * l.wp);
        top.fill(fill);
        let (middle, bottom) = rest.split_at_mut(rows * l.wp);
        bottom.fill(fill);
        for row in middle.chunks_exact_mut(l.wp) {
            row[..pl].fill(fill);
            row[pl + cols..].fill(fill);
        }
    }
}

thread_local! {
    /// The f32 path's buffers, kept by each thread between calls (a 111x111 plane of eight
    /// lanes is 394 KB, the largest `applies` takes 415 KB).
    static F32_SCRATCH: std::cell::RefCell<Scratch<f32>> = std::cell::RefCell::new(Scratch::default());
}

/// One group of `GROUP` planes (`src`, `dst`, in the layouts `io`). f32 on AVX2 takes
/// `avx2::group`; other types and CPUs fold element by element, after one pass over `src`
/// for NaNs, on planes only.
fn group_dispatch<T: Elem>(
    g: &Geometry,
    l: &Padded,
    src: &[T],
    dst: &mut [T],
    io: (Layout, Layout),
    s: &mut Scratch<T>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        if let (Some(src), Some(dst)) = (as_f32(src), as_f32_mut(dst)) {
            // SAFETY: the CPU has AVX2, checked just above.
            return F32_SCRATCH.with_borrow_mut(|s| unsafe { avx2::group(g, l, src, dst, io, s) });
        }
    }
    assert!(
        io == (Layout::Planes, Layout::Planes),
        "blocked MaxPool needs f32 on AVX2"
    );
    // A fold, not `any`: it vectorizes.
    #[allow(clippy::eq_op)]
    let nan = src.iter().fold(false, |any, &v| any | (v != v));
    match nan {
        true => group::<T, true>(g, l, src, dst, s),
        false => group::<T, false>(g, l, src, dst, s),
    }
}

/// Whether `T` is f32 (then the AVX2 path applies).
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

/// The inside of the padded plane: the input rows and columns some window reads, and where
/// they start (top and left padding).
type Inside = ((usize, usize), (usize, usize));

/// `g`'s `Inside` in the layout `l`.
fn inside(g: &Geometry, l: &Padded) -> Inside {
    let [_, ih, iw] = g.input;
    let [_, pt, pl] = g.pb;
    let rows = ih.min(l.hp.saturating_sub(pt));
    let cols = iw.min(l.wp.saturating_sub(pl));
    ((rows, cols), (pt, pl))
}

/// One group element by element: gathers the eight planes into the padded buffer, folds
/// every output's taps with `pick::<T, NAN>`, spreads the outputs into the planes.
fn group<T: Elem, const NAN: bool>(
    g: &Geometry,
    l: &Padded,
    src: &[T],
    dst: &mut [T],
    s: &mut Scratch<T>,
) {
    let [_, _, iw] = g.input;
    let (ip, op) = (g.in_plane, g.out_plane);
    let inner = inside(g, l);
    let ((rows, cols), (pt, pl)) = inner;
    s.size(l, inner, op);
    for y in 0..rows {
        let row = &mut s.input[(y + pt) * l.wp + pl..][..cols];
        for (j, v) in row.iter_mut().enumerate() {
            *v = std::array::from_fn(|c| src[c * ip + y * iw + j]);
        }
    }
    fold_all::<T, NAN>(g, l, &s.input, &mut s.output);
    assert!(dst.len() >= GROUP * op);
    for (q, v) in s.output[..op].iter().enumerate() {
        for (c, &v) in v.iter().enumerate() {
            dst[c * op + q] = v;
        }
    }
}

/// Every output position of the group from the padded buffer `buf` into `out`.
fn fold_all<T: Elem, const NAN: bool>(
    g: &Geometry,
    l: &Padded,
    buf: &[[T; GROUP]],
    out: &mut [[T; GROUP]],
) {
    let [_, sy, sx] = g.strides;
    let [_, oh, ow] = g.output;
    // The last position any output's tap reads is inside the buffer.
    let last_tap = l.taps.iter().max().copied().unwrap_or(0);
    assert!((oh - 1) * sy * l.wp + (ow - 1) * sx + last_tap < buf.len());
    assert!(out.len() >= oh * ow);
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
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::pool::Geometry;
    use super::super::transpose_avx2::{lane_mask, store_positions, transpose8};
    use super::{inside, Layout, Padded, Scratch, GROUP};
    use std::arch::x86_64::*;

    /// One group of f32 planes: gathered by 8x8 transposes (checking for NaN on the way),
    /// folded by `vmaxps` in registers (or by `fold_all` with the NaN rule if a NaN was
    /// read), spread back by transposes. Element by element, the 14x14 and 28x28 outputs
    /// took longer this way than plane by plane; the NaN check as its own pass over `src`
    /// and the fold through `[f32; 8]` arrays took half of a 111x111 -> 55x55 MaxPool.
    /// A blocked `src` (`io.0`) is copied by rows instead of gathered, a blocked `dst`
    /// (`io.1`) written by the fold as it is, not spread.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn group(
        g: &Geometry,
        l: &Padded,
        src: &[f32],
        dst: &mut [f32],
        (lin, lout): (Layout, Layout),
        s: &mut Scratch<f32>,
    ) {
        let [_, _, iw] = g.input;
        let (ip, op) = (g.in_plane, g.out_plane);
        let inner = inside(g, l);
        let ((rows, cols), (pt, pl)) = inner;
        s.size(l, inner, op);
        let buf = s.input.as_flattened_mut();
        let at = (pt * l.wp + pl, l.wp);
        let nan = match lin {
            Layout::Planes => gather(src, ip, iw, (rows, cols), at, buf),
            Layout::Blocked => copy_rows(src, iw, (rows, cols), at, buf),
        };
        assert!(dst.len() >= GROUP * op);
        let out: &mut [[f32; GROUP]] = match lout {
            Layout::Planes => &mut s.output,
            Layout::Blocked => dst.as_chunks_mut().0,
        };
        match nan {
            true => super::fold_all::<f32, true>(g, l, &s.input, out),
            false => fold_all(g, l, s.input.as_flattened(), out.as_flattened_mut()),
        }
        if lout == Layout::Planes {
            assert!(s.output.len() >= op + GROUP);
            super::super::transpose_avx2::spread(
                (s.output.as_flattened().as_ptr(), GROUP),
                op,
                GROUP,
                (dst.as_mut_ptr(), op),
            );
        }
    }

    /// `rows x cols` positions of the blocked `src` (rows `iw` positions long) into `buf`,
    /// position `(y, c)` to `at + y * wp + c`, row by row. Returns whether any value read is
    /// NaN.
    #[target_feature(enable = "avx2")]
    unsafe fn copy_rows(
        src: &[f32],
        iw: usize,
        (rows, cols): (usize, usize),
        (at, wp): (usize, usize),
        buf: &mut [f32],
    ) -> bool {
        if rows == 0 || cols == 0 {
            return false;
        }
        assert!(src.len() >= ((rows - 1) * iw + cols) * GROUP);
        assert!(buf.len() >= (at + (rows - 1) * wp + cols) * GROUP);
        let (s, b) = (src.as_ptr(), buf.as_mut_ptr());
        let mut nan = _mm256_setzero_ps();
        for y in 0..rows {
            let (from, to) = (s.add(y * iw * GROUP), b.add((at + y * wp) * GROUP));
            for c in 0..cols {
                let v = _mm256_loadu_ps(from.add(c * GROUP));
                nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                _mm256_storeu_ps(to.add(c * GROUP), v);
            }
        }
        _mm256_movemask_ps(nan) != 0
    }

    /// `rows x cols` positions of the eight planes of `src` (`ip` apart, rows `iw` long)
    /// into the interleaved `buf`, position `(y, c)` to `at + y * wp + c`; eight columns of
    /// a row at a time, transposed. Returns whether any value read is NaN.
    #[target_feature(enable = "avx2")]
    unsafe fn gather(
        src: &[f32],
        ip: usize,
        iw: usize,
        (rows, cols): (usize, usize),
        (at, wp): (usize, usize),
        buf: &mut [f32],
    ) -> bool {
        if rows == 0 || cols == 0 {
            return false;
        }
        assert!(src.len() >= (GROUP - 1) * ip + (rows - 1) * iw + cols);
        assert!(buf.len() >= (at + (rows - 1) * wp + cols) * GROUP);
        let (s, b) = (src.as_ptr(), buf.as_mut_ptr());
        let mut nan = _mm256_setzero_ps();
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
                    nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(*v, *v));
                }
                store_positions(transpose8(v), n, row.add(c * GROUP));
                c += GROUP;
            }
        }
        _mm256_movemask_ps(nan) != 0
    }

    /// `fold_all` for NaN-free f32: `vmaxps(v, m)` is `v > m ? v : m`, `pick`'s rule.
    /// 3x3 windows (every MaxPool of the nets) take a copy with the taps' count fixed, its
    /// loop over them unrolled with their offsets in registers: the loop reading each
    /// offset from memory and scaling it took half of SqueezeNet's MaxPools' time.
    #[target_feature(enable = "avx2")]
    unsafe fn fold_all(g: &Geometry, l: &Padded, buf: &[f32], out: &mut [f32]) {
        let [_, sy, sx] = g.strides;
        let [_, oh, ow] = g.output;
        let last_tap = l.taps.iter().max().copied().unwrap_or(0);
        assert!(((oh - 1) * sy * l.wp + (ow - 1) * sx + last_tap + 1) * GROUP <= buf.len());
        assert!(out.len() >= oh * ow * GROUP);
        match <[usize; 9]>::try_from(l.taps.as_slice()) {
            Ok(taps) => fold_nine(g, l.wp, taps, buf, out),
            Err(_) => fold_rows(g, l.wp, &l.taps, buf, out),
        }
    }

    /// [`fold_rows`] for 3x3 windows: with the taps a fixed-size array, the loop over them
    /// is unrolled and their offsets stay in registers.
    #[target_feature(enable = "avx2")]
    unsafe fn fold_nine(g: &Geometry, wp: usize, taps: [usize; 9], buf: &[f32], out: &mut [f32]) {
        fold_rows(g, wp, &taps, buf, out)
    }

    /// Every output of `fold_all`, the window's taps at the positions `taps` from its first
    /// (padded rows `wp` positions long).
    #[inline(always)]
    unsafe fn fold_rows(g: &Geometry, wp: usize, taps: &[usize], buf: &[f32], out: &mut [f32]) {
        let [_, sy, sx] = g.strides;
        let [_, oh, ow] = g.output;
        let (t0, rest) = taps.split_first().expect("a window has taps");
        let (b, o) = (buf.as_ptr(), out.as_mut_ptr());
        for oy in 0..oh {
            let row = oy * sy * wp;
            let dst = o.add(oy * ow * GROUP);
            let mut ox = 0;
            // Four outputs at a time: four independent chains of max.
            while ox + 4 <= ow {
                let p = b.add((row + ox * sx) * GROUP);
                let at = |q: usize, t: usize| _mm256_loadu_ps(p.add((q * sx + t) * GROUP));
                let mut acc: [__m256; 4] = std::array::from_fn(|q| at(q, *t0));
                for &t in rest {
                    for (q, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_max_ps(at(q, t), *acc);
                    }
                }
                for (q, acc) in acc.into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add((ox + q) * GROUP), acc);
                }
                ox += 4;
            }
            while ox < ow {
                let p = b.add((row + ox * sx) * GROUP);
                let mut acc = _mm256_loadu_ps(p.add(t0 * GROUP));
                for &t in rest {
                    acc = _mm256_max_ps(_mm256_loadu_ps(p.add(t * GROUP)), acc);
                }
                _mm256_storeu_ps(dst.add(ox * GROUP), acc);
                ox += 1;
            }
        }
    }
}

/// `Q` outputs of one row, `sx` positions apart from `base`, into `out` from `at`.
#[inline(always)]
fn fold<T: Elem, const NAN: bool, const Q: usize>(
    l: &Padded,
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
