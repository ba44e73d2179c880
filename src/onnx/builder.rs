//! Builders for small `ModelProto`s: the models of the unit and CLI tests and the ones
//! `examples/make_models.rs` writes into `models/`. (This is the one place outside the
//! importer that names protobuf types; it exists so tests can write models the importer
//! then reads, good and bad.)

use super::tensor_to_proto;
use crate::tensor::{DType, Tensor};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// A value info with a dtype and fixed dims (`None`: no shape declared).
pub fn value_info(name: &str, dtype: DType, dims: Option<&[i64]>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: dtype.onnx_code(),
                shape: dims.map(|d| TensorShapeProto {
                    dim: d
                        .iter()
                        .map(|&v| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(v)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An f32 initializer in the `float_data` form (not raw bytes), as hand-written models have.
pub fn float_tensor(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "{name}");
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DType::F32.onnx_code(),
        float_data: data,
        ..Default::default()
    }
}

/// A 1-D i64 initializer in the `int64_data` form.
pub fn int64_tensor(name: &str, data: Vec<i64>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![data.len() as i64],
        data_type: DType::I64.onnx_code(),
        int64_data: data,
        ..Default::default()
    }
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

pub fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn attr_tensor(name: &str, t: &Tensor) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Tensor as i32,
        t: Some(tensor_to_proto("", t)),
        ..Default::default()
    }
}

pub fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

/// A model builder: add inputs, initializers, nodes and outputs, then `build()`.
pub struct ModelBuilder {
    pub graph: GraphProto,
    pub opset: i64,
    pub producer: String,
}

impl ModelBuilder {
    pub fn new(opset: i64) -> ModelBuilder {
        ModelBuilder {
            graph: GraphProto {
                name: "test".into(),
                ..Default::default()
            },
            opset,
            producer: String::new(),
        }
    }

    /// Sets the graph's name and the model's producer name.
    pub fn named(mut self, graph: &str, producer: &str) -> Self {
        self.graph.name = graph.into();
        self.producer = producer.into();
        self
    }

    pub fn input(mut self, name: &str, dtype: DType, dims: &[i64]) -> Self {
        self.graph.input.push(value_info(name, dtype, Some(dims)));
        self
    }

    pub fn output(mut self, name: &str, dtype: DType, dims: Option<&[i64]>) -> Self {
        self.graph.output.push(value_info(name, dtype, dims));
        self
    }

    pub fn init(mut self, name: &str, t: &Tensor) -> Self {
        self.graph.initializer.push(tensor_to_proto(name, t));
        self
    }

    /// An initializer given as a protobuf (e.g. [`float_tensor`], or a deliberately bad one).
    pub fn init_proto(mut self, t: TensorProto) -> Self {
        self.graph.initializer.push(t);
        self
    }

    pub fn node(mut self, n: NodeProto) -> Self {
        self.graph.node.push(n);
        self
    }

    pub fn build(self) -> ModelProto {
        ModelProto {
            ir_version: 8,
            producer_name: self.producer,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: self.opset,
            }],
            graph: Some(self.graph),
            ..Default::default()
        }
    }
}
