//! Tensors whose bytes live outside the model file (`data_location: EXTERNAL`).
//!
//! PyTorch's dynamo exporter writes every weight this way by default (`model.onnx` plus
//! `model.onnx.data`), as does any model over protobuf's 2 GiB limit. At load time we read each
//! such tensor's bytes into `raw_data`, so the importer itself never touches the file system
//! and sees only self-contained tensors, as `onnx.load` does.

use crate::tensor::limits;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use tract_onnx::pb::{tensor_proto::DataLocation, ModelProto, TensorProto};

/// Replaces every external tensor of `model` (initializers and Constant nodes' values) by one
/// holding its bytes in `raw_data`. `model_dir` is where the locations are relative to.
pub fn inline_external_data(model: &mut ModelProto, model_dir: &Path) -> Result<()> {
    let Some(graph) = model.graph.as_mut() else {
        return Ok(());
    };
    let mut files = HashMap::new();
    for t in graph.initializer.iter_mut() {
        inline_tensor(t, model_dir, &mut files)
            .with_context(|| format!("initializer '{}'", t.name))?;
    }
    for node in graph.node.iter_mut() {
        for attr in node.attribute.iter_mut() {
            let tensors = attr.t.iter_mut().chain(attr.tensors.iter_mut());
            for t in tensors {
                inline_tensor(t, model_dir, &mut files).with_context(|| {
                    format!(
                        "node '{}' ({}): tensor '{}'",
                        node.name, node.op_type, t.name
                    )
                })?;
            }
        }
    }
    Ok(())
}

fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32)
}

fn inline_tensor(
    t: &mut TensorProto,
    model_dir: &Path,
    files: &mut HashMap<PathBuf, File>,
) -> Result<()> {
    if !is_external(t) {
        return Ok(());
    }
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    };
    let location =
        entry("location").ok_or_else(|| anyhow!("external data without a 'location'"))?;
    let number = |key: &str| -> Result<Option<u64>> {
        entry(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| anyhow!("external data '{key}' is not a number: '{v}'"))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?;
    let path = resolve(model_dir, location)?;

    let file = match files.entry(path.clone()) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            let f = File::open(&path)
                .with_context(|| format!("external data file {}", path.display()))?;
            e.insert(f)
        }
    };
    let file_len = file.metadata()?.len();
    let length = length.unwrap_or(file_len.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > file_len) {
        bail!(
            "external data at offset {offset} with length {length} runs past the end of {} ({file_len} bytes)",
            path.display()
        );
    }
    // The bytes must fit the tensor limit before we allocate them; the decoder later checks
    // they match the declared shape exactly.
    if length > limits::max_tensor_bytes() {
        bail!(
            "external data of {length} bytes exceeds the limit of {} bytes (CONVGRAPH_MAX_TENSOR_BYTES)",
            limits::max_tensor_bytes()
        );
    }
    let mut raw = vec![0u8; length as usize];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut raw)
        .with_context(|| format!("reading {}", path.display()))?;
    t.raw_data = raw;
    t.data_location = Some(DataLocation::Default as i32);
    t.external_data.clear();
    Ok(())
}

/// The external file's path. As in onnx's checker, the location must stay inside the model's
/// directory: an absolute path or `..` could make a model read any file on the machine.
fn resolve(model_dir: &Path, location: &str) -> Result<PathBuf> {
    let rel = Path::new(location);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!("external data location '{location}' must be a relative path inside the model's directory");
    }
    Ok(model_dir.join(rel))
}
