//! ONNX's sequence and optional types and values, which tract's prost types
//! (`tract_onnx::pb`) lack: their `TypeProto` drops `sequence_type` (tag 4) and
//! `optional_type` (tag 9) when decoding, and there is no `SequenceProto` or `OptionalProto`.
//! These are small prost messages for just those parts, with the field tags of onnx.proto and
//! onnx-data.proto. prost skips the fields a message does not declare, so a model's bytes
//! decode into the partial [`ModelTypes`] beside tract's full decode.

use super::tensor_proto::tensor_from_proto;
use crate::exec::Value;
use anyhow::{anyhow, bail, Context, Result};
use tract_onnx::pb::{type_proto, TensorProto};

/// `ModelProto { graph }`: only the declared types of the graph's inputs and outputs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelTypes {
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphTypes>,
}

/// `GraphProto { input, output }`, in the file's order (the same as tract's decode).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphTypes {
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfo>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfo>,
}

/// `ValueInfoProto { name, type }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `TypeProto`: a oneof on the wire, read here as separate optional fields. The map, sparse
/// tensor and opaque kinds are decoded only to name them when refusing them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<type_proto::Tensor>,
    #[prost(message, optional, boxed, tag = "4")]
    pub sequence_type: Option<Box<ElemType>>,
    #[prost(message, optional, tag = "5")]
    pub map_type: Option<Skipped>,
    #[prost(message, optional, tag = "7")]
    pub opaque_type: Option<Skipped>,
    #[prost(message, optional, tag = "8")]
    pub sparse_tensor_type: Option<Skipped>,
    #[prost(message, optional, boxed, tag = "9")]
    pub optional_type: Option<Box<ElemType>>,
}

/// `TypeProto.Sequence` and `TypeProto.Optional`: both are `{ TypeProto elem_type = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ElemType {
    #[prost(message, optional, boxed, tag = "1")]
    pub elem_type: Option<Box<TypeProto>>,
}

/// A message whose content is not needed (its fields are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Skipped {}

/// `SequenceProto.DataType` / `OptionalProto.DataType`.
pub const ELEM_UNDEFINED: i32 = 0;
pub const ELEM_TENSOR: i32 = 1;
pub const ELEM_SEQUENCE: i32 = 3;
pub const ELEM_OPTIONAL: i32 = 5;

fn elem_type_name(code: i32) -> String {
    match code {
        0 => "undefined".into(),
        1 => "tensor".into(),
        2 => "sparse tensor".into(),
        3 => "sequence".into(),
        4 => "map".into(),
        5 => "optional".into(),
        c => format!("unknown ({c})"),
    }
}

/// `SequenceProto` (onnx-data.proto). Sparse tensor and map elements are decoded only to be
/// refused.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SequenceProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "2")]
    pub elem_type: i32,
    #[prost(message, repeated, tag = "3")]
    pub tensor_values: Vec<TensorProto>,
    #[prost(message, repeated, tag = "4")]
    pub sparse_tensor_values: Vec<Skipped>,
    #[prost(message, repeated, tag = "5")]
    pub sequence_values: Vec<SequenceProto>,
    #[prost(message, repeated, tag = "6")]
    pub map_values: Vec<Skipped>,
    #[prost(message, repeated, tag = "7")]
    pub optional_values: Vec<OptionalProto>,
}

/// `OptionalProto` (onnx-data.proto), likewise. No value field set: the optional is absent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OptionalProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "2")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "3")]
    pub tensor_value: Option<TensorProto>,
    #[prost(message, optional, tag = "4")]
    pub sparse_tensor_value: Option<Skipped>,
    #[prost(message, optional, tag = "5")]
    pub sequence_value: Option<SequenceProto>,
    #[prost(message, optional, tag = "6")]
    pub map_value: Option<Skipped>,
    #[prost(message, optional, boxed, tag = "7")]
    pub optional_value: Option<Box<OptionalProto>>,
}

/// The declared input and output types of a serialized model, for the types tract's decode
/// drops. Empty lists when the model has no graph.
pub fn model_types(model_bytes: &[u8]) -> Result<GraphTypes> {
    let m = <ModelTypes as prost::Message>::decode(model_bytes)
        .map_err(|e| anyhow!("not a valid ONNX model: {e}"))?;
    Ok(m.graph.unwrap_or_default())
}

/// A `SequenceProto` as a value. Its elements must all be of the kind `elem_type` names.
pub fn sequence_from_proto(p: &SequenceProto) -> Result<Value> {
    let (t, s, o) = (
        p.tensor_values.len(),
        p.sequence_values.len(),
        p.optional_values.len(),
    );
    if !p.sparse_tensor_values.is_empty() || !p.map_values.is_empty() {
        bail!(
            "sequence '{}': sparse tensor and map elements are not supported",
            p.name
        );
    }
    let items = match p.elem_type {
        ELEM_TENSOR if s + o == 0 => p
            .tensor_values
            .iter()
            .map(|t| tensor_from_proto(t).map(Value::Tensor))
            .collect::<Result<Vec<_>>>(),
        ELEM_SEQUENCE if t + o == 0 => p.sequence_values.iter().map(sequence_from_proto).collect(),
        ELEM_OPTIONAL if t + s == 0 => p.optional_values.iter().map(optional_from_proto).collect(),
        ELEM_TENSOR | ELEM_SEQUENCE | ELEM_OPTIONAL => bail!(
            "sequence '{}' of elem_type {} holds elements of another kind",
            p.name,
            elem_type_name(p.elem_type)
        ),
        // An empty sequence may leave its element type undefined.
        ELEM_UNDEFINED if t + s + o == 0 => Ok(Vec::new()),
        c => bail!(
            "sequence '{}': elements of type {} are not supported (only tensors, sequences and optionals)",
            p.name,
            elem_type_name(c)
        ),
    };
    let items = items.with_context(|| format!("sequence '{}'", p.name))?;
    Ok(Value::Sequence(items))
}

/// An `OptionalProto` as a value: absent when it holds no value, whatever its `elem_type`.
pub fn optional_from_proto(p: &OptionalProto) -> Result<Value> {
    if p.sparse_tensor_value.is_some() || p.map_value.is_some() {
        bail!(
            "optional '{}': a sparse tensor or map value is not supported",
            p.name
        );
    }
    let inner = match (
        p.elem_type,
        &p.tensor_value,
        &p.sequence_value,
        &p.optional_value,
    ) {
        (_, None, None, None) => None,
        (ELEM_TENSOR, Some(t), None, None) => Some(Value::Tensor(tensor_from_proto(t)?)),
        (ELEM_SEQUENCE, None, Some(s), None) => Some(sequence_from_proto(s)?),
        (ELEM_OPTIONAL, None, None, Some(o)) => Some(optional_from_proto(o)?),
        (c, ..) => bail!(
            "optional '{}' of elem_type {} holds a value of another kind",
            p.name,
            elem_type_name(c)
        ),
    };
    Ok(Value::Optional(inner.map(Box::new)))
}
