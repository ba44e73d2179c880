//! Shape rules of ConstantOfShape and Expand: the output shape is the value of an input, so
//! it is known only when that value is (a constant, or folded shape arithmetic).

use super::input;
use crate::ir::{Fact, Op};
use crate::kernels::elementwise::broadcast_shapes;
use crate::kernels::fill::shape_input;
use crate::tensor::DType;
use anyhow::{bail, Result};

pub fn infer(op: &Op, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
    let (dtype, shape_at) = match op {
        Op::ConstantOfShape { value } => (value.dtype(), 0),
        Op::Expand => (input(inputs, 0, "input")?.dtype, 1),
        other => bail!("fill shape rule cannot handle {}", other.name()),
    };
    let s = input(inputs, shape_at, "shape")?;
    if s.dtype != DType::I64 {
        bail!("the shape input must be i64, got {}", s.dtype);
    }
    let dims = match &s.value {
        Some(v) => Some(shape_input(v)?),
        None => None,
    };
    let shape = match (op, dims) {
        (Op::Expand, Some(d)) => input(inputs, 0, "input")?
            .shape
            .as_ref()
            .map(|xs| broadcast_shapes(xs, &d))
            .transpose()?,
        (_, d) => d,
    };
    let fact = Fact {
        dtype,
        shape,
        value: None,
    };
    super::layout::fold(op, inputs, n_outputs, vec![fact])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    #[test]
    fn shapes_from_values() {
        let shape = Fact::of_tensor(&Tensor::from_vec(&[2], vec![2i64, 3]).unwrap());
        let op = Op::ConstantOfShape {
            value: Tensor::from_vec(&[1], vec![1.5f32]).unwrap(),
        };
        let r = infer(&op, &[Some(&shape)], 1).unwrap();
        assert_eq!(r[0].shape, Some(vec![2, 3]));
        assert!(r[0].value.is_some(), "small results fold");
        let unknown = Fact::new(DType::I64, vec![2]);
        assert_eq!(infer(&op, &[Some(&unknown)], 1).unwrap()[0].shape, None);
        let x = Fact::new(DType::F32, vec![4, 1, 1]);
        let r = infer(&Op::Expand, &[Some(&x), Some(&shape)], 1).unwrap();
        assert_eq!(r[0].shape, Some(vec![4, 2, 3]));
        let bad = Fact::new(DType::F32, vec![3, 1]);
        assert!(infer(&Op::Expand, &[Some(&bad), Some(&shape)], 1).is_err());
    }
}
