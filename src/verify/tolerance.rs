//! The tolerance rule: `|actual - expected| <= atol + rtol * |expected|` element-wise (numpy's
//! allclose); NaN equals NaN, infinities equal when of the same sign; shapes and dtypes must
//! match. A report gives the max abs and rel errors, the max ULP distance, the number of
//! outliers and the first one's index.

use crate::tensor::Tensor;
use std::fmt;

/// `|actual - expected| <= atol + rtol * |expected|`; defaults atol 1e-4, rtol 1e-3.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            atol: 1e-4,
            rtol: 1e-3,
        }
    }
}

/// How one tensor compares with its expected value. The default is an empty report (no
/// error yet), the start of a [`Report::merge`] over samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Set when shapes or dtypes differ; the numbers below are then not computed.
    pub mismatch: Option<String>,
    pub max_abs: f64,
    pub max_rel: f64,
    pub max_ulp: u64,
    pub outliers: usize,
    /// Multi-index of the first outlier in row-major order.
    pub first_outlier: Option<Vec<usize>>,
}

impl Report {
    /// Within tolerance: same shape and dtype, no outlier.
    pub fn ok(&self) -> bool {
        self.mismatch.is_none() && self.outliers == 0
    }

    /// Folds the report of another sample of the same tensor into this one: maxima of the
    /// errors, the sum of the outliers, the first mismatch and the first outlier kept.
    pub fn merge(&mut self, other: &Report) {
        if self.mismatch.is_none() {
            self.mismatch.clone_from(&other.mismatch);
        }
        self.max_abs = self.max_abs.max(other.max_abs);
        self.max_rel = self.max_rel.max(other.max_rel);
        self.max_ulp = self.max_ulp.max(other.max_ulp);
        self.outliers += other.outliers;
        if self.first_outlier.is_none() {
            self.first_outlier.clone_from(&other.first_outlier);
        }
    }

    /// The report as JSON; infinite or NaN errors become the strings `"inf"`/`"NaN"`,
    /// since JSON numbers cannot hold them.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.ok(),
            "mismatch": self.mismatch,
            "max_abs": json_f64(self.max_abs),
            "max_rel": json_f64(self.max_rel),
            "max_ulp": self.max_ulp,
            "outliers": self.outliers,
            "first_outlier": self.first_outlier,
        })
    }
}

/// A float as a JSON number, or as a string when JSON has no number for it.
pub fn json_f64(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::json!(x.to_string())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = &self.mismatch {
            return write!(f, "mismatch: {m}");
        }
        write!(
            f,
            "max abs {:.3e}, max rel {:.3e}, max ulp {}, {} outliers",
            self.max_abs, self.max_rel, self.max_ulp, self.outliers
        )?;
        if let Some(i) = &self.first_outlier {
            write!(f, ", first at {i:?}")?;
        }
        Ok(())
    }
}

/// ULP distance between two f32 values (ordered-integer trick; 0 for equal values).
fn ulp_f32(a: f32, b: f32) -> u64 {
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i32::MIN as i64 - i as i64
        } else {
            i as i64
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

/// Compares `actual` with `expected` element-wise under `tol`.
///
/// ```
/// use convgraph::verify::{compare, Tolerance};
/// use convgraph::Tensor;
/// let e = Tensor::from_vec(&[2], vec![1.0f32, 2.0]).unwrap();
/// let a = Tensor::from_vec(&[2], vec![1.0f32, 2.1]).unwrap();
/// let r = compare(&a, &e, Tolerance::default());
/// assert_eq!(r.outliers, 1);
/// assert_eq!(r.first_outlier, Some(vec![1]));
/// ```
pub fn compare(actual: &Tensor, expected: &Tensor, tol: Tolerance) -> Report {
    let mut r = Report {
        mismatch: None,
        max_abs: 0.0,
        max_rel: 0.0,
        max_ulp: 0,
        outliers: 0,
        first_outlier: None,
    };
    if actual.dtype() != expected.dtype() {
        r.mismatch = Some(format!(
            "dtype {} vs expected {}",
            actual.dtype(),
            expected.dtype()
        ));
        return r;
    }
    if actual.shape() != expected.shape() {
        r.mismatch = Some(format!(
            "shape {:?} vs expected {:?}",
            actual.shape(),
            expected.shape()
        ));
        return r;
    }
    let a = actual.to_f64_vec();
    let e = expected.to_f64_vec();
    let mut first = None;
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let same = (x.is_nan() && y.is_nan()) || x == y;
        if same {
            continue;
        }
        let abs = (x - y).abs();
        let rel = if y != 0.0 {
            abs / y.abs()
        } else {
            f64::INFINITY
        };
        if abs.is_finite() {
            r.max_abs = r.max_abs.max(abs);
        } else {
            r.max_abs = f64::INFINITY;
        }
        r.max_rel = r.max_rel.max(rel);
        r.max_ulp = r.max_ulp.max(ulp_f32(x as f32, y as f32));
        // Infinities match only themselves (handled by `same` above); NaN only NaN.
        let special = x.is_infinite() || y.is_infinite() || x.is_nan() || y.is_nan();
        let within = abs <= tol.atol + tol.rtol * y.abs();
        if special || !within {
            r.outliers += 1;
            first.get_or_insert(i);
        }
    }
    r.first_outlier = first.map(|mut i| {
        let shape = expected.shape();
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
        idx
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allclose_rule_with_nan_and_inf() {
        let e = Tensor::from_vec(&[4], vec![1.0f32, f32::NAN, f32::INFINITY, 100.0]).unwrap();
        let a = Tensor::from_vec(&[4], vec![1.00005f32, f32::NAN, f32::INFINITY, 100.05]).unwrap();
        assert!(compare(&a, &e, Tolerance::default()).ok());
        let a = Tensor::from_vec(&[4], vec![1.0f32, f32::NAN, f32::NEG_INFINITY, 100.2]).unwrap();
        let r = compare(&a, &e, Tolerance::default());
        assert_eq!(r.outliers, 2);
        assert_eq!(r.first_outlier, Some(vec![2]));
    }

    #[test]
    fn shape_mismatch_is_reported() {
        let a = Tensor::from_vec(&[2], vec![1.0f32, 2.0]).unwrap();
        let e = Tensor::from_vec(&[1, 2], vec![1.0f32, 2.0]).unwrap();
        assert!(!compare(&a, &e, Tolerance::default()).ok());
    }
}
