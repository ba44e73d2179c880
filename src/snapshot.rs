//! Stable text summaries of tensors, for insta (or any snapshot tool) to keep.
//!
//! Numbers are rounded to 3 significant digits and values with `|x| < 1e-3` print as `0`
//! (so `-0` never shows), which makes float noise within the default tolerance (atol 1e-4,
//! rtol 1e-3) leave the text unchanged in all but the rare value sitting on a rounding
//! boundary. Integers and bools print exactly.

use crate::tensor::Tensor;

/// How many leading values (row-major) the summary shows.
const SHOWN: usize = 8;

/// A one-line summary: dtype, shape, min, max, mean, std (population) over the finite
/// values, the count of non-finite ones if any, and the first few values.
///
/// ```
/// use convgraph::Tensor;
/// let t = Tensor::from_vec(&[2, 2], vec![1.23456f32, -0.0000004, 2.0, -3.14159]).unwrap();
/// assert_eq!(
///     convgraph::snapshot::summarize(&t),
///     "f32 [2, 2] min -3.14 max 2 mean 0.0232 std 1.96 values [1.23, 0, 2, -3.14]"
/// );
/// ```
pub fn summarize(t: &Tensor) -> String {
    let v = t.to_f64_vec();
    let exact = !t.dtype().is_float();
    let show = |x: f64| if exact { exact_text(x) } else { round_text(x) };
    let mut s = format!("{} {:?}", t.dtype(), t.shape());
    let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if finite.is_empty() {
        s.push_str(" no finite values");
    } else {
        let n = finite.len() as f64;
        let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = finite.iter().sum::<f64>() / n;
        let var = finite.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        s.push_str(&format!(
            " min {} max {} mean {} std {}",
            show(min),
            show(max),
            round_text(mean),
            round_text(var.sqrt())
        ));
    }
    if finite.len() < v.len() {
        s.push_str(&format!(" non-finite {}", v.len() - finite.len()));
    }
    let head: Vec<String> = v.iter().take(SHOWN).map(|&x| show(x)).collect();
    let more = if v.len() > SHOWN { ", ..." } else { "" };
    s.push_str(&format!(" values [{}{more}]", head.join(", ")));
    s
}

fn special(x: f64) -> Option<String> {
    if x.is_nan() {
        Some("NaN".into())
    } else if x.is_infinite() {
        Some(if x > 0.0 { "inf" } else { "-inf" }.into())
    } else {
        None
    }
}

/// 3 significant digits, `|x| < 1e-3` as `0`, plain decimal below 1e6.
fn round_text(x: f64) -> String {
    if let Some(s) = special(x) {
        return s;
    }
    if x.abs() < 1e-3 {
        return "0".into();
    }
    // Rounding through the exponent form gives 3 significant digits at any magnitude; the
    // parse-and-print then drops trailing zeros (1.50e0 -> 1.5).
    let r: f64 = format!("{x:.2e}").parse().unwrap_or(x);
    if r.abs() >= 1e6 {
        format!("{r:e}")
    } else {
        format!("{r}")
    }
}

fn exact_text(x: f64) -> String {
    special(x).unwrap_or_else(|| format!("{x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_within_tolerance_keeps_the_text() {
        let a = Tensor::from_vec(&[4], vec![0.5f32, -0.00002, 12.31, 1e-4]).unwrap();
        let b = Tensor::from_vec(&[4], vec![0.50001f32, 0.00003, 12.3101, -1e-4]).unwrap();
        assert_eq!(summarize(&a), summarize(&b));
        assert!(!summarize(&a).contains("-0"), "{}", summarize(&a));
    }

    #[test]
    fn integers_exact_and_non_finite_counted() {
        let t = Tensor::from_vec(&[3], vec![123456789i64, -2, 7]).unwrap();
        assert_eq!(
            summarize(&t),
            "i64 [3] min -2 max 123456789 mean 4.12e7 std 5.82e7 values [123456789, -2, 7]"
        );
        let f = Tensor::from_vec(&[3], vec![f32::NAN, f32::NEG_INFINITY, 2.0]).unwrap();
        assert_eq!(
            summarize(&f),
            "f32 [3] min 2 max 2 mean 2 std 0 non-finite 2 values [NaN, -inf, 2]"
        );
        let e = Tensor::from_vec(&[0], Vec::<f32>::new()).unwrap();
        assert_eq!(summarize(&e), "f32 [0] no finite values values []");
    }
}
