//! Buffers of dead tensors, handed back by the interpreter during a run, for kernels that
//! overwrite every element of their output (Conv): a layer's output then reuses the memory
//! of one that died, instead of a fresh allocation that is zeroed (or page-faulted in)
//! only to be overwritten. Contents are stale values, never uninitialised memory.

use crate::tensor::Tensor;

/// Most buffers kept; past it the smallest is freed. A few suffice: a conv net frees about
/// one activation per layer, and the pool lives for one run.
const KEEP: usize = 4;

/// The interpreter's pool of dead f32 buffers for one run.
#[derive(Debug, Default)]
pub struct Recycled {
    bufs: Vec<Vec<f32>>,
}

impl Recycled {
    /// Keeps `t`'s buffer when it is an f32 tensor.
    pub fn put(&mut self, t: Tensor) {
        let Tensor::F32(a) = t else { return };
        let (v, _) = a.into_raw_vec_and_offset();
        self.bufs.push(v);
        if self.bufs.len() > KEEP {
            if let Some(i) = (0..self.bufs.len()).min_by_key(|&i| self.bufs[i].len()) {
                self.bufs.swap_remove(i);
            }
        }
    }

    /// `n` floats of arbitrary values, to be overwritten: the smallest kept buffer that
    /// holds `n`, else a new one.
    pub fn take(&mut self, n: usize) -> Vec<f32> {
        let best = (0..self.bufs.len())
            .filter(|&i| self.bufs[i].len() >= n)
            .min_by_key(|&i| self.bufs[i].len());
        match best {
            Some(i) => {
                let mut v = self.bufs.swap_remove(i);
                v.truncate(n);
                v
            }
            None => vec![0f32; n],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn best_fit_and_bounded() {
        let mut r = Recycled::default();
        for n in [10, 40, 20, 30, 50] {
            r.put(Tensor::F32(ArrayD::from_elem(IxDyn(&[n]), n as f32)));
        }
        assert_eq!(r.bufs.len(), KEEP); // the 10 was dropped
        let v = r.take(25);
        assert_eq!((v.len(), v[0]), (25, 30.0)); // from the 30, the smallest that holds 25
        assert_eq!(r.take(60), vec![0.0; 60]); // none holds 60
        r.put(Tensor::I64(ArrayD::zeros(IxDyn(&[100]))));
        assert_eq!(r.bufs.len(), 3);
    }
}
