//! Shape rules of the layout ops. The shape arithmetic is shared with the kernels
//! (`kernels::layout`), so a rule and its kernel cannot disagree.
//!
//! Ops whose shape depends on another input's value (Reshape's shape, Slice's starts, ...)
//! need that value in the input's fact; when it is unknown the output shape is unknown.
//! When every input's value is known the op is folded, which is how shape-computing
//! subgraphs (Shape -> Gather -> Concat -> Reshape) resolve before anything runs.

use super::{input, norm_axis};
use crate::ir::{Fact, Op, MAX_FACT_VALUE_LEN};
use crate::kernels::layout as k;
use crate::tensor::{DType, Tensor};
use anyhow::{bail, Result};
use std::sync::Arc;

pub fn infer(op: &Op, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
    let x = input(inputs, 0, "data")?;
    let dt = x.dtype;
    // The known value of optional input `i` as i64s: Ok(None) when absent,
    // Err(()) (as `Unknown`) when present but not known statically.
    let value_of = |i: usize| -> Result<Val> {
        match inputs.get(i).copied().flatten() {
            None => Ok(Val::Absent),
            Some(f) => match &f.value {
                Some(v) => Ok(Val::Known(v.to_i64_vec()?)),
                None => Ok(Val::Unknown),
            },
        }
    };
    let unknown = || Ok(vec![Fact::unknown_shape(dt)]);
    let facts = match op {
        Op::Identity => return Ok(vec![x.clone()]),
        Op::Stack { axis } | Op::Concat { axis } => {
            let all: Vec<&Fact> = (0..inputs.len())
                .map(|i| input(inputs, i, "input"))
                .collect::<Result<_>>()?;
            if let Some(f) = all.iter().find(|f| f.dtype != dt) {
                bail!(
                    "{} inputs must share a dtype, got {} and {}",
                    op.name(),
                    dt,
                    f.dtype
                );
            }
            let Some(shapes) = all
                .iter()
                .map(|f| f.shape.as_deref())
                .collect::<Option<Vec<_>>>()
            else {
                return unknown();
            };
            let s = if matches!(op, Op::Stack { .. }) {
                k::stack_shape(&shapes, *axis)?
            } else {
                k::concat_shape(&shapes, *axis)?
            };
            vec![Fact::new(dt, s)]
        }
        Op::Unsqueeze { axes } | Op::Squeeze { axes } => {
            let axes = match (axes, value_of(1)?) {
                (Some(a), _) => Some(a.clone()),
                (None, Val::Known(v)) => Some(v),
                (None, Val::Absent) => None,
                (None, Val::Unknown) => return unknown(),
            };
            let Some(s) = &x.shape else { return unknown() };
            let out = if matches!(op, Op::Unsqueeze { .. }) {
                match &axes {
                    Some(a) => k::unsqueeze_shape(s, a)?,
                    None => bail!("Unsqueeze needs axes"),
                }
            } else {
                k::squeeze_shape(s, axes.as_deref())?
            };
            vec![Fact::new(dt, out)]
        }
        Op::Flatten { axis } => match &x.shape {
            Some(s) => vec![Fact::new(dt, k::flatten_shape(s, *axis)?)],
            None => return unknown(),
        },
        Op::Reshape { allowzero } => {
            let spec = match value_of(1)? {
                Val::Known(v) => v,
                Val::Absent => bail!("missing required input 1 (shape)"),
                Val::Unknown => return unknown(),
            };
            match &x.shape {
                Some(s) => vec![Fact::new(dt, k::reshape_shape(s, &spec, *allowzero)?)],
                // Without the input shape the target is still exact when it has no 0 or -1
                // (a 0 with allowzero is a literal 0).
                None if spec.iter().all(|&d| d > 0 || (d == 0 && *allowzero)) => {
                    vec![Fact::new(dt, crate::tensor::limits::dims_from_i64(&spec)?)]
                }
                None => return unknown(),
            }
        }
        Op::Transpose { perm } => match &x.shape {
            Some(s) => {
                let p = k::transpose_perm(s.len(), perm.as_deref())?;
                vec![Fact::new(dt, p.iter().map(|&i| s[i]).collect())]
            }
            None => return unknown(),
        },
        Op::Shape { start, end } => match &x.shape {
            // The whole point of Shape's fact: its value, so later shape arithmetic folds.
            Some(s) => return Ok(vec![Fact::of_tensor(&shape_tensor(s, *start, *end)?)]),
            None => return Ok(vec![Fact::unknown_shape(DType::I64)]),
        },
        Op::Gather { axis } => {
            let idx = input(inputs, 1, "indices")?;
            if !idx.dtype.is_int() {
                bail!("Gather indices must be integers, got {}", idx.dtype);
            }
            match (&x.shape, &idx.shape) {
                (Some(d), Some(i)) => {
                    // Known indices are bounds-checked now rather than at run time.
                    if let Some(v) = &idx.value {
                        let dim = d[norm_axis(*axis, d.len())?] as i64;
                        if let Some(bad) =
                            v.to_i64_vec()?.into_iter().find(|&j| j < -dim || j >= dim)
                        {
                            bail!(
                                "Gather index {bad} is out of range for axis {axis} of size {dim}"
                            );
                        }
                    }
                    vec![Fact::new(dt, k::gather_shape(d, i, *axis)?)]
                }
                _ => return unknown(),
            }
        }
        Op::Slice => {
            let mut v = Vec::with_capacity(4);
            for i in 1..=4 {
                match value_of(i)? {
                    Val::Known(x) => v.push(Some(x)),
                    Val::Absent if i >= 3 => v.push(None),
                    Val::Absent => bail!("missing required input {i} of Slice"),
                    Val::Unknown => return unknown(),
                }
            }
            let Some(s) = &x.shape else { return unknown() };
            let (starts, ends) = (
                v[0].as_deref().expect("required"),
                v[1].as_deref().expect("required"),
            );
            let plan = k::slice_plan(s, starts, ends, v[2].as_deref(), v[3].as_deref())?;
            vec![Fact::new(dt, k::slice_out_shape(s, &plan))]
        }
        Op::Split { axis, split } => {
            let from_input = match (split, value_of(1)?) {
                (None, Val::Known(v)) => Some(v),
                (None, Val::Unknown) => return Ok(vec![Fact::unknown_shape(dt); n_outputs]),
                _ => None,
            };
            let Some(s) = &x.shape else {
                return Ok(vec![Fact::unknown_shape(dt); n_outputs]);
            };
            let ax = norm_axis(*axis, s.len())?;
            let sizes = k::split_sizes(s[ax], split.as_deref(), from_input.as_deref(), n_outputs)?;
            sizes
                .iter()
                .map(|&n| {
                    let mut o = s.clone();
                    o[ax] = n;
                    Fact::new(dt, o)
                })
                .collect()
        }
        Op::Pad(a) => {
            if let Some(v) = inputs.get(2).copied().flatten() {
                if v.dtype != dt {
                    bail!("Pad constant_value is {}, the data {dt}", v.dtype);
                }
            }
            let pads = match (&a.pads, value_of(1)?) {
                (Some(p), Val::Absent) => p.clone(),
                (Some(_), _) => bail!("pads given both as attribute and as input"),
                (None, Val::Known(p)) => p,
                (None, Val::Absent) => bail!("missing required input 1 (pads)"),
                (None, Val::Unknown) => return unknown(),
            };
            let axes = match value_of(3)? {
                Val::Known(v) => Some(v),
                Val::Absent => None,
                Val::Unknown => return unknown(),
            };
            let Some(s) = &x.shape else { return unknown() };
            let amounts = k::pad_amounts(s.len(), &pads, axes.as_deref())?;
            vec![Fact::new(dt, k::pad_shape(s, &amounts)?)]
        }
        other => bail!("layout shape rule cannot handle {}", other.name()),
    };
    fold(op, inputs, n_outputs, facts)
}

enum Val {
    Absent,
    Unknown,
    Known(Vec<i64>),
}

fn shape_tensor(s: &[usize], start: i64, end: Option<i64>) -> Result<Tensor> {
    let v = k::shape_of(s, start, end);
    Tensor::from_vec(&[v.len()], v)
}

/// Constant folding: when every present input's value is known and the outputs are small,
/// runs the kernel and returns facts carrying the values; otherwise returns `facts`.
/// The folded shapes must agree with the rule's (they come from the same arithmetic).
pub(super) fn fold(
    op: &Op,
    inputs: &[Option<&Fact>],
    n_outputs: usize,
    facts: Vec<Fact>,
) -> Result<Vec<Fact>> {
    let small = facts.iter().all(|f| {
        f.shape.as_ref().is_some_and(|s| {
            s.iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .is_some_and(|n| n <= MAX_FACT_VALUE_LEN)
        })
    });
    if !small || inputs.first().copied().flatten().is_none() {
        return Ok(facts);
    }
    let mut values: Vec<Option<Arc<Tensor>>> = Vec::with_capacity(inputs.len());
    for f in inputs {
        match f {
            None => values.push(None),
            Some(f) => match &f.value {
                Some(v) => values.push(Some(v.clone())),
                None => return Ok(facts),
            },
        }
    }
    let refs: Vec<Option<&Tensor>> = values.iter().map(|v| v.as_deref()).collect();
    let out = crate::kernels::eval(op, &refs, n_outputs)?;
    let folded: Vec<Fact> = out.iter().map(Fact::of_tensor).collect();
    for (f, g) in facts.iter().zip(&folded) {
        if f.shape != g.shape || f.dtype != g.dtype {
            bail!(
                "internal: folded {} gives {g}, the shape rule {f}",
                op.name()
            );
        }
    }
    Ok(folded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(shape: &[usize], v: Vec<i64>) -> Fact {
        Fact::of_tensor(&Tensor::from_vec(shape, v).unwrap())
    }

    #[test]
    fn shape_gives_value() {
        let x = Fact::new(DType::F32, vec![1, 3, 224, 224]);
        let r = infer(
            &Op::Shape {
                start: 1,
                end: Some(-1),
            },
            &[Some(&x)],
            1,
        )
        .unwrap();
        assert_eq!(r[0].shape, Some(vec![2]));
        assert_eq!(
            r[0].value.as_deref(),
            Some(&Tensor::from_vec(&[2], vec![3i64, 224]).unwrap())
        );
        let u = Fact::unknown_shape(DType::F32);
        assert_eq!(
            infer(
                &Op::Shape {
                    start: 0,
                    end: None
                },
                &[Some(&u)],
                1
            )
            .unwrap()[0]
                .shape,
            None
        );
    }

    #[test]
    fn reshape_from_known_value() {
        let x = Fact::new(DType::F32, vec![2, 3, 4]);
        let s = val(&[2], vec![0, -1]);
        let r = infer(&Op::Reshape { allowzero: false }, &[Some(&x), Some(&s)], 1).unwrap();
        assert_eq!(r[0].shape, Some(vec![2, 12]));
        // Unknown shape value: unknown output, not an error.
        let s = Fact::new(DType::I64, vec![2]);
        let r = infer(&Op::Reshape { allowzero: false }, &[Some(&x), Some(&s)], 1).unwrap();
        assert_eq!(r[0].shape, None);
    }

    #[test]
    fn shape_gather_concat_folds() {
        let x = Fact::new(DType::F32, vec![5, 6, 7]);
        let sh = infer(
            &Op::Shape {
                start: 0,
                end: None,
            },
            &[Some(&x)],
            1,
        )
        .unwrap()
        .remove(0);
        let i = val(&[1], vec![-1]);
        let g = infer(&Op::Gather { axis: 0 }, &[Some(&sh), Some(&i)], 1)
            .unwrap()
            .remove(0);
        assert_eq!(
            g.value.as_deref(),
            Some(&Tensor::from_vec(&[1], vec![7i64]).unwrap())
        );
        let m = val(&[1], vec![-1]);
        let c = infer(&Op::Concat { axis: 0 }, &[Some(&m), Some(&g)], 1)
            .unwrap()
            .remove(0);
        let r = infer(&Op::Reshape { allowzero: false }, &[Some(&x), Some(&c)], 1).unwrap();
        assert_eq!(r[0].shape, Some(vec![30, 7]));
    }

    #[test]
    fn pad_facts() {
        let x = Fact::new(DType::F32, vec![1, 3, 4, 5]);
        let op = Op::Pad(crate::ir::PadAttrs {
            mode: crate::ir::PadMode::Reflect,
            pads: None,
            value: 0.0,
        });
        let pads = val(&[4], vec![1, 2, 0, -1]);
        let axes = val(&[2], vec![2, 3]);
        let r = infer(&op, &[Some(&x), Some(&pads), None, Some(&axes)], 1).unwrap();
        assert_eq!(r[0].shape, Some(vec![1, 3, 5, 6]));
        // Pads known only at run time: shape unknown, not an error.
        let p = Fact::new(DType::I64, vec![8]);
        let r = infer(&op, &[Some(&x), Some(&p)], 1).unwrap();
        assert_eq!(r[0].shape, None);
        let crop = val(&[4], vec![0, 0, -5, 0]);
        assert!(infer(&op, &[Some(&x), Some(&crop), None, Some(&axes)], 1).is_err());
    }

    #[test]
    fn slice_and_split_facts() {
        let x = Fact::new(DType::F32, vec![4, 10]);
        let (s, e, a, st) = (
            val(&[1], vec![-1]),
            val(&[1], vec![-100]),
            val(&[1], vec![1]),
            val(&[1], vec![-3]),
        );
        let r = infer(
            &Op::Slice,
            &[Some(&x), Some(&s), Some(&e), Some(&a), Some(&st)],
            1,
        )
        .unwrap();
        assert_eq!(r[0].shape, Some(vec![4, 4])); // 9, 6, 3, 0
        let r = infer(
            &Op::Split {
                axis: 1,
                split: None,
            },
            &[Some(&x)],
            4,
        )
        .unwrap();
        let dims: Vec<usize> = r.iter().map(|f| f.shape.as_ref().unwrap()[1]).collect();
        assert_eq!(dims, vec![3, 3, 3, 1]);
    }
}
