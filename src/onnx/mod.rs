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

pub use export::{export_model, save_model};
pub use import::import_model;
pub use tensor_proto::{load_tensor_pb, tensor_from_proto, tensor_to_proto};

use crate::ir::Graph;
use anyhow::{anyhow, Result};
use std::path::Path;
use tract_onnx::pb::ModelProto;

/// Reads, decodes and imports an ONNX model file. Every error message starts with the path.
pub fn load_model(path: &Path) -> Result<Graph> {
    let inner = || -> Result<Graph> {
        let bytes = std::fs::read(path)?;
        let mut model = <ModelProto as prost::Message>::decode(bytes.as_slice())
            .map_err(|e| anyhow!("not a valid ONNX model: {e}"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        external_data::inline_external_data(&mut model, dir)?;
        import_model(&model)
    };
    inner().map_err(|e| anyhow!("{}: {e:#}", path.display()))
}
