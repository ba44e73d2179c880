//! Conversion between ONNX `TensorProto` and our `Tensor`.
//!
//! Everything here reads untrusted bytes, so sizes are validated (`limits::check_alloc`)
//! before any buffer of the declared size is allocated, and every length is cross-checked
//! against the declared dims instead of trusting either one.

use crate::tensor::{f16, limits, DType, Tensor};
use anyhow::{anyhow, bail, Context, Result};
use ndarray::{ArrayD, IxDyn};
use std::path::Path;
use tract_onnx::pb::{tensor_proto, TensorProto};

/// The ONNX name of a data type code, for error messages (`STRING`, `BFLOAT16` ...).
pub fn onnx_type_name(code: i32) -> String {
    match tensor_proto::DataType::try_from(code) {
        Ok(t) => t.as_str_name().to_string(),
        Err(_) => format!("unknown data type {code}"),
    }
}

/// The dtype for an ONNX type code, or an error naming the type.
pub fn dtype_from_onnx(code: i32) -> Result<DType> {
    DType::from_onnx(code).ok_or_else(|| {
        anyhow!(
            "data type {} ({code}) is not supported",
            onnx_type_name(code)
        )
    })
}

/// Fixed-size little-endian element decoding/encoding, the layout of `raw_data`.
trait LeElem: Sized {
    const SIZE: usize;
    fn from_le(b: &[u8]) -> Self;
    fn to_le(&self, out: &mut Vec<u8>);
}

macro_rules! le_elem {
    ($t:ty) => {
        impl LeElem for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_le(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("chunk of the element size"))
            }
            fn to_le(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
le_elem!(f32);
le_elem!(f64);
le_elem!(i8);
le_elem!(i16);
le_elem!(i32);
le_elem!(i64);
le_elem!(u8);
le_elem!(u16);
le_elem!(u32);
le_elem!(u64);

impl LeElem for f16 {
    const SIZE: usize = 2;
    fn from_le(b: &[u8]) -> Self {
        f16::from_bits(u16::from_le_bytes([b[0], b[1]]))
    }
    fn to_le(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_le_bytes());
    }
}

impl LeElem for bool {
    const SIZE: usize = 1;
    fn from_le(b: &[u8]) -> Self {
        b[0] != 0
    }
    fn to_le(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
}

fn decode_raw<T: LeElem>(raw: &[u8]) -> Vec<T> {
    raw.chunks_exact(T::SIZE).map(T::from_le).collect()
}

fn array<T>(dims: &[usize], data: Vec<T>) -> Result<ArrayD<T>> {
    Ok(ArrayD::from_shape_vec(IxDyn(dims), data)?)
}

/// Decodes a `TensorProto` into a `Tensor`, refusing anything we cannot represent exactly.
pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor> {
    let what = if t.name.is_empty() {
        "tensor".to_string()
    } else {
        format!("tensor '{}'", t.name)
    };
    decode(t)
        .with_context(|| what.clone())
        .map_err(|e| anyhow!("{e:#}"))
}

fn decode(t: &TensorProto) -> Result<Tensor> {
    let dtype = dtype_from_onnx(t.data_type)?;
    let external = tensor_proto::DataLocation::External as i32;
    if t.data_location == Some(external) || !t.external_data.is_empty() {
        bail!("data stored in an external file is not supported");
    }
    if t.segment.is_some() {
        bail!("segmented tensors are not supported");
    }
    let dims = limits::dims_from_i64(&t.dims)?;
    // Validates the size before the decoders below allocate `n` elements.
    let n = limits::check_alloc(&dims, dtype)?;

    let typed_len = t.float_data.len()
        + t.int32_data.len()
        + t.int64_data.len()
        + t.double_data.len()
        + t.uint64_data.len();
    if !t.raw_data.is_empty() || (n == 0 && typed_len == 0) {
        // `n * size` cannot overflow: check_alloc bounded it by the byte limit.
        let want = n * dtype.size_of();
        if t.raw_data.len() != want {
            bail!(
                "raw_data has {} bytes, but shape {dims:?} of {dtype} needs {want}",
                t.raw_data.len()
            );
        }
        let raw = &t.raw_data;
        return Ok(match dtype {
            DType::F32 => Tensor::F32(array(&dims, decode_raw(raw))?),
            DType::F64 => Tensor::F64(array(&dims, decode_raw(raw))?),
            DType::F16 => Tensor::F16(array(&dims, decode_raw(raw))?),
            DType::I8 => Tensor::I8(array(&dims, decode_raw(raw))?),
            DType::I16 => Tensor::I16(array(&dims, decode_raw(raw))?),
            DType::I32 => Tensor::I32(array(&dims, decode_raw(raw))?),
            DType::I64 => Tensor::I64(array(&dims, decode_raw(raw))?),
            DType::U8 => Tensor::U8(array(&dims, decode_raw(raw))?),
            DType::U16 => Tensor::U16(array(&dims, decode_raw(raw))?),
            DType::U32 => Tensor::U32(array(&dims, decode_raw(raw))?),
            DType::U64 => Tensor::U64(array(&dims, decode_raw(raw))?),
            DType::Bool => Tensor::Bool(array(&dims, decode_raw(raw))?),
        });
    }

    // Typed fields: ONNX stores the small integer types, bool and f16 (as bit patterns) in
    // int32_data, u32/u64 in uint64_data.
    fn check_len(field: &str, len: usize, n: usize, dims: &[usize]) -> Result<()> {
        if len != n {
            bail!("{field} has {len} elements, but shape {dims:?} needs {n}");
        }
        Ok(())
    }
    let i32s = |conv: &dyn Fn(i32) -> Result<()>| -> Result<()> {
        check_len("int32_data", t.int32_data.len(), n, &dims)?;
        t.int32_data.iter().try_for_each(|&v| conv(v))
    };
    // Values of int32_data must fit the declared type; a silent wrap would change the model.
    let fits = |lo: i64, hi: i64| {
        move |v: i32| -> Result<()> {
            if (v as i64) < lo || (v as i64) > hi {
                bail!("int32_data value {v} is out of range for the declared type");
            }
            Ok(())
        }
    };
    Ok(match dtype {
        DType::F32 => {
            check_len("float_data", t.float_data.len(), n, &dims)?;
            Tensor::F32(array(&dims, t.float_data.clone())?)
        }
        DType::F64 => {
            check_len("double_data", t.double_data.len(), n, &dims)?;
            Tensor::F64(array(&dims, t.double_data.clone())?)
        }
        DType::I64 => {
            check_len("int64_data", t.int64_data.len(), n, &dims)?;
            Tensor::I64(array(&dims, t.int64_data.clone())?)
        }
        DType::U32 => {
            check_len("uint64_data", t.uint64_data.len(), n, &dims)?;
            let v = t
                .uint64_data
                .iter()
                .map(|&v| {
                    u32::try_from(v)
                        .map_err(|_| anyhow!("uint64_data value {v} is out of range for u32"))
                })
                .collect::<Result<Vec<u32>>>()?;
            Tensor::U32(array(&dims, v)?)
        }
        DType::U64 => {
            check_len("uint64_data", t.uint64_data.len(), n, &dims)?;
            Tensor::U64(array(&dims, t.uint64_data.clone())?)
        }
        DType::I32 => {
            check_len("int32_data", t.int32_data.len(), n, &dims)?;
            Tensor::I32(array(&dims, t.int32_data.clone())?)
        }
        DType::I8 => {
            i32s(&fits(i8::MIN as i64, i8::MAX as i64))?;
            Tensor::I8(array(
                &dims,
                t.int32_data.iter().map(|&v| v as i8).collect(),
            )?)
        }
        DType::I16 => {
            i32s(&fits(i16::MIN as i64, i16::MAX as i64))?;
            Tensor::I16(array(
                &dims,
                t.int32_data.iter().map(|&v| v as i16).collect(),
            )?)
        }
        DType::U8 => {
            i32s(&fits(0, u8::MAX as i64))?;
            Tensor::U8(array(
                &dims,
                t.int32_data.iter().map(|&v| v as u8).collect(),
            )?)
        }
        DType::U16 => {
            i32s(&fits(0, u16::MAX as i64))?;
            Tensor::U16(array(
                &dims,
                t.int32_data.iter().map(|&v| v as u16).collect(),
            )?)
        }
        DType::F16 => {
            i32s(&fits(0, u16::MAX as i64))?;
            let v = t
                .int32_data
                .iter()
                .map(|&v| f16::from_bits(v as u16))
                .collect();
            Tensor::F16(array(&dims, v)?)
        }
        DType::Bool => {
            i32s(&|_| Ok(()))?;
            Tensor::Bool(array(
                &dims,
                t.int32_data.iter().map(|&v| v != 0).collect(),
            )?)
        }
    })
}

fn encode_raw<'a, T: LeElem + 'a>(it: impl Iterator<Item = &'a T>) -> Vec<u8> {
    let mut out = Vec::new();
    for v in it {
        v.to_le(&mut out);
    }
    out
}

/// Encodes a tensor as a `TensorProto` with `raw_data` (the compact form every reader
/// accepts). Elements are written in logical row-major order whatever the array's layout.
pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    let raw_data = match t {
        Tensor::F32(a) => encode_raw(a.iter()),
        Tensor::F64(a) => encode_raw(a.iter()),
        Tensor::F16(a) => encode_raw(a.iter()),
        Tensor::I8(a) => encode_raw(a.iter()),
        Tensor::I16(a) => encode_raw(a.iter()),
        Tensor::I32(a) => encode_raw(a.iter()),
        Tensor::I64(a) => encode_raw(a.iter()),
        Tensor::U8(a) => encode_raw(a.iter()),
        Tensor::U16(a) => encode_raw(a.iter()),
        Tensor::U32(a) => encode_raw(a.iter()),
        Tensor::U64(a) => encode_raw(a.iter()),
        Tensor::Bool(a) => encode_raw(a.iter()),
    };
    TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: t.dtype().onnx_code(),
        raw_data,
        ..Default::default()
    }
}

/// Reads a serialized `TensorProto` file (the `input_0.pb` files of ONNX test cases).
/// Errors start with the file path.
pub fn load_tensor_pb(path: &Path) -> Result<Tensor> {
    let inner = || -> Result<Tensor> {
        let bytes = std::fs::read(path)?;
        let proto = <TensorProto as prost::Message>::decode(bytes.as_slice())
            .map_err(|e| anyhow!("not a valid TensorProto: {e}"))?;
        tensor_from_proto(&proto)
    };
    inner().map_err(|e| anyhow!("{}: {e:#}", path.display()))
}
