//! The blocked layout (NCHW8c) a 4-D f32 value may take between the kernels that read and
//! write it natively (`conv_lanes`, `depthwise_interleaved`, elementwise Add): channels in
//! blocks of 8, each position's 8 channels side by side, so a kernel with channels in the
//! vector lanes loads them without the 8x8 transposes it needs on planes (onnxruntime's
//! NCHWc, with AVX2's width). Held as a 5-D tensor `[N, C/8, H, W, 8]`; only fused runs
//! use it, and only for values whose channel count is a multiple of 8 (see
//! `exec/prepare.rs`). Moves only: a value keeps its bits through either conversion.

use ndarray::{ArrayD, IxDyn};

/// Channels per block.
pub const BLOCK: usize = 8;

/// How a 4-D value's floats are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// NCHW: each channel's plane contiguous.
    Planes,
    /// NCHW8c: `[N, C/8, H, W, 8]`.
    Blocked,
}

/// Whether a value of logical shape `shape` can be held blocked: 4-D, its channels a
/// multiple of 8.
pub fn blockable(shape: &[usize]) -> bool {
    shape.len() == 4 && shape[1] > 0 && shape[1].is_multiple_of(BLOCK)
}

/// The 5-D shape a blocked value of logical shape `[N, C, H, W]` is held in.
pub fn blocked_shape(shape: &[usize]) -> Vec<usize> {
    debug_assert!(blockable(shape));
    vec![shape[0], shape[1] / BLOCK, shape[2], shape[3], BLOCK]
}

/// The logical `[N, C, H, W]` shape of a blocked value held as `[N, C/8, H, W, 8]`.
pub fn logical_shape(held: &[usize]) -> Vec<usize> {
    debug_assert!(held.len() == 5 && held[4] == BLOCK);
    vec![held[0], held[1] * BLOCK, held[2], held[3]]
}

/// `x` (`[N, C, H, W]`, C a multiple of 8) blocked.
pub fn to_blocked(x: &ArrayD<f32>) -> ArrayD<f32> {
    let shape = x.shape().to_vec();
    assert!(blockable(&shape), "to_blocked: shape {shape:?}");
    let x = x.as_standard_layout();
    let src = x.as_slice().expect("standard layout");
    let plane = shape[2] * shape[3];
    let mut out = vec![0f32; src.len()];
    // Per block of 8 planes: position q's 8 values side by side.
    for (dst, planes) in out
        .chunks_exact_mut(plane * BLOCK)
        .zip(src.chunks_exact(plane * BLOCK))
    {
        for (l, p) in planes.chunks_exact(plane).enumerate() {
            for (q, &v) in p.iter().enumerate() {
                dst[q * BLOCK + l] = v;
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(&blocked_shape(&shape)), out).expect("same length")
}

/// A blocked value (`[N, C/8, H, W, 8]`) back in planes, `[N, C, H, W]`.
pub fn to_planes(x: &ArrayD<f32>) -> ArrayD<f32> {
    let held = x.shape().to_vec();
    assert!(
        held.len() == 5 && held[4] == BLOCK,
        "to_planes: shape {held:?}"
    );
    let x = x.as_standard_layout();
    let src = x.as_slice().expect("standard layout");
    let plane = held[2] * held[3];
    let mut out = vec![0f32; src.len()];
    for (planes, blk) in out
        .chunks_exact_mut(plane * BLOCK)
        .zip(src.chunks_exact(plane * BLOCK))
    {
        for (l, p) in planes.chunks_exact_mut(plane).enumerate() {
            for (q, v) in p.iter_mut().enumerate() {
                *v = blk[q * BLOCK + l];
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(&logical_shape(&held)), out).expect("same length")
}

/// A blocked f32 tensor back in planes (`to_planes`), for a reader that needs them.
pub fn unblock(t: &crate::tensor::Tensor) -> anyhow::Result<crate::tensor::Tensor> {
    Ok(crate::tensor::Tensor::F32(to_planes(t.as_f32()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_element_order() {
        let x = ArrayD::from_shape_fn(IxDyn(&[2, 16, 3, 5]), |i| {
            (i[0] * 1000 + i[1] * 100 + i[2] * 10 + i[3]) as f32
        });
        let b = to_blocked(&x);
        assert_eq!(b.shape(), &[2, 2, 3, 5, 8]);
        assert_eq!(b[[1, 1, 2, 4, 3]], x[[1, 11, 2, 4]]);
        assert_eq!(b[[0, 0, 1, 0, 7]], x[[0, 7, 1, 0]]);
        assert_eq!(to_planes(&b), x);
        assert!(!blockable(&[1, 12, 3, 3]) && !blockable(&[1, 16, 3]));
    }
}
