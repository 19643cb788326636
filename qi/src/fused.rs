//! Fused CPU kernels for the hot spots of the forward pass: the attention core and the gated MLP
//! activation.
//!
//! Composed from candle ops, attention is a batched matmul whose small per-head products each go
//! through a separately threaded gemm, then scale, mask and softmax passes that each allocate a
//! full `[batch, heads, pos, pos]` tensor, then a copy from head-major back to token-major
//! layout. Here one task per (sequence, head) runs a single-threaded gemm straight from the
//! token-major q/k/v (strides, no transposes), applies scale, mask and softmax in one pass over
//! each row, and writes `z` token-major. The gated activation `act(gate) * up` is one parallel
//! pass instead of two allocating ones.
//!
//! These kernels have no backward pass: callers use them only for f32 CPU tensors that autograd
//! does not track ([`fusable`]) and compute with the composed candle ops otherwise. When a hook or
//! the cache asks for `hook_attn_scores`, [`attention_scores`] and [`softmax_rows`] split the
//! kernel in two with the same arithmetic. `tests` checks the kernels against the composed ops.
use candle_core::{CpuStorage, DType, Device, Layout, Result, Storage, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Whether the fused kernels can take these tensors: f32, on the CPU, not tracked by autograd.
pub fn fusable(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op())
}

/// Runs `f` on the f32 storage slice and layout of a CPU tensor.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32], &Layout) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(data)) => f(data, layout),
        _ => candle_core::bail!("fused kernel: expected an f32 CPU tensor, got {:?} on {:?}", t.dtype(), t.device().location()),
    }
}

/// `t` itself if its last axis is contiguous (gemm reads any other strides), else a contiguous
/// copy (e.g. a transposed view a hook returned).
fn unit_last_stride(t: &Tensor) -> Result<Tensor> {
    if t.stride().last() == Some(&1) {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

/// Strides of a rank-4 tensor whose last axis is contiguous (the layout gemm reads directly).
fn strides4(l: &Layout, what: &str) -> Result<[usize; 4]> {
    match *l.stride() {
        [s0, s1, s2, 1] => Ok([s0, s1, s2, 1]),
        ref s => candle_core::bail!("fused kernel: {what} must be rank 4 with a contiguous last axis, got strides {s:?}"),
    }
}

/// A raw pointer that may cross into rayon tasks writing disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Single-threaded `dst = beta * lhs · rhs` on strided f32 matrices (`rs` row, `cs` column stride).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_f32(m: usize, n: usize, k: usize, dst: *mut f32, dst_rs: usize, lhs: *const f32, lhs_rs: usize, lhs_cs: usize, rhs: *const f32, rhs_rs: usize, rhs_cs: usize, beta: f32) {
    gemm::gemm(
        m, n, k, dst, 1, dst_rs as isize, false, lhs, lhs_cs as isize, lhs_rs as isize, rhs, rhs_cs as isize, rhs_rs as isize, 0.0, beta, false, false, false,
        gemm::Parallelism::None,
    );
}

/// `Σ (a − b)²` over two f32 tensors of one shape, accumulated in f64: one parallel pass instead
/// of a difference, a square and a sum each writing a full tensor (a quantizer's loss is called
/// for every grid point on every calibration token).
pub fn sq_diff_sum(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        candle_core::bail!("sq_diff_sum: shapes {:?} and {:?} differ", a.dims(), b.dims());
    }
    if !fusable(&[a, b]) || !a.is_contiguous() || !b.is_contiguous() {
        return (a - b)?.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>();
    }
    with_f32(a, |x, la| {
        with_f32(b, |y, lb| {
            let (x, y) = (&x[la.start_offset()..la.start_offset() + a.elem_count()], &y[lb.start_offset()..lb.start_offset() + b.elem_count()]);
            // per-chunk sums collected in order, then added in order: the same bits on every run
            let parts: Vec<f64> = x.par_chunks(1 << 14).zip(y.par_chunks(1 << 14)).map(|(x, y)| x.iter().zip(y).map(|(p, q)| ((p - q) as f64).powi(2)).sum::<f64>()).collect();
            Ok(parts.iter().sum())
        })
    })
}

/// Attention pattern `softmax(q·kᵀ · scale + mask)`, `[batch, n_heads, pos, pos]`, from token-major
/// `q` `[batch, pos, n_heads, d_head]` and `k` `[batch, pos, n_kv_heads, d_head]` (query head `h`
/// reads key head `h / (n_heads / n_kv_heads)`, as Hugging Face's `repeat_kv`). `mask` is additive,
/// `[batch or 1, 1, pos, pos]`. A row whose keys are all masked gets all-zero weights.
pub fn attention_pattern(q: &Tensor, k: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    attention_rows(q, k, mask, scale, true)
}

/// The attention scores `q·kᵀ · scale + mask` alone (for a `hook_attn_scores`); [`softmax_rows`]
/// of them is bit-for-bit [`attention_pattern`], so what a run caches does not depend on what
/// else it asks for.
pub fn attention_scores(q: &Tensor, k: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    attention_rows(q, k, mask, scale, false)
}

fn attention_rows(q: &Tensor, k: &Tensor, mask: &Tensor, scale: f64, softmax: bool) -> Result<Tensor> {
    let (b, p, nh, dh) = q.dims4()?;
    let (kb, kp, nkv, kdh) = k.dims4()?;
    if (kb, kp, kdh) != (b, p, dh) || nkv == 0 || nh % nkv != 0 {
        candle_core::bail!("attention kernel: q {:?} and k {:?} do not fit", q.dims(), k.dims());
    }
    let mask = mask.contiguous()?;
    let (mb, _, mq, mk) = mask.dims4()?;
    if (mq, mk) != (p, p) || (mb != 1 && mb != b) {
        candle_core::bail!("attention kernel: mask {:?} does not fit {p} positions and batch {b}", mask.dims());
    }
    if b * nh * p == 0 {
        return Tensor::zeros((b, nh, p, p), DType::F32, &Device::Cpu);
    }
    let rep = nh / nkv;
    let (q, k) = (unit_last_stride(q)?, unit_last_stride(k)?);
    let mut out: Vec<f32> = Vec::with_capacity(b * nh * p * p);
    with_f32(&q, |qd, ql| {
        with_f32(&k, |kd, kl| {
            with_f32(&mask, |md, ml| {
                let (qs, ks) = (strides4(ql, "q")?, strides4(kl, "k")?);
                let (qd, kd, md) = (&qd[ql.start_offset()..], &kd[kl.start_offset()..], &md[ml.start_offset()..]);
                out.spare_capacity_mut()[..b * nh * p * p].par_chunks_mut(p * p).enumerate().for_each(|(task, dst)| {
                    let (bi, h) = (task / nh, task % nh);
                    // SAFETY: q/k offsets stay inside their tensors (dims checked above); gemm
                    // writes all p·p elements of this task's own chunk, which is then initialized.
                    let rows = unsafe {
                        let q0 = qd.as_ptr().add(bi * qs[0] + h * qs[2]);
                        let k0 = kd.as_ptr().add(bi * ks[0] + (h / rep) * ks[2]);
                        gemm_f32(p, p, dh, dst.as_mut_ptr() as *mut f32, p, q0, qs[1], 1, k0, 1, ks[1], scale as f32);
                        &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32])
                    };
                    let mrows = &md[(if mb == 1 { 0 } else { bi }) * p * p..][..p * p];
                    for (row, mrow) in rows.chunks_exact_mut(p).zip(mrows.chunks_exact(p)) {
                        for (x, &m) in row.iter_mut().zip(mrow) {
                            *x += m;
                        }
                        if softmax {
                            softmax_in_place(row);
                        }
                    }
                });
                Ok(())
            })
        })
    })?;
    // SAFETY: every chunk was fully written above.
    unsafe { out.set_len(b * nh * p * p) };
    Tensor::from_vec(out, (b, nh, p, p), &Device::Cpu)
}

/// Softmax over the last axis of (already masked) scores, with [`attention_pattern`]'s arithmetic.
pub fn softmax_rows(scores: &Tensor) -> Result<Tensor> {
    let p = scores.dim(candle_core::D::Minus1)?;
    if scores.elem_count() == 0 {
        return Ok(scores.clone());
    }
    let mut out = scores.flatten_all()?.to_vec1::<f32>()?;
    out.par_chunks_mut(p).for_each(softmax_in_place);
    Tensor::from_vec(out, scores.shape(), &Device::Cpu)
}

/// `row = softmax(row)`; −∞ entries become exactly 0, and an all −∞ row all 0. Written so the
/// compiler vectorizes it: eight running maxima and sums instead of one serial chain each, and
/// [`exp_approx`] instead of libm's scalar `expf`.
fn softmax_in_place(row: &mut [f32]) {
    let mut maxes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (m, &x) in maxes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = chunks.remainder().iter().chain(&maxes).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    for x in row.iter_mut() {
        let e = exp_approx(*x - max);
        *x = if *x == f32::NEG_INFINITY { 0.0 } else { e };
    }
    let mut sums = [0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (s, &x) in sums.iter_mut().zip(c) {
            *s += x;
        }
    }
    let sum: f32 = sums.iter().chain(chunks.remainder()).sum();
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// `eˣ` to about 2 ulp, branch-free so that loops over it vectorize: `eˣ = 2ⁿ · eʳ` with
/// `n = round(x / ln 2)`, `r = x − n ln 2` (ln 2 split in two for precision) and Cephes' degree-6
/// polynomial for `eʳ` on [−ln2/2, ln2/2]. Inputs are clamped to [−87, 88] (finite, normal
/// results); NaN stays NaN.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding it leaves round(t) in the low mantissa bits
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_65) * r + 0.5;
    let er = p * r * r + r + 1.0;
    // 2ⁿ from n's bits in t: integer operations only (no float-to-int conversion), so they vectorize.
    let two_n = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    er * two_n
}

/// `z = pattern · v` per head, written token-major: `pattern` `[batch, n_heads, pos, pos]`, `v`
/// `[batch, pos, n_kv_heads, d_head]` → `z` `[batch, pos, n_heads, d_head]` (hook_z's layout).
pub fn attention_mix(pattern: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (b, nh, p, pk) = pattern.dims4()?;
    let (vb, vp, nkv, dh) = v.dims4()?;
    if (vb, vp, pk) != (b, p, p) || nkv == 0 || nh % nkv != 0 {
        candle_core::bail!("attention_mix: pattern {:?} and v {:?} do not fit", pattern.dims(), v.dims());
    }
    if b * p * nh * dh == 0 {
        return Tensor::zeros((b, p, nh, dh), DType::F32, &Device::Cpu);
    }
    let rep = nh / nkv;
    let (pattern, v) = (unit_last_stride(pattern)?, unit_last_stride(v)?);
    let mut out: Vec<f32> = Vec::with_capacity(b * p * nh * dh);
    let dst = SendPtr(out.as_mut_ptr());
    with_f32(&pattern, |pd, pl| {
        with_f32(&v, |vd, vl| {
            let (ps, vs) = (strides4(pl, "pattern")?, strides4(vl, "v")?);
            let (pd, vd) = (&pd[pl.start_offset()..], &vd[vl.start_offset()..]);
            (0..b * nh).into_par_iter().for_each(|task| {
                let (bi, h) = (task / nh, task % nh);
                let dst = dst;
                // SAFETY: offsets stay inside the tensors (dims checked above); each task writes
                // only the d_head columns of head h in sequence bi's rows, disjoint from the rest.
                unsafe {
                    let p0 = pd.as_ptr().add(bi * ps[0] + h * ps[1]);
                    let v0 = vd.as_ptr().add(bi * vs[0] + (h / rep) * vs[2]);
                    let z0 = dst.0.add(bi * p * nh * dh + h * dh);
                    gemm_f32(p, dh, p, z0, nh * dh, p0, ps[2], 1, v0, vs[1], 1, 1.0);
                }
            });
            Ok(())
        })
    })?;
    // SAFETY: the (sequence, head) tasks together wrote every element.
    unsafe { out.set_len(b * p * nh * dh) };
    Tensor::from_vec(out, (b, p, nh, dh), &Device::Cpu)
}

/// `a · b` for 2-D tensors: [`matmul`] where it applies (f32 on the CPU, not tracked by
/// autograd), candle's matmul otherwise.
pub fn mm(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.rank() == 2 && b.rank() == 2 && fusable(&[a, b]) {
        matmul(a, b)
    } else {
        a.matmul(b)
    }
}

/// `h ← decay · h + (scale · x)ᵀ(scale · x)` for `x` `[rows, n]` and a symmetric `h` `[n, n]`
/// (row-major, full): the running Gram matrix of GPTQ's Hessians. On OpenBLAS one `ssyrk`
/// computes the lower triangle (half the products of a matmul, about 1.6–2× faster at GPTQ's
/// shapes) with `scale²` as its factor, mirrored to the upper; with gemm it is `mm` on the scaled
/// rows, as before the OpenBLAS path existed, so gemm's results keep their bits.
pub fn gram_update(h: &mut [f32], x: &Tensor, scale: f32, decay: f32) -> Result<()> {
    gram_update_on(crate::blas::backend()?, h, x, scale, decay)
}

fn gram_update_on(backend: &crate::blas::Backend, h: &mut [f32], x: &Tensor, scale: f32, decay: f32) -> Result<()> {
    let (rows, n) = x.dims2()?;
    if h.len() != n * n {
        candle_core::bail!("gram_update: h has {} values for a [{n}, {n}] matrix", h.len());
    }
    if let (crate::blas::Backend::OpenBlas(b), None) = (backend, rayon::current_thread_index()) {
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let done = with_f32(&x, |xd, xl| {
            let xp = unsafe { xd.as_ptr().add(xl.start_offset()) };
            // SAFETY: x is contiguous [rows, n]; h holds n·n values (checked above) and is ours
            Ok(unsafe { b.syrk_lower(n, rows, scale * scale, xp, decay, h.as_mut_ptr(), candle_core::utils::get_num_threads()) })
        })?;
        if done {
            for i in 0..n {
                for j in i + 1..n {
                    h[i * n + j] = h[j * n + i];
                }
            }
            return Ok(());
        }
    }
    let xs = (x * scale as f64)?.to_dtype(DType::F32)?;
    let xtx = matmul_on(&crate::blas::Backend::Gemm, &xs.t()?, &xs)?.flatten_all()?.to_vec1::<f32>()?;
    for (h, a) in h.iter_mut().zip(xtx) {
        *h = *h * decay + a;
    }
    Ok(())
}

/// `x · w` for `x` `[rows, k]` and `w` `[k, n]`, read through their strides (a transposed view
/// costs no copy), on the backend [`crate::blas`] chooses; with gemm it is the same call as
/// candle's matmul (same strides and threads, so the same bits) minus candle's zero-fill of the
/// output. (Asking for transparent huge pages under the unembedding's 201 MB of logits made the
/// isolated product ~15 % faster but the whole forward no faster: measured, then dropped.)
pub fn matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    matmul_on(crate::blas::backend()?, x, w)
}

fn matmul_on(backend: &crate::blas::Backend, x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    let (wk, n) = w.dims2()?;
    if wk != k {
        candle_core::bail!("matmul: x {:?} and w {:?} do not fit", x.dims(), w.dims());
    }
    if m * n * k == 0 {
        return Tensor::zeros((m, n), DType::F32, &Device::Cpu); // an empty sum is 0
    }
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    with_f32(x, |xd, xl| {
        with_f32(w, |wd, wl| {
            let (xs, ws) = (xl.stride(), wl.stride());
            let threads = candle_core::utils::get_num_threads();
            let (xp, wp) = (unsafe { xd.as_ptr().add(xl.start_offset()) }, unsafe { wd.as_ptr().add(wl.start_offset()) });
            // OpenBLAS keeps its own thread pool: from inside a rayon task (a caller's parallel
            // loop) the product stays on gemm, single-threaded as rayon nests it.
            if let (crate::blas::Backend::OpenBlas(b), None) = (backend, rayon::current_thread_index()) {
                // SAFETY: strides come from the layouts of tensors with the checked dims; OpenBLAS
                // writes all m·n outputs (beta = 0).
                if unsafe { b.sgemm(m, n, k, out.as_mut_ptr(), xp, xs[0], xs[1], wp, ws[0], ws[1], threads) } {
                    return Ok(());
                }
            }
            let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
            // SAFETY: as above; gemm writes all m·n outputs (read_dst = false).
            unsafe {
                gemm::gemm(
                    m, n, k, out.as_mut_ptr(), 1, n as isize, false,
                    xp, xs[1] as isize, xs[0] as isize,
                    wp, ws[1] as isize, ws[0] as isize,
                    0.0, 1.0, false, false, false, par,
                );
            }
            Ok(())
        })
    })?;
    // SAFETY: written in full by OpenBLAS or gemm above.
    unsafe { out.set_len(m * n) };
    Tensor::from_vec(out, (m, n), &Device::Cpu)
}

/// `silu(gate) · up` elementwise in one parallel pass (candle's `silu` formula, with [`exp_approx`]).
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.dims() != up.dims() {
        candle_core::bail!("silu_mul: gate {:?} and up {:?} differ in shape", gate.dims(), up.dims());
    }
    let (gate, up) = (gate.contiguous()?, up.contiguous()?);
    let n = gate.elem_count();
    let mut out: Vec<f32> = Vec::with_capacity(n);
    with_f32(&gate, |gd, gl| {
        with_f32(&up, |ud, ul| {
            let (gd, ud) = (&gd[gl.start_offset()..][..n], &ud[ul.start_offset()..][..n]);
            const CHUNK: usize = 16 * 1024;
            out.spare_capacity_mut()[..n].par_chunks_mut(CHUNK).enumerate().for_each(|(c, dst)| {
                let (g, u) = (&gd[c * CHUNK..][..dst.len()], &ud[c * CHUNK..][..dst.len()]);
                for ((d, &g), &u) in dst.iter_mut().zip(g).zip(u) {
                    d.write(g / (1.0 + exp_approx(-g)) * u);
                }
            });
            Ok(())
        })
    })?;
    // SAFETY: the chunks cover all n elements.
    unsafe { out.set_len(n) };
    Tensor::from_vec(out, gate.shape(), &Device::Cpu)
}

/// `-log softmax(logits[i, t])[tokens[i, t+1]]` for logits `[b, p, V]` and tokens `[b, p]`, as
/// `[b, p-1]`, one pass over each row (max, then the sum of exponentials in f64) without
/// materialising the `[b, p-1, V]` log-softmax: for a 152k-token vocabulary the composed ops hold
/// several copies of a 1.2 GB batch of logits at once.
pub fn next_token_nll(logits: &Tensor, tokens: &Tensor) -> Result<Tensor> {
    let (b, p, v) = logits.dims3()?;
    let logits = logits.contiguous()?;
    let toks: Vec<u32> = tokens.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
    if toks.len() != b * p {
        candle_core::bail!("next_token_nll: tokens hold {} entries, logits {b} x {p}", toks.len());
    }
    let rows = b * (p - 1);
    let out: Vec<f32> = with_f32(&logits, |data, layout| {
        let data = &data[layout.start_offset()..layout.start_offset() + b * p * v];
        (0..rows)
            .into_par_iter()
            .map(|r| {
                let (i, t) = (r / (p - 1), r % (p - 1));
                let row = &data[(i * p + t) * v..(i * p + t + 1) * v];
                let target = toks[i * p + t + 1] as usize;
                if target >= v {
                    return Err(candle_core::Error::Msg(format!("next_token_nll: token {target} outside the vocabulary of {v}")));
                }
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
                Ok((max as f64 + sum.ln() - row[target] as f64) as f32)
            })
            .collect::<Result<Vec<f32>>>()
    })?;
    Tensor::from_vec(out, (b, p - 1), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sq_diff_sum_is_the_sum_of_squared_differences() {
        // [1, 2, 3] − [0, 0, 1]: 1 + 4 + 4 = 9 (Σ|a − b| would be 5, (Σ(a − b))² 25)
        let a = Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[0f32, 0.0, 1.0], &Device::Cpu).unwrap();
        assert_eq!(sq_diff_sum(&a, &b).unwrap(), 9.0);
        // many chunks: the parallel sum equals a sequential f64 sum, run after run
        let mut rng = crate::rng::Rng::new(2);
        let n = 100_003;
        let (x, y): (Vec<f32>, Vec<f32>) = (0..n).map(|_| (rng.normal() as f32, rng.normal() as f32)).unzip();
        let want: f64 = x.iter().zip(&y).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
        let (xt, yt) = (Tensor::from_vec(x, n, &Device::Cpu).unwrap(), Tensor::from_vec(y, n, &Device::Cpu).unwrap());
        let got = sq_diff_sum(&xt, &yt).unwrap();
        assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
        assert_eq!(got.to_bits(), sq_diff_sum(&xt, &yt).unwrap().to_bits());
        // a transposed view takes the composed path, same value
        let m = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        assert_eq!(sq_diff_sum(&m.t().unwrap(), &Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap()).unwrap(), 30.0);
        assert!(sq_diff_sum(&a, &m).is_err());
    }

    /// Not a test: prints qi's matmul rate at the shapes of SmolLM2's linears (`cargo test -p qi
    /// --lib matmul_rate_bench -- --ignored --nocapture`; set RAYON_NUM_THREADS=1 for one core).
    #[test]
    #[ignore]
    fn matmul_rate_bench() {
        eprintln!("QI_MATMUL backend: {}", crate::blas::backend_name());
        let shapes = [(4096usize, 576usize, 576usize), (4096, 576, 1536), (4096, 1536, 576), (16384, 576, 1536), (1024, 576, 49152)];
        for (m, k, n) in shapes {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
            let w = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu).unwrap();
            let mut line = format!("[{m}, {k}] x [{k}, {n}]:");
            for (name, backend) in [("gemm", &crate::blas::Backend::Gemm), ("backend", crate::blas::backend().unwrap())] {
                matmul_on(backend, &x, &w).unwrap();
                let mut times: Vec<f64> = (0..7)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        matmul_on(backend, &x, &w).unwrap();
                        t.elapsed().as_secs_f64()
                    })
                    .collect();
                times.sort_by(f64::total_cmp);
                let s = times[3];
                line += &format!("  {name} {:.1} ms, {:.0} GFLOP/s", s * 1e3, 2.0 * (m * k * n) as f64 / s / 1e9);
            }
            eprintln!("{line}");
        }
    }

    #[test]
    fn fused_next_token_nll_equals_the_composed_ops() {
        let (b, p, v) = (2, 5, 300);
        let mut rng = crate::rng::Rng::new(11);
        let logits = Tensor::from_vec((0..b * p * v).map(|_| (rng.normal() * 4.0) as f32).collect::<Vec<_>>(), (b, p, v), &Device::Cpu).unwrap();
        let toks = Tensor::from_vec((0..b * p).map(|_| rng.below(v as u64) as u32).collect::<Vec<_>>(), (b, p), &Device::Cpu).unwrap();
        let fused = next_token_nll(&logits, &toks).unwrap().to_vec2::<f32>().unwrap();
        let lp = crate::ops::log_softmax_last(&logits.narrow(1, 0, p - 1).unwrap()).unwrap();
        let t: Vec<Vec<u32>> = toks.to_vec2().unwrap();
        let lp: Vec<Vec<Vec<f32>>> = lp.to_vec3().unwrap();
        for i in 0..b {
            for j in 0..p - 1 {
                let want = -lp[i][j][t[i][j + 1] as usize];
                assert!((fused[i][j] - want).abs() < 2e-5 * want.abs().max(1.0), "({i},{j}): {} vs {want}", fused[i][j]);
            }
        }
        // a view (offset, as a narrowed batch) gives the same numbers
        let wide = Tensor::cat(&[&logits, &logits], 0).unwrap().narrow(0, 2, 2).unwrap();
        assert_eq!(next_token_nll(&wide, &toks).unwrap().to_vec2::<f32>().unwrap(), fused);
    }

    use super::*;
    use candle_core::D;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Composed reference: head-major q/k/v, broadcast GQA, candle softmax.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> (Tensor, Tensor) {
        let (b, p, nh, dh) = q.dims4().unwrap();
        let nkv = k.dim(2).unwrap();
        let rep = nh / nkv;
        let expand = |t: &Tensor| t.transpose(1, 2).unwrap().unsqueeze(2).unwrap().expand((b, nkv, rep, p, dh)).unwrap().reshape((b, nh, p, dh)).unwrap();
        let qh = q.transpose(1, 2).unwrap().contiguous().unwrap();
        let scores = ((qh.matmul(&expand(k).t().unwrap()).unwrap() * scale).unwrap().broadcast_add(mask)).unwrap();
        let pattern = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        let z = pattern.matmul(&expand(v)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        (pattern, z)
    }

    #[test]
    fn attention_matches_composed_ops_with_gqa_padding_and_strided_inputs() {
        let dev = Device::Cpu;
        let (b, p, nh, nkv, dh) = (2, 7, 6, 2, 5);
        // q, k, v as strided views into one fused projection output, like GPT-2's c_attn.
        let qkv = Tensor::randn(0f32, 1.0, (b, p, (nh + 2 * nkv) * dh), &dev).unwrap();
        let q = qkv.narrow(2, 0, nh * dh).unwrap().reshape((b, p, nh, dh)).unwrap();
        let k = qkv.narrow(2, nh * dh, nkv * dh).unwrap().reshape((b, p, nkv, dh)).unwrap();
        let v = qkv.narrow(2, (nh + nkv) * dh, nkv * dh).unwrap().reshape((b, p, nkv, dh)).unwrap();
        // Sequence 1 is left-padded by 2: its padding queries see only themselves.
        let ninf = f32::NEG_INFINITY;
        let mut m = vec![ninf; b * p * p];
        for bi in 0..b {
            for i in 0..p {
                for j in 0..=i {
                    let pad = bi == 1 && (i < 2 || j < 2);
                    if !pad || i == j {
                        m[(bi * p + i) * p + j] = 0.0;
                    }
                }
            }
        }
        let mask = Tensor::from_vec(m, (b, 1, p, p), &dev).unwrap();
        let scale = 1.0 / (dh as f64).sqrt();
        let (want_pattern, want_z) = reference(&q, &k, &v, &mask, scale);
        let pattern = attention_pattern(&q, &k, &mask, scale).unwrap();
        assert!(max_diff(&pattern, &want_pattern) < 1e-6);
        let scores = attention_scores(&q, &k, &mask, scale).unwrap();
        assert_eq!(max_diff(&softmax_rows(&scores).unwrap(), &pattern), 0.0, "the two paths agree bit for bit");
        let z = attention_mix(&pattern, &v).unwrap();
        assert_eq!(z.dims(), &[b, p, nh, dh]);
        // a pattern whose last axis is strided (as a hook might return) is taken too
        let pattern_t = pattern.transpose(2, 3).unwrap().contiguous().unwrap().transpose(2, 3).unwrap();
        assert_eq!(max_diff(&attention_mix(&pattern_t, &v).unwrap(), &z), 0.0);
        assert!(max_diff(&z, &want_z) < 1e-5);
        // Rows sum to one and the causal upper triangle is exactly zero.
        let sums = pattern.sum(D::Minus1).unwrap();
        assert!(max_diff(&sums, &sums.ones_like().unwrap()) < 1e-6);
        assert_eq!(pattern.get(0).unwrap().get(0).unwrap().get(0).unwrap().get(1).unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn exp_approx_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (got, want) = (exp_approx(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 4.0 * f32::EPSILON, "worst relative error {worst}");
        assert_eq!(exp_approx(0.0), 1.0);
        assert!(exp_approx(-1e4) >= 0.0 && exp_approx(-1e4) < 1e-37);
        assert!(exp_approx(1e4).is_finite() && exp_approx(f32::NAN).is_nan());
    }

    #[test]
    fn fully_masked_rows_get_zero_weights() {
        let mut row = [f32::NEG_INFINITY; 3];
        softmax_in_place(&mut row);
        assert_eq!(row, [0.0; 3]);
        let mut row = [0.0f32, 0.0, f32::NEG_INFINITY];
        softmax_in_place(&mut row);
        assert_eq!(row, [0.5, 0.5, 0.0]);
        // hand-computed: softmax(ln 1, ln 3) = (1/4, 3/4), across the 8-lane chunks and the tail
        let mut row = [f32::NEG_INFINITY; 11];
        row[0] = 0.0;
        row[10] = 3f32.ln();
        softmax_in_place(&mut row);
        assert!((row[0] - 0.25).abs() < 1e-7 && (row[10] - 0.75).abs() < 1e-7);
        assert_eq!(row[1..10], [0.0; 9]);
    }

    #[test]
    fn matmul_is_candles_matmul_bit_for_bit_on_gemm_and_close_on_openblas() {
        let dev = Device::Cpu;
        let openblas = crate::blas::backend().unwrap();
        for (m, k, n) in [(3, 5, 7), (1024, 64, 8200)] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (k, n), &dev).unwrap();
            // a transposed view on either side reads through its strides
            let wt = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap().t().unwrap();
            let xt = Tensor::randn(0f32, 1.0, (k, m), &dev).unwrap().t().unwrap();
            for (x, w) in [(&x, &w), (&x, &wt), (&xt, &w), (&xt, &wt)] {
                let candle = x.matmul(w).unwrap();
                assert_eq!(max_diff(&matmul_on(&crate::blas::Backend::Gemm, x, w).unwrap(), &candle), 0.0);
                // k ≤ 64 unit normals: |x·w| is O(8); f32 sums in another order differ by ~1e-6
                let d = max_diff(&matmul_on(openblas, x, w).unwrap(), &candle);
                assert!(d < 1e-4, "{m}x{k}x{n}: {d}");
            }
        }
        assert!(matmul(&Tensor::zeros((2, 3), DType::F32, &dev).unwrap(), &Tensor::zeros((4, 2), DType::F32, &dev).unwrap()).is_err());
        // empty shapes: no gemm call, and an empty inner dimension sums to zero
        let y = matmul(&Tensor::zeros((2, 0), DType::F32, &dev).unwrap(), &Tensor::zeros((0, 3), DType::F32, &dev).unwrap()).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![0.0; 3]; 2]);
        let none = Tensor::zeros((0, 0, 2, 4), DType::F32, &dev).unwrap();
        let mask = Tensor::zeros((1, 1, 0, 0), DType::F32, &dev).unwrap();
        assert_eq!(attention_pattern(&none, &none, &mask, 1.0).unwrap().dims(), &[0, 2, 0, 0]);
    }

    #[test]
    fn gram_update_is_the_decayed_gram_matrix_on_both_backends() {
        let dev = Device::Cpu;
        let (rows, n) = (300, 37);
        let x = Tensor::randn(0f32, 1.0, (rows, n), &dev).unwrap();
        let xv = x.to_vec2::<f32>().unwrap();
        let h0: Vec<f32> = (0..n * n).map(|i| ((i / n) * (i % n) % 7) as f32).collect(); // symmetric
        let (scale, decay) = (0.25f32, 0.5f32);
        let want: Vec<f64> = (0..n * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                let dot: f64 = xv.iter().map(|r| r[i] as f64 * r[j] as f64).sum();
                decay as f64 * h0[ij] as f64 + (scale as f64).powi(2) * dot
            })
            .collect();
        let run = |backend: &crate::blas::Backend| {
            let mut h = h0.clone();
            gram_update_on(backend, &mut h, &x, scale, decay).unwrap();
            h
        };
        let gemm = run(&crate::blas::Backend::Gemm);
        // gemm: the scaled rows' product, exactly as GPTQ computed it before (so its bits hold)
        let xs = (&x * scale as f64).unwrap();
        let old: Vec<f32> = xs.t().unwrap().matmul(&xs).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(gemm.iter().zip(h0.iter().zip(&old)).all(|(g, (h, a))| *g == *h * decay + *a), "gemm path changed its bits");
        for (name, got) in [("gemm", gemm), ("backend", run(crate::blas::backend().unwrap()))] {
            for ij in 0..n * n {
                let (i, j) = (ij / n, ij % n);
                // both triangles: a missing mirror leaves the upper one at decay·h0 only
                assert!((got[ij] as f64 - want[ij]).abs() <= 1e-4 * (1.0 + want[ij].abs()), "{name} ({i}, {j}): {} vs {}", got[ij], want[ij]);
            }
        }
        let mut wrong = vec![0f32; 4];
        assert!(gram_update(&mut wrong, &x, 1.0, 1.0).is_err(), "an h of the wrong size is refused");
    }

    #[test]
    fn silu_mul_matches_candle() {
        let dev = Device::Cpu;
        let g = Tensor::randn(0f32, 3.0, (3, 40_000), &dev).unwrap();
        let u = Tensor::randn(0f32, 1.0, (3, 40_000), &dev).unwrap();
        let want = (g.silu().unwrap() * &u).unwrap();
        assert!(max_diff(&silu_mul(&g, &u).unwrap(), &want) < 1e-5);
        assert!(!fusable(&[&candle_core::Var::from_tensor(&g).unwrap().as_tensor().clone()]));
        assert!(fusable(&[&g, &u]));
    }
}
