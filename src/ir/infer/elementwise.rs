//! Shape rules of the elementwise ops: Unary, Binary (numpy broadcasting), Clip, Cast.
//! Inputs whose values are all known are folded, so shape arithmetic (Shape -> Mul -> ...)
//! stays static.

use super::input;
use crate::ir::{BinaryOp, Fact, Op};
use crate::kernels::elementwise as k;
use crate::tensor::DType;
use anyhow::{bail, Result};

pub fn infer(op: &Op, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
    let x = input(inputs, 0, "X")?;
    let fact = match op {
        Op::Unary(u) => {
            if !k::unary_supports(*u, x.dtype) {
                bail!("{u:?} is not defined on {} tensors", x.dtype);
            }
            Fact {
                value: None,
                ..x.clone()
            }
        }
        Op::Binary(b) => {
            let y = input(inputs, 1, "B")?;
            if x.dtype == DType::Bool {
                bail!("{b:?} is not defined on bool tensors");
            }
            // Pow's exponent may have its own type; every other op needs one dtype.
            if *b != BinaryOp::Pow && x.dtype != y.dtype {
                bail!(
                    "{b:?} needs matching dtypes, got {} and {}",
                    x.dtype,
                    y.dtype
                );
            }
            match (&x.shape, &y.shape) {
                (Some(a), Some(b)) => Fact::new(x.dtype, k::broadcast_shapes(a, b)?),
                _ => Fact::unknown_shape(x.dtype),
            }
        }
        Op::Clip { .. } => {
            for (i, name) in [(1, "min"), (2, "max")] {
                if let Some(b) = inputs.get(i).copied().flatten() {
                    if b.dtype != x.dtype {
                        bail!("Clip {name} has dtype {}, X has {}", b.dtype, x.dtype);
                    }
                    if let Some(s) = &b.shape {
                        if s.iter().product::<usize>() != 1 {
                            bail!("Clip {name} must be a scalar, got shape {s:?}");
                        }
                    }
                }
            }
            Fact {
                value: None,
                ..x.clone()
            }
        }
        Op::Cast { to } => Fact {
            dtype: *to,
            shape: x.shape.clone(),
            value: None,
        },
        other => bail!("elementwise shape rule cannot handle {}", other.name()),
    };
    super::layout::fold(op, inputs, n_outputs, vec![fact])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;
    use std::sync::Arc;

    #[test]
    fn binary_broadcast_fact_and_fold() {
        let a = Fact::new(DType::F32, vec![2, 1, 3]);
        let b = Fact::new(DType::F32, vec![4, 1]);
        let r = infer(&Op::Binary(BinaryOp::Add), &[Some(&a), Some(&b)], 1).unwrap();
        assert_eq!(r[0].shape, Some(vec![2, 4, 3]));
        let c = Fact::new(DType::F32, vec![3, 2]);
        assert!(infer(&Op::Binary(BinaryOp::Add), &[Some(&a), Some(&c)], 1).is_err());
        let i = Fact::new(DType::I64, vec![3]);
        assert!(infer(&Op::Binary(BinaryOp::Add), &[Some(&c), Some(&i)], 1).is_err());
        // Known values fold.
        let v = Fact::of_tensor(&Tensor::from_vec(&[2], vec![6i64, 9]).unwrap());
        let two = Fact::of_tensor(&Tensor::scalar(2i64));
        let r = infer(&Op::Binary(BinaryOp::Div), &[Some(&v), Some(&two)], 1).unwrap();
        assert_eq!(
            r[0].value,
            Some(Arc::new(Tensor::from_vec(&[2], vec![3i64, 4]).unwrap()))
        );
    }
}
