//! Shape rules for MaxPool, AveragePool and the global pools: channels and batch pass
//! through, spatial dims come from the window geometry (or become 1 for global pools).

use super::input;
use crate::ir::{Fact, Op};
use crate::tensor::DType;
use anyhow::{bail, ensure, Result};

pub fn infer(op: &Op, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
    let x = input(inputs, 0, "X")?;
    // MaxPool may have a second output, Indices (int64, shaped like Y); the others have one.
    let max_outputs = if matches!(op, Op::MaxPool(_)) { 2 } else { 1 };
    if n_outputs > max_outputs {
        bail!(
            "{} has at most {max_outputs} output(s), the node asks for {n_outputs}",
            op.name()
        );
    }
    let shape = match &x.shape {
        Some(xs) => Some(pool_output_shape(op, xs)?),
        None => None,
    };
    let fact = |dtype| match &shape {
        Some(s) => Fact::new(dtype, s.clone()),
        None => Fact::unknown_shape(dtype),
    };
    let mut out = vec![fact(x.dtype)];
    if n_outputs > 1 {
        out.push(fact(DType::I64));
    }
    Ok(out)
}

/// Output shape and resolved window of MaxPool/AveragePool on an input of shape `xs`: the one
/// place that says which inputs a windowed pool accepts; the kernel calls it too.
pub(crate) fn window_pool_geometry(
    p: &crate::ir::PoolAttrs,
    xs: &[usize],
) -> Result<(Vec<usize>, crate::ir::window::Geometry)> {
    ensure!(
        (3..=5).contains(&xs.len()),
        "input has rank {} ({xs:?}); pooling needs [N, C, spatial...] with 1 to 3 spatial dims",
        xs.len()
    );
    let Some(ks) = &p.window.kernel_shape else {
        bail!("kernel_shape is required for pooling")
    };
    let g = p.window.resolve(&xs[2..], ks, p.ceil_mode)?;
    let mut out = xs[..2].to_vec();
    out.extend(&g.output);
    Ok((out, g))
}

/// The output shape of a pooling op on an input of shape `xs`. Shared with the kernel.
pub(crate) fn pool_output_shape(op: &Op, xs: &[usize]) -> Result<Vec<usize>> {
    match op {
        Op::MaxPool(p) | Op::AveragePool(p) => Ok(window_pool_geometry(p, xs)?.0),
        Op::GlobalAveragePool | Op::GlobalMaxPool => {
            ensure!(
                xs.len() >= 2,
                "input has rank {} ({xs:?}); global pooling needs [N, C, spatial...]",
                xs.len()
            );
            let mut out = xs.to_vec();
            out[2..].fill(1);
            Ok(out)
        }
        other => bail!("pool shape rule called for {}", other.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::{Padding, PoolAttrs, Window};

    fn pool(ks: Option<Vec<usize>>, ceil_mode: bool) -> PoolAttrs {
        PoolAttrs {
            window: Window {
                kernel_shape: ks,
                strides: vec![2, 2],
                dilations: vec![],
                padding: Padding::Explicit(vec![]),
            },
            ceil_mode,
            count_include_pad: false,
            column_major_indices: false,
        }
    }

    #[test]
    fn shapes_and_errors() {
        let x = Fact::new(DType::F32, vec![1, 64, 112, 112]);
        let op = Op::MaxPool(pool(Some(vec![3, 3]), true));
        assert_eq!(
            infer(&op, &[Some(&x)], 1).unwrap()[0].shape,
            Some(vec![1, 64, 56, 56])
        );
        let r = infer(&op, &[Some(&x)], 2).unwrap();
        assert_eq!(r[1].dtype, DType::I64);
        assert_eq!(r[1].shape, Some(vec![1, 64, 56, 56]));
        assert!(infer(&op, &[Some(&x)], 3).is_err());
        let avg = Op::AveragePool(pool(Some(vec![3, 3]), true));
        assert!(infer(&avg, &[Some(&x)], 2).is_err());
        let op = Op::AveragePool(pool(None, false));
        assert!(infer(&op, &[Some(&x)], 1).is_err());
        assert_eq!(
            infer(&Op::GlobalAveragePool, &[Some(&x)], 1).unwrap()[0].shape,
            Some(vec![1, 64, 1, 1])
        );
    }
}
