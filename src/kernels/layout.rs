//! Layout kernels: ops that move, select or relabel elements without arithmetic. They work
//! on every dtype (bool included) through `with_tensor!`/`map_tensor!`.
//!
//! The shape arithmetic lives in `pub(crate)` functions here so that the shape rules in
//! `ir::infer::layout` use exactly the same logic as the kernels.

use crate::ir::infer::norm_axis;
use crate::ir::{Op, PadMode};
use crate::tensor::{limits, Elem, Tensor};
use anyhow::{anyhow, bail, Result};
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice};

use super::input;

/// Whether `op` only gives its data input another shape (Unsqueeze, Squeeze, Flatten,
/// Reshape): same elements, same row-major order.
pub fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Unsqueeze { .. } | Op::Squeeze { .. } | Op::Flatten { .. } | Op::Reshape { .. }
    )
}

/// The output shape of a view op ([`is_view`]) on data of shape `x` (its data input may
/// be absent from `inputs`: taken by [`eval_owned`]).
fn view_shape(op: &Op, x: &[usize], inputs: &[Option<&Tensor>]) -> Result<Vec<usize>> {
    match op {
        Op::Unsqueeze { axes } => {
            let axes = axes_from(axes.as_deref(), inputs.get(1).copied().flatten())?
                .ok_or_else(|| anyhow!("Unsqueeze needs axes"))?;
            unsqueeze_shape(x, &axes)
        }
        Op::Squeeze { axes } => {
            let axes = axes_from(axes.as_deref(), inputs.get(1).copied().flatten())?;
            squeeze_shape(x, axes.as_deref())
        }
        Op::Flatten { axis } => flatten_shape(x, *axis),
        Op::Reshape { allowzero } => {
            let spec = input(inputs, 1, "shape")?.to_i64_vec()?;
            reshape_shape(x, &spec, *allowzero)
        }
        _ => bail!("{} is not a view op", op.name()),
    }
}

/// A view op on data the caller gives up (it dies at this node): its buffer takes the new
/// shape without a copy (ShuffleNet's channel-shuffle Reshapes copied 0.22 ms per run).
pub fn eval_owned(op: &Op, x: Tensor, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let shape = view_shape(op, x.shape(), inputs)?;
    x.reshape(&shape)
}

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    let x = || input(inputs, 0, "data");
    let out = match op {
        Op::Identity => x()?.clone(),
        Op::Stack { axis } => stack(&all_inputs(inputs)?, *axis)?,
        Op::Concat { axis } => concat(&all_inputs(inputs)?, *axis)?,
        op if is_view(op) => {
            let x = x()?;
            x.clone().reshape(&view_shape(op, x.shape(), inputs)?)?
        }
        Op::Transpose { perm } => {
            let x = x()?;
            let perm = transpose_perm(x.rank(), perm.as_deref())?;
            crate::map_tensor!(x, a => transpose_runs(a, &perm))
        }
        Op::Shape { start, end } => {
            let s = shape_of(x()?.shape(), *start, *end);
            Tensor::from_vec(&[s.len()], s)?
        }
        Op::Gather { axis } => {
            let idx = input(inputs, 1, "indices")?;
            gather(x()?, idx, *axis)?
        }
        Op::Slice => {
            let x = x()?;
            let v = |i: usize| -> Result<Option<Vec<i64>>> {
                inputs
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|t| t.to_i64_vec())
                    .transpose()
            };
            let starts = v(1)?.ok_or_else(|| anyhow!("missing required input 1 (starts)"))?;
            let ends = v(2)?.ok_or_else(|| anyhow!("missing required input 2 (ends)"))?;
            let plan = slice_plan(
                x.shape(),
                &starts,
                &ends,
                v(3)?.as_deref(),
                v(4)?.as_deref(),
            )?;
            slice(x, &plan)
        }
        Op::Split { axis, split } => {
            let x = x()?;
            let from_input = inputs
                .get(1)
                .copied()
                .flatten()
                .map(|t| t.to_i64_vec())
                .transpose()?;
            let ax = norm_axis(*axis, x.rank())?;
            let sizes = split_sizes(
                x.shape()[ax],
                split.as_deref(),
                from_input.as_deref(),
                n_outputs,
            )?;
            return Ok(split_tensor(x, ax, &sizes));
        }
        Op::Pad(a) => {
            let x = x()?;
            let pads = match (&a.pads, opt_ints(inputs, 1)?) {
                (Some(p), None) => p.clone(),
                (None, Some(p)) => p,
                (Some(_), Some(_)) => bail!("pads given both as attribute and as input"),
                (None, None) => bail!("missing required input 1 (pads)"),
            };
            let amounts = pad_amounts(x.rank(), &pads, opt_ints(inputs, 3)?.as_deref())?;
            let value = inputs.get(2).copied().flatten();
            pad(x, &amounts, a.mode, value, a.value)?
        }
        other => bail!("layout kernel cannot run {}", other.name()),
    };
    Ok(vec![out])
}

/// All inputs of a variadic op, none of which may be absent.
fn all_inputs<'a>(inputs: &[Option<&'a Tensor>]) -> Result<Vec<&'a Tensor>> {
    if inputs.is_empty() {
        bail!("needs at least one input");
    }
    (0..inputs.len())
        .map(|i| input(inputs, i, "input"))
        .collect()
}

/// Optional input `i` as i64s (pads, axes ...).
fn opt_ints(inputs: &[Option<&Tensor>], i: usize) -> Result<Option<Vec<i64>>> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .map(|t| t.to_i64_vec())
        .transpose()
}

/// Axes from the attribute or (opset >= 13) the optional second input.
fn axes_from(attr: Option<&[i64]>, t: Option<&Tensor>) -> Result<Option<Vec<i64>>> {
    Ok(match (attr, t) {
        (Some(a), _) => Some(a.to_vec()),
        (None, Some(t)) => Some(t.to_i64_vec()?),
        (None, None) => None,
    })
}

/// Normalizes axes against `rank`, refusing duplicates.
fn norm_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut v = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = norm_axis(a, rank)?;
        if v.contains(&n) {
            bail!("duplicate axis {a} in {axes:?}");
        }
        v.push(n);
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// Shape arithmetic shared with the shape rules.

/// Concat: ranks equal, dims equal except along `axis`, which adds up.
pub(crate) fn concat_shape(shapes: &[&[usize]], axis: i64) -> Result<Vec<usize>> {
    let first = shapes
        .first()
        .ok_or_else(|| anyhow!("Concat needs at least one input"))?;
    let ax = norm_axis(axis, first.len())?;
    let mut out = first.to_vec();
    for s in &shapes[1..] {
        if s.len() != first.len() || (0..s.len()).any(|i| i != ax && s[i] != first[i]) {
            bail!("Concat inputs {first:?} and {s:?} differ outside axis {axis}");
        }
        out[ax] = out[ax]
            .checked_add(s[ax])
            .ok_or_else(|| anyhow!("Concat size overflow"))?;
    }
    Ok(out)
}

/// Stack: equal shapes joined along a new axis in `[-(r+1), r]`.
pub(crate) fn stack_shape(shapes: &[&[usize]], axis: i64) -> Result<Vec<usize>> {
    let first = shapes
        .first()
        .ok_or_else(|| anyhow!("Stack needs at least one input"))?;
    if let Some(s) = shapes.iter().find(|s| *s != first) {
        bail!("Stack inputs must have one shape, got {first:?} and {s:?}");
    }
    let ax = norm_axis(axis, first.len() + 1)?;
    let mut out = first.to_vec();
    out.insert(ax, shapes.len());
    Ok(out)
}

/// Unsqueeze: axes index the output, whose rank is the input's plus the number of axes.
pub(crate) fn unsqueeze_shape(shape: &[usize], axes: &[i64]) -> Result<Vec<usize>> {
    let r = shape.len() + axes.len();
    let axes = norm_axes(axes, r)?;
    let mut it = shape.iter();
    Ok((0..r)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                *it.next().expect("counted")
            }
        })
        .collect())
}

/// Squeeze: the given axes must be 1; without axes every 1 is removed.
pub(crate) fn squeeze_shape(shape: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>> {
    match axes {
        None => Ok(shape.iter().copied().filter(|&d| d != 1).collect()),
        Some(axes) => {
            let axes = norm_axes(axes, shape.len())?;
            if let Some(&a) = axes.iter().find(|&&a| shape[a] != 1) {
                bail!("cannot squeeze axis {a} of size {} in {shape:?}", shape[a]);
            }
            Ok((0..shape.len())
                .filter(|i| !axes.contains(i))
                .map(|i| shape[i])
                .collect())
        }
    }
}

/// Flatten: `[prod(dims[..axis]), prod(dims[axis..])]`, axis in `[-r, r]`.
pub(crate) fn flatten_shape(shape: &[usize], axis: i64) -> Result<Vec<usize>> {
    // Negative axes count from the rank itself (not rank + 1): -1 keeps the last dim apart.
    let r = shape.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        bail!("Flatten axis {axis} is out of range for rank {r}");
    }
    let ax = a as usize;
    Ok(vec![
        limits::checked_numel(&shape[..ax])?,
        limits::checked_numel(&shape[ax..])?,
    ])
}

/// Reshape's target: 0 copies the input dim at that index (unless `allowzero`), one -1 is
/// inferred from the element count.
pub(crate) fn reshape_shape(shape: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let total = limits::checked_numel(shape)?;
    if allowzero && spec.contains(&0) && spec.contains(&-1) {
        bail!("Reshape with allowzero cannot have both 0 and -1 in {spec:?}");
    }
    let mut infer_at = None;
    let mut out = Vec::with_capacity(spec.len());
    for (i, &d) in spec.iter().enumerate() {
        out.push(match d {
            -1 => {
                if infer_at.replace(i).is_some() {
                    bail!("Reshape shape {spec:?} has more than one -1");
                }
                1
            }
            0 if !allowzero => *shape.get(i).ok_or_else(|| {
                anyhow!("Reshape shape {spec:?}: 0 at {i} has no input dim to copy from {shape:?}")
            })?,
            d if d < 0 => bail!("Reshape shape {spec:?} has invalid dim {d}"),
            d => usize::try_from(d)?,
        });
    }
    let known = limits::checked_numel(&out)?;
    if let Some(i) = infer_at {
        if known == 0 || total % known != 0 {
            bail!("cannot reshape {shape:?} to {spec:?}");
        }
        out[i] = total / known;
    } else if known != total {
        bail!("cannot reshape {shape:?} ({total} elements) to {spec:?}");
    }
    Ok(out)
}

/// Transpose's permutation: the given one checked, or the reversed axes.
pub(crate) fn transpose_perm(rank: usize, perm: Option<&[usize]>) -> Result<Vec<usize>> {
    match perm {
        None => Ok((0..rank).rev().collect()),
        Some(p) => {
            let mut seen = vec![false; rank];
            if p.len() != rank
                || p.iter()
                    .any(|&a| a >= rank || std::mem::replace(&mut seen[a], true))
            {
                bail!("perm {p:?} is not a permutation of {rank} axes");
            }
            Ok(p.to_vec())
        }
    }
}

/// Shape's output: the dims in `[start, end)`, both clamped into `[0, rank]` after negative
/// indices are counted from the end.
pub(crate) fn shape_of(shape: &[usize], start: i64, end: Option<i64>) -> Vec<i64> {
    let r = shape.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    shape[s..e.max(s)].iter().map(|&d| d as i64).collect()
}

/// Gather: the indexed axis replaced by the indices' shape.
pub(crate) fn gather_shape(data: &[usize], indices: &[usize], axis: i64) -> Result<Vec<usize>> {
    let ax = norm_axis(axis, data.len())?;
    Ok(data[..ax]
        .iter()
        .chain(indices)
        .chain(&data[ax + 1..])
        .copied()
        .collect())
}

/// One sliced axis: elements `start, start + step, ...`, `len` of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AxisSlice {
    pub axis: usize,
    pub start: i64,
    pub step: i64,
    pub len: usize,
}

/// ONNX Slice's clamping rules, per axis.
pub(crate) fn slice_plan(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Vec<AxisSlice>> {
    let n = starts.len();
    if ends.len() != n {
        bail!("Slice starts {starts:?} and ends {ends:?} differ in length");
    }
    let axes = match axes {
        Some(a) if a.len() != n => bail!("Slice axes {a:?} and starts {starts:?} differ in length"),
        Some(a) => norm_axes(a, shape.len())?,
        None if n > shape.len() => bail!("Slice has {n} starts for rank {}", shape.len()),
        None => (0..n).collect(),
    };
    if let Some(s) = steps {
        if s.len() != n {
            bail!("Slice steps {s:?} and starts {starts:?} differ in length");
        }
    }
    (0..n)
        .map(|i| {
            let axis = axes[i];
            let dim = shape[axis] as i64;
            let step = steps.map_or(1, |s| s[i]);
            if step == 0 {
                bail!("Slice step cannot be 0");
            }
            let fix = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
            let (start, end) = (fix(starts[i]), fix(ends[i]));
            let (start, len) = if step > 0 {
                let (s, e) = (start.clamp(0, dim), end.clamp(0, dim));
                (s, if e > s { (e - s - 1) / step + 1 } else { 0 })
            } else if dim == 0 {
                // Nothing to walk backwards over (and `clamp(0, -1)` would panic).
                (0, 0)
            } else {
                let (s, e) = (start.clamp(0, dim - 1), end.clamp(-1, dim - 1));
                // `unsigned_abs` because `-i64::MIN` overflows.
                let n = if s > e {
                    (s - e - 1) as u64 / step.unsigned_abs() + 1
                } else {
                    0
                };
                (s, n as i64)
            };
            Ok(AxisSlice {
                axis,
                start: start.max(0),
                step,
                len: len as usize,
            })
        })
        .collect()
}

pub(crate) fn slice_out_shape(shape: &[usize], plan: &[AxisSlice]) -> Vec<usize> {
    let mut out = shape.to_vec();
    for s in plan {
        out[s.axis] = s.len;
    }
    out
}

/// Split sizes: the attribute, else the second input, else an even split over the outputs
/// where, as in opset 18, chunks are `ceil(dim / n)` and the last one takes the remainder.
pub(crate) fn split_sizes(
    dim: usize,
    attr: Option<&[usize]>,
    input: Option<&[i64]>,
    n_outputs: usize,
) -> Result<Vec<usize>> {
    let sizes: Vec<usize> = match (attr, input) {
        (Some(a), _) => a.to_vec(),
        (None, Some(v)) => limits::dims_from_i64(v)?,
        (None, None) => {
            if n_outputs == 0 {
                bail!("Split needs at least one output");
            }
            let chunk = dim.div_ceil(n_outputs);
            let before = chunk * (n_outputs - 1);
            if before > dim {
                bail!("cannot split {dim} into {n_outputs} outputs of {chunk} with a smaller last one");
            }
            let mut v = vec![chunk; n_outputs - 1];
            v.push(dim - before);
            v
        }
    };
    if sizes.len() != n_outputs {
        bail!("Split into {sizes:?} but the node has {n_outputs} outputs");
    }
    if sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(dim) {
        bail!("Split sizes {sizes:?} do not add up to {dim}");
    }
    Ok(sizes)
}

/// Pad's `(begin, end)` per axis from ONNX's `[begin_0.., end_0..]` over `axes` (all axes
/// when absent); axes not named get `(0, 0)`. Negative amounts crop.
pub(crate) fn pad_amounts(
    rank: usize,
    pads: &[i64],
    axes: Option<&[i64]>,
) -> Result<Vec<(i64, i64)>> {
    let axes = match axes {
        Some(a) => norm_axes(a, rank)?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        bail!(
            "Pad has {} pads for {} axes (expected begin and end for each)",
            pads.len(),
            axes.len()
        );
    }
    let mut out = vec![(0, 0); rank];
    for (k, &ax) in axes.iter().enumerate() {
        out[ax] = (pads[k], pads[k + axes.len()]);
    }
    Ok(out)
}

/// Pad's output shape: `dim + begin + end` per axis, refused when negative (cropped away
/// more than exists). i128 because both amounts come from a file and may be extreme.
pub(crate) fn pad_shape(shape: &[usize], amounts: &[(i64, i64)]) -> Result<Vec<usize>> {
    if amounts.len() != shape.len() {
        bail!(
            "Pad amounts for {} axes, input rank {}",
            amounts.len(),
            shape.len()
        );
    }
    shape
        .iter()
        .zip(amounts)
        .map(|(&d, &(b, e))| {
            let n = d as i128 + b as i128 + e as i128;
            usize::try_from(n).map_err(|_| {
                anyhow!("Pad ({b}, {e}) of an axis of size {d} gives size {n}, which cannot be")
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Kernels

fn same_dtype(ts: &[&Tensor]) -> Result<()> {
    if let Some(t) = ts.iter().find(|t| t.dtype() != ts[0].dtype()) {
        bail!(
            "inputs must share a dtype, got {} and {}",
            ts[0].dtype(),
            t.dtype()
        );
    }
    Ok(())
}

/// Views of every tensor as `ArrayD<T>`, `T` being the first tensor's element type.
fn views<'a, T: Elem>(_first: &ArrayD<T>, ts: &[&'a Tensor]) -> Result<Vec<ArrayViewD<'a, T>>> {
    ts.iter().map(|t| Ok(t.view::<T>()?.view())).collect()
}

pub fn concat(ts: &[&Tensor], axis: i64) -> Result<Tensor> {
    same_dtype(ts)?;
    let shapes: Vec<&[usize]> = ts.iter().map(|t| t.shape()).collect();
    let out = concat_shape(&shapes, axis)?;
    limits::check_alloc(&out, ts[0].dtype())?;
    let ax = norm_axis(axis, ts[0].rank())?;
    Ok(crate::with_tensor!(ts[0], a => {
        let v = views(a, ts)?;
        Tensor::from(concat_runs(&v, ax, &out))
    }))
}

/// [`concat`] of `ts` given `prefix`, a dead tensor holding the concat of `ts[..k]` along
/// the same axis (the plan's `extends`: DenseNet concatenates every earlier feature map
/// again in each layer). When everything before the axis has size 1, the output is
/// `prefix`'s buffer with `ts[k..]` appended: only the new inputs are copied, where the
/// plain concat copies all of them again (its layers' Concats went from quadratic to linear
/// in the copies). Otherwise, or when `prefix` is not what it should be, the plain concat.
pub fn concat_extending(prefix: Tensor, k: usize, ts: &[&Tensor], axis: i64) -> Result<Tensor> {
    same_dtype(ts)?;
    let shapes: Vec<&[usize]> = ts.iter().map(|t| t.shape()).collect();
    let out = concat_shape(&shapes, axis)?;
    limits::check_alloc(&out, ts[0].dtype())?;
    let ax = norm_axis(axis, ts[0].rank())?;
    let fits = k > 0
        && k < ts.len()
        && prefix.dtype() == ts[0].dtype()
        && out[..ax].iter().all(|&d| d == 1)
        && concat_shape(&shapes[..k], axis).is_ok_and(|p| p == prefix.shape());
    if !fits {
        return concat(ts, axis);
    }
    Ok(crate::map_tensor!(prefix, a => {
        let rest = views(&a, &ts[k..])?;
        let (mut v, offset) = if a.is_standard_layout() {
            a.into_raw_vec_and_offset()
        } else {
            (a.as_standard_layout().to_owned().into_raw_vec_and_offset().0, Some(0))
        };
        if offset.unwrap_or(0) != 0 {
            // A view into a larger buffer: its elements start past the first.
            v.drain(..offset.unwrap_or(0));
        }
        v.truncate(shapes[..k].iter().map(|s| s.iter().product::<usize>()).sum());
        let extra: usize = rest.iter().map(|r| r.len()).sum();
        v.reserve(extra);
        for r in &rest {
            let r = r.as_standard_layout();
            v.extend_from_slice(r.as_slice().expect("standard layout"));
        }
        ArrayD::from_shape_vec(IxDyn(&out), v).expect("sizes add up")
    }))
}

/// Concat as copies of contiguous runs: in row-major order the output is, for each index
/// over the axes before `ax`, each input's block (its `ax` dim times the trailing dims) in
/// turn.
fn concat_runs<T: Elem>(v: &[ArrayViewD<T>], ax: usize, out_shape: &[usize]) -> ArrayD<T> {
    let outer: usize = out_shape[..ax].iter().product();
    let inner: usize = out_shape[ax + 1..].iter().product();
    let parts: Vec<_> = v.iter().map(|a| a.as_standard_layout()).collect();
    let parts: Vec<(&[T], usize)> = parts
        .iter()
        .map(|a| {
            (
                a.as_slice().expect("standard layout"),
                a.shape()[ax] * inner,
            )
        })
        .collect();
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for o in 0..outer {
        for &(s, run) in &parts {
            out.extend_from_slice(&s[o * run..(o + 1) * run]);
        }
    }
    ArrayD::from_shape_vec(IxDyn(out_shape), out).expect("sizes add up")
}

/// Transpose as copies of contiguous runs: axes of size 1 are dropped, then the trailing
/// output axes that are also trailing and in order in the input form one run, copied whole
/// for each index over the other axes. A permuted innermost axis (run of 1) goes through
/// ndarray's element-by-element copy.
fn transpose_runs<T: Elem>(a: &ArrayD<T>, perm: &[usize]) -> ArrayD<T> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| a.shape()[p]).collect();
    // Input axes that are not 1, and the permutation restricted to them (renumbered).
    let kept: Vec<usize> = (0..a.ndim()).filter(|&i| a.shape()[i] != 1).collect();
    let perm_k: Vec<usize> = perm
        .iter()
        .filter(|&&p| a.shape()[p] != 1)
        .map(|p| kept.iter().position(|k| k == p).expect("kept"))
        .collect();
    let dims: Vec<usize> = kept.iter().map(|&i| a.shape()[i]).collect();
    let r = dims.len();
    // The trailing output axes j.. that read the input's trailing axes j.. in order.
    let mut j = r;
    while j > 0 && perm_k[j - 1] == j - 1 {
        j -= 1;
    }
    let run: usize = dims[j..].iter().product();
    if r == 0 || j == r || run < 8 {
        return a
            .view()
            .permuted_axes(IxDyn(perm))
            .as_standard_layout()
            .into_owned();
    }
    let a = a.as_standard_layout();
    let src = a.as_slice().expect("standard layout");
    // Row-major element strides of the (kept) input axes.
    let mut stride = vec![1usize; r];
    for i in (0..r.saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * dims[i + 1];
    }
    let outer_dims: Vec<usize> = perm_k[..j].iter().map(|&p| dims[p]).collect();
    let outer_strides: Vec<usize> = perm_k[..j].iter().map(|&p| stride[p]).collect();
    let total: usize = dims.iter().product();
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; j];
    let mut off = 0usize;
    while out.len() < total {
        out.extend_from_slice(&src[off..off + run]);
        // Odometer over the outer output axes, keeping `off` in step.
        for k in (0..j).rev() {
            idx[k] += 1;
            off += outer_strides[k];
            if idx[k] < outer_dims[k] {
                break;
            }
            off -= outer_strides[k] * outer_dims[k];
            idx[k] = 0;
        }
    }
    ArrayD::from_shape_vec(IxDyn(&out_shape), out).expect("same element count")
}

pub fn stack(ts: &[&Tensor], axis: i64) -> Result<Tensor> {
    same_dtype(ts)?;
    let shapes: Vec<&[usize]> = ts.iter().map(|t| t.shape()).collect();
    let out = stack_shape(&shapes, axis)?;
    limits::check_alloc(&out, ts[0].dtype())?;
    let ax = norm_axis(axis, ts[0].rank() + 1)?;
    Ok(crate::with_tensor!(ts[0], a => {
        let v = views(a, ts)?;
        Tensor::from(standard(ndarray::stack(Axis(ax), &v)?))
    }))
}

fn standard<T: Clone>(a: ArrayD<T>) -> ArrayD<T> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// Gather along one axis; indices may be negative (counted from the end) and are checked.
pub fn gather(data: &Tensor, indices: &Tensor, axis: i64) -> Result<Tensor> {
    let idx = indices.to_i64_vec()?;
    let ax = norm_axis(axis, data.rank())?;
    let d = data.shape()[ax];
    let idx: Vec<usize> = idx
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + d as i64 } else { i };
            if j < 0 || j >= d as i64 {
                bail!("Gather index {i} is out of range for axis {axis} of size {d}");
            }
            Ok(j as usize)
        })
        .collect::<Result<_>>()?;
    let out_shape = gather_shape(data.shape(), indices.shape(), axis)?;
    limits::check_alloc(&out_shape, data.dtype())?;
    fn go<T: Elem>(a: &ArrayD<T>, ax: usize, idx: &[usize], out_shape: &[usize]) -> Tensor {
        let a = a.as_standard_layout();
        let s = a.as_slice().expect("standard layout");
        let d = a.shape()[ax];
        let inner: usize = a.shape()[ax + 1..].iter().product();
        let outer: usize = a.shape()[..ax].iter().product();
        // Row-major [outer, d, inner]: each index copies one contiguous run of `inner`.
        let mut out = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &i in idx {
                let base = (o * d + i) * inner;
                out.extend_from_slice(&s[base..base + inner]);
            }
        }
        T::wrap(ArrayD::from_shape_vec(IxDyn(out_shape), out).expect("count matches"))
    }
    Ok(crate::with_tensor!(data, a => go(a, ax, &idx, &out_shape)))
}

pub(crate) fn slice(x: &Tensor, plan: &[AxisSlice]) -> Tensor {
    fn go<T: Elem>(a: &ArrayD<T>, plan: &[AxisSlice]) -> ArrayD<T> {
        let mut v = a.view();
        for s in plan {
            let sl = if s.len == 0 {
                Slice::new(0, Some(0), 1)
            } else {
                // ndarray takes the range [lo, hi) and, for a negative step, walks it from
                // the end: with lo exactly the last element visited, that is ONNX's order.
                let last = s.start + (s.len as i64 - 1) * s.step;
                let (lo, hi) = if s.step > 0 {
                    (s.start, last + 1)
                } else {
                    (last, s.start + 1)
                };
                Slice::new(lo as isize, Some(hi as isize), s.step as isize)
            };
            v.slice_axis_inplace(Axis(s.axis), sl);
        }
        v.as_standard_layout().into_owned()
    }
    crate::map_tensor!(x, a => go(a, plan))
}

/// The input index an output position `i` (counted from the input's first element, so
/// negative inside the begin padding) reads, or `None` for the constant fill.
fn pad_source(i: i128, d: usize, mode: PadMode) -> Result<Option<usize>> {
    let n = d as i128;
    if (0..n).contains(&i) {
        return Ok(Some(i as usize));
    }
    let j = match mode {
        PadMode::Constant => return Ok(None),
        _ if d == 0 => bail!("cannot pad an empty axis in {mode:?} mode"),
        PadMode::Edge => i.clamp(0, n - 1),
        PadMode::Wrap => i.rem_euclid(n),
        PadMode::Reflect if d == 1 => 0,
        // Reflection is periodic with period 2(d-1); numpy's np.pad repeats it the same way
        // for pads wider than the axis.
        PadMode::Reflect => {
            let p = 2 * (n - 1);
            let m = i.rem_euclid(p);
            if m >= n {
                p - m
            } else {
                m
            }
        }
    };
    Ok(Some(j as usize))
}

/// ONNX Pad (numpy's `np.pad`) in any mode, for any dtype. `value` is the constant_value
/// input (a one-element tensor of the data's dtype); without it `attr_value` is the fill.
pub fn pad(
    x: &Tensor,
    amounts: &[(i64, i64)],
    mode: PadMode,
    value: Option<&Tensor>,
    attr_value: f64,
) -> Result<Tensor> {
    let out = pad_shape(x.shape(), amounts)?;
    let total = limits::check_alloc(&out, x.dtype())?;
    if let Some(v) = value {
        if v.dtype() != x.dtype() {
            bail!(
                "Pad constant_value is {}, the data {}",
                v.dtype(),
                x.dtype()
            );
        }
        if v.len() != 1 {
            bail!(
                "Pad constant_value must hold one element, got shape {:?}",
                v.shape()
            );
        }
    }
    if total == 0 {
        // Nothing to read; also keeps the per-axis maps below bounded by the element count.
        return Tensor::zeros(x.dtype(), &out);
    }
    // Per axis, the input index each output position reads.
    let maps: Vec<Vec<Option<usize>>> = out
        .iter()
        .enumerate()
        .map(|(ax, &len)| {
            (0..len)
                .map(|o| pad_source(o as i128 - amounts[ax].0 as i128, x.shape()[ax], mode))
                .collect()
        })
        .collect::<Result<_>>()?;
    fn go<T: Elem>(
        a: &ArrayD<T>,
        maps: &[Vec<Option<usize>>],
        out: &[usize],
        total: usize,
        fill: T,
    ) -> Tensor {
        let a = a.as_standard_layout();
        let src = a.as_slice().expect("standard layout");
        let mut strides = vec![1usize; out.len()];
        for ax in (0..out.len().saturating_sub(1)).rev() {
            strides[ax] = strides[ax + 1] * a.shape()[ax + 1];
        }
        let mut idx = vec![0usize; out.len()];
        let mut data = Vec::with_capacity(total);
        for _ in 0..total {
            let mut off = Some(0);
            for ax in 0..out.len() {
                off = match (off, maps[ax][idx[ax]]) {
                    (Some(o), Some(i)) => Some(o + i * strides[ax]),
                    _ => None,
                };
            }
            data.push(off.map_or(fill, |o| src[o]));
            // Row-major odometer over the output index.
            for ax in (0..out.len()).rev() {
                idx[ax] += 1;
                if idx[ax] < out[ax] {
                    break;
                }
                idx[ax] = 0;
            }
        }
        T::wrap(ArrayD::from_shape_vec(IxDyn(out), data).expect("count matches"))
    }
    Ok(crate::with_tensor!(x, a => {
        let fill = match value {
            Some(v) => *v.view()?.iter().next().expect("one element"),
            None => Elem::from_f64(attr_value),
        };
        go(a, &maps, &out, total, fill)
    }))
}

fn split_tensor(x: &Tensor, ax: usize, sizes: &[usize]) -> Vec<Tensor> {
    let mut at = 0;
    sizes
        .iter()
        .map(|&n| {
            let plan = [AxisSlice {
                axis: ax,
                start: at as i64,
                step: 1,
                len: n,
            }];
            at += n;
            slice(x, &plan)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize]) -> Tensor {
        let n = shape.iter().product::<usize>() as i64;
        Tensor::from_vec(shape, (0..n).collect()).unwrap()
    }
    fn i64s(t: &Tensor) -> Vec<i64> {
        t.to_i64_vec().unwrap()
    }
    fn run(op: Op, inputs: &[Option<&Tensor>], n: usize) -> Vec<Tensor> {
        eval(&op, inputs, n).unwrap()
    }

    #[test]
    fn concat_and_stack() {
        let a = iota(&[2, 1]);
        let b = Tensor::from_vec(&[2, 2], vec![10i64, 11, 12, 13]).unwrap();
        let r = run(Op::Concat { axis: -1 }, &[Some(&a), Some(&b)], 1);
        assert_eq!(r[0].shape(), &[2, 3]);
        assert_eq!(i64s(&r[0]), vec![0, 10, 11, 1, 12, 13]);
        let c = Tensor::from_vec(&[2], vec![5i64, 6]).unwrap();
        let d = Tensor::from_vec(&[2], vec![7i64, 8]).unwrap();
        let r = run(Op::Stack { axis: -1 }, &[Some(&c), Some(&d)], 1);
        assert_eq!(r[0].shape(), &[2, 2]);
        assert_eq!(i64s(&r[0]), vec![5, 7, 6, 8]);
        assert!(eval(&Op::Stack { axis: 0 }, &[Some(&c), Some(&a)], 1).is_err());
    }

    #[test]
    fn unsqueeze_squeeze_negative_axes() {
        let x = iota(&[2, 3]);
        let r = run(
            Op::Unsqueeze {
                axes: Some(vec![-1, 0]),
            },
            &[Some(&x)],
            1,
        );
        assert_eq!(r[0].shape(), &[1, 2, 3, 1]);
        let axes = Tensor::from_vec(&[2], vec![-4i64, -1]).unwrap();
        let r = run(Op::Squeeze { axes: None }, &[Some(&r[0]), Some(&axes)], 1);
        assert_eq!(r[0].shape(), &[2, 3]);
        assert!(eval(
            &Op::Squeeze {
                axes: Some(vec![-1])
            },
            &[Some(&x)],
            1
        )
        .is_err());
    }

    #[test]
    fn reshape_zero_and_minus_one() {
        let x = iota(&[2, 3, 4]);
        let s = Tensor::from_vec(&[3], vec![0i64, -1, 2]).unwrap();
        let r = run(Op::Reshape { allowzero: false }, &[Some(&x), Some(&s)], 1);
        assert_eq!(r[0].shape(), &[2, 6, 2]);
        assert_eq!(reshape_shape(&[2, 0], &[0, 3], true).unwrap(), vec![0, 3]);
        assert!(reshape_shape(&[2, 3], &[4, -1], false).is_err());
    }

    /// Concat and Transpose by contiguous runs against ndarray's element-by-element forms,
    /// over size-1 dims, every axis, permutations keeping or moving the innermost axis, and
    /// non-contiguous inputs.
    #[test]
    fn run_copies_match_ndarray() {
        let a = ArrayD::from_shape_fn(IxDyn(&[2, 3, 1, 4, 5]), |i| {
            (i[0] * 1000 + i[1] * 100 + i[2] * 50 + i[3] * 10 + i[4]) as i32
        });
        for perm in [
            vec![0, 1, 2, 3, 4],
            vec![1, 0, 2, 3, 4], // ShuffleNet's channel shuffle
            vec![0, 3, 2, 1, 4],
            vec![2, 0, 1, 3, 4],
            vec![4, 3, 2, 1, 0], // innermost axis moves
            vec![0, 1, 4, 3, 2],
            vec![0, 1, 3, 4, 2],
        ] {
            let want = a
                .view()
                .permuted_axes(IxDyn(&perm))
                .as_standard_layout()
                .into_owned();
            assert_eq!(transpose_runs(&a, &perm), want, "{perm:?}");
            let mut at = a.clone();
            at.swap_axes(0, 1);
            let want = at
                .view()
                .permuted_axes(IxDyn(&perm))
                .as_standard_layout()
                .into_owned();
            assert_eq!(transpose_runs(&at, &perm), want, "swapped {perm:?}");
        }
        let empty = ArrayD::<f32>::zeros(IxDyn(&[2, 0, 3]));
        assert_eq!(transpose_runs(&empty, &[1, 0, 2]).shape(), &[0, 2, 3]);
        for ax in 0..5 {
            let mut shape_b = a.shape().to_vec();
            shape_b[ax] = 2;
            let b = ArrayD::from_shape_fn(IxDyn(&shape_b), |i| {
                -((i[0] + i[1] + i[2] + i[3] + i[4]) as i32)
            });
            let mut at = a.clone();
            at.invert_axis(Axis(ax));
            let v = [a.view(), b.view(), at.view()];
            let want = ndarray::concatenate(Axis(ax), &v).unwrap();
            let mut out = a.shape().to_vec();
            out[ax] = want.shape()[ax];
            assert_eq!(concat_runs(&v, ax, &out), want, "axis {ax}");
        }
    }

    #[test]
    fn transpose_values() {
        let x = iota(&[2, 3]);
        let r = run(
            Op::Transpose {
                perm: Some(vec![1, 0]),
            },
            &[Some(&x)],
            1,
        );
        assert_eq!(r[0].shape(), &[3, 2]);
        assert_eq!(i64s(&r[0]), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn gather_negative_index_and_bounds() {
        let x = iota(&[3, 2]);
        let idx = Tensor::from_vec(&[2], vec![-1i32, 0]).unwrap();
        let r = run(Op::Gather { axis: 0 }, &[Some(&x), Some(&idx)], 1);
        assert_eq!(i64s(&r[0]), vec![4, 5, 0, 1]);
        let r = run(
            Op::Gather { axis: 1 },
            &[Some(&x), Some(&Tensor::scalar(-1i64))],
            1,
        );
        assert_eq!(r[0].shape(), &[3]);
        assert_eq!(i64s(&r[0]), vec![1, 3, 5]);
        let bad = Tensor::scalar(3i64);
        assert!(eval(&Op::Gather { axis: 0 }, &[Some(&x), Some(&bad)], 1).is_err());
    }

    #[test]
    fn slice_negative_step() {
        let x = iota(&[2, 5]);
        let t = |v: Vec<i64>| Tensor::from_vec(&[v.len()], v).unwrap();
        let (s, e, a, st) = (t(vec![-1]), t(vec![i64::MIN]), t(vec![1]), t(vec![-2]));
        let r = run(
            Op::Slice,
            &[Some(&x), Some(&s), Some(&e), Some(&a), Some(&st)],
            1,
        );
        assert_eq!(r[0].shape(), &[2, 3]);
        assert_eq!(i64s(&r[0]), vec![4, 2, 0, 9, 7, 5]);
        // Forward with clamped end.
        let (s, e) = (t(vec![1]), t(vec![100]));
        let r = run(
            Op::Slice,
            &[Some(&x), Some(&s), Some(&e), Some(&a), None],
            1,
        );
        assert_eq!(i64s(&r[0]), vec![1, 2, 3, 4, 6, 7, 8, 9]);
    }

    #[test]
    fn split_uneven() {
        let x = iota(&[5]);
        let r = run(
            Op::Split {
                axis: 0,
                split: None,
            },
            &[Some(&x)],
            3,
        );
        assert_eq!(
            r.iter().map(i64s).collect::<Vec<_>>(),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        let sizes = Tensor::from_vec(&[2], vec![1i64, 4]).unwrap();
        let r = run(
            Op::Split {
                axis: -1,
                split: None,
            },
            &[Some(&x), Some(&sizes)],
            2,
        );
        assert_eq!(i64s(&r[1]), vec![1, 2, 3, 4]);
        assert!(eval(
            &Op::Split {
                axis: 0,
                split: Some(vec![1, 1])
            },
            &[Some(&x)],
            2
        )
        .is_err());
    }

    #[test]
    fn flatten_and_shape() {
        let x = iota(&[2, 3, 4]);
        assert_eq!(
            run(Op::Flatten { axis: -1 }, &[Some(&x)], 1)[0].shape(),
            &[6, 4]
        );
        assert_eq!(
            run(Op::Flatten { axis: 0 }, &[Some(&x)], 1)[0].shape(),
            &[1, 24]
        );
        let r = run(
            Op::Shape {
                start: -2,
                end: None,
            },
            &[Some(&x)],
            1,
        );
        assert_eq!(i64s(&r[0]), vec![3, 4]);
    }
}

#[cfg(test)]
mod pad_tests {
    //! Expected values are numpy's `np.pad` results, written out.
    use super::*;
    use crate::ir::PadAttrs;

    fn t(shape: &[usize], v: Vec<i64>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }
    fn pad_attr(x: &Tensor, pads: Vec<i64>, mode: PadMode, value: f64) -> Tensor {
        let op = Op::Pad(PadAttrs {
            mode,
            pads: Some(pads),
            value,
        });
        eval(&op, &[Some(x)], 1).unwrap().remove(0)
    }

    #[test]
    fn one_axis_all_modes_wider_than_the_axis() {
        // np.pad([1, 2, 3], (5, 4), mode=...)
        let x = t(&[3], vec![1, 2, 3]);
        let cases = [
            (PadMode::Reflect, vec![2, 1, 2, 3, 2, 1, 2, 3, 2, 1, 2, 3]),
            (PadMode::Edge, vec![1, 1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 3]),
            (PadMode::Wrap, vec![2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1]),
            (PadMode::Constant, vec![0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0]),
        ];
        for (mode, want) in cases {
            let y = pad_attr(&x, vec![5, 4], mode, 0.0);
            assert_eq!(y.to_i64_vec().unwrap(), want, "{mode:?}");
        }
        // np.pad([5], (2, 2), mode='reflect')
        let y = pad_attr(&t(&[1], vec![5]), vec![2, 2], PadMode::Reflect, 0.0);
        assert_eq!(y.to_i64_vec().unwrap(), vec![5; 5]);
    }

    #[test]
    fn two_axes() {
        let x = t(&[2, 3], (0..6).collect());
        // np.pad(b, ((1, 0), (2, 1)), mode='reflect')
        let y = pad_attr(&x, vec![1, 2, 0, 1], PadMode::Reflect, 0.0);
        assert_eq!(y.shape(), &[3, 6]);
        assert_eq!(
            y.to_i64_vec().unwrap(),
            vec![5, 4, 3, 4, 5, 4, 2, 1, 0, 1, 2, 1, 5, 4, 3, 4, 5, 4]
        );
        // np.pad(b, ((1, 1), (1, 2)), mode='edge')
        let y = pad_attr(&x, vec![1, 1, 1, 2], PadMode::Edge, 0.0);
        assert_eq!(y.shape(), &[4, 6]);
        assert_eq!(
            y.to_i64_vec().unwrap(),
            vec![0, 0, 1, 2, 2, 2, 0, 0, 1, 2, 2, 2, 3, 3, 4, 5, 5, 5, 3, 3, 4, 5, 5, 5]
        );
        // np.pad(b, ((0, 1), (2, 2)), mode='wrap')
        let y = pad_attr(&x, vec![0, 2, 1, 2], PadMode::Wrap, 0.0);
        assert_eq!(
            y.to_i64_vec().unwrap(),
            vec![1, 2, 0, 1, 2, 0, 1, 4, 5, 3, 4, 5, 3, 4, 1, 2, 0, 1, 2, 0, 1]
        );
        // np.pad(b, ((1, 0), (0, 1)), constant_values=7)
        let y = pad_attr(&x, vec![1, 0, 0, 1], PadMode::Constant, 7.0);
        assert_eq!(
            y.to_i64_vec().unwrap(),
            vec![7, 7, 7, 7, 0, 1, 2, 7, 3, 4, 5, 7]
        );
    }

    #[test]
    fn input_form_with_axes_value_and_negative_pads() {
        let op = Op::Pad(PadAttrs {
            mode: PadMode::Constant,
            pads: None,
            value: 0.0,
        });
        let x = Tensor::from_vec(&[2, 3], vec![1f32, 2., 3., 4., 5., 6.]).unwrap();
        // Only axis 1 (given as -1): one column of 9.5 before, the last column cropped.
        let pads = t(&[2], vec![1, -1]);
        let value = Tensor::scalar(9.5f32);
        let axes = t(&[1], vec![-1]);
        let y = eval(&op, &[Some(&x), Some(&pads), Some(&value), Some(&axes)], 1)
            .unwrap()
            .remove(0);
        assert_eq!(
            y,
            Tensor::from_vec(&[2, 3], vec![9.5f32, 1., 2., 9.5, 4., 5.]).unwrap()
        );
        // bool data pads with false.
        let b = Tensor::from_vec(&[2], vec![true, true]).unwrap();
        let y = pad_attr(&b, vec![1, 0], PadMode::Constant, 0.0);
        assert_eq!(y, Tensor::from_vec(&[3], vec![false, true, true]).unwrap());
        // Refusals: wrong pads count, cropping below zero, a value of another dtype, and
        // reflecting an empty axis.
        assert!(eval(&op, &[Some(&x), Some(&t(&[2], vec![1, 1]))], 1).is_err());
        assert!(eval(&op, &[Some(&x), Some(&t(&[4], vec![0, -2, 0, -2]))], 1).is_err());
        let bad = Tensor::scalar(1i64);
        assert!(eval(&op, &[Some(&x), Some(&t(&[4], vec![0; 4])), Some(&bad)], 1).is_err());
        let empty = Tensor::from_vec(&[0], Vec::<f32>::new()).unwrap();
        let op = Op::Pad(PadAttrs {
            mode: PadMode::Reflect,
            pads: Some(vec![1, 1]),
            value: 0.0,
        });
        assert!(eval(&op, &[Some(&empty)], 1).is_err());
        // An extreme pad is refused by the size limits rather than allocated.
        let op = Op::Pad(PadAttrs {
            mode: PadMode::Constant,
            pads: Some(vec![i64::MAX, i64::MAX]),
            value: 0.0,
        });
        assert!(eval(&op, &[Some(&x.clone().reshape(&[6]).unwrap())], 1).is_err());
    }
}

#[cfg(test)]
mod edge_tests {
    use super::*;

    #[test]
    fn slice_edge_cases_do_not_panic() {
        // Empty axis with a negative step, and the most negative step.
        let p = slice_plan(&[0], &[-1], &[i64::MIN], None, Some(&[-1])).unwrap();
        assert_eq!(p[0].len, 0);
        let p = slice_plan(&[5], &[4], &[-10], None, Some(&[i64::MIN])).unwrap();
        assert_eq!((p[0].start, p[0].len), (4, 1));
        assert!(slice_plan(&[5], &[0], &[5], None, Some(&[0])).is_err());
        assert!(slice_plan(&[5], &[0], &[5], Some(&[1]), None).is_err());
    }
}
