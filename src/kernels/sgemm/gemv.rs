//! `c = A x` for a single column: the matrix-vector product a 1x1 conv on a 1x1 plane is
//! (EfficientNet's squeeze-and-excitation convs). Through `gemm_packed` it packed x into a
//! 32-column B panel (31 columns of zeros: 147 KiB written for 1152 inputs) and walked it
//! a cache line per step; here x is read as it is and each step is one broadcast of it
//! times one 8-row vector of every A panel, eight panels at a time so their FMA chains
//! overlap.
//!
//! Each output is `gemm_packed`'s FMA chain (from +0.0, `k` in order, the product rounded
//! once into the sum), then `+ bias`, then the clamp: the same bits (tests in `tests.rs`).

use super::{Epilogue, Kernel, PackedA};

/// Whether [`gemv_packed`] runs on this CPU with `kernel` (the FMA vector kernels; the
/// portable one keeps `gemm_packed`).
pub fn gemv_available(kernel: Kernel) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        kernel != Kernel::Portable
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = kernel;
        false
    }
}

/// `c[i] = act((A x)[i] + bias[i])` for the `a.m()` rows of `a`.
///
/// # Safety
/// [`gemv_available`] must be true; `c` must be valid for writes of `a.m()` floats that no
/// other thread touches during the call.
pub unsafe fn gemv_packed(a: &PackedA, x: &[f32], c: *mut f32, epi: &Epilogue) {
    assert!(x.len() >= a.k(), "gemv: x is too short");
    assert!(epi.bias.is_none_or(|b| b.len() >= a.m()));
    assert!(epi.residual.is_none(), "gemv: no residual");
    #[cfg(target_arch = "x86_64")]
    imp::gemv(a, x, c, epi);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (c, epi);
        unreachable!("gemv_available is false off x86-64");
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::{clamp_avx2 as clamp, Epilogue, PackedA, MR};
    use std::arch::x86_64::*;

    /// Panels computed together: eight FMA chains cover the FMA latency on two units.
    const GROUP: usize = 8;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemv(a: &PackedA, x: &[f32], c: *mut f32, epi: &Epilogue) {
        let panels = a.panels();
        let mut p0 = 0;
        while p0 < panels {
            let g = GROUP.min(panels - p0);
            match g {
                8 => group::<8>(a, x, p0, c, epi),
                7 => group::<7>(a, x, p0, c, epi),
                6 => group::<6>(a, x, p0, c, epi),
                5 => group::<5>(a, x, p0, c, epi),
                4 => group::<4>(a, x, p0, c, epi),
                3 => group::<3>(a, x, p0, c, epi),
                2 => group::<2>(a, x, p0, c, epi),
                _ => group::<1>(a, x, p0, c, epi),
            }
            p0 += g;
        }
    }

    /// Panels `p0..p0 + G`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group<const G: usize>(
        a: &PackedA,
        x: &[f32],
        p0: usize,
        c: *mut f32,
        epi: &Epilogue,
    ) {
        let (m, k) = (a.m(), a.k());
        let base: [*const f32; G] = std::array::from_fn(|i| a.panel(p0 + i).as_ptr());
        let mut acc = [_mm256_setzero_ps(); G];
        for (kk, xk) in x[..k].iter().enumerate() {
            let xv = _mm256_broadcast_ss(xk);
            for (acc, p) in acc.iter_mut().zip(&base) {
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(kk * MR)), xv, *acc);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            let r0 = (p0 + i) * MR;
            let rows = MR.min(m - r0);
            let mut v = [0f32; MR];
            let mut y = *acc;
            if let Some(bias) = epi.bias {
                v[..rows].copy_from_slice(&bias[r0..r0 + rows]);
                y = _mm256_add_ps(y, _mm256_loadu_ps(v.as_ptr()));
            }
            _mm256_storeu_ps(v.as_mut_ptr(), clamp(y, epi.act));
            std::ptr::copy_nonoverlapping(v.as_ptr(), c.add(r0), rows);
        }
    }
}
