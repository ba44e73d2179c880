//! Refuse tensors that cannot exist before trying to allocate them.
//!
//! A malformed or hostile model can declare dims whose product overflows `usize`, or a tensor
//! of hundreds of gigabytes. Allocating it would abort the process, which the command-line
//! contract forbids, so every allocation whose size comes from a file goes through here first.

use super::DType;
use anyhow::{bail, Result};
use std::sync::OnceLock;

/// Largest single tensor we agree to allocate, in bytes. Overridable with
/// `CONVGRAPH_MAX_TENSOR_BYTES` (tests set it on a child process to exercise the refusal).
/// Read once per process: kernels check every output they allocate, and reading
/// `/proc/meminfo` each time cost tens of microseconds per node.
pub fn max_tensor_bytes() -> u64 {
    static MAX: OnceLock<u64> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("CONVGRAPH_MAX_TENSOR_BYTES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(default_max_tensor_bytes)
    })
}

/// Half the physical memory when we can read it, else 8 GiB.
fn default_max_tensor_bytes() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    total.map(|t| t / 2).unwrap_or(8 << 30)
}

/// Number of elements of `dims`, refusing overflow.
pub fn checked_numel(dims: &[usize]) -> Result<usize> {
    let mut n: usize = 1;
    for &d in dims {
        n = match n.checked_mul(d) {
            Some(n) => n,
            None => bail!("dims {dims:?} overflow: their product does not fit in memory addresses"),
        };
    }
    Ok(n)
}

/// Checks that a tensor of `dims` and `dtype` may be allocated.
pub fn check_alloc(dims: &[usize], dtype: DType) -> Result<usize> {
    let n = checked_numel(dims)?;
    let bytes = (n as u128) * dtype.size_of() as u128;
    let max = max_tensor_bytes();
    if bytes > max as u128 {
        bail!(
            "a {dtype} tensor of shape {dims:?} needs {bytes} bytes, more than the {max} this machine allows for one tensor"
        );
    }
    Ok(n)
}

/// Converts ONNX's signed dims to sizes, refusing negative ones.
pub fn dims_from_i64(dims: &[i64]) -> Result<Vec<usize>> {
    dims.iter()
        .map(|&d| {
            if d < 0 {
                bail!("negative dimension {d} in {dims:?}")
            }
            usize::try_from(d).map_err(|_| anyhow::anyhow!("dimension {d} too large"))
        })
        .collect()
}
