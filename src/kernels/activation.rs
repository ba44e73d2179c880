//! Parametric activations (LeakyRelu, HardSigmoid, PRelu) and Dropout's deterministic forms.
//!
//! Float math as in `elementwise`: f32/f64 natively, f16 computed in f32 and rounded back.

use super::elementwise::{apply, Fun};
use super::input;
use crate::ir::Op;
use crate::tensor::{f16, Tensor};
use anyhow::{bail, Result};
use ndarray::{ArrayD, NdFloat};

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    match op {
        Op::LeakyRelu { alpha } => {
            let a = f64::from(*alpha);
            float_map(
                input(inputs, 0, "X")?,
                op,
                move |v: f64| {
                    if v < 0.0 {
                        v * a
                    } else {
                        v
                    }
                },
            )
        }
        Op::HardSigmoid { alpha, beta } => {
            let (a, b) = (*alpha, *beta);
            let x = input(inputs, 0, "X")?;
            Ok(vec![hard_sigmoid(x, a, b)?])
        }
        Op::PRelu => {
            let x = input(inputs, 0, "X")?;
            let slope = input(inputs, 1, "slope")?;
            Ok(vec![prelu(x, slope)?])
        }
        Op::Dropout => dropout(inputs, n_outputs),
        other => bail!("activation kernel cannot run {}", other.name()),
    }
}

/// A float-only elementwise map. LeakyRelu's one multiply is exact in f64 before rounding
/// back, so going through f64 gives the same bits as computing in the tensor's type.
fn float_map(x: &Tensor, op: &Op, f: impl Fn(f64) -> f64) -> Result<Vec<Tensor>> {
    Ok(vec![match x {
        Tensor::F32(a) => Tensor::F32(a.as_standard_layout().mapv(|v| f(f64::from(v)) as f32)),
        Tensor::F64(a) => Tensor::F64(a.as_standard_layout().mapv(&f)),
        Tensor::F16(a) => Tensor::F16(
            a.as_standard_layout()
                .mapv(|v| f16::from_f64(f(v.to_f64()))),
        ),
        other => bail!("{} needs a float tensor, got {}", op.name(), other.dtype()),
    }])
}

/// `clamp(alpha * x + beta, 0, 1)` in the tensor's own float type (the reference's rounding).
pub fn hard_sigmoid(x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    fn go<T: NdFloat>(a: &ArrayD<T>, alpha: T, beta: T) -> ArrayD<T> {
        a.as_standard_layout().mapv(|v| {
            let h = alpha * v + beta;
            // NaN fails both tests and stays NaN.
            if h < T::zero() {
                T::zero()
            } else if h > T::one() {
                T::one()
            } else {
                h
            }
        })
    }
    Ok(match x {
        Tensor::F32(a) => Tensor::F32(go(a, alpha, beta)),
        Tensor::F64(a) => Tensor::F64(go(a, f64::from(alpha), f64::from(beta))),
        Tensor::F16(a) => {
            let r = go(&a.mapv(|v| v.to_f32()), alpha, beta);
            Tensor::F16(r.mapv(f16::from_f32))
        }
        other => bail!("HardSigmoid needs a float tensor, got {}", other.dtype()),
    })
}

/// The slope broadcasts to X's shape (unidirectional: the output is shaped like X).
pub fn prelu(x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    let out = apply(Fun::PRelu, x, slope)?;
    if out.shape() != x.shape() {
        bail!(
            "slope shape {:?} does not broadcast to X's shape {:?}",
            slope.shape(),
            x.shape()
        );
    }
    Ok(out)
}

/// Output = X, mask all true: inference, or training with ratio 0 (the mask keeps
/// everything and the scale 1 / (1 - 0) is 1). Any other training ratio draws a random mask.
fn dropout(inputs: &[Option<&Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let scalar = |i: usize, what: &str| -> Result<Option<f64>> {
        match inputs.get(i).copied().flatten() {
            None => Ok(None),
            Some(t) => match t.to_f64_vec().as_slice() {
                [v] => Ok(Some(*v)),
                _ => bail!("{what} must be a scalar, got shape {:?}", t.shape()),
            },
        }
    };
    let ratio = scalar(1, "ratio")?.unwrap_or(0.5);
    let training = scalar(2, "training_mode")?.is_some_and(|v| v != 0.0);
    if training && ratio != 0.0 {
        bail!("training-mode Dropout with ratio {ratio} draws a random mask, which is not supported (only ratio 0 is deterministic)");
    }
    let mut out = vec![x.clone().into_standard_layout()];
    if n_outputs > 1 {
        out.push(Tensor::Bool(ArrayD::from_elem(x.shape(), true)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: Vec<f32>) -> Tensor {
        Tensor::from_vec(&[v.len()], v).unwrap()
    }

    #[test]
    fn leaky_hard_sigmoid_by_hand() {
        let x = t(vec![-2., 0., 3.]);
        let r = eval(&Op::LeakyRelu { alpha: 0.1 }, &[Some(&x)], 1).unwrap();
        assert_eq!(r[0], t(vec![-0.2, 0., 3.]));
        let op = Op::HardSigmoid {
            alpha: 0.5,
            beta: 0.6,
        };
        let r = eval(&op, &[Some(&x)], 1).unwrap();
        // 0.5 * x + 0.6 = -0.4, 0.6, 2.1 -> clamped.
        assert_eq!(r[0], t(vec![0., 0.6, 1.]));
    }

    #[test]
    fn prelu_per_channel() {
        // X [1, 2, 2], slope [2, 1]: channel 0 slope 0.5, channel 1 slope 2.
        let x = Tensor::from_vec(&[1, 2, 2], vec![-1f32, 1., -3., 4.]).unwrap();
        let s = Tensor::from_vec(&[2, 1], vec![0.5f32, 2.]).unwrap();
        let r = eval(&Op::PRelu, &[Some(&x), Some(&s)], 1).unwrap();
        assert_eq!(r[0].to_f64_vec(), vec![-0.5, 1., -6., 4.]);
        // A slope that would grow the output is refused.
        let big = Tensor::from_vec(&[2, 2, 2], vec![1f32; 8]).unwrap();
        assert!(eval(&Op::PRelu, &[Some(&x), Some(&big)], 1).is_err());
    }

    #[test]
    fn dropout_forms() {
        let x = t(vec![1., 2.]);
        let r = eval(&Op::Dropout, &[Some(&x)], 2).unwrap();
        assert_eq!(r[0], x);
        assert_eq!(r[1], Tensor::from_vec(&[2], vec![true, true]).unwrap());
        let zero = Tensor::scalar(0f32);
        let yes = Tensor::scalar(true);
        let r = eval(&Op::Dropout, &[Some(&x), Some(&zero), Some(&yes)], 1).unwrap();
        assert_eq!(r[0], x);
        let half = Tensor::scalar(0.5f32);
        assert!(eval(&Op::Dropout, &[Some(&x), Some(&half), Some(&yes)], 1).is_err());
    }
}
