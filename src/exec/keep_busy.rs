//! Keeps the pool's other workers polling for work while a run lasts.
//!
//! A run is a sequence of parallel regions (one or a few per node) with serial work between
//! them. Between regions rayon's idle workers yield a few dozen times and then sleep on a
//! futex, and the next region has to wake them (perf showed the scheduler's and futex's
//! functions beside the kernels). With the other workers polling instead, two-thread runs
//! took 0.83-0.95 of the time on the nine nets of the README (ResNet-50 0.92; paired
//! medians of alternating runs). onnxruntime's pool spins between ops too.
//!
//! [`while_running`] spawns one job per other worker that loops on `rayon::yield_now`
//! (which runs a pending job of the pool if there is one) until the run ends. Which worker
//! runs which task changes nothing in the results: task boundaries never depend on it.

use std::sync::atomic::{AtomicBool, Ordering};

/// `run()`, with the pool's other workers kept polling for work until it returns. On a
/// single-thread pool, just `run()`.
pub(super) fn while_running<R>(run: impl FnOnce() -> R) -> R {
    let others = rayon::current_num_threads().saturating_sub(1);
    if others == 0 {
        return run();
    }
    let done = AtomicBool::new(false);
    rayon::in_place_scope(|s| {
        for _ in 0..others {
            s.spawn(|_| poll(&done));
        }
        // Set however `run` ends (a panic unwinds through here), so the scope can join the
        // pollers.
        let _stop = Stop(&done);
        run()
    })
}

/// Idle polls between two yields of the thread to the OS.
const POLLS_PER_OS_YIELD: u32 = 64;

/// Runs the pool's pending jobs as they come until `done`. While idle it yields its core to
/// the OS now and then, so that with more threads than cores it does not hold a core the
/// run's own thread is waiting for.
fn poll(done: &AtomicBool) {
    let mut idle = 0u32;
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle = 0,
            _ => {
                idle += 1;
                if idle.is_multiple_of(POLLS_PER_OS_YIELD) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

/// Sets its flag when dropped.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::while_running;
    use crate::kernels::test_data::on_threads;
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Parallel work inside a run completes on every pool size, with the sum it would have
    /// outside, and the run's value comes back.
    #[test]
    fn parallel_work_inside_a_run_completes() {
        for threads in [1, 2, 3] {
            let (sum, tag) = on_threads(threads, || {
                while_running(|| {
                    let mut sum = 0u64;
                    // Many short regions, as the nodes of a run.
                    for r in 0..200u64 {
                        sum += (0..1000u64).into_par_iter().map(|i| i * r).sum::<u64>();
                    }
                    (sum, "ran")
                })
            });
            assert_eq!(sum, 499_500 * (0..200u64).sum::<u64>(), "{threads} threads");
            assert_eq!(tag, "ran");
        }
    }

    /// The other workers do take the run's tasks (they are polling, not merely spinning
    /// beside it), and the pollers end with the run: a second run on the same pool works.
    #[test]
    fn other_workers_run_tasks_and_stop_after() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for _ in 0..2 {
            let caller = AtomicUsize::new(usize::MAX);
            let elsewhere = AtomicUsize::new(0);
            pool.install(|| {
                caller.store(rayon::current_thread_index().unwrap(), Ordering::Relaxed);
                while_running(|| {
                    (0..64).into_par_iter().for_each(|_| {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        if rayon::current_thread_index() != Some(caller.load(Ordering::Relaxed)) {
                            elsewhere.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
            });
            assert!(elsewhere.load(Ordering::Relaxed) > 0);
        }
    }

    /// A panic in the run reaches the caller after the pollers stopped (no hang).
    #[test]
    fn a_panicking_run_stops_the_pollers() {
        let r =
            std::panic::catch_unwind(|| on_threads(2, || while_running(|| panic!("node failed"))));
        assert!(r.is_err());
    }
}
