//! ONNX graph -> IR graph.
//!
//! The graph-level work lives here (initializers, declared inputs and outputs, node naming,
//! topological sort, Constant nodes); each op's attributes are parsed by one small function
//! found through [`importer`], grouped by op family in the sibling files. Attributes are read
//! through [`NodeCtx`] so that every error names the attribute, and the caller prefixes every
//! node error with `node 'name' (OpType): `.

mod conv;
mod elementwise;
mod layout;
mod matmul;
mod norm;
mod reduce;

use super::tensor_proto::{dtype_from_onnx, tensor_from_proto};
use super::value_proto::{self, GraphTypes};
use crate::ir::{Dim, Graph, Node, Op, ValueDecl, Wrapper};
use crate::tensor::Tensor;
use anyhow::{anyhow, bail, Result};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension, type_proto, AttributeProto,
    GraphProto, ModelProto, NodeProto, ValueInfoProto,
};

/// Parses one node's attributes (and, rarely, rewrites its inputs or outputs) into an op.
pub type Importer = fn(&NodeCtx) -> Result<Op>;

/// The op table: ONNX op_type (default domain) -> importer.
pub fn importer(op_type: &str) -> Option<Importer> {
    use elementwise as e;
    Some(match op_type {
        "Conv" => conv::conv,
        "MaxPool" => conv::max_pool,
        "AveragePool" => conv::average_pool,
        "GlobalAveragePool" => conv::global_average_pool,
        "GlobalMaxPool" => conv::global_max_pool,
        "Relu" => e::relu,
        "Sigmoid" => e::sigmoid,
        "Tanh" => e::tanh,
        "Exp" => e::exp,
        "Log" => e::log,
        "Neg" => e::neg,
        "Abs" => e::abs,
        "Sqrt" => e::sqrt,
        "Reciprocal" => e::reciprocal,
        "Floor" => e::floor,
        "Ceil" => e::ceil,
        "Erf" => e::erf,
        "Add" => e::add,
        "Sub" => e::sub,
        "Mul" => e::mul,
        "Div" => e::div,
        "Pow" => e::pow,
        "Clip" => e::clip,
        "Cast" => e::cast,
        "Identity" => e::identity,
        "Dropout" => e::dropout,
        "HardSwish" => e::hard_swish,
        "LeakyRelu" => e::leaky_relu,
        "HardSigmoid" => e::hard_sigmoid,
        "PRelu" => e::prelu,
        "Sum" => e::sum,
        "Mean" => e::mean,
        "Max" => e::max,
        "Min" => e::min,
        "LRN" => norm::lrn,
        "ConvTranspose" => conv::conv_transpose,
        "ConstantOfShape" => layout::constant_of_shape,
        "Expand" => layout::expand,
        "BatchNormalization" => norm::batch_norm,
        "Softmax" => norm::softmax,
        "MatMul" => matmul::matmul,
        "Gemm" => matmul::gemm,
        "Concat" => layout::concat,
        "Unsqueeze" => layout::unsqueeze,
        "Squeeze" => layout::squeeze,
        "Flatten" => layout::flatten,
        "Reshape" => layout::reshape,
        "Transpose" => layout::transpose,
        "Shape" => layout::shape,
        "Gather" => layout::gather,
        "Slice" => layout::slice,
        "Split" => layout::split,
        "Pad" => layout::pad,
        "ReduceMean" => reduce::reduce_mean,
        "ReduceSum" => reduce::reduce_sum,
        _ => return None,
    })
}

/// What an importer may look at beyond the node itself.
struct Env<'a> {
    /// Constants known so far (initializers, and Constant nodes that came earlier).
    constants: &'a BTreeMap<String, Tensor>,
    /// Ranks of values whose shape the model declares.
    ranks: &'a HashMap<String, usize>,
    /// Values read by some node or a graph output.
    used: &'a HashSet<String>,
    /// Every name in the model, for making fresh constant names.
    taken: &'a RefCell<HashSet<String>>,
}

/// One node being imported: typed attribute getters, the opset, and a few graph facts.
pub struct NodeCtx<'a> {
    pub node: &'a NodeProto,
    /// The node's (unique, possibly generated) name.
    pub name: &'a str,
    /// The default-domain opset of the model.
    pub opset: i64,
    env: Env<'a>,
    inputs: RefCell<Vec<String>>,
    outputs: RefCell<Vec<String>>,
    new_constants: RefCell<Vec<(String, Tensor)>>,
}

fn type_name(t: i32) -> &'static str {
    match AttributeType::try_from(t) {
        Ok(AttributeType::Float) => "a float",
        Ok(AttributeType::Int) => "an int",
        Ok(AttributeType::String) => "a string",
        Ok(AttributeType::Tensor) => "a tensor",
        Ok(AttributeType::Graph) => "a graph",
        Ok(AttributeType::Floats) => "a list of floats",
        Ok(AttributeType::Ints) => "a list of ints",
        Ok(AttributeType::Strings) => "a list of strings",
        _ => "another kind",
    }
}

impl<'a> NodeCtx<'a> {
    pub fn op_type(&self) -> &str {
        &self.node.op_type
    }

    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    /// The attribute when present, after checking its declared type. An undefined type
    /// (IR version 1 models) is accepted and the field is read as is.
    fn typed(&self, name: &str, want: AttributeType) -> Result<Option<&AttributeProto>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.r#type == want as i32 || a.r#type == AttributeType::Undefined as i32 => {
                Ok(Some(a))
            }
            Some(a) => bail!(
                "attribute '{name}' should be {}, got {}",
                type_name(want as i32),
                type_name(a.r#type)
            ),
        }
    }

    pub fn get_int_opt(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.typed(name, AttributeType::Int)?.map(|a| a.i))
    }

    pub fn get_int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.get_int_opt(name)?.unwrap_or(default))
    }

    /// A 0/1 attribute as a bool; other values are refused rather than guessed.
    pub fn get_bool(&self, name: &str, default: bool) -> Result<bool> {
        match self.get_int_opt(name)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(v) => bail!("attribute '{name}' = {v} must be 0 or 1"),
        }
    }

    pub fn get_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self
            .typed(name, AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    /// A list of sizes: every element must be at least `min`.
    pub fn get_usizes(&self, name: &str, min: i64) -> Result<Option<Vec<usize>>> {
        match self.get_ints(name)? {
            None => Ok(None),
            Some(v) => v
                .iter()
                .map(|&x| {
                    if x < min {
                        bail!("attribute '{name}' = {v:?}: every value must be at least {min}")
                    }
                    Ok(x as usize)
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }

    pub fn get_float_opt(&self, name: &str) -> Result<Option<f32>> {
        Ok(self.typed(name, AttributeType::Float)?.map(|a| a.f))
    }

    pub fn get_float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.get_float_opt(name)?.unwrap_or(default))
    }

    pub fn get_floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        Ok(self
            .typed(name, AttributeType::Floats)?
            .map(|a| a.floats.clone()))
    }

    pub fn get_string_opt(&self, name: &str) -> Result<Option<String>> {
        match self.typed(name, AttributeType::String)? {
            None => Ok(None),
            Some(a) => String::from_utf8(a.s.clone())
                .map(Some)
                .map_err(|_| anyhow!("attribute '{name}' is not valid UTF-8")),
        }
    }

    pub fn get_string(&self, name: &str, default: &str) -> Result<String> {
        Ok(self
            .get_string_opt(name)?
            .unwrap_or_else(|| default.to_string()))
    }

    /// Refuses an attribute whose presence would change the semantics in a way we do not
    /// implement.
    pub fn refuse_attr(&self, name: &str, why: &str) -> Result<()> {
        if self.attr(name).is_some() {
            bail!("attribute '{name}' is not supported ({why})");
        }
        Ok(())
    }

    /// Number of inputs, counting absent optional ones (`""`) in the middle.
    pub fn input_count(&self) -> usize {
        self.inputs.borrow().len()
    }

    /// Whether optional input `i` is given.
    pub fn has_input(&self, i: usize) -> bool {
        self.inputs.borrow().get(i).is_some_and(|s| !s.is_empty())
    }

    pub fn input_name(&self, i: usize) -> Option<String> {
        self.inputs
            .borrow()
            .get(i)
            .filter(|s| !s.is_empty())
            .cloned()
    }

    /// The value of input `i` when it is a constant known at import time.
    pub fn const_input(&self, i: usize) -> Option<&'a Tensor> {
        let name = self.input_name(i)?;
        self.env.constants.get(&name)
    }

    /// The declared rank of input `i`, when the model declares it.
    pub fn input_rank(&self, i: usize) -> Option<usize> {
        let name = self.input_name(i)?;
        self.env
            .ranks
            .get(&name)
            .copied()
            .or_else(|| self.env.constants.get(&name).map(|t| t.rank()))
    }

    pub fn output_count(&self) -> usize {
        self.outputs.borrow().len()
    }

    /// Whether output `i` exists and something reads it.
    pub fn output_used(&self, i: usize) -> bool {
        self.outputs
            .borrow()
            .get(i)
            .is_some_and(|o| !o.is_empty() && self.env.used.contains(o))
    }

    /// Refuses nodes with more outputs than the op supports (optional outputs that are
    /// absent or never read are dropped).
    pub fn limit_outputs(&self, n: usize) -> Result<()> {
        for i in n..self.output_count() {
            if self.output_used(i) {
                bail!(
                    "output {i} ('{}') is used, but only {n} output(s) are supported",
                    self.outputs.borrow()[i]
                );
            }
        }
        self.outputs.borrow_mut().truncate(n);
        Ok(())
    }

    /// Adds a constant under a fresh name derived from `base` and returns the name.
    pub fn add_constant(&self, base: &str, t: Tensor) -> String {
        let mut taken = self.env.taken.borrow_mut();
        let mut name = base.to_string();
        let mut i = 1;
        while taken.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        taken.insert(name.clone());
        self.new_constants.borrow_mut().push((name.clone(), t));
        name
    }

    /// Replaces the node's inputs (used by importers of older attribute forms).
    pub fn set_inputs(&self, inputs: Vec<String>) {
        *self.inputs.borrow_mut() = inputs;
    }
}

/// Imports a decoded model of tensor inputs and outputs into an IR graph, then checks its
/// structure.
pub fn import_model(model: &ModelProto) -> Result<Graph> {
    import_model_with_types(model, &GraphTypes::default())
}

/// Imports a decoded model, taking the graph inputs' and outputs' sequence and optional types
/// (which tract's decode drops) from `types`, decoded from the same bytes
/// (`value_proto::model_types`).
pub fn import_model_with_types(model: &ModelProto, types: &GraphTypes) -> Result<Graph> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| anyhow!("the model imports no opset of the default ONNX domain"))?;
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("the model has no graph"))?;
    let mut graph = import_graph(g, opset, types)?;
    // Exporters write torch.stack as Unsqueeze+Concat; the IR sees it as one Stack.
    crate::passes::raise_stack::raise_stack(&mut graph);
    crate::ir::check::check_structure(&graph)?;
    Ok(graph)
}

/// A graph input or output's declaration. `declared` is its type as `value_proto` decodes it,
/// read when tract's decode holds no tensor type (a sequence or optional).
fn value_decl(
    v: &ValueInfoProto,
    declared: Option<&value_proto::TypeProto>,
    what: &str,
) -> Result<ValueDecl> {
    let err = |m: &str| anyhow!("{what} '{}': {m}", v.name);
    let (tt, wrappers) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(tt)) => (tt, vec![]),
        None => unwrap_type(declared).map_err(|m| err(&m))?,
    };
    let dtype = dtype_from_onnx(tt.elem_type).map_err(|e| err(&e.to_string()))?;
    let dims = match &tt.shape {
        None => None,
        Some(s) => Some(
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(dimension::Value::DimValue(n)) if *n >= 0 => Ok(Dim::Fixed(*n as usize)),
                    Some(dimension::Value::DimValue(n)) => {
                        Err(err(&format!("negative dimension {n}")))
                    }
                    Some(dimension::Value::DimParam(p)) if !p.is_empty() => Ok(Dim::Sym(p.clone())),
                    // An unknown dim without a name: still symbolic, under a placeholder.
                    _ => Ok(Dim::Sym("?".to_string())),
                })
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    Ok(ValueDecl {
        name: v.name.clone(),
        dtype,
        dims,
        wrappers,
    })
}

/// The tensor type inside sequence and optional types, and those layers, outermost first.
fn unwrap_type(
    declared: Option<&value_proto::TypeProto>,
) -> std::result::Result<(&type_proto::Tensor, Vec<Wrapper>), String> {
    let mut wrappers = Vec::new();
    let mut t = declared.ok_or("no type declared")?;
    loop {
        if let Some(tt) = &t.tensor_type {
            return Ok((tt, wrappers));
        }
        let (w, inner) = if let Some(s) = &t.sequence_type {
            (Wrapper::Sequence, s)
        } else if let Some(o) = &t.optional_type {
            (Wrapper::Optional, o)
        } else {
            let kind = if t.map_type.is_some() {
                "a map"
            } else if t.sparse_tensor_type.is_some() {
                "a sparse tensor"
            } else if t.opaque_type.is_some() {
                "an opaque"
            } else {
                return Err("no type declared".into());
            };
            return Err(format!(
                "{kind} type is not supported (only tensors, and sequences and optionals of them)"
            ));
        };
        wrappers.push(w);
        t = inner
            .elem_type
            .as_deref()
            .ok_or_else(|| format!("{} type without an element type", w.name()))?;
    }
}

/// The declared rank of a value info, if it declares a shape.
fn declared_rank(v: &ValueInfoProto) -> Option<usize> {
    match v.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(tt) => tt.shape.as_ref().map(|s| s.dim.len()),
    }
}

/// Node names: kept when present, `<OpType>_<index>` when empty, suffixed when repeated.
fn node_names(nodes: &[NodeProto]) -> Vec<String> {
    let explicit: HashSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let mut taken: HashSet<String> = HashSet::new();
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let base = if n.name.is_empty() {
                format!("{}_{i}", n.op_type)
            } else {
                n.name.clone()
            };
            let mut name = base.clone();
            let mut k = 1;
            // A generated name must not steal a name given explicitly to a later node.
            while taken.contains(&name) || (n.name.is_empty() && explicit.contains(name.as_str())) {
                name = format!("{base}_{k}");
                k += 1;
            }
            taken.insert(name.clone());
            name
        })
        .collect()
}

/// Kahn's algorithm, stable: among ready nodes the one earliest in the file goes first, so a
/// sorted model keeps its order. Inputs that no node produces are taken as available (the
/// structure check reports the undefined ones). A cycle is an error naming a node on it.
fn topo_order(nodes: &[NodeProto], names: &[String]) -> Result<Vec<usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.entry(o.as_str()).or_insert(i);
        }
    }
    // For each node, its producer predecessors (deduplicated, self-loops included).
    let preds: Vec<BTreeSet<usize>> = nodes
        .iter()
        .map(|n| {
            n.input
                .iter()
                .filter_map(|i| producer.get(i.as_str()).copied())
                .collect()
        })
        .collect();
    let mut indegree: Vec<usize> = preds.iter().map(|p| p.len()).collect();
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, p) in preds.iter().enumerate() {
        for &j in p {
            succs[j].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..nodes.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &s in &succs[i] {
            indegree[s] -= 1;
            if indegree[s] == 0 {
                ready.insert(s);
            }
        }
    }
    if order.len() < nodes.len() {
        // Walk back along unfinished predecessors from any unfinished node: with finitely
        // many nodes the walk repeats, and the first repeated node is on a cycle.
        let start = (0..nodes.len())
            .find(|&i| indegree[i] > 0)
            .expect("unsorted node");
        let mut seen = HashSet::new();
        let mut cur = start;
        while seen.insert(cur) {
            cur = *preds[cur]
                .iter()
                .find(|&&p| indegree[p] > 0)
                .expect("an unfinished node has an unfinished predecessor");
        }
        bail!(
            "node '{}' ({}): the graph has a cycle through this node",
            names[cur],
            nodes[cur].op_type
        );
    }
    Ok(order)
}

/// Constant node -> tensor.
fn constant_value(ctx: &NodeCtx) -> Result<Tensor> {
    for unsupported in ["sparse_value", "value_string", "value_strings"] {
        ctx.refuse_attr(unsupported, "only numeric constants are supported")?;
    }
    if let Some(a) = ctx.typed("value", AttributeType::Tensor)? {
        let t =
            a.t.as_ref()
                .ok_or_else(|| anyhow!("attribute 'value' holds no tensor"))?;
        return tensor_from_proto(t);
    }
    if let Some(f) = ctx.get_float_opt("value_float")? {
        return Ok(Tensor::scalar(f));
    }
    if let Some(i) = ctx.get_int_opt("value_int")? {
        return Ok(Tensor::scalar(i));
    }
    if let Some(v) = ctx.get_floats("value_floats")? {
        return Tensor::from_vec(&[v.len()], v);
    }
    if let Some(v) = ctx.get_ints("value_ints")? {
        return Tensor::from_vec(&[v.len()], v);
    }
    bail!("no value attribute (value, value_float, value_floats, value_int, value_ints)")
}

fn import_graph(g: &GraphProto, opset: i64, types: &GraphTypes) -> Result<Graph> {
    let mut graph = Graph {
        name: g.name.clone(),
        opset,
        ..Default::default()
    };
    for init in &g.initializer {
        if init.name.is_empty() {
            bail!("an initializer has no name");
        }
        let t = tensor_from_proto(init).map_err(|e| anyhow!("initializer: {e:#}"))?;
        if graph.constants.insert(init.name.clone(), t).is_some() {
            bail!("initializer '{}' is defined twice", init.name);
        }
    }
    if !g.sparse_initializer.is_empty() {
        bail!("sparse initializers are not supported");
    }
    // `types` lists the same values in the same order, decoded from the same bytes.
    fn declared<'t>(
        list: &'t [value_proto::ValueInfo],
        i: usize,
        name: &str,
    ) -> Option<&'t value_proto::TypeProto> {
        list.get(i)
            .filter(|t| t.name == name)
            .and_then(|t| t.r#type.as_ref())
    }
    // Graph inputs that are initializers are defaults, not run-time inputs (IR < 4 lists them).
    for (i, v) in g.input.iter().enumerate() {
        if !graph.constants.contains_key(&v.name) {
            let t = declared(&types.input, i, &v.name);
            graph.inputs.push(value_decl(v, t, "graph input")?);
        }
    }
    for (i, v) in g.output.iter().enumerate() {
        let t = declared(&types.output, i, &v.name);
        graph.outputs.push(value_decl(v, t, "graph output")?);
    }

    let mut ranks: HashMap<String, usize> = HashMap::new();
    for v in g.input.iter().chain(&g.value_info).chain(&g.output) {
        if let Some(r) = declared_rank(v) {
            ranks.insert(v.name.clone(), r);
        }
    }
    let mut used: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    for n in &g.node {
        used.extend(n.input.iter().filter(|i| !i.is_empty()).cloned());
    }

    let names = node_names(&g.node);
    let mut taken: HashSet<String> = names.iter().cloned().collect();
    taken.extend(graph.constants.keys().cloned());
    taken.extend(g.input.iter().map(|v| v.name.clone()));
    for n in &g.node {
        taken.extend(n.output.iter().cloned());
        taken.extend(n.input.iter().cloned());
    }
    let taken = RefCell::new(taken);

    for i in topo_order(&g.node, &names)? {
        let node = &g.node[i];
        let name = &names[i];
        let prefix = |e: anyhow::Error| anyhow!("node '{name}' ({}): {e:#}", node.op_type);
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(prefix(anyhow!(
                "domain '{}' is not supported (only the default ONNX domain is)",
                node.domain
            )));
        }
        let ctx = NodeCtx {
            node,
            name,
            opset,
            env: Env {
                constants: &graph.constants,
                ranks: &ranks,
                used: &used,
                taken: &taken,
            },
            inputs: RefCell::new(node.input.clone()),
            outputs: RefCell::new(node.output.clone()),
            new_constants: RefCell::new(Vec::new()),
        };
        if node.op_type == "Constant" {
            // A Constant node becomes a constant value; no node remains.
            let t = constant_value(&ctx).map_err(prefix)?;
            let out = match node.output.as_slice() {
                [o] if !o.is_empty() => o.clone(),
                _ => return Err(prefix(anyhow!("expected exactly one output"))),
            };
            drop(ctx);
            graph.constants.insert(out, t);
            continue;
        }
        let imp = importer(&node.op_type)
            .ok_or_else(|| prefix(anyhow!("unsupported op '{}'", node.op_type)))?;
        let op = imp(&ctx).map_err(prefix)?;
        let NodeCtx {
            inputs,
            outputs,
            new_constants,
            ..
        } = ctx;
        // Trailing absent optional inputs carry no meaning; drop them for a tidier graph.
        let mut inputs = inputs.into_inner();
        while inputs.last().is_some_and(|s| s.is_empty()) {
            inputs.pop();
        }
        let new_constants = new_constants.into_inner();
        graph.constants.extend(new_constants);
        graph.nodes.push(Node {
            name: name.clone(),
            op,
            inputs,
            outputs: outputs.into_inner(),
        });
    }
    Ok(graph)
}
