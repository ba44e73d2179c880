//! Products whose left operand is one row (M = 1): `c = alpha * a * B (+ c)`, a
//! classifier's Gemm or MatMul at batch 1. Such a product reads each element of B once, so it
//! runs at the speed B streams from memory (MobileNet v2's 1280 x 1000 weights are 5 MB).
//! Through the `gemm` crate that Gemm alone took 0.141 ms (tract 0.103 in the same run, B in
//! L3); here, best medians of 4 alternating rounds, 0.187 -> 0.133 ms (a slow phase of the
//! machine), and in the nets, per-node minima of 4 profiles, MobileNet v2's 0.496 -> 0.367,
//! ShuffleNet v2's 0.307 -> 0.279.
//!
//! Two forms, by how B is stored: when each column of B is contiguous (Gemm's `transB = 1`,
//! PyTorch's Linear), every output is a dot product of `a` with that column; when each row
//! is (MatMul, `transB = 0`), the output row is the sum of B's rows scaled by `a`'s values
//! (an axpy per row), in row order. Either way each output's sum has a fixed order, and the
//! outputs are cut into fixed blocks of [`BLOCK`] columns for the threads: the bits do not
//! depend on the thread count.

use super::gemm::SendPtr;
use rayon::prelude::*;

/// Output columns per task (fixed, for the same bits at any thread count).
const BLOCK: usize = 256;

/// `c[j] = alpha * sum_p a[p] * b[p * b_rs + j * b_cs] (+ c[j] when accumulate)` for `j <
/// n`, where `a[p]` is `a[p * a_cs]`; when B has a contiguous axis (`b_rs == 1` or `b_cs ==
/// 1`). Returns false, touching nothing, for any other B or an empty product.
#[allow(clippy::too_many_arguments)]
pub fn row_times_matrix(
    (k, n): (usize, usize),
    alpha: f32,
    (a, a_cs): (&[f32], usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    c: &mut [f32],
    accumulate: bool,
) -> bool {
    let columns = b_rs == 1;
    if !(columns || b_cs == 1) || k == 0 || n == 0 {
        return false;
    }
    assert!(
        k == 0 || a.len() > (k - 1) * a_cs,
        "row product: A is too short"
    );
    assert!(
        k == 0 || b.len() > (k - 1) * b_rs + (n - 1) * b_cs,
        "row product: B is too short"
    );
    assert!(c.len() >= n, "row product: C is too short");
    // `a` as k contiguous floats: as it is when it already is, else gathered (k is a
    // layer's width: cheap).
    let a: std::borrow::Cow<[f32]> = match a_cs {
        1 => std::borrow::Cow::Borrowed(&a[..k]),
        _ => (0..k).map(|p| a[p * a_cs]).collect(),
    };
    let cp = SendPtr(c.as_mut_ptr());
    (0..n.div_ceil(BLOCK)).into_par_iter().for_each(|blk| {
        let (j0, nb) = (blk * BLOCK, BLOCK.min(n - blk * BLOCK));
        // SAFETY: block `blk` writes c[j0..j0 + nb] only; `c.len() >= n` was checked.
        let out = unsafe { std::slice::from_raw_parts_mut(cp.get().add(j0), nb) };
        let mut sums = vec![0f32; nb];
        match columns {
            true => dots(&a, (&b[j0 * b_cs..], b_cs), &mut sums),
            false => axpys(&a, (&b[j0..], b_rs), &mut sums),
        }
        for (o, s) in out.iter_mut().zip(sums) {
            *o = match accumulate {
                true => *o + alpha * s,
                false => alpha * s,
            };
        }
    });
    true
}

/// `sums[j] = a . b[j * ld ..][..k]`: 4 columns at a time, 16 floats per step (eight
/// accumulators), the 16 lanes' partial sums added pairwise at the end, the steps past the
/// last whole 16 added one by one after them.
fn dots(a: &[f32], (b, ld): (&[f32], usize), sums: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA; `row_times_matrix` checked B's extent.
        unsafe { avx2::dots(a, (b, ld), sums) };
        return;
    }
    for (j, s) in sums.iter_mut().enumerate() {
        let col = &b[j * ld..][..a.len()];
        *s = dot_portable(a, col);
    }
}

/// The portable form of one of [`dots`]' sums: the same lanes and order, so the same bits
/// (with `mul_add`).
fn dot_portable(a: &[f32], col: &[f32]) -> f32 {
    let whole = a.len() / 16 * 16;
    let mut lanes = [0f32; 16];
    for (ca, cb) in a[..whole].chunks_exact(16).zip(col.chunks_exact(16)) {
        for l in 0..16 {
            lanes[l] = ca[l].mul_add(cb[l], lanes[l]);
        }
    }
    let mut s = reduce16(lanes);
    for (&x, &y) in a[whole..].iter().zip(&col[whole..]) {
        s = x.mul_add(y, s);
    }
    s
}

/// The 16 lanes of [`dots`]' accumulators added pairwise: lane `l` and `l + 8`, then `l` and
/// `l + 4`, `l + 2`, `l + 1`.
fn reduce16(mut v: [f32; 16]) -> f32 {
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            v[l] += v[l + w];
        }
    }
    v[0]
}

/// `sums += a[p] * b[p * ld ..][..sums.len()]` for each p in order (a multiply and an add:
/// vectorized as it is, where `mul_add` without FMA in the target would call libm).
fn axpys(a: &[f32], (b, ld): (&[f32], usize), sums: &mut [f32]) {
    for (p, &x) in a.iter().enumerate() {
        let row = &b[p * ld..][..sums.len()];
        for (s, &y) in sums.iter_mut().zip(row) {
            *s += x * y;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::reduce16;
    use std::arch::x86_64::*;

    /// [`super::dots`] on AVX2 + FMA: four columns' streams at once, two vectors each.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots(a: &[f32], (b, ld): (&[f32], usize), sums: &mut [f32]) {
        let k = a.len();
        let whole = k / 16 * 16;
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let mut j = 0;
        while j < sums.len() {
            let cols = 4.min(sums.len() - j);
            let col = |c: usize| bp.add((j + c.min(cols - 1)) * ld);
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            let mut p = 0;
            while p < whole {
                let (a0, a1) = (_mm256_loadu_ps(ap.add(p)), _mm256_loadu_ps(ap.add(p + 8)));
                for (c, acc) in acc.iter_mut().enumerate() {
                    let q = col(c).add(p);
                    acc[0] = _mm256_fmadd_ps(a0, _mm256_loadu_ps(q), acc[0]);
                    acc[1] = _mm256_fmadd_ps(a1, _mm256_loadu_ps(q.add(8)), acc[1]);
                }
                p += 16;
            }
            for (c, acc) in acc.iter().enumerate().take(cols) {
                let mut lanes = [0f32; 16];
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
                let mut s = reduce16(lanes);
                for q in whole..k {
                    s = (*ap.add(q)).mul_add(*col(c).add(q), s);
                }
                sums[j + c] = s;
            }
            j += cols;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_data::on_threads;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 9) as f32)
            .map(|v| v / (1u32 << 23) as f32 - 0.5)
            .collect()
    }

    /// Both forms of B against an f64 sum, k and n past and short of whole vectors, blocks
    /// and column groups; `alpha` and `accumulate`; the same bits on 1 and 2 threads, and
    /// AVX2 against the portable sum.
    #[test]
    fn matches_f64_and_thread_count() {
        for (k, n) in [(1, 1), (7, 3), (16, 5), (33, 300), (1280, 1000), (100, 513)] {
            let a = data(2 * k, 1);
            let b = data(k * n, 2);
            let c0 = data(n, 3);
            for columns in [true, false] {
                // B' (k x n) stored with contiguous columns (Bt, n x k) or rows (k x n).
                let (b_rs, b_cs) = if columns { (1, k) } else { (n, 1) };
                for accumulate in [false, true] {
                    let run = |threads| {
                        let mut c = c0.clone();
                        on_threads(threads, || {
                            let b = (b.as_slice(), b_rs, b_cs);
                            assert!(row_times_matrix(
                                (k, n),
                                0.5,
                                (&a, 2),
                                b,
                                &mut c,
                                accumulate
                            ));
                        });
                        c
                    };
                    let got = run(1);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&run(2)), "k {k} n {n}");
                    for j in 0..n {
                        let s: f64 = (0..k)
                            .map(|p| a[2 * p] as f64 * b[p * b_rs + j * b_cs] as f64)
                            .sum();
                        let base = if accumulate { c0[j] as f64 } else { 0.0 };
                        let want = 0.5 * s + base;
                        let tol = 1e-5 * (1.0 + k as f64).sqrt() * (1.0 + want.abs());
                        assert!((got[j] as f64 - want).abs() <= tol, "k {k} n {n} j {j}");
                    }
                    if columns {
                        let a: Vec<f32> = (0..k).map(|p| a[2 * p]).collect();
                        for j in 0..n {
                            let want = 0.5 * dot_portable(&a, &b[j * k..][..k]);
                            let want = if accumulate { c0[j] + want } else { want };
                            assert_eq!(got[j].to_bits(), want.to_bits(), "portable, j {j}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn declines_b_without_a_contiguous_axis() {
        let mut c = vec![7f32; 2];
        let b = data(12, 1);
        assert!(!row_times_matrix(
            (3, 2),
            1.0,
            (&[1.0, 2.0, 3.0], 1),
            (&b, 4, 2),
            &mut c,
            false
        ));
        assert_eq!(c, [7.0, 7.0]);
    }
}
