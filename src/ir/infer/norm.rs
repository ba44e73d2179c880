//! Shape rules of BatchNormalization, Softmax and LRN: the output is shaped like the input.

use super::{input, norm_axis};
use crate::ir::{Fact, Op};
use anyhow::{bail, Result};

pub fn infer(op: &Op, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
    let x = input(inputs, 0, "X")?;
    if !x.dtype.is_float() {
        bail!("{} needs a float input, got {}", op.name(), x.dtype);
    }
    // Training BatchNorm: Y, then the running mean and var, each shaped and typed like the
    // mean and var inputs they update.
    let max_outputs = if matches!(op, Op::BatchNormTraining { .. }) {
        3
    } else {
        1
    };
    if n_outputs > max_outputs {
        bail!(
            "{} has at most {max_outputs} output(s), the node asks for {n_outputs}",
            op.name()
        );
    }
    match op {
        Op::BatchNorm { .. } | Op::BatchNormTraining { .. } => {
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
    let mut out = vec![Fact {
        value: None,
        ..x.clone()
    }];
    for (i, name) in [(3, "mean"), (4, "var")]
        .into_iter()
        .take(n_outputs.saturating_sub(1))
    {
        let p = input(inputs, i, name)?;
        out.push(Fact {
            value: None,
            ..p.clone()
        });
    }
    Ok(out)
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
        let train = Op::BatchNormTraining {
            epsilon: 1e-5,
            momentum: 0.9,
        };
        let all = [Some(&x), Some(&p), Some(&p), Some(&p), Some(&p)];
        let r = infer(&train, &all, 3).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].shape, Some(vec![1, 3, 4, 4]));
        assert_eq!(r[2].shape, Some(vec![3]));
        assert!(infer(&train, &all, 4).is_err());
        assert!(infer(&Op::BatchNorm { epsilon: 1e-5 }, &all, 2).is_err());
        assert!(infer(&Op::Softmax { axis: 4 }, &[Some(&x)], 1).is_err());
    }
}
