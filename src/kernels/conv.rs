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
//! Ungrouped 2-D 3x3 stride-1 convs with enough channels go to Winograd F(4x4, 3x3) or
//! F(2x2, 3x3) in `winograd.rs`, which runs 36 or 16 smaller products on the same sgemm. Convs with very short
//! reductions (image stems with 3 input channels, 1x1 convs with at most 32, grouped convs
//! with at most 16 per group on rows of 28 or more) go to the direct kernel in
//! `conv_direct.rs`, which gives the im2col path's bits without its
//! patch matrix and per-tile overhead. On AVX2 CPUs, 2-D grouped convs whose groups have a
//! multiple of 8 output channels go to `conv_lanes.rs` (output channels in the vector
//! lanes), again with the im2col path's bits, and so do the ungrouped ones it runs faster
//! (a multiple of 8 output channels and either fewer than 64 input channels, at most 32
//! output channels on planes smaller than 28x28, or strides: the ResNets' 3x3 stride-2 convs),
//! ahead of Winograd and `conv_direct`.
//!
//! Input and output may each be held in planes (NCHW) or blocked (NCHW8c, `blocked.rs`):
//! [`conv_f32_io`] runs `conv_lanes` and the interleaved depthwise path on blocked values
//! as they are, and converts a blocked input to planes for any other path.
//!
//! Everything is written for 3 spatial dims; 1-D and 2-D convs are lifted to 3-D by adding
//! leading spatial dims of size 1, which changes neither the data layout nor the math.

use super::blocked::{self, Layout};
use super::conv_direct;
#[cfg(target_arch = "x86_64")]
use super::conv_lanes;
use super::depthwise;
use super::gemm::SendPtr;
use super::im2col::{pack_patches, Patches, Scratch};
use super::input;
use super::sgemm::{self, Activation, Epilogue, Kernel, PackedA, PackedCols};
use super::uninit;
use super::winograd;
use crate::ir::op::ConvAttrs;
use crate::ir::window::Geometry;
use crate::ir::Op;
use crate::tensor::{DType, Tensor};
use anyhow::{bail, ensure, Result};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::OnceLock;

/// Most output positions per im2col block. A plane is cut into `n_blocks(positions)`
/// blocks of whole B panels, as equal as panels allow, so that 2 threads get equal shares
/// (784 positions: 224/192/192/176 rather than 256/256/256/16). The cut depends only on the
/// shape, and no cut changes a sum: each output column is computed on its own.
const BLOCK: usize = 256;

/// Block `blk` of the `n_blocks` blocks of a plane of `plane` positions: its first position
/// and length.
fn block(plane: usize, n_blocks: usize, blk: usize) -> (usize, usize) {
    let panels = plane.div_ceil(sgemm::NR);
    let start = |b: usize| (b * panels / n_blocks * sgemm::NR).min(plane);
    (start(blk), start(blk + 1) - start(blk))
}

/// How many blocks a plane of `plane` output positions is cut into: `ceil(plane / BLOCK)`,
/// rounded up to even when odd and below 32, so that 2 threads get equal shares (whatever
/// the thread count: the cut must not depend on it). ResNet-50's 56x56 planes made 13 blocks,
/// 7 for one thread; 14 made the net 0.970-0.996 of the time on 2 threads (paired medians,
/// three runs), 0.967-1.002 on one.
fn n_blocks(plane: usize) -> usize {
    let n = plane.div_ceil(BLOCK);
    match n % 2 == 1 && (3..32).contains(&n) {
        true => n + 1,
        false => n,
    }
}

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], _n_outputs: usize) -> Result<Vec<Tensor>> {
    let Op::Conv(attrs) = op else {
        bail!("conv kernel called for {}", op.name())
    };
    eval_with(attrs, None, Activation::NONE, inputs)
}

/// The window geometry lifted to exactly 3 spatial dims, plus the channel structure.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) m: usize,
    pub(super) group: usize,
    pub(super) input: [usize; 3],
    pub(super) kernel: [usize; 3],
    pub(super) strides: [usize; 3],
    pub(super) dilations: [usize; 3],
    pub(super) pads: [usize; 3],
    pub(super) output: [usize; 3],
    /// The output shape in the input's rank.
    pub(super) out_shape: Vec<usize>,
}

impl Plan {
    pub(super) fn cg(&self) -> usize {
        self.c / self.group
    }
    pub(super) fn mg(&self) -> usize {
        self.m / self.group
    }
    pub(super) fn in_plane(&self) -> usize {
        self.input.iter().product()
    }
    pub(super) fn out_plane(&self) -> usize {
        self.output.iter().product()
    }
    pub(super) fn k_plane(&self) -> usize {
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
pub(super) fn plan(
    xs: &[usize],
    ws: &[usize],
    bs: Option<&[usize]>,
    attrs: &ConvAttrs,
) -> Result<Plan> {
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
    conv_f32_with(x, w, b, attrs, None, Activation::NONE)
}

/// [`conv_f32`] with weights packed beforehand (used when they match `w`'s shape and the
/// group count) and an activation applied to every output value.
pub fn conv_f32_with(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    b: Option<&ArrayD<f32>>,
    attrs: &ConvAttrs,
    prepared: Option<&Prepared>,
    act: Activation,
) -> Result<ArrayD<f32>> {
    let fin = Finish {
        residual: None,
        act,
    };
    let (y, _) = conv_f32_io(
        x,
        Layout::Planes,
        w,
        b,
        attrs,
        prepared,
        fin,
        Layout::Planes,
    )?;
    Ok(y)
}

/// What a Conv does to each sum after its bias: add the element of `residual` at the same
/// place of the output (an Add of the Conv's output and another value of its shape, fused
/// into it; planes, `[N, M, H, W]` in order), then the clamp. The bits of the Conv, the Add
/// and the Relu or Clip run one after the other.
#[derive(Clone, Copy, Debug, Default)]
pub struct Finish<'a> {
    pub residual: Option<&'a [f32]>,
    pub act: Activation,
}

/// [`conv_f32_with`] on an input held in layout `lin` (a blocked input is `[N, C/8, H, W,
/// 8]`), writing the output blocked when `want` says so and the path it takes writes that
/// layout natively (`conv_lanes`, the interleaved depthwise path); returns the output and
/// the layout it is in. A path that
/// reads planes only gets a blocked input converted first. Either way the same bits.
/// `fin`'s residual, when given, must hold as many floats as the output; the patch path
/// adds it as its tiles are stored (`Epilogue::residual`, [`residual_native`]), the others
/// in a pass after, and the output is then in planes.
#[allow(clippy::too_many_arguments)]
pub fn conv_f32_io(
    x: &ArrayD<f32>,
    lin: Layout,
    w: &ArrayD<f32>,
    b: Option<&ArrayD<f32>>,
    attrs: &ConvAttrs,
    prepared: Option<&Prepared>,
    fin: Finish,
    want: Layout,
) -> Result<(ArrayD<f32>, Layout)> {
    match conv_f32_dest(x, lin, w, b, attrs, prepared, fin, want, None)? {
        Written::Own(y, l) => Ok((y, l)),
        Written::Into => unreachable!("no destination was given"),
    }
}

/// A part of a larger buffer a conv may write its output into (a channel Concat's, see
/// `exec::concat_into`): taken when the output has exactly `buf.len()` floats and comes
/// out in `layout` (the part of a batch-1 channel Concat is one contiguous run in either
/// layout).
pub struct Dest<'a> {
    pub buf: &'a mut [MaybeUninit<f32>],
    pub layout: Layout,
}

/// Where [`conv_f32_dest`] wrote its output.
pub enum Written {
    /// Into a buffer of its own, in this layout.
    Own(ArrayD<f32>, Layout),
    /// Into the [`Dest`] it was given, every float of it.
    Into,
}

/// [`conv_f32_io`] writing into `dest` when the output fits it (see [`Dest`]), else into a
/// buffer of its own.
#[allow(clippy::too_many_arguments)]
pub fn conv_f32_dest(
    x: &ArrayD<f32>,
    lin: Layout,
    w: &ArrayD<f32>,
    b: Option<&ArrayD<f32>>,
    attrs: &ConvAttrs,
    prepared: Option<&Prepared>,
    fin: Finish,
    want: Layout,
    dest: Option<Dest>,
) -> Result<Written> {
    let xs = match lin {
        Layout::Planes => x.shape().to_vec(),
        Layout::Blocked => blocked::logical_shape(x.shape()),
    };
    let p = plan(&xs, w.shape(), b.map(|b| b.shape()), attrs)?;
    crate::tensor::limits::check_alloc(&p.out_shape, DType::F32)?;
    let dw = depthwise_geometry(&p);
    // Asked only when a blocked layout is in play: plain calls skip the path checks.
    let blocked_pays = (lin == Layout::Blocked || want == Layout::Blocked)
        && blocked_path(&p, lin == Layout::Blocked);
    if lin == Layout::Blocked && !blocked_pays {
        let x = blocked::to_planes(x);
        return conv_f32_dest(
            &x,
            Layout::Planes,
            w,
            b,
            attrs,
            prepared,
            fin,
            Layout::Planes,
            dest,
        );
    }
    let lout = match want {
        Layout::Blocked
            if blocked_pays && blocked::blockable(&p.out_shape) && fin.residual.is_none() =>
        {
            Layout::Blocked
        }
        _ => Layout::Planes,
    };
    let out_len: usize = p.out_shape.iter().product();
    if let Some(r) = fin.residual {
        ensure!(
            r.len() == out_len,
            "a residual of {} values for an output of {out_len}",
            r.len()
        );
    }
    let planes = lin == Layout::Planes && lout == Layout::Planes && out_len > 0;
    let route = planes.then(|| route(&p));
    // The patch path adds a residual as it stores its tiles (`residual_native`); anything
    // else adds it after, in one pass.
    let in_epilogue = planes && residual_native(&p);
    let (act, after) = match fin.residual {
        Some(r) if !in_epilogue => (Activation::NONE, Some(r)),
        _ => (fin.act, None),
    };
    // What the patch path applies as it stores.
    let fin_now = Finish {
        residual: fin.residual.filter(|_| in_epilogue),
        act,
    };
    let x = x.as_standard_layout();
    let xd = x.as_slice().expect("standard layout");
    let bias: Option<Vec<f32>> = b.map(|b| b.iter().copied().collect());
    // Not zeroed: `uninit` says which paths write it as it is and which fill it first.
    let dest = dest.filter(|d| d.layout == lout && d.buf.len() == out_len && after.is_none());
    let mut own = match dest {
        Some(_) => None,
        None => Some(uninit::alloc(out_len)),
    };
    let out: &mut [MaybeUninit<f32>] = match (dest, own.as_deref_mut()) {
        (Some(d), _) => d.buf,
        (None, Some(own)) => own,
        (None, None) => unreachable!("allocated without a destination"),
    };
    if lin == Layout::Blocked || lout == Layout::Blocked {
        let io = (lin, lout);
        if let Some(g) = dw {
            let w = w.as_standard_layout();
            let wd = w.as_slice().expect("standard layout");
            depthwise::depthwise_blocked(&g, xd, wd, bias.as_deref(), act, &mut *out, io);
        } else {
            let prepared = prepared.filter(|pr| pr.w_shape == w.shape() && pr.group == p.group);
            lanes(&p, xd, w, prepared, bias.as_deref(), act, &mut *out, io);
        }
    } else if let Some(route) = route {
        let prepared = prepared.filter(|pr| pr.w_shape == w.shape() && pr.group == p.group);
        let bias = bias.as_deref();
        match route {
            Route::Depthwise(g) => {
                let w = w.as_standard_layout();
                let wd = w.as_slice().expect("standard layout");
                depthwise::depthwise(&g, xd, wd, bias, act, &mut *out);
            }
            Route::Lanes => lanes(
                &p,
                xd,
                w,
                prepared,
                bias,
                act,
                &mut *out,
                (Layout::Planes, Layout::Planes),
            ),
            Route::Direct => {
                crate::tensor::limits::check_alloc(&conv_direct::scratch_dims(&p), DType::F32)?;
                let w = w.as_standard_layout();
                let wd = w.as_slice().expect("standard layout");
                conv_direct::conv(&p, xd, wd, bias, act, &mut *out);
            }
            Route::Winograd => {
                let v = winograd::Variant::of(&p);
                let slots = prepared.map(|pr| &pr.winograd[v as usize]);
                with_weights(
                    slots,
                    winograd::prefer_cols(&p),
                    Source::Winograd(w, v),
                    |ws| winograd::conv(&p, xd, ws, bias, act, out),
                );
            }
            Route::Patches => patches(&p, xd, w, prepared, bias, fin_now, None, &mut *out),
        }
    }
    let Some(own) = own else {
        return Ok(Written::Into);
    };
    // SAFETY: every path above writes every output float (or there are none: an empty
    // plane or no output channels make `out` empty).
    let mut out = unsafe { uninit::assume_init(own) };
    if let Some(r) = after {
        super::pointwise::add_in_place(&mut out, r, fin.act);
    }
    let shape = match lout {
        Layout::Planes => p.out_shape.clone(),
        Layout::Blocked => blocked::blocked_shape(&p.out_shape),
    };
    Ok(Written::Own(
        ArrayD::from_shape_vec(IxDyn(&shape), out)?,
        lout,
    ))
}

/// Whether a conv on planes adds a residual as it stores its output (the patch path in the
/// ordinary orientation, not as matrix-vector products): where a fused Add pays. Elsewhere
/// the pass after costs what the Add did (or more: ResNet-18's Adds after Winograd took
/// 0.01-0.07 ms apart, and its output transform with the residual added 0.05-0.1 ms).
fn residual_native(p: &Plan) -> bool {
    p.out_plane() > 0
        && p.m > 0
        && matches!(route(p), Route::Patches)
        && !gemv_applies(p)
        && !prefer_cols(p)
}

/// [`residual_native`] for a conv of these shapes on X and W in planes (the plan's
/// question, `exec/residual.rs`); `false` for shapes the conv refuses.
pub fn residual_applies(xs: &[usize], ws: &[usize], attrs: &ConvAttrs) -> bool {
    plan(xs, ws, None, attrs).is_ok_and(|p| residual_native(&p))
}

/// The kernel that runs a conv whose input and output are in planes.
enum Route {
    Depthwise(depthwise::Geometry),
    Lanes,
    Direct,
    Winograd,
    /// The patch matrix times the packed weights (`im2col_gemm`), or its matrix-vector form.
    Patches,
}

/// Which kernel runs `p` on planes, in the order they are asked: the depthwise kernels, then
/// `conv_lanes` where it pays, `conv_direct` (but for what `gemv` runs), Winograd, and the
/// patch path for everything else.
fn route(p: &Plan) -> Route {
    if let Some(g) = depthwise_geometry(p) {
        Route::Depthwise(g)
    } else if lanes_applies(p, false) {
        Route::Lanes
    } else if conv_direct::applies(p) && !gemv_applies(p) {
        Route::Direct
    } else if winograd::applies(p) {
        Route::Winograd
    } else {
        Route::Patches
    }
}

/// The patch path: `im2col_gemm` on the weights packed in `prepared` (on first use) or for
/// this call, in the orientation `prefer_cols` picks.
#[allow(clippy::too_many_arguments)]
fn patches(
    p: &Plan,
    x: &[f32],
    w: &ArrayD<f32>,
    prepared: Option<&Prepared>,
    bias: Option<&[f32]>,
    fin: Finish,
    affine: Option<&InputAffine>,
    out: &mut [MaybeUninit<f32>],
) {
    let slots = prepared.map(|pr| &pr.direct);
    with_weights(slots, prefer_cols(p), Source::Direct(w, p.group), |ws| {
        im2col_gemm(p, x, ws, bias, fin, affine, out)
    });
}

/// Whether `p` is a 1x1 stride-1 unpadded conv, whose input plane is its patch matrix.
fn pointwise(p: &Plan) -> bool {
    p.kernel == [1; 3] && p.strides == [1; 3] && p.pads == [0; 3] && p.input == p.output
}

/// A per-input-channel `x * scale[c] + shift[c]`, then a clamp, that a Conv applies to its
/// input: an inference BatchNorm (and the Relu or Clip after it) that only this conv reads,
/// fused into it (`exec::prepare`). DenseNet's norm -> relu -> 1x1 conv is the case: each
/// BatchNorm reads a Concat kept alive to be extended, so it wrote a fresh tensor per layer
/// that the conv then copied into its panels; the patch path now applies the affine as it
/// packs. Each element gets the BatchNorm kernel's own expression (a product, a sum, the
/// clamp: no fused multiply-add), so the conv sees the same bits.
pub struct InputAffine {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
    pub clamp: Activation,
}

impl InputAffine {
    /// An inference BatchNorm's affine (`inputs`: its X, scale, B, mean, var), then `clamp`.
    pub fn batch_norm(
        epsilon: f32,
        clamp: Activation,
        inputs: &[Option<&Tensor>],
    ) -> Result<InputAffine> {
        let x = input(inputs, 0, "X")?;
        let params = [1, 2, 3, 4].map(|i| input(inputs, i, "BatchNorm parameter"));
        let [s, b, m, v] = params;
        let (a, b) = super::norm::bn_coeffs(x.shape(), [s?, b?, m?, v?], epsilon)?;
        Ok(InputAffine {
            scale: a.iter().map(|&a| a as f32).collect(),
            shift: b.iter().map(|&b| b as f32).collect(),
            clamp,
        })
    }

    /// `d = clamp(s * scale[c] + shift[c])`, element by element, for channel `c`.
    #[inline(always)]
    pub(super) fn apply_row(&self, c: usize, d: &mut [f32], s: &[f32]) {
        let (a, b) = (self.scale[c], self.shift[c]);
        let lo = self.clamp.lo.unwrap_or(f32::NEG_INFINITY);
        let hi = self.clamp.hi.unwrap_or(f32::INFINITY);
        for (d, &v) in d.iter_mut().zip(s) {
            // `Activation::apply`'s comparisons, written on plain bounds so they vectorize.
            let v = v * a + b;
            let v = if v < lo { lo } else { v };
            *d = if v > hi { hi } else { v };
        }
    }

    /// `x` (NCHW, planes) with the affine applied: for convs whose path does not pack their
    /// input row by row.
    fn applied(&self, x: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let x = x.as_standard_layout();
        let c = x.shape().get(1).copied().unwrap_or(0);
        if self.scale.len() != c || self.shift.len() != c {
            bail!(
                "an input affine of {} channels on X of shape {:?}",
                self.scale.len(),
                x.shape()
            );
        }
        let inner: usize = x.shape()[2..].iter().product();
        let src = x.as_slice().expect("standard layout");
        let mut out = vec![0f32; src.len()];
        if inner > 0 {
            for (i, (d, s)) in out.chunks_mut(inner).zip(src.chunks(inner)).enumerate() {
                self.apply_row(i % c, d, s);
            }
        }
        Ok(ArrayD::from_shape_vec(x.raw_dim(), out)?)
    }
}

/// [`conv_f32_with`] on `affine` applied to `x` (planes in, planes out). An ungrouped 1x1
/// stride-1 unpadded conv on the patch path applies it while packing its input; any other
/// conv gets the affine applied to a copy of `x` first. The same bits either way.
#[allow(clippy::too_many_arguments)]
pub fn conv_f32_affine(
    x: &ArrayD<f32>,
    affine: &InputAffine,
    w: &ArrayD<f32>,
    b: Option<&ArrayD<f32>>,
    attrs: &ConvAttrs,
    prepared: Option<&Prepared>,
    act: Activation,
) -> Result<ArrayD<f32>> {
    let p = plan(x.shape(), w.shape(), b.map(|b| b.shape()), attrs)?;
    let fused = matches!(route(&p), Route::Patches)
        && pointwise(&p)
        && p.group == 1
        && !gemv_applies(&p)
        && affine.scale.len() == p.c
        && affine.shift.len() == p.c;
    if !fused || p.out_plane() == 0 || p.m == 0 {
        return conv_f32_with(&affine.applied(x)?, w, b, attrs, prepared, act);
    }
    crate::tensor::limits::check_alloc(&p.out_shape, DType::F32)?;
    let x = x.as_standard_layout();
    let xd = x.as_slice().expect("standard layout");
    let bias: Option<Vec<f32>> = b.map(|b| b.iter().copied().collect());
    let prepared = prepared.filter(|pr| pr.w_shape == w.shape() && pr.group == p.group);
    let mut out = uninit::alloc(p.out_shape.iter().product());
    let bias = bias.as_deref();
    let fin = Finish {
        residual: None,
        act,
    };
    patches(&p, xd, w, prepared, bias, fin, Some(affine), &mut out);
    // SAFETY: the patch path writes every output float.
    let out = unsafe { uninit::assume_init(out) };
    Ok(ArrayD::from_shape_vec(IxDyn(&p.out_shape), out)?)
}

/// Whether a conv of these shapes, its input blocked or not (`x_blocked`), reads and
/// writes blocked values natively (`blocked.rs`): the fused runs' plan (`exec/blocked.rs`)
/// holds a value blocked between such convs.
pub fn blocked_native(xs: &[usize], ws: &[usize], attrs: &ConvAttrs, x_blocked: bool) -> bool {
    blocked::blockable(xs) && plan(xs, ws, None, attrs).is_ok_and(|p| blocked_path(&p, x_blocked))
}

/// Whether `p`'s path reads and writes blocked values: the interleaved depthwise path, or
/// `conv_lanes` where it takes them (`conv_lanes::applies`, which takes more convs with
/// a blocked input).
fn blocked_path(p: &Plan, x_blocked: bool) -> bool {
    match depthwise_geometry(p) {
        Some(g) => depthwise::blocked_capable(&g),
        None => lanes_applies(p, x_blocked),
    }
}

/// The depthwise kernels' geometry of `p`, when it is depthwise (one input channel per
/// group, any channel multiplier).
fn depthwise_geometry(p: &Plan) -> Option<depthwise::Geometry> {
    (p.group == p.c && p.m.is_multiple_of(p.c)).then(|| depthwise::Geometry {
        n: p.n,
        c: p.c,
        mult: p.m / p.c,
        input: p.input,
        kernel: p.kernel,
        strides: p.strides,
        dilations: p.dilations,
        pads: p.pads,
        output: p.output,
    })
}

/// Whether `conv_lanes` takes `p` (x86-64 only), with its input blocked when `blocked`.
fn lanes_applies(p: &Plan, blocked: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        conv_lanes::applies(p, blocked)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = p;
        false
    }
}

/// `conv_lanes` with the weights packed for it by `prepared` (once per Conv) or now.
#[allow(clippy::too_many_arguments)]
fn lanes(
    p: &Plan,
    xd: &[f32],
    w: &ArrayD<f32>,
    prepared: Option<&Prepared>,
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [MaybeUninit<f32>],
    io: (Layout, Layout),
) {
    #[cfg(target_arch = "x86_64")]
    {
        let pack = || {
            let w = w.as_standard_layout();
            conv_lanes::pack_weights(p, w.as_slice().expect("standard layout"))
        };
        match prepared {
            Some(pr) => conv_lanes::conv(p, xd, pr.lanes.get_or_init(pack), bias, act, out, io),
            None => conv_lanes::conv(p, xd, &pack(), bias, act, out, io),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, xd, w, prepared, bias, act, out, io);
        unreachable!("lanes_applies is false off x86-64")
    }
}

/// Conv weights packed once for the sgemm, so that runs of a graph whose weights are
/// constants skip the packing: for im2col, one `PackedA` or `PackedCols` per group; for
/// Winograd, one per transformed position (16 or 36). Each in the orientation the first run's
/// output size asks for ([`prefer_cols`]), packed then; the other only if a later run with
/// another input size asks for it. Built by [`prepare`].
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The weight shape it is for: a call with another shape packs afresh.
    w_shape: Vec<usize>,
    group: usize,
    direct: Slots,
    /// Per Winograd variant (`Variant as usize`): the one a run's plane size picks.
    winograd: [Slots; 2],
    /// `conv_lanes`'s layout, packed on first use.
    lanes: OnceLock<Vec<f32>>,
}

/// Packed weights in either orientation, each packed on first use.
#[derive(Clone, Debug, Default)]
struct Slots {
    rows: OnceLock<Vec<PackedA>>,
    cols: OnceLock<Vec<PackedCols>>,
}

/// What weights a path packs: the groups' kernels as they are (im2col), or their Winograd
/// transforms.
#[derive(Clone, Copy)]
enum Source<'a> {
    Direct(&'a ArrayD<f32>, usize),
    Winograd(&'a ArrayD<f32>, winograd::Variant),
}

impl Source<'_> {
    fn pack<P: PackWeights>(self) -> Vec<P> {
        match self {
            Source::Direct(w, group) => pack_weights(w, group),
            Source::Winograd(w, v) => winograd::pack_weights(w, v),
        }
    }
}

/// `f` on the weights of `source` packed in the chosen orientation: from `slots` (packed
/// there on first use) or, without slots, packed for this call only.
fn with_weights<R>(
    slots: Option<&Slots>,
    cols: bool,
    source: Source,
    f: impl FnOnce(Weights) -> R,
) -> R {
    match (slots, cols) {
        (Some(s), false) => f(Weights::Rows(s.rows.get_or_init(|| source.pack()))),
        (Some(s), true) => f(Weights::Cols(s.cols.get_or_init(|| source.pack()))),
        (None, false) => f(Weights::Rows(&source.pack::<PackedA>())),
        (None, true) => f(Weights::Cols(&source.pack::<PackedCols>())),
    }
}

/// A conv's packed weights in one of the sgemm's two orientations.
#[derive(Clone, Copy)]
pub(super) enum Weights<'a> {
    /// `gemm_packed`: output channels in 8-row tiles, positions along the vectors.
    Rows(&'a [PackedA]),
    /// `gemm_cols`: output channels along the vectors, positions in 8-column tiles.
    Cols(&'a [PackedCols]),
}

/// Whether the transposed orientation computes fewer padded products: it cuts each block of
/// positions into tiles of 8 rather than panels of 32 (49 positions: 56 rather than 64), and
/// the output channels into 32s rather than 8s (64 channels: no loss; 24: 32 rather than
/// 24). Asked to win by 10%, as its transposed stores cost a little; and not for short
/// reductions, where they cost more than the padding. Only on the portable kernel
/// ([`Kernel::transposed_pays`]): on AVX2 the ordinary orientation pads no more (edge tiles
/// in 8-column steps) and was 1.05-1.25x faster on every 7x7 to 28x28 conv forced each way;
/// on AVX-512, which computes edge panels whole, keeping the ordinary one anyway made
/// ResNet-50 0.96-0.98 and GoogLeNet 0.98 of the time, the other nets 0.99-1.00 (a
/// transposed tile runs the whole reduction unblocked, its A operand a cache line per step).
fn prefer_cols(p: &Plan) -> bool {
    let plane = p.out_plane();
    let n_blocks = n_blocks(plane);
    let lens = (0..n_blocks).map(|blk| block(plane, n_blocks, blk).1);
    cols_cheaper(p.mg(), p.cg() * p.k_plane(), lens)
}

/// Whether `im2col_gemm` runs `p` as matrix-vector products (`sgemm::gemv_packed`, no
/// packed patches): a 1x1 conv on 1x1 planes, as the squeeze-and-excitation convs of
/// EfficientNet, in the ordinary orientation on a CPU with the FMA kernels. Its bits are the
/// patch path's. EfficientNet-B0's 32 such convs took 0.44 ms through the patch path, which
/// packs x into a 32-column panel (31 columns of zeros), and take 0.23 ms this way (minima
/// of 3 profiles in the net; onnxruntime's profile 0.16 for those it names apart).
fn gemv_applies(p: &Plan) -> bool {
    p.kernel == [1; 3]
        && p.strides == [1; 3]
        && p.pads == [0; 3]
        && p.in_plane() == 1
        && p.out_plane() == 1
        && sgemm::gemv_available(Kernel::detect())
        && !prefer_cols(p)
}

/// The rule of [`prefer_cols`] for products of `m` rows, a reduction of `k`, and blocks of
/// `lens` columns (Winograd's products use it too).
pub(super) fn cols_cheaper(m: usize, k: usize, lens: impl Iterator<Item = usize>) -> bool {
    let (mut rows, mut cols) = (0, 0);
    for len in lens {
        rows += m.next_multiple_of(sgemm::MR) * len.next_multiple_of(sgemm::NR);
        cols += m.next_multiple_of(sgemm::NR) * len.next_multiple_of(sgemm::MR);
    }
    Kernel::detect().transposed_pays() && k >= 64 && cols * 10 < rows * 9
}

/// The slots for a Conv's packed weights, filled by the first [`eval_with`] that uses them
/// (the orientation depends on the input size, unknown here), or `None` when there is
/// nothing to gain (not f32, a shape the kernel will refuse anyway, or a depthwise conv,
/// which does not use the sgemm).
pub fn prepare(attrs: &ConvAttrs, w: &Tensor) -> Option<Prepared> {
    let Tensor::F32(w) = w else { return None };
    let ws = w.shape();
    let g = attrs.group;
    if ws.len() < 3 || g == 0 || ws[0] % g != 0 || ws.contains(&0) {
        return None;
    }
    // Depthwise (depthwise.rs) is group == C with any multiplier; C = W.shape[1] * group.
    if ws[1] == 1 {
        return None;
    }
    Some(Prepared {
        w_shape: ws.to_vec(),
        group: g,
        direct: Slots::default(),
        winograd: Default::default(),
        lanes: OnceLock::new(),
    })
}

/// A group's weights packed for one orientation.
pub(super) trait PackWeights: Sized {
    fn pack_group(m: usize, k: usize, w: &[f32]) -> Self;
    /// `N` `m x k` matrices, element `(row, kk)` of matrix `t` being `f(row, kk)[t]`.
    fn from_fn_n<const N: usize>(
        m: usize,
        k: usize,
        f: impl FnMut(usize, usize) -> [f32; N],
    ) -> [Self; N];
}

impl PackWeights for PackedA {
    fn pack_group(m: usize, k: usize, w: &[f32]) -> Self {
        PackedA::pack(m, k, w, k)
    }
    fn from_fn_n<const N: usize>(
        m: usize,
        k: usize,
        f: impl FnMut(usize, usize) -> [f32; N],
    ) -> [Self; N] {
        PackedA::from_fn_n(m, k, f)
    }
}

impl PackWeights for PackedCols {
    fn pack_group(m: usize, k: usize, w: &[f32]) -> Self {
        PackedCols::pack(m, k, w, k)
    }
    fn from_fn_n<const N: usize>(
        m: usize,
        k: usize,
        f: impl FnMut(usize, usize) -> [f32; N],
    ) -> [Self; N] {
        PackedCols::from_fn_n(m, k, f)
    }
}

/// One packed matrix per group of `w` (`M x C/g x k...`, any layout).
fn pack_weights<P: PackWeights>(w: &ArrayD<f32>, group: usize) -> Vec<P> {
    let ws = w.shape();
    let mg = ws[0] / group;
    let kdim: usize = ws[1..].iter().product();
    let w = w.as_standard_layout();
    let wd = w.as_slice().expect("standard layout");
    (0..group)
        .map(|g| P::pack_group(mg, kdim, &wd[g * mg * kdim..(g + 1) * mg * kdim]))
        .collect()
}

/// Conv with optionally prepared weights and an activation fused into the output (the
/// interpreter's plain runs use it; `Activation::NONE` is plain Conv).
pub fn eval_with(
    attrs: &ConvAttrs,
    prepared: Option<&Prepared>,
    act: Activation,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let fin = Finish {
        residual: None,
        act,
    };
    let (y, _) = eval_io(
        attrs,
        prepared,
        fin,
        inputs,
        (Layout::Planes, Layout::Planes),
    )?;
    Ok(vec![y])
}

/// [`eval_with`] with X held in layout `io.0`, the output written in layout `io.1` where
/// the conv's path writes it natively ([`conv_f32_io`]); returns the output and its layout.
pub fn eval_io(
    attrs: &ConvAttrs,
    prepared: Option<&Prepared>,
    fin: Finish,
    inputs: &[Option<&Tensor>],
    io: (Layout, Layout),
) -> Result<(Tensor, Layout)> {
    let (x, w, b) = f32_operands(inputs)?;
    let (y, layout) = conv_f32_io(x, io.0, w, b, attrs, prepared, fin, io.1)?;
    Ok((Tensor::F32(y), layout))
}

/// A Conv's X, W and optional B.
type Operands<'t> = (&'t ArrayD<f32>, &'t ArrayD<f32>, Option<&'t ArrayD<f32>>);

/// A Conv's X, W and optional B as f32 arrays (X must be f32).
fn f32_operands<'t>(inputs: &[Option<&'t Tensor>]) -> Result<Operands<'t>> {
    let x = input(inputs, 0, "X")?;
    let w = input(inputs, 1, "W")?;
    if x.dtype() != DType::F32 {
        bail!("Conv on {} is not supported", x.dtype());
    }
    let b = match inputs.get(2).copied().flatten() {
        Some(b) => Some(b.as_f32()?),
        None => None,
    };
    Ok((x.as_f32()?, w.as_f32()?, b))
}

/// [`eval_io`] writing into `dest` when the output fits it ([`conv_f32_dest`]): `None`
/// when it did.
pub fn eval_dest(
    attrs: &ConvAttrs,
    prepared: Option<&Prepared>,
    fin: Finish,
    inputs: &[Option<&Tensor>],
    io: (Layout, Layout),
    dest: Dest,
) -> Result<Option<(Tensor, Layout)>> {
    let (x, w, b) = f32_operands(inputs)?;
    Ok(
        match conv_f32_dest(x, io.0, w, b, attrs, prepared, fin, io.1, Some(dest))? {
            Written::Own(y, l) => Some((Tensor::F32(y), l)),
            Written::Into => None,
        },
    )
}

/// The output shape of a Conv on `inputs` (X held blocked when `x_blocked`), the shape
/// [`eval_io`] gives it in planes.
pub fn output_shape(
    attrs: &ConvAttrs,
    inputs: &[Option<&Tensor>],
    x_blocked: bool,
) -> Result<Vec<usize>> {
    let (x, w) = (input(inputs, 0, "X")?, input(inputs, 1, "W")?);
    let xs = match x_blocked {
        true => blocked::logical_shape(x.shape()),
        false => x.shape().to_vec(),
    };
    let bs = inputs.get(2).copied().flatten().map(Tensor::shape);
    crate::ir::infer::conv_output_shape(&xs, w.shape(), bs, attrs)
}

/// [`eval_with`] on X through `affine` ([`conv_f32_affine`]): X in planes, output in planes.
pub fn eval_affine(
    attrs: &ConvAttrs,
    prepared: Option<&Prepared>,
    act: Activation,
    affine: &InputAffine,
    inputs: &[Option<&Tensor>],
) -> Result<Tensor> {
    let (x, w, b) = f32_operands(inputs)?;
    let y = conv_f32_affine(x, affine, w, b, attrs, prepared, act)?;
    Ok(Tensor::F32(y))
}

/// Below this many (batch, group, block) units, the M panels are split over tasks too, so
/// that late layers with few output positions still keep every core busy. A constant: the
/// task boundaries must not depend on the thread count. Not higher: the split path packs
/// every unit's patches before multiplying, which for 4 units of ResNet-50's 28x28 layers
/// (about 1 MiB of panels each) no longer stays in cache; with 4 to 7 units the plain path
/// scaled better on 2 cores (1.43-1.66x against 1.49-1.61x for the whole net).
pub(super) const MIN_UNITS: usize = 4;
/// B panels per packing task on the few-unit path: 2 tasks for a 14x14 plane (196
/// positions, 7 panels). Single panels cost a fifth more in per-row overhead.
const PACK_PANELS: usize = 4;
/// A-panels (of 8 rows) per task when the M panels are split; 1 panel of 32 rows in the
/// transposed orientation.
const M_CHUNK_PANELS: usize = 4;

/// The general path: for each (batch, group, block of output positions), the patches packed
/// into B panels, times the group's packed weights, with bias and activation applied as the
/// tiles are stored. Parallel over those units; with few units, the patches of every unit
/// are packed first, in parallel over (unit, B panel), and the products then split over
/// (unit, chunk of M panels), one K block at a time. Each output element is computed by the
/// same tile calls, in the same order, either way.
/// The im2col path on its own, weights packed for this call in the chosen orientation (the
/// other paths' tests compare against it).
#[cfg(test)]
pub(super) fn im2col_path(
    p: &Plan,
    x: &[f32],
    w: &ArrayD<f32>,
    bias: Option<&[f32]>,
    act: Activation,
    cols: bool,
) -> Vec<f32> {
    let mut out = vec![f32::NAN; p.out_shape.iter().product()];
    with_weights(None, cols, Source::Direct(w, p.group), |ws| {
        // SAFETY: im2col_gemm writes floats only.
        im2col_gemm(
            p,
            x,
            ws,
            bias,
            Finish {
                residual: None,
                act,
            },
            None,
            unsafe { uninit::of_init(&mut out) },
        )
    });
    out
}

fn im2col_gemm(
    p: &Plan,
    x: &[f32],
    weights: Weights,
    bias: Option<&[f32]>,
    fin: Finish,
    affine: Option<&InputAffine>,
    out: &mut [MaybeUninit<f32>],
) {
    let act = fin.act;
    // A residual only in the ordinary orientation's tiles (`conv_f32_io` decides).
    assert!(fin.residual.is_none() || (matches!(weights, Weights::Rows(_)) && !gemv_applies(p)));
    let (cg, mg) = (p.cg(), p.mg());
    let (in_plane, out_plane) = (p.in_plane(), p.out_plane());
    let kdim = cg * p.k_plane();
    let n_blocks = n_blocks(out_plane);
    // An input affine only on ungrouped pointwise convs (`conv_f32_affine` checks).
    assert!(affine.is_none() || (pointwise(p) && p.group == 1));
    let patches = match pointwise(p) {
        true => Patches::Pointwise(affine),
        false => Patches::Gather,
    };
    let kernel = Kernel::detect();
    // The sgemm writes every output through this pointer before reading it back.
    let outp = SendPtr(out.as_mut_ptr().cast::<f32>());
    let units = p.n * p.group * n_blocks;
    if gemv_applies(p) && affine.is_none() {
        if let Weights::Rows(a) = weights {
            for u in 0..p.n * p.group {
                let (n, g) = (u / p.group, u % p.group);
                let x = &x[(n * p.c + g * cg)..][..cg];
                let epi = Epilogue {
                    bias: bias.map(|b| &b[g * mg..(g + 1) * mg]),
                    residual: None,
                    act,
                };
                // SAFETY: gemv_applies checked the CPU; batch n's channels g * mg.. are
                // inside `out` (one position per plane) and written by this call only.
                unsafe { sgemm::gemv_packed(&a[g], x, outp.get().add(n * p.m + g * mg), &epi) }
            }
            return;
        }
    }
    // Unit u: batch n, group g, block blk; its input channels, output columns, epilogue.
    let unit = |u: usize| {
        let blk = u % n_blocks;
        let g = (u / n_blocks) % p.group;
        let n = u / (n_blocks * p.group);
        let (p0, len) = block(out_plane, n_blocks, blk);
        (n, g, p0, len)
    };
    let x_of = |n: usize, g: usize| {
        let base = (n * p.c + g * cg) * in_plane;
        &x[base..base + cg * in_plane]
    };
    // The epilogue of the call whose C starts at output offset `at` (group g's rows).
    let epi_of = |g: usize, at: usize| Epilogue {
        bias: bias.map(|b| &b[g * mg..(g + 1) * mg]),
        residual: fin.residual.map(|r| &r[at..]),
        act,
    };
    // SAFETY (both calls below): a call writes rows `panels` of group g of batch n, columns
    // p0..p0+len of the output (`out_plane` apart); calls differ in (n, g, block, panels),
    // so they write disjoint elements, all inside `out` (n < N, channel < M, column <
    // out_plane).
    let run = |n: usize, g: usize, p0: usize, len: usize, panels, blocks, b: &[f32]| unsafe {
        let at = (n * p.m + g * mg) * out_plane + p0;
        let (c, epi) = (outp.get().add(at), epi_of(g, at));
        match weights {
            Weights::Rows(a) => {
                sgemm::gemm_packed_blocks(kernel, &a[g], panels, blocks, b, len, c, out_plane, &epi)
            }
            // Every K block per call (`blocks` is always all of them here).
            Weights::Cols(a) => sgemm::gemm_cols(kernel, &a[g], panels, b, len, c, out_plane, &epi),
        }
    };
    // The weights' panels: 8 rows each (Rows) or 32 (Cols).
    let (a_panels, chunk_panels) = match weights {
        Weights::Rows(a) => (a[0].panels(), M_CHUNK_PANELS),
        Weights::Cols(a) => (a[0].panels(), 1),
    };
    if units >= MIN_UNITS {
        (0..units)
            .into_par_iter()
            .for_each_init(Scratch::default, |s, u| {
                let (n, g, p0, len) = unit(u);
                with_pack_buffer(sgemm::packed_b_len(kdim, len), |buf| {
                    pack_patches(p, x_of(n, g), (p0, len), patches, s, buf);
                    let blocks = 0..sgemm::k_blocks(kdim).count();
                    run(n, g, p0, len, 0..a_panels, blocks, buf);
                });
            });
    } else {
        // The units' packed patches one after another, in the calling thread's buffer.
        let lens: Vec<usize> = (0..units)
            .map(|u| sgemm::packed_b_len(kdim, unit(u).3))
            .collect();
        with_pack_buffer(lens.iter().sum(), |all| {
            let mut bufs: Vec<&mut [f32]> = Vec::with_capacity(units);
            let mut rest = all;
            for &l in &lens {
                let (b, r) = rest.split_at_mut(l);
                bufs.push(b);
                rest = r;
            }
            // One task per (unit, run of PACK_PANELS B panels): a packed B panel is a
            // contiguous `kdim x NR` run.
            bufs.par_iter_mut()
                .enumerate()
                .flat_map(|(u, buf)| {
                    buf.par_chunks_mut(kdim * sgemm::NR * PACK_PANELS)
                        .enumerate()
                        .map(move |(q, panels)| (u, q, panels))
                })
                .for_each_init(Scratch::default, |s, (u, q, panels)| {
                    let (n, g, p0, len) = unit(u);
                    let c0 = q * sgemm::NR * PACK_PANELS;
                    let cols = (p0 + c0, (sgemm::NR * PACK_PANELS).min(len - c0));
                    pack_patches(p, x_of(n, g), cols, patches, s, panels);
                });
            let chunks = a_panels.div_ceil(chunk_panels);
            let tasks = |blocks: Range<usize>| {
                (0..units * chunks).into_par_iter().for_each(|t| {
                    let (u, ch) = (t / chunks, t % chunks);
                    let (n, g, p0, len) = unit(u);
                    let end = ((ch + 1) * chunk_panels).min(a_panels);
                    run(
                        n,
                        g,
                        p0,
                        len,
                        ch * chunk_panels..end,
                        blocks.clone(),
                        bufs[u],
                    );
                })
            };
            match weights {
                // One K block at a time over every task, so that block's B panels (up to
                // 512 x 224 floats for a 14x14 plane) stay in L2 while all of A's panels
                // pass; whole, B (1024 x 224 floats for DenseNet's last transition) was
                // streamed from L3 once per task.
                Weights::Rows(_) => {
                    for kb in 0..sgemm::k_blocks(kdim).count() {
                        tasks(kb..kb + 1);
                    }
                }
                Weights::Cols(_) => tasks(0..sgemm::k_blocks(kdim).count()),
            }
        });
    }
}

thread_local! {
    /// Each thread's buffer for packed patches, kept between calls: a fresh allocation of a
    /// megabyte per conv per run came back from the kernel as zeroed pages, and the page
    /// faults cost as much as the packing on small planes.
    static PACK_BUFFER: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` on this thread's packing buffer, `len` floats long; its contents are whatever the
/// last user left (`pack_patches` writes every float the sgemm reads).
pub(super) fn with_pack_buffer<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    PACK_BUFFER.with(|cell| {
        // Taken out rather than borrowed, so a nested call (a rayon task stolen by this
        // thread while `f` waits) gets an empty buffer of its own instead of a panic.
        let mut buf = cell.take();
        if buf.len() < len + ALIGN_SLACK {
            buf.resize(len + ALIGN_SLACK, 0.0);
        }
        // The slice starts on a cache line whatever address the allocator gave: the
        // packed panels are read in 32-byte vectors, and a buffer 16 bytes off a line
        // split every other one across two lines.
        let skip = buf.as_ptr().align_offset(64).min(ALIGN_SLACK);
        let r = f(&mut buf[skip..skip + len]);
        cell.replace(buf);
        r
    })
}

/// Floats kept past a pack buffer's length so that it can start on a 64-byte line.
const ALIGN_SLACK: usize = 16;

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

    /// The blocks of every plane size tile it in order, none empty, each but the last whole
    /// B panels; their count is even from 3 to 31 and shares differ by at most a panel.
    #[test]
    fn position_blocks_tile_the_plane_in_equal_shares() {
        for plane in 1..9000 {
            let n = n_blocks(plane);
            assert!(n >= plane.div_ceil(BLOCK), "{plane}");
            assert!(
                !(3..32).contains(&n) || n.is_multiple_of(2),
                "{plane}: {n} blocks"
            );
            let cut: Vec<(usize, usize)> = (0..n).map(|b| block(plane, n, b)).collect();
            let mut next = 0;
            for &(p0, len) in &cut {
                assert_eq!(p0, next, "{plane}");
                assert!(len > 0 && len <= BLOCK, "{plane}: {cut:?}");
                assert!(p0.is_multiple_of(sgemm::NR), "{plane}");
                next = p0 + len;
            }
            assert_eq!(next, plane);
            let panels = |len: usize| len.div_ceil(sgemm::NR);
            let most = cut.iter().map(|c| panels(c.1)).max().unwrap();
            let least = cut.iter().map(|c| panels(c.1)).min().unwrap();
            assert!(most - least <= 1, "{plane}: {cut:?}");
        }
    }

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

    /// 1x1 convs on 1x1 planes (squeeze-and-excitation) run as matrix-vector products with
    /// the patch path's bits: every output the FMA chain over its input channels in order
    /// from +0.0, then `+ bias`, then the clamp. Batch 2, groups, 24 input channels (which
    /// `conv_direct` took before), 96 into 70 outputs (nine 8-row panels: a group of eight
    /// computed together, then one, the last partial).
    #[test]
    fn pointwise_on_one_pixel_is_an_fma_chain() {
        let act = Activation {
            lo: Some(-0.3),
            hi: Some(0.4),
        };
        let e = Padding::Explicit(vec![]);
        for (xs, ws, group) in [
            ([2, 96, 1, 1], [70, 96, 1, 1], 1),
            ([1, 24, 1, 1], [96, 24, 1, 1], 1),
            ([2, 8, 1, 1], [6, 4, 1, 1], 2),
        ] {
            let a = attrs(group, vec![], vec![], e.clone());
            let p = plan(&xs, &ws, Some(&[ws[0]]), &a).unwrap();
            if !gemv_applies(&p) {
                return; // The portable kernel keeps the patch path.
            }
            let (x, w, b) = (data(&xs, 4), data(&ws, 5), data(&[ws[0]], 6));
            let got = conv_f32_with(&x, &w, Some(&b), &a, None, act).unwrap();
            let (xd, wd, bd) = (
                x.as_slice().unwrap(),
                w.as_slice().unwrap(),
                b.as_slice().unwrap(),
            );
            let (cg, mg) = (xs[1] / group, ws[0] / group);
            for n in 0..xs[0] {
                for o in 0..ws[0] {
                    let g = o / mg;
                    let s = (0..cg).fold(0f32, |s, c| {
                        wd[o * cg + c].mul_add(xd[n * xs[1] + g * cg + c], s)
                    });
                    let want = act.apply(s + bd[o]);
                    let at = n * ws[0] + o;
                    assert_eq!(
                        got.as_slice().unwrap()[at].to_bits(),
                        want.to_bits(),
                        "{xs:?} {ws:?} [{n}, {o}]"
                    );
                }
            }
        }
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
                crate::kernels::test_data::on_threads(t, || conv_f32(&x, &w, Some(&b), &a).unwrap())
            };
            assert_eq!(run(1), run(3));
        }
    }

    #[test]
    fn same_bits_for_any_thread_count() {
        let x = data(&[1, 16, 40, 40], 5);
        let w = data(&[32, 16, 3, 3], 6);
        let a = attrs(1, vec![], vec![], Padding::SameUpper);
        let run =
            |t| crate::kernels::test_data::on_threads(t, || conv_f32(&x, &w, None, &a).unwrap());
        assert_eq!(run(1), run(3));
    }

    /// Few (batch, group, block) units: the M panels are split over tasks (late layers),
    /// with partial A panels (M = 100) and a partial last column block.
    #[test]
    fn split_over_m_panels_matches_reference_and_thread_count() {
        let e = Padding::Explicit(vec![1, 1, 1, 1]);
        check(
            &[1, 24, 7, 7],
            &[100, 24, 3, 3],
            true,
            attrs(1, vec![], vec![], e.clone()),
        );
        check(
            &[1, 8, 20, 20],
            &[36, 4, 3, 3],
            false,
            attrs(2, vec![], vec![], e.clone()),
        );
        let x = data(&[1, 40, 7, 7], 11);
        let w = data(&[100, 40, 3, 3], 12);
        let b = data(&[100], 13);
        let a = attrs(1, vec![], vec![], e);
        let run = |t| {
            crate::kernels::test_data::on_threads(t, || conv_f32(&x, &w, Some(&b), &a).unwrap())
        };
        assert_eq!(run(1), run(2));
        assert_eq!(run(1), run(3));
    }

    /// Small output planes take the transposed orientation (`gemm_cols`) on the portable
    /// kernel, the ordinary one on AVX2 and AVX-512; either way
    /// the transposed orientation matches the reference and gives the bits of the ordinary
    /// one, with groups, strides, a batch, several blocks and a fused clamp.
    #[test]
    fn transposed_orientation_matches_reference_and_rows() {
        let e = Padding::Explicit(vec![1, 1, 1, 1]);
        let cases = [
            (
                vec![1, 64, 7, 7],
                vec![96, 64, 3, 3],
                attrs(1, vec![], vec![], e.clone()),
            ),
            (
                vec![2, 128, 14, 14],
                vec![64, 128, 1, 1],
                attrs(1, vec![], vec![], Padding::Explicit(vec![])),
            ),
            (
                vec![1, 64, 13, 13],
                vec![64, 32, 3, 3],
                attrs(2, vec![2, 2], vec![], e.clone()),
            ),
            (
                vec![1, 96, 10, 10],
                vec![64, 96, 1, 1],
                attrs(1, vec![], vec![], Padding::Explicit(vec![])),
            ),
        ];
        let act = Activation {
            lo: Some(-0.5),
            hi: Some(0.5),
        };
        for (xs, ws, a) in cases {
            let p = plan(&xs, &ws, Some(&[ws[0]]), &a).unwrap();
            assert_eq!(
                prefer_cols(&p),
                Kernel::detect().transposed_pays(),
                "{xs:?} {ws:?}: the orientation chosen"
            );
            check(&xs, &ws, true, a.clone());
            let (x, w, b) = (data(&xs, 4), data(&ws, 5), data(&[ws[0]], 6));
            let xd = x.as_slice().unwrap();
            let mut cols = vec![0f32; p.out_shape.iter().product()];
            let mut rows = cols.clone();
            let wc: Vec<PackedCols> = pack_weights(&w, p.group);
            let wr: Vec<PackedA> = pack_weights(&w, p.group);
            // SAFETY: im2col_gemm writes floats only.
            unsafe {
                let (c, r) = (uninit::of_init(&mut cols), uninit::of_init(&mut rows));
                im2col_gemm(
                    &p,
                    xd,
                    Weights::Cols(&wc),
                    b.as_slice(),
                    Finish {
                        residual: None,
                        act,
                    },
                    None,
                    c,
                );
                im2col_gemm(
                    &p,
                    xd,
                    Weights::Rows(&wr),
                    b.as_slice(),
                    Finish {
                        residual: None,
                        act,
                    },
                    None,
                    r,
                );
            }
            assert!(
                cols.iter()
                    .zip(&rows)
                    .all(|(c, r)| c.to_bits() == r.to_bits()),
                "{xs:?} {ws:?}: the orientations differ"
            );
        }
    }

    /// Prepared weights and a fused activation give the same bits as packing per call and
    /// clamping afterwards, on the sgemm path and on the depthwise path.
    #[test]
    fn prepared_and_fused_match_plain() {
        let cases = [
            ([1, 16, 30, 30], [32, 16, 3, 3], 1, Padding::SameUpper), // gemm, many blocks
            ([1, 16, 7, 7], [64, 4, 1, 1], 4, Padding::Valid),        // grouped pointwise, split
            ([2, 8, 9, 9], [8, 1, 3, 3], 8, Padding::SameUpper),      // depthwise
        ];
        let acts = [
            Activation::RELU,
            Activation {
                lo: Some(-0.1),
                hi: Some(0.2),
            },
        ];
        for (xs, ws, g, pad) in cases {
            let x = data(&xs, 21);
            let w = data(&ws, 22);
            let b = data(&[ws[0]], 23);
            let a = attrs(g, vec![], vec![], pad);
            let plain = conv_f32(&x, &w, Some(&b), &a).unwrap();
            let prep = prepare(&a, &Tensor::F32(w.clone()));
            assert_eq!(prep.is_some(), ws[1] != 1, "{ws:?}");
            let with = conv_f32_with(&x, &w, Some(&b), &a, prep.as_ref(), Activation::NONE);
            assert_eq!(with.unwrap(), plain);
            for act in acts {
                let fused = conv_f32_with(&x, &w, Some(&b), &a, prep.as_ref(), act).unwrap();
                let want = plain.mapv(|v| act.apply(v));
                let bits = |t: &ArrayD<f32>| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fused), bits(&want), "{ws:?} {act:?}");
            }
        }
        // Packed for another shape: ignored, packed per call.
        let a = attrs(1, vec![], vec![], Padding::Valid);
        let other = prepare(&a, &Tensor::F32(data(&[4, 3, 3, 3], 1))).unwrap();
        let (x, w) = (data(&[1, 3, 6, 6], 2), data(&[5, 3, 3, 3], 3));
        let got = conv_f32_with(&x, &w, None, &a, Some(&other), Activation::NONE).unwrap();
        assert_eq!(got, conv_f32(&x, &w, None, &a).unwrap());
    }

    /// A residual gives the bits of the conv, then a separate `+ r`, then the clamp, on every
    /// path: the patch path (in its tiles, `residual_native`; also split over M panels), and
    /// the depthwise, `conv_lanes`, `conv_direct` and Winograd paths (in a pass after), with
    /// X in planes or blocked.
    #[test]
    fn residual_on_every_path_gives_the_bits_of_a_separate_add() {
        let cases = [
            (
                [1, 5, 30, 30],
                [7, 5, 3, 3],
                1,
                Padding::SameUpper,
                Some(true),
            ),
            ([1, 40, 7, 7], [48, 40, 1, 1], 1, Padding::Valid, Some(true)),
            ([2, 8, 9, 9], [8, 1, 3, 3], 8, Padding::SameUpper, None),
            ([1, 16, 12, 12], [16, 16, 3, 3], 1, Padding::SameUpper, None),
            ([1, 3, 20, 20], [16, 3, 3, 3], 1, Padding::SameUpper, None),
            (
                [1, 64, 10, 10],
                [32, 64, 3, 3],
                1,
                Padding::SameUpper,
                Some(false),
            ),
        ];
        let act = Activation {
            lo: Some(-0.1),
            hi: Some(0.4),
        };
        let bits = |t: &ArrayD<f32>| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (xs, ws, g, pad, native) in cases {
            let (x, w, b) = (data(&xs, 31), data(&ws, 32), data(&[ws[0]], 33));
            let a = attrs(g, vec![], vec![], pad);
            let plain = conv_f32(&x, &w, Some(&b), &a).unwrap();
            let r = data(plain.shape(), 34);
            let want = ndarray::Zip::from(&plain)
                .and(&r)
                .map_collect(|&y, &r| act.apply(y + r));
            let p = plan(&xs, &ws, None, &a).unwrap();
            if let Some(native) = native {
                // Where the path is known on every CPU with AVX2 (not so for the others).
                if Kernel::detect() != Kernel::Portable {
                    assert_eq!(residual_native(&p), native, "{ws:?}");
                }
            }
            let fin = Finish {
                residual: r.as_slice(),
                act,
            };
            let prep = prepare(&a, &Tensor::F32(w.clone()));
            for lin in [Layout::Planes, Layout::Blocked] {
                if lin == Layout::Blocked && !blocked::blockable(&xs) {
                    continue;
                }
                let xin = match lin {
                    Layout::Planes => x.clone(),
                    Layout::Blocked => blocked::to_blocked(&x),
                };
                for want_out in [Layout::Planes, Layout::Blocked] {
                    let (y, lout) =
                        conv_f32_io(&xin, lin, &w, Some(&b), &a, prep.as_ref(), fin, want_out)
                            .unwrap();
                    assert_eq!(
                        lout,
                        Layout::Planes,
                        "{ws:?}: a residual's output is planes"
                    );
                    assert_eq!(bits(&y), bits(&want), "{ws:?} {lin:?} {want_out:?}");
                }
            }
        }
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
