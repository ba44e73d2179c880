//! Conv's patch matrix, packed straight into the sgemm's B panels.
//!
//! For a block of output positions `p0..p0 + len` of one (batch, group), row `r` = (input
//! channel, kernel tap) of the patch matrix holds, per output position, the input value that
//! tap reads (0 in the padding). The rows are written directly into the packed layout
//! ([`sgemm::NR`]-column panels, `kdim` rows each): no intermediate im2col matrix, and
//! each element copied once.
//!
//! The copies are short (an output row of 7 to 112 positions, cut at panel edges into
//! pieces of at most 32), so they go through [`copy_short`]/[`zero_short`], fixed-size
//! moves the compiler keeps inline, rather than `copy_from_slice`/`fill`, which call libc's
//! memmove/memset for a run-time length: that call cost a quarter of a 3x3 conv's time.

use super::conv::Plan;
use super::sgemm::{self, NR};

/// A run of output positions of one block sharing their output row: block columns
/// `col..col + len` are output positions `(oz, oy, ox0..ox0 + len)`.
#[derive(Clone, Copy, Debug)]
struct Seg {
    col: usize,
    oz: usize,
    oy: usize,
    ox0: usize,
    len: usize,
}

/// Cuts the output positions `p0..p0 + len` into row runs.
fn block_segments(p: &Plan, p0: usize, len: usize, segs: &mut Vec<Seg>) {
    segs.clear();
    let [_, oh, ow] = p.output;
    let (mut pos, end) = (p0, p0 + len);
    while pos < end {
        let (row, ox0) = (pos / ow, pos % ow);
        let l = (ow - ox0).min(end - pos);
        segs.push(Seg {
            col: pos - p0,
            oz: row / oh,
            oy: row % oh,
            ox0,
            len: l,
        });
        pos += l;
    }
}

/// Per-task scratch: the block's row runs.
#[derive(Default)]
pub(super) struct Scratch {
    segs: Vec<Seg>,
}

/// Short copies and zero fills (at most [`NR`] floats): the portable fixed-size moves or
/// AVX-512 masked moves.
trait Moves {
    fn copy(d: &mut [f32], s: &[f32]);
    fn zero(d: &mut [f32]);

    /// `d[t] = xr[first + t]` for `t` in `lo..hi`, 0 for the other `t` (`lo <= hi <=
    /// d.len()`; `first + t` in bounds of `xr` for `t` in `lo..hi`).
    #[inline(always)]
    fn window(d: &mut [f32], xr: &[f32], first: isize, lo: usize, hi: usize) {
        Self::zero(&mut d[..lo]);
        if hi > lo {
            Self::copy(&mut d[lo..hi], &xr[(first + lo as isize) as usize..]);
        }
        Self::zero(&mut d[hi..]);
    }
}

struct Portable;

impl Moves for Portable {
    #[inline(always)]
    fn copy(d: &mut [f32], s: &[f32]) {
        copy_short(d, s)
    }
    #[inline(always)]
    fn zero(d: &mut [f32]) {
        zero_short(d)
    }
}

/// Two masked 16-float moves per piece; only inlined into [`pack_patches_avx512`].
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Moves for Avx512 {
    #[inline(always)]
    fn copy(d: &mut [f32], s: &[f32]) {
        use std::arch::x86_64::*;
        let n = d.len();
        assert!(n <= 32 && s.len() >= n);
        let (m0, m1) = masks(n);
        // SAFETY: only called from code compiled for AVX-512F on a CPU that has it
        // (pack_patches checks); masked lanes are neither read nor written, so the
        // accesses stay within the first n floats of d and s.
        unsafe {
            let (dp, sp) = (d.as_mut_ptr(), s.as_ptr());
            _mm512_mask_storeu_ps(dp, m0, _mm512_maskz_loadu_ps(m0, sp));
            _mm512_mask_storeu_ps(dp.add(16), m1, _mm512_maskz_loadu_ps(m1, sp.add(16)));
        }
    }
    /// One masked load per half, its mask the lanes `lo..hi`, zeroes the others: a padded
    /// row run in one pass.
    #[inline(always)]
    fn window(d: &mut [f32], xr: &[f32], first: isize, lo: usize, hi: usize) {
        use std::arch::x86_64::*;
        let n = d.len();
        assert!(lo <= hi && hi <= n && n <= 32);
        assert!(lo == hi || (first + lo as isize >= 0 && first + hi as isize <= xr.len() as isize));
        let (s0, s1) = masks(n);
        let valid = ((1u64 << hi) - 1) & !((1u64 << lo) - 1);
        let (l0, l1) = (valid as u16, (valid >> 16) as u16);
        // SAFETY: as in `copy`; the loads touch only the lanes lo..hi, which the assert
        // above keeps inside xr (the pointer itself may point before xr: wrapping_offset).
        unsafe {
            let (dp, sp) = (d.as_mut_ptr(), xr.as_ptr().wrapping_offset(first));
            _mm512_mask_storeu_ps(dp, s0, _mm512_maskz_loadu_ps(l0, sp));
            let v1 = _mm512_maskz_loadu_ps(l1, sp.wrapping_add(16));
            _mm512_mask_storeu_ps(dp.add(16), s1, v1);
        }
    }

    #[inline(always)]
    fn zero(d: &mut [f32]) {
        use std::arch::x86_64::*;
        let n = d.len();
        assert!(n <= 32);
        let (m0, m1) = masks(n);
        // SAFETY: as in `copy`.
        unsafe {
            let dp = d.as_mut_ptr();
            _mm512_mask_storeu_ps(dp, m0, _mm512_setzero_ps());
            _mm512_mask_storeu_ps(dp.add(16), m1, _mm512_setzero_ps());
        }
    }
}

/// The lane masks of the two 16-float halves of an `n`-float run (`n <= 32`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn masks(n: usize) -> (u16, u16) {
    let bits = |k: usize| ((1u32 << k.min(16)) - 1) as u16;
    (bits(n), bits(n.saturating_sub(16)))
}

/// Row `r` of a packed B of `kdim` rows: the writes of one patch-matrix row.
struct PackedRow<'a, M> {
    packed: &'a mut [f32],
    kdim: usize,
    r: usize,
    moves: std::marker::PhantomData<M>,
}

impl<'a, M: Moves> PackedRow<'a, M> {
    #[inline(always)]
    fn new(packed: &'a mut [f32], kdim: usize, r: usize) -> Self {
        PackedRow {
            packed,
            kdim,
            r,
            moves: std::marker::PhantomData,
        }
    }

    /// Calls `f(dst, i)` for the pieces of columns `col..col + len` of this row, one per
    /// panel they touch: `dst` is the piece's slots, `i` its offset in the run.
    #[inline(always)]
    fn pieces(&mut self, col: usize, len: usize, mut f: impl FnMut(&mut [f32], usize)) {
        let mut i = 0;
        while i < len {
            let c = col + i;
            let (q, lane) = (c / NR, c % NR);
            let n = (NR - lane).min(len - i);
            let at = (q * self.kdim + self.r) * NR + lane;
            f(&mut self.packed[at..at + n], i);
            i += n;
        }
    }

    #[inline(always)]
    fn zero(&mut self, col: usize, len: usize) {
        self.pieces(col, len, |d, _| M::zero(d));
    }

    /// Columns `col..col + len` from `src[0]`, `src[stride]`, ...
    #[inline(always)]
    fn copy(&mut self, col: usize, len: usize, src: &[f32], stride: usize) {
        if stride == 1 {
            self.pieces(col, len, |d, i| M::copy(d, &src[i..]));
        } else {
            self.pieces(col, len, |d, i| {
                for (v, &x) in d.iter_mut().zip(src[i * stride..].iter().step_by(stride)) {
                    *v = x;
                }
            });
        }
    }

    /// Columns `col..col + len` from a stride-1 input row `xr`: run position `t` reads
    /// `xr[first + t]` when `t` is in `lo..hi`, else 0 (the padding).
    #[inline(always)]
    fn window(
        &mut self,
        col: usize,
        len: usize,
        xr: &[f32],
        first: isize,
        (lo, hi): (usize, usize),
    ) {
        self.pieces(col, len, |d, i| {
            let n = d.len();
            let l = lo.clamp(i, i + n) - i;
            let h = hi.clamp(i + l, i + n) - i;
            M::window(d, xr, first + i as isize, l, h)
        });
    }

    /// Zeroes the lanes past column `len` of the last panel (`len` not a multiple of NR),
    /// which the micro-kernel reads and whose products it drops.
    #[inline(always)]
    fn zero_tail(&mut self, len: usize) {
        if !len.is_multiple_of(NR) {
            let col = len;
            self.zero(col, NR - len % NR);
        }
    }
}

/// `d = s[..d.len()]` for short runs, in fixed-size moves (see the module docs): 8-float
/// moves, the last one overlapping the one before, then 4-float moves, then single floats.
/// No loop of single floats: the compiler turns one into a memmove call. (Also the
/// depthwise kernel's row copy into its padded scratch.)
#[inline(always)]
pub(super) fn copy_short(d: &mut [f32], s: &[f32]) {
    let n = d.len();
    let s = &s[..n];
    if n >= 8 {
        let mut i = 0;
        loop {
            let at = i.min(n - 8);
            *<&mut [f32; 8]>::try_from(&mut d[at..at + 8]).expect("8") =
                *<&[f32; 8]>::try_from(&s[at..at + 8]).expect("8");
            if at == n - 8 {
                break;
            }
            i += 8;
        }
    } else if n >= 4 {
        for at in [0, n - 4] {
            *<&mut [f32; 4]>::try_from(&mut d[at..at + 4]).expect("4") =
                *<&[f32; 4]>::try_from(&s[at..at + 4]).expect("4");
        }
    } else {
        for j in 0..3 {
            if j < n {
                d[j] = s[j];
            }
        }
    }
}

/// `d = 0` for short runs (at most [`NR`] floats), in fixed-size moves as [`copy_short`].
#[inline(always)]
fn zero_short(d: &mut [f32]) {
    copy_short(d, &[0.0; NR]);
}

/// Packs the patch matrix (`kdim x len`) of output positions `p0..p0 + len` of one (batch,
/// group) straight into the sgemm's B panels in `packed` (`packed_b_len(kdim, len)` floats).
/// `x` is the group's input channels. Each row (channel, kernel tap) is gathered run by run:
/// the valid input columns of a run are computed once, so padding costs no per-element test,
/// and with stride 1 the copy is a contiguous copy.
pub(super) fn pack_patches(
    p: &Plan,
    x: &[f32],
    cols: (usize, usize),
    pointwise: bool,
    s: &mut Scratch,
    packed: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if super::sgemm::Kernel::detect() == super::sgemm::Kernel::Avx512 {
        // SAFETY: the CPU has AVX-512F (the sgemm's detection).
        unsafe { pack_patches_avx512(p, x, cols, pointwise, s, packed) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::sgemm::Kernel::detect() == super::sgemm::Kernel::Avx2 {
        // SAFETY: the CPU has AVX2 (the sgemm's detection).
        unsafe { pack_patches_avx2(p, x, cols, pointwise, s, packed) };
        return;
    }
    pack_body::<Portable>(p, x, cols, pointwise, s, packed);
}

/// [`pack_body`] with the portable moves compiled for AVX2 (32-byte moves; the crate is
/// built for baseline x86-64).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_patches_avx2(
    p: &Plan,
    x: &[f32],
    cols: (usize, usize),
    pointwise: bool,
    s: &mut Scratch,
    packed: &mut [f32],
) {
    pack_body::<Portable>(p, x, cols, pointwise, s, packed);
}

/// [`pack_body`] compiled for AVX-512F, with its masked moves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_patches_avx512(
    p: &Plan,
    x: &[f32],
    cols: (usize, usize),
    pointwise: bool,
    s: &mut Scratch,
    packed: &mut [f32],
) {
    pack_body::<Avx512>(p, x, cols, pointwise, s, packed);
}

#[inline(always)]
fn pack_body<M: Moves>(
    p: &Plan,
    x: &[f32],
    (p0, len): (usize, usize),
    pointwise: bool,
    s: &mut Scratch,
    packed: &mut [f32],
) {
    let kdim = p.cg() * p.k_plane();
    let in_plane = p.in_plane();
    debug_assert_eq!(packed.len(), sgemm::packed_b_len(kdim, len));
    if pointwise {
        // A 1x1 kernel with stride 1 and no padding reads each input position exactly once,
        // in order: the input plane already is the patch matrix.
        for c in 0..p.cg() {
            let mut row = PackedRow::<M>::new(packed, kdim, c);
            row.copy(0, len, &x[c * in_plane + p0..c * in_plane + p0 + len], 1);
            row.zero_tail(len);
        }
        return;
    }
    block_segments(p, p0, len, &mut s.segs);
    let [id, ih, iw] = p.input;
    let [kd, kh, kw] = p.kernel;
    let [sd, sh, sw] = p.strides;
    let [dd, dh, dw] = p.dilations;
    let [pd, ph, pw] = p.pads.map(|v| v as isize);
    let ow = p.output[2];
    // Per kernel column: the input column offset and the output columns whose input column
    // is in bounds (independent of the row).
    let cols: Vec<(isize, usize, usize)> = (0..kw)
        .map(|cc| {
            let off = (cc * dw) as isize - pw;
            let (lo, hi) = valid_cols(off, sw, iw, ow);
            (off, lo, hi)
        })
        .collect();
    let mut r = 0;
    for c in 0..p.cg() {
        let xc = &x[c * in_plane..(c + 1) * in_plane];
        for a in 0..kd {
            for bb in 0..kh {
                for &(off, vlo, vhi) in &cols {
                    let mut row = PackedRow::<M>::new(packed, kdim, r);
                    for sg in &s.segs {
                        let z = (sg.oz * sd + a * dd) as isize - pd;
                        let y = (sg.oy * sh + bb * dh) as isize - ph;
                        if z < 0 || z >= id as isize || y < 0 || y >= ih as isize {
                            row.zero(sg.col, sg.len);
                            continue;
                        }
                        let xr = &xc[(z as usize * ih + y as usize) * iw..][..iw];
                        let end = sg.ox0 + sg.len;
                        let lo = vlo.clamp(sg.ox0, end);
                        let hi = vhi.clamp(lo, end);
                        if sw == 1 {
                            let first = sg.ox0 as isize + off;
                            row.window(sg.col, sg.len, xr, first, (lo - sg.ox0, hi - sg.ox0));
                            continue;
                        }
                        row.zero(sg.col, lo - sg.ox0);
                        row.zero(sg.col + hi - sg.ox0, end - hi);
                        if hi > lo {
                            // In bounds: lo >= the first valid column, so this is >= 0.
                            let start = ((lo * sw) as isize + off) as usize;
                            row.copy(sg.col + lo - sg.ox0, hi - lo, &xr[start..], sw);
                        }
                    }
                    row.zero_tail(len);
                    r += 1;
                }
            }
        }
    }
}

/// The output columns `lo..hi` whose input column `ox * stride + off` lies in `0..iw`.
#[inline(always)]
fn valid_cols(off: isize, stride: usize, iw: usize, ow: usize) -> (usize, usize) {
    let s = stride as isize;
    // lo = ceil(-off / s) when off < 0; hi = floor((iw - 1 - off) / s) + 1, clamped to ow.
    let lo = if off < 0 {
        ((-off + s - 1) / s) as usize
    } else {
        0
    };
    let last = iw as isize - 1 - off;
    let hi = if last < 0 {
        0
    } else {
        ow.min((last / s) as usize + 1)
    };
    (lo.min(ow), hi)
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
    /// than a panel.
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
            (&[1, 3, 23, 23], &[7, 7], &[2, 2], &[1, 1], &[3, 3, 3, 3]),
            (&[1, 2, 11, 40], &[3, 5], &[1, 3], &[2, 1], &[0, 2, 3, 1]),
            (&[1, 2, 7, 7], &[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0]),
            (&[1, 2, 5, 6], &[3, 3], &[1, 1], &[1, 1], &[2, 2, 2, 2]),
            (&[1, 2, 33], &[4], &[1], &[1], &[2, 1]),
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
            let pointwise = p.kernel == [1; 3] && p.strides == [1; 3] && p.pads == [0; 3];
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
                pack_body::<Portable>(&p, &x, (p0, len), pointwise, &mut s, &mut got);
                assert_eq!(got, want, "portable {xs:?} {ks:?} block {p0}+{len}");
                #[cfg(target_arch = "x86_64")]
                if sgemm::Kernel::detect() == sgemm::Kernel::Avx512 {
                    got.fill(f32::NAN);
                    // SAFETY: the CPU has AVX-512F.
                    unsafe { pack_patches_avx512(&p, &x, (p0, len), pointwise, &mut s, &mut got) };
                    assert_eq!(got, want, "avx512 {xs:?} {ks:?} block {p0}+{len}");
                }
            }
        }
    }
}
