//! Metrics shared by every analysis, each with a hand-computed unit test.
use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor, D};

/// Negative log-likelihood of each next token: for logits `[b, p, V]` and tokens `[b, p]`,
/// returns `[b, p-1]` where entry `(i, t)` is `-log softmax(logits[i, t])[tokens[i, t+1]]`.
pub fn next_token_nll(logits: &Tensor, tokens: &Tensor) -> Result<Tensor> {
    let (b, p, v) = logits.dims3()?;
    if p < 2 {
        bail!("need at least two positions to score next tokens, got {p}");
    }
    if crate::fused::fusable(&[logits]) {
        return Ok(crate::fused::next_token_nll(logits, tokens)?);
    }
    let lp = crate::ops::log_softmax_last(&logits.narrow(1, 0, p - 1)?.to_dtype(DType::F32)?)?;
    let targets = tokens.narrow(1, 1, p - 1)?.to_dtype(DType::U32)?.contiguous()?;
    let picked = lp.reshape((b * (p - 1), v))?.gather(&targets.reshape((b * (p - 1), 1))?, 1)?;
    Ok(picked.reshape((b, p - 1))?.neg()?)
}

/// `[b, p-1]` f32 weights: 1 where both the position and the next one are real tokens.
pub fn next_token_mask(mask: &Tensor) -> Result<Tensor> {
    let p = mask.dim(1)?;
    let m = mask.to_dtype(DType::F32)?;
    Ok((m.narrow(1, 0, p - 1)? * m.narrow(1, 1, p - 1)?)?)
}

/// KL(P ‖ Q) per row from logits over the last axis (natural log): `[…, V]` → `[…]`.
pub fn kl_from_logits(p_logits: &Tensor, q_logits: &Tensor) -> Result<Tensor> {
    let lp = crate::ops::log_softmax_last(&p_logits.to_dtype(DType::F32)?)?;
    let lq = crate::ops::log_softmax_last(&q_logits.to_dtype(DType::F32)?)?;
    Ok((lp.exp()? * (lp - lq)?)?.sum(D::Minus1)?)
}

/// Jensen–Shannon divergence per row of probability distributions over the last axis, natural
/// log (0 ≤ JS ≤ ln 2). Zero entries contribute nothing.
pub fn js_divergence(p: &Tensor, q: &Tensor) -> Result<Tensor> {
    let p = p.to_dtype(DType::F32)?;
    let q = q.to_dtype(DType::F32)?;
    let m = ((&p + &q)? * 0.5)?;
    let term = |x: &Tensor| -> Result<Tensor> {
        // x · ln(x / m), with 0 · ln 0 = 0 (clamp avoids ln 0; the product is then exactly 0)
        let ratio = (x.clamp(1e-30, f32::MAX)?.log()? - m.clamp(1e-30, f32::MAX)?.log()?)?;
        Ok((x * ratio)?.sum(D::Minus1)?)
    };
    Ok(((term(&p)? + term(&q)?)? * 0.5)?.clamp(0f32, std::f32::consts::LN_2)?)
}

/// Cosine similarity per row over the last axis.
pub fn cosine_rows(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let a = a.to_dtype(DType::F32)?;
    let b = b.to_dtype(DType::F32)?;
    let dot = (&a * &b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    Ok((dot / (na * nb)?.clamp(1e-30, f32::MAX)?)?)
}

/// Relative L2 drift ‖a − b‖ / ‖a‖ per row over the last axis (a is the reference).
pub fn rel_l2_rows(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let a = a.to_dtype(DType::F32)?;
    let diff = (&a - b.to_dtype(DType::F32)?)?.sqr()?.sum(D::Minus1)?.sqrt()?;
    Ok((diff / a.sqr()?.sum(D::Minus1)?.sqrt()?.clamp(1e-30, f32::MAX)?)?)
}

/// Pearson correlation of two equal-length samples; NaN if either is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "pearson: samples differ in length");
    let n = x.len() as f64;
    if x.len() < 2 {
        return f64::NAN;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

/// Average ranks (ties share the mean rank), 1-based.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[idx[k]] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman rank correlation (Pearson of average ranks).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

/// The index of the largest value (NaN never wins; 0 for an empty or all-NaN slice).
pub fn argmax(x: &[f64]) -> usize {
    (0..x.len()).filter(|&i| !x[i].is_nan()).max_by(|&a, &b| x[a].total_cmp(&x[b])).unwrap_or(0)
}

pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        return f64::NAN;
    }
    x.iter().sum::<f64>() / x.len() as f64
}

/// The median (the mean of the middle two for an even count; NaN for an empty slice).
pub fn median(x: &[f64]) -> f64 {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Sample standard deviation (n − 1).
pub fn std_dev(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return f64::NAN;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

/// Mean and percentile-bootstrap confidence interval (`level`, e.g. 0.95) over `n_boot` resamples.
pub fn bootstrap_mean_ci(x: &[f64], n_boot: usize, level: f64, seed: u64) -> (f64, f64, f64) {
    let m = mean(x);
    if x.len() < 2 || n_boot == 0 {
        return (m, m, m);
    }
    let mut rng = Rng::new(seed);
    let mut means: Vec<f64> = (0..n_boot)
        .map(|_| (0..x.len()).map(|_| x[rng.below(x.len() as u64) as usize]).sum::<f64>() / x.len() as f64)
        .collect();
    means.sort_by(|a, b| a.total_cmp(b));
    let lo = ((1.0 - level) / 2.0 * n_boot as f64).floor() as usize;
    let hi = (((1.0 + level) / 2.0 * n_boot as f64).ceil() as usize).min(n_boot) - 1;
    (m, means[lo], means[hi])
}

/// Mean of `x` and a percentile-bootstrap confidence interval that resamples clusters instead of
/// values: `x` is the concatenation of clusters of sizes `cluster_sizes` (e.g. the tokens of each
/// sequence), each resample draws as many clusters as there are, with replacement, and its
/// statistic is the mean over all values of the drawn clusters. Use it when values within a
/// cluster are correlated (neighbouring tokens): resampling values then treats them as
/// independent and makes the interval too narrow. With one value per cluster it is
/// [`bootstrap_mean_ci`] (same draws for the same seed).
pub fn cluster_bootstrap_mean_ci(x: &[f64], cluster_sizes: &[usize], n_boot: usize, level: f64, seed: u64) -> Result<(f64, f64, f64)> {
    let total: usize = cluster_sizes.iter().sum();
    if total != x.len() {
        bail!("cluster bootstrap: cluster sizes sum to {total}, but there are {} values", x.len());
    }
    let m = mean(x);
    let mut sums = Vec::with_capacity(cluster_sizes.len());
    let mut start = 0;
    for &n in cluster_sizes {
        sums.push(x[start..start + n].iter().sum::<f64>());
        start += n;
    }
    let k = cluster_sizes.len();
    if k < 2 || n_boot == 0 {
        return Ok((m, m, m));
    }
    let mut rng = Rng::new(seed);
    let mut means: Vec<f64> = (0..n_boot)
        .map(|_| {
            let (mut s, mut n) = (0.0, 0usize);
            for _ in 0..k {
                let c = rng.below(k as u64) as usize;
                s += sums[c];
                n += cluster_sizes[c];
            }
            if n == 0 {
                f64::NAN
            } else {
                s / n as f64
            }
        })
        .collect();
    means.sort_by(|a, b| a.total_cmp(b));
    let lo = ((1.0 - level) / 2.0 * n_boot as f64).floor() as usize;
    let hi = (((1.0 + level) / 2.0 * n_boot as f64).ceil() as usize).min(n_boot) - 1;
    Ok((m, means[lo], means[hi]))
}

/// Half-width of a Student-t confidence interval for the mean (level 0.95), for small samples
/// such as seeds. Returns NaN for fewer than two values.
pub fn t_ci95_half_width(x: &[f64]) -> f64 {
    let n = x.len();
    if n < 2 {
        return f64::NAN;
    }
    // two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom, then the normal value
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093,
        2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    let t = if n - 1 <= 30 { T[n - 2] } else { 1.960 };
    t * std_dev(x) / (n as f64).sqrt()
}

/// Area under the ROC curve of `scores` for binary `labels` (Mann–Whitney: the probability that a
/// random positive scores above a random negative, ties counting ½). NaN when a class is empty.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 || scores.len() != labels.len() {
        return f64::NAN;
    }
    let r = ranks(scores);
    let pos_rank_sum: f64 = r.iter().zip(labels).filter(|(_, &l)| l).map(|(r, _)| r).sum();
    (pos_rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0) / (n_pos * n_neg) as f64
}

/// L2-regularised logistic regression fitted by iteratively reweighted least squares (Newton's
/// method). `x` is `[n][p]` (standardise it first), returns `[intercept, w_1 … w_p]`; the
/// intercept is not penalised. `l2` > 0 keeps separable data finite.
pub fn logistic_fit(x: &[Vec<f64>], y: &[bool], l2: f64) -> Result<Vec<f64>> {
    let n = x.len();
    if n == 0 || n != y.len() {
        bail!("logistic regression needs as many labels as rows ({n} rows, {} labels)", y.len());
    }
    let p = x[0].len() + 1;
    let row = |i: usize| -> Vec<f64> { std::iter::once(1.0).chain(x[i].iter().copied()).collect() };
    let mut w = vec![0.0; p];
    for _ in 0..100 {
        // gradient g = Xᵀ(μ − y) + λw, Hessian H = Xᵀ S X + λI (S = μ(1 − μ))
        let mut g = vec![0.0; p];
        let mut h = vec![vec![0.0; p]; p];
        for i in 0..n {
            let xi = row(i);
            let z: f64 = xi.iter().zip(&w).map(|(a, b)| a * b).sum();
            let mu = 1.0 / (1.0 + (-z).exp());
            let s = (mu * (1.0 - mu)).max(1e-10);
            let resid = mu - if y[i] { 1.0 } else { 0.0 };
            for a in 0..p {
                g[a] += xi[a] * resid;
                for b in 0..p {
                    h[a][b] += s * xi[a] * xi[b];
                }
            }
        }
        for a in 1..p {
            g[a] += l2 * w[a];
            h[a][a] += l2;
        }
        h[0][0] += 1e-9;
        let step = solve_linear(h, g)?;
        let mut max_step: f64 = 0.0;
        for a in 0..p {
            w[a] -= step[a];
            max_step = max_step.max(step[a].abs());
        }
        if max_step < 1e-10 {
            break;
        }
    }
    Ok(w)
}

/// P(y = 1 | x) of a fitted [`logistic_fit`] model.
pub fn logistic_predict(w: &[f64], x: &[f64]) -> f64 {
    let z = w[0] + x.iter().zip(&w[1..]).map(|(a, b)| a * b).sum::<f64>();
    1.0 / (1.0 + (-z).exp())
}

/// Solves `a · x = b` by Gaussian elimination with partial pivoting (small dense systems).
pub fn solve_linear(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    for c in 0..n {
        let piv = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).expect("non-empty");
        if a[piv][c].abs() < 1e-300 {
            bail!("singular linear system (column {c})");
        }
        a.swap(c, piv);
        b.swap(c, piv);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            for k in c..n {
                a[r][k] -= f * a[c][k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Ok(x)
}

/// Columns standardised to mean 0 and standard deviation 1 (constant columns become 0).
pub fn standardize_columns(x: &[Vec<f64>]) -> Vec<Vec<f64>> {
    if x.is_empty() {
        return vec![];
    }
    let p = x[0].len();
    let cols: Vec<(f64, f64)> = (0..p)
        .map(|j| {
            let c: Vec<f64> = x.iter().map(|r| r[j]).collect();
            let sd = if c.len() > 1 { std_dev(&c) } else { 0.0 };
            (mean(&c), if sd > 0.0 && sd.is_finite() { sd } else { 1.0 })
        })
        .collect();
    x.iter().map(|r| r.iter().zip(&cols).map(|(v, (m, s))| (v - m) / s).collect()).collect()
}

/// k-fold cross-validated ROC AUC of logistic regression predicting `y` from `x`: rows are
/// shuffled with `seed` and split into `folds` parts; each part is scored by a model fitted on the
/// others (features standardised with the training part's statistics), and the AUC is computed
/// once on the pooled out-of-fold scores. NaN when a class has fewer than `folds` members.
pub fn cv_logistic_auc(x: &[Vec<f64>], y: &[bool], folds: usize, l2: f64, seed: u64) -> Result<f64> {
    let n_pos = y.iter().filter(|&&v| v).count();
    if folds < 2 || n_pos < folds || y.len() - n_pos < folds {
        return Ok(f64::NAN);
    }
    let mut order: Vec<usize> = (0..y.len()).collect();
    Rng::new(seed).shuffle(&mut order);
    let mut scores = vec![0.0; y.len()];
    for f in 0..folds {
        let test: Vec<usize> = order.iter().copied().enumerate().filter(|(i, _)| i % folds == f).map(|(_, r)| r).collect();
        let train: Vec<usize> = order.iter().copied().enumerate().filter(|(i, _)| i % folds != f).map(|(_, r)| r).collect();
        let p = x[0].len();
        let stats: Vec<(f64, f64)> = (0..p)
            .map(|j| {
                let c: Vec<f64> = train.iter().map(|&r| x[r][j]).collect();
                let sd = std_dev(&c);
                (mean(&c), if sd > 0.0 && sd.is_finite() { sd } else { 1.0 })
            })
            .collect();
        let z = |r: usize| -> Vec<f64> { x[r].iter().zip(&stats).map(|(v, (m, s))| (v - m) / s).collect() };
        let xt: Vec<Vec<f64>> = train.iter().map(|&r| z(r)).collect();
        let yt: Vec<bool> = train.iter().map(|&r| y[r]).collect();
        let w = logistic_fit(&xt, &yt, l2)?;
        for &r in &test {
            scores[r] = logistic_predict(&w, &z(r));
        }
    }
    Ok(roc_auc(&scores, y))
}

/// One calibration bin: mean confidence, accuracy and count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationBin {
    pub confidence: f64,
    pub accuracy: f64,
    pub count: usize,
}

/// Calibration bins of predictions with `confidence` in [0, 1] and `correct` flags: equal-width
/// bins over [0, 1] (`equal_mass = false`; confidence 1 goes in the last bin) or `n_bins` bins of
/// (as nearly as possible) equal counts after sorting by confidence (`equal_mass = true`). Empty
/// bins are omitted.
pub fn calibration_bins(confidence: &[f64], correct: &[bool], n_bins: usize, equal_mass: bool) -> Vec<CalibrationBin> {
    let n = confidence.len().min(correct.len());
    if n == 0 || n_bins == 0 {
        return vec![];
    }
    let mut members: Vec<Vec<usize>> = vec![vec![]; n_bins];
    if equal_mass {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&i, &j| confidence[i].total_cmp(&confidence[j]).then(i.cmp(&j)));
        for (rank, i) in idx.into_iter().enumerate() {
            members[rank * n_bins / n].push(i);
        }
    } else {
        for i in 0..n {
            let b = ((confidence[i] * n_bins as f64).floor() as usize).min(n_bins - 1);
            members[b].push(i);
        }
    }
    members
        .into_iter()
        .filter(|m| !m.is_empty())
        .map(|m| CalibrationBin {
            confidence: m.iter().map(|&i| confidence[i]).sum::<f64>() / m.len() as f64,
            accuracy: m.iter().filter(|&&i| correct[i]).count() as f64 / m.len() as f64,
            count: m.len(),
        })
        .collect()
}

/// Calibration error: Σ_bins (count / n) · |accuracy − confidence| — ECE with equal-width bins,
/// ACE with equal-mass bins (see [`calibration_bins`]).
pub fn calibration_error(bins: &[CalibrationBin]) -> f64 {
    let n: usize = bins.iter().map(|b| b.count).sum();
    if n == 0 {
        return f64::NAN;
    }
    bins.iter().map(|b| b.count as f64 / n as f64 * (b.accuracy - b.confidence).abs()).sum()
}

/// Pearson correlation per row over the last axis: each row's features are centred on their own
/// mean, then compared by cosine (0 when a row is constant).
pub fn pearson_rows(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let a = a.to_dtype(DType::F32)?;
    let b = b.to_dtype(DType::F32)?;
    let ca = a.broadcast_sub(&a.mean_keepdim(D::Minus1)?)?;
    let cb = b.broadcast_sub(&b.mean_keepdim(D::Minus1)?)?;
    cosine_rows(&ca, &cb)
}

/// Indices of the `k` largest entries of `x` (f32 or f64), largest first (ties: lower index first).
pub fn top_k_indices<T: Copy + Into<f64>>(x: &[T], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    let k = k.min(x.len());
    let by_value = |a: &usize, b: &usize| x[*b].into().total_cmp(&x[*a].into()).then(a.cmp(b));
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, by_value);
    }
    idx.truncate(k);
    idx.sort_by(by_value);
    idx
}

/// Fraction of the `k` largest entries of `p` that are also among the `k` largest of `q` (NaN when
/// empty); used for logit-lens top-k agreement and SAE top-activating-token overlap.
pub fn top_k_overlap<T: Copy + Into<f64>>(p: &[T], q: &[T], k: usize) -> f64 {
    let (tp, tq) = (top_k_indices(p, k), top_k_indices(q, k));
    if tp.is_empty() {
        return f64::NAN;
    }
    tp.iter().filter(|i| tq.contains(i)).count() as f64 / tp.len() as f64
}

/// Overlap of the tokens on which a feature fires most, reference `p` vs quantized `q`
/// (activations over the same tokens). Only tokens where a feature fires (> 0) compete: with
/// `k' = min(k, tokens where p fires)`, it is the fraction of p's `k'` strongest firing tokens
/// that are also among q's `k'` strongest firing tokens (q may fire on fewer). A feature firing
/// on fewer than `k` tokens is thus judged on all of its firing tokens, and zero-activation tokens
/// never fill a top-k by index. NaN when `p` never fires.
pub fn active_top_k_overlap(p: &[f64], q: &[f64], k: usize) -> f64 {
    assert_eq!(p.len(), q.len(), "active_top_k_overlap: activations differ in length");
    let firing = |x: &[f64]| -> Vec<usize> { (0..x.len()).filter(|&i| x[i] > 0.0).collect() };
    let strongest = |x: &[f64], idx: Vec<usize>, k: usize| -> Vec<usize> {
        let vals: Vec<f64> = idx.iter().map(|&i| x[i]).collect();
        top_k_indices(&vals, k).into_iter().map(|j| idx[j]).collect()
    };
    let fp = firing(p);
    let k = k.min(fp.len());
    if k == 0 {
        return f64::NAN;
    }
    let tp = strongest(p, fp, k);
    let tq = strongest(q, firing(q), k);
    tp.iter().filter(|i| tq.contains(i)).count() as f64 / k as f64
}

/// 1-based rank of entry `i` of `x` by decreasing value: 1 + the number of strictly larger entries.
pub fn rank_of(x: &[f32], i: usize) -> usize {
    1 + x.iter().filter(|&&v| v > x[i]).count()
}

/// TransformerLens `head_detector` score with `error_measure="mul"` for one head on one sequence:
/// `Σ (A ⊙ D) / Σ A` over the `[t, t]` attention pattern `a` (row-major, query × key) and a 0/1
/// detection pattern given as its `(query, key)` ones. As in TransformerLens, `exclude_bos` zeroes
/// column 0 and `exclude_current_token` the diagonal of `A` before both sums.
pub fn head_detection_score_mul(a: &[f32], t: usize, detection: &[(usize, usize)], exclude_bos: bool, exclude_current_token: bool) -> f64 {
    assert_eq!(a.len(), t * t, "head_detection_score_mul: pattern is not {t}×{t}");
    let kept = |q: usize, k: usize| !(exclude_bos && k == 0) && !(exclude_current_token && q == k);
    let mut total = 0.0;
    for q in 0..t {
        for k in 0..t {
            if kept(q, k) {
                total += a[q * t + k] as f64;
            }
        }
    }
    let hit: f64 = detection.iter().filter(|&&(q, k)| kept(q, k)).map(|&(q, k)| a[q * t + k] as f64).sum();
    hit / total
}

/// Fraction of a metric's damage recovered by a repair: `(patched − quant) / (reference − quant)`
/// (1 = back to the reference, 0 = no change, negative = worse). NaN when the twin is not damaged
/// (`reference == quant`), where the fraction is undefined.
pub fn recovery_fraction(reference: f64, quant: f64, patched: f64) -> f64 {
    let damage = reference - quant;
    if damage.abs() < 1e-12 {
        return f64::NAN;
    }
    (patched - quant) / damage
}

/// Best matches between the rows of `a` `[m, d]` and `b` `[n, d]` by absolute cosine (a feature
/// direction and its negation count as the same direction up to sign).
#[derive(Debug, Clone, PartialEq)]
pub struct BestMatch {
    /// Per row of `a`: max over rows of `b` of |cos|.
    pub cos: Vec<f64>,
    /// Per row of `a`: the index of that best row of `b`.
    pub a_to_b: Vec<usize>,
    /// Per row of `b`: the index of its best row of `a`.
    pub b_to_a: Vec<usize>,
}

/// [`BestMatch`] of the rows of `a` and `b` (one `[m, n]` cosine matrix in f32).
pub fn best_matches(a: &Tensor, b: &Tensor) -> Result<BestMatch> {
    let unit = |x: &Tensor| -> Result<Tensor> {
        let x = x.to_dtype(candle_core::DType::F32)?;
        let n = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
        Ok(x.broadcast_div(&n)?)
    };
    let cos = unit(a)?.matmul(&unit(b)?.t()?)?.abs()?;
    let best: Vec<f32> = cos.max(1)?.to_vec1()?;
    let a_to_b: Vec<u32> = cos.argmax(1)?.to_vec1()?;
    let b_to_a: Vec<u32> = cos.argmax(0)?.to_vec1()?;
    Ok(BestMatch { cos: best.into_iter().map(f64::from).collect(), a_to_b: a_to_b.into_iter().map(|i| i as usize).collect(), b_to_a: b_to_a.into_iter().map(|i| i as usize).collect() })
}

/// Per row of `a`: whether it is a mutual nearest neighbour (its best match's best match is
/// itself). Its mean is the mutual-nearest-neighbour share.
pub fn mutual_nearest(a_to_b: &[usize], b_to_a: &[usize]) -> Vec<bool> {
    a_to_b.iter().enumerate().map(|(i, &j)| b_to_a.get(j) == Some(&i)).collect()
}

/// Singular value decomposition `m = U diag(s) Vᵀ` of a square matrix (rows of `m`) by one-sided
/// Jacobi rotations in f64 (candle has no SVD). Returns `(U, s, V)` as row-major matrices;
/// singular values are not sorted. Columns of `U` for zero singular values are completed to an
/// orthonormal basis, so `U` is always orthogonal.
pub fn jacobi_svd(m: &[Vec<f64>]) -> Result<(Vec<Vec<f64>>, Vec<f64>, Vec<Vec<f64>>)> {
    let n = m.len();
    if m.iter().any(|r| r.len() != n) {
        anyhow::bail!("jacobi_svd: expected a square matrix, got {n} rows of lengths {:?}", m.iter().map(|r| r.len()).collect::<Vec<_>>());
    }
    // work on columns: u[j] is column j of the rotated m, v[j] column j of V
    let mut u: Vec<Vec<f64>> = (0..n).map(|j| (0..n).map(|i| m[i][j]).collect()).collect();
    let mut v: Vec<Vec<f64>> = (0..n).map(|j| (0..n).map(|i| if i == j { 1.0 } else { 0.0 }).collect()).collect();
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    let rotate = |cols: &mut [Vec<f64>], p: usize, q: usize, c: f64, s: f64| {
        let (lo, hi) = cols.split_at_mut(q);
        for (x, y) in lo[p].iter_mut().zip(hi[0].iter_mut()) {
            let (a, b) = (*x, *y);
            *x = c * a - s * b;
            *y = s * a + c * b;
        }
    };
    for _sweep in 0..60 {
        let mut off = 0usize;
        for p in 0..n {
            for q in p + 1..n {
                let (alpha, beta, gamma) = (dot(&u[p], &u[p]), dot(&u[q], &u[q]), dot(&u[p], &u[q]));
                if gamma == 0.0 || gamma.abs() <= 1e-12 * (alpha * beta).sqrt() {
                    continue;
                }
                off += 1;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                rotate(&mut u, p, q, c, s);
                rotate(&mut v, p, q, c, s);
            }
        }
        if off == 0 {
            break;
        }
    }
    let s: Vec<f64> = u.iter().map(|c| dot(c, c).sqrt()).collect();
    let scale = s.iter().cloned().fold(0.0, f64::max).max(1e-300);
    let mut ucols: Vec<Vec<f64>> = Vec::with_capacity(n);
    let mut missing = Vec::new();
    for (j, c) in u.iter().enumerate() {
        if s[j] > 1e-12 * scale {
            ucols.push(c.iter().map(|x| x / s[j]).collect());
        } else {
            ucols.push(vec![0.0; n]);
            missing.push(j);
        }
    }
    // complete U for (numerically) zero singular values: Gram–Schmidt on the standard basis
    let mut e = 0;
    for j in missing {
        while e < n {
            let mut x: Vec<f64> = (0..n).map(|i| if i == e { 1.0 } else { 0.0 }).collect();
            e += 1;
            for (k, col) in ucols.iter().enumerate() {
                if k != j {
                    let d = dot(&x, col);
                    x.iter_mut().zip(col).for_each(|(a, b)| *a -= d * b);
                }
            }
            let norm = dot(&x, &x).sqrt();
            if norm > 1e-6 {
                ucols[j] = x.into_iter().map(|a| a / norm).collect();
                break;
            }
        }
    }
    let rows = |cols: &[Vec<f64>]| -> Vec<Vec<f64>> { (0..n).map(|i| (0..n).map(|j| cols[j][i]).collect()).collect() };
    Ok((rows(&ucols), s, rows(&v)))
}

/// The orthogonal `R` minimising ‖A R − B‖_F given `m = AᵀB` (orthogonal Procrustes): with
/// `m = U Σ Vᵀ`, `R = U Vᵀ`.
pub fn procrustes_rotation(m: &[Vec<f64>]) -> Result<Vec<Vec<f64>>> {
    let (u, _, v) = jacobi_svd(m)?;
    let n = m.len();
    Ok((0..n).map(|i| (0..n).map(|j| (0..n).map(|k| u[i][k] * v[j][k]).sum()).collect()).collect())
}

/// Relative residual ‖A R − B‖_F / ‖B‖_F of the orthogonal Procrustes alignment of `a` onto `b`
/// (both `[rows, d]`, rows in correspondence; `R` is `[d, d]`, so the `d`-dimensional spaces are
/// aligned). 0 = `b` is an exact rotation/reflection of `a`.
pub fn procrustes_residual(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (a.to_dtype(candle_core::DType::F32)?, b.to_dtype(candle_core::DType::F32)?);
    if a.dims() != b.dims() || a.rank() != 2 {
        anyhow::bail!("procrustes_residual: shapes {:?} and {:?} differ", a.dims(), b.dims());
    }
    let m: Vec<Vec<f64>> = a.t()?.matmul(&b)?.to_dtype(candle_core::DType::F64)?.to_vec2()?;
    let r = procrustes_rotation(&m)?;
    let d = r.len();
    let r = Tensor::from_vec(r.concat().into_iter().map(|x| x as f32).collect::<Vec<f32>>(), (d, d), a.device())?;
    let res = (a.matmul(&r)? - &b)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    let nb = b.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    Ok((res / nb.max(1e-30)).sqrt())
}

/// Linear CKA between activations `x` `[n, p]` and `y` `[n, q]` on the same `n` tokens:
/// `‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)` after centring the columns. When `n` is smaller than the
/// widths the equal token-Gram form `⟨X Xᵀ, Y Yᵀ⟩_F / (‖X Xᵀ‖_F ‖Y Yᵀ‖_F)` is cheaper and used.
/// NaN when either side has no variance.
pub fn linear_cka(x: &Tensor, y: &Tensor) -> Result<f64> {
    let (n, p) = x.dims2()?;
    let q = y.dim(1)?;
    linear_cka_form(x, y, n < p.max(q))
}

fn linear_cka_form(x: &Tensor, y: &Tensor, token_gram: bool) -> Result<f64> {
    if x.dim(0)? != y.dim(0)? {
        anyhow::bail!("linear_cka: {} tokens in x but {} in y", x.dim(0)?, y.dim(0)?);
    }
    let centre = |t: &Tensor| -> Result<Tensor> {
        let t = t.to_dtype(candle_core::DType::F32)?;
        Ok(t.broadcast_sub(&t.mean_keepdim(0)?)?)
    };
    let (x, y) = (centre(x)?, centre(y)?);
    let frob2 = |t: &Tensor| -> Result<f64> { Ok(t.sqr()?.sum_all()?.to_scalar::<f32>()? as f64) };
    let (num, dx, dy) = if token_gram {
        let (kx, ky) = (x.matmul(&x.t()?)?, y.matmul(&y.t()?)?);
        ((&kx * &ky)?.sum_all()?.to_scalar::<f32>()? as f64, frob2(&kx)?, frob2(&ky)?)
    } else {
        (frob2(&y.t()?.matmul(&x)?)?, frob2(&x.t()?.matmul(&x)?)?, frob2(&y.t()?.matmul(&y)?)?)
    };
    let den = (dx * dy).sqrt();
    Ok(if den > 0.0 { num / den } else { f64::NAN })
}

/// Debiased linear CKA: linear CKA with the unbiased HSIC estimator of Song et al. (2012) in
/// place of the biased one (as in Nguyen et al. 2021), on token Gram matrices `K = X Xᵀ`,
/// `L = Y Yᵀ` with zeroed diagonals `K̃`, `L̃`:
/// `HSIC₁(K, L) = [tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3))`,
/// `CKA = HSIC₁(K, L) / √(HSIC₁(K, K) HSIC₁(L, L))`. Plain linear CKA of unrelated random
/// matrices tends to 1 when the width exceeds the number of tokens; this one stays near 0 (and
/// can be slightly negative). Needs at least 4 tokens; computed in f64; NaN without variance.
pub fn debiased_linear_cka(x: &Tensor, y: &Tensor) -> Result<f64> {
    let n = x.dim(0)?;
    if y.dim(0)? != n {
        bail!("debiased_linear_cka: {n} tokens in x but {} in y", y.dim(0)?);
    }
    if n < 4 {
        bail!("debiased_linear_cka: needs at least 4 tokens, got {n}");
    }
    let off_diagonal_gram = |t: &Tensor| -> Result<Tensor> {
        // centring first changes nothing in exact arithmetic and keeps the sums small
        let t = t.to_dtype(DType::F64)?;
        let t = t.broadcast_sub(&t.mean_keepdim(0)?)?;
        let k = t.matmul(&t.t()?)?;
        let eye = Tensor::eye(n, DType::F64, t.device())?;
        Ok((k * (1.0 - eye)?)?)
    };
    let hsic = |k: &Tensor, l: &Tensor| -> Result<f64> {
        let nf = n as f64;
        let tr = (k * l)?.sum_all()?.to_scalar::<f64>()?;
        let (sk, sl) = (k.sum_all()?.to_scalar::<f64>()?, l.sum_all()?.to_scalar::<f64>()?);
        let kl = (k.sum(1)? * l.sum(1)?)?.sum_all()?.to_scalar::<f64>()?;
        Ok((tr + sk * sl / ((nf - 1.0) * (nf - 2.0)) - 2.0 / (nf - 2.0) * kl) / (nf * (nf - 3.0)))
    };
    let (k, l) = (off_diagonal_gram(x)?, off_diagonal_gram(y)?);
    let den = (hsic(&k, &k)? * hsic(&l, &l)?).sqrt();
    Ok(if den > 0.0 { hsic(&k, &l)? / den } else { f64::NAN })
}

/// Shares of features that are dead (fire on no token), rare (`0 < f < rare`), common
/// (`rare ≤ f < frequent`) and frequent (`f ≥ frequent`), from firing frequencies `f`.
pub fn firing_classes(freq: &[f64], rare: f64, frequent: f64) -> [f64; 4] {
    let mut c = [0usize; 4];
    for &f in freq {
        let k = if f <= 0.0 {
            0
        } else if f < rare {
            1
        } else if f < frequent {
            2
        } else {
            3
        };
        c[k] += 1;
    }
    let n = freq.len().max(1) as f64;
    c.map(|k| k as f64 / n)
}

/// Two-sided paired permutation (sign-flip) test of mean(x − y) = 0: the share of `n_perm` random
/// sign flips of the differences whose |mean| reaches the observed one, as `(1 + hits) / (1 +
/// n_perm)` (never 0).
pub fn paired_permutation_p(x: &[f64], y: &[f64], n_perm: usize, seed: u64) -> f64 {
    let d: Vec<f64> = x.iter().zip(y).map(|(a, b)| a - b).collect();
    if d.is_empty() {
        return f64::NAN;
    }
    let observed = d.iter().sum::<f64>().abs();
    let mut rng = Rng::new(seed);
    let hits = (0..n_perm)
        .filter(|_| {
            let s: f64 = d.iter().map(|&v| if rng.next_u64() & 1 == 0 { v } else { -v }).sum();
            // relative tolerance: sums of the same values in another order
            s.abs() >= observed - 1e-12 * observed.max(1.0)
        })
        .count();
    (1 + hits) as f64 / (1 + n_perm) as f64
}

/// Mean and central percentile interval (`level`, e.g. 0.95) of a small sample such as null
/// draws (nearest-rank percentiles).
pub fn mean_and_interval(x: &[f64], level: f64) -> (f64, f64, f64) {
    if x.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut s = x.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let lo = ((1.0 - level) / 2.0 * n as f64).floor() as usize;
    let hi = (((1.0 + level) / 2.0 * n as f64).ceil() as usize).clamp(1, n) - 1;
    (mean(x), s[lo.min(n - 1)], s[hi])
}

/// Jaccard overlap |A ∩ B| / |A ∪ B| of two index sets (duplicates ignored); 1 when both are
/// empty (two empty sets agree).
pub fn jaccard(a: &[usize], b: &[usize]) -> f64 {
    let a: std::collections::BTreeSet<usize> = a.iter().copied().collect();
    let b: std::collections::BTreeSet<usize> = b.iter().copied().collect();
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// The Jaccard index expected by chance for independent random sets of sizes `a` and `b` drawn
/// from `n` elements, as the ratio of expectations E|A∩B| / E|A∪B| = (ab/n) / (a + b − ab/n)
/// (the expectation of the ratio differs by O(1/n); enough as a reference line). NaN when both
/// sets are empty.
pub fn jaccard_chance(a: usize, b: usize, n: usize) -> f64 {
    assert!(a <= n && b <= n, "jaccard_chance: set sizes {a}, {b} exceed the universe {n}");
    let inter = (a * b) as f64 / n.max(1) as f64;
    let union = (a + b) as f64 - inter;
    if union <= 0.0 {
        return f64::NAN;
    }
    inter / union
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaccard_hand_case() {
        // {1,2,3} vs {2,3,4,5}: intersection {2,3}, union {1,..,5}: 2/5
        assert!((jaccard(&[1, 2, 3], &[5, 4, 3, 2]) - 0.4).abs() < 1e-12);
        assert_eq!(jaccard(&[1, 1, 2], &[2, 1]), 1.0);
        assert_eq!(jaccard(&[1], &[2]), 0.0);
        assert_eq!(jaccard(&[], &[]), 1.0);
        assert_eq!(jaccard(&[], &[7]), 0.0);
    }

    #[test]
    fn jaccard_chance_hand_cases() {
        // sizes 3 and 3 of 5: E|A∩B| = 9/5 = 1.8, E|A∪B| = 6 − 1.8 = 4.2 → 1.8 / 4.2 = 3/7
        assert!((jaccard_chance(3, 3, 5) - 3.0 / 7.0).abs() < 1e-12);
        // both sets everything: total overlap; one empty set: none
        assert_eq!(jaccard_chance(4, 4, 4), 1.0);
        assert_eq!(jaccard_chance(0, 2, 4), 0.0);
        assert!(jaccard_chance(0, 0, 4).is_nan());
    }

    #[test]
    fn head_detection_score_mul_hand_case() {
        // 3×3 lower-triangular pattern; detection ones at (2, 1) and (1, 1).
        let a = [1.0f32, 0.0, 0.0, 0.5, 0.5, 0.0, 0.2, 0.6, 0.2];
        let d = [(2, 1), (1, 1)];
        assert!((head_detection_score_mul(&a, 3, &d, false, false) - (0.6 + 0.5) / 3.0).abs() < 1e-6);
        // without BOS: total 0.5 + 0.6 + 0.2 = 1.3
        assert!((head_detection_score_mul(&a, 3, &d, true, false) - 1.1 / 1.3).abs() < 1e-6);
        // without the diagonal: total 0.5 + 0.2 + 0.6 = 1.3, hit 0.6
        assert!((head_detection_score_mul(&a, 3, &d, false, true) - 0.6 / 1.3).abs() < 1e-6);
    }

    #[test]
    fn recovery_fraction_hand_cases() {
        assert_eq!(recovery_fraction(2.0, 4.0, 3.0), 0.5);
        assert_eq!(recovery_fraction(2.0, 4.0, 2.0), 1.0);
        assert_eq!(recovery_fraction(2.0, 4.0, 5.0), -0.5);
        assert!(recovery_fraction(2.0, 2.0, 3.0).is_nan());
    }

    use candle_core::Device;

    fn t2(v: &[f32], r: usize, c: usize) -> Tensor {
        Tensor::from_vec(v.to_vec(), (r, c), &Device::Cpu).unwrap()
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        // the upper middle element (3) or the mean (2.5) would be wrong
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn nll_of_uniform_logits_is_ln_vocab() {
        // 4-way uniform logits: every next token has NLL ln 4.
        let logits = Tensor::zeros((1, 3, 4), DType::F32, &Device::Cpu).unwrap();
        let toks = Tensor::new(&[[0u32, 2, 3]], &Device::Cpu).unwrap();
        let nll = next_token_nll(&logits, &toks).unwrap().to_vec2::<f32>().unwrap();
        for v in &nll[0] {
            assert!((v - 4f32.ln()).abs() < 1e-6);
        }
        // logits [ln 1, ln 3] → p = [1/4, 3/4]: NLL of token 1 = ln(4/3)
        let logits = Tensor::new(&[[[0f32, 3f32.ln()], [0., 0.]]], &Device::Cpu).unwrap();
        let toks = Tensor::new(&[[0u32, 1]], &Device::Cpu).unwrap();
        let v = next_token_nll(&logits, &toks).unwrap().to_vec2::<f32>().unwrap()[0][0];
        assert!((v - (4f32 / 3.).ln()).abs() < 1e-6);
    }

    #[test]
    fn kl_hand_case() {
        // P = [1/2, 1/2], Q = [1/4, 3/4]: KL = 1/2 ln 2 + 1/2 ln(2/3)
        let p = t2(&[0., 0.], 1, 2);
        let q = t2(&[0., 3f32.ln()], 1, 2);
        let kl = kl_from_logits(&p, &q).unwrap().to_vec1::<f32>().unwrap()[0];
        let want = 0.5 * 2f32.ln() + 0.5 * (2f32 / 3.).ln();
        assert!((kl - want).abs() < 1e-6, "{kl} vs {want}");
        assert!(kl_from_logits(&p, &p).unwrap().to_vec1::<f32>().unwrap()[0].abs() < 1e-7);
    }

    #[test]
    fn js_hand_cases() {
        // disjoint supports: ln 2; identical: 0; P=[1,0], Q=[1/2,1/2]: M=[3/4,1/4],
        // JS = 1/2 (ln(4/3)) + 1/2 (1/2 ln(2/3) + 1/2 ln 2)
        let p = t2(&[1., 0., 1., 0., 1., 0.], 3, 2);
        let q = t2(&[0., 1., 1., 0., 0.5, 0.5], 3, 2);
        let js = js_divergence(&p, &q).unwrap().to_vec1::<f32>().unwrap();
        assert!((js[0] - 2f32.ln()).abs() < 1e-6);
        assert!(js[1].abs() < 1e-7);
        let want = 0.5 * (4f32 / 3.).ln() + 0.5 * (0.5 * (2f32 / 3.).ln() + 0.5 * 2f32.ln());
        assert!((js[2] - want).abs() < 1e-6, "{} vs {want}", js[2]);
    }

    #[test]
    fn cosine_and_drift_hand_cases() {
        let a = t2(&[1., 0., 3., 4.], 2, 2);
        let b = t2(&[0., 1., 3., 4.], 2, 2);
        let c = cosine_rows(&a, &b).unwrap().to_vec1::<f32>().unwrap();
        assert!(c[0].abs() < 1e-7 && (c[1] - 1.).abs() < 1e-6);
        // ‖(1,0)-(0,1)‖/‖(1,0)‖ = √2; second row 0
        let d = rel_l2_rows(&a, &b).unwrap().to_vec1::<f32>().unwrap();
        assert!((d[0] - 2f32.sqrt()).abs() < 1e-6 && d[1].abs() < 1e-7);
    }

    #[test]
    fn correlations_hand_cases() {
        assert!((pearson(&[1., 2., 3.], &[2., 4., 6.]) - 1.0).abs() < 1e-12);
        assert!((pearson(&[1., 2., 3.], &[3., 2., 1.]) + 1.0).abs() < 1e-12);
        // x = [1,2,3,4], y = [1,3,2,4]: r = 0.8
        assert!((pearson(&[1., 2., 3., 4.], &[1., 3., 2., 4.]) - 0.8).abs() < 1e-12);
        assert!(pearson(&[1., 1.], &[1., 2.]).is_nan());
        assert_eq!(ranks(&[10., 20., 20., 5.]), vec![2., 3.5, 3.5, 1.]);
        // monotone but nonlinear → Spearman 1
        assert!((spearman(&[1., 2., 3., 4.], &[1., 8., 27., 64.]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn summary_statistics() {
        assert_eq!(mean(&[1., 2., 3., 6.]), 3.0);
        // sample sd of [2,4,4,4,5,5,7,9] = sqrt(32/7)
        assert!((std_dev(&[2., 4., 4., 4., 5., 5., 7., 9.]) - (32f64 / 7.).sqrt()).abs() < 1e-12);
        let (m, lo, hi) = bootstrap_mean_ci(&[1., 2., 3., 4., 5.], 2000, 0.95, 0);
        assert_eq!(m, 3.0);
        assert!(lo < 3.0 && hi > 3.0 && lo >= 1.0 && hi <= 5.0);
        assert_eq!(bootstrap_mean_ci(&[1., 2., 3.], 100, 0.95, 4), bootstrap_mean_ci(&[1., 2., 3.], 100, 0.95, 4));
        // two values 0 and 2: sd √2, half width 12.706 · √2 / √2
        assert!((t_ci95_half_width(&[0., 2.]) - 12.706).abs() < 1e-9);
    }
    #[test]
    fn roc_auc_hand_cases() {
        // positives {0.9, 0.4}, negatives {0.5, 0.1}: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) → 3/4
        assert!((roc_auc(&[0.9, 0.5, 0.4, 0.1], &[true, false, true, false]) - 0.75).abs() < 1e-12);
        // a tie between a positive and a negative counts ½: (1 + ½) / 2
        assert!((roc_auc(&[0.8, 0.3, 0.3], &[true, true, false]) - 0.75).abs() < 1e-12);
        assert_eq!(roc_auc(&[1., 2.], &[false, false]).is_nan(), true);
    }

    #[test]
    fn logistic_regression_recovers_a_known_model() {
        // labels drawn from P(y=1|x) = σ(0.5 + 2x): the fit recovers the coefficients
        let mut rng = Rng::new(1);
        let x: Vec<Vec<f64>> = (0..4000).map(|_| vec![rng.normal()]).collect();
        let y: Vec<bool> = x.iter().map(|r| rng.uniform() < 1.0 / (1.0 + (-(0.5 + 2.0 * r[0])).exp())).collect();
        let w = logistic_fit(&x, &y, 1e-6).unwrap();
        assert!((w[0] - 0.5).abs() < 0.15 && (w[1] - 2.0).abs() < 0.2, "{w:?}");
        // separable x = [−1, 1], y = [0, 1]: unpenalised the fit diverges; with l2 = 1 the
        // intercept is 0 by symmetry and the slope solves w = 2σ(−w) (≈ 0.659)
        let w = logistic_fit(&[vec![-1.0], vec![1.0]], &[false, true], 1.0).unwrap();
        assert!(w[0].abs() < 1e-9 && w[1] > 0.5 && w[1].is_finite(), "{w:?}");
        let s = 1.0 / (1.0 + w[1].exp());
        assert!((2.0 * s - w[1]).abs() < 1e-8, "{w:?}");
        assert!((logistic_predict(&[0.0, 1.0], &[0.0]) - 0.5).abs() < 1e-12);
        let auc = cv_logistic_auc(&x, &y, 5, 1e-3, 0).unwrap();
        assert!(auc > 0.8 && auc < 0.95, "{auc}");
        assert!(cv_logistic_auc(&x[..3], &y[..3], 5, 1e-3, 0).unwrap().is_nan());
        assert_eq!(solve_linear(vec![vec![2., 1.], vec![1., 3.]], vec![3., 5.]).unwrap(), vec![0.8, 1.4]);
    }

    #[test]
    fn top_k_overlap_hand_case() {
        // top-2 of a = {0, 1}, of b = {1, 3}: one shared → ½
        assert_eq!(top_k_overlap(&[5., 4., 1., 0.], &[0., 4., 1., 9.], 2), 0.5);
        assert_eq!(top_k_overlap(&[1., 2.], &[1., 2.], 5), 1.0);
    }

    #[test]
    fn active_top_k_overlap_compares_only_firing_tokens() {
        // The feature fires on 3 of 20 tokens; the twin keeps those 3 and adds weak firing on
        // 7 others. Ranking all tokens, the reference's top 10 is {10, 11, 12} padded with the
        // zero tokens 0..6 by index, the twin's {10..19}: overlap 3/10. Among firing tokens
        // (k' = 3) the strongest three agree: 1.
        let mut p = vec![0.0; 20];
        p[10..13].copy_from_slice(&[3.0, 2.0, 1.0]);
        let mut q = p.clone();
        q[13..20].iter_mut().for_each(|v| *v = 0.1);
        assert_eq!(top_k_overlap(&p, &q, 10), 0.3);
        assert_eq!(active_top_k_overlap(&p, &q, 10), 1.0);
        // a twin that never fires: the old rule scores 7/10 (the index-chosen zeros agree), the
        // new one 0
        let dead = vec![0.0; 20];
        assert_eq!(top_k_overlap(&p, &dead, 10), 0.7);
        assert_eq!(active_top_k_overlap(&p, &dead, 10), 0.0);
        // the twin fires on only one of the three: 1/3; and k below the firing count ranks by value
        assert_eq!(active_top_k_overlap(&p, &[&[0.0; 10][..], &[0.0, 0.0, 5.0], &[0.0; 7][..]].concat(), 10), 1.0 / 3.0);
        let q2: Vec<f64> = p.iter().enumerate().map(|(i, &v)| if i == 10 { 0.5 } else { v }).collect();
        assert_eq!(active_top_k_overlap(&p, &q2, 2), 0.5); // top-2 {10, 11} vs {11, 12}
        assert!(active_top_k_overlap(&dead, &p, 10).is_nan());
    }

    #[test]
    fn cluster_bootstrap_resamples_sequences_not_tokens() {
        // 12 sequences, each a constant value repeated over its tokens (perfectly correlated
        // tokens). Resampling sequences gives the sequence-level interval whatever the length;
        // resampling tokens narrows it roughly as 1/√tokens.
        let seq_means: Vec<f64> = (0..12).map(|i| ((i * 7) % 12) as f64 / 4.0).collect();
        let (m1, lo1, hi1) = bootstrap_mean_ci(&seq_means, 2000, 0.95, 5);
        for len in [1, 50] {
            let tokens: Vec<f64> = seq_means.iter().flat_map(|&v| std::iter::repeat_n(v, len)).collect();
            let (m, lo, hi) = cluster_bootstrap_mean_ci(&tokens, &[len; 12], 2000, 0.95, 5).unwrap();
            assert!((m - m1).abs() < 1e-12 && (lo - lo1).abs() < 1e-12 && (hi - hi1).abs() < 1e-12, "{len}: {lo}..{hi} vs {lo1}..{hi1}");
        }
        let tokens: Vec<f64> = seq_means.iter().flat_map(|&v| std::iter::repeat_n(v, 50)).collect();
        let (_, lo, hi) = bootstrap_mean_ci(&tokens, 2000, 0.95, 5);
        assert!(hi - lo < 0.3 * (hi1 - lo1), "token bootstrap {} vs sequence {}", hi - lo, hi1 - lo1);
        // unequal sizes: the statistic is the token mean of the drawn sequences
        let (m, lo, hi) = cluster_bootstrap_mean_ci(&[1.0, 1.0, 1.0, 4.0], &[3, 1], 500, 0.95, 1).unwrap();
        assert_eq!(m, 1.75);
        assert!(lo == 1.0 && hi == 4.0, "{lo} {hi}"); // all-first or all-second draws bound it
        assert!(cluster_bootstrap_mean_ci(&[1.0, 2.0], &[3], 10, 0.95, 0).unwrap_err().to_string().contains("sum to 3"));
    }

    #[test]
    fn ece_and_ace_hand_cases() {
        // confidences 0.1, 0.3, 0.8, 0.9 with 2 equal-width bins: [0.1, 0.3] → conf 0.2, acc ½;
        // [0.8, 0.9] → conf 0.85, acc ½. ECE = ½·0.3 + ½·0.35 = 0.325
        let conf = [0.1, 0.3, 0.8, 0.9];
        let ok = [false, true, true, false];
        let bins = calibration_bins(&conf, &ok, 2, false);
        assert_eq!(bins.len(), 2);
        assert!((calibration_error(&bins) - 0.325).abs() < 1e-12);
        // 4 equal-mass bins of one prediction each: |0−0.1| + |1−0.3| + |1−0.8| + |0−0.9| over 4 = 0.475
        let bins = calibration_bins(&conf, &ok, 4, true);
        assert!(bins.iter().all(|b| b.count == 1));
        assert!((calibration_error(&bins) - 0.475).abs() < 1e-12);
        // equal-width: confidence 1.0 lands in the last bin; empty bins are dropped
        let bins = calibration_bins(&[1.0, 0.95], &[true, true], 10, false);
        assert_eq!(bins.len(), 1);
        assert!((calibration_error(&bins) - 0.025).abs() < 1e-12);
    }

    #[test]
    fn pearson_rows_and_top_k_hand_cases() {
        // row 1: y = 2x + 1 → r = 1; row 2: x = [1,2,3,4], y = [1,3,2,4] → r = 0.8 (as above)
        let a = t2(&[1., 2., 3., 4., 1., 2., 3., 4.], 2, 4);
        let b = t2(&[3., 5., 7., 9., 1., 3., 2., 4.], 2, 4);
        let r = pearson_rows(&a, &b).unwrap().to_vec1::<f32>().unwrap();
        assert!((r[0] - 1.0).abs() < 1e-6 && (r[1] - 0.8).abs() < 1e-6, "{r:?}");
        let x = [0.1f32, 0.5, 0.3, 0.5, -1.0];
        assert_eq!(top_k_indices(&x, 3), vec![1, 3, 2]);
        assert_eq!(top_k_indices(&x, 9).len(), 5);
        // top-2 of p = {1, 3}; top-2 of q = {0, 3} → overlap 1/2
        assert_eq!(top_k_overlap(&x, &[0.9, 0.0, 0.0, 0.8, 0.0], 2), 0.5);
        assert_eq!(top_k_overlap(&x, &x, 1), 1.0);
        assert_eq!((rank_of(&x, 1), rank_of(&x, 3), rank_of(&x, 2), rank_of(&x, 4)), (1, 1, 3, 5));
    }
    #[test]
    fn best_matches_use_absolute_cosine_and_mutual_neighbours() {
        let dev = candle_core::Device::Cpu;
        // a: e1, e2, (e1+e2)/√2 ; b: −e1, 3·e2
        let a = Tensor::new(&[[1f32, 0.], [0., 1.], [1., 1.]], &dev).unwrap();
        let b = Tensor::new(&[[-1f32, 0.], [0., 3.]], &dev).unwrap();
        let m = best_matches(&a, &b).unwrap();
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert!((m.cos[0] - 1.0).abs() < 1e-6 && (m.cos[1] - 1.0).abs() < 1e-6 && (m.cos[2] - h).abs() < 1e-6, "{:?}", m.cos);
        assert_eq!(&m.a_to_b[..2], &[0, 1]);
        assert_eq!(m.b_to_a, vec![0, 1]);
        // the third row's best match (either) points back to row 0 or 1, not 2
        assert_eq!(mutual_nearest(&m.a_to_b, &m.b_to_a), vec![true, true, false]);
    }

    fn matmul_t(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
        // a · bᵀ
        a.iter().map(|r| b.iter().map(|c| r.iter().zip(c).map(|(x, y)| x * y).sum()).collect()).collect()
    }

    #[test]
    fn jacobi_svd_hand_case_and_reconstruction() {
        // diag(3, −2): singular values 3 and 2
        let (u, s, v) = jacobi_svd(&[vec![3.0, 0.0], vec![0.0, -2.0]]).unwrap();
        let mut sorted = s.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        assert!((sorted[0] - 3.0).abs() < 1e-12 && (sorted[1] - 2.0).abs() < 1e-12);
        // [[1, 1], [0, 0]] has singular values √2 and 0 (U completed to an orthogonal matrix)
        let m = vec![vec![1.0, 1.0], vec![0.0, 0.0]];
        let (u2, s2, _) = jacobi_svd(&m).unwrap();
        let mut ss = s2.clone();
        ss.sort_by(|a, b| b.total_cmp(a));
        assert!((ss[0] - 2f64.sqrt()).abs() < 1e-12 && ss[1].abs() < 1e-12);
        let utu = matmul_t(&transpose(&u2), &transpose(&u2));
        assert!((utu[0][0] - 1.0).abs() < 1e-12 && utu[0][1].abs() < 1e-12 && (utu[1][1] - 1.0).abs() < 1e-12);
        // U diag(s) Vᵀ reconstructs a random matrix
        let mut rng = Rng::new(3);
        let r: Vec<Vec<f64>> = (0..5).map(|_| (0..5).map(|_| rng.normal()).collect()).collect();
        for (m, (u, s, v)) in [(vec![vec![3.0, 0.0], vec![0.0, -2.0]], (u, s, v)), (r.clone(), jacobi_svd(&r).unwrap())] {
            let us: Vec<Vec<f64>> = u.iter().map(|row| row.iter().zip(&s).map(|(a, b)| a * b).collect()).collect();
            let back = matmul_t(&us, &v);
            for (x, y) in back.iter().flatten().zip(m.iter().flatten()) {
                assert!((x - y).abs() < 1e-10, "{back:?} vs {m:?}");
            }
        }
    }

    fn transpose(m: &[Vec<f64>]) -> Vec<Vec<f64>> {
        (0..m[0].len()).map(|j| m.iter().map(|r| r[j]).collect()).collect()
    }

    #[test]
    fn procrustes_recovers_a_rotation_and_is_orthogonal() {
        let dev = candle_core::Device::Cpu;
        // B = A rotated by 90°: R = [[0, 1], [−1, 0]] (x ↦ x R), residual 0
        let a = Tensor::new(&[[1f32, 0.], [0., 2.], [1., 1.]], &dev).unwrap();
        let b = Tensor::new(&[[0f32, 1.], [-2., 0.], [-1., 1.]], &dev).unwrap();
        let m: Vec<Vec<f64>> = a.t().unwrap().matmul(&b).unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec2().unwrap();
        let r = procrustes_rotation(&m).unwrap();
        let want = [[0.0, 1.0], [-1.0, 0.0]];
        for i in 0..2 {
            for j in 0..2 {
                assert!((r[i][j] - want[i][j]).abs() < 1e-9, "{r:?}");
            }
        }
        assert!(procrustes_residual(&a, &b).unwrap() < 1e-6);
        // a scaled copy cannot be matched by a rotation: residual ‖A − 2A‖/‖2A‖ = ½
        assert!((procrustes_residual(&a, &(&a * 2.0).unwrap()).unwrap() - 0.5).abs() < 1e-6);
        // RᵀR = I for a random matrix
        let mut rng = Rng::new(7);
        let m: Vec<Vec<f64>> = (0..6).map(|_| (0..6).map(|_| rng.normal()).collect()).collect();
        let r = procrustes_rotation(&m).unwrap();
        let rtr = matmul_t(&transpose(&r), &transpose(&r));
        for i in 0..6 {
            for j in 0..6 {
                assert!((rtr[i][j] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn linear_cka_hand_cases_in_both_forms() {
        let dev = candle_core::Device::Cpu;
        // X = [[1,0],[−1,0],[0,1],[0,−1]], Y = its first column: ‖YᵀX‖² = 4, ‖XᵀX‖ = 2√2, ‖YᵀY‖ = 2
        let x = Tensor::new(&[[1f32, 0.], [-1., 0.], [0., 1.], [0., -1.]], &dev).unwrap();
        let y = Tensor::new(&[[1f32], [-1.], [0.], [0.]], &dev).unwrap();
        for gram in [false, true] {
            assert!((linear_cka_form(&x, &y, gram).unwrap() - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
            // invariant to an affine map of a single column; 1 with itself
            let z = ((&y * 2.0).unwrap() + 1.0).unwrap();
            assert!((linear_cka_form(&y, &z, gram).unwrap() - 1.0).abs() < 1e-6);
        }
        assert!((linear_cka(&x, &y).unwrap() - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        let c = Tensor::new(&[[1f32], [1.], [1.], [1.]], &dev).unwrap();
        assert!(linear_cka(&x, &c).unwrap().is_nan());
    }

    #[test]
    fn debiased_cka_hand_case() {
        let dev = candle_core::Device::Cpu;
        // by hand (exact fractions): HSIC₁(K, L) = −26/15, HSIC₁(K, K) = 8, HSIC₁(L, L) = 7/6
        let x = Tensor::new(&[[1f32, 0.], [2., 1.], [3., 0.], [5., 2.], [0., 1.]], &dev).unwrap();
        let y = Tensor::new(&[[1f32], [0.], [1.], [3.], [2.]], &dev).unwrap();
        let want = (-26.0 / 15.0) / (8.0f64 * 7.0 / 6.0).sqrt();
        assert!((debiased_linear_cka(&x, &y).unwrap() - want).abs() < 1e-9);
        // 1 with an affine copy of itself; too few tokens is an error
        assert!((debiased_linear_cka(&x, &((&x * 3.0).unwrap() + 1.0).unwrap()).unwrap() - 1.0).abs() < 1e-9);
        assert!(debiased_linear_cka(&x.narrow(0, 0, 3).unwrap(), &y.narrow(0, 0, 3).unwrap()).is_err());
        // unrelated wide random matrices: plain CKA is large, the debiased one near 0
        let mut rng = Rng::new(5);
        let mut g = |r: usize, c: usize| Tensor::from_vec((0..r * c).map(|_| rng.normal() as f32).collect::<Vec<_>>(), (r, c), &dev).unwrap();
        let (a, b) = (g(20, 400), g(20, 400));
        assert!(linear_cka(&a, &b).unwrap() > 0.8);
        assert!(debiased_linear_cka(&a, &b).unwrap().abs() < 0.2);
    }

    #[test]
    fn firing_classes_split_at_the_thresholds() {
        let f = [0.0, 0.005, 0.01, 0.3, 0.5, 0.9, 0.0, 0.2];
        assert_eq!(firing_classes(&f, 0.01, 0.5), [0.25, 0.125, 0.375, 0.25]);
    }

    #[test]
    fn paired_permutation_p_values() {
        // no difference: every flip reaches |0| → p = 1
        assert_eq!(paired_permutation_p(&[1.0, 2.0], &[1.0, 2.0], 100, 0), 1.0);
        // d = [1, 1, 1]: 2 of the 8 sign patterns reach |mean| = 1 → p ≈ 0.25
        let p = paired_permutation_p(&[2.0, 2.0, 2.0], &[1.0, 1.0, 1.0], 4000, 1);
        assert!((p - 0.25).abs() < 0.03, "{p}");
        // a large consistent difference: p at its floor 1/(1 + n_perm)
        let x: Vec<f64> = (0..40).map(|i| i as f64 + 1.0).collect();
        let y: Vec<f64> = x.iter().map(|v| v - 1.0).collect();
        assert!((paired_permutation_p(&x, &y, 999, 2) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn mean_and_interval_of_draws() {
        let (m, lo, hi) = mean_and_interval(&[3.0, 1.0, 2.0, 4.0], 0.5);
        assert_eq!((m, lo, hi), (2.5, 2.0, 3.0));
        assert_eq!(mean_and_interval(&[5.0], 0.95), (5.0, 5.0, 5.0));
    }
}
