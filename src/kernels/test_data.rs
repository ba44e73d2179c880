//! Helpers of the kernels' unit tests: reproducible data and a run on a given thread count.

use crate::ir::op::{ConvAttrs, Padding, Window};
use ndarray::{ArrayD, IxDyn};

/// Conv attributes with explicit pads (`[begin..., end...]`).
pub fn conv_attrs(
    group: usize,
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
) -> ConvAttrs {
    ConvAttrs {
        window: Window {
            kernel_shape: None,
            strides: strides.to_vec(),
            dilations: dilations.to_vec(),
            padding: Padding::Explicit(pads.to_vec()),
        },
        group,
    }
}

/// Deterministic values in [-8, 8) with about one +0.0 and one -0.0 in every 13 (signed
/// zeros and ties are where kernels disagree first).
pub fn noise(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            match s % 13 {
                0 => 0.0,
                1 => -0.0,
                _ => ((s >> 11) % 16000) as f32 / 1000.0 - 8.0,
            }
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// `f` run inside a rayon pool of `threads` threads (for same-bits-for-any-thread-count
/// tests).
pub fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}
