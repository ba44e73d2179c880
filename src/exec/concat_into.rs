//! Channel Concats whose inputs their Convs write straight into the Concat's output buffer,
//! so the Concat itself copies nothing it does not have to.
//!
//! With batch 1, each input of a channel Concat is one contiguous run of its output, in
//! planes (`[1, C, H, W]`: the channels one after another) and blocked alike (`[1, C/8, H,
//! W, 8]`: the blocks one after another). A Conv whose output only that Concat reads (past
//! the activation fused into it) can write its output there instead of into a buffer of its
//! own: SqueezeNet's expand convs, GoogLeNet's inception branches, ShuffleNet's branches.
//! The Concat's copies were 5.5% of SqueezeNet 1.1's single-thread run (0.32 ms; GoogLeNet
//! 0.29 ms, ShuffleNet v2 0.13).
//!
//! In a fused run (`Runner::run_nodes`) the first such Conv to run allocates the Concat's
//! buffer (not zeroed) and every such Conv hands its part to `conv::conv_f32_dest`, which
//! writes there when its output comes out with that part's length and in the layout the
//! plan gave the Concat (`Prepared::blocked`), or else in a buffer of its own as before; its
//! slot then holds `Slot::InConcat`. The Concat copies in the rest (other inputs, and
//! outputs that came out in the other layout, converted), so every float of its buffer is
//! written once before it is read, whatever each Conv did. Same bits: a part written in
//! place holds the floats the Conv would have written into its own buffer.
//!
//! Planned on the shapes `analyze` gives for the graph's declared input shapes (a symbolic
//! dim as 1: torchvision's exports declare a symbolic batch), and applied in the runs whose
//! inputs have exactly those shapes (`ConcatInto::applies`), where those are the run's
//! shapes; to Concats that do not extend an earlier one's buffer (`Plan::extends`,
//! DenseNet's: their inputs have other readers anyway).

use super::prepare::Prepared;
use super::Slot;
use crate::ir::analyze::Facts;
use crate::ir::{Graph, Op};
use crate::kernels::{blocked, uninit};
use crate::tensor::{DType, Tensor};
use anyhow::{anyhow, bail, ensure, Result};
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;
use std::mem::MaybeUninit;

/// The Concat input a Conv writes its output into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// The Concat node.
    pub concat: usize,
    /// The input position of the Conv's (final) output in it.
    pub input: usize,
}

/// A Concat some Convs write into: its output and where each input lies in it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sink {
    /// The output's shape, `[1, C, H, W]` (held `[1, C/8, H, W, 8]` when `blocked`).
    pub shape: Vec<usize>,
    /// Whether the output is held blocked (the plan's choice for the Concat).
    pub blocked: bool,
    /// Per input: its first float in the output and its length.
    pub parts: Vec<(usize, usize)>,
}

impl Sink {
    /// Floats in the output.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The plan: which Convs write into which Concats, for runs on which input shapes.
#[derive(Clone, Debug)]
pub struct ConcatInto {
    /// Per node: the [`Part`] a Conv writes into.
    pub parts: Vec<Option<Part>>,
    /// Per node: the [`Sink`] of a Concat written into.
    pub sinks: Vec<Option<Sink>>,
    /// The tensor inputs' shapes the plan was made for.
    assumes: Vec<(String, Vec<usize>)>,
}

impl ConcatInto {
    /// No Conv writes into a Concat (`n` nodes).
    pub fn none(n: usize) -> ConcatInto {
        ConcatInto {
            parts: vec![None; n],
            sinks: vec![None; n],
            assumes: Vec::new(),
        }
    }

    /// Whether a run on `inputs` runs as planned: every graph input has the shape the plan
    /// was made for (then every value has the shape `analyze` gave it).
    pub fn applies(&self, inputs: &HashMap<String, Tensor>) -> bool {
        self.sinks.iter().any(Option::is_some)
            && self
                .assumes
                .iter()
                .all(|(name, shape)| inputs.get(name).is_some_and(|t| t.shape() == shape))
    }
}

/// The [`ConcatInto`] of `graph`, from the `facts` `analyze` gave for its declared input
/// shapes.
pub fn plan(
    graph: &Graph,
    facts: Option<&Facts>,
    readers: &HashMap<&str, Vec<usize>>,
    prepared: &Prepared,
) -> ConcatInto {
    let n = graph.nodes.len();
    let (mut parts, mut sinks) = (vec![None; n], vec![None; n]);
    let Some(facts) = facts else {
        return ConcatInto::none(n);
    };
    let shape = |v: &str| {
        facts
            .get(v)
            .filter(|f| f.dtype == DType::F32)
            .and_then(|f| f.shape.clone())
    };
    let assumes: Option<Vec<(String, Vec<usize>)>> = graph
        .inputs
        .iter()
        .filter(|d| d.is_tensor())
        .map(|d| {
            let shape = facts.get(&d.name).and_then(|f| f.shape.clone())?;
            Some((d.name.clone(), shape))
        })
        .collect();
    let Some(assumes) = assumes else {
        return ConcatInto::none(n);
    };
    let producer = super::prepare::producers(graph);
    let only_reader = |v: &str, j: usize| {
        readers.get(v).map(Vec::as_slice) == Some(&[j][..])
            && !graph.outputs.iter().any(|o| o.name == v)
    };
    // The Conv whose output, past the activation fused into it, is `v`, read only by `j`.
    let conv_of = |v: &str, j: usize| -> Option<usize> {
        if !only_reader(v, j) {
            return None;
        }
        let mut p = *producer.get(v)?;
        if prepared.forward[p] {
            let u = graph.nodes[p].inputs.first()?;
            if !only_reader(u, p) {
                return None;
            }
            p = *producer.get(u.as_str())?;
        }
        let plain = matches!(graph.nodes[p].op, Op::Conv(_))
            && graph.nodes[p].outputs.len() == 1
            && prepared.residual[p].is_none()
            && prepared.input_affine[p].is_none();
        plain.then_some(p)
    };
    for (j, node) in graph.nodes.iter().enumerate() {
        let Op::Concat { axis } = node.op else {
            continue;
        };
        let ins = &node.inputs;
        // An earlier Concat whose inputs begin this one's: `Plan::extends` may take it.
        let extends = graph.nodes[..j].iter().any(|e| {
            matches!(e.op, Op::Concat { .. })
                && !e.inputs.is_empty()
                && e.inputs.len() < ins.len()
                && ins[..e.inputs.len()] == e.inputs[..]
        });
        let out = node.outputs.first().and_then(|o| shape(o));
        let Some(out @ [1, _, h, w]) = out.as_deref() else {
            continue;
        };
        if extends || !blocked::is_channel_axis(axis) || ins.iter().any(String::is_empty) {
            continue;
        }
        let held = prepared.blocked[j];
        let mut at = 0;
        let mut spans = Vec::with_capacity(ins.len());
        for v in ins {
            match shape(v).as_deref() {
                Some(&[1, c, ih, iw]) if ih == *h && iw == *w && (!held || c % 8 == 0) => {
                    spans.push((at, c * h * w));
                    at += c * h * w;
                }
                _ => break,
            }
        }
        if spans.len() != ins.len() || at != out.iter().product::<usize>() {
            continue;
        }
        let mut any = false;
        for (k, v) in ins.iter().enumerate() {
            let once = ins.iter().filter(|u| *u == v).count() == 1;
            if let Some(c) = conv_of(v, j).filter(|_| once) {
                parts[c] = Some(Part {
                    concat: j,
                    input: k,
                });
                any = true;
            }
        }
        if any {
            sinks[j] = Some(Sink {
                shape: out.to_vec(),
                blocked: held,
                parts: spans,
            });
        }
    }
    ConcatInto {
        parts,
        sinks,
        assumes,
    }
}

/// The Concat's output from `buf`, the parts its Convs wrote (`Slot::InConcat`) and the
/// rest copied in from the input slots, converted to the sink's layout where held in the
/// other.
pub(super) fn finish(
    sink: &Sink,
    mut buf: Box<[MaybeUninit<f32>]>,
    inputs: &[Option<usize>],
    slots: &[Slot],
) -> Result<Tensor> {
    ensure!(buf.len() == sink.len(), "Concat buffer of the wrong length");
    for (k, (s, &(at, len))) in inputs.iter().zip(&sink.parts).enumerate() {
        let slot = &slots[s.ok_or_else(|| anyhow!("Concat input {k} is absent"))?];
        let (t, held) = match slot {
            Slot::InConcat => continue,
            Slot::Blocked(t) => (t, true),
            Slot::Owned(t) => (t, false),
            Slot::Const(t) => (*t, false),
            Slot::Empty | Slot::Value(_) => bail!("Concat input {k} missing"),
        };
        let x = t.as_f32()?;
        let logical = match held {
            true => blocked::logical_shape(x.shape()),
            false => x.shape().to_vec(),
        };
        ensure!(
            logical.len() == 4
                && logical[0] == 1
                && logical[2..] == sink.shape[2..]
                && logical.iter().product::<usize>() == len,
            "Concat input {k} has shape {logical:?}, not the part of {:?} the plan gave it",
            sink.shape
        );
        let converted;
        let x = match (held, sink.blocked) {
            (true, false) => {
                converted = blocked::to_planes(x);
                &converted
            }
            (false, true) => {
                converted = blocked::to_blocked(x);
                &converted
            }
            _ => x,
        };
        let x = x.as_standard_layout();
        let src = x.as_slice().expect("standard layout");
        let dst = &mut buf[at..at + len];
        assert_eq!(src.len(), dst.len());
        // SAFETY: `dst` is `len` floats of `buf`, `src` as many of another array.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast(), len) };
    }
    // SAFETY: the parts cover `buf` (`plan` summed them to its length); each was written
    // by its Conv (its slot says `InConcat`) or just above.
    let data = unsafe { uninit::assume_init(buf) };
    let shape = match sink.blocked {
        true => blocked::blocked_shape(&sink.shape),
        false => sink.shape.clone(),
    };
    Ok(Tensor::F32(ArrayD::from_shape_vec(IxDyn(&shape), data)?))
}
