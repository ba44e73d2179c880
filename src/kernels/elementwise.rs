//! Elementwise kernels: Unary math, Binary arithmetic with numpy broadcasting, Clip, Cast.
//!
//! Float math is written once over ndarray's `NdFloat` (f32, f64); f16 is computed in f32 and
//! rounded back, which is what ONNX runtimes do in practice and keeps one code path.

use crate::ir::{BinaryOp, Op, UnaryOp};
use crate::tensor::{f16, DType, Elem, Tensor};
use anyhow::{bail, Result};
use ndarray::{ArrayD, IxDyn, NdFloat, Zip};
use rayon::prelude::*;

use super::input;

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], _n_outputs: usize) -> Result<Vec<Tensor>> {
    match op {
        Op::Unary(u) => Ok(vec![unary(*u, input(inputs, 0, "X")?)?]),
        Op::Binary(b) => Ok(vec![binary(
            *b,
            input(inputs, 0, "A")?,
            input(inputs, 1, "B")?,
        )?]),
        Op::Clip { min, max } => {
            let x = input(inputs, 0, "X")?;
            let lo = clip_bound(inputs.get(1).copied().flatten(), *min, x.dtype(), "min")?;
            let hi = clip_bound(inputs.get(2).copied().flatten(), *max, x.dtype(), "max")?;
            Ok(vec![clip(x, lo, hi)?])
        }
        Op::Cast { to } => Ok(vec![input(inputs, 0, "X")?.cast(*to)]),
        other => bail!("elementwise kernel cannot run {}", other.name()),
    }
}

/// numpy broadcasting of two shapes: right-aligned, each dim pair equal or one of them 1.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        // Missing leading dims behave as 1.
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            bail!("shapes {a:?} and {b:?} do not broadcast (dim {da} vs {db})");
        };
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Unary

pub fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    match x {
        Tensor::F32(a) => Ok(Tensor::F32(match unary_f32_fast(op, a) {
            Some(r) => r,
            None => unary_float(op, a),
        })),
        Tensor::F64(a) => Ok(Tensor::F64(unary_float(op, a))),
        Tensor::F16(a) => {
            let f = a.as_standard_layout().mapv(|v| v.to_f32());
            let r = unary_f32_fast(op, &f).unwrap_or_else(|| unary_float(op, &f));
            Ok(Tensor::F16(r.mapv(f16::from_f32)))
        }
        Tensor::Bool(_) => bail!("{op:?} is not defined on bool tensors"),
        // Integers: only the ops ONNX defines on them (sign and magnitude games).
        _ => match op {
            // Unsigned values are already non-negative: going through i64 would turn values
            // above i64::MAX negative, so Relu/Abs are the identity there.
            UnaryOp::Relu | UnaryOp::Abs if is_unsigned(x.dtype()) => {
                Ok(x.clone().into_standard_layout())
            }
            UnaryOp::Neg if is_unsigned(x.dtype()) => bail!("Neg is not defined on {}", x.dtype()),
            UnaryOp::Relu | UnaryOp::Neg | UnaryOp::Abs => Ok(unary_int(op, x)),
            _ => bail!("{op:?} needs a float tensor, got {}", x.dtype()),
        },
    }
}

pub(crate) fn is_unsigned(d: DType) -> bool {
    matches!(d, DType::U8 | DType::U16 | DType::U32 | DType::U64)
}

/// Whether ONNX defines the unary op on `d`: math on floats; Relu/Abs/Neg also on integers
/// (Neg on signed ones only).
pub(crate) fn unary_supports(op: UnaryOp, d: DType) -> bool {
    d.is_float()
        || (d.is_int() && matches!(op, UnaryOp::Relu | UnaryOp::Abs))
        || (d.is_int() && op == UnaryOp::Neg && !is_unsigned(d))
}

fn unary_int(op: UnaryOp, x: &Tensor) -> Tensor {
    // Through i64 with wrapping so that Neg/Abs of MIN follow two's complement like C
    // instead of panicking; unsigned Neg wraps as well.
    fn go<T: Elem>(op: UnaryOp, a: &ArrayD<T>) -> Tensor {
        T::wrap(a.mapv(|v| {
            let i = v.to_i64();
            let r = match op {
                UnaryOp::Relu => i.max(0),
                UnaryOp::Neg => i.wrapping_neg(),
                _ => i.wrapping_abs(),
            };
            T::from_i64(r)
        }))
    }
    crate::with_tensor!(x, a => go(op, a))
}

/// The hot unary ops on contiguous f32, over slices in parallel chunks: Sigmoid and Exp
/// through the vectorized `vexp` (EfficientNet's SiLU), Relu as a plain select. `None` for
/// the others.
fn unary_f32_fast(op: UnaryOp, a: &ArrayD<f32>) -> Option<ArrayD<f32>> {
    let s = a.as_slice()?;
    let kernel: fn(&[f32], &mut [f32]) = match op {
        UnaryOp::Sigmoid => super::vexp::sigmoid_slice,
        UnaryOp::Exp => super::vexp::exp_slice,
        // `v < 0` keeps NaN as NaN (and -0 as -0), as the scalar form below.
        UnaryOp::Relu => |s, d| {
            for (d, &v) in d.iter_mut().zip(s) {
                *d = if v < 0.0 { 0.0 } else { v };
            }
        },
        _ => return None,
    };
    let mut out = vec![0f32; s.len()];
    super::par::map_into(s, &mut out, kernel);
    Some(ArrayD::from_shape_vec(IxDyn(a.shape()), out).expect("same element count"))
}

fn unary_float<T: NdFloat + Elem>(op: UnaryOp, a: &ArrayD<T>) -> ArrayD<T> {
    let zero = T::zero();
    let one = T::one();
    if op == UnaryOp::Relu {
        if let Some(s) = a.as_slice() {
            // Tight loop over contiguous data (the hot Relu case). `v < 0` keeps NaN as NaN.
            let out: Vec<T> = s.iter().map(|&v| if v < zero { zero } else { v }).collect();
            return ArrayD::from_shape_vec(IxDyn(a.shape()), out).expect("same element count");
        }
    }
    let f = |v: T| -> T {
        match op {
            UnaryOp::Relu => {
                if v < zero {
                    zero
                } else {
                    v
                }
            }
            UnaryOp::Sigmoid => sigmoid(v),
            UnaryOp::Tanh => v.tanh(),
            UnaryOp::Exp => v.exp(),
            UnaryOp::Log => v.ln(),
            UnaryOp::Neg => -v,
            UnaryOp::Abs => v.abs(),
            UnaryOp::Sqrt => v.sqrt(),
            UnaryOp::Reciprocal => one / v,
            UnaryOp::Floor => v.floor(),
            UnaryOp::Ceil => v.ceil(),
            UnaryOp::Erf => T::from_f64(erf(v.to_f64())),
            UnaryOp::HardSwish => {
                // alpha * x + beta with ONNX's alpha = 1/6, beta = 1/2 (the reference's order of
                // operations, so f32 results round the same way). NaN falls to the last arm.
                let h = T::from_f64(1.0 / 6.0) * v + T::from_f64(0.5);
                if h <= zero {
                    zero
                } else if h >= one {
                    v
                } else {
                    v * h
                }
            }
        }
    };
    // `mapv` on a standard-layout array yields standard layout; other layouts are made
    // standard first so the output always is.
    a.as_standard_layout().mapv(f)
}

/// Sigmoid written to avoid overflow of `exp(-x)` for very negative x.
fn sigmoid<T: NdFloat>(v: T) -> T {
    let one = T::one();
    if v >= T::zero() {
        one / (one + (-v).exp())
    } else {
        let e = v.exp();
        e / (one + e)
    }
}

/// erf via the Numerical Recipes Chebyshev fit of erfc (fractional error < 1.2e-7), enough
/// for f32 and f16; Rust's std has no stable erf and the crate takes no libm dependency.
pub(crate) fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

// ---------------------------------------------------------------------------------------
// Binary

/// Arithmetic per element type. Integers wrap on overflow (C/ONNX runtime behaviour) and
/// divide truncating toward zero; division by zero is caught before the kernel runs.
trait Arith: Elem {
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    fn pow(self, o: Self) -> Self;
    fn is_zero(self) -> bool;
    fn is_nan(self) -> bool;
}

macro_rules! arith_float {
    ($t:ty) => {
        impl Arith for $t {
            fn add(self, o: Self) -> Self {
                self + o
            }
            fn sub(self, o: Self) -> Self {
                self - o
            }
            fn mul(self, o: Self) -> Self {
                self * o
            }
            fn div(self, o: Self) -> Self {
                self / o
            }
            fn pow(self, o: Self) -> Self {
                self.powf(o)
            }
            fn is_zero(self) -> bool {
                false // float division by zero is well defined (inf/NaN)
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}
arith_float!(f32);
arith_float!(f64);

macro_rules! arith_int {
    ($t:ty) => {
        impl Arith for $t {
            fn add(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            fn sub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            fn mul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            fn div(self, o: Self) -> Self {
                // Rust's `/` truncates toward zero like C; wrapping handles MIN / -1.
                self.wrapping_div(o)
            }
            fn pow(self, o: Self) -> Self {
                // Integer Pow as numpy/onnxruntime: computed in floating point, truncated.
                <$t>::from_f64((self as f64).powf(o as f64))
            }
            fn is_zero(self) -> bool {
                self == 0
            }
            fn is_nan(self) -> bool {
                false
            }
        }
    };
}
arith_int!(i8);
arith_int!(i16);
arith_int!(i32);
arith_int!(i64);
arith_int!(u8);
arith_int!(u16);
arith_int!(u32);
arith_int!(u64);

/// A function of two broadcast inputs: the Binary ops, and the pairwise steps of the
/// variadic Max/Min and of PRelu, which share the broadcasting machinery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fun {
    Bin(BinaryOp),
    /// NaN propagates from either side, as numpy's `maximum`.
    Max,
    Min,
    /// `x < 0 ? x * slope : x`, slope on the right.
    PRelu,
}

pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    // Pow alone lets the exponent have its own type (T1/T2 in ONNX): bring it to the base's.
    let b_conv;
    let b = if op == BinaryOp::Pow && b.dtype() != a.dtype() {
        b_conv = b.cast(a.dtype());
        &b_conv
    } else {
        b
    };
    apply(Fun::Bin(op), a, b)
}

/// `fun` elementwise over `a` and `b` broadcast together; both of one dtype (not bool).
pub(crate) fn apply(op: Fun, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() != b.dtype() {
        bail!(
            "{op:?} needs matching dtypes, got {} and {}",
            a.dtype(),
            b.dtype()
        );
    }
    Ok(match (a, b) {
        (Tensor::F32(x), Tensor::F32(y)) => Tensor::F32(binary_t(op, x, y)?),
        (Tensor::F64(x), Tensor::F64(y)) => Tensor::F64(binary_t(op, x, y)?),
        (Tensor::F16(x), Tensor::F16(y)) => {
            let r = binary_t(op, &x.mapv(|v| v.to_f32()), &y.mapv(|v| v.to_f32()))?;
            Tensor::F16(r.mapv(f16::from_f32))
        }
        (Tensor::I8(x), Tensor::I8(y)) => Tensor::I8(binary_t(op, x, y)?),
        (Tensor::I16(x), Tensor::I16(y)) => Tensor::I16(binary_t(op, x, y)?),
        (Tensor::I32(x), Tensor::I32(y)) => Tensor::I32(binary_t(op, x, y)?),
        (Tensor::I64(x), Tensor::I64(y)) => Tensor::I64(binary_t(op, x, y)?),
        (Tensor::U8(x), Tensor::U8(y)) => Tensor::U8(binary_t(op, x, y)?),
        (Tensor::U16(x), Tensor::U16(y)) => Tensor::U16(binary_t(op, x, y)?),
        (Tensor::U32(x), Tensor::U32(y)) => Tensor::U32(binary_t(op, x, y)?),
        (Tensor::U64(x), Tensor::U64(y)) => Tensor::U64(binary_t(op, x, y)?),
        _ => bail!("{op:?} is not defined on {} tensors", a.dtype()),
    })
}

fn binary_t<T: Arith>(op: Fun, a: &ArrayD<T>, b: &ArrayD<T>) -> Result<ArrayD<T>> {
    if op == Fun::Bin(BinaryOp::Div) && b.iter().any(|v| v.is_zero()) {
        bail!("integer division by zero");
    }
    // One monomorphized copy of the loops per function (not a `fn` pointer called per
    // element), so the compiler inlines and vectorizes each.
    match op {
        Fun::Bin(BinaryOp::Add) => broadcast_with(a, b, T::add),
        Fun::Bin(BinaryOp::Sub) => broadcast_with(a, b, T::sub),
        Fun::Bin(BinaryOp::Mul) => broadcast_with(a, b, T::mul),
        Fun::Bin(BinaryOp::Div) => broadcast_with(a, b, T::div),
        Fun::Bin(BinaryOp::Pow) => broadcast_with(a, b, T::pow),
        Fun::Max => broadcast_with(a, b, |x: T, y: T| if x > y || x.is_nan() { x } else { y }),
        Fun::Min => broadcast_with(a, b, |x: T, y: T| if x < y || x.is_nan() { x } else { y }),
        Fun::PRelu => broadcast_with(
            a,
            b,
            |x: T, s: T| {
                if x < T::default() {
                    x.mul(s)
                } else {
                    x
                }
            },
        ),
    }
}

/// `f` over `a` and `b` broadcast together.
fn broadcast_with<T: Arith, F: Fn(T, T) -> T + Copy + Sync>(
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    f: F,
) -> Result<ArrayD<T>> {
    let out_shape = broadcast_shapes(a.shape(), b.shape())?;
    crate::tensor::limits::check_alloc(&out_shape, T::DTYPE)?;
    // Fast paths: same shape, or one side a single element (scalar or all-ones shape).
    if a.shape() == b.shape() {
        if let (Some(x), Some(y)) = (a.as_slice(), b.as_slice()) {
            let mut out = vec![T::default(); x.len()];
            super::par::zip_into(x, y, &mut out, |x, y, d| {
                for ((d, &x), &y) in d.iter_mut().zip(x).zip(y) {
                    *d = f(x, y);
                }
            });
            return Ok(ArrayD::from_shape_vec(IxDyn(&out_shape), out)?);
        }
        let r = Zip::from(a).and(b).map_collect(|&x, &y| f(x, y));
        return Ok(standard(r));
    }
    if b.len() == 1 && out_shape == a.shape() {
        let y = *b.iter().next().expect("one element");
        return Ok(map_scalar(a, move |x| f(x, y)));
    }
    if a.len() == 1 && out_shape == b.shape() {
        let x = *a.iter().next().expect("one element");
        return Ok(map_scalar(b, move |y| f(x, y)));
    }
    // Per-channel case ([N, C, H, W] op [C, 1, 1] and the like): one side constant over
    // contiguous runs of the other, so each run is a scalar loop.
    if out_shape == a.shape() {
        if let Some(r) = per_run(a, b, &out_shape, f) {
            return Ok(r);
        }
    }
    if out_shape == b.shape() {
        if let Some(r) = per_run(b, a, &out_shape, move |y, x| f(x, y)) {
            return Ok(r);
        }
    }
    // General case: broadcast both views to the output shape and zip them.
    let av = a
        .broadcast(IxDyn(&out_shape))
        .ok_or_else(|| anyhow::anyhow!("cannot broadcast {:?} to {out_shape:?}", a.shape()))?;
    let bv = b
        .broadcast(IxDyn(&out_shape))
        .ok_or_else(|| anyhow::anyhow!("cannot broadcast {:?} to {out_shape:?}", b.shape()))?;
    Ok(standard(
        Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)),
    ))
}

/// `g` over every element of `a`, in parallel chunks when `a` is contiguous and large.
fn map_scalar<T: Elem>(a: &ArrayD<T>, g: impl Fn(T) -> T + Sync + Copy) -> ArrayD<T> {
    let a = a.as_standard_layout();
    let s = a.as_slice().expect("standard layout");
    let mut out = vec![T::default(); s.len()];
    super::par::map_into(s, &mut out, |s, d| {
        // A local copy of `g` (and of the values it captured): read through the enclosing
        // closure's reference they were reloaded every element, which kept Clip scalar.
        let local = g;
        for (d, &x) in d.iter_mut().zip(s) {
            *d = local(x);
        }
    });
    ArrayD::from_shape_vec(IxDyn(a.shape()), out).expect("same element count")
}

/// `big` (already output-shaped) combined with `small`, when `small` ends in dims of 1 so it
/// is constant over contiguous runs of `big`: `small` is broadcast over the leading dims only
/// (a few values) and each run of `big` is a tight loop against one of them.
fn per_run<T: Arith>(
    big: &ArrayD<T>,
    small: &ArrayD<T>,
    out_shape: &[usize],
    f: impl Fn(T, T) -> T + Sync,
) -> Option<ArrayD<T>> {
    let r = out_shape.len();
    let pad = r - small.ndim();
    // Number of trailing output dims over which `small` is constant (its dim is 1 or absent).
    let t = (0..r)
        .rev()
        .take_while(|&i| i < pad || small.shape()[i - pad] == 1)
        .count();
    let inner: usize = out_shape[r - t..].iter().product();
    let big_s = big.as_slice()?;
    if t == 0 || inner <= 1 {
        return None;
    }
    // `small` with its trailing 1s dropped, broadcast over the leading output dims.
    let lead = &out_shape[..r - t];
    let keep = small.ndim().saturating_sub(t);
    let sv = small
        .view()
        .into_shape_with_order(IxDyn(&small.shape()[..keep]))
        .ok()?;
    let ys: Vec<T> = sv.broadcast(IxDyn(lead))?.iter().copied().collect();
    let mut out = vec![T::default(); big_s.len()];
    // Whole runs per task, so each run meets its one value of `small`.
    let run = |first: usize, src: &[T], dst: &mut [T]| {
        for ((s, d), &y) in src
            .chunks(inner)
            .zip(dst.chunks_mut(inner))
            .zip(&ys[first..])
        {
            for (d, &x) in d.iter_mut().zip(s) {
                *d = f(x, y);
            }
        }
    };
    if super::par::worth_splitting(big_s.len()) {
        let per = super::par::units_per_task(inner) * inner;
        out.par_chunks_mut(per)
            .zip(big_s.par_chunks(per))
            .enumerate()
            .for_each(|(i, (d, s))| run(i * per / inner, s, d));
    } else {
        run(0, big_s, &mut out);
    }
    ArrayD::from_shape_vec(IxDyn(out_shape), out).ok()
}

fn standard<T: Clone>(a: ArrayD<T>) -> ArrayD<T> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

// ---------------------------------------------------------------------------------------
// Clip

/// A clip bound: the optional input (a scalar of X's dtype) wins over the attribute form.
fn clip_bound(
    t: Option<&Tensor>,
    attr: Option<f32>,
    dtype: DType,
    what: &str,
) -> Result<Option<f64>> {
    match t {
        Some(t) => {
            if t.dtype() != dtype {
                bail!("Clip {what} has dtype {}, X has {dtype}", t.dtype());
            }
            if t.len() != 1 {
                bail!("Clip {what} must be a scalar, got shape {:?}", t.shape());
            }
            Ok(Some(t.to_f64_vec()[0]))
        }
        None => Ok(attr.map(f64::from)),
    }
}

/// `min(max(x, lo), hi)`: when lo > hi every value becomes hi, as the ONNX spec says.
/// NaN inputs stay NaN because comparisons with NaN are false.
pub fn clip(x: &Tensor, lo: Option<f64>, hi: Option<f64>) -> Result<Tensor> {
    fn go<T: Elem>(a: &ArrayD<T>, lo: Option<f64>, hi: Option<f64>) -> Tensor {
        let lo = lo.map(T::from_f64);
        let hi = hi.map(T::from_f64);
        let low = |v: T, l: T| if v < l { l } else { v };
        let high = |v: T, h: T| if v > h { h } else { v };
        // One loop per combination of bounds, so none tests an Option per element.
        T::wrap(match (lo, hi) {
            (Some(l), Some(h)) => map_scalar(a, move |v| high(low(v, l), h)),
            (Some(l), None) => map_scalar(a, move |v| low(v, l)),
            (None, Some(h)) => map_scalar(a, move |v| high(v, h)),
            (None, None) => map_scalar(a, |v| v),
        })
    }
    if x.dtype() == DType::Bool {
        bail!("Clip is not defined on bool tensors");
    }
    Ok(crate::with_tensor!(x, a => go(a, lo, hi)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_add_2x1x3_and_4x1() {
        let a = Tensor::from_vec(&[2, 1, 3], vec![1f32, 2., 3., 4., 5., 6.]).unwrap();
        let b = Tensor::from_vec(&[4, 1], vec![10f32, 20., 30., 40.]).unwrap();
        let r = binary(BinaryOp::Add, &a, &b).unwrap();
        assert_eq!(r.shape(), &[2, 4, 3]);
        let v = r.to_f64_vec();
        // out[i, j, k] = a[i, 0, k] + b[j, 0]
        assert_eq!(&v[0..6], &[11., 12., 13., 21., 22., 23.]);
        assert_eq!(&v[12..15], &[14., 15., 16.]);
        assert_eq!(&v[21..24], &[44., 45., 46.]);
        assert!(binary(
            BinaryOp::Add,
            &a,
            &Tensor::from_vec(&[2], vec![1f32, 2.]).unwrap()
        )
        .is_err());
    }

    #[test]
    fn per_channel_fast_path_matches_general() {
        // [1, 2, 2, 2] - [2, 1, 1] and the mirrored [2, 1, 1] - [1, 2, 2, 2].
        let a = Tensor::from_vec(&[1, 2, 2, 2], (0..8).map(|v| v as f32).collect()).unwrap();
        let b = Tensor::from_vec(&[2, 1, 1], vec![1f32, 10.]).unwrap();
        let r = binary(BinaryOp::Sub, &a, &b).unwrap().to_f64_vec();
        assert_eq!(r, vec![-1., 0., 1., 2., -6., -5., -4., -3.]);
        let r = binary(BinaryOp::Sub, &b, &a).unwrap().to_f64_vec();
        assert_eq!(r, vec![1., 0., -1., -2., 6., 5., 4., 3.]);
        // Trailing 1s in the middle of a broadcast: [2, 3] + [2, 1].
        let a = Tensor::from_vec(&[2, 3], vec![1i32, 2, 3, 4, 5, 6]).unwrap();
        let b = Tensor::from_vec(&[2, 1], vec![100i32, 200]).unwrap();
        let r = binary(BinaryOp::Add, &a, &b).unwrap();
        assert_eq!(
            r,
            Tensor::from_vec(&[2, 3], vec![101i32, 102, 103, 204, 205, 206]).unwrap()
        );
    }

    #[test]
    fn int_div_truncates_and_zero_errors() {
        let a = Tensor::from_vec(&[4], vec![7i32, -7, 7, -7]).unwrap();
        let b = Tensor::from_vec(&[4], vec![2i32, 2, -2, -2]).unwrap();
        let r = binary(BinaryOp::Div, &a, &b).unwrap();
        assert_eq!(r, Tensor::from_vec(&[4], vec![3i32, -3, -3, 3]).unwrap());
        let z = Tensor::scalar(0i32);
        assert!(binary(BinaryOp::Div, &a, &z).is_err());
    }

    #[test]
    fn clip_with_inputs() {
        let x = Tensor::from_vec(&[5], vec![-3f32, -1., 0., 2., 9.]).unwrap();
        let lo = Tensor::scalar(-1.5f32);
        let hi = Tensor::scalar(3f32);
        let op = Op::Clip {
            min: None,
            max: None,
        };
        let r = eval(&op, &[Some(&x), Some(&lo), Some(&hi)], 1).unwrap();
        assert_eq!(r[0].to_f64_vec(), vec![-1.5, -1., 0., 2., 3.]);
        // Only max given (min absent), on integers.
        let xi = Tensor::from_vec(&[3], vec![-5i64, 1, 8]).unwrap();
        let hi = Tensor::scalar(4i64);
        let r = eval(&op, &[Some(&xi), None, Some(&hi)], 1).unwrap();
        assert_eq!(r[0], Tensor::from_vec(&[3], vec![-5i64, 1, 4]).unwrap());
    }

    /// Pseudo-random f32 in [-8, 8), zeros of both signs mixed in.
    use crate::kernels::test_data::noise;

    /// `f` over numpy broadcasting computed index by index: the reference for the fast paths.
    fn naive(a: &ArrayD<f32>, b: &ArrayD<f32>, f: impl Fn(f32, f32) -> f32) -> ArrayD<f32> {
        let shape = broadcast_shapes(a.shape(), b.shape()).unwrap();
        let r = shape.len();
        ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
            let pick = |t: &ArrayD<f32>| {
                let pad = r - t.ndim();
                let i: Vec<usize> = (0..t.ndim())
                    .map(|k| if t.shape()[k] == 1 { 0 } else { idx[k + pad] })
                    .collect();
                t[IxDyn(&i)]
            };
            f(pick(a), pick(b))
        })
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        match t {
            Tensor::F32(a) => a.iter().map(|v| v.to_bits()).collect(),
            _ => panic!("f32 expected"),
        }
    }

    #[test]
    fn binary_fast_paths_match_naive_broadcast() {
        let shapes: &[(&[usize], &[usize])] = &[
            (&[2, 5, 7, 3], &[2, 5, 7, 3]),     // same shape
            (&[1, 40, 30, 30], &[1, 40, 1, 1]), // squeeze-excitation, parallel chunks
            (&[2, 6, 4, 5], &[6, 1, 1]),        // per channel, rank padded
            (&[6, 1, 1], &[2, 6, 4, 5]),        // mirrored
            (&[3, 4, 5], &[1]),                 // scalar-like
            (&[1, 1, 1], &[3, 4, 5]),
            (&[3, 1, 5], &[1, 4, 1]),       // general
            (&[2, 3, 4, 5], &[1, 1, 4, 5]), // leading broadcast, trailing full
            (&[1, 1], &[1, 1]),
            (&[300, 300], &[300, 300]), // large same shape: parallel chunks
        ];
        type F = fn(f32, f32) -> f32;
        let ops: [(BinaryOp, F); 4] = [
            (BinaryOp::Add, |x, y| x + y),
            (BinaryOp::Sub, |x, y| x - y),
            (BinaryOp::Mul, |x, y| x * y),
            (BinaryOp::Div, |x, y| x / y),
        ];
        for (i, (sa, sb)) in shapes.iter().enumerate() {
            let a = noise(sa, 2 * i as u64 + 1);
            let b = noise(sb, 2 * i as u64 + 2);
            for (op, f) in ops {
                let want = Tensor::F32(naive(&a, &b, f));
                let got = binary(op, &Tensor::F32(a.clone()), &Tensor::F32(b.clone())).unwrap();
                assert_eq!(got.shape(), want.shape());
                assert_eq!(bits(&got), bits(&want), "{op:?} {sa:?} {sb:?}");
            }
            let max = |x: f32, y: f32| if x > y || x.is_nan() { x } else { y };
            let got = apply(Fun::Max, &Tensor::F32(a.clone()), &Tensor::F32(b.clone())).unwrap();
            assert_eq!(bits(&got), bits(&Tensor::F32(naive(&a, &b, max))));
            let prelu = |x: f32, s: f32| if x < 0.0 { x * s } else { x };
            if let Ok(got) = apply(Fun::PRelu, &Tensor::F32(a.clone()), &Tensor::F32(b.clone())) {
                assert_eq!(bits(&got), bits(&Tensor::F32(naive(&a, &b, prelu))));
            }
        }
        // Non-contiguous operands (transposed views) take the general path, same values.
        let a = noise(&[4, 6, 5], 7);
        let mut at = a.clone();
        at.swap_axes(0, 2);
        let b = noise(&[5, 6, 4], 8);
        let got = binary(
            BinaryOp::Mul,
            &Tensor::F32(at.clone()),
            &Tensor::F32(b.clone()),
        )
        .unwrap();
        assert_eq!(bits(&got), bits(&Tensor::F32(naive(&at, &b, |x, y| x * y))));
        let c = noise(&[5, 1, 1], 9);
        let got = binary(
            BinaryOp::Add,
            &Tensor::F32(at.clone()),
            &Tensor::F32(c.clone()),
        )
        .unwrap();
        assert_eq!(bits(&got), bits(&Tensor::F32(naive(&at, &c, |x, y| x + y))));
        // Integers keep wrapping semantics on the fast paths.
        let x = Tensor::from_vec(&[1, 2, 2], vec![i8::MAX, 1, -1, i8::MIN]).unwrap();
        let y = Tensor::from_vec(&[2, 1], vec![1i8, -1]).unwrap();
        let r = binary(BinaryOp::Add, &x, &y).unwrap();
        assert_eq!(
            r,
            Tensor::from_vec(&[1, 2, 2], vec![i8::MIN, 2, -2, i8::MAX]).unwrap()
        );
    }

    #[test]
    fn unary_and_clip_fast_paths_match_scalar() {
        let mut a = noise(&[3, 50, 700], 11); // past two chunks: parallel
        a[[0, 0, 0]] = f32::NAN;
        a[[0, 0, 1]] = f32::INFINITY;
        a[[0, 0, 2]] = f32::NEG_INFINITY;
        a[[0, 0, 3]] = -95.0;
        let t = Tensor::F32(a.clone());
        let relu = unary(UnaryOp::Relu, &t).unwrap();
        let want: Vec<u32> = a
            .iter()
            .map(|&v| if v < 0.0 { 0f32 } else { v }.to_bits())
            .collect();
        assert_eq!(bits(&relu), want);
        let sig = unary(UnaryOp::Sigmoid, &t).unwrap();
        for (&x, &g) in a.iter().zip(sig.to_f64_vec().iter()) {
            let w = sigmoid(f64::from(x));
            assert!(
                // Relative; below f32's smallest normal (x < -87.3) it may flush to 0.
                g == w
                    || (g - w).abs() <= 4.0 * f64::from(f32::EPSILON) * w.abs()
                    || (g.max(w) < f64::from(f32::MIN_POSITIVE) && g >= 0.0)
                    || (g.is_nan() && w.is_nan()),
                "sigmoid({x}) = {g}, want {w}"
            );
        }
        let e = unary(UnaryOp::Exp, &t).unwrap();
        for (&x, &g) in a.iter().zip(e.to_f64_vec().iter()) {
            let w = f64::from(x).exp() as f32 as f64;
            assert!(
                g == w
                    || (g - w).abs() <= 3.0 * f64::from(f32::EPSILON) * w.abs() + 3e-45
                    || (g.is_nan() && w.is_nan()),
                "exp({x}) = {g}, want {w}"
            );
        }
        // Non-contiguous input gets the scalar path and a standard-layout output.
        let mut at = a.clone();
        at.swap_axes(0, 2);
        let r = unary(UnaryOp::Sigmoid, &Tensor::F32(at)).unwrap();
        assert_eq!(r.shape(), &[700, 50, 3]);
        // Clip with one, both or no bounds: NaN stays NaN.
        for (lo, hi) in [
            (Some(-1.5), Some(2.0)),
            (Some(0.0), None),
            (None, Some(6.0)),
            (None, None),
        ] {
            let r = clip(&t, lo, hi).unwrap();
            let want: Vec<u32> = a
                .iter()
                .map(|&v| {
                    let mut v = v;
                    if let Some(l) = lo {
                        if v < l as f32 {
                            v = l as f32;
                        }
                    }
                    if let Some(h) = hi {
                        if v > h as f32 {
                            v = h as f32;
                        }
                    }
                    v.to_bits()
                })
                .collect();
            assert_eq!(bits(&r), want);
        }
    }

    #[test]
    fn same_bits_for_any_thread_count() {
        let a = Tensor::F32(noise(&[1, 96, 56, 56], 21));
        let b = Tensor::F32(noise(&[1, 96, 1, 1], 22));
        let run =
            |t: usize, f: &(dyn Fn() -> Tensor + Sync)| crate::kernels::test_data::on_threads(t, f);
        let fs: [&(dyn Fn() -> Tensor + Sync); 4] = [
            &|| unary(UnaryOp::Sigmoid, &a).unwrap(),
            &|| binary(BinaryOp::Mul, &a, &a).unwrap(),
            &|| binary(BinaryOp::Mul, &a, &b).unwrap(),
            &|| clip(&a, Some(0.0), Some(6.0)).unwrap(),
        ];
        for f in fs {
            assert_eq!(bits(&run(1, f)), bits(&run(3, f)));
        }
    }

    #[test]
    fn relu_and_erf() {
        let x = Tensor::from_vec(&[3], vec![-1f32, 0.5, f32::NAN]).unwrap();
        let r = unary(UnaryOp::Relu, &x).unwrap().to_f64_vec();
        assert_eq!(&r[..2], &[0., 0.5]);
        assert!(r[2].is_nan());
        assert!((erf(0.5) - 0.520_499_877_8).abs() < 1e-6);
        assert!((erf(-1.0) + 0.842_700_792_9).abs() < 1e-6);
    }
}
