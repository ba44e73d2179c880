//! Shape rule for Conv: X `[N, C, spatial...]`, W `[M, C/group, kernel...]`, optional B `[M]`
//! give Y `[N, M, out...]`, the output dims coming from the shared window geometry.

use super::input;
use crate::ir::{Fact, Op};
use anyhow::{bail, ensure, Result};

pub fn infer(op: &Op, inputs: &[Option<&Fact>], _n_outputs: usize) -> Result<Vec<Fact>> {
    let attrs = match op {
        Op::Conv(a) => a,
        Op::ConvTranspose(a) => return conv_transpose(a, inputs),
        _ => bail!("conv shape rule called for {}", op.name()),
    };
    let x = input(inputs, 0, "X")?;
    let w = input(inputs, 1, "W")?;
    let b = inputs.get(2).copied().flatten();
    ensure!(
        w.dtype == x.dtype,
        "weight dtype {} differs from input dtype {}",
        w.dtype,
        x.dtype
    );
    if let Some(b) = b {
        ensure!(
            b.dtype == x.dtype,
            "bias dtype {} differs from input dtype {}",
            b.dtype,
            x.dtype
        );
    }
    ensure!(attrs.group > 0, "group is 0");
    // Without both shapes the output channels or spatial dims are unknowable.
    let (Some(xs), Some(ws)) = (&x.shape, &w.shape) else {
        return Ok(vec![Fact::unknown_shape(x.dtype)]);
    };
    Ok(vec![Fact::new(
        x.dtype,
        conv_output_shape(xs, ws, b.and_then(|b| b.shape.as_deref()), attrs)?,
    )])
}

/// ConvTranspose: X `[N, C, spatial...]`, W `[C, M/group, kernel...]`, optional B `[M]`; the
/// geometry is the kernel's own, so the two agree on what is accepted.
fn conv_transpose(
    a: &crate::ir::ConvTransposeAttrs,
    inputs: &[Option<&Fact>],
) -> Result<Vec<Fact>> {
    let x = input(inputs, 0, "X")?;
    let w = input(inputs, 1, "W")?;
    let b = inputs.get(2).copied().flatten();
    for (f, what) in [(Some(w), "weight"), (b, "bias")] {
        if let Some(f) = f {
            ensure!(
                f.dtype == x.dtype,
                "{what} dtype {} differs from input dtype {}",
                f.dtype,
                x.dtype
            );
        }
    }
    let (Some(xs), Some(ws)) = (&x.shape, &w.shape) else {
        return Ok(vec![Fact::unknown_shape(x.dtype)]);
    };
    let bs = b.and_then(|b| b.shape.as_deref());
    let (shape, _) = crate::kernels::conv_transpose::conv_transpose_geometry(a, xs, ws, bs)?;
    Ok(vec![Fact::new(x.dtype, shape)])
}

/// The output shape of a Conv, checking every input dim. Shared with the kernel so the two
/// agree on what is accepted.
pub(crate) fn conv_output_shape(
    xs: &[usize],
    ws: &[usize],
    bs: Option<&[usize]>,
    attrs: &crate::ir::op::ConvAttrs,
) -> Result<Vec<usize>> {
    let group = attrs.group;
    ensure!(group > 0, "group is 0");
    ensure!(
        (3..=5).contains(&xs.len()),
        "input has rank {} ({xs:?}); Conv needs [N, C, spatial...] with 1 to 3 spatial dims",
        xs.len()
    );
    ensure!(
        ws.len() == xs.len(),
        "weight rank {} ({ws:?}) differs from input rank {} ({xs:?})",
        ws.len(),
        xs.len()
    );
    let (c, m) = (xs[1], ws[0]);
    ensure!(
        c % group == 0,
        "group {group} does not divide the input channels {c}"
    );
    ensure!(
        m % group == 0,
        "group {group} does not divide the output channels {m}"
    );
    ensure!(
        ws[1] * group == c,
        "input has {c} channels but weight {ws:?} expects {} (W dim 1 {} x group {group})",
        ws[1] * group,
        ws[1]
    );
    if let Some(bs) = bs {
        ensure!(
            bs.len() == 1 && bs[0] == m,
            "bias shape {bs:?} does not match the {m} output channels"
        );
    }
    let g = attrs.window.resolve(&xs[2..], &ws[2..], false)?;
    let mut out = vec![xs[0], m];
    out.extend(g.output);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::{ConvAttrs, Padding, Window};
    use crate::tensor::DType;

    fn conv(group: usize, strides: Vec<usize>, pads: Vec<usize>) -> Op {
        Op::Conv(ConvAttrs {
            window: Window {
                kernel_shape: None,
                strides,
                dilations: vec![],
                padding: Padding::Explicit(pads),
            },
            group,
        })
    }

    fn f(s: &[usize]) -> Fact {
        Fact::new(DType::F32, s.to_vec())
    }

    #[test]
    fn shapes_and_errors() {
        let x = f(&[1, 3, 224, 224]);
        let w = f(&[64, 3, 7, 7]);
        let out = infer(
            &conv(1, vec![2, 2], vec![3, 3, 3, 3]),
            &[Some(&x), Some(&w)],
            1,
        )
        .unwrap();
        assert_eq!(out[0].shape, Some(vec![1, 64, 112, 112]));
        // Depthwise.
        let x = f(&[2, 8, 5]);
        let w = f(&[8, 1, 3]);
        let out = infer(&conv(8, vec![], vec![]), &[Some(&x), Some(&w)], 1).unwrap();
        assert_eq!(out[0].shape, Some(vec![2, 8, 3]));
        // Channel mismatch.
        let w = f(&[8, 2, 3]);
        let e = infer(&conv(1, vec![], vec![]), &[Some(&x), Some(&w)], 1).unwrap_err();
        assert!(e.to_string().contains("channels"), "{e}");
        // Bias length.
        let w = f(&[8, 8, 3]);
        let b = f(&[4]);
        let e = infer(&conv(1, vec![], vec![]), &[Some(&x), Some(&w), Some(&b)], 1).unwrap_err();
        assert!(e.to_string().contains("bias"), "{e}");
        // Unknown input shape.
        let x = Fact::unknown_shape(DType::F32);
        let out = infer(&conv(1, vec![], vec![]), &[Some(&x), Some(&w)], 1).unwrap();
        assert_eq!(out[0].shape, None);
    }
}
