//! ConstantOfShape and Expand: a tensor of a shape given at run time, filled from one value
//! or by broadcasting the data.

use super::elementwise::broadcast_shapes;
use super::input;
use crate::ir::Op;
use crate::tensor::{limits, Elem, Tensor};
use anyhow::{anyhow, bail, Result};
use ndarray::{ArrayD, IxDyn};

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], _n_outputs: usize) -> Result<Vec<Tensor>> {
    match op {
        Op::ConstantOfShape { value } => {
            let shape = shape_input(input(inputs, 0, "input")?)?;
            Ok(vec![constant_of_shape(value, &shape)?])
        }
        Op::Expand => {
            let x = input(inputs, 0, "input")?;
            let shape = shape_input(input(inputs, 1, "shape")?)?;
            Ok(vec![expand(x, &shape)?])
        }
        other => bail!("fill kernel cannot run {}", other.name()),
    }
}

/// A 1-D integer tensor of dims; negative dims are refused by `limits`.
pub(crate) fn shape_input(t: &Tensor) -> Result<Vec<usize>> {
    if t.rank() != 1 {
        bail!("the shape input must be 1-D, got shape {:?}", t.shape());
    }
    limits::dims_from_i64(&t.to_i64_vec()?)
}

pub fn constant_of_shape(value: &Tensor, shape: &[usize]) -> Result<Tensor> {
    fn go<T: Elem>(a: &ArrayD<T>, shape: &[usize]) -> Result<Tensor> {
        let v = *a
            .iter()
            .next()
            .ok_or_else(|| anyhow!("the value attribute holds no element"))?;
        Ok(T::wrap(ArrayD::from_elem(IxDyn(shape), v)))
    }
    limits::check_alloc(shape, value.dtype())?;
    crate::with_tensor!(value, a => go(a, shape))
}

/// Output shape: `x`'s and `shape` broadcast together (either side may have the 1s).
pub fn expand(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let out = broadcast_shapes(x.shape(), shape)?;
    limits::check_alloc(&out, x.dtype())?;
    Ok(crate::map_tensor!(x, a => a
        .broadcast(IxDyn(&out))
        .ok_or_else(|| anyhow!("cannot broadcast {:?} to {out:?}", a.shape()))?
        .as_standard_layout()
        .into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_expand() {
        let v = Tensor::from_vec(&[1], vec![7i32]).unwrap();
        let r = constant_of_shape(&v, &[2, 3]).unwrap();
        assert_eq!(r, Tensor::from_vec(&[2, 3], vec![7i32; 6]).unwrap());
        assert_eq!(constant_of_shape(&v, &[]).unwrap(), Tensor::scalar(7i32));
        let x = Tensor::from_vec(&[3, 1], vec![1f32, 2., 3.]).unwrap();
        let r = expand(&x, &[2, 1, 2]).unwrap();
        assert_eq!(r.shape(), &[2, 3, 2]);
        assert_eq!(
            r.to_f64_vec(),
            vec![1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.]
        );
        assert!(expand(&x, &[2, 2]).is_err());
        let neg = Tensor::from_vec(&[1], vec![-1i64]).unwrap();
        assert!(shape_input(&neg).is_err());
    }
}
