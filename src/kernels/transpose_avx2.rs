//! The 8x8 f32 transpose in AVX2 shuffles, for kernels that switch between planes side by
//! side (eight channels in one register) and planes one after another (NCHW). Moves only:
//! the values keep their bits.

use std::arch::x86_64::*;

/// Row `i` of the result holds element `i` of every input row: `out[i][j] = rows[j][i]`.
/// 24 shuffles (8 unpacks, 8 in-lane shuffles, 8 lane permutes).
///
/// # Safety
/// The CPU must have AVX (callers are compiled with AVX2 and checked it).
#[inline(always)]
pub(super) unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // Per 128-bit lane, pairs of rows interleaved: t0 = (r00 r10 r01 r11 | r04 r14 r05 r15).
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    // Columns c and c + 4 of four rows: s0 = (r00 r10 r20 r30 | r04 r14 r24 r34).
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    // The low halves of rows 0-3 and 4-7 give columns 0-3, the high halves 4-7.
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// Spreads `positions` interleaved positions into `planes` (at most 8) planes: lane `l` of
/// the 8 floats at `src + q * stride` goes to `dst + l * plane_len + q`; eight positions at
/// a time, transposed, the last eight stores masked. Reads whole groups of eight positions,
/// so `src` must hold `positions.next_multiple_of(8)` of them.
///
/// # Safety
/// AVX2; `src` readable and `dst` writable over those extents, `dst` untouched by others.
#[inline(always)]
pub(super) unsafe fn spread(
    (src, stride): (*const f32, usize),
    positions: usize,
    planes: usize,
    (dst, plane_len): (*mut f32, usize),
) {
    let mut q = 0;
    while q < positions {
        let n = 8.min(positions - q);
        let mut v = [_mm256_setzero_ps(); 8];
        for (j, v) in v.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(src.add((q + j) * stride));
        }
        // By index: an array's `into_iter` here was a 256-byte memcpy per transpose.
        let t = transpose8(v);
        for (l, &v) in t.iter().enumerate().take(planes) {
            let d = dst.add(l * plane_len + q);
            match n {
                8 => _mm256_storeu_ps(d, v),
                _ => _mm256_maskstore_ps(d, lane_mask(n), v),
            }
        }
        q += 8;
    }
}

/// The first `n` (at most 8) of `v` to `dst` one after another (8 floats apart): the
/// interleaved positions a gather writes after its transpose.
///
/// Eight stores spelled out when `n` is 8: a loop over the first `n`, or the array's
/// `into_iter`, became a call to memcpy per transpose (LLVM sees consecutive stores), 17% of
/// a 111x111 -> 55x55 MaxPool.
///
/// # Safety
/// AVX; `dst` writable for `8 * n` floats.
#[inline(always)]
pub(super) unsafe fn store_positions(v: [__m256; 8], n: usize, dst: *mut f32) {
    if n == 8 {
        _mm256_storeu_ps(dst, v[0]);
        _mm256_storeu_ps(dst.add(8), v[1]);
        _mm256_storeu_ps(dst.add(16), v[2]);
        _mm256_storeu_ps(dst.add(24), v[3]);
        _mm256_storeu_ps(dst.add(32), v[4]);
        _mm256_storeu_ps(dst.add(40), v[5]);
        _mm256_storeu_ps(dst.add(48), v[6]);
        _mm256_storeu_ps(dst.add(56), v[7]);
    } else {
        for (j, &v) in v.iter().enumerate().take(n) {
            _mm256_storeu_ps(dst.add(j * 8), v);
        }
    }
}

/// The first `n` (at most 8) lanes set, for masked loads and stores.
///
/// # Safety
/// The CPU must have AVX2.
#[inline(always)]
pub(super) unsafe fn lane_mask(n: usize) -> __m256i {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        #[target_feature(enable = "avx2")]
        unsafe fn run(m: &[[f32; 8]; 8]) -> [[f32; 8]; 8] {
            let rows = std::array::from_fn(|i| _mm256_loadu_ps(m[i].as_ptr()));
            let t = transpose8(rows);
            let mut out = [[0f32; 8]; 8];
            for (o, v) in out.iter_mut().zip(t) {
                _mm256_storeu_ps(o.as_mut_ptr(), v);
            }
            out
        }
        let m: [[f32; 8]; 8] = std::array::from_fn(|i| std::array::from_fn(|j| (i * 8 + j) as f32));
        // SAFETY: AVX2 checked above.
        let t = unsafe { run(&m) };
        for (i, row) in t.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(v, m[j][i], "({i}, {j})");
            }
        }
    }
}
