//! Sum, Mean, Max, Min over any number of inputs with numpy broadcasting: a left fold of the
//! pairwise broadcast step, which gives the multi-way broadcast shape and a fixed order of
//! accumulation (input 0, then 1, ...), as the ONNX reference computes it.

use super::elementwise::{apply, Fun};
use crate::ir::{BinaryOp, Op, VariadicOp};
use crate::tensor::{DType, Tensor};
use anyhow::{anyhow, bail, Result};

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], _n_outputs: usize) -> Result<Vec<Tensor>> {
    let Op::Variadic(v) = op else {
        bail!("variadic kernel cannot run {}", op.name())
    };
    let ts = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| anyhow!("input {i} is absent")))
        .collect::<Result<Vec<_>>>()?;
    Ok(vec![variadic(*v, &ts)?])
}

pub fn variadic(v: VariadicOp, ts: &[&Tensor]) -> Result<Tensor> {
    let Some(first) = ts.first() else {
        bail!("{v:?} needs at least one input")
    };
    let dtype = first.dtype();
    if dtype == DType::Bool || (v == VariadicOp::Mean && !dtype.is_float()) {
        bail!("{v:?} is not defined on {dtype} tensors");
    }
    let fun = match v {
        VariadicOp::Sum | VariadicOp::Mean => Fun::Bin(BinaryOp::Add),
        VariadicOp::Max => Fun::Max,
        VariadicOp::Min => Fun::Min,
    };
    let mut acc = (*first).clone().into_standard_layout();
    for t in &ts[1..] {
        acc = apply(fun, &acc, t)?;
    }
    if v == VariadicOp::Mean {
        let n = Tensor::scalar(ts.len() as f64).cast(dtype);
        acc = apply(Fun::Bin(BinaryOp::Div), &acc, &n)?;
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_inputs_broadcast_by_hand() {
        let a = Tensor::from_vec(&[2, 1], vec![1f32, 5.]).unwrap();
        let b = Tensor::from_vec(&[3], vec![2f32, 0., 9.]).unwrap();
        let c = Tensor::scalar(3f32);
        let r = variadic(VariadicOp::Sum, &[&a, &b, &c]).unwrap();
        assert_eq!(r.shape(), &[2, 3]);
        assert_eq!(r.to_f64_vec(), vec![6., 4., 13., 10., 8., 17.]);
        let r = variadic(VariadicOp::Max, &[&a, &b, &c]).unwrap();
        assert_eq!(r.to_f64_vec(), vec![3., 3., 9., 5., 5., 9.]);
        let r = variadic(VariadicOp::Min, &[&a, &b, &c]).unwrap();
        assert_eq!(r.to_f64_vec(), vec![1., 0., 1., 2., 0., 3.]);
        let r = variadic(VariadicOp::Mean, &[&a, &b, &c]).unwrap();
        assert_eq!(
            r.to_f64_vec(),
            [2., 4. / 3., 13. / 3., 10. / 3., 8. / 3., 17. / 3.]
                .iter()
                .map(|&v: &f64| v as f32 as f64)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn ints_nan_and_refusals() {
        let a = Tensor::from_vec(&[2], vec![200u8, 3]).unwrap();
        let b = Tensor::from_vec(&[2], vec![100u8, 7]).unwrap();
        assert_eq!(
            variadic(VariadicOp::Max, &[&a, &b]).unwrap(),
            Tensor::from_vec(&[2], vec![200u8, 7]).unwrap()
        );
        let n = Tensor::from_vec(&[2], vec![f32::NAN, 1.]).unwrap();
        let m = Tensor::from_vec(&[2], vec![0f32, f32::NAN]).unwrap();
        let r = variadic(VariadicOp::Min, &[&n, &m]).unwrap().to_f64_vec();
        assert!(r[0].is_nan() && r[1].is_nan());
        assert!(variadic(VariadicOp::Mean, &[&a]).is_err());
        assert!(variadic(VariadicOp::Sum, &[]).is_err());
    }
}
