//! Packing A into MR-row panels and B into NR-column panels (see the module docs).

use super::{packed_b_len, MR, NR};

/// A (`m x k`) packed into `ceil(m / MR)` panels, each `k x MR` contiguous, zero-padded past
/// row `m`. Built once per weight tensor.
#[derive(Clone, Debug)]
pub struct PackedA {
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedA {
    /// Packs row-major A (`m x k`, row stride `lda`).
    pub fn pack(m: usize, k: usize, a: &[f32], lda: usize) -> PackedA {
        assert!(
            m == 0 || k == 0 || a.len() >= (m - 1) * lda + k,
            "sgemm: A is too short"
        );
        PackedA::from_fn(m, k, |i, kk| a[i * lda + kk])
    }

    /// Packs the `m x k` matrix whose element `(i, kk)` is `f(i, kk)` (called once each, row
    /// by row), for A's that exist only as a formula (Winograd's transformed weights).
    pub fn from_fn(m: usize, k: usize, mut f: impl FnMut(usize, usize) -> f32) -> PackedA {
        let [a] = PackedA::from_fn_n(m, k, |i, kk| [f(i, kk)]);
        a
    }

    /// `N` matrices at once: element `(i, kk)` of matrix `t` is `f(i, kk)[t]`, `f` called once
    /// per `(i, kk)`, row by row (Winograd computes the 16 transformed values of a kernel
    /// together, reading the kernel once).
    pub fn from_fn_n<const N: usize>(
        m: usize,
        k: usize,
        mut f: impl FnMut(usize, usize) -> [f32; N],
    ) -> [PackedA; N] {
        let panels = m.div_ceil(MR);
        let mut data: [Vec<f32>; N] = std::array::from_fn(|_| vec![0f32; panels * k * MR]);
        for p in 0..panels {
            for i in 0..MR.min(m - p * MR) {
                for kk in 0..k {
                    let at = p * k * MR + kk * MR + i;
                    for (d, v) in data.iter_mut().zip(f(p * MR + i, kk)) {
                        d[at] = v;
                    }
                }
            }
        }
        data.map(|data| PackedA { m, k, data })
    }

    pub fn m(&self) -> usize {
        self.m
    }
    pub fn k(&self) -> usize {
        self.k
    }
    pub fn panels(&self) -> usize {
        self.m.div_ceil(MR)
    }
    /// Panels `p ..` to the last, one after another.
    pub(super) fn panels_from(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * MR..]
    }
    /// Panel `p`: `k x MR` floats.
    pub fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * MR..(p + 1) * self.k * MR]
    }
}

/// Packs row-major B (`k x n`, row stride `ldb`) into `dst` (at least
/// [`packed_b_len`]`(k, n)` floats), zero-padding the last panel.
pub fn pack_b(k: usize, n: usize, b: &[f32], ldb: usize, dst: &mut [f32]) {
    assert!(
        dst.len() >= packed_b_len(k, n),
        "sgemm: packed B buffer is too short"
    );
    for kk in 0..k {
        pack_b_row(kk, k, &b[kk * ldb..kk * ldb + n], dst);
    }
}

/// Writes one row (`kk`) of B, given as a contiguous slice of its `n` columns, into the
/// packed panels of a `k x n` B. Columns past `row.len()` up to the panel edge become 0.
#[inline]
pub fn pack_b_row(kk: usize, k: usize, row: &[f32], dst: &mut [f32]) {
    let n = row.len();
    for (q, chunk) in row.chunks(NR).enumerate() {
        let d = &mut dst[(q * k + kk) * NR..(q * k + kk + 1) * NR];
        d[..chunk.len()].copy_from_slice(chunk);
        d[chunk.len()..].fill(0.0);
    }
    debug_assert!(n.div_ceil(NR) * k * NR <= dst.len());
}
