//! Conv (1 to 3 spatial dims, groups, strides, pads, dilations, bias) on f32.
//!
//! The general path is im2col + sgemm: for each batch item and group, the input patches of a
//! block of output positions are laid out as a `(C/g * prod(k)) x block` matrix and
//! multiplied by the group's weights `(M/g) x (C/g * prod(k))`. Working on fixed-width blocks
//! of output positions bounds the scratch memory and gives rayon independent tasks whose
//! boundaries do not depend on the thread count, so results are bitwise reproducible.
//! A 1x1 stride-1 unpadded conv uses the input directly as the matrix, and depthwise convs
//! (one input channel per group, any channel multiplier) go to the direct kernel in
//! `depthwise.rs`, where a GEMM with a single output row would only add overhead.
//!
//! Everything is written for 3 spatial dims; 1-D and 2-D convs are lifted to 3-D by adding
//! leading spatial dims of size 1, which changes neither the data layout nor the math.

use super::depthwise;
use super::gemm::{sgemm_raw, SendPtr};
use super::input;
use crate::ir::op::ConvAttrs;
use crate::ir::window::Geometry;
use crate::ir::Op;
use crate::tensor::{DType, Tensor};
use anyhow::{bail, Result};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// Output positions per im2col block (fixed: part of the determinism contract).
const BLOCK: usize = 256;

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], _n_outputs: usize) -> Result<Vec<Tensor>> {
    let Op::Conv(attrs) = op else {
        bail!("conv kernel called for {}", op.name())
    };
    let x = input(inputs, 0, "X")?;
    let w = input(inputs, 1, "W")?;
    let b = inputs.get(2).copied().flatten();
    if x.dtype() != DType::F32 {
        bail!("Conv on {} is not supported", x.dtype());
    }
    let b = match b {
        Some(b) => Some(b.as_f32()?),
        None => None,
    };
    Ok(vec![Tensor::F32(conv_f32(
        x.as_f32()?,
        w.as_f32()?,
        b,
        attrs,
    )?)])
}

/// The window geometry lifted to exactly 3 spatial dims, plus the channel structure.
#[derive(Clone, Debug)]
struct Plan {
    n: usize,
    c: usize,
    m: usize,
    group: usize,
    input: [usize; 3],
    kernel: [usize; 3],
    strides: [usize; 3],
    dilations: [usize; 3],
    pads: [usize; 3],
    output: [usize; 3],
    /// The output shape in the input's rank.
    out_shape: Vec<usize>,
}

impl Plan {
    fn cg(&self) -> usize {
        self.c / self.group
    }
    fn mg(&self) -> usize {
        self.m / self.group
    }
    fn in_plane(&self) -> usize {
        self.input.iter().product()
    }
    fn out_plane(&self) -> usize {
        self.output.iter().product()
    }
    fn k_plane(&self) -> usize {
        self.kernel.iter().product()
    }
}

/// Lifts a per-spatial-axis vector to 3 axes, filling the leading ones with `fill`.
fn lift(v: &[usize], fill: usize) -> [usize; 3] {
    let mut out = [fill; 3];
    out[3 - v.len()..].copy_from_slice(v);
    out
}

/// Checks the shapes (with the shape rule itself) and resolves the geometry.
fn plan(xs: &[usize], ws: &[usize], bs: Option<&[usize]>, attrs: &ConvAttrs) -> Result<Plan> {
    // The shape rule is the one place that says which shapes a Conv accepts.
    let out_shape = crate::ir::infer::conv_output_shape(xs, ws, bs, attrs)?;
    let (group, c, m) = (attrs.group, xs[1], ws[0]);
    let g: Geometry = attrs.window.resolve(&xs[2..], &ws[2..], false)?;
    Ok(Plan {
        n: xs[0],
        c,
        m,
        group,
        input: lift(&g.input, 1),
        kernel: lift(&g.kernel, 1),
        strides: lift(&g.strides, 1),
        dilations: lift(&g.dilations, 1),
        pads: lift(&g.pads_begin, 0),
        output: lift(&g.output, 1),
        out_shape,
    })
}

/// Conv on f32 arrays of any layout. `b`, when given, has shape `[M]`.
pub fn conv_f32(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    b: Option<&ArrayD<f32>>,
    attrs: &ConvAttrs,
) -> Result<ArrayD<f32>> {
    let p = plan(x.shape(), w.shape(), b.map(|b| b.shape()), attrs)?;
    crate::tensor::limits::check_alloc(&p.out_shape, DType::F32)?;
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let xd = x.as_slice().expect("standard layout");
    let wd = w.as_slice().expect("standard layout");
    let bias: Option<Vec<f32>> = b.map(|b| b.iter().copied().collect());
    let mut out = vec![0f32; p.out_shape.iter().product()];
    if p.out_plane() > 0 && p.m > 0 {
        if p.group == p.c && p.m % p.c == 0 {
            let g = depthwise::Geometry {
                n: p.n,
                c: p.c,
                mult: p.m / p.c,
                input: p.input,
                kernel: p.kernel,
                strides: p.strides,
                dilations: p.dilations,
                pads: p.pads,
                output: p.output,
            };
            depthwise::depthwise(&g, xd, wd, bias.as_deref(), &mut out);
        } else {
            im2col_gemm(&p, xd, wd, bias.as_deref(), &mut out);
        }
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&p.out_shape), out)?)
}

/// For each output position of a block, the input coordinate its window starts at (may be
/// negative: inside the leading padding).
fn block_origins(p: &Plan, p0: usize, len: usize, origins: &mut Vec<[isize; 3]>) {
    origins.clear();
    let [_, oh, ow] = p.output;
    for pos in p0..p0 + len {
        let o = [pos / (oh * ow), (pos / ow) % oh, pos % ow];
        origins.push(std::array::from_fn(|i| {
            (o[i] * p.strides[i]) as isize - p.pads[i] as isize
        }));
    }
}

/// The general path, parallel over (batch, group, block of output positions).
fn im2col_gemm(p: &Plan, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let (cg, mg, kp) = (p.cg(), p.mg(), p.k_plane());
    let kdim = cg * kp;
    let (in_plane, out_plane) = (p.in_plane(), p.out_plane());
    let n_blocks = out_plane.div_ceil(BLOCK);
    // A 1x1 kernel with stride 1 and no padding reads each input position exactly once, in
    // order: the input plane already is the patch matrix.
    let pointwise =
        p.kernel == [1; 3] && p.strides == [1; 3] && p.pads == [0; 3] && p.input == p.output;
    let outp = SendPtr(out.as_mut_ptr());
    let n_tasks = p.n * p.group * n_blocks;
    (0..n_tasks).into_par_iter().for_each_init(
        || (Vec::<f32>::new(), Vec::<[isize; 3]>::new()),
        |(cols, origins), t| {
            let blk = t % n_blocks;
            let g = (t / n_blocks) % p.group;
            let n = t / (n_blocks * p.group);
            let p0 = blk * BLOCK;
            let len = BLOCK.min(out_plane - p0);
            let x_base = (n * p.c + g * cg) * in_plane;
            let (b_mat, ldb): (&[f32], usize) = if pointwise {
                (&x[x_base + p0..], in_plane)
            } else {
                cols.resize(kdim * len, 0.0);
                block_origins(p, p0, len, origins);
                im2col_block(p, &x[x_base..x_base + cg * in_plane], origins, cols);
                (&cols[..], len)
            };
            let w_g = &w[g * mg * kdim..(g + 1) * mg * kdim];
            let c_off = (n * p.m + g * mg) * out_plane + p0;
            // SAFETY: this task writes rows g*mg..(g+1)*mg of batch n, columns p0..p0+len of
            // the output; tasks differ in (n, g, blk), so their elements are disjoint, and
            // the offsets stay within `out` (n < N, channel < M, column < out_plane).
            unsafe {
                let c = outp.get().add(c_off);
                sgemm_raw(
                    mg, len, kdim, 1.0, w_g, kdim, 1, b_mat, ldb, 1, c, out_plane, false,
                );
                if let Some(bias) = bias {
                    for mi in 0..mg {
                        let bv = bias[g * mg + mi];
                        let row = std::slice::from_raw_parts_mut(c.add(mi * out_plane), len);
                        row.iter_mut().for_each(|v| *v += bv);
                    }
                }
            }
        },
    );
}

/// Fills `cols` (`(cg * prod(k)) x origins.len()`, row-major) with the patches of one block;
/// out-of-bounds (padding) positions are 0.
fn im2col_block(p: &Plan, x: &[f32], origins: &[[isize; 3]], cols: &mut [f32]) {
    let len = origins.len();
    let [id, ih, iw] = p.input.map(|v| v as isize);
    let [kd, kh, kw] = p.kernel;
    let [dd, dh, dw] = p.dilations.map(|v| v as isize);
    let in_plane = p.in_plane();
    let mut row = 0;
    for c in 0..p.cg() {
        let xc = &x[c * in_plane..(c + 1) * in_plane];
        for a in 0..kd {
            for bb in 0..kh {
                for cc in 0..kw {
                    let dst = &mut cols[row * len..(row + 1) * len];
                    let off = [a as isize * dd, bb as isize * dh, cc as isize * dw];
                    for (v, o) in dst.iter_mut().zip(origins) {
                        let (z, y, xx) = (o[0] + off[0], o[1] + off[1], o[2] + off[2]);
                        *v = if z >= 0 && z < id && y >= 0 && y < ih && xx >= 0 && xx < iw {
                            xc[((z * ih + y) * iw + xx) as usize]
                        } else {
                            0.0
                        };
                    }
                    row += 1;
                }
            }
        }
    }
}

/// A plain direct convolution, accumulating in f64: the reference the fast paths are tested
/// against. Same shape rules and geometry as [`conv_f32`].
pub fn conv_reference(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    b: Option<&ArrayD<f32>>,
    attrs: &ConvAttrs,
) -> Result<ArrayD<f32>> {
    let p = plan(x.shape(), w.shape(), b.map(|b| b.shape()), attrs)?;
    let lift_shape = |s: &[usize]| -> Vec<usize> {
        let mut v = s[..2].to_vec();
        v.extend(lift(&s[2..], 1));
        v
    };
    let x5 = x.to_shape(IxDyn(&lift_shape(x.shape())))?;
    let w5 = w.to_shape(IxDyn(&lift_shape(w.shape())))?;
    let (cg, mg) = (p.cg(), p.mg());
    let [od, oh, ow] = p.output;
    let mut out = ArrayD::<f32>::zeros(IxDyn(&[p.n, p.m, od, oh, ow]));
    for n in 0..p.n {
        for m in 0..p.m {
            let g = m / mg;
            for z in 0..od {
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut acc = b.map_or(0.0, |b| b[[m]] as f64);
                        for ci in 0..cg {
                            let c = g * cg + ci;
                            for a in 0..p.kernel[0] {
                                for bb in 0..p.kernel[1] {
                                    for cc in 0..p.kernel[2] {
                                        let pos = [(z, a), (y, bb), (xx, cc)];
                                        let idx: [isize; 3] = std::array::from_fn(|i| {
                                            (pos[i].0 * p.strides[i] + pos[i].1 * p.dilations[i])
                                                as isize
                                                - p.pads[i] as isize
                                        });
                                        if (0..3)
                                            .all(|i| idx[i] >= 0 && idx[i] < p.input[i] as isize)
                                        {
                                            let [i0, i1, i2] = idx.map(|v| v as usize);
                                            acc += x5[[n, c, i0, i1, i2]] as f64
                                                * w5[[m, ci, a, bb, cc]] as f64;
                                        }
                                    }
                                }
                            }
                        }
                        out[[n, m, z, y, xx]] = acc as f32;
                    }
                }
            }
        }
    }
    Ok(out.into_shape_with_order(IxDyn(&p.out_shape))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::{Padding, Window};

    fn attrs(
        group: usize,
        strides: Vec<usize>,
        dilations: Vec<usize>,
        padding: Padding,
    ) -> ConvAttrs {
        ConvAttrs {
            window: Window {
                kernel_shape: None,
                strides,
                dilations,
                padding,
            },
            group,
        }
    }

    /// Deterministic pseudo-random data in [-1, 1).
    fn data(shape: &[usize], seed: u64) -> ArrayD<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ArrayD::from_shape_fn(IxDyn(shape), |_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
    }

    fn check(xs: &[usize], ws: &[usize], bias: bool, a: ConvAttrs) {
        let x = data(xs, 1);
        let w = data(ws, 2);
        let b = bias.then(|| data(&[ws[0]], 3));
        let got = conv_f32(&x, &w, b.as_ref(), &a).unwrap();
        let want = conv_reference(&x, &w, b.as_ref(), &a).unwrap();
        assert_eq!(got.shape(), want.shape(), "{xs:?} {ws:?} {a:?}");
        for (g, r) in got.iter().zip(want.iter()) {
            assert!(
                (g - r).abs() <= 1e-4 * (1.0 + r.abs()),
                "{g} vs {r} for {xs:?} {ws:?} {a:?}"
            );
        }
    }

    #[test]
    fn lesson_example() {
        let x = ArrayD::from_shape_vec(
            IxDyn(&[1, 2, 3, 3]),
            (0..9).chain(1..10).map(|v| v as f32).collect(),
        )
        .unwrap();
        let w = ArrayD::from_shape_vec(IxDyn(&[1, 2, 2, 2]), vec![0., 1., 2., 3., 1., 2., 3., 4.])
            .unwrap();
        let a = attrs(1, vec![], vec![], Padding::Explicit(vec![]));
        let y = conv_f32(&x, &w, None, &a).unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![56., 72., 104., 120.]
        );
        let r = conv_reference(&x, &w, None, &a).unwrap();
        assert_eq!(r, y);
    }

    #[test]
    fn matches_reference() {
        let e = Padding::Explicit(vec![]);
        check(
            &[2, 3, 9, 9],
            &[4, 3, 3, 3],
            true,
            attrs(1, vec![], vec![], e.clone()),
        );
        check(
            &[1, 3, 20, 17],
            &[5, 3, 3, 3],
            true,
            attrs(1, vec![2, 2], vec![], Padding::Explicit(vec![1, 1, 2, 0])),
        );
        check(
            &[1, 4, 11, 11],
            &[6, 4, 3, 2],
            false,
            attrs(
                1,
                vec![1, 2],
                vec![2, 3],
                Padding::Explicit(vec![2, 1, 0, 3]),
            ),
        );
        check(
            &[2, 6, 8, 8],
            &[4, 3, 3, 3],
            true,
            attrs(2, vec![], vec![], Padding::SameUpper),
        );
        check(
            &[1, 6, 7, 7],
            &[6, 1, 3, 3],
            true,
            attrs(6, vec![2, 2], vec![], Padding::SameLower),
        ); // depthwise
        check(
            &[1, 4, 9, 9],
            &[8, 1, 3, 3],
            true,
            attrs(4, vec![], vec![2, 2], Padding::Explicit(vec![2, 2, 2, 2])),
        ); // multiplier 2
        check(
            &[2, 8, 30, 30],
            &[16, 8, 1, 1],
            true,
            attrs(1, vec![], vec![], e.clone()),
        ); // pointwise, > 1 block
        check(
            &[1, 8, 10, 10],
            &[4, 8, 1, 1],
            false,
            attrs(1, vec![2, 2], vec![], e.clone()),
        ); // strided 1x1
        check(
            &[2, 3, 40],
            &[5, 3, 4],
            true,
            attrs(1, vec![3], vec![2], Padding::Explicit(vec![1, 2])),
        ); // 1-D
        check(
            &[1, 2, 5, 6, 7],
            &[3, 2, 2, 3, 2],
            true,
            attrs(
                1,
                vec![1, 2, 1],
                vec![2, 1, 1],
                Padding::Explicit(vec![1, 0, 1, 0, 1, 1]),
            ),
        ); // 3-D
        check(
            &[1, 4, 6, 6, 6],
            &[4, 1, 3, 3, 3],
            false,
            attrs(4, vec![], vec![], Padding::Valid),
        ); // 3-D depthwise
        check(
            &[1, 16, 40, 40],
            &[32, 16, 3, 3],
            true,
            attrs(1, vec![], vec![], Padding::SameUpper),
        ); // many blocks
    }

    /// The direct depthwise kernel against the reference: strides 1 to 3, asymmetric pads,
    /// pads wider than the kernel reach (columns with no valid tap), dilation, kernels as wide
    /// as the input, 1-D and 3-D, batch > 1, with and without bias. Channel multipliers and
    /// row widths around the kernel's block sizes are in depthwise.rs's tests.
    #[test]
    fn depthwise_matches_reference() {
        let ex = |v: &[usize]| Padding::Explicit(v.to_vec());
        let mut checked = 0;
        for (stride, dil) in [(1, 1), (2, 1), (1, 2), (2, 2), (3, 1)] {
            for pads in [
                &[0, 0, 0, 0][..],
                &[1, 1, 1, 1],
                &[0, 2, 1, 0],
                &[3, 4, 4, 3],
            ] {
                for (hw, k) in [((13, 11), (3, 3)), ((7, 16), (5, 5)), ((4, 3), (3, 3))] {
                    let (xs, ws) = ([2, 5, hw.0, hw.1], [5, 1, k.0, k.1]);
                    let a = attrs(5, vec![stride; 2], vec![dil; 2], ex(pads));
                    // Some combinations have a dilated kernel larger than the padded input.
                    if plan(&xs, &ws, None, &a).is_err() {
                        continue;
                    }
                    checked += 1;
                    for bias in [false, true] {
                        check(&xs, &ws, bias, a.clone());
                    }
                }
            }
        }
        assert!(checked >= 40, "only {checked} valid geometries");
        check(
            &[1, 3, 50],
            &[3, 1, 7],
            true,
            attrs(3, vec![2], vec![3], ex(&[4, 5])),
        ); // 1-D
        check(
            &[1, 3, 5, 6, 7],
            &[3, 1, 3, 2, 3],
            true,
            attrs(3, vec![2, 1, 2], vec![1, 2, 1], ex(&[1, 0, 2, 1, 1, 0])),
        ); // 3-D
        check(
            &[1, 8, 9, 9],
            &[8, 1, 3, 3],
            true,
            attrs(8, vec![2, 2], vec![], Padding::SameUpper),
        );
        // A column stride wider than the input row (found by tests/conv_properties.rs).
        check(
            &[1, 1, 1, 1],
            &[1, 1, 1, 1],
            false,
            attrs(1, vec![1, 3], vec![], ex(&[])),
        );
    }

    #[test]
    fn depthwise_same_bits_for_any_thread_count() {
        let x = data(&[2, 24, 31, 29], 7);
        let w = data(&[24, 1, 3, 3], 8);
        let b = data(&[24], 9);
        for s in [1, 2] {
            let a = attrs(24, vec![s, s], vec![], Padding::Explicit(vec![1, 1, 1, 1]));
            let run = |t| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap()
                    .install(|| conv_f32(&x, &w, Some(&b), &a).unwrap())
            };
            assert_eq!(run(1), run(3));
        }
    }

    #[test]
    fn same_bits_for_any_thread_count() {
        let x = data(&[1, 16, 40, 40], 5);
        let w = data(&[32, 16, 3, 3], 6);
        let a = attrs(1, vec![], vec![], Padding::SameUpper);
        let run = |t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| conv_f32(&x, &w, None, &a).unwrap())
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn refuses_bad_inputs() {
        let a = attrs(1, vec![], vec![], Padding::Explicit(vec![]));
        let x = Tensor::F64(ArrayD::zeros(IxDyn(&[1, 1, 3, 3])));
        let w = Tensor::F64(ArrayD::zeros(IxDyn(&[1, 1, 2, 2])));
        let e = eval(&Op::Conv(a.clone()), &[Some(&x), Some(&w)], 1).unwrap_err();
        assert_eq!(e.to_string(), "Conv on f64 is not supported");
        let x = data(&[1, 3, 5, 5], 1);
        let w = data(&[2, 2, 3, 3], 1);
        assert!(conv_f32(&x, &w, None, &a).is_err());
    }
}
