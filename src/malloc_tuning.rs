//! The process's allocator settings for running models: freed memory is kept for the next
//! run instead of going back to the kernel, and the heap is backed by transparent huge pages.
//!
//! Why keep freed memory: a run allocates and frees the same tensors every time (a conv's
//! output is a fresh buffer, see `kernels::uninit`). glibc's malloc gives every thread but the
//! main one an arena of its own, and the runs happen on a rayon worker
//! (`ThreadPool::install`), whose arena returns a heap to the kernel as soon as it is empty.
//! The next run then faults every page of those buffers back in, zeroed by the kernel:
//! ResNet-50 took ~1,570 page faults per run (6 MB; `perf stat -e page-faults` over 5 and 25
//! runs) and its 64 -> 256 1x1 convs on 56x56 ran 4.7 ms where the same conv on a reused
//! buffer ran 1.6-2.0. With one arena and fixed thresholds the heap only grows to the run's
//! peak and stays there: no page fault after the first run. The peak itself is unchanged:
//! memory is kept, not added.
//!
//! Why huge pages: a net's weights and activations span tens to hundreds of MiB, walked
//! through once per run, and with 4 KiB pages each conv touches more pages than the TLB
//! holds. Where the kernel gives transparent huge pages on request (`madvise` mode, the
//! usual default), glibc asks for them when told to by the tunable `glibc.malloc.hugetlb=1`.
//! On an AVX-512 Xeon (2026-12-07, alternating `bench` runs): ResNet-18 0.90 of the time,
//! GoogLeNet 0.90, RegNet 0.92, MobileNet v2, SqueezeNet and ShuffleNet 0.93, ResNet-50
//! 0.88-0.95, DenseNet 0.95, EfficientNet 0.97; ResNet-50's 64 -> 256 1x1 convs on 56x56 in the
//! whole net 1.72 -> 1.32 ms. Peak RSS within 1% (ResNet-50 305 MiB either way).
//!
//! Why line-aligned blocks: see [`LineAligned`].
//!
//! These are settings of the whole process, so the library never makes them on its own: the
//! command line calls [`with_huge_pages`] and [`keep_freed_memory`] first thing and installs
//! [`LineAligned`], and so do the criterion benches; an application embedding convgraph decides for itself (the same
//! can be had without code by
//! `GLIBC_TUNABLES=glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296`).

/// The tunable asking glibc's malloc for transparent huge pages.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HUGE_PAGES: &str = "glibc.malloc.hugetlb=1";

/// Runs this program again, from the start, with glibc's malloc asking for transparent huge
/// pages, unless `GLIBC_TUNABLES` already says what it wants of them (as it does in the
/// program run again). glibc reads its tunables once, at start-up, and has no call to change
/// this one later: hence the exec. Returns when there is nothing to do, on other C libraries,
/// or when the exec fails (the program then runs as it would have, only slower). Call it
/// first thing, before any thread is started or any output written.
pub fn with_huge_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        let tunables = match std::env::var_os("GLIBC_TUNABLES") {
            None => HUGE_PAGES.to_string(),
            Some(t) => match t.to_str() {
                Some(t) if t.contains("glibc.malloc.hugetlb") => return,
                Some("") => HUGE_PAGES.to_string(),
                Some(t) => format!("{t}:{HUGE_PAGES}"),
                // Not ours to rewrite.
                None => return,
            },
        };
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut again = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            again.arg0(arg0);
        }
        // `exec` only returns on failure; the error is dropped on purpose (see above).
        let _ = again.args(args).env("GLIBC_TUNABLES", tunables).exec();
    }
}

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

/// A global allocator: the system's, with every block of at least [`ALIGNED_FROM`] bytes
/// starting on a cache line. glibc's malloc aligns to 16 bytes, so the tensors, packed
/// weights and scratch buffers the kernels read and write in 64-byte zmm vectors had three
/// accesses in four split across two lines. With it, on an AVX-512 Xeon (2026-12-07,
/// alternating `bench` runs, 4 rounds of 12): RegNet 0.95 of the time, ResNet-18 0.97,
/// ResNet-50, MobileNet v2, SqueezeNet and EfficientNet 0.975, GoogLeNet 0.98, ShuffleNet
/// 0.99, DenseNet 0.99; the same output bits; peak RSS up by 3 MiB (ResNet-50 308 -> 312,
/// MobileNet v2 57 -> 60 MiB). The command line and the criterion benches install it; an
/// application embedding convgraph may too (`#[global_allocator]`).
pub struct LineAligned;

/// Blocks from this size on are aligned to a cache line.
pub const ALIGNED_FROM: usize = 4096;

const LINE: usize = 64;

/// The layout `LineAligned` asks the system for: `layout` itself, or aligned to a line.
fn line_aligned(layout: std::alloc::Layout) -> std::alloc::Layout {
    match layout.size() >= ALIGNED_FROM && layout.align() < LINE {
        // `align_to` fails only for a size that would overflow once rounded up, which no
        // block the caller could have had does; the layout is then kept as it is.
        true => layout.align_to(LINE).unwrap_or(layout),
        false => layout,
    }
}

// SAFETY: every call goes to `System` with the layout `line_aligned` gives, which depends
// only on the layout the caller passes, so alloc and dealloc of one block see the same one.
unsafe impl std::alloc::GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        std::alloc::System.alloc(line_aligned(layout))
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        std::alloc::System.alloc_zeroed(line_aligned(layout))
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, line_aligned(layout))
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let old = line_aligned(layout);
        let Ok(new) = std::alloc::Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let new = line_aligned(new);
        if old.align() == new.align() {
            return std::alloc::System.realloc(ptr, old, new_size);
        }
        // The alignment class changes: a new block, the contents copied.
        let fresh = std::alloc::System.alloc(new);
        if !fresh.is_null() {
            std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
            std::alloc::System.dealloc(ptr, old);
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::{LineAligned, ALIGNED_FROM};
    use std::alloc::{GlobalAlloc, Layout};

    #[test]
    fn big_blocks_start_on_a_line_and_keep_their_contents_through_realloc() {
        let a = LineAligned;
        // SAFETY: each block is used within its size and freed once with its layout.
        unsafe {
            for size in [ALIGNED_FROM, ALIGNED_FROM + 4, 1 << 20] {
                let l = Layout::from_size_align(size, 4).unwrap();
                let p = a.alloc(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % 64, 0, "{size} bytes");
                a.dealloc(p, l);
            }
            // Small to big (the alignment class changes), then big to bigger.
            let small = Layout::from_size_align(100, 4).unwrap();
            let p = a.alloc(small);
            for i in 0..100 {
                *p.add(i) = i as u8;
            }
            let p = a.realloc(p, small, 3 * ALIGNED_FROM);
            assert_eq!(p as usize % 64, 0);
            let big = Layout::from_size_align(3 * ALIGNED_FROM, 4).unwrap();
            let p = a.realloc(p, big, 50 * ALIGNED_FROM);
            assert_eq!(p as usize % 64, 0);
            assert!((0..100).all(|i| *p.add(i) == i as u8));
            a.dealloc(p, Layout::from_size_align(50 * ALIGNED_FROM, 4).unwrap());
        }
    }
}
