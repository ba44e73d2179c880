//! What is known about a value before running: dtype, shape, and, for small constant
//! tensors (shapes, axes), the value itself.

use crate::tensor::{DType, Tensor};
use std::fmt;
use std::sync::Arc;

/// Constants and constant-folded results up to this many elements are carried in facts, so
/// that shape-computing subgraphs (Shape -> Gather -> Concat -> Reshape) resolve statically.
pub const MAX_FACT_VALUE_LEN: usize = 4096;

#[derive(Clone, Debug, PartialEq)]
pub struct Fact {
    pub dtype: DType,
    /// `None` when the shape depends on run-time data.
    pub shape: Option<Vec<usize>>,
    pub value: Option<Arc<Tensor>>,
}

impl Fact {
    pub fn new(dtype: DType, shape: Vec<usize>) -> Fact {
        Fact {
            dtype,
            shape: Some(shape),
            value: None,
        }
    }

    pub fn unknown_shape(dtype: DType) -> Fact {
        Fact {
            dtype,
            shape: None,
            value: None,
        }
    }

    /// The fact of a known tensor; the value is kept only when it is small.
    pub fn of_tensor(t: &Tensor) -> Fact {
        let value = (t.len() <= MAX_FACT_VALUE_LEN).then(|| Arc::new(t.clone()));
        Fact {
            dtype: t.dtype(),
            shape: Some(t.shape().to_vec()),
            value,
        }
    }

    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shape {
            Some(s) => {
                let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
                write!(f, "{}[{}]", self.dtype, dims.join(","))
            }
            None => write!(f, "{}[?]", self.dtype),
        }
    }
}
