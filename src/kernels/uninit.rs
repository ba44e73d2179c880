//! Conv outputs allocated without zeroing them first.
//!
//! Why: `vec![0.0; n]` on memory the allocator has handed out before is a memset, and the
//! conv kernels overwrite every float anyway. On MobileNet v2 that memset was 5% of a
//! single-thread run (perf, called from `conv_f32_with`), and without it the run took 0.92
//! of the time (medians of 4 alternating runs: 11.1-11.2 against 12.0-12.2 ms); RegNet-X
//! 0.96-0.98.
//!
//! Soundly: the buffer is `[MaybeUninit<f32>]`, and the kernels that take it unzeroed
//! (im2col + sgemm, `conv_direct`, `conv_lanes`, the interleaved depthwise, Winograd, and
//! `blocked::scale_to_blocked`) only
//! write it through raw pointers or `[MaybeUninit<f32>]` rows, each float before any read
//! of it; the per-plane depthwise paths, which build `&mut [f32]` rows, get it filled
//! first through [`filled`]. Debug builds (the test suite) fill every new buffer with NaN instead of
//! leaving it uninitialized, so a float some kernel forgets to write shows as NaN in the
//! cross-checks against tract and the reference conv.

use std::mem::MaybeUninit;

/// A buffer of `n` floats, uninitialized (NaN in debug builds).
pub(crate) fn alloc(n: usize) -> Box<[MaybeUninit<f32>]> {
    let mut b = Box::new_uninit_slice(n);
    if cfg!(debug_assertions) {
        for v in b.iter_mut() {
            v.write(f32::NAN);
        }
    }
    b
}

/// The buffer's floats, once every one has been written.
///
/// # Safety
/// Every element of `b` must have been written.
pub(crate) unsafe fn assume_init(b: Box<[MaybeUninit<f32>]>) -> Vec<f32> {
    // SAFETY: the caller's promise.
    unsafe { b.assume_init() }.into_vec()
}

/// `out` filled, as floats: for kernels that write their output through `&mut [f32]`.
/// With zeros, or NaN in debug builds, so that a float such a kernel leaves unwritten still
/// shows in the tests (which hand these kernels NaN-filled buffers).
pub(crate) fn filled(out: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    let v0 = if cfg!(debug_assertions) {
        f32::NAN
    } else {
        0.0
    };
    for v in out.iter_mut() {
        v.write(v0);
    }
    // SAFETY: every element was just written; MaybeUninit<f32> has f32's layout.
    unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// An initialized buffer seen as one to write (the tests hand the unzeroed kernels a
/// `Vec<f32>`).
///
/// # Safety
/// Whoever writes through the result must write initialized floats only (the kernels
/// taking `[MaybeUninit<f32>]` do), or `out` would hold uninitialized floats afterwards.
pub(crate) unsafe fn of_init(out: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; the caller promises to keep it initialized.
    unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) }
}
