//! MatMul (numpy semantics: 1-D operands promoted then squeezed, batch dims broadcast) and
//! Gemm (`alpha * A' * B' + beta * C`). f32 goes through `sgemm`; the other numeric dtypes
//! use a plain loop accumulating in f64 (floats) or wrapping i64 (integers).

use super::gemm::{sgemm, sgemm_par, sgemm_strided_par};
use super::input;
use crate::ir::op::GemmAttrs;
use crate::ir::Op;
use crate::tensor::{f16, DType, Elem, Tensor};
use anyhow::{anyhow, bail, ensure, Result};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], _n_outputs: usize) -> Result<Vec<Tensor>> {
    let a = input(inputs, 0, "A")?;
    let b = input(inputs, 1, "B")?;
    ensure!(
        a.dtype() == b.dtype(),
        "operand dtypes differ: {} and {}",
        a.dtype(),
        b.dtype()
    );
    let c = match op {
        Op::Gemm(_) => inputs.get(2).copied().flatten(),
        _ => None,
    };
    if let Some(c) = c {
        ensure!(
            c.dtype() == a.dtype(),
            "C dtype {} differs from A dtype {}",
            c.dtype(),
            a.dtype()
        );
    }
    macro_rules! go {
        ($t:ty) => {
            match op {
                Op::MatMul => Tensor::from(matmul::<$t>(a.view()?, b.view()?)?),
                Op::Gemm(g) => {
                    let c = match c {
                        Some(c) => Some(c.view::<$t>()?),
                        None => None,
                    };
                    Tensor::from(gemm_op::<$t>(a.view()?, b.view()?, c, g)?)
                }
                other => bail!("matmul kernel called for {}", other.name()),
            }
        };
    }
    let out = match a.dtype() {
        DType::F32 => go!(f32),
        DType::F64 => go!(f64),
        DType::F16 => go!(f16),
        DType::I8 => go!(i8),
        DType::I16 => go!(i16),
        DType::I32 => go!(i32),
        DType::I64 => go!(i64),
        DType::U8 => go!(u8),
        DType::U16 => go!(u16),
        DType::U32 => go!(u32),
        DType::U64 => go!(u64),
        DType::Bool => bail!("{} on bool is not supported", op.name()),
    };
    Ok(vec![out])
}

/// One output element of a generic (non-f32) product: `sum_p a(p) * b(p)`, in f64 for floats
/// and wrapping i64 for integers (as integer matmul overflows in C).
fn dot<E: Elem>(k: usize, a: impl Fn(usize) -> E, b: impl Fn(usize) -> E) -> f64 {
    if E::DTYPE.is_float() {
        (0..k).map(|p| a(p).to_f64() * b(p).to_f64()).sum()
    } else {
        let s = (0..k).fold(0i64, |s, p| {
            s.wrapping_add(a(p).to_i64().wrapping_mul(b(p).to_i64()))
        });
        s as f64
    }
}

/// numpy `matmul`.
pub fn matmul<E: Elem>(a: &ArrayD<E>, b: &ArrayD<E>) -> Result<ArrayD<E>> {
    let (as_, bs) = (a.shape(), b.shape());
    ensure!(
        !as_.is_empty() && !bs.is_empty(),
        "MatMul operands must have rank >= 1, got {as_:?} and {bs:?}"
    );
    // Promote 1-D operands to matrices; the added dim is dropped from the result below.
    let a2: Vec<usize> = if as_.len() == 1 {
        vec![1, as_[0]]
    } else {
        as_.to_vec()
    };
    let b2: Vec<usize> = if bs.len() == 1 {
        vec![bs[0], 1]
    } else {
        bs.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    ensure!(
        k == kb,
        "inner dims differ: A {as_:?} has {k}, B {bs:?} has {kb}"
    );
    let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let rank = ab.len().max(bb.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut v = vec![1; rank - s.len()];
        v.extend(s);
        v
    };
    let (ab, bb) = (pad(ab), pad(bb));
    let mut batch = Vec::with_capacity(rank);
    for i in 0..rank {
        batch.push(match (ab[i], bb[i]) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => bail!("batch dims of {as_:?} and {bs:?} do not broadcast"),
        });
    }
    let mut full = batch.clone();
    full.extend([m, n]);
    crate::tensor::limits::check_alloc(&full, E::DTYPE)?;
    // Element offsets of each output batch's A and B matrices (broadcast dims stay at 0).
    let n_batch: usize = batch.iter().product();
    let offsets: Vec<(usize, usize)> = (0..n_batch)
        .map(|mut t| {
            let (mut ao, mut bo, mut astr, mut bstr) = (0, 0, m * k, k * n);
            for i in (0..rank).rev() {
                let idx = t % batch[i];
                t /= batch[i];
                if ab[i] != 1 {
                    ao += idx * astr;
                }
                if bb[i] != 1 {
                    bo += idx * bstr;
                }
                astr *= ab[i];
                bstr *= bb[i];
            }
            (ao, bo)
        })
        .collect();
    let a = a.as_standard_layout();
    let b = b.as_standard_layout();
    let (ad, bd) = (a.as_slice().unwrap(), b.as_slice().unwrap());
    let mut out = vec![E::default(); n_batch * m * n];
    if m * n > 0 {
        if let (Some(af), Some(bf), Some(of)) = (as_f32(ad), as_f32(bd), as_f32_mut(&mut out)) {
            if n_batch == 1 {
                sgemm_par(
                    m,
                    n,
                    k,
                    &af[offsets[0].0..],
                    k,
                    &bf[offsets[0].1..],
                    n,
                    of,
                    n,
                    false,
                );
            } else {
                of.par_chunks_mut(m * n)
                    .zip(&offsets)
                    .for_each(|(o, &(ao, bo))| {
                        sgemm(m, n, k, &af[ao..], k, &bf[bo..], n, o, n, false)
                    });
            }
        } else {
            out.par_chunks_mut(m * n)
                .zip(&offsets)
                .for_each(|(o, &(ao, bo))| {
                    for i in 0..m {
                        for j in 0..n {
                            let v = dot(k, |p| ad[ao + i * k + p], |p| bd[bo + p * n + j]);
                            o[i * n + j] = E::from_f64(v);
                        }
                    }
                });
        }
    }
    let mut shape = batch;
    if as_.len() > 1 {
        shape.push(m);
    }
    if bs.len() > 1 {
        shape.push(n);
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), out)?)
}

/// Reinterprets a slice as f32 when `E` is f32 (the fast path), else `None`.
fn as_f32<E: Elem>(s: &[E]) -> Option<&[f32]> {
    (E::DTYPE == DType::F32).then(|| {
        // SAFETY: E is f32 (checked through its dtype), so the cast is the identity.
        unsafe { std::slice::from_raw_parts(s.as_ptr() as *const f32, s.len()) }
    })
}

fn as_f32_mut<E: Elem>(s: &mut [E]) -> Option<&mut [f32]> {
    (E::DTYPE == DType::F32).then(|| {
        // SAFETY: as in `as_f32`.
        unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut f32, s.len()) }
    })
}

/// ONNX Gemm: `alpha * A' * B' + beta * C`, C broadcast unidirectionally to `[M, N]`.
pub fn gemm_op<E: Elem>(
    a: &ArrayD<E>,
    b: &ArrayD<E>,
    c: Option<&ArrayD<E>>,
    g: &GemmAttrs,
) -> Result<ArrayD<E>> {
    let (as_, bs) = (a.shape(), b.shape());
    ensure!(as_.len() == 2, "A must be 2-D, got {as_:?}");
    ensure!(bs.len() == 2, "B must be 2-D, got {bs:?}");
    let (m, k) = if g.trans_a {
        (as_[1], as_[0])
    } else {
        (as_[0], as_[1])
    };
    let (kb, n) = if g.trans_b {
        (bs[1], bs[0])
    } else {
        (bs[0], bs[1])
    };
    ensure!(
        k == kb,
        "inner dims differ: A {as_:?} (transA {}) gives K={k}, B {bs:?} (transB {}) gives K={kb}",
        g.trans_a,
        g.trans_b
    );
    crate::tensor::limits::check_alloc(&[m, n], E::DTYPE)?;
    // beta * C first, so the product can be accumulated onto it. beta == 0 ignores C (and
    // any inf/NaN in it), as onnxruntime does.
    let c_term: Option<Vec<f64>> = match c {
        Some(c) if g.beta != 0.0 => {
            ensure!(c.ndim() <= 2, "C {:?} has rank > 2", c.shape());
            let cb = c.broadcast(IxDyn(&[m, n])).ok_or_else(|| {
                anyhow!(
                    "C {:?} does not broadcast to the output [{m}, {n}]",
                    c.shape()
                )
            })?;
            Some(cb.iter().map(|v| v.to_f64() * g.beta as f64).collect())
        }
        _ => None,
    };
    let a = a.as_standard_layout();
    let b = b.as_standard_layout();
    let (ad, bd) = (a.as_slice().unwrap(), b.as_slice().unwrap());
    // Row/column strides of A' and B' in the stored (row-major) arrays.
    let (a_rs, a_cs) = if g.trans_a { (1, as_[1]) } else { (as_[1], 1) };
    let (b_rs, b_cs) = if g.trans_b { (1, bs[1]) } else { (bs[1], 1) };
    let mut out: Vec<E> = match &c_term {
        Some(cv) => cv.iter().map(|&v| E::from_f64(v)).collect(),
        None => vec![E::default(); m * n],
    };
    if let (Some(af), Some(bf), Some(of)) = (as_f32(ad), as_f32(bd), as_f32_mut(&mut out)) {
        sgemm_strided_par(
            m,
            n,
            k,
            g.alpha,
            af,
            a_rs,
            a_cs,
            bf,
            b_rs,
            b_cs,
            of,
            n,
            c_term.is_some(),
        );
    } else {
        let alpha = g.alpha as f64;
        out.par_chunks_mut(n.max(1))
            .enumerate()
            .for_each(|(i, row)| {
                for (j, o) in row.iter_mut().enumerate() {
                    let v = dot(k, |p| ad[i * a_rs + p * a_cs], |p| bd[p * b_rs + j * b_cs]);
                    let base = c_term.as_ref().map_or(0.0, |cv| cv[i * n + j]);
                    *o = E::from_f64(alpha * v + base);
                }
            });
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&[m, n]), out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
    }

    #[test]
    fn batch_broadcast_by_hand() {
        // A: [2, 1, 2] = [[[1, 2]], [[3, 4]]]; B: [2, 2] = [[1, 0], [0, 2]] (broadcast).
        let a = arr(&[2, 1, 2], vec![1., 2., 3., 4.]);
        let b = arr(&[2, 2], vec![1., 0., 0., 2.]);
        let y = matmul(&a, &b).unwrap();
        assert_eq!(y.shape(), &[2, 1, 2]);
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![1., 4., 3., 8.]);
        // A [1, 2, 2] against B [3, 2, 1]: output [3, 2, 1].
        let a = arr(&[1, 2, 2], vec![1., 2., 3., 4.]);
        let b = arr(&[3, 2, 1], vec![1., 0., 0., 1., 1., 1.]);
        let y = matmul(&a, &b).unwrap();
        assert_eq!(y.shape(), &[3, 2, 1]);
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![1., 3., 2., 4., 3., 7.]
        );
        // The same on i64 through the generic loop.
        let ai = a.mapv(|v| v as i64);
        let bi = b.mapv(|v| v as i64);
        let y = matmul(&ai, &bi).unwrap();
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![1, 3, 2, 4, 3, 7]
        );
    }

    #[test]
    fn one_d_operands() {
        let v = arr(&[2], vec![1., 2.]);
        let m = arr(&[2, 2], vec![1., 2., 3., 4.]);
        let y = matmul(&v, &m).unwrap();
        assert_eq!(y.shape(), &[2]);
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![7., 10.]);
        let y = matmul(&m, &v).unwrap();
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![5., 11.]);
        let y = matmul(&v, &v).unwrap();
        assert_eq!(y.shape(), &[] as &[usize]);
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![5.]);
        assert!(matmul(&arr(&[3], vec![0.; 3]), &m).is_err());
    }

    #[test]
    fn gemm_with_flags_and_bias() {
        // A' = [[1,2],[3,4]] stored transposed; B' = [[1,0],[0,1]] stored transposed.
        let a = arr(&[2, 2], vec![1., 3., 2., 4.]);
        let b = arr(&[2, 2], vec![1., 0., 0., 1.]);
        let c = arr(&[2], vec![10., 20.]);
        let g = GemmAttrs {
            alpha: 2.0,
            beta: 0.5,
            trans_a: true,
            trans_b: true,
        };
        let y = gemm_op(&a, &b, Some(&c), &g).unwrap();
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![7., 14., 11., 18.]
        );
        let y64 = gemm_op(
            &a.mapv(|v| v as f64),
            &b.mapv(|v| v as f64),
            Some(&c.mapv(|v| v as f64)),
            &g,
        )
        .unwrap();
        assert_eq!(
            y64.iter().copied().collect::<Vec<_>>(),
            vec![7., 14., 11., 18.]
        );
        let bad = arr(&[3], vec![0.; 3]);
        assert!(gemm_op(&a, &b, Some(&bad), &g).is_err());
    }
}
