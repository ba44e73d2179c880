use super::*;

/// Deterministic pseudo-random data in [-1, 1).
fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The product accumulated in f64, then bias and clamp in f32 as the epilogue defines them.
fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], epi: &Epilogue) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                .sum();
            let v = s as f32 + epi.bias.map_or(0.0, |b| b[i]);
            c[i * n + j] = epi.act.apply(v);
        }
    }
    c
}

fn kernels() -> Vec<Kernel> {
    Kernel::available()
}

fn check(kernel: Kernel, m: usize, n: usize, k: usize, epi: &Epilogue) {
    let a = data(m * k, 1 + m as u64);
    let b = data(k * n, 2 + n as u64);
    let want = naive(m, n, k, &a, &b, epi);
    // Leading dims wider than the matrices, to check the strides; C's padding stays as set.
    let (lda, ldb, ldc) = (k + 3, n + 5, n + 2);
    let mut ap = vec![9f32; m * lda];
    for i in 0..m {
        ap[i * lda..i * lda + k].copy_from_slice(&a[i * k..(i + 1) * k]);
    }
    let mut bp = vec![9f32; k * ldb];
    for p in 0..k {
        bp[p * ldb..p * ldb + n].copy_from_slice(&b[p * n..(p + 1) * n]);
    }
    let mut c = vec![f32::NAN; m * ldc];
    sgemm_with(kernel, m, n, k, &ap, lda, &bp, ldb, &mut c, ldc, epi);
    for i in 0..m {
        for j in 0..n {
            let (g, r) = (c[i * ldc + j], want[i * n + j]);
            let tol = 1e-5 * (1.0 + (k as f32).sqrt()) * (1.0 + r.abs());
            assert!(
                (g - r).abs() <= tol,
                "{kernel:?} m={m} n={n} k={k} {epi:?}: [{i},{j}] {g} vs {r}"
            );
        }
        for j in n..ldc {
            assert!(c[i * ldc + j].is_nan(), "{kernel:?}: wrote past column n");
        }
    }
}

#[test]
fn matches_naive_over_awkward_sizes() {
    let sizes = [1, 7, 8, 9, 31, 33, 100];
    for kernel in kernels() {
        for &m in &sizes {
            for &n in &sizes {
                for &k in &[1, 9, 33] {
                    check(kernel, m, n, k, &Epilogue::default());
                }
            }
        }
        // K spanning several K blocks, N spanning several parallel blocks, partial tiles.
        for (m, n, k) in [
            (17, 513, 300),
            (9, 40, 513),
            (33, 257, 1000),
            (64, 300, 576),
        ] {
            check(kernel, m, n, k, &Epilogue::default());
        }
    }
}

#[test]
fn epilogues_match_naive() {
    let bias = data(100, 7);
    let acts = [
        Activation::NONE,
        Activation::RELU,
        Activation {
            lo: Some(-0.5),
            hi: Some(0.25),
        },
        Activation {
            lo: None,
            hi: Some(0.0),
        },
    ];
    for kernel in kernels() {
        for act in acts {
            for bias in [None, Some(&bias[..])] {
                let epi = Epilogue {
                    bias,
                    act,
                    residual: None,
                };
                for (m, n, k) in [(1, 1, 1), (9, 33, 7), (31, 100, 300), (100, 65, 513)] {
                    check(kernel, m, n, k, &epi);
                }
            }
        }
    }
}

#[test]
fn empty_k_writes_bias() {
    let bias = [1.0f32, -2.0, 3.0];
    for kernel in kernels() {
        let mut c = vec![f32::NAN; 3 * 4];
        let epi = Epilogue {
            bias: Some(&bias),
            act: Activation::RELU,
            residual: None,
        };
        sgemm_with(kernel, 3, 4, 0, &[], 0, &[], 4, &mut c, 4, &epi);
        assert_eq!(c, [[1.0f32; 4], [0.0; 4], [3.0; 4]].concat());
    }
}

#[test]
fn relu_keeps_nan_like_the_relu_kernel() {
    // 1x1 products: a * b with b = NaN, positive, negative.
    for kernel in kernels() {
        let mut c = vec![0f32; 3];
        let epi = Epilogue {
            bias: None,
            act: Activation::RELU,
            residual: None,
        };
        sgemm_with(
            kernel,
            1,
            3,
            1,
            &[-1.0],
            1,
            &[f32::NAN, -2.0, 3.0],
            3,
            &mut c,
            3,
            &epi,
        );
        assert!(c[0].is_nan(), "{kernel:?}");
        assert_eq!(&c[1..], &[2.0, 0.0], "{kernel:?}");
    }
}

#[test]
fn same_bits_for_any_thread_count() {
    let (m, n, k) = (37, 1100, 600);
    let a = data(m * k, 3);
    let b = data(k * n, 4);
    let bias = data(m, 5);
    let epi = Epilogue {
        bias: Some(&bias),
        act: Activation::RELU,
        residual: None,
    };
    for kernel in kernels() {
        let run = |t| {
            let mut c = vec![0f32; m * n];
            crate::kernels::test_data::on_threads(t, || {
                sgemm_with(kernel, m, n, k, &a, k, &b, n, &mut c, n, &epi)
            });
            c
        };
        let one = run(1);
        assert!(one
            .iter()
            .zip(run(2))
            .all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(one
            .iter()
            .zip(run(3))
            .all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}

/// Every edge width of B from 1 to 40 columns (full and padded edge panels), M
/// not a multiple of MR, K not a multiple of the K block, against the naive product.
#[test]
fn edges_of_every_width_match_naive() {
    for kernel in kernels() {
        for n in 1..=40 {
            check(kernel, 13, n, 300, &Epilogue::default());
            check(kernel, 5, n + 64, 7, &Epilogue::default());
        }
    }
}

/// `gemm_cols` (C^T = B^T A^T, whole K per tile, transposed stores) gives the same bits as
/// `gemm_packed` (K blocks) for every kernel, every epilogue, and edges in both dimensions;
/// it writes nothing past column n or row m.
#[test]
fn transposed_orientation_gives_the_same_bits() {
    let bias = data(100, 9);
    let act = Activation {
        lo: Some(-0.5),
        hi: Some(0.25),
    };
    for kernel in kernels() {
        for (m, n, k) in [
            (1, 1, 1),
            (32, 49, 64),
            (70, 13, 300),
            (100, 196, 513),
            (24, 8, 0),
            (33, 57, 9),
        ] {
            let a = data(m * k, 11);
            let b = data(k * n, 12);
            let ldc = n + 3;
            let mut pb = vec![0f32; packed_b_len(k, n)];
            pack_b(k, n, &b, n, &mut pb);
            for epi in [
                Epilogue::default(),
                Epilogue {
                    bias: Some(&bias),
                    act,
                    residual: None,
                },
            ] {
                let (mut rows, mut cols) = (vec![f32::NAN; m * ldc], vec![f32::NAN; m * ldc]);
                let pa = PackedA::pack(m, k, &a, k);
                let pc = PackedCols::pack(m, k, &a, k);
                // SAFETY: both C buffers hold m rows of ldc >= n floats.
                unsafe {
                    gemm_packed(
                        kernel,
                        &pa,
                        0..pa.panels(),
                        &pb,
                        n,
                        rows.as_mut_ptr(),
                        ldc,
                        &epi,
                    );
                    gemm_cols(
                        kernel,
                        &pc,
                        0..pc.panels(),
                        &pb,
                        n,
                        cols.as_mut_ptr(),
                        ldc,
                        &epi,
                    );
                }
                for i in 0..m {
                    for j in 0..ldc {
                        let (x, y) = (rows[i * ldc + j], cols[i * ldc + j]);
                        assert_eq!(
                            x.to_bits(),
                            y.to_bits(),
                            "{kernel:?} m={m} n={n} k={k} [{i},{j}]: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }
}

/// The FMA kernels (AVX2, AVX-512) compute each element as one fused multiply-add chain in
/// K order from zero, then `+ bias`, then the clamp: the bits of that chain written out with
/// `f32::mul_add`, over edge tiles, several K blocks, both orientations.
#[test]
fn fma_kernels_give_the_bits_of_an_fma_chain() {
    let bias = data(70, 31);
    let act = Activation {
        lo: Some(-0.5),
        hi: Some(0.25),
    };
    let fma_kernels: Vec<Kernel> = kernels()
        .into_iter()
        .filter(|k| *k != Kernel::Portable)
        .collect();
    for kernel in fma_kernels {
        // 53 columns: an edge of 21, whose last 5 run as one 8 x 8 pass on AVX2. 49, 1, 34
        // and 10 columns with 4 or more panels: the last one or two go down the panels
        // (`column_avx2.rs`), over several K blocks, with a partial last panel, 8 + 1 panels.
        for (m, n, k) in [
            (8, 32, 5),
            (70, 45, 600),
            (13, 7, 33),
            (13, 53, 600),
            (70, 49, 600),
            (37, 1, 300),
            (70, 34, 40),
            (29, 10, 5),
        ] {
            let (a, b) = (data(m * k, 32), data(k * n, 33));
            let epi = Epilogue {
                bias: Some(&bias),
                act,
                residual: None,
            };
            let want: Vec<u32> = (0..m * n)
                .map(|ij| {
                    let (i, j) = (ij / n, ij % n);
                    let s = (0..k).fold(0f32, |s, p| a[i * k + p].mul_add(b[p * n + j], s));
                    act.apply(s + bias[i]).to_bits()
                })
                .collect();
            let mut pb = vec![0f32; packed_b_len(k, n)];
            pack_b(k, n, &b, n, &mut pb);
            let (pa, pc) = (PackedA::pack(m, k, &a, k), PackedCols::pack(m, k, &a, k));
            let (mut rows, mut cols) = (vec![0f32; m * n], vec![0f32; m * n]);
            // SAFETY: both C buffers hold m rows of n floats.
            unsafe {
                gemm_packed(
                    kernel,
                    &pa,
                    0..pa.panels(),
                    &pb,
                    n,
                    rows.as_mut_ptr(),
                    n,
                    &epi,
                );
                gemm_cols(
                    kernel,
                    &pc,
                    0..pc.panels(),
                    &pb,
                    n,
                    cols.as_mut_ptr(),
                    n,
                    &epi,
                );
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&rows), want, "{kernel:?} rows m={m} n={n} k={k}");
            assert_eq!(bits(&cols), want, "{kernel:?} cols m={m} n={n} k={k}");
        }
    }
}

/// The matrix-vector product gives `gemm_packed`'s bits for one column: the explicit FMA
/// chain, with and without bias, with a clamp; rows in 1 to 9 groups of panels (the last
/// panel partial), K over several of `gemm_packed`'s blocks.
#[test]
fn gemv_gives_the_bits_of_gemm_packed() {
    let kernel = Kernel::detect();
    if !gemv_available(kernel) {
        return; // The portable kernel keeps gemm_packed.
    }
    let bias = data(600, 41);
    let act = Activation {
        lo: Some(-0.5),
        hi: Some(0.25),
    };
    let mut checked = 0;
    for (m, k) in [
        (1, 1),
        (8, 5),
        (13, 600),
        (48, 1152),
        (70, 33),
        (600, 97),
        (96, 4),
    ] {
        let (a, x) = (data(m * k, 42 + m as u64), data(k, 43 + k as u64));
        let pa = PackedA::pack(m, k, &a, k);
        let mut pb = vec![0f32; packed_b_len(k, 1)];
        pack_b(k, 1, &x, 1, &mut pb);
        for epi in [
            Epilogue::default(),
            Epilogue {
                bias: Some(&bias),
                act,
                residual: None,
            },
        ] {
            let want: Vec<u32> = (0..m)
                .map(|i| {
                    let s = (0..k).fold(0f32, |s, p| a[i * k + p].mul_add(x[p], s));
                    let s = epi.bias.map_or(s, |b| s + b[i]);
                    epi.act.apply(s).to_bits()
                })
                .collect();
            let (mut got, mut gemm) = (vec![f32::NAN; m + 1], vec![f32::NAN; m]);
            // SAFETY: gemv is available; `got` holds m floats (and one more, left as is),
            // `gemm` m rows of one column.
            unsafe {
                gemv_packed(&pa, &x, got.as_mut_ptr(), &epi);
                gemm_packed(
                    kernel,
                    &pa,
                    0..pa.panels(),
                    &pb,
                    1,
                    gemm.as_mut_ptr(),
                    1,
                    &epi,
                );
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got[..m]), want, "m={m} k={k}");
            assert_eq!(bits(&gemm), want, "gemm_packed m={m} k={k}");
            assert!(got[m].is_nan(), "wrote past row m");
            checked += 1;
        }
    }
    assert_eq!(checked, 14);
}

/// `gemm_packed_blocks` run one K block at a time, over panel ranges cut differently in each
/// call, gives `gemm_packed`'s bits (the few-unit conv path runs it so): every kernel, K of
/// one to three blocks, an edge in both dimensions, bias and clamp on the last block only.
#[test]
fn block_by_block_gives_the_bits_of_one_call() {
    let act = Activation {
        lo: Some(-0.5),
        hi: Some(0.25),
    };
    for kernel in kernels() {
        for (m, n, k) in [(70, 49, 600), (13, 196, 256), (24, 5, 513), (9, 40, 7)] {
            let (a, b, bias) = (data(m * k, 40), data(k * n, 41), data(m, 42));
            let epi = Epilogue {
                bias: Some(&bias),
                act,
                residual: None,
            };
            let mut pb = vec![0f32; packed_b_len(k, n)];
            pack_b(k, n, &b, n, &mut pb);
            let pa = PackedA::pack(m, k, &a, k);
            let (mut whole, mut split) = (vec![0f32; m * n], vec![f32::NAN; m * n]);
            let panels = pa.panels();
            // SAFETY: both C buffers hold m rows of n floats; the blocks run in order.
            unsafe {
                gemm_packed(kernel, &pa, 0..panels, &pb, n, whole.as_mut_ptr(), n, &epi);
                for kb in 0..k_blocks(k).count() {
                    let cut = (kb + 1).min(panels);
                    for range in [0..cut, cut..panels] {
                        let c = split.as_mut_ptr();
                        gemm_packed_blocks(kernel, &pa, range, kb..kb + 1, &pb, n, c, n, &epi);
                    }
                }
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&split), bits(&whole), "{kernel:?} m={m} n={n} k={k}");
        }
    }
}

/// A residual in the epilogue gives the bits of the product with bias, then a separate
/// `C + R`, then the clamp (a Conv, an Add and a Relu run one after the other): every
/// kernel (the AVX-512 one in registers, the others by `add_residual`), K of one to three
/// blocks, edges in both dimensions (the AVX2 kernel's single columns: 49 and 17 columns,
/// 9 panels), C and R rows wider than `n`, the panels cut over two calls.
#[test]
fn residual_gives_the_bits_of_a_separate_add() {
    let act = Activation {
        lo: Some(-0.5),
        hi: Some(0.75),
    };
    for kernel in kernels() {
        for (m, n, k) in [
            (70, 49, 600),
            (13, 196, 256),
            (24, 5, 513),
            (9, 40, 7),
            (72, 17, 64),
        ] {
            let (a, b, bias) = (data(m * k, 50), data(k * n, 51), data(m, 52));
            let ldc = n + 3;
            let r = data(m * ldc, 53);
            let mut pb = vec![0f32; packed_b_len(k, n)];
            pack_b(k, n, &b, n, &mut pb);
            let pa = PackedA::pack(m, k, &a, k);
            let panels = pa.panels();
            let plain = Epilogue {
                bias: Some(&bias),
                residual: None,
                act: Activation::NONE,
            };
            let fused = Epilogue {
                residual: Some(&r),
                act,
                ..plain
            };
            let (mut want, mut got) = (vec![f32::NAN; m * ldc], vec![f32::NAN; m * ldc]);
            let cut = panels / 2;
            // SAFETY: both C buffers hold m rows of ldc floats, R as many.
            unsafe {
                gemm_packed(
                    kernel,
                    &pa,
                    0..panels,
                    &pb,
                    n,
                    want.as_mut_ptr(),
                    ldc,
                    &plain,
                );
                for range in [0..cut, cut..panels] {
                    gemm_packed(kernel, &pa, range, &pb, n, got.as_mut_ptr(), ldc, &fused);
                }
            }
            for i in 0..m {
                for j in 0..n {
                    let at = i * ldc + j;
                    want[at] = act.apply(want[at] + r[at]);
                }
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{kernel:?} m={m} n={n} k={k}");
        }
    }
}
