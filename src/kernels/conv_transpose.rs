//! ConvTranspose (f32): a direct scatter loop.
//!
//! Each input pixel adds `x * w[tap]` at output position `i * stride + k * dilation - pad`.
//! The loop runs per output plane `(n, m)` and, inside, over input channels, input pixels and
//! kernel taps in a fixed order, so every output element is accumulated in the same order for
//! any thread count. Pads may be negative (an `output_shape` larger than the natural size):
//! the position arithmetic is signed and out-of-range positions are skipped.

use super::input;
use crate::ir::window::per_axis;
use crate::ir::{ConvTransposeAttrs, Op, Padding};
use crate::tensor::{DType, Tensor};
use anyhow::{bail, ensure, Result};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// A ConvTranspose resolved against its input shapes, per spatial axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub input: Vec<usize>,
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Cropped from the start of the full output; negative means zeros added in front.
    pub pads_begin: Vec<i64>,
    pub output: Vec<usize>,
}

fn to_i64(v: usize, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| anyhow::anyhow!("{what} {v} is too large"))
}

/// Output shape `[N, M, out...]` and geometry; the one place that says which inputs a
/// ConvTranspose accepts (the shape rule calls it too).
pub(crate) fn conv_transpose_geometry(
    a: &ConvTransposeAttrs,
    xs: &[usize],
    ws: &[usize],
    bs: Option<&[usize]>,
) -> Result<(Vec<usize>, Geometry)> {
    ensure!(
        (3..=5).contains(&xs.len()),
        "input has rank {} ({xs:?}); ConvTranspose needs [N, C, spatial...] with 1 to 3 spatial dims",
        xs.len()
    );
    ensure!(
        ws.len() == xs.len(),
        "weight rank {} ({ws:?}) differs from input rank {} ({xs:?})",
        ws.len(),
        xs.len()
    );
    let group = a.group;
    ensure!(group > 0, "group is 0");
    let c = xs[1];
    ensure!(
        ws[0] == c,
        "input has {c} channels but the weight {ws:?} has {} (W is [C, M/group, kernel...])",
        ws[0]
    );
    ensure!(
        c.is_multiple_of(group),
        "group {group} does not divide the input channels {c}"
    );
    let m = ws[1]
        .checked_mul(group)
        .ok_or_else(|| anyhow::anyhow!("output channels overflow"))?;
    if let Some(bs) = bs {
        ensure!(
            bs.len() == 1 && bs[0] == m,
            "bias shape {bs:?} does not match the {m} output channels"
        );
    }
    let n = xs.len() - 2;
    let input = xs[2..].to_vec();
    let kernel = ws[2..].to_vec();
    if let Some(ks) = &a.window.kernel_shape {
        ensure!(
            ks.as_slice() == kernel,
            "kernel_shape {ks:?} does not match the weight's spatial dims {kernel:?}"
        );
    }
    ensure!(
        kernel.iter().all(|&k| k > 0),
        "kernel {kernel:?} has a zero dim"
    );
    ensure!(
        input.iter().all(|&i| i > 0),
        "input spatial dims {input:?} have a zero"
    );
    let strides = per_axis(&a.window.strides, n, "strides")?;
    let dilations = per_axis(&a.window.dilations, n, "dilations")?;
    let out_pad = if a.output_padding.is_empty() {
        vec![0; n]
    } else {
        ensure!(
            a.output_padding.len() == n,
            "output_padding has {} values for {n} spatial axes",
            a.output_padding.len()
        );
        a.output_padding.clone()
    };
    // The full (uncropped) output: stride * (in - 1) + (k - 1) * d + 1 + output_padding.
    let mut full = Vec::with_capacity(n);
    for i in 0..n {
        let f = (|| {
            strides[i]
                .checked_mul(input[i] - 1)?
                .checked_add((kernel[i] - 1).checked_mul(dilations[i])?)?
                .checked_add(1)?
                .checked_add(out_pad[i])
        })()
        .ok_or_else(|| anyhow::anyhow!("output size overflows on spatial axis {i}"))?;
        full.push(to_i64(f, "output size")?);
    }
    // Begin pads from a total: SAME_UPPER puts the odd one at the end, the others (NOTSET
    // with output_shape, SAME_LOWER) at the beginning, as the ONNX reference does.
    let split = |total: i64| -> i64 {
        if a.window.padding == Padding::SameUpper {
            total.div_euclid(2)
        } else {
            total - total.div_euclid(2)
        }
    };
    let (pads_begin, output): (Vec<i64>, Vec<usize>) = if let Some(os) = &a.output_shape {
        // Spatial sizes; a full [N, C, spatial...] list is accepted too (older exporters).
        let os = if os.len() == n + 2 { &os[2..] } else { &os[..] };
        ensure!(
            os.len() == n,
            "output_shape {os:?} has {} values for {n} spatial axes",
            os.len()
        );
        let mut pb = Vec::with_capacity(n);
        for i in 0..n {
            pb.push(split(full[i] - to_i64(os[i], "output_shape")?));
        }
        (pb, os.to_vec())
    } else {
        match &a.window.padding {
            Padding::Valid => (vec![0; n], full.iter().map(|&f| f as usize).collect()),
            Padding::Explicit(p) if p.is_empty() => {
                (vec![0; n], full.iter().map(|&f| f as usize).collect())
            }
            Padding::Explicit(p) => {
                ensure!(
                    p.len() == 2 * n,
                    "pads has {} values, expected {}",
                    p.len(),
                    2 * n
                );
                let mut pb = Vec::with_capacity(n);
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    let (b, e) = (to_i64(p[i], "pad")?, to_i64(p[n + i], "pad")?);
                    let o = full[i] - b - e;
                    ensure!(
                        o > 0,
                        "pads {p:?} crop all of spatial axis {i} (full size {})",
                        full[i]
                    );
                    pb.push(b);
                    out.push(o as usize);
                }
                (pb, out)
            }
            Padding::SameUpper | Padding::SameLower => {
                let mut pb = Vec::with_capacity(n);
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    let o = input[i]
                        .checked_mul(strides[i])
                        .ok_or_else(|| anyhow::anyhow!("output size overflows"))?;
                    pb.push(split(full[i] - to_i64(o, "output size")?));
                    out.push(o);
                }
                (pb, out)
            }
        }
    };
    let mut shape = vec![xs[0], m];
    shape.extend(&output);
    Ok((
        shape,
        Geometry {
            input,
            kernel,
            strides,
            dilations,
            pads_begin,
            output,
        },
    ))
}

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], _n_outputs: usize) -> Result<Vec<Tensor>> {
    let Op::ConvTranspose(a) = op else {
        bail!("conv_transpose kernel called for {}", op.name())
    };
    let x = input(inputs, 0, "X")?;
    let w = input(inputs, 1, "W")?;
    let b = inputs.get(2).copied().flatten();
    for (t, what) in [(Some(x), "X"), (Some(w), "W"), (b, "B")] {
        if let Some(t) = t {
            if t.dtype() != DType::F32 {
                bail!("ConvTranspose runs on f32 only; {what} is {}", t.dtype());
            }
        }
    }
    let b = match b {
        Some(b) => Some(b.as_f32()?),
        None => None,
    };
    Ok(vec![Tensor::F32(conv_transpose(
        x.as_f32()?,
        w.as_f32()?,
        b,
        a,
    )?)])
}

fn lift<T: Copy>(v: &[T], fill: T) -> [T; 3] {
    let mut out = [fill; 3];
    out[3 - v.len()..].copy_from_slice(v);
    out
}

pub fn conv_transpose(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    b: Option<&ArrayD<f32>>,
    a: &ConvTransposeAttrs,
) -> Result<ArrayD<f32>> {
    let (shape, g) = conv_transpose_geometry(a, x.shape(), w.shape(), b.map(|b| b.shape()))?;
    crate::tensor::limits::check_alloc(&shape, DType::F32)?;
    let (c, m) = (x.shape()[1], shape[1]);
    let (cg, mg) = (c / a.group, m / a.group);
    let input = lift(&g.input, 1);
    let kernel = lift(&g.kernel, 1);
    let strides = lift(&g.strides, 1);
    let dil = lift(&g.dilations, 1);
    let pb = lift(&g.pads_begin, 0);
    let output = lift(&g.output, 1);
    let in_plane: usize = input.iter().product();
    let k_plane: usize = kernel.iter().product();
    let out_plane: usize = output.iter().product();

    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let xd = x.as_slice().expect("standard layout");
    let wd = w.as_slice().expect("standard layout");
    let bias: Option<Vec<f32>> = b.map(|b| b.iter().copied().collect());
    let mut out = vec![0f32; shape.iter().product()];
    if out_plane > 0 {
        out.par_chunks_mut(out_plane)
            .enumerate()
            .for_each(|(plane, dst)| {
                let (nb, oc) = (plane / m, plane % m);
                let (grp, ml) = (oc / mg, oc % mg);
                if let Some(bias) = &bias {
                    dst.fill(bias[oc]);
                }
                for ic in grp * cg..(grp + 1) * cg {
                    let src = &xd[(nb * c + ic) * in_plane..][..in_plane];
                    let wk = &wd[(ic * mg + ml) * k_plane..][..k_plane];
                    for (pos, &xv) in src.iter().enumerate() {
                        let i = [
                            pos / (input[1] * input[2]),
                            (pos / input[2]) % input[1],
                            pos % input[2],
                        ];
                        for (tap, &wv) in wk.iter().enumerate() {
                            let k = [
                                tap / (kernel[1] * kernel[2]),
                                (tap / kernel[2]) % kernel[1],
                                tap % kernel[2],
                            ];
                            let mut o = [0usize; 3];
                            let mut inside = true;
                            for d in 0..3 {
                                let p = (i[d] * strides[d] + k[d] * dil[d]) as i64 - pb[d];
                                if p < 0 || p >= output[d] as i64 {
                                    inside = false;
                                    break;
                                }
                                o[d] = p as usize;
                            }
                            if inside {
                                dst[(o[0] * output[1] + o[1]) * output[2] + o[2]] += xv * wv;
                            }
                        }
                    }
                }
            });
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), out)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Window;

    fn attrs(strides: &[usize], pads: &[usize], group: usize) -> ConvTransposeAttrs {
        ConvTransposeAttrs {
            window: Window {
                kernel_shape: None,
                strides: strides.to_vec(),
                dilations: vec![],
                padding: Padding::Explicit(pads.to_vec()),
            },
            group,
            output_padding: vec![],
            output_shape: None,
        }
    }

    fn arr(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
    }

    /// A 2-D reference written the other way round: for each output pixel, gather the
    /// input pixels and taps that land on it (`i * s + k * d - pad == o`).
    fn naive_2d(
        x: &ArrayD<f32>,
        w: &ArrayD<f32>,
        group: usize,
        s: [usize; 2],
        d: [usize; 2],
        pb: [i64; 2],
        out_hw: [usize; 2],
    ) -> ArrayD<f32> {
        let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let (mg, kh, kw) = (w.shape()[1], w.shape()[2], w.shape()[3]);
        let m = mg * group;
        let cg = c / group;
        let mut y = ArrayD::<f32>::zeros(IxDyn(&[n, m, out_hw[0], out_hw[1]]));
        for nb in 0..n {
            for oc in 0..m {
                let (g, ml) = (oc / mg, oc % mg);
                for oy in 0..out_hw[0] {
                    for ox in 0..out_hw[1] {
                        let mut acc = 0f32;
                        for ic in g * cg..(g + 1) * cg {
                            for iy in 0..h {
                                for ix in 0..wd {
                                    for ky in 0..kh {
                                        for kx in 0..kw {
                                            let py = (iy * s[0] + ky * d[0]) as i64 - pb[0];
                                            let px = (ix * s[1] + kx * d[1]) as i64 - pb[1];
                                            if py == oy as i64 && px == ox as i64 {
                                                acc += x[[nb, ic, iy, ix]] * w[[ic, ml, ky, kx]];
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        y[[nb, oc, oy, ox]] = acc;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn onnx_doc_example_by_hand() {
        // The ONNX operator doc's example: 3x3 input 0..8, 2 output channels of 3x3 ones.
        let x = arr(&[1, 1, 3, 3], (0..9).map(|v| v as f32).collect());
        let w = arr(&[1, 2, 3, 3], vec![1.0; 18]);
        let y = conv_transpose(&x, &w, None, &attrs(&[], &[], 1)).unwrap();
        assert_eq!(y.shape(), &[1, 2, 5, 5]);
        let plane: Vec<f32> = vec![
            0., 1., 3., 3., 2., 3., 8., 15., 12., 7., 9., 21., 36., 27., 15., 9., 20., 33., 24.,
            13., 6., 13., 21., 15., 8.,
        ];
        let v: Vec<f32> = y.iter().copied().collect();
        assert_eq!(&v[..25], &plane[..]);
        assert_eq!(&v[25..], &plane[..]);
    }

    #[test]
    fn bias_and_1d_by_hand() {
        // x = [1, 2], w = [1, 10], stride 2: [1, 10, 2, 20] + bias 0.5.
        let x = arr(&[1, 1, 2], vec![1., 2.]);
        let w = arr(&[1, 1, 2], vec![1., 10.]);
        let b = arr(&[1], vec![0.5]);
        let y = conv_transpose(&x, &w, Some(&b), &attrs(&[2], &[], 1)).unwrap();
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![1.5, 10.5, 2.5, 20.5]
        );
    }

    #[test]
    fn matches_naive_with_group_stride_dilation_pads() {
        let x = arr(
            &[2, 4, 3, 4],
            (0..96).map(|v| (v % 7) as f32 - 3.0).collect(),
        );
        let w = arr(
            &[4, 3, 2, 3],
            (0..72).map(|v| (v % 5) as f32 * 0.5 - 1.0).collect(),
        );
        let mut a = attrs(&[2, 3], &[1, 0, 0, 2], 2);
        a.window.dilations = vec![2, 1];
        a.output_padding = vec![1, 0];
        let y = conv_transpose(&x, &w, None, &a).unwrap();
        // full = s * (in - 1) + (k - 1) * d + 1 + out_pad: [2*2+2+1+1, 3*3+2+1] = [8, 12].
        assert_eq!(y.shape(), &[2, 6, 7, 10]);
        let r = naive_2d(&x, &w, 2, [2, 3], [2, 1], [1, 0], [7, 10]);
        assert_eq!(y, r);
    }

    #[test]
    fn output_shape_and_same_pads() {
        let x = arr(&[1, 1, 3, 3], (0..9).map(|v| v as f32).collect());
        let w = arr(&[1, 1, 3, 3], (0..9).map(|v| v as f32).collect());
        // output_shape [8, 9] from full [7, 7]: total pads -1, -2, so zeros are added.
        let mut a = attrs(&[2, 2], &[], 1);
        a.output_shape = Some(vec![8, 9]);
        let y = conv_transpose(&x, &w, None, &a).unwrap();
        assert_eq!(y.shape(), &[1, 1, 8, 9]);
        // NOTSET: begin = total - floor(total / 2): -1 - (-1) = 0 and -2 - (-1) = -1.
        assert_eq!(y, naive_2d(&x, &w, 1, [2, 2], [1, 1], [0, -1], [8, 9]));
        // SAME_UPPER: out = in * stride = 6; total 1, begin 0.
        let mut a = attrs(&[2, 2], &[], 1);
        a.window.padding = Padding::SameUpper;
        let y = conv_transpose(&x, &w, None, &a).unwrap();
        assert_eq!(y, naive_2d(&x, &w, 1, [2, 2], [1, 1], [0, 0], [6, 6]));
    }

    #[test]
    fn refusals() {
        let x = arr(&[1, 2, 3, 3], vec![0.0; 18]);
        let w = arr(&[3, 1, 2, 2], vec![0.0; 12]);
        let e = conv_transpose(&x, &w, None, &attrs(&[], &[], 1)).unwrap_err();
        assert!(e.to_string().contains("channels"), "{e}");
        let w = arr(&[2, 1, 2, 2], vec![0.0; 8]);
        let e = conv_transpose(&x, &w, None, &attrs(&[], &[2, 2, 2, 2], 1)).unwrap_err();
        assert!(e.to_string().contains("crop all"), "{e}");
    }
}
