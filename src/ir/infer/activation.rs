//! Shape rules of LeakyRelu, HardSigmoid, PRelu, Dropout and the variadic Sum/Mean/Max/Min.

use super::input;
use crate::ir::{Fact, Op, VariadicOp};
use crate::kernels::elementwise::broadcast_shapes;
use crate::tensor::DType;
use anyhow::{anyhow, bail, Result};

pub fn infer(op: &Op, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
    let x = input(inputs, 0, "X")?;
    let like_x = Fact {
        value: None,
        ..x.clone()
    };
    let facts = match op {
        Op::LeakyRelu { .. } | Op::HardSigmoid { .. } => {
            if !x.dtype.is_float() {
                bail!("{} needs a float input, got {}", op.name(), x.dtype);
            }
            vec![like_x]
        }
        Op::PRelu => {
            let s = input(inputs, 1, "slope")?;
            if x.dtype == DType::Bool || s.dtype != x.dtype {
                bail!(
                    "PRelu needs X and slope of one numeric dtype, got {} and {}",
                    x.dtype,
                    s.dtype
                );
            }
            if let (Some(xs), Some(ss)) = (&x.shape, &s.shape) {
                if broadcast_shapes(xs, ss)? != *xs {
                    bail!("slope shape {ss:?} does not broadcast to X's shape {xs:?}");
                }
            }
            vec![like_x]
        }
        Op::Dropout => {
            let mut v = vec![like_x];
            if n_outputs > 1 {
                v.push(Fact {
                    dtype: DType::Bool,
                    shape: x.shape.clone(),
                    value: None,
                });
            }
            v
        }
        Op::Variadic(v) => {
            if x.dtype == DType::Bool || (*v == VariadicOp::Mean && !x.dtype.is_float()) {
                bail!("{} is not defined on {} tensors", op.name(), x.dtype);
            }
            let mut shape = x.shape.clone();
            for (i, f) in inputs.iter().enumerate().skip(1) {
                let f = f.ok_or_else(|| anyhow!("input {i} is absent"))?;
                if f.dtype != x.dtype {
                    bail!(
                        "{} needs one dtype, input {i} is {} and input 0 {}",
                        op.name(),
                        f.dtype,
                        x.dtype
                    );
                }
                shape = match (&shape, &f.shape) {
                    (Some(a), Some(b)) => Some(broadcast_shapes(a, b)?),
                    _ => None,
                };
            }
            vec![Fact {
                dtype: x.dtype,
                shape,
                value: None,
            }]
        }
        other => bail!("activation shape rule cannot handle {}", other.name()),
    };
    // Variadic ops on known values (shape arithmetic: Max of dims ...) fold.
    if matches!(op, Op::Variadic(_)) {
        return super::layout::fold(op, inputs, n_outputs, facts);
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variadic_prelu_dropout_facts() {
        let a = Fact::new(DType::F32, vec![2, 1]);
        let b = Fact::new(DType::F32, vec![3]);
        let r = infer(&Op::Variadic(VariadicOp::Max), &[Some(&a), Some(&b)], 1).unwrap();
        assert_eq!(r[0].shape, Some(vec![2, 3]));
        let i = Fact::new(DType::I64, vec![3]);
        assert!(infer(&Op::Variadic(VariadicOp::Sum), &[Some(&a), Some(&i)], 1).is_err());
        assert!(infer(&Op::Variadic(VariadicOp::Mean), &[Some(&i)], 1).is_err());
        // The slope may not grow X.
        assert!(infer(&Op::PRelu, &[Some(&b), Some(&a)], 1).is_err());
        let r = infer(&Op::Dropout, &[Some(&a)], 2).unwrap();
        assert_eq!(r[1].dtype, DType::Bool);
        assert_eq!(r[1].shape, Some(vec![2, 1]));
    }
}
