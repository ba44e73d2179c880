//! Our own packed single-precision GEMM, built for convolutions: `C = A * B`, then
//! `+ bias[row]`, `+ R` (a residual laid out as C: a fused Add) and an optional clamp
//! (Relu, Clip), with A (the weights) packed once and reused across calls.
//!
//! Layout: A (`m x k`) is packed into panels of [`MR`] rows, each panel `k x MR` contiguous
//! (row `i` of the panel is column `i` of the `k`-th step); B (`k x n`) into panels of
//! [`NR`] columns, each `k x NR` contiguous. Missing rows and columns at the edges are
//! zero-filled, so the micro-kernel always computes a full `MR x NR` tile in registers and
//! only its stores are trimmed. The reduction dimension is cut into blocks of at most
//! [`KC_MAX`]: an A panel's block (`KC_MAX x MR` floats, 16 KiB) stays in L1 while the B
//! panels of the block stream past it from L2 (see `gemm_packed_blocks`), and a block's B
//! panels (at most `KC_MAX x 256` floats for a block of 256 output positions, 512 KiB)
//! stay in L2.
//!
//! Determinism: each output element is computed by one micro-kernel tile per K block, the K
//! blocks in increasing order, the tile's accumulator starting from C's value after the
//! previous block; the blocks depend only on `k`. Which task computes a tile never changes
//! its sum, so callers may split the rows and columns over threads at any fixed boundaries.

mod cols;
#[cfg(target_arch = "x86_64")]
mod column_avx2;
mod gemv;
mod microkernel_avx2;
mod microkernel_avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) use microkernel_avx2::clamp as clamp_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use microkernel_avx512::clamp as clamp_avx512;
mod microkernel_portable;
mod pack;
#[cfg(test)]
mod tests;

pub use cols::{gemm_cols, PackedCols};
pub use gemv::{gemv_available, gemv_packed};
pub use pack::{pack_b, pack_b_row, PackedA};

use std::ops::Range;
use std::sync::OnceLock;

/// Rows of a micro-tile (A panel height).
pub const MR: usize = 8;
/// Columns of a micro-tile (B panel width): two 16-float AVX-512 vectors.
pub const NR: usize = 32;
/// Largest K block; blocks are of equal size `ceil(k / ceil(k / KC_MAX))`. Each block
/// after the first reloads and stores C again: 512 rather than 256 about halves those
/// passes (ResNet-50's 1x1 convs with K = 512-2048, its im2col ones with K = 1152-4608;
/// none left for K of 257-512, SqueezeNet's classifier's 512) (paired medians
/// of 6 alternating rounds, one thread, the same bits: ResNet-50 0.965, ResNet-18 0.970,
/// SqueezeNet 0.979, DenseNet-121 0.989, GoogLeNet 0.992; the nets that use the sgemm
/// less 0.995-1.0 over 10 rounds). 768 and 1024 gained no more.
pub const KC_MAX: usize = 512;

/// The clamp applied after the bias: `v < lo -> lo`, then `v > hi -> hi`, exactly as the
/// Clip kernel (and Relu, which is `lo = 0` with no `hi`: `v < 0 -> 0` keeps NaN and -0.0),
/// so a fused activation gives the same bits as running the activation node after the Conv.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Activation {
    pub lo: Option<f32>,
    pub hi: Option<f32>,
}

impl Activation {
    pub const NONE: Activation = Activation { lo: None, hi: None };
    pub const RELU: Activation = Activation {
        lo: Some(0.0),
        hi: None,
    };

    pub fn is_none(&self) -> bool {
        self.lo.is_none() && self.hi.is_none()
    }

    /// The clamp on one value (the portable kernel and tests use it).
    #[inline(always)]
    pub fn apply(&self, mut v: f32) -> f32 {
        if let Some(l) = self.lo {
            if v < l {
                v = l;
            }
        }
        if let Some(h) = self.hi {
            if v > h {
                v = h;
            }
        }
        v
    }
}

/// What the last K block does before storing: `+ bias[row]` (when given; no `+ 0.0`
/// otherwise, which would turn -0.0 into +0.0), then `+ residual` (when given), then the
/// activation: the bits of a Conv, an Add of its output and the residual, and a Relu or
/// Clip, run one after the other.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// One value per row of A (the rows of the whole `PackedA`, not of a panel range).
    pub bias: Option<&'a [f32]>,
    /// A matrix laid out as C: element `(row, col)` at `residual[row * ldc + col]`, the
    /// offset of C's element from the `c` a call is given. [`gemm_packed_blocks`] only
    /// ([`gemm_cols`] and [`gemv_packed`] refuse it).
    pub residual: Option<&'a [f32]>,
    pub act: Activation,
}

/// Which micro-kernel runs the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512F intrinsics (x86-64 with AVX-512F only).
    Avx512,
    /// AVX2 + FMA intrinsics (x86-64 without AVX-512); the same bits as `Avx512`.
    Avx2,
    /// Plain Rust over fixed-size arrays, for any CPU.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs, detected once.
    pub fn detect() -> Kernel {
        static K: OnceLock<Kernel> = OnceLock::new();
        *K.get_or_init(|| {
            if microkernel_avx512::available() {
                Kernel::Avx512
            } else if microkernel_avx2::available() {
                Kernel::Avx2
            } else {
                Kernel::Portable
            }
        })
    }

    /// Whether [`gemm_cols`] (the transposed orientation) can beat [`gemm_packed`] on small
    /// planes: only on the portable kernel. The AVX2 kernel computes an edge tile in as few
    /// 8-column vectors as it stores, so the ordinary orientation pads no more; on AVX-512
    /// it pads more but ran faster all the same (measured in `conv::cols_cheaper`).
    pub fn transposed_pays(self) -> bool {
        self == Kernel::Portable
    }

    /// Every kernel this CPU runs (the tests compare them).
    pub fn available() -> Vec<Kernel> {
        let mut ks = vec![Kernel::Portable];
        if microkernel_avx2::available() {
            ks.push(Kernel::Avx2);
        }
        if microkernel_avx512::available() {
            ks.push(Kernel::Avx512);
        }
        ks
    }

    /// Runs one tile on this kernel.
    ///
    /// # Safety
    /// The kernel must be [`available`](Kernel::available); the pointers as each
    /// micro-kernel's `tile` requires.
    #[inline(always)]
    unsafe fn tile(self, t: &Tile, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        match self {
            Kernel::Avx512 => microkernel_avx512::tile(t, a, b, c, ldc),
            Kernel::Avx2 => microkernel_avx2::tile(t, a, b, c, ldc),
            Kernel::Portable => microkernel_portable::tile(t, a, b, c, ldc),
        }
    }
}

/// The K blocks: `(k0, kc)` pairs covering `0..k` in order. At least one block (of size 0
/// when `k == 0`, so the epilogue still writes `bias` into C).
pub(crate) fn k_blocks(k: usize) -> impl Iterator<Item = (usize, usize)> {
    let nb = k.div_ceil(KC_MAX).max(1);
    let kc = k.div_ceil(nb);
    (0..nb).map(move |i| {
        let k0 = (i * kc).min(k);
        (k0, kc.min(k - k0))
    })
}

/// The number of NR-column panels for `n` columns.
pub fn b_panels(n: usize) -> usize {
    n.div_ceil(NR)
}

/// The length of a packed B of `k x n`.
pub fn packed_b_len(k: usize, n: usize) -> usize {
    b_panels(n) * k * NR
}

/// `C[rows, 0..n] = A[rows] * B` with the epilogue, for the A panels `panels` (rows
/// `panels.start * MR ..` up to `a.m()`). `b` is packed by [`pack_b`] for `a.k() x n`.
///
/// # Safety
/// `c` must be valid for reads and writes of the rows `panels.start * MR .. min(panels.end *
/// MR, a.m())` with row stride `ldc`, columns `0..n`, and no other thread may touch those
/// elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_packed(
    kernel: Kernel,
    a: &PackedA,
    panels: Range<usize>,
    b: &[f32],
    n: usize,
    c: *mut f32,
    ldc: usize,
    epi: &Epilogue,
) {
    let all = 0..k_blocks(a.k()).count();
    gemm_packed_blocks(kernel, a, panels, all, b, n, c, ldc, epi)
}

/// [`gemm_packed`] for the K blocks `blocks` of [`k_blocks`]`(a.k())` only: the first
/// starts from C's values unless it is block 0, the epilogue comes with the last block of
/// all. Running the blocks in order, in one call or several, gives the bits of one call.
///
/// # Safety
/// As [`gemm_packed`]; the blocks before `blocks.start` must have been run on the same
/// elements of C.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_packed_blocks(
    kernel: Kernel,
    a: &PackedA,
    panels: Range<usize>,
    blocks: Range<usize>,
    b: &[f32],
    n: usize,
    c: *mut f32,
    ldc: usize,
    epi: &Epilogue,
) {
    let (m, k) = (a.m(), a.k());
    check_call((m, k), panels.end <= a.panels(), b, n, epi);
    check_residual(epi, m.min(panels.end * MR), n, ldc);
    // The AVX-512 kernel adds the residual in registers; the others store the tile with
    // bias only and `add_residual` finishes it while it is in L1.
    let native = kernel == Kernel::Avx512;
    let tile_act = match (epi.residual, native) {
        (Some(_), false) => Activation::NONE,
        _ => epi.act,
    };
    let nq = b_panels(n);
    let n_kb = k.div_ceil(KC_MAX).max(1);
    let chosen = k_blocks(k).enumerate().skip(blocks.start);
    for (kb, (k0, kc)) in chosen.take(blocks.len()) {
        let last = kb + 1 == n_kb;
        // On AVX2, the last one or two columns past whole 8-column vectors of a B panel go
        // down the panels one column at a time (`column_avx2.rs`), when there are panels
        // enough to keep its chains busy; the tiles then store the columns before them.
        let single = |cols: usize| match kernel {
            Kernel::Avx2 if panels.len() >= 4 && matches!(cols % 8, 1 | 2) => cols % 8,
            _ => 0,
        };
        let cols_of = |q: usize| NR.min(n - q * NR);
        #[cfg(target_arch = "x86_64")]
        for q in 0..nq {
            let cols = cols_of(q);
            let bq = b.as_ptr().add((q * k + k0) * NR);
            for j in cols - single(cols)..cols {
                let col_epi = last.then_some(column_avx2::ColumnEpilogue {
                    bias: epi.bias,
                    act: tile_act,
                });
                let cj = c.add(q * NR + j);
                columns(
                    kc,
                    (a, k0),
                    panels.clone(),
                    bq.add(j),
                    (cj, ldc),
                    kb > 0,
                    col_epi.as_ref(),
                );
                if let (Some(r), true) = (epi.residual, last) {
                    let rows = panels.start * MR..m.min(panels.end * MR);
                    let r = r.as_ptr().add(q * NR + j);
                    add_residual((cj, r, ldc), rows, 0..1, epi.act);
                }
            }
        }
        // The A block after panel p's: the next panel's for this K block, or the first
        // panel's for the next K block. Taken over all of A's panels, not just `panels`, so
        // a caller running its share of the panels still fetches ahead for the next one.
        let next_block = |p: usize| match (p + 1 < a.panels(), kb + 1 < n_kb) {
            (true, _) => a.panel(p + 1).as_ptr().add(k0 * MR),
            (false, true) => a.panel(0).as_ptr().add((k0 + kc) * MR),
            (false, false) => std::ptr::null(),
        };
        // A panels outside, B panels inside: an A panel's K block stays in L1 while the B
        // panels stream past it from L2, and C is written MR rows at a time, each row left
        // to right. The other order (one B panel against every A panel) wrote C one
        // NR-column strip of every row at a time, a cache line or two per row far apart. In
        // C, 256 x 64 x 3136 with C evicted before each run: 1.08 -> 0.77 ms; in the nets
        // (with huge pages) ResNet-50 0.965 of the time, ResNet-18 0.969, DenseNet 0.985.
        for p in panels.clone() {
            let r0 = p * MR;
            let rows = MR.min(m - r0);
            let ap = a.panel(p).as_ptr().add(k0 * MR);
            let next_a = next_block(p);
            for q in 0..nq {
                let cols = cols_of(q);
                let cols = cols - single(cols);
                if cols == 0 {
                    continue;
                }
                let tile = Tile {
                    kc,
                    a_step: MR,
                    rows,
                    cols,
                    transposed: false,
                    accumulate: kb > 0,
                    epilogue: last.then(|| TileEpilogue {
                        bias: epi.bias.map(|b| &b[r0..r0 + rows]),
                        residual: match (epi.residual, native) {
                            (Some(r), true) => r.as_ptr().add(r0 * ldc + q * NR),
                            _ => std::ptr::null(),
                        },
                        act: tile_act,
                    }),
                    next_a,
                };
                let bq = b.as_ptr().add((q * k + k0) * NR);
                let ct = c.add(r0 * ldc + q * NR);
                kernel.tile(&tile, ap, bq, ct, ldc);
                if let (Some(r), true, false) = (epi.residual, last, native) {
                    let r = r.as_ptr().add(r0 * ldc + q * NR);
                    add_residual((ct, r, ldc), 0..rows, 0..cols, epi.act);
                }
            }
        }
    }
}

/// `C = act(C + R)` over the rows and columns given (C and R `ldc` apart per row): the
/// epilogue's residual for the kernels that store a tile without it.
///
/// # Safety
/// `c` and `r` valid for those elements, C's untouched by other threads.
unsafe fn add_residual(
    (c, r, ldc): (*mut f32, *const f32, usize),
    rows: Range<usize>,
    cols: Range<usize>,
    act: Activation,
) {
    for i in rows {
        for j in cols.clone() {
            let at = i * ldc + j;
            *c.add(at) = act.apply(*c.add(at) + *r.add(at));
        }
    }
}

/// Column `b` of one K block (`kc` steps from `k0`) times the A panels `panels`, into C's
/// column `c`, eight panels (chains) at a time; see `column_avx2.rs`.
///
/// # Safety
/// AVX2 and FMA; as [`gemm_packed`] for the pointers.
#[cfg(target_arch = "x86_64")]
unsafe fn columns(
    kc: usize,
    (a, k0): (&PackedA, usize),
    panels: Range<usize>,
    b: *const f32,
    (c, ldc): (*mut f32, usize),
    accumulate: bool,
    epi: Option<&column_avx2::ColumnEpilogue>,
) {
    use column_avx2::column;
    let panel_len = a.k() * MR;
    let mut p = panels.start;
    while p < panels.end {
        let n = 8.min(panels.end - p);
        let ap = (a.panels_from(p).as_ptr().add(k0 * MR), panel_len);
        let rows = (p * MR, a.m());
        macro_rules! run {
            ($($n:literal)*) => {
                match (n, accumulate) {
                    $(($n, false) => column::<$n, false>(kc, ap, b, (c, ldc), rows, epi),
                      ($n, true) => column::<$n, true>(kc, ap, b, (c, ldc), rows, epi),)*
                    _ => unreachable!("1 to 8 panels"),
                }
            };
        }
        run!(1 2 3 4 5 6 7 8);
        p += n;
    }
}

/// The checks `gemm_packed` and `gemm_cols` make of their arguments before any unsafe
/// access: A's panel range (`panels_fit`), B's packed length, the bias length.
fn check_call((m, k): (usize, usize), panels_fit: bool, b: &[f32], n: usize, epi: &Epilogue) {
    assert!(panels_fit, "sgemm: panel range out of A");
    assert!(
        b.len() >= packed_b_len(k, n),
        "sgemm: packed B is too short"
    );
    if let Some(bias) = epi.bias {
        assert!(bias.len() >= m, "sgemm: bias is too short");
    }
}

/// The check `gemm_packed_blocks` makes of a residual: it covers C's elements of the
/// rows up to `rows_end` (row stride `ldc`, columns `0..n`).
fn check_residual(epi: &Epilogue, rows_end: usize, n: usize, ldc: usize) {
    if let (Some(r), true) = (epi.residual, rows_end > 0 && n > 0) {
        assert!(
            r.len() >= (rows_end - 1) * ldc + n,
            "sgemm: residual is too short"
        );
    }
}

/// One micro-kernel call: `kc` steps over an `MR x NR` tile of which `rows x cols` are stored.
pub(crate) struct Tile<'a> {
    kc: usize,
    /// Floats from one K step of A to the next: `MR` in a `PackedA` panel, `NR` when A is
    /// an `MR`-column slice of a packed B panel ([`gemm_cols`]).
    a_step: usize,
    rows: usize,
    cols: usize,
    /// Store the tile transposed: tile element `(i, j)` goes to `c[j * ldc + i]`, and the
    /// bias is per tile column (`cols` values). Only with `accumulate` false.
    transposed: bool,
    /// Start from C's current values (a later K block) rather than 0.
    accumulate: bool,
    /// Set on the last K block.
    epilogue: Option<TileEpilogue<'a>>,
    /// The A block the next tile call reads (`kc` steps of `a_step` floats), which the
    /// AVX-512 kernel prefetches while it runs this one; null when there is none to name.
    next_a: *const f32,
}

pub(crate) struct TileEpilogue<'a> {
    /// `rows` values (`cols` when transposed), when there is a bias.
    bias: Option<&'a [f32]>,
    /// The AVX-512 kernel only, untransposed: the residual's element for the tile's
    /// `(0, 0)`, its rows `ldc` apart as C's; null when there is none.
    residual: *const f32,
    act: Activation,
}

/// Block width of [`sgemm`]'s parallel split (fixed, for the same bits at any thread count).
const BLOCK_N: usize = 256;

/// Row-major `C (m x n, ldc) = A (m x k, lda) * B (k x n, ldb)` with the epilogue, on the
/// detected kernel, parallel over fixed 256-column blocks (each packs its own B).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    epi: &Epilogue,
) {
    sgemm_with(Kernel::detect(), m, n, k, a, lda, b, ldb, c, ldc, epi)
}

/// [`sgemm`] on a chosen kernel (tests run both).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    epi: &Epilogue,
) {
    use rayon::prelude::*;
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        k == 0 || b.len() >= (k - 1) * ldb + n,
        "sgemm: B is too short"
    );
    assert!(c.len() >= (m - 1) * ldc + n, "sgemm: C is too short");
    let pa = PackedA::pack(m, k, a, lda);
    let cp = crate::kernels::gemm::SendPtr(c.as_mut_ptr());
    (0..n.div_ceil(BLOCK_N))
        .into_par_iter()
        .for_each_init(Vec::new, |buf, blk| {
            let j0 = blk * BLOCK_N;
            let nb = BLOCK_N.min(n - j0);
            buf.resize(packed_b_len(k, nb), 0.0);
            pack_b(k, nb, &b[j0.min(b.len())..], ldb, buf);
            // SAFETY: C's extent was checked above; block `blk` writes columns j0..j0+nb
            // only, so blocks are disjoint.
            unsafe {
                gemm_packed(
                    kernel,
                    &pa,
                    0..pa.panels(),
                    buf,
                    nb,
                    cp.get().add(j0),
                    ldc,
                    epi,
                )
            }
        });
}
