//! `conv::conv_f32_affine` (an inference BatchNorm and its clamp fused into the conv's input)
//! against the BatchNorm kernel, the clamp, then the plain conv: the same bits, on the fused
//! path (an ungrouped 1x1 conv on the patch path, the affine applied while packing) and on
//! the paths that get the affine applied to a copy of X first.
use super::conv::{conv_f32_affine, conv_f32_with, InputAffine};
use super::norm::batch_norm;
use super::sgemm::Activation;
use super::test_data::{conv_attrs, noise, on_threads};
use crate::tensor::Tensor;
use ndarray::ArrayD;

/// BatchNorm parameters for `c` channels: scale, B, mean, and a positive variance.
fn params(c: usize, seed: u64) -> [Tensor; 4] {
    let var = noise(&[c], seed + 3).mapv(|v| v.abs() + 0.25);
    [
        Tensor::F32(noise(&[c], seed)),
        Tensor::F32(noise(&[c], seed + 1)),
        Tensor::F32(noise(&[c], seed + 2)),
        Tensor::F32(var),
    ]
}

fn bits(y: &ArrayD<f32>) -> Vec<u32> {
    y.iter().map(|v| v.to_bits()).collect()
}

/// One conv of weights `ws` on X of shape `xs` (pads `pads`), through the BatchNorm then
/// `clamp`, against the separate kernels, on one thread and on two.
fn agrees(xs: &[usize], ws: &[usize], pads: &[usize], clamp: Activation, seed: u64) {
    let x = noise(xs, seed);
    let w = noise(ws, seed + 10);
    let b = noise(&[ws[0]], seed + 11);
    let ps = params(xs[1], seed + 20);
    let [s, bb, m, v] = &ps;
    let eps = 1e-5;
    let Tensor::F32(normed) = batch_norm(&Tensor::F32(x.clone()), [s, bb, m, v], eps).unwrap()
    else {
        panic!("f32 BatchNorm")
    };
    let clamped = normed.mapv(|v| clamp.apply(v));
    let attrs = conv_attrs(1, &[], &[], pads);
    let act = Activation::RELU;
    let want = conv_f32_with(&clamped, &w, Some(&b), &attrs, None, act).unwrap();
    let xt = Tensor::F32(x.clone());
    let ins = [Some(&xt), Some(s), Some(bb), Some(m), Some(v)];
    let affine = InputAffine::batch_norm(eps, clamp, &ins).unwrap();
    for threads in [1, 2] {
        let got = on_threads(threads, || {
            conv_f32_affine(&x, &affine, &w, Some(&b), &attrs, None, act).unwrap()
        });
        assert_eq!(got.shape(), want.shape());
        assert_eq!(
            bits(&got),
            bits(&want),
            "{xs:?} {ws:?} {clamp:?} {threads} threads"
        );
    }
    // The clamp and the conv's Relu left values on both sides of zero before the Relu.
    assert!(want.iter().any(|&v| v > 0.0) && want.iter().any(|&v| v == 0.0));
}

#[test]
fn fused_into_the_packing_gives_the_separate_kernels_bits() {
    // 1x1 convs with more than 32 input channels (fewer go to `conv_direct`) on the patch
    // path: a plane of several panels with a partial one, one short of a panel, and two
    // images.
    agrees(
        &[1, 40, 9, 11],
        &[24, 40, 1, 1],
        &[0; 4],
        Activation::RELU,
        1,
    );
    agrees(
        &[1, 64, 5, 6],
        &[16, 64, 1, 1],
        &[0; 4],
        Activation::NONE,
        2,
    );
    let clip = Activation {
        lo: Some(-0.5),
        hi: Some(0.75),
    };
    agrees(&[2, 48, 7, 7], &[72, 48, 1, 1], &[0; 4], clip, 3);
}

#[test]
fn convs_off_the_patch_path_get_the_affine_applied_first() {
    // A padded 1x1 (padding must stay zero, not become the affine's shift), a 3x3, and a
    // 1x1 with few input channels (`conv_direct`).
    agrees(
        &[1, 40, 6, 6],
        &[16, 40, 1, 1],
        &[1; 4],
        Activation::RELU,
        4,
    );
    agrees(&[1, 16, 8, 8], &[8, 16, 3, 3], &[1; 4], Activation::RELU, 5);
    agrees(
        &[1, 8, 10, 10],
        &[16, 8, 1, 1],
        &[0; 4],
        Activation::RELU,
        6,
    );
}
