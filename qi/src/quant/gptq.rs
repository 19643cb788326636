//! GPTQ, faithful to the reference implementation (IST-DASLab/gptq, `gptq.py`, `GPTQ.add_batch`
//! and `GPTQ.fasterquant`), on one weight matrix `W` `[rows = out, cols = in]` and its Hessian
//! `H` `[in, in]`.
//!
//! [`gptq_quantize`] does, in this order (names as in the reference):
//! 1. per-row grid (`find_params(W)`, [`grid`](super::grid)) from the original `W` — also when
//!    groups are used, where it is replaced at the first column anyway;
//! 2. dead inputs: `H_ii == 0` → `H_ii = 1`, `W[:, i] = 0`;
//! 3. `static_groups`: one grid per group of `group` columns, from `W` after step 2;
//! 4. `act_order`: columns permuted by descending `diag(H)` (ties keep index order: a stable sort;
//!    the reference's `torch.argsort` does not promise an order for ties), undone at the end;
//! 5. damping: `percdamp · mean(diag(H))` added to the diagonal;
//! 6. `Hinv` = upper Cholesky factor of `H⁻¹` (the reference's cholesky → cholesky_inverse →
//!    cholesky(upper)); computed here, equivalently, as `J·L⁻¹·J` with `L` the Cholesky factor of
//!    `J·H·J` (`J` reverses the order) — the same unique factor with half the work;
//! 7. columns in lazy blocks of `block`: for column `i`, with `d = Hinv[i, i]`,
//!    `q = quantize(w)`, `Losses[:, i] = (w - q)² / d² / 2`, `err = (w - q) / d`,
//!    `W1[:, i:] -= err ⊗ Hinv[i, i:]` inside the block, and after the block
//!    `W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]`;
//! 8. groups without `static_groups`: at every column `i` with `i % group == 0` the grid is
//!    recomputed from `W[:, i : i + group]`. As in the reference this reads the full `W`, whose
//!    columns inside the current lazy block have not yet received the updates from the earlier
//!    columns of that block (those live in the block copy `W1`); this matters when `group` is
//!    smaller than `block` and is reproduced on purpose. With `static_groups` the grid of column
//!    `i` is the precomputed one of group `perm[i] / group` (original column index).
//!
//! Precision: the reference runs in float32 (on GPU). Here everything after reading `W` and `H`
//! runs in f64, which keeps the algorithm identical while making results reproducible to ~1e-12:
//! float32 implementations (the reference on different hardware, or torch CPU) can differ from
//! each other by rounding flips near .5 boundaries, which then propagate along the row. The fixture test
//! compares with an f64 run of the reference algorithm (`scripts/gptq_reference.py`).
//! The grid arithmetic is the same code as RTN's, in f64.
//!
//! Speed: the Cholesky factorization and the triangular inverse are blocked, with their bulk in
//! in-place products of the `gemm` crate (candle's own matmul backend); the column loop runs the
//! rows in parallel (rows are independent given `Hinv`) and uses a second level of lazy batching
//! (sub-blocks of 16 columns) inside each block. Only the floating-point summation order differs
//! from the reference's formulas. `scripts/bench_gptq.py` and the ignored test
//! `quant_gptq_bench` time the same 576×1536 layer against the PyTorch reference.
use super::grid::{GridParams, UniformGrid};
use super::spec::GptqSpec;
use super::Matrix;
use crate::QiError;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};

/// Matrix-level GPTQ options (the calibration options of [`GptqSpec`] are model-level).
#[derive(Debug, Clone, PartialEq)]
pub struct GptqOptions {
    /// 2..=8.
    pub bits: u8,
    /// Columns per group; `None` = one grid per row (`--groupsize -1`).
    pub group: Option<usize>,
    /// Symmetric grid (`--sym`); default false.
    pub sym: bool,
    /// Process columns by descending Hessian diagonal (`--act-order`); default false.
    pub act_order: bool,
    /// Precompute group grids from the original weights (`--static-groups`); needs `group`.
    pub static_groups: bool,
    /// `percdamp`, default 0.01.
    pub damp: f64,
    /// Lazy-batch block size, default 128.
    pub block: usize,
}

impl GptqOptions {
    /// The reference defaults with `bits`: per-row, asymmetric, no act-order, damp 0.01, block 128.
    pub fn new(bits: u8) -> Self {
        GptqOptions { bits, group: None, sym: false, act_order: false, static_groups: false, damp: 0.01, block: 128 }
    }
}

impl From<&GptqSpec> for GptqOptions {
    fn from(s: &GptqSpec) -> Self {
        GptqOptions {
            bits: s.bits,
            group: s.group,
            sym: s.sym,
            act_order: s.act_order,
            static_groups: s.static_groups,
            damp: s.damp,
            block: s.block,
        }
    }
}

/// Result of [`gptq_quantize`].
#[derive(Debug, Clone)]
pub struct GptqOutput {
    /// Dequantized weight `[out, in]`, f32, in the original column order.
    pub weight: Tensor,
    /// `sum(Losses)` as the reference prints it ("error").
    pub loss: f64,
    /// The act-order permutation (`perm[k]` = original column processed k-th), if used.
    pub perm: Option<Vec<usize>>,
}

/// Accumulates `H = 2/N · Σ XᵀX` over calibration inputs with the reference's running update
/// (`add_batch`), in f32 like the reference.
#[derive(Debug, Clone)]
pub struct HessianAccumulator {
    columns: usize,
    h: Vec<f32>,
    nsamples: usize,
}

impl HessianAccumulator {
    pub fn new(in_features: usize) -> Self {
        HessianAccumulator { columns: in_features, h: vec![0.0; in_features * in_features], nsamples: 0 }
    }

    /// Adds layer inputs: `[n, in]` counts as one sample (the reference unsqueezes a 2-D input to a
    /// batch of one), `[b, t, in]` as `b` samples. Update, as the reference:
    /// `H *= N/(N+b); N += b; x = sqrt(2/N)·x; H += xᵀx` (x flattened to rows of `in`).
    pub fn add_batch(&mut self, x: &Tensor) -> Result<()> {
        let (tmp, rows) = match x.dims() {
            [n, c] if *c == self.columns => (1usize, *n),
            [b, t, c] if *c == self.columns => (*b, b * t),
            d => {
                return Err(QiError::invalid(
                    "calibration input",
                    format!("shape {d:?}"),
                    format!("expected [n, {c}] or [batch, seq, {c}]", c = self.columns),
                )
                .into())
            }
        };
        if tmp == 0 || rows == 0 {
            return Ok(());
        }
        let x = x.to_dtype(DType::F32)?.reshape((rows, self.columns))?.to_device(&Device::Cpu)?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        super::check_finite(&xv, self.columns, "calibration input")?;
        let decay = (self.nsamples as f64 / (self.nsamples + tmp) as f64) as f32;
        self.nsamples += tmp;
        let s = (2.0 / self.nsamples as f64).sqrt() as f32;
        Ok(crate::fused::gram_update(&mut self.h, &x, s, decay)?)
    }

    /// Samples counted so far (`nsamples`).
    pub fn nsamples(&self) -> usize {
        self.nsamples
    }

    /// `H` `[in, in]`, f32.
    pub fn hessian(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.h, (self.columns, self.columns), &Device::Cpu)?)
    }

    /// `H` `[in, in]` as the f64 matrix GPTQ works on, consuming the accumulator so that the f32
    /// copy is freed first (for an 8,960-wide input that is 0.32 GB, next to 0.64 GB of f64).
    fn into_f64(self, what: &str) -> Result<(Vec<f64>, usize)> {
        super::check_finite(&self.h, self.columns, what)?;
        let n = self.columns;
        Ok((self.h.into_iter().map(f64::from).collect(), n))
    }
}

/// GPTQ of `w` `[out, in]` given the Hessian `h` `[in, in]`. `name` (may be empty) names the layer
/// in errors.
pub fn gptq_quantize(w: &Tensor, h: &Tensor, opts: &GptqOptions, name: &str) -> Result<GptqOutput> {
    let layer = layer_label(name);
    let hm = Matrix::read(h, &format!("Hessian{layer}"))?;
    let n = hm.cols;
    if hm.rows != n {
        return Err(QiError::invalid(format!("Hessian{layer}"), format!("shape [{}, {n}]", hm.rows), "expected a square [in_features, in_features] matrix").into());
    }
    let hv: Vec<f64> = hm.data.into_iter().map(f64::from).collect();
    gptq_quantize_f64(w, hv, n, opts, &layer)
}

/// [`gptq_quantize`] with the Hessian taken from `acc`, which is consumed: the whole-model loop
/// uses this so that no f32 copy of `H` lives next to GPTQ's f64 working matrices. Same result,
/// bit for bit.
pub fn gptq_quantize_accumulated(w: &Tensor, acc: HessianAccumulator, opts: &GptqOptions, name: &str) -> Result<GptqOutput> {
    let layer = layer_label(name);
    let (hv, n) = acc.into_f64(&format!("Hessian{layer}"))?;
    gptq_quantize_f64(w, hv, n, opts, &layer)
}

fn layer_label(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!(" of layer '{name}'")
    }
}

/// The algorithm, on the Hessian `hv` (`[n, n]` row-major f64, consumed and reused in place).
fn gptq_quantize_f64(w: &Tensor, mut hv: Vec<f64>, n: usize, opts: &GptqOptions, layer: &str) -> Result<GptqOutput> {
    let grid = UniformGrid::new(opts.bits, opts.sym)?;
    if opts.block == 0 {
        return Err(QiError::invalid("block", 0, "the lazy-batch block size must be >= 1").into());
    }
    if !(opts.damp.is_finite() && opts.damp >= 0.0) {
        return Err(QiError::invalid("damp", opts.damp, "expected a finite non-negative fraction").into());
    }
    if opts.group == Some(0) {
        return Err(QiError::invalid("group", 0, "the group size must be >= 1").into());
    }
    if opts.static_groups && opts.group.is_none() {
        return Err(QiError::invalid("static_groups", true, "static_groups needs a group size").into());
    }
    let wm = Matrix::read(w, &format!("weight{layer}"))?;
    let (rows, cols) = (wm.rows, wm.cols);
    if n != cols {
        return Err(QiError::invalid(
            format!("Hessian{layer}"),
            format!("shape [{n}, {n}]"),
            format!("expected [in_features, in_features] = [{cols}, {cols}] for a weight of shape [{rows}, {cols}]"),
        )
        .into());
    }
    let mut wv: Vec<f64> = wm.data.iter().map(|&x| x as f64).collect();

    // 1. per-row grid from the original W
    let mut params: Vec<GridParams<f64>> =
        (0..rows).map(|r| grid.params(wv[r * cols..(r + 1) * cols].iter().copied())).collect();

    // 2. dead columns
    for i in 0..cols {
        if hv[i * cols + i] == 0.0 {
            hv[i * cols + i] = 1.0;
            for r in 0..rows {
                wv[r * cols + i] = 0.0;
            }
        }
    }

    // 3. static groups (original column order)
    let static_params: Option<Vec<Vec<GridParams<f64>>>> = match (opts.static_groups, opts.group) {
        (true, Some(g)) => Some(
            (0..cols)
                .step_by(g)
                .map(|c0| {
                    let c1 = (c0 + g).min(cols);
                    (0..rows).map(|r| grid.params(wv[r * cols + c0..r * cols + c1].iter().copied())).collect()
                })
                .collect(),
        ),
        _ => None,
    };

    // 4. act order
    let perm: Option<Vec<usize>> = if opts.act_order {
        let mut p: Vec<usize> = (0..cols).collect();
        p.sort_by(|&a, &b| hv[b * cols + b].total_cmp(&hv[a * cols + a]));
        let mut w2 = vec![0.0; rows * cols];
        for r in 0..rows {
            for (k, &c) in p.iter().enumerate() {
                w2[r * cols + k] = wv[r * cols + c];
            }
        }
        wv = w2;
        permute_symmetric(&mut hv, cols, &p);
        Some(p)
    } else {
        None
    };

    // 5. damping
    let damp = opts.damp * (0..cols).map(|i| hv[i * cols + i]).sum::<f64>() / cols as f64;
    for i in 0..cols {
        hv[i * cols + i] += damp;
    }

    // 6. Hinv = upper Cholesky of H^-1
    let hinv = upper_cholesky_of_inverse(hv, cols).map_err(|k| {
        anyhow::Error::from(QiError::invalid(
            format!("Hessian{layer}"),
            format!("[{cols}, {cols}]"),
            format!(
                "not positive definite even after damping (damp = {} · mean diagonal = {damp:e}); Cholesky failed at pivot {k}; \
                 use more calibration data or a larger damp",
                opts.damp
            ),
        ))
    })?;

    // 7./8. the column loop in lazy blocks. Rows are independent given Hinv, so each lazy block
    // is processed by a few threads over disjoint row ranges; the block's trailing update is one
    // in-place product.
    let mut q = vec![0f64; rows * cols];
    let mut row_loss = vec![0f64; rows];
    let bs = opts.block;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(rows);
    let chunk = rows.div_ceil(threads);
    let ctx = BlockCtx { grid: &grid, cols, group: opts.group, static_params: static_params.as_deref(), perm: perm.as_deref(), hinv: &hinv };
    let mut w1 = vec![0f64; rows * bs.min(cols)];
    let mut err1 = vec![0f64; rows * bs.min(cols)];
    let mut i1 = 0;
    while i1 < cols {
        let i2 = (i1 + bs).min(cols);
        let cb = i2 - i1;
        let (w1, err1) = (&mut w1[..rows * cb], &mut err1[..rows * cb]);
        for r in 0..rows {
            w1[r * cb..(r + 1) * cb].copy_from_slice(&wv[r * cols + i1..r * cols + i2]);
        }
        let wv_ref = &wv;
        std::thread::scope(|sc| {
            let parts = w1
                .chunks_mut(chunk * cb)
                .zip(err1.chunks_mut(chunk * cb))
                .zip(q.chunks_mut(chunk * cols))
                .zip(params.chunks_mut(chunk))
                .zip(row_loss.chunks_mut(chunk))
                .enumerate();
            for (k, ((((w1c, e1c), qc), pc), lc)) in parts {
                let ctx = &ctx;
                sc.spawn(move || ctx.run_block(wv_ref, k * chunk, i1, i2, w1c, e1c, qc, pc, lc));
            }
        });
        if i2 < cols {
            // W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
            // SAFETY: the three views lie inside their buffers (rows·cols, rows·cb, cols·cols).
            unsafe {
                gemm_f64(
                    rows,
                    cols - i2,
                    cb,
                    wv.as_mut_ptr().add(i2),
                    cols,
                    true,
                    err1.as_ptr(),
                    cb as isize,
                    1,
                    hinv.as_ptr().add(i1 * cols + i2),
                    cols as isize,
                    1,
                    -1.0,
                    true,
                );
            }
        }
        i1 = i2;
    }
    let loss: f64 = row_loss.iter().sum();

    // undo act order
    let out: Vec<f32> = match &perm {
        None => q.iter().map(|&x| x as f32).collect(),
        Some(p) => {
            let mut o = vec![0f32; rows * cols];
            for r in 0..rows {
                for (k, &c) in p.iter().enumerate() {
                    o[r * cols + c] = q[r * cols + k] as f32;
                }
            }
            o
        }
    };
    Ok(GptqOutput { weight: wm.tensor_like(out)?, loss, perm })
}

/// `h[a][b] <- h[p[a]][p[b]]` for the row-major `n×n` `h`, in place (one row of scratch instead
/// of a second `n×n` matrix: 0.64 GB for an 8,960-wide input).
fn permute_symmetric(h: &mut [f64], n: usize, p: &[usize]) {
    // Rows, by the cycles of p: row a takes the old row p[a].
    let mut done = vec![false; n];
    let mut tmp = vec![0f64; n];
    for s in 0..n {
        if done[s] {
            continue;
        }
        tmp.copy_from_slice(&h[s * n..(s + 1) * n]);
        let mut a = s;
        loop {
            done[a] = true;
            let next = p[a];
            if next == s {
                h[a * n..(a + 1) * n].copy_from_slice(&tmp);
                break;
            }
            h.copy_within(next * n..(next + 1) * n, a * n);
            a = next;
        }
    }
    // Then the columns of every row.
    for row in h.chunks_mut(n) {
        for (t, &pb) in tmp.iter_mut().zip(p) {
            *t = row[pb];
        }
        row.copy_from_slice(&tmp);
    }
}

/// What every row-range worker of a lazy block needs.
struct BlockCtx<'a> {
    grid: &'a UniformGrid,
    cols: usize,
    group: Option<usize>,
    static_params: Option<&'a [Vec<GridParams<f64>>]>,
    perm: Option<&'a [usize]>,
    hinv: &'a [f64],
}

impl BlockCtx<'_> {
    /// Columns `i1..i2` for the rows `r0..` held in the chunks (`w1`, `err1`: `[n, i2-i1]`,
    /// `q`: `[n, cols]`, `params`/`loss`: `[n]`).
    #[allow(clippy::too_many_arguments)]
    fn run_block(
        &self,
        wv: &[f64],
        r0: usize,
        i1: usize,
        i2: usize,
        w1: &mut [f64],
        err1: &mut [f64],
        q: &mut [f64],
        params: &mut [GridParams<f64>],
        loss: &mut [f64],
    ) {
        let (cols, cb) = (self.cols, i2 - i1);
        // Columns in sub-blocks of SUB: rank-1 updates stay inside the sub-block, the rest of the
        // block gets one small product per sub-block (the same lazy-batch idea one level down).
        let mut s1 = 0;
        while s1 < cb {
            let s2 = (s1 + SUB).min(cb);
            for i in s1..s2 {
                let col = i1 + i;
                if let Some(g) = self.group {
                    match self.static_params {
                        None => {
                            if col % g == 0 {
                                // from the full W (stale inside this block), as the reference
                                let c1 = (col + g).min(cols);
                                for (k, p) in params.iter_mut().enumerate() {
                                    let r = r0 + k;
                                    *p = self.grid.params(wv[r * cols + col..r * cols + c1].iter().copied());
                                }
                            }
                        }
                        Some(sp) => {
                            let idx = self.perm.map_or(col, |p| p[col]);
                            params.copy_from_slice(&sp[idx / g][r0..r0 + params.len()]);
                        }
                    }
                }
                let hrow = &self.hinv[col * cols + i1 + i..col * cols + i1 + s2];
                let d = hrow[0];
                for (k, row) in w1.chunks_mut(cb).enumerate() {
                    let x = row[i];
                    let qx = self.grid.quantize(x, &params[k]);
                    q[k * cols + col] = qx;
                    let e = (x - qx) / d;
                    loss[k] += e * e / 2.0;
                    err1[k * cb + i] = e;
                    for (wj, hj) in row[i + 1..s2].iter_mut().zip(&hrow[1..]) {
                        *wj -= e * hj;
                    }
                }
            }
            if s2 < cb {
                let n = w1.len() / cb;
                // W1[:, s2..] -= Err1[:, s1..s2] @ Hinv[i1+s1..i1+s2, i1+s2..i2]
                // SAFETY: views inside w1 (n·cb), err1 (n·cb) and hinv (cols·cols); w1 ≠ err1.
                unsafe {
                    gemm_f64(
                        n,
                        cb - s2,
                        s2 - s1,
                        w1.as_mut_ptr().add(s2),
                        cb,
                        true,
                        err1.as_ptr().add(s1),
                        cb as isize,
                        1,
                        self.hinv.as_ptr().add((i1 + s1) * cols + i1 + s2),
                        cols as isize,
                        1,
                        -1.0,
                        false,
                    );
                }
            }
            s1 = s2;
        }
    }
}

/// Sub-block width inside a lazy block.
const SUB: usize = 16;

/// `dst[m×n] (+)= beta · lhs[m×k] · rhs[k×n]` on strided f64 views (`dst` row-major with row
/// stride `ldd`; `lhs`/`rhs` with the given row and column strides), through the gemm crate.
///
/// # Safety
/// Every addressed element must lie inside its allocation, and `dst` must not overlap `lhs`/`rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_f64(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f64,
    ldd: usize,
    accumulate: bool,
    lhs: *const f64,
    l_rs: isize,
    l_cs: isize,
    rhs: *const f64,
    r_rs: isize,
    r_cs: isize,
    beta: f64,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        ldd as isize,
        accumulate,
        lhs,
        l_cs,
        l_rs,
        rhs,
        r_cs,
        r_rs,
        1.0,
        beta,
        false,
        false,
        false,
        if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None },
    );
}

fn extract(a: &[f64], lda: usize, r0: usize, r1: usize, c0: usize, c1: usize) -> Vec<f64> {
    let w = c1 - c0;
    let mut out = Vec::with_capacity((r1 - r0) * w);
    for r in r0..r1 {
        out.extend_from_slice(&a[r * lda + c0..r * lda + c1]);
    }
    out
}

/// Unblocked lower Cholesky of the `n×n` row-major `d` in place (upper part left untouched).
/// `Err(j)`: pivot `j` not positive.
fn chol_small(d: &mut [f64], n: usize) -> std::result::Result<(), usize> {
    for j in 0..n {
        let rowj = &mut d[j * n..(j + 1) * n];
        let s = rowj[j] - rowj[..j].iter().map(|x| x * x).sum::<f64>();
        if !(s > 0.0 && s.is_finite()) {
            return Err(j);
        }
        let djj = s.sqrt();
        rowj[j] = djj;
        let rowj: Vec<f64> = rowj[..j].to_vec();
        for i in j + 1..n {
            let rowi = &mut d[i * n..(i + 1) * n];
            let dot: f64 = rowi[..j].iter().zip(&rowj).map(|(a, b)| a * b).sum();
            rowi[j] = (rowi[j] - dot) / djj;
        }
    }
    Ok(())
}

/// Inverse of the lower-triangular `n×n` row-major `l` (only its lower part is read).
fn tri_inv_small(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0f64; n * n];
    for j in 0..n {
        x[j * n + j] = 1.0 / l[j * n + j];
        for i in j + 1..n {
            let mut s = 0.0;
            for m in j..i {
                s += l[i * n + m] * x[m * n + j];
            }
            x[i * n + j] = -s / l[i * n + i];
        }
    }
    x
}

const NB: usize = 128;

/// Blocked right-looking lower Cholesky of the row-major `n×n` `a` in place. Reads only the lower
/// triangle; leaves the strict upper triangle unspecified. `Err(k)`: pivot `k` not positive.
fn cholesky_lower(a: &mut [f64], n: usize) -> std::result::Result<(), usize> {
    assert_eq!(a.len(), n * n);
    let mut k0 = 0;
    while k0 < n {
        let k1 = (k0 + NB).min(n);
        let kb = k1 - k0;
        let mut d = extract(a, n, k0, k1, k0, k1);
        chol_small(&mut d, kb).map_err(|j| k0 + j)?;
        for i in 0..kb {
            a[(k0 + i) * n + k0..(k0 + i) * n + k0 + i + 1].copy_from_slice(&d[i * kb..i * kb + i + 1]);
        }
        if k1 < n {
            let m = n - k1;
            let dinv = tri_inv_small(&d, kb);
            // panel = A[k1.., k0..k1] · L_kk^-T
            let mut p = vec![0f64; m * kb];
            // SAFETY: lhs is rows k1..n, columns k0..k1 of a; rhs is dinvᵀ (kb×kb); p is m×kb.
            unsafe {
                gemm_f64(m, kb, kb, p.as_mut_ptr(), kb, false, a.as_ptr().add(k1 * n + k0), n as isize, 1, dinv.as_ptr(), 1, kb as isize, 1.0, true);
            }
            for i in 0..m {
                a[(k1 + i) * n + k0..(k1 + i) * n + k1].copy_from_slice(&p[i * kb..(i + 1) * kb]);
            }
            // trailing lower part -= panel · panelᵀ, one block row at a time (columns k1..k1+r1)
            let mut r0 = 0;
            while r0 < m {
                let r1 = (r0 + NB).min(m);
                // SAFETY: dst rows k1+r0..k1+r1, columns k1..k1+r1 of a; lhs/rhs read p.
                unsafe {
                    gemm_f64(
                        r1 - r0,
                        r1,
                        kb,
                        a.as_mut_ptr().add((k1 + r0) * n + k1),
                        n,
                        true,
                        p.as_ptr().add(r0 * kb),
                        kb as isize,
                        1,
                        p.as_ptr(),
                        1,
                        kb as isize,
                        -1.0,
                        true,
                    );
                }
                r0 = r1;
            }
        }
        k0 = k1;
    }
    Ok(())
}

/// Blocked inverse of the lower-triangular row-major `l` (lower part read); skips the zero
/// blocks of the triangular factors.
fn tri_inv_lower(l: &[f64], n: usize) -> Vec<f64> {
    assert_eq!(l.len(), n * n);
    let mut x = vec![0f64; n * n];
    let mut i0 = 0;
    while i0 < n {
        let i1 = (i0 + NB).min(n);
        let ib = i1 - i0;
        let lii = extract(l, n, i0, i1, i0, i1);
        let xii = tri_inv_small(&lii, ib);
        for r in 0..ib {
            x[(i0 + r) * n + i0..(i0 + r) * n + i1].copy_from_slice(&xii[r * ib..(r + 1) * ib]);
        }
        if i0 > 0 {
            // T = L[i, :i] · X[:i, :i], by column blocks j: only rows >= j0 of X are non-zero.
            let mut t = vec![0f64; ib * i0];
            let mut j0 = 0;
            while j0 < i0 {
                let j1 = (j0 + NB).min(i0);
                // SAFETY: dst t[:, j0..j1]; lhs l rows i0..i1, cols j0..i0; rhs x rows j0..i0, cols j0..j1.
                unsafe {
                    gemm_f64(
                        ib,
                        j1 - j0,
                        i0 - j0,
                        t.as_mut_ptr().add(j0),
                        i0,
                        false,
                        l.as_ptr().add(i0 * n + j0),
                        n as isize,
                        1,
                        x.as_ptr().add(j0 * n + j0),
                        n as isize,
                        1,
                        1.0,
                        true,
                    );
                }
                j0 = j1;
            }
            // X[i, :i] = -X_ii · T
            // SAFETY: dst x rows i0..i1, cols 0..i0; lhs xii (ib×ib); rhs t (ib×i0).
            unsafe {
                gemm_f64(ib, i0, ib, x.as_mut_ptr().add(i0 * n), n, false, xii.as_ptr(), ib as isize, 1, t.as_ptr(), i0 as isize, 1, -1.0, true);
            }
        }
        i0 = i1;
    }
    x
}

/// The upper-triangular `U` with positive diagonal and `Uᵀ U = H⁻¹`, for symmetric positive
/// definite `h` (consumed). `Err(k)`: `H` is not positive definite (pivot `k`, in the original
/// column order).
fn upper_cholesky_of_inverse(mut h: Vec<f64>, n: usize) -> std::result::Result<Vec<f64>, usize> {
    // A = J H J (reverse rows and columns) in place: element (i, j) <- (n-1-i, n-1-j).
    h.reverse();
    cholesky_lower(&mut h, n).map_err(|k| n - 1 - k)?;
    let linv = tri_inv_lower(&h, n);
    // U = J L⁻¹ J
    let mut u = linv;
    u.reverse();
    // L⁻¹ has an exactly zero upper triangle, so U's strict lower triangle is zero.
    Ok(u)
}

/// Reference-faithful helper for tests: `U` by the reference's three steps (dense, unblocked).
#[cfg(test)]
fn upper_cholesky_of_inverse_naive(h: &[f64], n: usize) -> Vec<f64> {
    // L L^T = H
    let mut l = h.to_vec();
    chol_small(&mut l, n).unwrap();
    for i in 0..n {
        for j in i + 1..n {
            l[i * n + j] = 0.0;
        }
    }
    let li = tri_inv_small(&l, n);
    // Hinv = Li^T Li
    let mut hi = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            hi[i * n + j] = (0..n).map(|k| li[k * n + i] * li[k * n + j]).sum();
        }
    }
    // upper cholesky: Hinv = U^T U; U = (lower chol of Hinv)^T
    chol_small(&mut hi, n).unwrap();
    let mut u = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = hi[i * n + j];
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quant_gptq_cholesky_of_inverse_matches_naive() {
        for n in [1usize, 5, 97, 200, 250] {
            // SPD: A Aᵀ + n I
            let mut s = 12345u64 + n as u64;
            let mut rnd = || {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            };
            let a: Vec<f64> = (0..n * n).map(|_| rnd()).collect();
            let mut h = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] = (0..n).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>() + if i == j { 0.1 } else { 0.0 };
                }
            }
            let u1 = upper_cholesky_of_inverse(h.clone(), n).unwrap();
            let u2 = upper_cholesky_of_inverse_naive(&h, n);
            let scale = u2.iter().fold(0f64, |m, v| m.max(v.abs()));
            let diff = u1.iter().zip(&u2).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-9 * scale, "n={n}: {diff} vs scale {scale}");
        }
        // not positive definite
        let h = vec![1.0, 2.0, 2.0, 1.0];
        assert!(upper_cholesky_of_inverse(h, 2).is_err());
    }

    #[test]
    fn quant_gptq_permute_symmetric_matches_gather() {
        // Permutations with a fixed point, a 2-cycle, a long cycle, and the identity.
        for p in [vec![0usize, 1, 2, 3, 4, 5], vec![3, 0, 5, 1, 4, 2], vec![1, 0, 2, 5, 3, 4], vec![5, 4, 3, 2, 1, 0]] {
            let n = p.len();
            let h: Vec<f64> = (0..n * n).map(|i| i as f64 * 1.5 - 7.0).collect();
            let mut got = h.clone();
            permute_symmetric(&mut got, n, &p);
            for a in 0..n {
                for b in 0..n {
                    assert_eq!(got[a * n + b], h[p[a] * n + p[b]], "p={p:?} ({a}, {b})");
                }
            }
        }
    }
}

#[cfg(test)]
mod algorithm_tests {
    use super::*;
    use crate::quant::grid::UniformGrid;
    use crate::quant::rtn::rtn_quantize;
    use crate::quant::spec::Granularity;
    use crate::quant::testutil::{correlated_inputs, max_abs_diff, output_error, randn};
    use std::collections::HashMap;

    fn hessian_of(x: &Tensor) -> Tensor {
        let mut acc = HessianAccumulator::new(x.dim(1).unwrap());
        acc.add_batch(x).unwrap();
        acc.hessian().unwrap()
    }

    /// RTN computed in f64 with the shared grid (what GPTQ with H = I must give bit for bit).
    fn rtn_f64(w: &Tensor, bits: u8, group: Option<usize>, sym: bool) -> Vec<f32> {
        let (rows, cols) = w.dims2().unwrap();
        let g = group.unwrap_or(cols);
        let grid = UniformGrid::new(bits, sym).unwrap();
        let v: Vec<f64> = w.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|&x| x as f64).collect();
        let mut out = vec![0f32; rows * cols];
        for r in 0..rows {
            for c0 in (0..cols).step_by(g) {
                let span = r * cols + c0..r * cols + c0 + g;
                let p = grid.params(v[span.clone()].iter().copied());
                for k in span {
                    out[k] = grid.quantize(v[k], &p) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn quant_gptq_identity_hessian_equals_rtn() {
        let w = randn(48, 256, 0.05, 11);
        let eye = Tensor::eye(256, DType::F32, &Device::Cpu).unwrap();
        for (bits, group, sym) in [(4u8, None, false), (3, Some(32), false), (4, Some(64), true), (2, None, true)] {
            let mut o = GptqOptions::new(bits);
            o.group = group;
            o.sym = sym;
            let q = gptq_quantize(&w, &eye, &o, "").unwrap();
            let got = q.weight.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got, rtn_f64(&w, bits, group, sym), "bits {bits} group {group:?} sym {sym}");
            // The public RTN works in f32 like the reference; it agrees up to f32 rounding of the
            // scales, except at genuine ties: with `sym`, the most negative value of a group sits
            // at x/scale = -(maxq+1)/2 + 1/2 = -7.5 exactly in real arithmetic, and f32/f64
            // rounding puts it on either side (levels -8 and -7 both exist there). Those entries,
            // and only those, may differ by one step.
            let gran = group.map_or(Granularity::Row, Granularity::Group);
            let r = rtn_quantize(&w, bits, gran, sym).unwrap().weight.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let wv = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let cols = 256;
            let g = group.unwrap_or(cols);
            let mut ties = 0;
            for (k, (a, b)) in r.iter().zip(&got).enumerate() {
                if (a - b).abs() < 1e-6 {
                    continue;
                }
                let (row, c0) = (k / cols, (k % cols) / g * g);
                let span = &wv[row * cols + c0..row * cols + c0 + g];
                let absmax = span.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(sym && wv[k] == -absmax, "bits {bits} group {group:?}: entry {k} differs ({a} vs {b}) and is no tie");
                ties += 1;
            }
            eprintln!("bits {bits} group {group:?} sym {sym}: {ties} tie entries differ between f32 and f64 RTN");
        }
    }

    #[test]
    fn quant_gptq_beats_rtn_on_correlated_inputs() {
        let (rows, cols) = (64, 256);
        let w = randn(rows, cols, 0.05, 21);
        let x = correlated_inputs(2048, cols, 22);
        let h = hessian_of(&x);
        for bits in [4u8, 3] {
            for group in [None, Some(32)] {
                let gran = group.map_or(Granularity::Row, Granularity::Group);
                let rtn = output_error(&w, &rtn_quantize(&w, bits, gran, false).unwrap().weight, &x);
                let mut variants = vec![(false, false)];
                variants.push((true, false));
                if group.is_some() {
                    variants.push((true, true));
                    variants.push((false, true));
                }
                for (act_order, static_groups) in variants {
                    let mut o = GptqOptions::new(bits);
                    o.group = group;
                    o.act_order = act_order;
                    o.static_groups = static_groups;
                    let g = gptq_quantize(&w, &h, &o, "").unwrap();
                    let e = output_error(&w, &g.weight, &x);
                    eprintln!("bits {bits} group {group:?} act_order {act_order} static {static_groups}: gptq {e:.4} rtn {rtn:.4}");
                    assert!(e < 0.8 * rtn, "bits {bits} group {group:?} act {act_order} static {static_groups}: {e} vs rtn {rtn}");
                    assert_eq!(g.perm.is_some(), act_order);
                }
            }
        }
    }

    #[test]
    fn quant_gptq_dead_columns_are_zero() {
        let (rows, cols) = (16, 64);
        let w = randn(rows, cols, 0.05, 31);
        let x = correlated_inputs(256, cols, 32);
        // kill input features 3 and 40
        let mask: Vec<f32> = (0..cols).map(|c| if c == 3 || c == 40 { 0.0 } else { 1.0 }).collect();
        let mask = Tensor::from_vec(mask, (1, cols), &Device::Cpu).unwrap();
        let x = x.broadcast_mul(&mask).unwrap();
        let h = hessian_of(&x);
        for act_order in [false, true] {
            let mut o = GptqOptions::new(4);
            o.act_order = act_order;
            o.group = Some(16);
            let q = gptq_quantize(&w, &h, &o, "").unwrap().weight.to_vec2::<f32>().unwrap();
            for row in &q {
                assert_eq!(row[3], 0.0);
                assert_eq!(row[40], 0.0);
            }
            assert!(q.iter().flatten().any(|&v| v != 0.0));
        }
    }

    #[test]
    fn quant_gptq_errors() {
        let w = randn(4, 8, 0.05, 41);
        let eye = Tensor::eye(8, DType::F32, &Device::Cpu).unwrap();
        let o = GptqOptions::new(4);
        // not positive definite: [[1, 2], [2, 1]] blocks
        let mut hv = vec![0f32; 64];
        for i in 0..8 {
            hv[i * 8 + i] = 1.0;
            hv[i * 8 + (i ^ 1)] = 2.0;
        }
        let h = Tensor::from_vec(hv, (8, 8), &Device::Cpu).unwrap();
        let e = gptq_quantize(&w, &h, &o, "layers.3.attn.q").unwrap_err().to_string();
        assert!(e.contains("layers.3.attn.q") && e.contains("not positive definite"), "{e}");
        let e = gptq_quantize(&w, &Tensor::eye(7, DType::F32, &Device::Cpu).unwrap(), &o, "l").unwrap_err().to_string();
        assert!(e.contains("[8, 8]"), "{e}");
        let mut hn = vec![0f32; 64];
        hn[9] = f32::NAN;
        let e = gptq_quantize(&w, &Tensor::from_vec(hn, (8, 8), &Device::Cpu).unwrap(), &o, "l").unwrap_err().to_string();
        assert!(e.contains("non-finite") && e.contains("[1, 1]"), "{e}");
        let mut o2 = o.clone();
        o2.static_groups = true;
        assert!(gptq_quantize(&w, &eye, &o2, "").unwrap_err().to_string().contains("group"));
        o2.bits = 1;
        assert!(gptq_quantize(&w, &eye, &o2, "").unwrap_err().to_string().contains("bits"));
        let w3 = Tensor::zeros((2, 4, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(gptq_quantize(&w3, &eye, &o, "").unwrap_err().to_string().contains("2-D"));
    }

    fn fixture() -> Option<HashMap<String, Tensor>> {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/fixtures/gptq/gptq_reference.safetensors");
        Some(candle_core::safetensors::load(p, &Device::Cpu).expect("fixture data/fixtures/gptq/gptq_reference.safetensors"))
    }

    #[test]
    fn quant_gptq_matches_reference_fixture() {
        let f = fixture().unwrap();
        let w = &f["W"];
        let h = &f["H"];
        // The Hessian accumulator reproduces the reference's running add_batch (one sample per call).
        let x = &f["X"];
        let mut acc = HessianAccumulator::new(192);
        for s in 0..x.dim(0).unwrap() {
            acc.add_batch(&x.get(s).unwrap()).unwrap();
        }
        assert_eq!(acc.nsamples(), 16);
        let hq = acc.hessian().unwrap();
        let scale = h.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let hd = max_abs_diff(&hq, h);
        assert!(hd <= 1e-5 * scale, "Hessian max diff {hd} (scale {scale})");
        // RTN (f32) is bit-identical to the reference's float32 quantizer.
        let r = rtn_quantize(w, 4, Granularity::Row, false).unwrap().weight;
        assert_eq!(max_abs_diff(&r, &f["rtn_4bit_row"]), 0.0);
        // (bits, group, sym, act_order, static_groups, block, damp) as in scripts/gptq_reference.py
        let configs: [(&str, u8, Option<usize>, bool, bool, bool, usize, f64); 6] = [
            ("4bit_row_asym", 4, None, false, false, false, 128, 0.01),
            ("3bit_g64_asym", 3, Some(64), false, false, false, 128, 0.01),
            ("4bit_act_order", 4, None, false, true, false, 128, 0.01),
            ("4bit_act_order_static_g64", 4, Some(64), false, true, true, 128, 0.01),
            ("4bit_sym_g32", 4, Some(32), true, false, false, 128, 0.01),
            ("3bit_g32_block48_damp0.1", 3, Some(32), false, false, false, 48, 0.1),
        ];
        for (name, bits, group, sym, act_order, static_groups, block, damp) in configs {
            let o = GptqOptions { bits, group, sym, act_order, static_groups, damp, block };
            let q = gptq_quantize(w, h, &o, name).unwrap();
            let want = &f[&format!("q_{name}")];
            let d = max_abs_diff(&q.weight, want);
            let want_loss = f[&format!("loss_{name}")].to_vec1::<f64>().unwrap()[0];
            eprintln!("fixture {name}: max |diff| {d:e}, loss {} vs {want_loss}", q.loss);
            assert!(d <= 1e-5, "{name}: max |diff| {d}");
            assert!((q.loss - want_loss).abs() <= 1e-9 * want_loss, "{name}: loss {} vs {want_loss}", q.loss);
        }
        // The whole-model path (accumulator consumed, permutation in place) is the tensor path bit for bit.
        for act_order in [false, true] {
            let o = GptqOptions { act_order, ..GptqOptions::new(3) };
            let a = gptq_quantize(w, &hq, &o, "").unwrap();
            let b = gptq_quantize_accumulated(w, acc.clone(), &o, "").unwrap();
            assert_eq!(max_abs_diff(&a.weight, &b.weight), 0.0, "act_order={act_order}");
            assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "act_order={act_order}");
            assert_eq!(a.perm, b.perm);
        }
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use crate::quant::testutil::randn;

    /// qi's side of scripts/bench_gptq.py: one 576×1536 layer, H from 16×256 correlated tokens.
    /// `cargo test ... -p qi quant_gptq_bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn quant_gptq_bench() {
        let (rows, cols, samples, tokens) = (576, 1536, 16, 256);
        let w = randn(rows, cols, 0.02, 1);
        let z = randn(samples * tokens, cols, 1.0, 2);
        let mix = randn(cols, cols, 1.0 / (cols as f64).sqrt(), 3);
        let x = (z.matmul(&mix).unwrap() + (&z * 0.3).unwrap()).unwrap();
        let x = x.reshape((samples, tokens, cols)).unwrap();
        let mut acc = HessianAccumulator::new(cols);
        for s in 0..samples {
            acc.add_batch(&x.get(s).unwrap()).unwrap();
        }
        let h = acc.hessian().unwrap();
        let reps = std::env::var("QI_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
        let mut configs = vec![("4bit per-row", GptqOptions::new(4))];
        let mut o = GptqOptions::new(4);
        o.group = Some(128);
        o.act_order = true;
        configs.push(("4bit g128 act_order", o));
        for (name, o) in configs {
            let mut times = vec![];
            for _ in 0..reps {
                let t = std::time::Instant::now();
                gptq_quantize(&w, &h, &o, "bench").unwrap();
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let mut s = times.clone();
            s.sort_by(f64::total_cmp);
            eprintln!(
                "{name:24} min {:.0} ms  median {:.0} ms  (runs: {:?})",
                s[0],
                s[s.len() / 2],
                times.iter().map(|t| t.round()).collect::<Vec<_>>()
            );
        }
    }
}
