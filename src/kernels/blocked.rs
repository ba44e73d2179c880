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

/// Whether `axis` of a 4-D value is its channel axis.
pub fn is_channel_axis(axis: i64) -> bool {
    axis == 1 || axis == -3
}

/// Blocked values (`[N, Ci/8, H, W, 8]`, one N, H and W) concatenated along the channels:
/// per image, each input's blocks one after another, as ONNX Concat on axis 1 orders the
/// channels. `None` when the shapes do not line up (the caller then concatenates planes).
pub fn concat_channels(ts: &[&ArrayD<f32>]) -> Option<ArrayD<f32>> {
    let first = ts.first()?.shape();
    let alike =
        |s: &[usize]| s.len() == 5 && s[0] == first[0] && s[2..] == first[2..] && s[4] == BLOCK;
    if !ts.iter().all(|t| alike(t.shape())) {
        return None;
    }
    let n = first[0];
    let blocks: usize = ts.iter().map(|t| t.shape()[1]).sum();
    let block = first[2] * first[3] * BLOCK;
    let srcs: Vec<_> = ts.iter().map(|t| t.as_standard_layout()).collect();
    let mut out = Vec::with_capacity(n * blocks * block);
    for img in 0..n {
        for src in &srcs {
            let per_image = src.len() / n;
            let d = src.as_slice().expect("standard layout");
            out.extend_from_slice(&d[img * per_image..][..per_image]);
        }
    }
    let shape = [n, blocks, first[2], first[3], BLOCK];
    Some(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("sizes add up"))
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

    #[test]
    fn channel_concat_of_blocked_values_is_the_blocked_concat() {
        let a = ArrayD::from_shape_fn(IxDyn(&[2, 8, 3, 4]), |i| {
            (i[0] * 1000 + i[1] * 100 + i[2] * 10 + i[3]) as f32
        });
        let b = a.mapv(|v| -v - 0.5);
        let b = ndarray::concatenate(ndarray::Axis(1), &[b.view(), b.view()]).unwrap();
        let want = ndarray::concatenate(ndarray::Axis(1), &[a.view(), b.view()]).unwrap();
        let got = concat_channels(&[&to_blocked(&a), &to_blocked(&b)]).unwrap();
        assert_eq!(got.shape(), [2, 3, 3, 4, 8]);
        assert_eq!(to_planes(&got), want);
        let other = to_blocked(&a.slice(ndarray::s![.., .., ..2, ..]).to_owned().into_dyn());
        assert!(concat_channels(&[&to_blocked(&a), &other]).is_none());
    }
}
