//! Splitting elementwise work over rayon's current pool in fixed-size chunks.
//!
//! Chunk boundaries depend on the data length alone, never on the thread count, so every
//! result is the same bits for any `--threads` (and an elementwise map gives the same bits
//! however it is split anyway). Small tensors stay on the calling thread: a rayon task costs
//! a few microseconds, more than mapping a few thousand elements.

use rayon::prelude::*;

/// Elements per task: 32 Ki f32 is 128 KiB read and written, well past the task overhead.
pub(crate) const CHUNK: usize = 1 << 15;

/// `f(src_chunk, dst_chunk)` over matching chunks of `src` and `dst` (of equal length).
pub(crate) fn map_into<A: Sync, B: Send>(
    src: &[A],
    dst: &mut [B],
    f: impl Fn(&[A], &mut [B]) + Sync,
) {
    debug_assert_eq!(src.len(), dst.len());
    if dst.len() < 2 * CHUNK {
        f(src, dst);
    } else {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| f(s, d));
    }
}

/// `f(a_chunk, b_chunk, dst_chunk)` over matching chunks of three equal-length slices.
pub(crate) fn zip_into<A: Sync, B: Sync, C: Send>(
    a: &[A],
    b: &[B],
    dst: &mut [C],
    f: impl Fn(&[A], &[B], &mut [C]) + Sync,
) {
    debug_assert!(a.len() == dst.len() && b.len() == dst.len());
    if dst.len() < 2 * CHUNK {
        f(a, b, dst);
    } else {
        dst.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(d, (a, b))| f(a, b, d));
    }
}

/// How many units of `unit` elements make one task (at least one), for work split by whole
/// rows, planes or runs.
pub(crate) fn units_per_task(unit: usize) -> usize {
    (CHUNK / unit.max(1)).max(1)
}

/// Whether work over `total` elements is worth more than one task.
pub(crate) fn worth_splitting(total: usize) -> bool {
    total >= 2 * CHUNK
}

/// `f(chunk)` over fixed chunks of `buf`, updated in place (the in-place form of
/// [`map_into`]: the same chunks, so the same bits).
pub(crate) fn map_in_place<A: Send>(buf: &mut [A], f: impl Fn(&mut [A]) + Sync) {
    if buf.len() < 2 * CHUNK {
        f(buf);
    } else {
        buf.par_chunks_mut(CHUNK).for_each(&f);
    }
}

/// `f(buf_chunk, other_chunk)` over matching chunks of `buf` (updated in place) and `other`
/// (of equal length).
pub(crate) fn zip_in_place<A: Send, B: Sync>(
    buf: &mut [A],
    other: &[B],
    f: impl Fn(&mut [A], &[B]) + Sync,
) {
    debug_assert_eq!(buf.len(), other.len());
    if buf.len() < 2 * CHUNK {
        f(buf, other);
    } else {
        buf.par_chunks_mut(CHUNK)
            .zip(other.par_chunks(CHUNK))
            .for_each(|(d, s)| f(d, s));
    }
}

/// [`runs_in_place`] from `src` into `dst` (of equal length, at fixed boundaries too):
/// `f(first_run, src_chunk, dst_chunk)`, for passes that write a fresh buffer.
pub(crate) fn runs_into<A: Sync, B: Send>(
    src: &[A],
    dst: &mut [B],
    run: usize,
    f: impl Fn(usize, &[A], &mut [B]) + Sync,
) {
    debug_assert_eq!(src.len(), dst.len());
    let run = run.max(1);
    if worth_splitting(dst.len()) {
        let per = units_per_task(run) * run;
        dst.par_chunks_mut(per)
            .zip(src.par_chunks(per))
            .enumerate()
            .for_each(|(i, (d, s))| f(i * per / run, s, d));
    } else {
        f(0, src, dst);
    }
}

/// `f(first_run, chunk)` over `buf` cut into whole runs of `run` elements, updated in place;
/// `first_run` is the index of the chunk's first run. Tasks hold `units_per_task(run)` runs.
pub(crate) fn runs_in_place<A: Send>(
    buf: &mut [A],
    run: usize,
    f: impl Fn(usize, &mut [A]) + Sync,
) {
    let run = run.max(1);
    if worth_splitting(buf.len()) {
        let per = units_per_task(run) * run;
        buf.par_chunks_mut(per)
            .enumerate()
            .for_each(|(i, d)| f(i * per / run, d));
    } else {
        f(0, buf);
    }
}
