//! Shape rules of ReduceMean and ReduceSum.

use super::input;
use crate::ir::{Fact, Op};
use crate::kernels::reduce::reduce_plan;
use anyhow::{bail, Result};

pub fn infer(op: &Op, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
    let attrs = match op {
        Op::ReduceMean(a) | Op::ReduceSum(a) => a,
        other => bail!("reduce shape rule cannot handle {}", other.name()),
    };
    let x = input(inputs, 0, "data")?;
    if x.dtype == crate::tensor::DType::Bool {
        bail!("{} is not defined on bool tensors", op.name());
    }
    let Some(shape) = &x.shape else {
        return Ok(vec![Fact::unknown_shape(x.dtype)]);
    };
    // Axes from the second input matter only when the attribute does not give them; an
    // unknown axes value leaves the output shape unknown (even its rank, with keepdims off).
    let axes_input = match (&attrs.axes, inputs.get(1).copied().flatten()) {
        (None, Some(f)) => match &f.value {
            Some(v) => Some(v.to_i64_vec()?),
            None => return Ok(vec![Fact::unknown_shape(x.dtype)]),
        },
        _ => None,
    };
    let plan = reduce_plan(shape, attrs, axes_input.as_deref())?;
    let fact = Fact::new(x.dtype, plan.out_shape);
    super::layout::fold(op, inputs, n_outputs, vec![fact])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ReduceAttrs;
    use crate::tensor::{DType, Tensor};

    #[test]
    fn reduce_facts() {
        let x = Fact::new(DType::F32, vec![2, 3, 4]);
        let a = ReduceAttrs {
            axes: None,
            keepdims: true,
            noop_with_empty_axes: false,
        };
        let axes = Fact::of_tensor(&Tensor::from_vec(&[1], vec![-2i64]).unwrap());
        let r = infer(&Op::ReduceMean(a.clone()), &[Some(&x), Some(&axes)], 1).unwrap();
        assert_eq!(r[0].shape, Some(vec![2, 1, 4]));
        let unknown = Fact::new(DType::I64, vec![1]);
        let r = infer(&Op::ReduceMean(a.clone()), &[Some(&x), Some(&unknown)], 1).unwrap();
        assert_eq!(r[0].shape, None);
        let a = ReduceAttrs {
            keepdims: false,
            ..a
        };
        let r = infer(&Op::ReduceSum(a), &[Some(&x)], 1).unwrap();
        assert_eq!(r[0].shape, Some(vec![]));
    }
}
