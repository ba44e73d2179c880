//! The runtime value: an n-dimensional array of one of the supported dtypes.
//!
//! `Tensor` is an enum over `ndarray::ArrayD<T>`; kernels are written generically over
//! [`Elem`] and the two macros [`with_tensor!`](crate::with_tensor) and
//! [`map_tensor!`](crate::map_tensor) dispatch one generic body over every dtype.

mod dtype;
pub mod limits;

pub use dtype::DType;
pub use half::f16;

use anyhow::{bail, Result};
use ndarray::{ArrayD, IxDyn};
use std::fmt::Debug;

/// An n-dimensional array of one supported dtype. Arrays are kept in standard (row-major)
/// layout by every kernel that produces them.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    F16(ArrayD<f16>),
    I8(ArrayD<i8>),
    I16(ArrayD<i16>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
    U8(ArrayD<u8>),
    U16(ArrayD<u16>),
    U32(ArrayD<u32>),
    U64(ArrayD<u64>),
    Bool(ArrayD<bool>),
}

/// Runs `$body` with `$a` bound to the inner array of any variant; the body's type must not
/// depend on the element type.
#[macro_export]
macro_rules! with_tensor {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::tensor::Tensor::F32($a) => $body,
            $crate::tensor::Tensor::F64($a) => $body,
            $crate::tensor::Tensor::F16($a) => $body,
            $crate::tensor::Tensor::I8($a) => $body,
            $crate::tensor::Tensor::I16($a) => $body,
            $crate::tensor::Tensor::I32($a) => $body,
            $crate::tensor::Tensor::I64($a) => $body,
            $crate::tensor::Tensor::U8($a) => $body,
            $crate::tensor::Tensor::U16($a) => $body,
            $crate::tensor::Tensor::U32($a) => $body,
            $crate::tensor::Tensor::U64($a) => $body,
            $crate::tensor::Tensor::Bool($a) => $body,
        }
    };
}

/// Like [`with_tensor!`], but `$body` yields an array of the same element type, which is
/// wrapped back into the same variant.
#[macro_export]
macro_rules! map_tensor {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::tensor::Tensor::F32($a) => $crate::tensor::Tensor::F32($body),
            $crate::tensor::Tensor::F64($a) => $crate::tensor::Tensor::F64($body),
            $crate::tensor::Tensor::F16($a) => $crate::tensor::Tensor::F16($body),
            $crate::tensor::Tensor::I8($a) => $crate::tensor::Tensor::I8($body),
            $crate::tensor::Tensor::I16($a) => $crate::tensor::Tensor::I16($body),
            $crate::tensor::Tensor::I32($a) => $crate::tensor::Tensor::I32($body),
            $crate::tensor::Tensor::I64($a) => $crate::tensor::Tensor::I64($body),
            $crate::tensor::Tensor::U8($a) => $crate::tensor::Tensor::U8($body),
            $crate::tensor::Tensor::U16($a) => $crate::tensor::Tensor::U16($body),
            $crate::tensor::Tensor::U32($a) => $crate::tensor::Tensor::U32($body),
            $crate::tensor::Tensor::U64($a) => $crate::tensor::Tensor::U64($body),
            $crate::tensor::Tensor::Bool($a) => $crate::tensor::Tensor::Bool($body),
        }
    };
}

/// A scalar type a [`Tensor`] can hold. Conversions go through f64, which is exact for every
/// type but the 64-bit integers beyond 2^53 (not an issue for the values models carry).
pub trait Elem: Copy + Default + Debug + PartialOrd + PartialEq + Send + Sync + 'static {
    const DTYPE: DType;
    fn wrap(a: ArrayD<Self>) -> Tensor;
    fn array(t: &Tensor) -> Option<&ArrayD<Self>>;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn to_i64(self) -> i64;
    fn from_i64(v: i64) -> Self;
}

macro_rules! impl_elem_num {
    ($t:ty, $variant:ident) => {
        impl Elem for $t {
            const DTYPE: DType = DType::$variant;
            fn wrap(a: ArrayD<Self>) -> Tensor {
                Tensor::$variant(a)
            }
            fn array(t: &Tensor) -> Option<&ArrayD<Self>> {
                match t {
                    Tensor::$variant(a) => Some(a),
                    _ => None,
                }
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn from_i64(v: i64) -> Self {
                v as $t
            }
        }
    };
}
impl_elem_num!(f32, F32);
impl_elem_num!(f64, F64);
impl_elem_num!(i8, I8);
impl_elem_num!(i16, I16);
impl_elem_num!(i32, I32);
impl_elem_num!(i64, I64);
impl_elem_num!(u8, U8);
impl_elem_num!(u16, U16);
impl_elem_num!(u32, U32);
impl_elem_num!(u64, U64);

impl Elem for f16 {
    const DTYPE: DType = DType::F16;
    fn wrap(a: ArrayD<Self>) -> Tensor {
        Tensor::F16(a)
    }
    fn array(t: &Tensor) -> Option<&ArrayD<Self>> {
        match t {
            Tensor::F16(a) => Some(a),
            _ => None,
        }
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn to_i64(self) -> i64 {
        f16::to_f64(self) as i64
    }
    fn from_i64(v: i64) -> Self {
        f16::from_f64(v as f64)
    }
}

impl Elem for bool {
    const DTYPE: DType = DType::Bool;
    fn wrap(a: ArrayD<Self>) -> Tensor {
        Tensor::Bool(a)
    }
    fn array(t: &Tensor) -> Option<&ArrayD<Self>> {
        match t {
            Tensor::Bool(a) => Some(a),
            _ => None,
        }
    }
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
}

impl<T: Elem> From<ArrayD<T>> for Tensor {
    fn from(a: ArrayD<T>) -> Tensor {
        T::wrap(a)
    }
}

impl Tensor {
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::F64(_) => DType::F64,
            Tensor::F16(_) => DType::F16,
            Tensor::I8(_) => DType::I8,
            Tensor::I16(_) => DType::I16,
            Tensor::I32(_) => DType::I32,
            Tensor::I64(_) => DType::I64,
            Tensor::U8(_) => DType::U8,
            Tensor::U16(_) => DType::U16,
            Tensor::U32(_) => DType::U32,
            Tensor::U64(_) => DType::U64,
            Tensor::Bool(_) => DType::Bool,
        }
    }

    pub fn shape(&self) -> &[usize] {
        with_tensor!(self, a => a.shape())
    }

    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    pub fn len(&self) -> usize {
        with_tensor!(self, a => a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A tensor of zeros (false for bool), refusing sizes the machine cannot hold.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor> {
        limits::check_alloc(shape, dtype)?;
        fn z<T: Elem>(shape: &[usize]) -> Tensor {
            T::wrap(ArrayD::from_elem(IxDyn(shape), T::default()))
        }
        Ok(match dtype {
            DType::F32 => z::<f32>(shape),
            DType::F64 => z::<f64>(shape),
            DType::F16 => z::<f16>(shape),
            DType::I8 => z::<i8>(shape),
            DType::I16 => z::<i16>(shape),
            DType::I32 => z::<i32>(shape),
            DType::I64 => z::<i64>(shape),
            DType::U8 => z::<u8>(shape),
            DType::U16 => z::<u16>(shape),
            DType::U32 => z::<u32>(shape),
            DType::U64 => z::<u64>(shape),
            DType::Bool => z::<bool>(shape),
        })
    }

    /// Builds a tensor from a shape and row-major data.
    pub fn from_vec<T: Elem>(shape: &[usize], data: Vec<T>) -> Result<Tensor> {
        let n = limits::checked_numel(shape)?;
        if n != data.len() {
            bail!("shape {shape:?} needs {n} elements, got {}", data.len());
        }
        Ok(T::wrap(ArrayD::from_shape_vec(IxDyn(shape), data)?))
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Elem>(v: T) -> Tensor {
        T::wrap(ArrayD::from_elem(IxDyn(&[]), v))
    }

    /// The inner array when the dtype is `T`, else an error naming both dtypes.
    pub fn view<T: Elem>(&self) -> Result<&ArrayD<T>> {
        T::array(self)
            .ok_or_else(|| anyhow::anyhow!("expected a {} tensor, got {}", T::DTYPE, self.dtype()))
    }

    pub fn as_f32(&self) -> Result<&ArrayD<f32>> {
        self.view::<f32>()
    }

    /// Elements converted to i64, in row-major order: for shape-like inputs (axes, pads,
    /// shapes, indices), which ONNX allows in any integer type.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        if !self.dtype().is_int() {
            bail!("expected an integer tensor, got {}", self.dtype());
        }
        Ok(with_tensor!(self, a => a.iter().map(|v| v.to_i64()).collect()))
    }

    /// Elements converted to f64, in row-major order.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_tensor!(self, a => a.iter().map(|v| v.to_f64()).collect())
    }

    /// Converts to another dtype with C-cast semantics (float to int truncates toward zero,
    /// NaN becomes 0 as in Rust's saturating `as`).
    pub fn cast(&self, to: DType) -> Tensor {
        if self.dtype() == to {
            return self.clone();
        }
        fn conv<S: Elem, D: Elem>(a: &ArrayD<S>) -> Tensor {
            // Integer to integer goes through i64 so that large values stay exact.
            if S::DTYPE.is_float() || D::DTYPE.is_float() {
                D::wrap(a.mapv(|v| D::from_f64(v.to_f64())))
            } else {
                D::wrap(a.mapv(|v| D::from_i64(v.to_i64())))
            }
        }
        macro_rules! to {
            ($a:expr) => {
                match to {
                    DType::F32 => conv::<_, f32>($a),
                    DType::F64 => conv::<_, f64>($a),
                    DType::F16 => conv::<_, f16>($a),
                    DType::I8 => conv::<_, i8>($a),
                    DType::I16 => conv::<_, i16>($a),
                    DType::I32 => conv::<_, i32>($a),
                    DType::I64 => conv::<_, i64>($a),
                    DType::U8 => conv::<_, u8>($a),
                    DType::U16 => conv::<_, u16>($a),
                    DType::U32 => conv::<_, u32>($a),
                    DType::U64 => conv::<_, u64>($a),
                    DType::Bool => conv::<_, bool>($a),
                }
            };
        }
        with_tensor!(self, a => to!(a))
    }

    /// The same data in standard (row-major, contiguous) layout.
    pub fn into_standard_layout(self) -> Tensor {
        map_tensor!(self, a => if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() })
    }

    /// Reinterprets the data with a new shape of the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<Tensor> {
        let n = limits::checked_numel(shape)?;
        if n != self.len() {
            bail!(
                "cannot reshape {:?} ({} elements) to {shape:?}",
                self.shape(),
                self.len()
            );
        }
        let t = self.into_standard_layout();
        Ok(
            map_tensor!(t, a => a.into_shape_with_order(IxDyn(shape)).expect("element count checked")),
        )
    }
}
