//! The AVX-512F form of the depthwise kernel's per-plane step (see depthwise.rs), for 2-D
//! 3x3 and 5x5 kernels with row stride 1 or 2 and no row dilation (any column stride,
//! column dilation and padding): MobileNet, EfficientNet and ShuffleNet's depthwise convs.
//!
//! Why it beats the autovectorized blocks: the kernel's taps stay broadcast in registers for
//! the whole plane; a pass computes several output rows at once, so each input row vector
//! loaded serves every output row whose window covers it (3x3 stride 1 over 4 rows: 18 loads
//! for 36 taps instead of 36); and row tails are masked 16-lane stores, so 7- and 14-column
//! planes cost one vector per row instead of a 16-column block plus scalar work.
//!
//! Same arithmetic as the portable blocks: per output, `+0.0`, then `+ w * x` per tap in
//! (row, column) order as a separate multiply and add (no FMA), then `+ bias`, then the clamp:
//! the same bits. (On Zen 4 a 512-bit multiply and add issue on different pipes, so the
//! unfused form costs no throughput.)

use super::depthwise::Geometry;
use super::sgemm::Activation;

/// Whether this CPU runs [`plane`].
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`plane`] handles `g`'s shape.
pub(super) fn supports(g: &Geometry) -> bool {
    let [kd, kh, kw] = g.kernel;
    kd == 1
        && g.dilations[1] == 1
        && matches!(g.strides[1], 1 | 2)
        && matches!((kh, kw), (3, 3) | (5, 5))
}

/// One (batch, output channel) plane: `dst` = conv of input plane `x` with the plane's
/// weights `w` (`kernel` elements), `+ bias`, clamped; `scratch` is reused between planes.
///
/// # Safety
/// [`available`] and [`supports`]`(g)` must be true.
pub(super) unsafe fn plane(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    bias: f32,
    act: Activation,
    scratch: &mut Vec<f32>,
    dst: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        imp::plane(g, x, w, bias, act, scratch, dst)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (g, x, w, bias, act, scratch, dst);
        unreachable!("the AVX-512 depthwise path is only selected on x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::depthwise::{pad_plane, Geometry, Padded, SLACK};
    use super::super::sgemm::clamp_avx512 as clamp;
    use super::Activation;
    use std::arch::x86_64::*;

    /// Lanes of one vector: 16 output columns.
    const L: usize = 16;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn plane(
        g: &Geometry,
        x: &[f32],
        w: &[f32],
        bias: f32,
        act: Activation,
        scratch: &mut Vec<f32>,
        dst: &mut [f32],
    ) {
        let lay = g.layout();
        pad_plane(g, &lay, x, scratch, |s, e, o| split_pairs(s, e, o));
        let xp: &[f32] = scratch;
        match (g.kernel[1], g.kernel[2], g.strides[1]) {
            (3, 3, 1) => plane_k::<3, 3, 1>(g, &lay, xp, w, bias, act, dst),
            (3, 3, 2) => plane_k::<3, 3, 2>(g, &lay, xp, w, bias, act, dst),
            (5, 5, 1) => plane_k::<5, 5, 1>(g, &lay, xp, w, bias, act, dst),
            (5, 5, 2) => plane_k::<5, 5, 2>(g, &lay, xp, w, bias, act, dst),
            _ => unreachable!("`supports` admits only these shapes"),
        }
    }

    /// What every pass over a plane shares: the broadcast taps, the scratch column offset of
    /// each kernel column, and the epilogue.
    struct Taps<const KH: usize, const KW: usize> {
        w: [[__m512; KW]; KH],
        col: [usize; KW],
        bias: __m512,
        act: Activation,
    }

    /// `src`'s (even, odd) pairs into `even` and `odd`, 16 pairs per two permutes (the
    /// autovectorized loop was a visible part of stride-2 layers).
    #[inline(always)]
    unsafe fn split_pairs(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        let n = even.len();
        assert!(odd.len() == n && src.len() >= 2 * n);
        let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let (s, e, o) = (src.as_ptr(), even.as_mut_ptr(), odd.as_mut_ptr());
        let mut j = 0;
        while j < n {
            // The last group masked: `left` pairs, `2 * left` source values.
            let left = n - j;
            let a = _mm512_maskz_loadu_ps(mask(2 * left), s.add(2 * j));
            let b = _mm512_maskz_loadu_ps(mask((2 * left).saturating_sub(L)), s.add(2 * j + L));
            let m = mask(left);
            _mm512_mask_storeu_ps(e.add(j), m, _mm512_permutex2var_ps(a, ie, b));
            _mm512_mask_storeu_ps(o.add(j), m, _mm512_permutex2var_ps(a, io, b));
            j += L;
        }
    }

    /// Lanes `0..n` (all when `n >= 16`).
    #[inline(always)]
    fn mask(n: usize) -> __mmask16 {
        if n >= L {
            0xffff
        } else {
            ((1u32 << n) - 1) as u16
        }
    }

    /// A `KH x KW` kernel with row stride `SH` over the padded scratch `xp`.
    #[inline(always)]
    unsafe fn plane_k<const KH: usize, const KW: usize, const SH: usize>(
        g: &Geometry,
        lay: &Padded,
        xp: &[f32],
        w: &[f32],
        bias: f32,
        act: Activation,
        dst: &mut [f32],
    ) {
        let [od, oh, ow] = g.output;
        let (sd, sw, dw) = (g.strides[0], g.strides[2], g.dilations[2]);
        let mut t = Taps::<KH, KW> {
            w: [[_mm512_setzero_ps(); KW]; KH],
            col: [0; KW],
            bias: _mm512_set1_ps(bias),
            act,
        };
        for (tr, wr) in t.w.iter_mut().zip(w.chunks_exact(KW)) {
            for (tv, &wv) in tr.iter_mut().zip(wr) {
                *tv = _mm512_set1_ps(wv);
            }
        }
        // As depthwise.rs's `plane`: kernel column c reads phase (c * dw) % sw.
        for (c, off) in t.col.iter_mut().enumerate() {
            *off = (c * dw) % sw * lay.plen + (c * dw) / sw;
        }
        // The furthest read: the last depth slice's last input row, the last kernel column,
        // a whole vector past the row's last output column (at most 15 columns beyond it).
        let reach = ((od - 1) * sd * lay.hp + (oh - 1) * SH + KH - 1) * lay.row
            + t.col[KW - 1]
            + ow.div_ceil(L) * L;
        assert!(reach <= lay.len + SLACK && xp.len() >= lay.len + SLACK);
        assert!(dst.len() >= od * oh * ow);
        let xp = xp.as_ptr();
        for oz in 0..od {
            let src = xp.add(oz * sd * lay.hp * lay.row);
            let out = dst.as_mut_ptr().add(oz * oh * ow);
            let mut x0 = 0;
            while x0 < ow {
                let left = ow - x0;
                if left > L {
                    // Two vectors per row and two rows: four independent sums, enough to
                    // hide the add latency.
                    let m = [mask(left), mask(left - L)];
                    strip::<KH, KW, SH, 2, 2>(&t, src.add(x0), lay.row, out.add(x0), oh, ow, m);
                    x0 += 2 * L;
                } else {
                    // One vector per row (the narrow late-layer planes): four rows instead.
                    let m = [mask(left)];
                    strip::<KH, KW, SH, 4, 1>(&t, src.add(x0), lay.row, out.add(x0), oh, ow, m);
                    x0 += L;
                }
            }
        }
    }

    /// Every output row of one column strip (`NB` vectors wide, lanes `m`): `R` rows per
    /// pass, then the remaining rows in one shorter pass.
    #[inline(always)]
    unsafe fn strip<
        const KH: usize,
        const KW: usize,
        const SH: usize,
        const R: usize,
        const NB: usize,
    >(
        t: &Taps<KH, KW>,
        src: *const f32,
        row: usize,
        out: *mut f32,
        oh: usize,
        ow: usize,
        m: [__mmask16; NB],
    ) {
        let mut y = 0;
        while y + R <= oh {
            pass::<KH, KW, SH, R, NB>(t, src.add(y * SH * row), row, out.add(y * ow), ow, m);
            y += R;
        }
        let (src, out) = (src.add(y * SH * row), out.add(y * ow));
        match oh - y {
            0 => {}
            1 => pass::<KH, KW, SH, 1, NB>(t, src, row, out, ow, m),
            2 => pass::<KH, KW, SH, 2, NB>(t, src, row, out, ow, m),
            _ => pass::<KH, KW, SH, 3, NB>(t, src, row, out, ow, m),
        }
    }

    /// `R` output rows x `NB` vectors. Input row `i` of the pass is loaded once per kernel
    /// column and vector, and added into every output row `r` whose window holds it (as
    /// kernel row `i - r * SH`); for each output the taps still come in (row, column) order.
    #[inline(always)]
    unsafe fn pass<
        const KH: usize,
        const KW: usize,
        const SH: usize,
        const R: usize,
        const NB: usize,
    >(
        t: &Taps<KH, KW>,
        src: *const f32,
        row: usize,
        out: *mut f32,
        ow: usize,
        m: [__mmask16; NB],
    ) {
        let mut acc = [[_mm512_setzero_ps(); NB]; R];
        for i in 0..(R - 1) * SH + KH {
            let src_i = src.add(i * row);
            for c in 0..KW {
                for nb in 0..NB {
                    let xv = _mm512_loadu_ps(src_i.add(t.col[c] + nb * L));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        if i >= r * SH && i - r * SH < KH {
                            let p = _mm512_mul_ps(t.w[i - r * SH][c], xv);
                            acc[nb] = _mm512_add_ps(acc[nb], p);
                        }
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (nb, (&a, &mk)) in acc.iter().zip(&m).enumerate() {
                let v = clamp(_mm512_add_ps(a, t.bias), t.act);
                _mm512_mask_storeu_ps(out.add(r * ow + nb * L), mk, v);
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! The AVX-512 path against the portable one (the same sums in the same order: the same
    //! bits), over output widths 1 to 40 (every tail of the one- and two-vector strips),
    //! heights 1 to 9 (every leftover of the 4- and 2-row passes), both kernels, row and
    //! column strides 1 and 2, column dilation, pads, channel multipliers, bias and clamps.
    use super::super::depthwise::{depthwise_on, Geometry, Path};
    use super::super::sgemm::Activation;
    use super::{available, supports};
    use crate::kernels::test_data::{noise, on_threads};

    /// A 2-D geometry with `(out_h, out_w)` outputs, or None if the pads leave no input.
    /// (Also the AVX2 path's tests.)
    #[allow(clippy::too_many_arguments)]
    pub(in crate::kernels) fn geometry(
        c: usize,
        mult: usize,
        k: usize,
        (sh, sw): (usize, usize),
        (dh, dw): (usize, usize),
        pads: [usize; 4],
        (oh, ow): (usize, usize),
    ) -> Option<Geometry> {
        // Input extent giving `o` outputs: the reach of the last window minus the pads.
        let input = |o: usize, s: usize, d: usize, p0: usize, p1: usize| {
            ((o - 1) * s + d * (k - 1) + 1).checked_sub(p0 + p1)
        };
        let ih = input(oh, sh, dh, pads[0], pads[2]).filter(|&v| v > 0)?;
        let iw = input(ow, sw, dw, pads[1], pads[3]).filter(|&v| v > 0)?;
        Some(Geometry {
            n: 1,
            c,
            mult,
            input: [1, ih, iw],
            kernel: [1, k, k],
            strides: [1, sh, sw],
            dilations: [1, dh, dw],
            pads: [0, pads[0], pads[1]],
            output: [1, oh, ow],
        })
    }

    /// The output bits of `g` on `path` for seeded data.
    pub(in crate::kernels) fn run(
        g: &Geometry,
        path: Path,
        bias: bool,
        act: Activation,
        seed: u64,
    ) -> Vec<u32> {
        let [_, ih, iw] = g.input;
        let m = g.c * g.mult;
        let x = noise(&[g.n * g.c * ih * iw], seed);
        let w = noise(&[m * g.kernel.iter().product::<usize>()], seed + 1);
        let b = noise(&[m], seed + 2);
        let b = bias.then(|| b.as_slice().unwrap());
        let mut out = vec![f32::NAN; g.n * m * g.output.iter().product::<usize>()];
        depthwise_on(
            path,
            g,
            x.as_slice().unwrap(),
            w.as_slice().unwrap(),
            b,
            act,
            // SAFETY: depthwise_on writes floats only.
            unsafe { crate::kernels::uninit::of_init(&mut out) },
        );
        out.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn same_bits_as_portable_over_widths_heights_strides_and_pads() {
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
        for k in [3, 5] {
            for strides in [(1, 1), (2, 2), (1, 2), (2, 1)] {
                for dw in [1, 2] {
                    for ow in 1..=40 {
                        let oh = 1 + (ow + k) % 9;
                        let p = [0, 1, k / 2, k][ow % 4];
                        let pads = [p, (p + 1) % 3, k / 2, p];
                        let mult = 1 + ow % 3;
                        let Some(g) = geometry(2, mult, k, strides, (1, dw), pads, (oh, ow)) else {
                            continue;
                        };
                        assert!(supports(&g), "{g:?}");
                        let (bias, act) = (ow % 2 == 0, acts[ow % 3]);
                        let seed = checked as u64;
                        assert_eq!(
                            run(&g, Path::Avx512, bias, act, seed),
                            run(&g, Path::Portable, bias, act, seed),
                            "{g:?} bias {bias} {act:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 600, "only {checked} geometries");
    }

    /// The shapes left to the portable path.
    #[test]
    fn other_shapes_stay_portable() {
        let g = geometry(1, 1, 3, (1, 1), (2, 1), [1; 4], (5, 5)).unwrap();
        assert!(!supports(&g), "row dilation");
        let g = geometry(1, 1, 3, (3, 1), (1, 1), [1; 4], (5, 5)).unwrap();
        assert!(!supports(&g), "row stride 3");
        let g = geometry(1, 1, 7, (1, 1), (1, 1), [3; 4], (5, 5)).unwrap();
        assert!(!supports(&g), "7x7");
        let mut g = geometry(1, 1, 3, (1, 1), (1, 1), [1; 4], (5, 5)).unwrap();
        g.kernel[0] = 2;
        g.input[0] = 2;
        assert!(!supports(&g), "3-D kernel");
    }

    #[test]
    fn same_bits_for_any_thread_count() {
        if !available() {
            return;
        }
        let mut g = geometry(24, 2, 3, (2, 2), (1, 1), [1; 4], (15, 15)).unwrap();
        g.n = 2;
        let act = Activation::RELU;
        let one = on_threads(1, || run(&g, Path::Avx512, true, act, 7));
        assert_eq!(one, on_threads(2, || run(&g, Path::Avx512, true, act, 7)));
    }
}
