//! Elementwise ops on contiguous f32 written into one input's own buffer, for the
//! interpreter's in-place plan (an input that dies at this node and already has the output's
//! shape), and the fused passes of plain runs: Add or BatchNorm followed by Relu or a
//! constant Clip (MobileNet v2's ReLU6 after an unfolded BatchNorm), and Mul(x, Sigmoid(x))
//! as SiLU.
//!
//! Every element is computed by the same expression as the out-of-place kernels in
//! `elementwise.rs`/`norm.rs`/`vexp.rs` (Rust does not contract `a * b + c` into an FMA), so
//! in place or not, fused or not, the bits are the same; work is split in `par`'s fixed
//! chunks, so they never depend on the thread count either.

use super::sgemm::Activation;
use super::{elementwise, norm, par, vexp};
use crate::ir::{BinaryOp, Op, UnaryOp};
use crate::tensor::Tensor;
use anyhow::{anyhow, Result};
use ndarray::{ArrayD, IxDyn};

/// A pass fused after (or into) a node in plain runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fused {
    /// The Relu or constant-bound Clip node reading this Add or BatchNorm's output is
    /// applied here (the clamp a Conv's epilogue applies, `Activation::apply`).
    Clamp(Activation),
    /// This Mul reads `x` (input `x`) and `Sigmoid(x)` (the other input, which is not
    /// computed): it computes `x * sigmoid(x)` from `x` alone.
    Silu { x: usize },
}

/// Whether the op can take the given input (or its copy) as its output buffer: unary Relu
/// and Sigmoid, Add/Sub/Mul/Div, inference BatchNorm's X.
pub fn may_run_in_place(op: &Op, k: usize) -> bool {
    match op {
        Op::Unary(UnaryOp::Relu | UnaryOp::Sigmoid) | Op::BatchNorm { .. } => k == 0,
        Op::Binary(BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div) => k < 2,
        _ => false,
    }
}

/// How the other operand of a binary op meets the buffer's elements.
enum Other<'a> {
    /// Same shape, contiguous: element by element.
    Same(&'a [f32]),
    /// One element for all.
    Scalar(f32),
    /// Constant over runs of `inner` elements of the buffer: run `r` meets `ys[r]`.
    PerRun { ys: Vec<f32>, inner: usize },
}

fn f32_slice(t: &Tensor) -> Option<&[f32]> {
    match t {
        Tensor::F32(a) => a.as_slice(),
        _ => None,
    }
}

/// `other` seen from a buffer of shape `shape`, when broadcasting it against the buffer
/// leaves the shape unchanged and one of the fast forms applies.
fn classify<'a>(shape: &[usize], other: &'a Tensor) -> Option<Other<'a>> {
    let Tensor::F32(o) = other else { return None };
    if elementwise::broadcast_shapes(shape, o.shape()).ok()? != shape {
        return None;
    }
    if o.shape() == shape {
        return o.as_slice().map(Other::Same);
    }
    if o.len() == 1 {
        return o.iter().next().map(|&y| Other::Scalar(y));
    }
    // Trailing output dims over which `other` is constant (its dim 1 or absent), as
    // elementwise's per-run path.
    let r = shape.len();
    let pad = r - o.ndim();
    let t = (0..r)
        .rev()
        .take_while(|&i| i < pad || o.shape()[i - pad] == 1)
        .count();
    let inner: usize = shape[r - t..].iter().product();
    if t == 0 || inner <= 1 {
        return None;
    }
    let keep = o.ndim().saturating_sub(t);
    let sv = o
        .view()
        .into_shape_with_order(IxDyn(&o.shape()[..keep]))
        .ok()?;
    let ys = sv
        .broadcast(IxDyn(&shape[..r - t]))?
        .iter()
        .copied()
        .collect();
    Some(Other::PerRun { ys, inner })
}

/// Whether `eval_in_place` can run with input `k`'s buffer: f32 in standard layout, and the
/// output of the op has its shape (and the other operand a fast form).
pub fn can_run_in_place(
    op: &Op,
    fused: Option<Fused>,
    inputs: &[Option<&Tensor>],
    k: usize,
) -> bool {
    let Some(Some(buf)) = inputs.get(k) else {
        return false;
    };
    if f32_slice(buf).is_none() || !may_run_in_place(op, k) {
        return false;
    }
    match (op, fused) {
        (_, Some(Fused::Silu { x })) => x == k,
        (Op::Unary(_) | Op::BatchNorm { .. }, _) => true,
        (Op::Binary(_), _) => inputs
            .get(1 - k)
            .copied()
            .flatten()
            .is_some_and(|o| classify(buf.shape(), o).is_some()),
        _ => false,
    }
}

/// Runs `op` (with its fused pass) writing into `buf`, input `k` taken out of the inputs
/// (`inputs[k]` is `None`). The caller checked `can_run_in_place` before taking it.
pub fn eval_in_place(
    op: &Op,
    fused: Option<Fused>,
    buf: Tensor,
    k: usize,
    inputs: &[Option<&Tensor>],
) -> Result<Tensor> {
    let Tensor::F32(mut a) = buf else {
        return Err(anyhow!("in-place {} needs an f32 buffer", op.name()));
    };
    let clamp = match fused {
        Some(Fused::Clamp(act)) => Bounds::of(act),
        _ => Bounds::NONE,
    };
    let d = a
        .as_slice_mut()
        .ok_or_else(|| anyhow!("in-place {} needs a contiguous buffer", op.name()))?;
    match (op, fused) {
        (_, Some(Fused::Silu { .. })) => par::map_in_place(d, vexp::silu_in_place),
        (Op::Unary(UnaryOp::Relu), _) => par::map_in_place(d, relu_in_place),
        (Op::Unary(UnaryOp::Sigmoid), _) => par::map_in_place(d, vexp::sigmoid_in_place),
        (Op::BatchNorm { epsilon }, _) => {
            let params = [1, 2, 3, 4].map(|i| super::input(inputs, i, "BatchNorm parameter"));
            let [s, b, m, v] = params;
            let x_shape = a.shape().to_vec();
            let (ca, cb) = norm::bn_coeffs(&x_shape, [s?, b?, m?, v?], *epsilon)?;
            let inner: usize = x_shape[2..].iter().product();
            let d = a.as_slice_mut().expect("checked contiguous");
            batch_norm(d, &ca, &cb, inner, clamp);
        }
        (Op::Binary(bop), _) => {
            let other = inputs
                .get(1 - k)
                .copied()
                .flatten()
                .ok_or_else(|| anyhow!("{} is missing an input", op.name()))?;
            let shape = a.shape().to_vec();
            let other = classify(&shape, other)
                .ok_or_else(|| anyhow!("{} cannot run in place on {shape:?}", op.name()))?;
            let d = a.as_slice_mut().expect("checked contiguous");
            binary(*bop, k, clamp, d, &other);
        }
        _ => return Err(anyhow!("{} has no in-place form", op.name())),
    }
    Ok(Tensor::F32(a))
}

/// The fused pass when no input buffer can be taken: the node's own kernel (Sigmoid then
/// Mul for SiLU) out of place, then the Relu over the fresh output in place.
pub fn eval_fused(op: &Op, fused: Fused, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    match fused {
        Fused::Silu { x } => {
            let xt = super::input(inputs, x, "X")?;
            let s = elementwise::unary(UnaryOp::Sigmoid, xt)?;
            if x == 0 {
                elementwise::binary(BinaryOp::Mul, xt, &s)
            } else {
                elementwise::binary(BinaryOp::Mul, &s, xt)
            }
        }
        Fused::Clamp(act) => {
            let clamp = Bounds::of(act);
            if let (Op::BatchNorm { epsilon }, Some(Some(Tensor::F32(x)))) = (op, inputs.first()) {
                // One pass into a fresh buffer, where the kernel's own output would be
                // zeroed, written, then clamped in a pass of its own (DenseNet's BNs read the
                // Concats kept alive for `concat_extending`, so they cannot take their input).
                let params = [1, 2, 3, 4].map(|i| super::input(inputs, i, "BatchNorm parameter"));
                let [s, b, m, v] = params;
                let (ca, cb) = norm::bn_coeffs(x.shape(), [s?, b?, m?, v?], *epsilon)?;
                let inner: usize = x.shape()[2..].iter().product();
                let x = x.as_standard_layout();
                let src = x.as_slice().expect("standard layout");
                let out = batch_norm_into(src, &ca, &cb, inner, clamp);
                return Ok(Tensor::F32(ArrayD::from_shape_vec(x.raw_dim(), out)?));
            }
            let mut outs = super::eval(op, inputs, 1)?;
            let t = outs
                .pop()
                .ok_or_else(|| anyhow!("{} produced no output", op.name()))?;
            match t {
                Tensor::F32(mut a) if a.is_standard_layout() => {
                    let d = a.as_slice_mut().expect("standard layout");
                    par::map_in_place(d, |d| clamp.apply_all(d));
                    Ok(Tensor::F32(a))
                }
                t => elementwise::clip(&t, act.lo.map(f64::from), act.hi.map(f64::from)),
            }
        }
    }
}

/// Inference BatchNorm (then the fused clamp, if any) on a blocked value (`[N, C/8, H, W, 8]`,
/// `kernels::blocked`) in its own buffer `buf`, the parameters at `inputs[1..5]`: each
/// element by the expression of [`batch_norm`] with its channel's coefficients, so the bits of
/// the BatchNorm on planes, blocked.
pub fn batch_norm_blocked(
    epsilon: f32,
    fused: Option<Fused>,
    buf: Tensor,
    inputs: &[Option<&Tensor>],
) -> Result<Tensor> {
    let Tensor::F32(mut x) = buf else {
        return Err(anyhow!("a blocked BatchNorm needs an f32 buffer"));
    };
    let held = x.shape().to_vec();
    if held.len() != 5 || held[4] != super::blocked::BLOCK {
        return Err(anyhow!("a blocked BatchNorm got shape {held:?}"));
    }
    let logical = super::blocked::logical_shape(&held);
    let params = [1, 2, 3, 4].map(|i| super::input(inputs, i, "BatchNorm parameter"));
    let [s, b, m, v] = params;
    let (ca, cb) = norm::bn_coeffs(&logical, [s?, b?, m?, v?], epsilon)?;
    let clamp = match fused {
        Some(Fused::Clamp(act)) => Bounds::of(act),
        _ => Bounds::NONE,
    };
    const L: usize = super::blocked::BLOCK;
    let blocks = held[1];
    let run = held[2] * held[3] * L;
    let d = x
        .as_slice_mut()
        .ok_or_else(|| anyhow!("a blocked BatchNorm needs a contiguous buffer"))?;
    par::runs_in_place(d, run, |first, d| {
        for (r, d) in (first..).zip(d.chunks_mut(run)) {
            let c0 = (r % blocks) * L;
            let a: [f32; L] = std::array::from_fn(|l| ca[c0 + l] as f32);
            let b: [f32; L] = std::array::from_fn(|l| cb[c0 + l] as f32);
            affine_lanes(d, &a, &b, clamp);
        }
    });
    Ok(Tensor::F32(x))
}

/// `p[l] = clamp(p[l] * a[l] + b[l])` for every group `p` of 8 in `d`; with AVX2 where the
/// CPU has it, one group one vector.
fn affine_lanes(d: &mut [f32], a: &[f32; 8], b: &[f32; 8], clamp: Bounds) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { affine_lanes_avx2(d, a, b, clamp) };
        return;
    }
    affine_lanes_body(d, a, b, clamp)
}

/// [`affine_lanes_body`] spelled out: left to the compiler (SSE or AVX2), the lanes went
/// through shuffles and the stack, and MobileNet v2 legacy_nofold's BatchNorms took 3.1 ms
/// a run against 1.1 this way.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn affine_lanes_avx2(d: &mut [f32], a: &[f32; 8], b: &[f32; 8], clamp: Bounds) {
    use std::arch::x86_64::*;
    // SAFETY (loads and stores): `a`, `b` and each group `p` are 8 floats; unaligned forms.
    unsafe {
        let (va, vb) = (_mm256_loadu_ps(a.as_ptr()), _mm256_loadu_ps(b.as_ptr()));
        let (lo, hi) = (_mm256_set1_ps(clamp.lo), _mm256_set1_ps(clamp.hi));
        for p in d.chunks_exact_mut(8) {
            let v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(p.as_ptr()), va), vb);
            // `v < lo -> lo`, then `v > hi -> hi` (ordered compares: NaN stays).
            let v = _mm256_blendv_ps(v, lo, _mm256_cmp_ps::<_CMP_LT_OQ>(v, lo));
            let v = _mm256_blendv_ps(v, hi, _mm256_cmp_ps::<_CMP_GT_OQ>(v, hi));
            _mm256_storeu_ps(p.as_mut_ptr(), v);
        }
    }
}

#[inline(always)]
fn affine_lanes_body(d: &mut [f32], a: &[f32; 8], b: &[f32; 8], clamp: Bounds) {
    for p in d.chunks_exact_mut(8) {
        for l in 0..8 {
            p[l] = clamp.apply(p[l] * a[l] + b[l]);
        }
    }
}

/// `v < 0 ? 0 : v`, as the Relu kernel (NaN stays NaN, -0 stays -0).
#[inline(always)]
fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

pub(crate) fn relu_in_place(d: &mut [f32]) {
    for v in d {
        *v = relu(*v);
    }
}

/// A fused clamp's bounds as plain floats, -inf and +inf where it has none: `v < -inf` and
/// `v > inf` never hold, so this is `Activation::apply` (NaN and -0.0 kept alike) without
/// branches on the `Option`s in the loops.
#[derive(Clone, Copy)]
struct Bounds {
    lo: f32,
    hi: f32,
}

impl Bounds {
    const NONE: Bounds = Bounds {
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
    };

    fn of(act: Activation) -> Bounds {
        Bounds {
            lo: act.lo.unwrap_or(f32::NEG_INFINITY),
            hi: act.hi.unwrap_or(f32::INFINITY),
        }
    }

    fn is_none(self) -> bool {
        self.lo == f32::NEG_INFINITY && self.hi == f32::INFINITY
    }

    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        let v = if v < self.lo { self.lo } else { v };
        if v > self.hi {
            self.hi
        } else {
            v
        }
    }

    fn apply_all(self, d: &mut [f32]) {
        for v in d {
            *v = self.apply(*v);
        }
    }
}

/// `d = x * a[ch] + b[ch]` per channel block of `inner` elements (then the clamp), as
/// `norm::bn_t` computes it.
fn batch_norm(d: &mut [f32], a: &[f64], b: &[f64], inner: usize, clamp: Bounds) {
    if inner == 0 || a.is_empty() {
        return;
    }
    let c = a.len();
    let go = |first: usize, d: &mut [f32]| {
        for (blk, d) in (first..).zip(d.chunks_mut(inner)) {
            let (ca, cb) = (a[blk % c] as f32, b[blk % c] as f32);
            if !clamp.is_none() {
                for v in d.iter_mut() {
                    *v = clamp.apply(*v * ca + cb);
                }
            } else {
                for v in d.iter_mut() {
                    *v = *v * ca + cb;
                }
            }
        }
    };
    par::runs_in_place(d, inner, go);
}

/// [`batch_norm`] from `src` into a new buffer: the same expression per element, so the
/// same bits, without zeroing the buffer first.
fn batch_norm_into(src: &[f32], a: &[f64], b: &[f64], inner: usize, clamp: Bounds) -> Vec<f32> {
    let mut out = Vec::with_capacity(src.len());
    if inner == 0 || a.is_empty() || src.is_empty() {
        out.resize(src.len(), 0.0);
        return out;
    }
    let c = a.len();
    let dst = &mut out.spare_capacity_mut()[..src.len()];
    par::runs_into(src, dst, inner, |first, s, d| {
        for (blk, (s, d)) in (first..).zip(s.chunks(inner).zip(d.chunks_mut(inner))) {
            let (ca, cb) = (a[blk % c] as f32, b[blk % c] as f32);
            if !clamp.is_none() {
                for (d, &v) in d.iter_mut().zip(s) {
                    d.write(clamp.apply(v * ca + cb));
                }
            } else {
                for (d, &v) in d.iter_mut().zip(s) {
                    d.write(v * ca + cb);
                }
            }
        }
    });
    // SAFETY: the runs cover `dst`, all `src.len()` elements, and every one was written.
    unsafe { out.set_len(src.len()) };
    out
}

/// The binary op into `d` (operand `k`), the other operand `o`, then the clamp if asked.
fn binary(op: BinaryOp, k: usize, clamp: Bounds, d: &mut [f32], o: &Other) {
    // One monomorphized loop per (op, operand order, Relu), so each vectorizes.
    macro_rules! go {
        ($f:expr) => {
            if !clamp.is_none() {
                combine(d, o, move |x, y| clamp.apply($f(x, y)))
            } else {
                combine(d, o, $f)
            }
        };
    }
    match (op, k) {
        (BinaryOp::Add, 0) => go!(|x: f32, y: f32| x + y),
        (BinaryOp::Add, _) => go!(|x: f32, y: f32| y + x),
        (BinaryOp::Sub, 0) => go!(|x: f32, y: f32| x - y),
        (BinaryOp::Sub, _) => go!(|x: f32, y: f32| y - x),
        (BinaryOp::Mul, 0) => go!(|x: f32, y: f32| x * y),
        (BinaryOp::Mul, _) => go!(|x: f32, y: f32| y * x),
        (BinaryOp::Div, 0) => go!(|x: f32, y: f32| x / y),
        (BinaryOp::Div, _) => go!(|x: f32, y: f32| y / x),
        _ => unreachable!("may_run_in_place admits Add/Sub/Mul/Div only"),
    }
}

/// `d = act(d + r)` elementwise, `r` as long as `d`: the in-place Add's loop, for a residual
/// a conv path adds after its output is written (`conv::Finish`).
pub fn add_in_place(d: &mut [f32], r: &[f32], act: Activation) {
    assert_eq!(d.len(), r.len(), "add_in_place: lengths differ");
    binary(BinaryOp::Add, 0, Bounds::of(act), d, &Other::Same(r));
}

/// `d[i] = f(d[i], other's element for i)` in `par`'s fixed chunks. Each chunk loop works
/// on a local copy of `f`, so its captures are not reloaded per element (as `map_scalar`).
fn combine(d: &mut [f32], o: &Other, f: impl Fn(f32, f32) -> f32 + Sync + Copy) {
    match o {
        Other::Same(ys) => par::zip_in_place(d, ys, |d, ys| {
            let local = f;
            for (v, &y) in d.iter_mut().zip(ys) {
                *v = local(*v, y);
            }
        }),
        &Other::Scalar(y) => par::map_in_place(d, |d| {
            let local = f;
            for v in d.iter_mut() {
                *v = local(*v, y);
            }
        }),
        Other::PerRun { ys, inner } => par::runs_in_place(d, *inner, |first, d| {
            let local = f;
            for (d, &y) in d.chunks_mut(*inner).zip(&ys[first..]) {
                for v in d.iter_mut() {
                    *v = local(*v, y);
                }
            }
        }),
    }
}

#[cfg(test)]
#[path = "pointwise_tests.rs"]
mod tests;
