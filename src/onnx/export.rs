//! IR graph -> ONNX `ModelProto`, the inverse of `import`.
//!
//! Each op is written in the form the graph's opset defines (Clip bounds as attributes before
//! opset 11, inputs from it; Squeeze/Unsqueeze/ReduceSum/Split axes or sizes as inputs from
//! 13, ReduceMean's from 18; Slice bounds as attributes before 10 ...), so the file is valid
//! for the opset it declares, and importing it gives back the same graph: the importer turns
//! each form into the one IR form, and the exporter chooses, for the IR form, the form the
//! importer started from. Stack, which ONNX lacks, is lowered to Unsqueeze+Concat first and
//! raised back by the importer.

use super::tensor_proto::tensor_to_proto;
use crate::ir::{
    analyze, Dim, DimBindings, Facts, Graph, NameGen, Node, Op, Padding, PoolAttrs, ReduceAttrs,
    ValueDecl, Window,
};
use crate::tensor::Tensor;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension, tensor_shape_proto::Dimension,
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The lowest IR version that defines the opset (the ONNX versioning table), but at least 4:
/// from IR 4 initializers need not be repeated among the graph inputs.
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        _ => 11,
    }
}

/// Builds the ONNX model of `graph`. Errors name the node and op that cannot be written.
pub fn export_model(graph: &Graph) -> Result<ModelProto> {
    // tract's TypeProto, which the model is built from, has no sequence or optional type.
    if let Some(d) = graph
        .inputs
        .iter()
        .chain(&graph.outputs)
        .find(|d| !d.is_tensor())
    {
        bail!(
            "'{}' has type {}: export writes tensor types only",
            d.name,
            d.type_text()
        );
    }
    let mut g = graph.clone();
    crate::passes::lower_stack::lower_stack(&mut g)?;
    let mut ex = Exporter {
        graph: &g,
        names: NameGen::new(&g),
        new_constants: Vec::new(),
        facts: None,
        value_info: Vec::new(),
    };
    let mut nodes = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        let proto = ex
            .node(n)
            .map_err(|e| anyhow!("node '{}' ({}): {e:#}", n.name, n.op.name()))?;
        nodes.push(proto);
    }

    // Constants that only fed inputs now written as attributes are dropped; constants that
    // nothing read in the graph either are kept, as the importer keeps them.
    let read = |inputs: &mut dyn Iterator<Item = &String>| -> HashSet<String> {
        inputs
            .filter(|s| !s.is_empty())
            .cloned()
            .chain(g.outputs.iter().map(|o| o.name.clone()))
            .collect()
    };
    let read_before = read(&mut g.nodes.iter().flat_map(|n| n.inputs.iter()));
    let read_after = read(&mut nodes.iter().flat_map(|n| n.input.iter()));
    let mut initializer: Vec<_> = g
        .constants
        .iter()
        .filter(|(k, _)| read_after.contains(*k) || !read_before.contains(*k))
        .map(|(k, t)| tensor_to_proto(k, t))
        .collect();
    initializer.extend(ex.new_constants.iter().map(|(k, t)| tensor_to_proto(k, t)));

    Ok(ModelProto {
        ir_version: ir_version(g.opset),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: g.opset,
        }],
        producer_name: "convgraph".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(GraphProto {
            name: g.name.clone(),
            node: nodes,
            initializer,
            input: g.inputs.iter().map(value_info).collect(),
            output: g.outputs.iter().map(value_info).collect(),
            value_info: ex.value_info,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Exports `graph` and writes it to `path` atomically: the bytes go to a temporary file in
/// the same directory (so the rename cannot cross file systems), which is then renamed over
/// `path`. A failure at any step leaves no output file, never a half-written one.
pub fn save_model(graph: &Graph, path: &Path) -> Result<()> {
    let model = export_model(graph)?;
    let bytes = prost::Message::encode_to_vec(&model);
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file path", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("{}: cannot write: {e}", path.display())
    })
}

fn value_info(v: &ValueDecl) -> ValueInfoProto {
    let shape = v.dims.as_ref().map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: match d {
                    Dim::Fixed(n) => Some(dimension::Value::DimValue(*n as i64)),
                    // "?" is the importer's placeholder for a dim the file left unnamed.
                    Dim::Sym(s) if s == "?" => None,
                    Dim::Sym(s) => Some(dimension::Value::DimParam(s.clone())),
                },
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: v.name.clone(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: v.dtype.onnx_code(),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ty as i32,
        ..Default::default()
    }
}

fn a_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        i,
        ..attr(name, AttributeType::Int)
    }
}

fn a_bool(name: &str, b: bool) -> AttributeProto {
    a_int(name, b as i64)
}

fn a_ints(name: &str, ints: Vec<i64>) -> AttributeProto {
    AttributeProto {
        ints,
        ..attr(name, AttributeType::Ints)
    }
}

fn a_usizes(name: &str, v: &[usize]) -> AttributeProto {
    a_ints(name, v.iter().map(|&x| x as i64).collect())
}

fn a_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        f,
        ..attr(name, AttributeType::Float)
    }
}

fn a_tensor(name: &str, t: &Tensor) -> AttributeProto {
    AttributeProto {
        t: Some(tensor_to_proto("", t)),
        ..attr(name, AttributeType::Tensor)
    }
}

fn a_string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        s: s.as_bytes().to_vec(),
        ..attr(name, AttributeType::String)
    }
}

/// kernel_shape, strides, dilations, and pads or auto_pad: only what the IR holds, so empty
/// lists (the defaults) stay absent as they were in the imported file.
fn window_attrs(w: &Window, attrs: &mut Vec<AttributeProto>) {
    if let Some(k) = &w.kernel_shape {
        attrs.push(a_usizes("kernel_shape", k));
    }
    if !w.strides.is_empty() {
        attrs.push(a_usizes("strides", &w.strides));
    }
    if !w.dilations.is_empty() {
        attrs.push(a_usizes("dilations", &w.dilations));
    }
    match &w.padding {
        Padding::Explicit(p) if p.is_empty() => {}
        Padding::Explicit(p) => attrs.push(a_usizes("pads", p)),
        Padding::SameUpper => attrs.push(a_string("auto_pad", "SAME_UPPER")),
        Padding::SameLower => attrs.push(a_string("auto_pad", "SAME_LOWER")),
        Padding::Valid => attrs.push(a_string("auto_pad", "VALID")),
    }
}

fn pool_attrs(p: &PoolAttrs, attrs: &mut Vec<AttributeProto>) {
    window_attrs(&p.window, attrs);
    if p.ceil_mode {
        attrs.push(a_bool("ceil_mode", true));
    }
    if p.count_include_pad {
        attrs.push(a_bool("count_include_pad", true));
    }
    if p.column_major_indices {
        attrs.push(a_int("storage_order", 1));
    }
}

struct Exporter<'a> {
    graph: &'a Graph,
    names: NameGen,
    /// Constants made for inputs that the IR holds as attributes (axes from opset 13 ...).
    new_constants: Vec<(String, Tensor)>,
    /// Computed on first need: only a few forms need a dtype or rank.
    facts: Option<Facts>,
    /// Declared ranks of intermediate values that the importer needs to read the file back.
    value_info: Vec<ValueInfoProto>,
}

/// One node being written: its inputs (which the op's form may change) and attributes.
struct Out {
    inputs: Vec<String>,
    attrs: Vec<AttributeProto>,
}

impl Out {
    /// Whether input `i` is given.
    fn has(&self, i: usize) -> bool {
        self.inputs.get(i).is_some_and(|s| !s.is_empty())
    }

    /// Sets input `i` (padding absent ones with `""`).
    fn set_input(&mut self, i: usize, name: String) {
        if self.inputs.len() <= i {
            self.inputs.resize(i + 1, String::new());
        }
        self.inputs[i] = name;
    }

    /// Removes input `i`, leaving no trailing absent inputs.
    fn drop_input(&mut self, i: usize) {
        if i < self.inputs.len() {
            self.inputs[i].clear();
        }
        while self.inputs.last().is_some_and(|s| s.is_empty()) {
            self.inputs.pop();
        }
    }
}

impl Exporter<'_> {
    fn facts(&mut self) -> Result<&Facts> {
        if self.facts.is_none() {
            let f = analyze(self.graph, &DimBindings::default())
                .context("cannot infer the shapes this op's export needs")?;
            self.facts = Some(f);
        }
        Ok(self.facts.as_ref().expect("just set"))
    }

    fn add_constant(&mut self, base: &str, t: Tensor) -> String {
        let name = self.names.fresh(base);
        self.new_constants.push((name.clone(), t));
        name
    }

    /// Input `i` of `out` as integers; it must be a constant to become an attribute.
    fn const_ints(&self, out: &Out, i: usize, what: &str) -> Result<Vec<i64>> {
        let name = out.inputs.get(i).filter(|s| !s.is_empty());
        let t = name
            .and_then(|n| self.graph.constants.get(n))
            .ok_or_else(|| {
                anyhow!(
                    "input '{what}' ({}) must be a constant to be written as an attribute at opset {}",
                    name.map(String::as_str).unwrap_or(""),
                    self.graph.opset
                )
            })?;
        t.to_i64_vec().with_context(|| format!("input '{what}'"))
    }

    /// Axes (or split sizes) held either by the IR attribute or by input `i`, written as an
    /// input when `as_input` (the opset's form), else as attribute `name`.
    fn ints_attr_or_input(
        &mut self,
        node: &Node,
        out: &mut Out,
        name: &str,
        value: Option<Vec<i64>>,
        i: usize,
        as_input: bool,
    ) -> Result<()> {
        match (value, as_input) {
            (Some(_), _) if out.has(i) => {
                bail!("'{name}' given both as attribute and as input")
            }
            (Some(v), true) => {
                let c = self.add_constant(
                    &format!("{}.{name}", node.name),
                    Tensor::from_vec(&[v.len()], v)?,
                );
                out.set_input(i, c);
            }
            (Some(v), false) => out.attrs.push(a_ints(name, v)),
            (None, false) if out.has(i) => {
                let v = self.const_ints(out, i, name)?;
                out.drop_input(i);
                out.attrs.push(a_ints(name, v));
            }
            (None, _) => {}
        }
        Ok(())
    }

    fn node(&mut self, n: &Node) -> Result<NodeProto> {
        let opset = self.graph.opset;
        let mut out = Out {
            inputs: n.inputs.clone(),
            attrs: Vec::new(),
        };
        match &n.op {
            Op::Unary(u) => {
                if *u == crate::ir::UnaryOp::HardSwish && opset < 14 {
                    bail!("HardSwish needs opset 14, the graph has {opset}");
                }
            }
            Op::Binary(_) => {
                // Before opset 7 broadcasting had to be asked for; equal shapes are unaffected.
                if opset < 7 {
                    out.attrs.push(a_int("broadcast", 1));
                }
            }
            Op::MatMul | Op::GlobalAveragePool | Op::GlobalMaxPool | Op::Identity => {}
            Op::Conv(a) => {
                window_attrs(&a.window, &mut out.attrs);
                out.attrs.push(a_int("group", a.group as i64));
            }
            Op::MaxPool(p) | Op::AveragePool(p) => {
                // The Indices output and storage_order came with MaxPool-8.
                if matches!(n.op, Op::MaxPool(_))
                    && (n.outputs.len() > 1 || p.column_major_indices)
                    && opset < 8
                {
                    bail!("MaxPool's Indices output needs opset 8, the graph has {opset}");
                }
                pool_attrs(p, &mut out.attrs)
            }
            Op::Clip { min, max } => self.clip(n, &mut out, *min, *max)?,
            Op::Pad(p) => self.pad(n, &mut out, p)?,
            Op::BatchNorm { epsilon } => {
                out.attrs.push(a_float("epsilon", *epsilon));
                // Before opset 7 the default was training mode; say inference explicitly.
                if opset < 7 {
                    out.attrs.push(a_int("is_test", 1));
                }
            }
            Op::BatchNormTraining { epsilon, momentum } => {
                // Older opsets' training form has other outputs (saved mean/var) and
                // semantics; only the opset >= 14 form says what this op does.
                if opset < 14 {
                    bail!(
                        "BatchNormalization in training mode needs opset 14, the graph has {opset}"
                    );
                }
                out.attrs.push(a_float("epsilon", *epsilon));
                out.attrs.push(a_float("momentum", *momentum));
                out.attrs.push(a_int("training_mode", 1));
            }
            Op::Stack { .. } => bail!("Stack has no ONNX form; lower-stack should have run"),
            Op::Concat { axis } => out.attrs.push(a_int("axis", *axis)),
            Op::Unsqueeze { axes } => {
                if opset < 13 && axes.is_none() && !out.has(1) {
                    bail!("axes are required before opset 13");
                }
                self.ints_attr_or_input(n, &mut out, "axes", axes.clone(), 1, opset >= 13)?;
            }
            Op::Squeeze { axes } => {
                self.ints_attr_or_input(n, &mut out, "axes", axes.clone(), 1, opset >= 13)?;
            }
            Op::Gemm(a) => {
                out.attrs.push(a_float("alpha", a.alpha));
                out.attrs.push(a_float("beta", a.beta));
                out.attrs.push(a_bool("transA", a.trans_a));
                out.attrs.push(a_bool("transB", a.trans_b));
            }
            Op::Flatten { axis } => out.attrs.push(a_int("axis", *axis)),
            Op::Reshape { allowzero } => {
                // Opset < 5 had the target shape as an attribute.
                if opset < 5 {
                    let shape = self.const_ints(&out, 1, "shape")?;
                    out.drop_input(1);
                    out.attrs.push(a_ints("shape", shape));
                }
                if *allowzero {
                    out.attrs.push(a_bool("allowzero", true));
                }
            }
            Op::Transpose { perm } => {
                if let Some(p) = perm {
                    out.attrs.push(a_usizes("perm", p));
                }
            }
            Op::Shape { start, end } => {
                // start/end exist from opset 15; before, Shape is always the whole shape.
                if opset < 15 && (*start != 0 || end.is_some()) {
                    bail!("start/end need opset 15, the graph has {opset}");
                }
                if *start != 0 {
                    out.attrs.push(a_int("start", *start));
                }
                if let Some(e) = end {
                    out.attrs.push(a_int("end", *e));
                }
            }
            Op::Gather { axis } => out.attrs.push(a_int("axis", *axis)),
            Op::Slice => {
                if opset < 10 {
                    self.slice_attrs(&mut out)?;
                }
            }
            Op::Split { axis, split } => {
                out.attrs.push(a_int("axis", *axis));
                let split = split
                    .as_ref()
                    .map(|s| s.iter().map(|&x| x as i64).collect());
                self.ints_attr_or_input(n, &mut out, "split", split, 1, opset >= 13)?;
                // From 18 an even split must say how many parts it makes.
                if opset >= 18 && !out.has(1) {
                    out.attrs.push(a_int("num_outputs", n.outputs.len() as i64));
                }
            }
            Op::ReduceMean(a) => self.reduce(n, &mut out, a, 18)?,
            Op::ReduceSum(a) => self.reduce(n, &mut out, a, 13)?,
            Op::Cast { to } => out.attrs.push(a_int("to", to.onnx_code() as i64)),
            Op::ConstantOfShape { value } => {
                if opset < 9 {
                    bail!("ConstantOfShape needs opset 9, the graph has {opset}");
                }
                out.attrs.push(a_tensor("value", value));
            }
            Op::Expand => {
                if opset < 8 {
                    bail!("Expand needs opset 8, the graph has {opset}");
                }
            }
            // Before opset 8 these did not broadcast, but equal shapes mean the same thing.
            Op::Variadic(_) | Op::PRelu => {}
            Op::LeakyRelu { alpha } => out.attrs.push(a_float("alpha", *alpha)),
            Op::HardSigmoid { alpha, beta } => {
                out.attrs.push(a_float("alpha", *alpha));
                out.attrs.push(a_float("beta", *beta));
            }
            Op::Dropout => self.dropout(n, &mut out)?,
            Op::Lrn(a) => {
                out.attrs.push(a_float("alpha", a.alpha));
                out.attrs.push(a_float("beta", a.beta));
                out.attrs.push(a_float("bias", a.bias));
                out.attrs.push(a_int("size", a.size as i64));
            }
            Op::ConvTranspose(a) => {
                window_attrs(&a.window, &mut out.attrs);
                out.attrs.push(a_int("group", a.group as i64));
                if !a.output_padding.is_empty() {
                    out.attrs
                        .push(a_usizes("output_padding", &a.output_padding));
                }
                if let Some(s) = &a.output_shape {
                    out.attrs.push(a_usizes("output_shape", s));
                }
            }
            Op::SoftmaxFlat { axis } => {
                if opset >= 13 {
                    bail!(
                        "the flattening Softmax exists only before opset 13, the graph has {opset}"
                    );
                }
                out.attrs.push(a_int("axis", *axis));
            }
            Op::Softmax { axis } => {
                let axis = if opset < 13 {
                    self.softmax_axis_before_13(n, *axis)?
                } else {
                    *axis
                };
                out.attrs.push(a_int("axis", axis));
            }
        }
        Ok(NodeProto {
            name: n.name.clone(),
            op_type: match &n.op {
                Op::SoftmaxFlat { .. } => "Softmax".into(),
                Op::BatchNormTraining { .. } => "BatchNormalization".into(),
                op => op.name().into(),
            },
            input: out.inputs,
            output: n.outputs.clone(),
            attribute: out.attrs,
            ..Default::default()
        })
    }

    /// Ratio and training_mode are inputs from opset 12; before, the ratio is an attribute
    /// (ignored in inference) and training mode is not expressible. The bool mask output
    /// exists from opset 10 (it had X's dtype before).
    fn dropout(&mut self, n: &Node, out: &mut Out) -> Result<()> {
        let opset = self.graph.opset;
        if opset < 10 && n.outputs.len() > 1 {
            bail!("the bool mask output needs opset 10, the graph has {opset}");
        }
        if opset < 12 {
            if out.has(2) {
                bail!("input 'training_mode' needs opset 12, the graph has {opset}");
            }
            if out.has(1) {
                let name = &out.inputs[1];
                let t = self.graph.constants.get(name).ok_or_else(|| {
                    anyhow!("input 'ratio' ({name}) must be a constant before opset 12")
                })?;
                match t.to_f64_vec().as_slice() {
                    [v] => out.attrs.push(a_float("ratio", *v as f32)),
                    _ => bail!("input 'ratio' must be a scalar, has shape {:?}", t.shape()),
                }
                out.inputs.truncate(1);
            }
            if opset < 7 {
                out.attrs.push(a_int("is_test", 1));
            }
        }
        Ok(())
    }

    /// Attributes before opset 11; scalar inputs of X's dtype from 11.
    /// Pad: `pads` and `value` are attributes before opset 11, inputs 1 and 2 from 11 on
    /// (input 3, the axes, exists from 18; before it the pads must cover every axis).
    fn pad(&mut self, n: &Node, out: &mut Out, p: &crate::ir::op::PadAttrs) -> Result<()> {
        use crate::ir::op::PadMode;
        let mode = match p.mode {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Edge => "edge",
            PadMode::Wrap => "wrap",
        };
        let opset = self.graph.opset;
        if p.mode == PadMode::Wrap && opset < 19 {
            bail!("mode 'wrap' needs opset 19, the graph has {opset}");
        }
        out.attrs.push(a_string("mode", mode));
        if opset < 11 {
            if out.has(3) {
                bail!("pad axes need opset 18, the graph has {opset}");
            }
            self.ints_attr_or_input(n, out, "pads", p.pads.clone(), 1, false)?;
            let value = match (p.pads.is_some(), out.has(2)) {
                (true, _) => p.value,
                (false, true) => {
                    let name = &out.inputs[2];
                    let t = self.graph.constants.get(name).ok_or_else(|| {
                        anyhow!(
                            "input 'constant_value' ({name}) must be a constant before opset 11"
                        )
                    })?;
                    t.to_f64_vec().first().copied().unwrap_or(0.0)
                }
                (false, false) => 0.0,
            };
            out.inputs.truncate(1);
            if value != 0.0 {
                out.attrs.push(a_float("value", value as f32));
            }
            return Ok(());
        }
        if out.has(3) && opset < 18 {
            bail!("pad axes need opset 18, the graph has {opset}");
        }
        self.ints_attr_or_input(n, out, "pads", p.pads.clone(), 1, true)?;
        if p.pads.is_some() && p.value != 0.0 {
            let x = n.input(0).unwrap_or_default();
            let dtype = self
                .facts()?
                .get(x)
                .map(|f| f.dtype)
                .ok_or_else(|| anyhow!("the dtype of input '{x}' is unknown"))?;
            let c = self.add_constant(
                &format!("{}.constant_value", n.name),
                Tensor::scalar(p.value).cast(dtype),
            );
            out.set_input(2, c);
        }
        Ok(())
    }

    fn clip(&mut self, n: &Node, out: &mut Out, min: Option<f32>, max: Option<f32>) -> Result<()> {
        for (i, what, bound) in [(1, "min", min), (2, "max", max)] {
            if self.graph.opset < 11 {
                let v = match (bound, out.has(i)) {
                    (Some(_), true) => bail!("'{what}' given both as attribute and as input"),
                    (Some(v), false) => Some(v),
                    (None, true) => {
                        let name = &out.inputs[i];
                        let t = self.graph.constants.get(name).ok_or_else(|| {
                            anyhow!("input '{what}' ({name}) must be a constant before opset 11")
                        })?;
                        match t.to_f64_vec().as_slice() {
                            [v] => Some(*v as f32),
                            _ => {
                                bail!("input '{what}' must be a scalar, has shape {:?}", t.shape())
                            }
                        }
                    }
                    (None, false) => None,
                };
                if let Some(v) = v {
                    out.attrs.push(a_float(what, v));
                }
            } else if let Some(v) = bound {
                if out.has(i) {
                    bail!("'{what}' given both as attribute and as input");
                }
                let x = n.input(0).unwrap_or_default();
                let dtype = self
                    .facts()?
                    .get(x)
                    .map(|f| f.dtype)
                    .ok_or_else(|| anyhow!("the dtype of input '{x}' is unknown"))?;
                let c =
                    self.add_constant(&format!("{}.{what}", n.name), Tensor::scalar(v).cast(dtype));
                out.set_input(i, c);
            }
        }
        if self.graph.opset < 11 {
            out.inputs.truncate(1);
        }
        Ok(())
    }

    /// Opset < 10: starts, ends and axes as attributes; steps did not exist, so they must be
    /// all 1.
    fn slice_attrs(&self, out: &mut Out) -> Result<()> {
        if out.has(4) && self.const_ints(out, 4, "steps")?.iter().any(|&s| s != 1) {
            bail!("steps other than 1 need opset 10");
        }
        out.attrs
            .push(a_ints("starts", self.const_ints(out, 1, "starts")?));
        out.attrs
            .push(a_ints("ends", self.const_ints(out, 2, "ends")?));
        if out.has(3) {
            out.attrs
                .push(a_ints("axes", self.const_ints(out, 3, "axes")?));
        }
        out.inputs.truncate(1);
        Ok(())
    }

    fn reduce(
        &mut self,
        n: &Node,
        out: &mut Out,
        a: &ReduceAttrs,
        axes_input_from: i64,
    ) -> Result<()> {
        let as_input = self.graph.opset >= axes_input_from;
        self.ints_attr_or_input(n, out, "axes", a.axes.clone(), 1, as_input)?;
        out.attrs.push(a_bool("keepdims", a.keepdims));
        if a.noop_with_empty_axes {
            out.attrs.push(a_bool("noop_with_empty_axes", true));
        }
        Ok(())
    }

    /// Before opset 13 Softmax flattens to 2-D at `axis`, which equals the IR's one-axis
    /// Softmax only on the last axis. From opset 11 that is `-1`; before, negative axes did
    /// not exist, so the axis is `rank - 1` and the input's rank is declared in value_info,
    /// which the importer needs to accept it.
    fn softmax_axis_before_13(&mut self, n: &Node, axis: i64) -> Result<i64> {
        let opset = self.graph.opset;
        let x = n.input(0).unwrap_or_default().to_string();
        let fact = self.facts()?.get(&x).cloned();
        let rank = fact.as_ref().and_then(|f| f.rank());
        let last = match rank {
            Some(r) => axis == -1 || axis == r as i64 - 1,
            None => axis == -1,
        };
        if !last {
            bail!(
                "axis {axis} is not the last axis (rank {}); before opset 13 that is another op",
                rank.map(|r| r.to_string())
                    .unwrap_or_else(|| "unknown".into())
            );
        }
        if opset >= 11 {
            return Ok(-1);
        }
        let (Some(f), Some(r)) = (fact, rank) else {
            bail!("the rank of input '{x}' is unknown, and opset {opset} needs it for the axis");
        };
        let declared = self.graph.inputs.iter().any(|d| d.name == x)
            || self.graph.outputs.iter().any(|d| d.name == x)
            || self.graph.constants.contains_key(&x)
            || self.value_info.iter().any(|v| v.name == x);
        if !declared {
            // Rank only: the dims of symbolic inputs are not known here.
            self.value_info.push(value_info(&ValueDecl {
                name: x,
                dtype: f.dtype,
                dims: Some(vec![Dim::Sym("?".into()); r]),
                wrappers: vec![],
            }));
        }
        Ok(r as i64 - 1)
    }
}
