//! The portable micro-kernel: the same `MR x NR` tile in a fixed-size array the compiler
//! can keep in vector registers, plain multiply and add (no FMA: `mul_add` without hardware
//! FMA is a slow library call). Used where AVX-512 is missing.

use super::{Tile, MR, NR};

/// Runs one tile; see `gemm_packed`.
///
/// # Safety
/// `a` holds `kc` steps of `MR` floats, `a_step` apart, `b` `kc * NR`, and `c` is valid for
/// the `rows x cols` tile with row stride `ldc` (`cols x rows` when transposed).
pub(super) unsafe fn tile(t: &Tile, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
    let mut acc = [[0f32; NR]; MR];
    debug_assert!(!(t.transposed && t.accumulate));
    if t.accumulate {
        for (i, row) in acc.iter_mut().enumerate().take(t.rows) {
            for (j, v) in row.iter_mut().enumerate().take(t.cols) {
                *v = *c.add(i * ldc + j);
            }
        }
    }
    let b = std::slice::from_raw_parts(b, t.kc * NR);
    for (kk, bk) in b.chunks_exact(NR).enumerate() {
        let ak = std::slice::from_raw_parts(a.add(kk * t.a_step), MR);
        let bk: &[f32; NR] = bk.try_into().expect("NR floats");
        for (row, &av) in acc.iter_mut().zip(ak) {
            for (v, &bv) in row.iter_mut().zip(bk) {
                *v += av * bv;
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(t.rows) {
        for (j, &v) in row.iter().enumerate().take(t.cols) {
            let (at, bi) = if t.transposed {
                (j * ldc + i, j)
            } else {
                (i * ldc + j, i)
            };
            let v = match &t.epilogue {
                Some(e) => e.act.apply(e.bias.map_or(v, |bias| v + bias[bi])),
                None => v,
            };
            *c.add(at) = v;
        }
    }
}
