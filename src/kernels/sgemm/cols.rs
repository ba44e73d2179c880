//! The transposed orientation, for products with few columns (a conv's 7x7 or 14x14 output
//! plane): `C = A * B` computed as `C^T = B^T * A^T`, so the wide dimension (A's rows, the
//! output channels) runs along the 32-float vectors and the narrow one (B's columns, the
//! output positions) is cut into 8-column tiles. 49 positions then fill 7 tiles of 8 (56
//! computed) instead of 2 panels of 32 (64 computed).
//!
//! B keeps its ordinary packed layout ([`super::pack_b`], 32-column panels): an 8-column
//! slice of a panel is the micro-kernel's A operand, read `NR` floats apart per K step. A is
//! packed once as [`PackedCols`], `NR`-row panels of A^T. Each tile runs the whole K in one
//! call (no K blocks) and stores transposed; its sums are the same FMA chains, in the same
//! order, as [`super::gemm_packed`]'s, so both orientations give the same bits.

use super::{Epilogue, Kernel, Tile, TileEpilogue};
use super::{MR, NR};
use std::ops::Range;

/// A (`m x k`) packed as `ceil(m / NR)` panels of A^T: panel `q` is `k x NR` contiguous,
/// element `(kk, j)` = `A[q * NR + j][kk]`, zero past row `m`.
#[derive(Clone, Debug)]
pub struct PackedCols {
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedCols {
    /// Packs row-major A (`m x k`, row stride `lda`).
    pub fn pack(m: usize, k: usize, a: &[f32], lda: usize) -> PackedCols {
        assert!(
            m == 0 || k == 0 || a.len() >= (m - 1) * lda + k,
            "sgemm: A is too short"
        );
        PackedCols::from_fn(m, k, |j, kk| a[j * lda + kk])
    }

    /// Packs the `m x k` matrix whose element `(j, kk)` is `f(j, kk)`, as
    /// [`super::PackedA::from_fn`].
    pub fn from_fn(m: usize, k: usize, mut f: impl FnMut(usize, usize) -> f32) -> PackedCols {
        let [a] = PackedCols::from_fn_n(m, k, |j, kk| [f(j, kk)]);
        a
    }

    /// `N` matrices at once, as [`super::PackedA::from_fn_n`].
    pub fn from_fn_n<const N: usize>(
        m: usize,
        k: usize,
        mut f: impl FnMut(usize, usize) -> [f32; N],
    ) -> [PackedCols; N] {
        let panels = m.div_ceil(NR);
        let mut data: [Vec<f32>; N] = std::array::from_fn(|_| vec![0f32; panels * k * NR]);
        for q in 0..panels {
            for j in 0..NR.min(m - q * NR) {
                for kk in 0..k {
                    let at = q * k * NR + kk * NR + j;
                    for (d, v) in data.iter_mut().zip(f(q * NR + j, kk)) {
                        d[at] = v;
                    }
                }
            }
        }
        data.map(|data| PackedCols { m, k, data })
    }

    pub fn m(&self) -> usize {
        self.m
    }
    pub fn k(&self) -> usize {
        self.k
    }
    /// The number of `NR`-row panels.
    pub fn panels(&self) -> usize {
        self.m.div_ceil(NR)
    }
}

/// `C[rows of panels, 0..n] = A * B` with the epilogue (`bias` one value per row of A), for
/// the A panels `panels` (rows `panels.start * NR ..` up to `a.m()`). `b` is packed by
/// [`super::pack_b`] for `a.k() x n`.
///
/// # Safety
/// As [`super::gemm_packed`]: `c` valid for those rows (stride `ldc`) and columns `0..n`,
/// untouched by other threads during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_cols(
    kernel: Kernel,
    a: &PackedCols,
    panels: Range<usize>,
    b: &[f32],
    n: usize,
    c: *mut f32,
    ldc: usize,
    epi: &Epilogue,
) {
    let (m, k) = (a.m, a.k);
    super::check_call((m, k), panels.end <= a.panels(), b, n, epi);
    assert!(epi.residual.is_none(), "gemm_cols: no residual");
    for q in panels {
        let r0 = q * NR;
        let rows = NR.min(m - r0);
        let aq = a.data.as_ptr().add(q * k * NR);
        // Tiles of MR columns of B: column t * MR is in B panel t * MR / NR.
        for t in 0..n.div_ceil(MR) {
            let j0 = t * MR;
            let bp = b.as_ptr().add((j0 / NR * k) * NR + j0 % NR);
            let tile = Tile {
                kc: k,
                a_step: NR,
                rows: MR.min(n - j0),
                cols: rows,
                transposed: true,
                accumulate: false,
                epilogue: Some(TileEpilogue {
                    bias: epi.bias.map(|b| &b[r0..r0 + rows]),
                    residual: std::ptr::null(),
                    act: epi.act,
                }),
                next_a: std::ptr::null(),
            };
            let cp = c.add(r0 * ldc + j0);
            kernel.tile(&tile, bp, aq, cp, ldc);
        }
    }
}
