//! Reading and writing numpy `.npy` files (format versions 1-3, little-endian, C order) for
//! every dtype convgraph has. Our own small codec rather than a crate: it covers f16 and
//! bool, refuses oversized or truncated files before allocating, and writes atomically.

use crate::tensor::{limits, DType, Tensor};
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

fn descr(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
    }
}

fn dtype_of(descr: &str) -> Result<DType> {
    // `=` (native) is little-endian on every machine we run on; `|` means "no byte order".
    let d = descr.trim_start_matches(['<', '|', '=']);
    if descr.starts_with('>') {
        bail!("big-endian dtype '{descr}' is not supported");
    }
    Ok(match d {
        "f4" => DType::F32,
        "f8" => DType::F64,
        "f2" => DType::F16,
        "i1" => DType::I8,
        "i2" => DType::I16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "u1" => DType::U8,
        "u2" => DType::U16,
        "u4" => DType::U32,
        "u8" => DType::U64,
        "b1" => DType::Bool,
        _ => bail!("unsupported npy dtype '{descr}'"),
    })
}

/// Decodes a `.npy` image.
pub fn decode(bytes: &[u8]) -> Result<Tensor> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        bail!("not a .npy file (bad magic)");
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                bail!("truncated .npy header");
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => bail!("unsupported .npy format version {v}"),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| anyhow!("truncated .npy header"))?;
    let header = std::str::from_utf8(&bytes[start..end]).context("npy header is not text")?;
    let field = |key: &str| -> Result<&str> {
        let k = format!("'{key}':");
        let i = header
            .find(&k)
            .ok_or_else(|| anyhow!("npy header has no '{key}'"))?;
        Ok(header[i + k.len()..].trim_start())
    };
    let descr_s = field("descr")?;
    let descr_s = descr_s
        .strip_prefix('\'')
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| anyhow!("bad npy descr"))?;
    let dtype = dtype_of(descr_s)?;
    if field("fortran_order")?.starts_with("True") {
        bail!("Fortran-order .npy files are not supported");
    }
    let shape_s = field("shape")?;
    let shape_s = shape_s
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| anyhow!("bad npy shape"))?;
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| anyhow!("bad npy dimension '{s}'"))
        })
        .collect::<Result<_>>()?;
    let n = limits::check_alloc(&shape, dtype)?;
    let data = &bytes[end..];
    let need = n * dtype.size_of();
    if data.len() != need {
        bail!(
            "npy data has {} bytes, shape {shape:?} of {dtype} needs {need}",
            data.len()
        );
    }
    from_le_bytes(dtype, &shape, data)
}

/// Builds a tensor from little-endian element bytes (also used for ONNX raw_data).
pub fn from_le_bytes(dtype: DType, shape: &[usize], data: &[u8]) -> Result<Tensor> {
    macro_rules! conv {
        ($t:ty) => {{
            let v: Vec<$t> = data
                .chunks_exact(std::mem::size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk")))
                .collect();
            Tensor::from_vec(shape, v)
        }};
    }
    match dtype {
        DType::F32 => conv!(f32),
        DType::F64 => conv!(f64),
        DType::F16 => {
            let v: Vec<half::f16> = data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                .collect();
            Tensor::from_vec(shape, v)
        }
        DType::I8 => conv!(i8),
        DType::I16 => conv!(i16),
        DType::I32 => conv!(i32),
        DType::I64 => conv!(i64),
        DType::U8 => conv!(u8),
        DType::U16 => conv!(u16),
        DType::U32 => conv!(u32),
        DType::U64 => conv!(u64),
        DType::Bool => Tensor::from_vec(shape, data.iter().map(|&b| b != 0).collect::<Vec<bool>>()),
    }
}

/// The tensor's elements as little-endian bytes, row-major.
pub fn to_le_bytes(t: &Tensor) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.len() * t.dtype().size_of());
    macro_rules! put {
        ($a:expr) => {
            for v in $a.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
    }
    match t {
        Tensor::F32(a) => put!(a),
        Tensor::F64(a) => put!(a),
        Tensor::F16(a) => put!(a),
        Tensor::I8(a) => put!(a),
        Tensor::I16(a) => put!(a),
        Tensor::I32(a) => put!(a),
        Tensor::I64(a) => put!(a),
        Tensor::U8(a) => put!(a),
        Tensor::U16(a) => put!(a),
        Tensor::U32(a) => put!(a),
        Tensor::U64(a) => put!(a),
        Tensor::Bool(a) => out.extend(a.iter().map(|&b| b as u8)),
    }
    out
}

/// Encodes a `.npy` (version 1.0) image.
pub fn encode(t: &Tensor) -> Vec<u8> {
    let shape = match t.shape() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        descr(t.dtype())
    );
    // Pad so that the data starts on a 64-byte boundary, header ending in '\n'.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.len() * t.dtype().size_of());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&to_le_bytes(t));
    out
}

pub fn read(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    decode(&bytes).with_context(|| format!("{}", path.display()))
}

/// Writes atomically: to a temporary file beside the target, then renamed, so a failure
/// never leaves a half-written output.
pub fn write(path: &Path, t: &Tensor) -> Result<()> {
    let tmp = path.with_extension("npy.tmp");
    std::fs::write(&tmp, encode(t)).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype() {
        for dtype in DType::ALL {
            let t = Tensor::from_vec(&[2, 3], (0..6).map(|i| i as f32).collect())
                .unwrap()
                .cast(dtype);
            let back = decode(&encode(&t)).unwrap();
            assert_eq!(back, t, "{dtype}");
        }
        let s = Tensor::scalar(1.5f32);
        assert_eq!(decode(&encode(&s)).unwrap(), s);
    }

    #[test]
    fn refuses_truncated_and_garbage() {
        let t = Tensor::from_vec(&[4], vec![1f32, 2., 3., 4.]).unwrap();
        let bytes = encode(&t);
        let e = decode(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(e.to_string().contains("needs 16"), "{e}");
        assert!(decode(b"garbage").is_err());
        assert!(decode(&bytes[..20]).is_err());
    }
}
