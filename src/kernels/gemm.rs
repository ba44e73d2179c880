//! Safe wrappers around the `gemm` crate for row-major f32 matrices.
//!
//! Every call into `gemm` uses `Parallelism::None`: the crate's own threading splits work
//! by thread count, which would make the summation order (and so the bits of the result)
//! depend on `--threads`. Parallelism instead comes from [`sgemm_par`], which cuts the
//! output into column blocks of a fixed width: each output element is computed by the
//! same single-threaded call whatever the number of threads.

use gemm::Parallelism;
use rayon::prelude::*;

/// Column-block width of [`sgemm_par`]. Fixed (never derived from the thread count) so that
/// results are bitwise identical for any number of threads.
pub const PAR_BLOCK_N: usize = 256;

/// The number of elements a strided matrix view spans (0 for an empty matrix).
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `C = A * B` (or `C += A * B` when `accumulate`), all row-major f32:
/// A is `m x k` with leading dim `lda`, B is `k x n` with `ldb`, C is `m x n` with `ldc`.
///
/// Panics if a slice is too short for its dims, which is a caller bug.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    sgemm_strided(m, n, k, 1.0, a, lda, 1, b, ldb, 1, c, ldc, accumulate);
}

/// The general form: `C = alpha * A * B` (or `C += ...`), where A and B are given by a row
/// stride and a column stride each, so transposed operands need no copy (Gemm's
/// `transA`/`transB`). C is row-major with leading dim `ldc`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    assert!(a.len() >= extent(m, k, a_rs, a_cs), "sgemm: A is too short");
    assert!(b.len() >= extent(k, n, b_rs, b_cs), "sgemm: B is too short");
    assert!(c.len() >= extent(m, n, ldc, 1), "sgemm: C is too short");
    // SAFETY: the asserts above check that every element addressed lies inside its slice;
    // `c` is borrowed mutably so nothing aliases it.
    unsafe {
        sgemm_raw(
            m,
            n,
            k,
            alpha,
            a,
            a_rs,
            a_cs,
            b,
            b_rs,
            b_cs,
            c.as_mut_ptr(),
            ldc,
            accumulate,
        )
    }
}

/// The one place that calls `gemm`.
///
/// # Safety
/// `a`/`b` must span their strided views and `c` must be valid for writes of the `m x n`
/// view with row stride `ldc`, with no other thread touching those elements.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_raw(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: C = 0 (or unchanged). Handled here so `gemm` never sees k = 0.
        if !accumulate {
            for r in 0..m {
                for j in 0..n {
                    *c.add(r * ldc + j) = 0.0;
                }
            }
        }
        return;
    }
    // `gemm` computes dst := dst_scale * dst + product_scale * lhs * rhs, and does not read
    // dst when `read_dst` is false.
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        ldc as isize,
        accumulate,
        a.as_ptr(),
        a_cs as isize,
        a_rs as isize,
        b.as_ptr(),
        b_cs as isize,
        b_rs as isize,
        1.0f32,
        alpha,
        false,
        false,
        false,
        Parallelism::None,
    );
}

/// A raw pointer that may cross threads. Used only where tasks write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer. A method (not `.0`) so closures capture the whole `Send` wrapper rather
    /// than the bare pointer field.
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// [`sgemm`] run over column blocks of [`PAR_BLOCK_N`] on rayon's pool. Bitwise identical to
/// itself for any thread count (not necessarily to a single [`sgemm`] call over all of N).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_par(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    sgemm_strided_par(m, n, k, 1.0, a, lda, 1, b, ldb, 1, c, ldc, accumulate);
}

/// [`sgemm_strided`] split over fixed-width column blocks run in parallel.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided_par(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    // One row: B streamed once, column by column or row by row (`row_product.rs`).
    if m == 1
        && k > 0
        && super::row_product::row_times_matrix(
            (k, n),
            alpha,
            (a, a_cs),
            (b, b_rs, b_cs),
            c,
            accumulate,
        )
    {
        return;
    }
    if n <= PAR_BLOCK_N {
        return sgemm_strided(
            m, n, k, alpha, a, a_rs, a_cs, b, b_rs, b_cs, c, ldc, accumulate,
        );
    }
    assert!(a.len() >= extent(m, k, a_rs, a_cs), "sgemm: A is too short");
    assert!(b.len() >= extent(k, n, b_rs, b_cs), "sgemm: B is too short");
    assert!(c.len() >= extent(m, n, ldc, 1), "sgemm: C is too short");
    if m == 0 {
        return;
    }
    let cp = SendPtr(c.as_mut_ptr());
    (0..n.div_ceil(PAR_BLOCK_N))
        .into_par_iter()
        .for_each(|blk| {
            let j0 = blk * PAR_BLOCK_N;
            let nb = PAR_BLOCK_N.min(n - j0);
            let p = cp;
            // SAFETY: bounds were checked above for the whole m x n view; block `blk` writes only
            // columns j0..j0+nb, so concurrent blocks touch disjoint elements. Raw pointers (not
            // overlapping `&mut` slices) are passed so no aliasing references exist.
            unsafe {
                sgemm_raw(
                    m,
                    nb,
                    k,
                    alpha,
                    a,
                    a_rs,
                    a_cs,
                    &b[j0 * b_cs..],
                    b_rs,
                    b_cs,
                    p.0.add(j0),
                    ldc,
                    accumulate,
                )
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn small_by_hand() {
        // [[1,2],[3,4]] * [[5,6],[7,8]] = [[19,22],[43,50]]
        let mut c = vec![0.0; 4];
        sgemm(
            2,
            2,
            2,
            &[1., 2., 3., 4.],
            2,
            &[5., 6., 7., 8.],
            2,
            &mut c,
            2,
            false,
        );
        assert_eq!(c, vec![19., 22., 43., 50.]);
        sgemm(
            2,
            2,
            2,
            &[1., 2., 3., 4.],
            2,
            &[5., 6., 7., 8.],
            2,
            &mut c,
            2,
            true,
        );
        assert_eq!(c, vec![38., 44., 86., 100.]);
    }

    #[test]
    fn parallel_matches_naive_and_is_thread_count_independent() {
        let (m, n, k) = (7, 1000, 13);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.5).collect();
        let want = naive(m, n, k, &a, &b);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut c = vec![0.0; m * n];
            pool.install(|| sgemm_par(m, n, k, &a, k, &b, n, &mut c, n, false));
            c
        };
        let c1 = run(1);
        assert_eq!(c1, want); // small integers: exact
        assert_eq!(c1, run(4));
    }

    #[test]
    fn transposed_strides() {
        // A^T with A = [[1,3],[2,4]] stored row-major -> uses [[1,2],[3,4]].
        let mut c = vec![0.0; 4];
        sgemm_strided(
            2,
            2,
            2,
            2.0,
            &[1., 3., 2., 4.],
            1,
            2,
            &[5., 6., 7., 8.],
            2,
            1,
            &mut c,
            2,
            false,
        );
        assert_eq!(c, vec![38., 44., 86., 100.]);
    }
}
