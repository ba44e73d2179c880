//! The operations of the IR, each with typed attributes.
//!
//! Attributes are parsed and validated once, at import; past that point no code looks at an
//! attribute by its string name. An op's shape rule lives in `ir::infer`, its kernel in
//! `kernels`, and `exec::dispatch` joins the two: adding an op means a variant here, an
//! importer in `onnx::import`, a shape rule and a kernel.

/// How a sliding window (Conv, pooling) pads its input. Mirrors ONNX's `auto_pad` + `pads`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Explicit pads: `[begin_0, begin_1, ..., end_0, end_1, ...]`, one pair per spatial axis;
    /// empty means no padding.
    Explicit(Vec<usize>),
    /// Output size `ceil(in / stride)`, the odd padding pixel at the end.
    SameUpper,
    /// Output size `ceil(in / stride)`, the odd padding pixel at the beginning.
    SameLower,
    /// No padding (`VALID`).
    Valid,
}

/// The geometry shared by Conv and the pooling ops. Empty `strides`/`dilations` mean all 1s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Spatial kernel size; `None` for Conv means "take it from the weight's shape".
    pub kernel_shape: Option<Vec<usize>>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub padding: Padding,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvAttrs {
    pub window: Window,
    pub group: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolAttrs {
    pub window: Window,
    /// Output size rounds up instead of down (a window may start in the padding's end).
    pub ceil_mode: bool,
    /// AveragePool only: divide by the full window size, padding included.
    pub count_include_pad: bool,
    /// MaxPool only (ONNX `storage_order` = 1): the optional Indices output counts the
    /// spatial axes column-major (the first spatial axis varies fastest) instead of row-major.
    /// It changes nothing else, but must survive export for the indices to mean the same.
    pub column_major_indices: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GemmAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReduceAttrs {
    /// `None`: axes come from the second input, or, when that is absent too, all axes
    /// (unless `noop_with_empty_axes`).
    pub axes: Option<Vec<i64>>,
    pub keepdims: bool,
    pub noop_with_empty_axes: bool,
}

/// How Pad fills the border (ONNX `mode`; numpy's `np.pad` modes of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PadMode {
    /// A constant value.
    Constant,
    /// Mirror without repeating the edge element (`[1,2,3]` -> `3,2 | 1,2,3 | 2,1`).
    Reflect,
    /// Repeat the edge element.
    Edge,
    /// Continue periodically from the other side.
    Wrap,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PadAttrs {
    pub mode: PadMode,
    /// Opset < 11 attribute: `[begin_0, begin_1, ..., end_0, end_1, ...]` for every axis,
    /// negative values crop. `None`: the pads come from input 1 (and the axes they apply to
    /// from the optional input 3), as from opset 11 on.
    pub pads: Option<Vec<i64>>,
    /// Opset < 11 `value` attribute; the optional input 2 (a scalar of the data's dtype)
    /// takes its place from opset 11 on. Only read in `Constant` mode.
    pub value: f64,
}

/// Elementwise ops of one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Neg,
    Abs,
    Sqrt,
    Reciprocal,
    Floor,
    Ceil,
    Erf,
    /// `x * clamp(x / 6 + 1/2, 0, 1)` (opset 14).
    HardSwish,
}

/// Elementwise ops of two inputs with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

/// Elementwise ops of any number of inputs (at least one) with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VariadicOp {
    Sum,
    Mean,
    Max,
    Min,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConvTransposeAttrs {
    /// Pads (or auto_pad) are cropped from the full scattered output, as ONNX defines them.
    pub window: Window,
    pub group: usize,
    /// Extra output at the end of each spatial axis; empty means all 0.
    pub output_padding: Vec<usize>,
    /// Spatial output size requested by the model; when given it decides the pads (split as
    /// `auto_pad` says) and `window.padding`'s explicit pads are ignored, as ONNX says.
    pub output_shape: Option<Vec<usize>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LrnAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub bias: f32,
    /// Number of channels summed over (odd or even, as ONNX allows).
    pub size: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Inputs: X, W, optional B.
    Conv(ConvAttrs),
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// Inputs: X, optional min, optional max (the opset >= 11 form). The attribute form of
    /// older opsets is imported into `min`/`max` here.
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
    /// Inputs: X, scale, B, mean, var (inference form).
    BatchNorm {
        epsilon: f32,
    },
    /// BatchNormalization with `training_mode` = 1 (opset >= 14): normalizes with the
    /// batch's own per-channel mean and biased variance; outputs Y and optionally the updated
    /// running mean and variance (`input * momentum + batch stat * (1 - momentum)`). A
    /// separate variant so that passes reading `BatchNorm` as a fixed affine map (fold-batchnorm)
    /// cannot mistake it for one. Inputs as `BatchNorm`.
    BatchNormTraining {
        epsilon: f32,
        momentum: f32,
    },
    /// Inputs of one shape joined along a new axis: the lesson's `torch.stack`. Import raises
    /// Unsqueeze(axis k) -> Concat(axis k) into it.
    Stack {
        axis: i64,
    },
    Concat {
        axis: i64,
    },
    /// Axes from the attribute, or (opset >= 13) from the second input when `None`.
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    /// numpy matmul: batch dims broadcast.
    MatMul,
    /// Inputs: A, B, optional C.
    Gemm(GemmAttrs),
    MaxPool(PoolAttrs),
    AveragePool(PoolAttrs),
    GlobalAveragePool,
    GlobalMaxPool,
    Flatten {
        axis: i64,
    },
    /// Inputs: data, shape.
    Reshape {
        allowzero: bool,
    },
    /// `None`: reverse the axes.
    Transpose {
        perm: Option<Vec<usize>>,
    },
    Identity,
    Shape {
        start: i64,
        end: Option<i64>,
    },
    /// Inputs: data, indices.
    Gather {
        axis: i64,
    },
    /// Inputs: data, starts, ends, optional axes, optional steps (opset >= 10 form; import
    /// turns the older attribute form into constant inputs).
    Slice,
    /// Sizes from the attribute, the optional second input, or an even split over the outputs.
    Split {
        axis: i64,
        split: Option<Vec<usize>>,
    },
    /// Inputs: data, optional pads, optional constant_value, optional axes.
    Pad(PadAttrs),
    ReduceMean(ReduceAttrs),
    ReduceSum(ReduceAttrs),
    Cast {
        to: crate::tensor::DType,
    },
    Softmax {
        axis: i64,
    },
    /// Softmax before opset 13 where it differs from the above: the input is seen as 2-D
    /// `[prod(dims[..axis]), prod(dims[axis..])]` and each row normalised. Imported when the
    /// input's rank is unknown at import (else a last-axis form becomes `Softmax`).
    /// Written back as ONNX `Softmax` of opset < 13.
    SoftmaxFlat {
        axis: i64,
    },
    /// Input: the output shape (1-D i64). `value` is the one-element fill value, whose dtype
    /// is the output's.
    ConstantOfShape {
        value: crate::tensor::Tensor,
    },
    /// Inputs: data, shape (1-D i64); numpy broadcasting of the data to the shape.
    Expand,
    Variadic(VariadicOp),
    LeakyRelu {
        alpha: f32,
    },
    /// `clamp(alpha * x + beta, 0, 1)`.
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// Inputs: X, slope; slope broadcasts to X (numpy, unidirectional).
    PRelu,
    /// Inputs: X, optional ratio, optional training_mode; outputs Y and optional mask (bool).
    /// Only the deterministic cases run: inference, or a ratio of 0. Inference Dropout whose
    /// mask is unused imports as Identity instead.
    Dropout,
    Lrn(LrnAttrs),
    /// Inputs: X, W `[C, M/group, kernel...]`, optional B `[M]`.
    ConvTranspose(ConvTransposeAttrs),
}

impl Op {
    /// Whether running the op twice on the same inputs gives the same outputs, so that
    /// `fold-constants` may run it at rewrite time. Only Dropout can draw a random mask (in
    /// training mode; refused at run time). A new op with randomness (RandomNormal ...) must
    /// be added here.
    pub fn is_deterministic(&self) -> bool {
        !matches!(self, Op::Dropout)
    }

    /// The op's name as printed and as given in `inspect --json`.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::Unary(u) => match u {
                UnaryOp::Relu => "Relu",
                UnaryOp::Sigmoid => "Sigmoid",
                UnaryOp::Tanh => "Tanh",
                UnaryOp::Exp => "Exp",
                UnaryOp::Log => "Log",
                UnaryOp::Neg => "Neg",
                UnaryOp::Abs => "Abs",
                UnaryOp::Sqrt => "Sqrt",
                UnaryOp::Reciprocal => "Reciprocal",
                UnaryOp::Floor => "Floor",
                UnaryOp::Ceil => "Ceil",
                UnaryOp::Erf => "Erf",
                UnaryOp::HardSwish => "HardSwish",
            },
            Op::Binary(b) => match b {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
                BinaryOp::Pow => "Pow",
            },
            Op::Clip { .. } => "Clip",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::BatchNormTraining { .. } => "BatchNormTraining",
            Op::Stack { .. } => "Stack",
            Op::Concat { .. } => "Concat",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Squeeze { .. } => "Squeeze",
            Op::MatMul => "MatMul",
            Op::Gemm(_) => "Gemm",
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool(_) => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Identity => "Identity",
            Op::Shape { .. } => "Shape",
            Op::Gather { .. } => "Gather",
            Op::Slice => "Slice",
            Op::Split { .. } => "Split",
            Op::Pad(_) => "Pad",
            Op::ReduceMean(_) => "ReduceMean",
            Op::ReduceSum(_) => "ReduceSum",
            Op::Cast { .. } => "Cast",
            Op::Softmax { .. } => "Softmax",
            Op::SoftmaxFlat { .. } => "SoftmaxFlat",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Expand => "Expand",
            Op::Variadic(v) => match v {
                VariadicOp::Sum => "Sum",
                VariadicOp::Mean => "Mean",
                VariadicOp::Max => "Max",
                VariadicOp::Min => "Min",
            },
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::HardSigmoid { .. } => "HardSigmoid",
            Op::PRelu => "PRelu",
            Op::Dropout => "Dropout",
            Op::Lrn(_) => "LRN",
            Op::ConvTranspose(_) => "ConvTranspose",
        }
    }

    /// The attributes as stable text for the printer (`""` when there are none). Debug
    /// formatting of the typed attribute structs is stable and complete, so it is the format.
    pub fn attrs_text(&self) -> String {
        match self {
            Op::Unary(_)
            | Op::Binary(_)
            | Op::MatMul
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool
            | Op::Identity
            | Op::Slice
            | Op::Expand
            | Op::Variadic(_)
            | Op::PRelu
            | Op::Dropout => String::new(),
            Op::Lrn(a) => format!("{a:?}"),
            Op::ConvTranspose(a) => format!("{a:?}"),
            // The fill value as dtype and number, not the Debug of an ndarray.
            Op::ConstantOfShape { value } => {
                format!("{{ value: {}({:?}) }}", value.dtype(), value.to_f64_vec())
            }
            Op::Conv(a) => format!("{a:?}"),
            Op::Gemm(a) => format!("{a:?}"),
            Op::Pad(a) => format!("{a:?}"),
            Op::MaxPool(a) | Op::AveragePool(a) => format!("{a:?}"),
            Op::ReduceMean(a) | Op::ReduceSum(a) => format!("{a:?}"),
            other => {
                // Struct-like variants print as `Name { field: value }`; keep the braces part.
                let s = format!("{other:?}");
                match s.find('{') {
                    Some(i) => s[i..].to_string(),
                    None => String::new(),
                }
            }
        }
    }
}
