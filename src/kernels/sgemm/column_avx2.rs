//! Single columns of C on AVX2 + FMA, for the last one or two columns of a product whose
//! width is one or two past a multiple of 8: a 1x1 conv on a 7x7 plane (49 = 32 + 16 + 1
//! columns) or on a 1x1 plane (EfficientNet's squeeze-and-excitation convs, 1 column). The
//! micro-kernel computes such a column as a whole 8 x 8 pass, 8 FMAs per reduction step for
//! 8 outputs of which 1 is kept; here one FMA per step gives 8 outputs: A's panel row (the 8
//! rows of one panel, contiguous in a packed panel) times the column's value, broadcast, and
//! up to 8 panels side by side keep 8 independent chains in flight.
//!
//! Each output is the micro-kernel's chain: the FMAs over the K steps in order, from +0.0 or
//! from C's value (a later K block), then `+ bias` and the clamp; so the same bits.

use super::{Activation, MR, NR};
use std::arch::x86_64::*;

/// The epilogue of the last K block: the bias of the whole A (one value per row) and the
/// clamp.
pub(super) struct ColumnEpilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
}

/// Column `b` (a packed B panel's column at the block's first K step: one value every `NR`
/// floats) times the `P` A panels from `a` (each `kc x MR` at `panel_len` apart, at the
/// block's first K step), into C's rows `r0 ..` of one column `c` (`ldc` apart), rows `m`
/// and past not stored. From C's values when `ACC`.
///
/// # Safety
/// AVX2 and FMA; `a`, `b` readable for `kc` steps of their panels; `c` valid for the rows
/// `r0 .. min(r0 + P * MR, m)` (stride `ldc`), untouched by other threads.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn column<const P: usize, const ACC: bool>(
    kc: usize,
    (a, panel_len): (*const f32, usize),
    b: *const f32,
    (c, ldc): (*mut f32, usize),
    (r0, m): (usize, usize),
    epi: Option<&ColumnEpilogue>,
) {
    // Rows of panel p stored: `rows(p)` (0 past m).
    let rows = |p: usize| MR.min(m.saturating_sub(r0 + p * MR));
    let mut acc = [_mm256_setzero_ps(); P];
    if ACC {
        for (p, acc) in acc.iter_mut().enumerate() {
            let mut v = [0f32; MR];
            for (i, v) in v.iter_mut().enumerate().take(rows(p)) {
                *v = *c.add((r0 + p * MR + i) * ldc);
            }
            *acc = _mm256_loadu_ps(v.as_ptr());
        }
    }
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        let bv = _mm256_broadcast_ss(&*b);
        for (p, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(p * panel_len)), bv, *acc);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    for (p, &acc) in acc.iter().enumerate() {
        let mut x = acc;
        if let Some(e) = epi {
            if let Some(bias) = e.bias {
                let mut v = [0f32; MR];
                let n = rows(p);
                v[..n].copy_from_slice(&bias[r0 + p * MR..][..n]);
                x = _mm256_add_ps(x, _mm256_loadu_ps(v.as_ptr()));
            }
            x = super::clamp_avx2(x, e.act);
        }
        let mut v = [0f32; MR];
        _mm256_storeu_ps(v.as_mut_ptr(), x);
        for (i, &v) in v.iter().enumerate().take(rows(p)) {
            *c.add((r0 + p * MR + i) * ldc) = v;
        }
    }
}
