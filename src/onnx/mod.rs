//! The border with ONNX: decoding model and tensor protobufs, importing a model's graph into
//! the IR and exporting it back. Nothing past this module sees a protobuf type.

pub mod builder;
pub mod export;
#[cfg(test)]
mod export_ops_tests;
#[cfg(test)]
mod export_tests;
mod external_data;
pub mod import;
pub mod tensor_proto;
#[cfg(test)]
mod tests;
pub mod value_proto;
#[cfg(test)]
mod value_proto_tests;

pub use export::{export_model, save_model};
pub use import::{import_model, import_model_with_types};
pub use tensor_proto::{load_tensor_pb, tensor_from_proto, tensor_to_proto};

use crate::exec::Value;
use crate::ir::{Graph, ValueDecl, Wrapper};
use anyhow::{anyhow, Result};
use std::path::Path;
use tract_onnx::pb::{ModelProto, TensorProto};

/// Reads, decodes and imports an ONNX model file. Every error message starts with the path.
pub fn load_model(path: &Path) -> Result<Graph> {
    let inner = || -> Result<Graph> {
        let bytes = std::fs::read(path)?;
        decode_model(&bytes, path.parent().unwrap_or(Path::new(".")))
    };
    inner().map_err(|e| anyhow!("{}: {e:#}", path.display()))
}

/// Decodes and imports a serialized ONNX model; `dir` is where its external data files are.
pub fn decode_model(bytes: &[u8], dir: &Path) -> Result<Graph> {
    let mut model = <ModelProto as prost::Message>::decode(bytes)
        .map_err(|e| anyhow!("not a valid ONNX model: {e}"))?;
    let types = value_proto::model_types(bytes)?;
    external_data::inline_external_data(&mut model, dir)?;
    import_model_with_types(&model, &types)
}

/// Reads a serialized value of the type `decl` declares, as onnx's test data holds it: a
/// `TensorProto`, or a `SequenceProto` / `OptionalProto` for a sequence / optional. Errors
/// start with the file path.
pub fn load_value_pb(path: &Path, decl: &ValueDecl) -> Result<Value> {
    let inner = || -> Result<Value> { decode_value(&std::fs::read(path)?, decl) };
    inner().map_err(|e| anyhow!("{}: {e:#}", path.display()))
}

/// Decodes a serialized value of the type `decl` declares (see `load_value_pb`).
pub fn decode_value(bytes: &[u8], decl: &ValueDecl) -> Result<Value> {
    match decl.wrappers.first() {
        None => {
            let p = <TensorProto as prost::Message>::decode(bytes)
                .map_err(|e| anyhow!("not a valid TensorProto: {e}"))?;
            Ok(Value::Tensor(tensor_from_proto(&p)?))
        }
        Some(Wrapper::Sequence) => {
            let p = <value_proto::SequenceProto as prost::Message>::decode(bytes)
                .map_err(|e| anyhow!("not a valid SequenceProto: {e}"))?;
            value_proto::sequence_from_proto(&p)
        }
        Some(Wrapper::Optional) => {
            let p = <value_proto::OptionalProto as prost::Message>::decode(bytes)
                .map_err(|e| anyhow!("not a valid OptionalProto: {e}"))?;
            value_proto::optional_from_proto(&p)
        }
    }
}
