//! Shape rules of BatchNormalization, Softmax and LRN: the output is shaped like the input.

use super::{input, norm_axis};
use crate::ir::{Fact, Op};
use anyhow::{bail, Result};

pub fn infer(op: &Op, inputs: &[Option<&Fact>], _n_outputs: usize) -> Result<Vec<Fact>> {
    let x = input(inputs, 0, "X")?;
    if !x.dtype.is_float() {
        bail!("{} needs a float input, got {}", op.name(), x.dtype);
    }
    match op {
        Op::BatchNorm { .. } => {
            if let Some(s) = &x.shape {
                let c = crate::kernels::norm::batch_norm_channels(s)?;
                for (i, name) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
                    let p = input(inputs, i, name)?;
                    if !p.dtype.is_float() {
                        bail!("BatchNormalization {name} must be float, got {}", p.dtype);
                    }
                    if let Some(ps) = &p.shape {
                        if ps.as_slice() != [c] {
                            bail!("BatchNormalization {name} must have shape [{c}], got {ps:?}");
                        }
                    }
                }
            }
        }
        Op::Lrn(_) => {
            if let Some(s) = &x.shape {
                if s.len() < 2 {
                    bail!("LRN input must have rank >= 2 ([N, C, ...]), got {s:?}");
                }
            }
        }
        Op::SoftmaxFlat { axis } => {
            if let Some(r) = x.rank() {
                crate::kernels::norm::flat_axis(*axis, r)?;
            }
        }
        Op::Softmax { axis } => {
            if let Some(r) = x.rank() {
                norm_axis(*axis, r)?;
            }
        }
        other => bail!("norm shape rule cannot handle {}", other.name()),
    }
    Ok(vec![Fact {
        value: None,
        ..x.clone()
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    #[test]
    fn batchnorm_checks_channels() {
        let x = Fact::new(DType::F32, vec![1, 3, 4, 4]);
        let p = Fact::new(DType::F32, vec![3]);
        let q = Fact::new(DType::F32, vec![2]);
        let ok = infer(
            &Op::BatchNorm { epsilon: 1e-5 },
            &[Some(&x), Some(&p), Some(&p), Some(&p), Some(&p)],
            1,
        );
        assert_eq!(ok.unwrap()[0].shape, Some(vec![1, 3, 4, 4]));
        let bad = infer(
            &Op::BatchNorm { epsilon: 1e-5 },
            &[Some(&x), Some(&p), Some(&q), Some(&p), Some(&p)],
            1,
        );
        assert!(bad.is_err());
        assert!(infer(&Op::Softmax { axis: 4 }, &[Some(&x)], 1).is_err());
    }
}
