//! The process's allocator settings for running models: freed memory is kept for the next
//! run instead of going back to the kernel.
//!
//! Why: a run allocates and frees the same tensors every time (a conv's output is a fresh
//! buffer, see `kernels::uninit`). glibc's malloc gives every thread but the main one an arena
//! of its own, and the runs happen on a rayon worker (`ThreadPool::install`), whose arena
//! returns a heap to the kernel as soon as it is empty. The next run then faults every page
//! of those buffers back in, zeroed by the kernel: ResNet-50 took ~1,570 page faults per run
//! (6 MB; `perf stat -e page-faults` over 5 and 25 runs) and its 64 -> 256 1x1 convs on
//! 56x56 ran 4.7 ms where the same conv on a reused buffer ran 1.6-2.0. With one arena and
//! fixed thresholds the heap only grows to the run's peak and stays there: no page fault
//! after the first run. The peak itself is unchanged: memory is kept, not added.
//!
//! This is a setting of the whole process, so the library never makes it on its own: the
//! command line calls [`keep_freed_memory`] first thing, and so do the criterion benches; an
//! application embedding convgraph decides for itself (the same can be had without code by
//! `GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296`).

/// Makes glibc's malloc keep freed memory for reuse (one arena, no trimming, blocks up to
/// 32 MiB from the heap rather than their own mappings). Does nothing on other C libraries.
/// Call it before any thread is started: arenas are handed out on a thread's first
/// allocation.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // The largest threshold glibc accepts (HEAP_MAX_SIZE / 2 on 64-bit); bigger blocks
        // are mapped and unmapped per allocation whatever we ask.
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        // Setting either threshold turns glibc's own adjustment of both off, so both are set.
        const TRIM_THRESHOLD: libc::c_int = libc::c_int::MAX;
        // mallopt returns 0 when it refuses a value; the defaults then stay, which is only
        // slower, so the results are not checked.
        // SAFETY: mallopt only changes malloc's parameters; it is called before any other
        // thread exists (see above), as glibc asks.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}
