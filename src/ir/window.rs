//! Sliding-window geometry shared by Conv and pooling: from attributes and an input's spatial
//! dims to pads and output dims, with every degenerate case refused by name.

use super::op::{Padding, Window};
use anyhow::{bail, ensure, Result};

/// A window resolved against one input: everything a kernel needs, per spatial axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub input: Vec<usize>,
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads_begin: Vec<usize>,
    pub pads_end: Vec<usize>,
    pub output: Vec<usize>,
}

impl Geometry {
    /// `(k - 1) * d + 1` for axis `i`: the extent the dilated kernel covers.
    pub fn effective_kernel(&self, i: usize) -> usize {
        (self.kernel[i] - 1) * self.dilations[i] + 1
    }

    pub fn has_padding(&self) -> bool {
        self.pads_begin
            .iter()
            .chain(&self.pads_end)
            .any(|&p| p != 0)
    }
}

pub(crate) fn per_axis(v: &[usize], n: usize, what: &str) -> Result<Vec<usize>> {
    if v.is_empty() {
        return Ok(vec![1; n]);
    }
    ensure!(
        v.len() == n,
        "{what} has {} values for {n} spatial axes",
        v.len()
    );
    ensure!(v.iter().all(|&x| x > 0), "{what} {v:?} has a zero");
    Ok(v.to_vec())
}

impl Window {
    /// Resolves the window for an input of spatial dims `input`. `kernel` is the spatial
    /// kernel (for Conv, from the weight). `ceil_mode` is pooling's rounding.
    pub fn resolve(&self, input: &[usize], kernel: &[usize], ceil_mode: bool) -> Result<Geometry> {
        let n = input.len();
        ensure!(
            kernel.len() == n,
            "kernel has {} spatial dims, input has {n}",
            kernel.len()
        );
        if let Some(ks) = &self.kernel_shape {
            ensure!(
                ks.as_slice() == kernel,
                "kernel_shape {ks:?} does not match the weight's spatial dims {kernel:?}"
            );
        }
        ensure!(
            kernel.iter().all(|&k| k > 0),
            "kernel {kernel:?} has a zero dim"
        );
        let strides = per_axis(&self.strides, n, "strides")?;
        let dilations = per_axis(&self.dilations, n, "dilations")?;
        let eff: Vec<usize> = (0..n).map(|i| (kernel[i] - 1) * dilations[i] + 1).collect();

        let (pads_begin, pads_end) = match &self.padding {
            Padding::Explicit(p) if p.is_empty() => (vec![0; n], vec![0; n]),
            Padding::Explicit(p) => {
                ensure!(
                    p.len() == 2 * n,
                    "pads has {} values, expected {}",
                    p.len(),
                    2 * n
                );
                (p[..n].to_vec(), p[n..].to_vec())
            }
            Padding::Valid => (vec![0; n], vec![0; n]),
            Padding::SameUpper | Padding::SameLower => {
                let mut b = vec![0; n];
                let mut e = vec![0; n];
                for i in 0..n {
                    let out = input[i].div_ceil(strides[i]);
                    let total =
                        ((out.saturating_sub(1)) * strides[i] + eff[i]).saturating_sub(input[i]);
                    let small = total / 2;
                    if self.padding == Padding::SameUpper {
                        (b[i], e[i]) = (small, total - small);
                    } else {
                        (b[i], e[i]) = (total - small, small);
                    }
                }
                (b, e)
            }
        };

        let mut output = Vec::with_capacity(n);
        for i in 0..n {
            let padded = input[i] + pads_begin[i] + pads_end[i];
            if eff[i] > padded {
                bail!(
                    "kernel extent {} (kernel {} dilation {}) is larger than the padded input {} on spatial axis {i}",
                    eff[i], kernel[i], dilations[i], padded
                );
            }
            let span = padded - eff[i];
            let mut out = if ceil_mode {
                span.div_ceil(strides[i]) + 1
            } else {
                span / strides[i] + 1
            };
            // As PyTorch and onnxruntime do: with ceil_mode the last window must start inside
            // the input or the leading padding, never entirely in the trailing padding.
            if ceil_mode && (out - 1) * strides[i] >= input[i] + pads_begin[i] {
                out -= 1;
            }
            output.push(out);
        }
        Ok(Geometry {
            input: input.to_vec(),
            kernel: kernel.to_vec(),
            strides,
            dilations,
            pads_begin,
            pads_end,
            output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(strides: Vec<usize>, padding: Padding) -> Window {
        Window {
            kernel_shape: None,
            strides,
            dilations: vec![],
            padding,
        }
    }

    #[test]
    fn explicit_pads_and_strides() {
        let g = win(vec![2, 2], Padding::Explicit(vec![3, 3, 3, 3]))
            .resolve(&[224, 224], &[7, 7], false)
            .unwrap();
        assert_eq!(g.output, vec![112, 112]);
    }

    #[test]
    fn same_upper_puts_the_odd_pad_at_the_end() {
        let g = win(vec![2], Padding::SameUpper)
            .resolve(&[6], &[3], false)
            .unwrap();
        assert_eq!((g.pads_begin[0], g.pads_end[0], g.output[0]), (0, 1, 3));
        let g = win(vec![2], Padding::SameLower)
            .resolve(&[6], &[3], false)
            .unwrap();
        assert_eq!((g.pads_begin[0], g.pads_end[0], g.output[0]), (1, 0, 3));
    }

    #[test]
    fn ceil_mode_drops_a_window_starting_in_the_trailing_pad() {
        // 112 -> 56 with k=3 s=2 ceil: (112-3)/2 = 54.5 -> 55 + 1 = 56.
        let g = win(vec![2, 2], Padding::Explicit(vec![]))
            .resolve(&[112, 112], &[3, 3], true)
            .unwrap();
        assert_eq!(g.output, vec![56, 56]);
        // in=5, k=2, s=2, pad end 1: ceil((6-2)/2)+1 = 3, but window 2 starts at 4 < 5: kept.
        let g = win(vec![2], Padding::Explicit(vec![0, 1]))
            .resolve(&[5], &[2], true)
            .unwrap();
        assert_eq!(g.output, vec![3]);
    }

    #[test]
    fn refuses_zero_stride_and_oversized_kernel() {
        assert!(win(vec![0], Padding::Valid)
            .resolve(&[5], &[3], false)
            .is_err());
        let e = win(vec![], Padding::Valid)
            .resolve(&[2], &[3], false)
            .unwrap_err();
        assert!(
            e.to_string().contains("larger than the padded input"),
            "{e}"
        );
    }
}
