//! Property tests over random conv shapes, strides, pads, dilations and groups: convgraph's
//! Conv against a plain direct loop written here independently, and the `lower-1x1-conv`
//! graph against the unlowered one.

use convgraph::cli::random_tensor;
use convgraph::exec::Runner;
use convgraph::ir::{ConvAttrs, Dim, Graph, Node, Op, Padding, ValueDecl, Window};
use convgraph::passes::{run_pipeline, PassOptions};
use convgraph::{DType, Tensor};
use proptest::prelude::*;
use std::collections::HashMap;

#[derive(Clone, Debug)]
struct Case {
    n: usize,
    groups: usize,
    c_per_group: usize,
    m_per_group: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pads: [usize; 4],
    bias: bool,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (1usize..3, 1usize..4, 1usize..4, 1usize..4),
        (1usize..10, 1usize..10),
        (
            [1usize..4, 1usize..4],
            [1usize..4, 1usize..4],
            [1usize..3, 1usize..3],
        ),
        ([0usize..3, 0usize..3, 0usize..3, 0usize..3], any::<bool>()),
    )
        .prop_map(
            |(
                (n, groups, c_per_group, m_per_group),
                (h, w),
                (k, stride, dilation),
                (pads, bias),
            )| Case {
                n,
                groups,
                c_per_group,
                m_per_group,
                h,
                w,
                k,
                stride,
                dilation,
                pads,
                bias,
            },
        )
        .prop_filter("kernel must fit the padded input", |c| {
            let fits = |i: usize, size: usize| {
                (c.k[i] - 1) * c.dilation[i] < size + c.pads[i] + c.pads[i + 2]
            };
            fits(0, c.h) && fits(1, c.w)
        })
}

/// The textbook definition: out[n][m][y][x] = b[m] + sum over the group's input channels and
/// the kernel window of x[n][c][y*s - p + i*d][x*s - p + j*d] * w[m][c'][i][j].
fn direct(c: &Case, x: &[f32], w: &[f32], b: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let (cin, m) = (c.groups * c.c_per_group, c.groups * c.m_per_group);
    let oh = (c.h + c.pads[0] + c.pads[2] - ((c.k[0] - 1) * c.dilation[0] + 1)) / c.stride[0] + 1;
    let ow = (c.w + c.pads[1] + c.pads[3] - ((c.k[1] - 1) * c.dilation[1] + 1)) / c.stride[1] + 1;
    let mut out = vec![0f32; c.n * m * oh * ow];
    for n in 0..c.n {
        for mo in 0..m {
            let g = mo / c.m_per_group;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = if c.bias { b[mo] as f64 } else { 0.0 };
                    for ci in 0..c.c_per_group {
                        let cx = g * c.c_per_group + ci;
                        for i in 0..c.k[0] {
                            for j in 0..c.k[1] {
                                let y = (oy * c.stride[0] + i * c.dilation[0]) as isize
                                    - c.pads[0] as isize;
                                let xx = (ox * c.stride[1] + j * c.dilation[1]) as isize
                                    - c.pads[1] as isize;
                                if y < 0 || xx < 0 || y >= c.h as isize || xx >= c.w as isize {
                                    continue;
                                }
                                let xv = x[((n * cin + cx) * c.h + y as usize) * c.w + xx as usize];
                                let wv = w[((mo * c.c_per_group + ci) * c.k[0] + i) * c.k[1] + j];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out[((n * m + mo) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
    (vec![c.n, m, oh, ow], out)
}

fn attrs(c: &Case) -> ConvAttrs {
    ConvAttrs {
        window: Window {
            kernel_shape: None,
            strides: c.stride.to_vec(),
            dilations: c.dilation.to_vec(),
            padding: Padding::Explicit(c.pads.to_vec()),
        },
        group: c.groups,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn conv_matches_the_direct_loop(c in cases(), seed in 0u64..1000) {
        let (cin, m) = (c.groups * c.c_per_group, c.groups * c.m_per_group);
        let x = random_tensor(DType::F32, &[c.n, cin, c.h, c.w], seed).unwrap();
        let w = random_tensor(DType::F32, &[m, c.c_per_group, c.k[0], c.k[1]], seed + 1).unwrap();
        let b = random_tensor(DType::F32, &[m], seed + 2).unwrap();
        let inputs = [Some(&x), Some(&w), if c.bias { Some(&b) } else { None }];
        let y = convgraph::kernels::eval(&Op::Conv(attrs(&c)), &inputs, 1).unwrap().remove(0);
        let flat = |t: &Tensor| t.as_f32().unwrap().iter().copied().collect::<Vec<f32>>();
        let (shape, expected) = direct(&c, &flat(&x), &flat(&w), &flat(&b));
        prop_assert_eq!(y.shape(), shape.as_slice());
        for (i, (a, e)) in flat(&y).iter().zip(&expected).enumerate() {
            prop_assert!((a - e).abs() <= 1e-5 + 1e-4 * e.abs(), "element {}: {} vs {}", i, a, e);
        }
    }

    #[test]
    fn lowering_1x1_conv_keeps_the_numbers(
        n in 1usize..3, cin in 1usize..9, m in 1usize..9, h in 1usize..12, w in 1usize..12,
        stride in [1usize..4, 1usize..4], bias in any::<bool>(), seed in 0u64..1000,
    ) {
        let mut g = Graph { name: "p".into(), opset: 17, ..Default::default() };
        g.inputs.push(ValueDecl {
            name: "x".into(),
            dtype: DType::F32,
            dims: Some(vec![Dim::Fixed(n), Dim::Fixed(cin), Dim::Fixed(h), Dim::Fixed(w)]),
            wrappers: vec![],
        });
        g.constants.insert("w".into(), random_tensor(DType::F32, &[m, cin, 1, 1], seed).unwrap());
        let mut inputs = vec!["x".to_string(), "w".to_string()];
        if bias {
            g.constants.insert("b".into(), random_tensor(DType::F32, &[m], seed + 1).unwrap());
            inputs.push("b".into());
        }
        let conv = ConvAttrs {
            window: Window { kernel_shape: None, strides: stride.to_vec(), dilations: vec![], padding: Padding::Explicit(vec![]) },
            group: 1,
        };
        g.nodes.push(Node { name: "c".into(), op: Op::Conv(conv), inputs, outputs: vec!["y".into()] });
        g.outputs.push(ValueDecl { name: "y".into(), dtype: DType::F32, dims: None, wrappers: vec![] });
        let mut lowered = g.clone();
        run_pipeline(&mut lowered, &["lower-1x1-conv".to_string()], &PassOptions::default()).unwrap();
        prop_assert!(!lowered.nodes.iter().any(|n| matches!(n.op, Op::Conv(_))));

        let x = random_tensor(DType::F32, &[n, cin, h, w], seed + 2).unwrap();
        let run = |g: &Graph| {
            let feed = HashMap::from([("x".to_string(), x.clone())]);
            Runner::new(g).unwrap().run(feed).unwrap().remove(0).1
        };
        let (a, b) = (run(&g), run(&lowered));
        prop_assert_eq!(a.shape(), b.shape());
        for (p, q) in a.as_f32().unwrap().iter().zip(b.as_f32().unwrap().iter()) {
            prop_assert!((p - q).abs() <= 1e-5, "{} vs {}", p, q);
        }
    }
}
