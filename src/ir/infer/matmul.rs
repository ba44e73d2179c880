//! Shape rules for MatMul (numpy semantics) and Gemm.

use super::input;
use crate::ir::{Fact, Op};
use anyhow::{bail, ensure, Result};

pub fn infer(op: &Op, inputs: &[Option<&Fact>], _n_outputs: usize) -> Result<Vec<Fact>> {
    let a = input(inputs, 0, "A")?;
    let b = input(inputs, 1, "B")?;
    ensure!(
        a.dtype == b.dtype,
        "operand dtypes differ: {} and {}",
        a.dtype,
        b.dtype
    );
    let c = match op {
        Op::Gemm(_) => inputs.get(2).copied().flatten(),
        _ => None,
    };
    if let Some(c) = c {
        ensure!(
            c.dtype == a.dtype,
            "C dtype {} differs from A dtype {}",
            c.dtype,
            a.dtype
        );
    }
    let (Some(as_), Some(bs)) = (&a.shape, &b.shape) else {
        return Ok(vec![Fact::unknown_shape(a.dtype)]);
    };
    let shape = match op {
        Op::MatMul => matmul_output_shape(as_, bs)?,
        Op::Gemm(g) => {
            let (m, n) = gemm_dims(as_, bs, g.trans_a, g.trans_b)?.0;
            if let Some(cs) = c.and_then(|c| c.shape.as_deref()) {
                check_gemm_c(cs, m, n)?;
            }
            vec![m, n]
        }
        other => bail!("matmul shape rule called for {}", other.name()),
    };
    Ok(vec![Fact::new(a.dtype, shape)])
}

/// numpy matmul output shape: a 1-D A is promoted to `[1, k]` and a 1-D B to `[k, 1]`, the
/// promoted dim being removed from the result again.
pub(crate) fn matmul_output_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    ensure!(
        !a.is_empty() && !b.is_empty(),
        "MatMul operands must have rank >= 1, got {a:?} and {b:?}"
    );
    let ka = a[a.len() - 1];
    let kb = if b.len() == 1 { b[0] } else { b[b.len() - 2] };
    ensure!(
        ka == kb,
        "inner dims differ: A {a:?} has {ka}, B {b:?} has {kb}"
    );
    let a_batch = if a.len() > 2 {
        &a[..a.len() - 2]
    } else {
        &[][..]
    };
    let b_batch = if b.len() > 2 {
        &b[..b.len() - 2]
    } else {
        &[][..]
    };
    let mut out = crate::kernels::elementwise::broadcast_shapes(a_batch, b_batch)?;
    if a.len() >= 2 {
        out.push(a[a.len() - 2]);
    }
    if b.len() >= 2 {
        out.push(b[b.len() - 1]);
    }
    Ok(out)
}

/// Gemm's `((M, N), K)` after the transpose flags, checking ranks and the inner dim.
pub(crate) fn gemm_dims(
    a: &[usize],
    b: &[usize],
    trans_a: bool,
    trans_b: bool,
) -> Result<((usize, usize), usize)> {
    ensure!(a.len() == 2, "A must be 2-D, got {a:?}");
    ensure!(b.len() == 2, "B must be 2-D, got {b:?}");
    let (m, ka) = if trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
    let (kb, n) = if trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
    ensure!(
        ka == kb,
        "inner dims differ: A {a:?} (transA {trans_a}) gives K={ka}, B {b:?} (transB {trans_b}) gives K={kb}"
    );
    Ok(((m, n), ka))
}

/// C must broadcast unidirectionally to `[M, N]`.
pub(crate) fn check_gemm_c(c: &[usize], m: usize, n: usize) -> Result<()> {
    ensure!(c.len() <= 2, "C {c:?} has rank > 2");
    let target = [m, n];
    for (i, &d) in c.iter().enumerate() {
        let t = target[2 - c.len() + i];
        ensure!(
            d == 1 || d == t,
            "C {c:?} does not broadcast to the output [{m}, {n}]"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_shapes() {
        assert_eq!(matmul_output_shape(&[2, 3], &[3, 4]).unwrap(), vec![2, 4]);
        assert_eq!(matmul_output_shape(&[3], &[3, 4]).unwrap(), vec![4]);
        assert_eq!(matmul_output_shape(&[2, 3], &[3]).unwrap(), vec![2]);
        assert_eq!(
            matmul_output_shape(&[3], &[3]).unwrap(),
            Vec::<usize>::new()
        );
        assert_eq!(
            matmul_output_shape(&[5, 1, 2, 3], &[4, 3, 6]).unwrap(),
            vec![5, 4, 2, 6]
        );
        assert!(matmul_output_shape(&[2, 3], &[4, 5]).is_err());
        assert!(matmul_output_shape(&[2, 2, 3], &[3, 3, 4]).is_err());
    }

    #[test]
    fn gemm_shapes() {
        assert_eq!(
            gemm_dims(&[3, 2], &[4, 3], true, true).unwrap(),
            ((2, 4), 3)
        );
        assert!(check_gemm_c(&[4], 2, 4).is_ok());
        assert!(check_gemm_c(&[2, 1], 2, 4).is_ok());
        assert!(check_gemm_c(&[3], 2, 4).is_err());
    }
}
