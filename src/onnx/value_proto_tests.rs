//! Sequence and optional types and values: hand-built protobufs decoded through
//! `value_proto`, and models declaring them imported and run.

use super::builder::{node, value_info, ModelBuilder};
use super::value_proto::{
    ElemType, GraphTypes, ModelTypes, OptionalProto, SequenceProto, TypeProto, ValueInfo,
    ELEM_OPTIONAL, ELEM_SEQUENCE, ELEM_TENSOR, ELEM_UNDEFINED,
};
use super::{decode_model, decode_value, tensor_to_proto};
use crate::exec::{Runner, Value};
use crate::ir::{Dim, ValueDecl, Wrapper};
use crate::tensor::{DType, Tensor};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::pb::type_proto;

fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(shape, v).unwrap()
}

fn decl(wrappers: &[Wrapper], dims: Option<Vec<Dim>>) -> ValueDecl {
    ValueDecl {
        name: "v".into(),
        dtype: DType::F32,
        dims,
        wrappers: wrappers.to_vec(),
    }
}

fn tensor_type(dtype: i32, dims: Option<&[i64]>) -> TypeProto {
    let info = value_info("", DType::F32, dims);
    let Some(type_proto::Value::TensorType(mut tt)) = info.r#type.unwrap().value else {
        unreachable!("value_info builds a tensor type")
    };
    tt.elem_type = dtype;
    TypeProto {
        tensor_type: Some(tt),
        ..Default::default()
    }
}

fn wrap(w: Wrapper, inner: TypeProto) -> TypeProto {
    let e = Some(Box::new(ElemType {
        elem_type: Some(Box::new(inner)),
    }));
    match w {
        Wrapper::Sequence => TypeProto {
            sequence_type: e,
            ..Default::default()
        },
        Wrapper::Optional => TypeProto {
            optional_type: e,
            ..Default::default()
        },
    }
}

fn info(name: &str, ty: TypeProto) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        r#type: Some(ty),
    }
}

/// A model file's bytes: the nodes (and any tensor outputs) encoded with tract's types, then
/// the graph inputs and outputs encoded with ours. Protobuf decodes concatenated messages as
/// one merged message, so this is the model a file with both parts declares, and tract's
/// decode sees the sequence/optional inputs with no type, as it would in any file.
fn model_bytes(
    tract_part: ModelBuilder,
    inputs: Vec<ValueInfo>,
    outputs: Vec<ValueInfo>,
) -> Vec<u8> {
    let mut bytes = tract_part.build().encode_to_vec();
    let types = ModelTypes {
        graph: Some(GraphTypes {
            input: inputs,
            output: outputs,
        }),
    };
    bytes.extend(types.encode_to_vec());
    bytes
}

fn seq_f32() -> TypeProto {
    wrap(Wrapper::Sequence, tensor_type(1, None))
}

#[test]
fn a_hand_built_sequence_decodes_to_its_tensors() {
    let (a, b) = (t(&[2], vec![1.0, -2.5]), t(&[1, 3], vec![0.0, 3.0, 7.5]));
    let p = SequenceProto {
        name: "s".into(),
        elem_type: ELEM_TENSOR,
        tensor_values: vec![tensor_to_proto("", &a), tensor_to_proto("", &b)],
        ..Default::default()
    };
    let v = decode_value(&p.encode_to_vec(), &decl(&[Wrapper::Sequence], None)).unwrap();
    assert_eq!(
        v,
        Value::Sequence(vec![Value::Tensor(a.clone()), Value::Tensor(b)])
    );

    // A sequence of sequences, and an empty one.
    let nested = SequenceProto {
        elem_type: ELEM_SEQUENCE,
        sequence_values: vec![p.clone(), SequenceProto::default()],
        ..Default::default()
    };
    let v = decode_value(
        &nested.encode_to_vec(),
        &decl(&[Wrapper::Sequence, Wrapper::Sequence], None),
    )
    .unwrap();
    let Value::Sequence(items) = &v else {
        panic!("{v:?}")
    };
    assert_eq!(items.len(), 2);
    assert_eq!(items[1], Value::Sequence(vec![]));
}

#[test]
fn a_hand_built_optional_decodes_present_or_absent() {
    let x = t(&[5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    let seq = SequenceProto {
        elem_type: ELEM_TENSOR,
        tensor_values: vec![tensor_to_proto("", &x)],
        ..Default::default()
    };
    let present = OptionalProto {
        name: "o".into(),
        elem_type: ELEM_SEQUENCE,
        sequence_value: Some(seq),
        ..Default::default()
    };
    let d = decl(
        &[Wrapper::Optional, Wrapper::Sequence],
        Some(vec![Dim::Fixed(5)]),
    );
    let v = decode_value(&present.encode_to_vec(), &d).unwrap();
    assert_eq!(
        v,
        Value::Optional(Some(Box::new(Value::Sequence(vec![Value::Tensor(x)]))))
    );

    // onnx's from_optional(None) writes elem_type UNDEFINED and no value; an optional whose
    // elem_type is set but that holds nothing is absent too.
    for elem_type in [ELEM_UNDEFINED, ELEM_SEQUENCE] {
        let absent = OptionalProto {
            elem_type,
            ..Default::default()
        };
        let v = decode_value(&absent.encode_to_vec(), &d).unwrap();
        assert_eq!(v, Value::Optional(None));
    }
    // An empty file is a valid protobuf: an absent optional.
    assert_eq!(decode_value(&[], &d).unwrap(), Value::Optional(None));

    let nested = OptionalProto {
        elem_type: ELEM_OPTIONAL,
        optional_value: Some(Box::new(OptionalProto::default())),
        ..Default::default()
    };
    let v = decode_value(
        &nested.encode_to_vec(),
        &decl(&[Wrapper::Optional, Wrapper::Optional], None),
    )
    .unwrap();
    assert_eq!(v, Value::Optional(Some(Box::new(Value::Optional(None)))));
}

#[test]
fn values_of_another_kind_than_their_elem_type_are_refused() {
    let x = tensor_to_proto("", &t(&[1], vec![1.0]));
    let p = SequenceProto {
        name: "s".into(),
        elem_type: ELEM_SEQUENCE,
        tensor_values: vec![x.clone()],
        ..Default::default()
    };
    let e = decode_value(&p.encode_to_vec(), &decl(&[Wrapper::Sequence], None)).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        "sequence 's' of elem_type sequence holds elements of another kind"
    );
    let p = SequenceProto {
        name: "m".into(),
        elem_type: 4,
        ..Default::default()
    };
    let e = decode_value(&p.encode_to_vec(), &decl(&[Wrapper::Sequence], None)).unwrap_err();
    assert!(
        format!("{e:#}").contains("elements of type map are not supported"),
        "{e:#}"
    );
    let p = OptionalProto {
        name: "o".into(),
        elem_type: ELEM_SEQUENCE,
        tensor_value: Some(x),
        ..Default::default()
    };
    let e = decode_value(&p.encode_to_vec(), &decl(&[Wrapper::Optional], None)).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        "optional 'o' of elem_type sequence holds a value of another kind"
    );
    // Garbage is not a protobuf of the declared type.
    let e = decode_value(&[0xff, 0xff], &decl(&[Wrapper::Sequence], None)).unwrap_err();
    assert!(
        format!("{e:#}").starts_with("not a valid SequenceProto"),
        "{e:#}"
    );
}

#[test]
fn declared_sequence_and_optional_types_import_and_run_through_identity() {
    let opt_seq = wrap(
        Wrapper::Optional,
        wrap(Wrapper::Sequence, tensor_type(1, Some(&[5]))),
    );
    let bytes = model_bytes(
        ModelBuilder::new(16).node(node("Identity", "id", &["x"], &["y"], vec![])),
        vec![info("x", opt_seq.clone())],
        vec![info("y", opt_seq)],
    );
    let g = decode_model(&bytes, Path::new(".")).unwrap();
    assert_eq!(g.inputs[0].wrappers, [Wrapper::Optional, Wrapper::Sequence]);
    assert_eq!(g.inputs[0].type_text(), "optional(sequence(f32[5]))");
    assert_eq!(g.outputs[0].type_text(), "optional(sequence(f32[5]))");

    let runner = Runner::new(&g).unwrap();
    let x = Value::Optional(Some(Box::new(Value::Sequence(vec![
        Value::Tensor(t(&[5], vec![1.0, 2.0, 3.0, 4.0, 5.0])),
        Value::Tensor(t(&[5], vec![0.5; 5])),
    ]))));
    for v in [x, Value::Optional(None)] {
        let out = runner
            .run_values(HashMap::from([("x".to_string(), v.clone())]))
            .unwrap();
        assert_eq!(out, vec![("y".to_string(), v)]);
    }
}

#[test]
fn a_sequence_fed_to_another_op_than_identity_is_refused_naming_the_node() {
    let bytes = model_bytes(
        ModelBuilder::new(17)
            .node(node("Relu", "r", &["x"], &["y"], vec![]))
            .output("y", DType::F32, None),
        vec![info("x", seq_f32())],
        vec![],
    );
    let e = decode_model(&bytes, Path::new(".")).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        "node 'r' (Relu): input 0 'x' has type sequence(f32[?]), but Relu takes tensors only (only Identity passes a sequence or optional on)"
    );

    // Through an Identity first: the reader of the Identity's output is refused.
    let bytes = model_bytes(
        ModelBuilder::new(17)
            .node(node("Identity", "id", &["x"], &["x2"], vec![]))
            .node(node("Add", "add", &["x2", "x2"], &["y"], vec![]))
            .output("y", DType::F32, None),
        vec![info("x", wrap(Wrapper::Optional, tensor_type(1, None)))],
        vec![],
    );
    let e = decode_model(&bytes, Path::new(".")).unwrap_err();
    assert!(
        format!("{e:#}").starts_with(
            "node 'add' (Add): input 0 'x2' has type optional(f32[?]), but Add takes tensors only"
        ),
        "{e:#}"
    );
}

#[test]
fn graph_outputs_must_be_of_their_declared_kind() {
    // A sequence reaching an output declared as a tensor.
    let bytes = model_bytes(
        ModelBuilder::new(17)
            .node(node("Identity", "id", &["x"], &["y"], vec![]))
            .output("y", DType::F32, None),
        vec![info("x", seq_f32())],
        vec![],
    );
    let e = decode_model(&bytes, Path::new(".")).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        "graph output 'y' is declared f32[?], but the value is sequence(f32[?])"
    );
    // A tensor reaching an output declared as a sequence.
    let bytes = model_bytes(
        ModelBuilder::new(17).node(node("Relu", "r", &["x"], &["y"], vec![])),
        vec![info("x", tensor_type(1, Some(&[2])))],
        vec![info("y", seq_f32())],
    );
    let e = decode_model(&bytes, Path::new(".")).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        "graph output 'y' is declared sequence(f32[?]), but the value is a tensor"
    );
}

#[test]
fn map_types_and_untyped_values_are_refused() {
    let map = TypeProto {
        map_type: Some(Default::default()),
        ..Default::default()
    };
    let bytes = model_bytes(
        ModelBuilder::new(17).node(node("Identity", "id", &["m"], &["y"], vec![])),
        vec![info("m", map)],
        vec![info("y", seq_f32())],
    );
    let e = decode_model(&bytes, Path::new(".")).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        "graph input 'm': a map type is not supported (only tensors, and sequences and optionals of them)"
    );
    let bytes = model_bytes(
        ModelBuilder::new(17).node(node("Identity", "id", &["x"], &["y"], vec![])),
        vec![info("x", wrap(Wrapper::Sequence, TypeProto::default()))],
        vec![],
    );
    let e = decode_model(&bytes, Path::new(".")).unwrap_err();
    assert_eq!(format!("{e:#}"), "graph input 'x': no type declared");
}
