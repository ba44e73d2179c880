//! In place vs the out-of-place kernels, fused vs unfused: the same bits, on 1 and 2
//! threads, below and above the parallel split.

use super::*;
use crate::kernels::test_data::{noise, on_threads};

/// Noise with a NaN and infinities, so their handling is compared too.
fn data(shape: &[usize], seed: u64) -> Tensor {
    let mut a = noise(shape, seed);
    let s = a.as_slice_mut().unwrap();
    let n = s.len();
    s[n / 3] = f32::NAN;
    s[n / 2] = f32::INFINITY;
    s[n - 1] = f32::NEG_INFINITY;
    Tensor::F32(a)
}

fn bits(t: &Tensor) -> (Vec<usize>, Vec<u32>) {
    let Tensor::F32(a) = t else { panic!("f32") };
    (a.shape().to_vec(), a.iter().map(|v| v.to_bits()).collect())
}

/// Small (one task) and large (split in fixed chunks) activations.
const SHAPES: [&[usize]; 2] = [&[1, 3, 5, 7], &[1, 8, 96, 96]];

/// `eval_in_place` with input `k`'s copy as the buffer, on `threads` threads.
fn in_place(op: &Op, fused: Option<Fused>, ins: &[&Tensor], k: usize, threads: usize) -> Tensor {
    let opt: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
    assert!(can_run_in_place(op, fused, &opt, k), "{op:?} input {k}");
    let mut rest = opt.clone();
    rest[k] = None;
    on_threads(threads, || {
        eval_in_place(op, fused, ins[k].clone(), k, &rest).unwrap()
    })
}

fn out_of_place(op: &Op, ins: &[&Tensor]) -> Tensor {
    let opt: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
    crate::kernels::eval(op, &opt, 1).unwrap().pop().unwrap()
}

#[test]
fn unary_in_place_matches_out_of_place() {
    for shape in SHAPES {
        let x = data(shape, 1);
        for u in [UnaryOp::Relu, UnaryOp::Sigmoid] {
            let op = Op::Unary(u);
            let want = bits(&out_of_place(&op, &[&x]));
            for threads in [1, 2] {
                assert_eq!(bits(&in_place(&op, None, &[&x], 0, threads)), want, "{u:?}");
            }
        }
    }
}

#[test]
fn binary_in_place_matches_out_of_place_for_either_operand() {
    for shape in SHAPES {
        let big = data(shape, 2);
        let c = shape[1];
        // Same shape, per-channel (SE's [1, C, 1, 1]), trailing-dims-absent, scalar.
        let others = [
            data(shape, 3),
            data(&[1, c, 1, 1], 4),
            data(&[c, 1, 1], 5),
            data(&[1], 6),
        ];
        for bop in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            let op = Op::Binary(bop);
            for o in &others {
                for (ins, k) in [([&big, o], 0), ([o, &big], 1)] {
                    let want = bits(&out_of_place(&op, &ins));
                    for threads in [1, 2] {
                        let got = in_place(&op, None, &ins, k, threads);
                        assert_eq!(bits(&got), want, "{bop:?} {:?} k={k}", o.shape());
                    }
                }
            }
        }
    }
}

#[test]
fn refuses_buffers_that_do_not_hold_the_output() {
    let op = Op::Binary(BinaryOp::Mul);
    let big = data(&[1, 4, 6, 6], 1);
    let small = data(&[1, 4, 1, 1], 2);
    // The small operand would have to grow.
    assert!(!can_run_in_place(&op, None, &[Some(&big), Some(&small)], 1));
    // A broadcast that is not constant over trailing runs takes the general path.
    let cols = data(&[1, 1, 1, 6], 3);
    assert!(!can_run_in_place(&op, None, &[Some(&big), Some(&cols)], 0));
    // Not f32; not an op with an in-place form.
    let ints = Tensor::from_vec(&[2], vec![1i64, 2]).unwrap();
    assert!(!can_run_in_place(
        &Op::Unary(UnaryOp::Relu),
        None,
        &[Some(&ints)],
        0
    ));
    assert!(!can_run_in_place(
        &Op::Unary(UnaryOp::Exp),
        None,
        &[Some(&big)],
        0
    ));
    // A transposed view is not contiguous.
    let Tensor::F32(a) = &big else { unreachable!() };
    let t = Tensor::F32(a.clone().reversed_axes());
    assert!(!can_run_in_place(
        &Op::Unary(UnaryOp::Relu),
        None,
        &[Some(&t)],
        0
    ));
}

fn bn_params(c: usize) -> Vec<Tensor> {
    let var = match data(&[c], 13) {
        Tensor::F32(v) => Tensor::F32(v.mapv(|v| if v.is_nan() { 1.0 } else { v.abs() })),
        _ => unreachable!(),
    };
    vec![data(&[c], 10), data(&[c], 11), data(&[c], 12), var]
}

/// The clamps a Relu or constant Clip fuses as, and the node each stands for.
fn clamps() -> Vec<(Activation, Op)> {
    let clip =
        |lo: Option<f32>, hi: Option<f32>| (Activation { lo, hi }, Op::Clip { min: lo, max: hi });
    vec![
        (Activation::RELU, Op::Unary(UnaryOp::Relu)),
        clip(Some(0.0), Some(6.0)),
        clip(Some(-0.5), None),
        clip(None, Some(0.25)),
    ]
}

#[test]
fn batch_norm_in_place_and_fused_clamps_match_unfused() {
    for shape in SHAPES {
        let x = data(shape, 7);
        let p = bn_params(shape[1]);
        let op = Op::BatchNorm { epsilon: 1e-5 };
        let ins: Vec<&Tensor> = [&x].into_iter().chain(&p).collect();
        let bn = out_of_place(&op, &ins);
        for threads in [1, 2] {
            assert_eq!(bits(&in_place(&op, None, &ins, 0, threads)), bits(&bn));
        }
        for (act, node) in clamps() {
            let want = bits(&out_of_place(&node, &[&bn]));
            let opt: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
            let fused = Fused::Clamp(act);
            assert_eq!(
                bits(&eval_fused(&op, fused, &opt).unwrap()),
                want,
                "{node:?}"
            );
            for threads in [1, 2] {
                let got = in_place(&op, Some(fused), &ins, 0, threads);
                assert_eq!(bits(&got), want, "{node:?}");
            }
        }
    }
}

#[test]
fn batch_norm_on_a_blocked_value_is_the_batch_norm_blocked() {
    use crate::kernels::blocked::{to_blocked, to_planes};
    for shape in [&[1, 16, 5, 7][..], &[2, 24, 40, 40]] {
        let x = data(shape, 14);
        let p = bn_params(shape[1]);
        let op = Op::BatchNorm { epsilon: 1e-5 };
        let ins: Vec<&Tensor> = [&x].into_iter().chain(&p).collect();
        let opt: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
        let Tensor::F32(xf) = &x else { unreachable!() };
        let xb = Tensor::F32(to_blocked(xf));
        let fused = [None]
            .into_iter()
            .chain(clamps().into_iter().map(|(a, _)| Some(Fused::Clamp(a))));
        for f in fused {
            let want = match f {
                Some(f) => eval_fused(&op, f, &opt).unwrap(),
                None => out_of_place(&op, &ins),
            };
            for threads in [1, 2] {
                let got = on_threads(threads, || {
                    batch_norm_blocked(1e-5, f, xb.clone(), &opt).unwrap()
                });
                let Tensor::F32(g) = &got else { unreachable!() };
                assert_eq!(g.shape(), xb.shape());
                let planes = Tensor::F32(to_planes(g));
                assert_eq!(bits(&planes), bits(&want), "{f:?} {shape:?}");
            }
        }
    }
}

#[test]
fn add_fused_clamps_match_add_then_clamp() {
    for shape in SHAPES {
        let a = data(shape, 8);
        for b in [data(shape, 9), data(&[1, shape[1], 1, 1], 10)] {
            let op = Op::Binary(BinaryOp::Add);
            let sum = out_of_place(&op, &[&a, &b]);
            for (act, node) in clamps() {
                let want = bits(&out_of_place(&node, &[&sum]));
                let fused = Fused::Clamp(act);
                let opt = [Some(&a), Some(&b)];
                assert_eq!(
                    bits(&eval_fused(&op, fused, &opt).unwrap()),
                    want,
                    "{node:?}"
                );
                for threads in [1, 2] {
                    let got = in_place(&op, Some(fused), &[&a, &b], 0, threads);
                    assert_eq!(bits(&got), want, "{node:?}");
                }
            }
        }
    }
}

/// `bits` with every NaN as the one quiet NaN: the sigmoid of a NaN is a NaN, not the same
/// one (`vexp::sigmoid_f32`), so the NaN a Mul of two passes on depends on their order.
fn bits_any_nan(t: &Tensor) -> (Vec<usize>, Vec<u32>) {
    let (shape, b) = bits(t);
    let nan = |v: u32| f32::from_bits(v).is_nan();
    let canon = b.into_iter().map(|v| if nan(v) { 0x7fc0_0000 } else { v });
    (shape, canon.collect())
}

#[test]
fn silu_matches_sigmoid_then_mul_in_either_order() {
    for shape in SHAPES {
        let x = data(shape, 11);
        let s = out_of_place(&Op::Unary(UnaryOp::Sigmoid), &[&x]);
        let op = Op::Binary(BinaryOp::Mul);
        for (x_at, ins) in [(0, [&x, &s]), (1, [&s, &x])] {
            let want = bits_any_nan(&out_of_place(&op, &ins));
            let fused = Some(Fused::Silu { x: x_at });
            // The Sigmoid is not computed: its input slot is empty.
            let mut opt = [Some(&x), Some(&x)];
            opt[1 - x_at] = None;
            assert!(!can_run_in_place(
                &op,
                fused,
                &[Some(&x), Some(&x)],
                1 - x_at
            ));
            let fallback = eval_fused(&op, Fused::Silu { x: x_at }, &opt).unwrap();
            assert_eq!(bits_any_nan(&fallback), want);
            for threads in [1, 2] {
                let mut rest = opt;
                rest[x_at] = None;
                let got = on_threads(threads, || {
                    eval_in_place(&op, fused, x.clone(), x_at, &rest).unwrap()
                });
                assert_eq!(bits_any_nan(&got), want);
            }
        }
    }
}
