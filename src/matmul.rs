//! x Wᵀ for a few rows of x against a whole weight matrix W: the product
//! of a decode step, where each sequence contributes one row. gemm would
//! repack all of W for those few rows at every step; here each task reads
//! its rows of W once, for every row of x, and the step is bound by
//! reading the weights. Both decoders use it: the pretrained model's frozen
//! matmul ([`crate::pretrained`]) and the from-scratch transformer's
//! graph-free decode step ([`crate::policy::transformer::decode`]).

use rayon::prelude::*;

/// Below this many multiply-adds a product runs on one thread.
const PARALLEL_MIN: usize = 1 << 20;

/// y = x Wᵀ for x [m, k] and W [n, k], both row-major.
///
/// Every y[i, j] is the one dot product of [`dot`], whatever m, the
/// blocking, the thread count or the instruction set: so a row's result
/// does not depend on which rows share the batch, and the bytes do not
/// depend on the machine's load.
///
/// The work is split over weight rows (each task reads its rows of W
/// once, for all m rows of x; the step is bound by reading the weights).
/// With AVX-512, tiles of 4 weight rows × 4 x rows keep 16 accumulators in
/// registers: 8 loads per 16 multiply-adds, where one dot product at a
/// time needs 2 per 1.
pub(crate) fn few_rows(x: &[f32], w: &[f32], k: usize) -> Vec<f32> {
    let (m, n) = (x.len() / k, w.len() / k);
    if m == 0 || n == 0 {
        return Vec::new();
    }
    // y transposed, [n, m]: each task's weight rows own a contiguous part.
    let mut yt = vec![0f32; n * m];
    let per_task = if m * n * k >= PARALLEL_MIN {
        let tasks = 4 * rayon::current_num_threads().max(1);
        n.div_ceil(tasks).next_multiple_of(4)
    } else {
        n
    };
    yt.par_chunks_mut(per_task * m)
        .zip(w.par_chunks(per_task * k))
        .for_each(|(out, w)| rows_dispatch(x, w, k, out));
    let mut y = vec![0f32; m * n];
    for (j, col) in yt.chunks_exact(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            y[i * n + j] = v;
        }
    }
    y
}

/// x · w in the order every path keeps: 16 partial sums over k in steps
/// of 16 (fused multiply-adds), added as a tree (lane l + lane l+8, then
/// +4, +2, +1: what an AVX-512 register's halves give), then the tail of
/// k one fused multiply-add at a time.
#[inline(always)]
fn dot(x: &[f32], w: &[f32]) -> f32 {
    let kc = x.len() - x.len() % 16;
    let mut acc = [0f32; 16];
    for (a, b) in w[..kc].chunks_exact(16).zip(x[..kc].chunks_exact(16)) {
        for l in 0..16 {
            acc[l] = a[l].mul_add(b[l], acc[l]);
        }
    }
    finish(acc, &x[kc..], &w[kc..])
}

/// The tree sum of 16 partial sums, then the tail of k (see [`dot`]).
#[inline(always)]
fn finish(acc: [f32; 16], x_tail: &[f32], w_tail: &[f32]) -> f32 {
    let h8: [f32; 8] = std::array::from_fn(|l| acc[l] + acc[l + 8]);
    let h4: [f32; 4] = std::array::from_fn(|l| h8[l] + h8[l + 4]);
    let mut s = (h4[0] + h4[2]) + (h4[1] + h4[3]);
    for (a, b) in w_tail.iter().zip(x_tail) {
        s = a.mul_add(*b, s);
    }
    s
}

/// out[j·m + i] = x_i · w_j (out is yᵀ) at the widest vector width the
/// CPU has.
fn rows_dispatch(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked just above.
        unsafe { avx512::rows(x, w, k, out) };
        return;
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        unsafe { rows_avx2(x, w, k, out) };
        return;
    }
    rows_into(x, w, k, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    rows_into(x, w, k, out);
}

/// One dot product at a time (the compiler vectorises [`dot`] at the
/// enclosing function's width).
#[inline(always)]
fn rows_into(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    let m = x.len() / k;
    for (j, wr) in w.chunks_exact(k).enumerate() {
        for (i, xr) in x.chunks_exact(k).enumerate() {
            out[j * m + i] = dot(xr, wr);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    /// [`super::rows_into`] in tiles of up to 4 weight rows × 4 x rows.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
        let (m, n) = (x.len() / k, w.len() / k);
        let mut j = 0;
        while j < n {
            let r = if n - j >= 4 { 4 } else { 1 };
            let mut i = 0;
            while i < m {
                let c = if m - i >= 4 { 4 } else { 1 };
                let (ws, xs) = (&w[j * k..(j + r) * k], &x[i * k..(i + c) * k]);
                // SAFETY: AVX-512F (this function's contract); ws and xs
                // hold r and c rows of k.
                unsafe {
                    match (r, c) {
                        (4, 4) => tile::<4, 4>(ws, xs, k, out, (j, i, m)),
                        (4, _) => tile::<4, 1>(ws, xs, k, out, (j, i, m)),
                        (_, 4) => tile::<1, 4>(ws, xs, k, out, (j, i, m)),
                        _ => tile::<1, 1>(ws, xs, k, out, (j, i, m)),
                    }
                }
                i += c;
            }
            j += r;
        }
    }

    /// The R × C dot products of ws's rows with xs's rows into
    /// out[(j0 + r)·m + i0 + c], each in [`super::dot`]'s order.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize, const C: usize>(
        ws: &[f32],
        xs: &[f32],
        k: usize,
        out: &mut [f32],
        (j0, i0, m): (usize, usize, usize),
    ) {
        debug_assert!(ws.len() >= R * k && xs.len() >= C * k);
        let kc = k - k % 16;
        let mut acc: [[__m512; C]; R] = [[_mm512_setzero_ps(); C]; R];
        let (wp, xp) = (ws.as_ptr(), xs.as_ptr());
        let mut o = 0;
        while o < kc {
            // SAFETY: o + 16 ≤ kc ≤ k, so every load is inside its row.
            unsafe {
                let wv: [__m512; R] = std::array::from_fn(|r| _mm512_loadu_ps(wp.add(r * k + o)));
                let xv: [__m512; C] = std::array::from_fn(|c| _mm512_loadu_ps(xp.add(c * k + o)));
                for r in 0..R {
                    for c in 0..C {
                        acc[r][c] = _mm512_fmadd_ps(wv[r], xv[c], acc[r][c]);
                    }
                }
            }
            o += 16;
        }
        for r in 0..R {
            for c in 0..C {
                let mut lanes = [0f32; 16];
                // SAFETY: lanes holds 16 f32.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc[r][c]) };
                out[(j0 + r) * m + i0 + c] = super::finish(
                    lanes,
                    &xs[c * k + kc..(c + 1) * k],
                    &ws[r * k + kc..(r + 1) * k],
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rates of the kernel on the decode shapes (`cargo test --release
    /// few_rows_rate -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn few_rows_rate() {
        for &(m, n, k) in &[
            (32, 49152, 576),
            (32, 1536, 576),
            (32, 576, 1536),
            (8, 576, 576),
        ] {
            let x = vec![0.5f32; m * k];
            let w = vec![0.25f32; n * k];
            let t = std::time::Instant::now();
            let reps = 20;
            for _ in 0..reps {
                std::hint::black_box(few_rows(&x, &w, k));
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "m {m} n {n} k {k}: {:.2} ms, {:.1} GFLOP/s",
                s * 1e3,
                2.0 * (m * n * k) as f64 / s / 1e9
            );
        }
    }

    /// Every tile shape, remainder and the threaded split give each y[i, j]
    /// bit for bit the one dot product of the docs, whatever m; and that
    /// product is x Wᵀ to f32 round-off (against f64).
    #[test]
    fn every_tile_and_split_gives_the_same_dot_products() {
        use rand::RngExt;
        let mut rng = crate::rng::stream(11, 0);
        for &(m, n, k) in &[
            (1, 1, 5),
            (3, 7, 16),
            (5, 9, 37),
            (32, 203, 576),
            (6, 1031, 1040),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let y = few_rows(&x, &w, k);
            // The paths this CPU does not dispatch to give the same bits:
            // the portable loop and, where the CPU has them, AVX2 + FMA.
            let mut portable = vec![0f32; m * n];
            rows_into(&x, &w, k, &mut portable);
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                let mut wide = vec![0f32; m * n];
                // SAFETY: the CPU has AVX2 and FMA, checked just above.
                unsafe { rows_avx2(&x, &w, k, &mut wide) };
                assert_eq!(wide, portable, "AVX2 path, m {m} n {n} k {k}");
            }
            for i in 0..m {
                let xi = &x[i * k..(i + 1) * k];
                let alone = few_rows(xi, &w, k);
                for j in 0..n {
                    let wj = &w[j * k..(j + 1) * k];
                    let want = dot(xi, wj);
                    assert_eq!(
                        y[i * n + j].to_bits(),
                        want.to_bits(),
                        "m {m} n {n} k {k} ({i}, {j})"
                    );
                    assert_eq!(alone[j].to_bits(), want.to_bits(), "row {i} alone");
                    assert_eq!(
                        portable[j * m + i].to_bits(),
                        want.to_bits(),
                        "portable path"
                    );
                    let exact: f64 = xi
                        .iter()
                        .zip(wj)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    let scale: f64 = xi
                        .iter()
                        .zip(wj)
                        .map(|(&a, &b)| f64::from(a * b).abs())
                        .sum();
                    assert!(
                        (f64::from(want) - exact).abs() <= 1e-6 * scale.max(1.0),
                        "{want} vs {exact}"
                    );
                }
            }
        }
    }
}
