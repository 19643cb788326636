//! Induction heads: which heads copy from the previous occurrence of the current token, and do they
//! stay induction heads in the quantized twins?
//!
//! Inputs are `[BOS] r r` with `r` a seeded run of `seq_len` uniform random tokens (special tokens
//! excluded; no BOS when the model has none). Per head and model:
//!
//! * `stripe_score`: mean attention from each second-half query `q` to the token after its earlier
//!   occurrence, `q − seq_len + 1` (mean over the `seq_len` second-half queries and the sequences);
//! * `mul_score`: TransformerLens `head_detector` with `detection_pattern="induction_head"` and
//!   `error_measure="mul"`: per sequence `Σ(A ⊙ D) / Σ A` over the whole `[t, t]` pattern, where
//!   `D[i, j] = 1` iff `1 ≤ j ≤ i` and `tokens[j − 1] == tokens[i]` with `j − 1 ≠ i` (the duplicate-token
//!   pattern shifted one key right, first column zeroed); averaged over sequences as TransformerLens
//!   does for a list of inputs. With the defaults (no exclusions) `Σ A = t`, so a perfect induction
//!   head scores `seq_len / t ≈ 0.49`, not 1.
//!
//! Detection (per score kind, over every head of one model): `threshold` (score ≥ `threshold`) and
//! `sigma` (score ≥ mean + `sigma_k`·sd of that model's scores over all heads, sample sd). A head
//! detected in the reference **survives** in a twin under a rule if the same rule, applied to the
//! twin's own scores (for `sigma`: the twin's own mean + k·sd), detects it there too. `survival` is
//! the fraction of reference-detected heads that survive (NaN when the reference detects none).
//!
//! `original` (stripe score only): the rule of the study that motivated qi
//! (lciric/does-quantization-kill-interpretability, `analysis/circuit_analysis.py`): a reference
//! head is detected if its score is **strictly** above mean + 2σ with the *population* σ over all
//! heads, and it survives if the twin's score is above **half** of that reference cut-off. With
//! `original_tokens = true` the random tokens are drawn, like that study's, uniformly from
//! `[100, vocab − 100)` (its torch generator seed 42 cannot be reproduced here; qi's seeds apply).
//! qi's defaults differ on purpose: the twin is judged by its own scores under the same rule, the
//! reference cut-off is not halved, and special tokens rather than a fixed id band are excluded.
//!
//! Also: `pearson_r` of all heads' scores reference vs twin, and `induction_loss`, the mean
//! next-token loss (nats) on the repeated half: predictions of second-half tokens 2..seq_len (the
//! first token of the second half is not predictable from context).
//!
//! Multi-seed: `run_seeds(&find("induction")?, &cmp, &opts, &seeds)` then `Tidy::mean_over_seeds`
//! (t-based 95% CIs over seeds); see [`run_over_seeds`].
use super::plots::{self, Labels};
use super::tidy::{f64_values, filter_eq, str_values};
use super::{batches, pad_id, special_ids, Analysis, Comparison, Entry, Row, Tidy, REFERENCE};
use crate::batch::Batch;
use crate::hooks::names;
use crate::metrics;
use crate::{HookedTransformer, QiError};
use anyhow::Result;
use candle_core::{DType, Tensor};
use plotly::Plot;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Repeated random token rows `[BOS] r r`.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatedTokens {
    pub rows: Vec<Vec<u32>>,
    /// Position of the first random token (1 with a BOS, else 0).
    pub offset: usize,
    /// Length of `r`.
    pub half: usize,
}

impl RepeatedTokens {
    /// Tokens per row.
    pub fn len(&self) -> usize {
        self.offset + 2 * self.half
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The induction inputs: `n_seqs` rows of `[BOS] r r`, `r` = `seq_len` seeded uniform tokens without
/// the model's special tokens. The one generator every circuit analysis uses.
pub fn repeated_tokens(model: &HookedTransformer, n_seqs: usize, seq_len: usize, seed: u64) -> Result<RepeatedTokens> {
    repeated_tokens_in(model, n_seqs, seq_len, seed, None)
}

/// [`repeated_tokens`] with the tokens drawn uniformly from `range` (`[lo, hi)`) instead of the
/// whole vocabulary minus the special tokens (the original study's `[100, vocab − 100)`).
pub fn repeated_tokens_in(model: &HookedTransformer, n_seqs: usize, seq_len: usize, seed: u64, range: Option<(u32, u32)>) -> Result<RepeatedTokens> {
    if let Some((lo, hi)) = range {
        if lo >= hi || hi as usize > model.cfg.d_vocab {
            return Err(QiError::invalid("token range", format!("[{lo}, {hi})"), format!("expected a non-empty range inside the vocabulary of {}", model.cfg.d_vocab)).into());
        }
    }
    if n_seqs == 0 {
        return Err(QiError::invalid("n_seqs", n_seqs, "need at least one sequence").into());
    }
    if seq_len < 2 {
        return Err(QiError::invalid("seq_len", seq_len, "the repeated run needs at least 2 tokens").into());
    }
    let bos = model.tokenizer.as_ref().and_then(|t| t.bos_id()).or(model.cfg.bos_token_id);
    let offset = bos.is_some() as usize;
    if offset + 2 * seq_len > model.cfg.n_ctx {
        return Err(QiError::invalid("seq_len", seq_len, format!("[BOS] + 2 × seq_len must fit the model's context of {} tokens", model.cfg.n_ctx)).into());
    }
    let mut rng = crate::rng::Rng::new(seed);
    let exclude = special_ids(model);
    let rows = (0..n_seqs)
        .map(|_| {
            let r: Vec<u32> = match range {
                Some((lo, hi)) => (0..seq_len).map(|_| lo + rng.below((hi - lo) as u64) as u32).collect(),
                None => rng.tokens(seq_len, model.cfg.d_vocab, &exclude),
            };
            bos.into_iter().chain(r.iter().copied()).chain(r.iter().copied()).collect()
        })
        .collect();
    Ok(RepeatedTokens { rows, offset, half: seq_len })
}

/// Batches with, per batch, a `[b, p − 1]` f32 mask of the next-token predictions a loss averages
/// over (padding never counts). Shared by the circuit analyses for their loss metrics.
#[derive(Debug, Clone)]
pub struct LossInputs {
    pub batches: Vec<Batch>,
    pub masks: Vec<Tensor>,
    /// Number of counted predictions over all batches.
    pub count: f64,
}

impl LossInputs {
    /// Induction loss inputs: predictions of the second-half tokens after the first
    /// (positions `offset + half ..= offset + 2·half − 2` predict the next token).
    pub fn induction(model: &HookedTransformer, set: &RepeatedTokens, batch_size: usize) -> Result<Self> {
        let from = set.offset + set.half;
        let to = set.offset + 2 * set.half - 2;
        Self::build(batches(&set.rows, batch_size, pad_id(model))?, |q| q >= from && q <= to)
    }

    /// Text loss inputs (`source` as in [`super::text_windows`]): every next-token prediction.
    pub fn text(model: &HookedTransformer, source: &str, n: usize, seqlen: usize, seed: u64, batch_size: usize) -> Result<Self> {
        let rows = super::text_windows(model, source, n, seqlen, seed)?;
        Self::build(batches(&rows, batch_size, pad_id(model))?, |_| true)
    }

    fn build(batches: Vec<Batch>, counted: impl Fn(usize) -> bool) -> Result<Self> {
        let mut masks = Vec::with_capacity(batches.len());
        let mut count = 0.0;
        for b in &batches {
            let m = metrics::next_token_mask(&b.valid_mask()?)?;
            let (rows, p1) = m.dims2()?;
            let sel: Vec<f32> = (0..rows * p1).map(|i| counted(i % p1) as u8 as f32).collect();
            let m = (m * Tensor::from_vec(sel, (rows, p1), b.tokens.device())?)?;
            count += m.sum_all()?.to_scalar::<f32>()? as f64;
            masks.push(m);
        }
        if count == 0.0 {
            return Err(QiError::invalid("inputs", "no counted predictions", "the loss would average over nothing").into());
        }
        Ok(LossInputs { batches, masks, count })
    }

    /// Batch `i`'s share of the mean loss, as a scalar tensor (differentiable): Σ nll·mask / count.
    pub fn loss_tensor(&self, i: usize, logits: &Tensor) -> Result<Tensor> {
        let nll = metrics::next_token_nll(logits, &self.batches[i].tokens)?;
        Ok(((nll * &self.masks[i])?.sum_all()? / self.count)?)
    }

    /// The mean loss (nats) with `logits_of(i, batch)` giving each batch's logits.
    pub fn loss(&self, mut logits_of: impl FnMut(usize, &Batch) -> Result<Tensor>) -> Result<f64> {
        let mut total = 0.0;
        for (i, b) in self.batches.iter().enumerate() {
            total += self.loss_tensor(i, &logits_of(i, b)?)?.to_scalar::<f32>()? as f64;
        }
        Ok(total)
    }
}

/// The `options_doc` lines of [`LossTarget`] (defaults as in its `Default`), with the analysis's own
/// `target:` line, as one literal so an analysis can `concat!` its own lines after it.
macro_rules! loss_target_doc {
    () => {
        loss_target_doc!("target: induction (loss on the repeated half) or text (loss on text windows) (default induction)")
    };
    ($target_line:literal) => {
        concat!(
            "n_seqs: random [BOS] r r sequences for the induction loss (default 10)\n",
            "seq_len: length of r (default 25)\n",
            "batch_size: sequences per forward pass (default 10)\n",
            $target_line,
            "\n",
            "text_source: wikitext2, c4, random or a text file path for the text loss (default wikitext2)\n",
            "text_windows: text windows for the text loss (default 4)\n",
            "text_seqlen: tokens per text window (default 64)"
        )
    };
}
pub(crate) use loss_target_doc;

/// The loss a causal analysis measures (ablation, patching, attribution share it through
/// `#[serde(flatten)]`, so their options read the same): the induction loss on `n_seqs` random
/// `[BOS] r r` sequences with `|r| = seq_len`, or the next-token loss on text windows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LossTarget {
    pub n_seqs: usize,
    pub seq_len: usize,
    pub batch_size: usize,
    /// `induction` or `text` (ablation also takes `both`).
    pub target: String,
    pub text_source: String,
    pub text_windows: usize,
    pub text_seqlen: usize,
}

impl Default for LossTarget {
    fn default() -> Self {
        LossTarget { n_seqs: 10, seq_len: 25, batch_size: 10, target: "induction".into(), text_source: "wikitext2".into(), text_windows: 4, text_seqlen: 64 }
    }
}

impl LossTarget {
    /// The random repeated sequences (also used for the attention drift, whatever the target).
    pub fn repeated(&self, model: &HookedTransformer, seed: u64) -> Result<RepeatedTokens> {
        repeated_tokens(model, self.n_seqs, self.seq_len, seed)
    }

    /// Loss inputs of the induction loss on `set`.
    pub fn induction(&self, model: &HookedTransformer, set: &RepeatedTokens) -> Result<LossInputs> {
        LossInputs::induction(model, set, self.batch_size)
    }

    /// Loss inputs of the text loss (windows drawn with `seed`).
    pub fn text(&self, model: &HookedTransformer, seed: u64) -> Result<LossInputs> {
        LossInputs::text(model, &self.text_source, self.text_windows, self.text_seqlen, seed, self.batch_size)
    }

    /// Loss inputs of the chosen `target` (`induction` or `text`).
    pub fn inputs(&self, model: &HookedTransformer, set: &RepeatedTokens, seed: u64) -> Result<LossInputs> {
        match self.target.as_str() {
            "induction" => self.induction(model, set),
            "text" => self.text(model, seed),
            t => Err(QiError::invalid("target", t, "expected induction or text").into()),
        }
    }
}

/// Mean attention from each second-half query `q` to key `q − half + 1` (the token after the
/// earlier occurrence of the current token), for one head's `[t, t]` pattern (row-major).
pub fn stripe_score(a: &[f32], t: usize, offset: usize, half: usize) -> f64 {
    assert!(offset + 2 * half <= t && a.len() == t * t, "stripe_score: pattern shape does not fit the sequence");
    let qs = offset + half..offset + 2 * half;
    qs.clone().map(|q| a[q * t + q - half + 1] as f64).sum::<f64>() / qs.len() as f64
}

/// TransformerLens's induction detection pattern for `tokens`, as its `(query, key)` ones:
/// `1 ≤ j ≤ i` and `tokens[j − 1] == tokens[i]` with `j − 1 ≠ i`.
pub fn induction_detection_pattern(tokens: &[u32]) -> Vec<(usize, usize)> {
    let mut ones = Vec::new();
    for i in 0..tokens.len() {
        for j in 1..=i {
            if j - 1 != i && tokens[j - 1] == tokens[i] {
                ones.push((i, j));
            }
        }
    }
    ones
}

/// Heads passing a fixed threshold (`score ≥ threshold`).
pub fn detect_threshold(scores: &[f64], threshold: f64) -> Vec<bool> {
    scores.iter().map(|&s| s >= threshold).collect()
}

/// The mean + k·sd cut-off over all heads' scores (sample sd).
pub fn sigma_cutoff(scores: &[f64], k: f64) -> f64 {
    metrics::mean(scores) + k * metrics::std_dev(scores)
}

/// The original study's detection cut-off: mean + k·σ with the population σ (numpy's default).
pub fn population_sigma_cutoff(scores: &[f64], k: f64) -> f64 {
    let n = scores.len() as f64;
    metrics::mean(scores) + k * metrics::std_dev(scores) * ((n - 1.0) / n).sqrt()
}

/// Fraction of reference-detected heads also detected in the twin, and how many the reference
/// detected (fraction NaN when none).
pub fn survival(reference: &[bool], twin: &[bool]) -> (f64, usize) {
    let n = reference.iter().filter(|&&d| d).count();
    let kept = reference.iter().zip(twin).filter(|(&r, &t)| r && t).count();
    (if n == 0 { f64::NAN } else { kept as f64 / n as f64 }, n)
}

/// Per-head scores `[layer][head]` of one model and its induction loss.
#[derive(Debug, Clone)]
pub struct HeadScores {
    pub stripe: Vec<Vec<f64>>,
    pub mul: Vec<Vec<f64>>,
    /// Mean attention from each query to the position before it (the previous-token head of the
    /// induction circuit), per sequence then over sequences.
    pub prev_token: Vec<Vec<f64>>,
    pub loss: f64,
}

/// Scores every head of `model` on `set` (batched as `inputs`, built from `set` with
/// [`LossInputs::induction`]); caches only the attention patterns.
pub fn head_scores(model: &HookedTransformer, set: &RepeatedTokens, inputs: &LossInputs, exclude_bos: bool, exclude_current_token: bool) -> Result<HeadScores> {
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    let (mut stripe, mut mul, mut prev) = (vec![vec![0.0; nh]; nl], vec![vec![0.0; nh]; nl], vec![vec![0.0; nh]; nl]);
    let mut loss = 0.0;
    let mut row0 = 0;
    for (bi, batch) in inputs.batches.iter().enumerate() {
        let (logits, cache) = model.run_with_cache(batch, "blocks.*.attn.hook_pattern")?;
        loss += inputs.loss_tensor(bi, &logits)?.to_scalar::<f32>()? as f64;
        let (b, t) = batch.tokens.dims2()?;
        let valid: Vec<usize> = batch.valid_mask()?.to_dtype(DType::U32)?.sum(1)?.to_vec1::<u32>()?.into_iter().map(|v| v as usize).collect();
        let detection: Vec<Vec<(usize, usize)>> = (0..b).map(|i| induction_detection_pattern(&set.rows[row0 + i])).collect();
        for l in 0..nl {
            let p: Vec<f32> = cache.get(&names::pattern(l))?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            for h in 0..nh {
                for i in 0..b {
                    let full = &p[((i * nh + h) * t) * t..((i * nh + h) * t + t) * t];
                    // Keep the real tokens only: the top-left valid × valid block (right padding).
                    let n = valid[i];
                    let a: Vec<f32> = (0..n).flat_map(|q| full[q * t..q * t + n].iter().copied()).collect();
                    stripe[l][h] += stripe_score(&a, n, set.offset, set.half);
                    mul[l][h] += metrics::head_detection_score_mul(&a, n, &detection[i], exclude_bos, exclude_current_token);
                    let (sum, count) = super::attention::prev_token_score(&a, n, n);
                    prev[l][h] += sum / count as f64;
                }
            }
        }
        row0 += b;
    }
    let n = set.rows.len() as f64;
    for l in 0..nl {
        for h in 0..nh {
            stripe[l][h] /= n;
            mul[l][h] /= n;
            prev[l][h] /= n;
        }
    }
    Ok(HeadScores { stripe, mul, prev_token: prev, loss })
}

/// Options of [`Induction`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct InductionOptions {
    pub n_seqs: usize,
    pub seq_len: usize,
    pub batch_size: usize,
    pub threshold: f64,
    pub sigma_k: f64,
    pub exclude_bos: bool,
    pub exclude_current_token: bool,
    /// Draw tokens from `[100, vocab − 100)` as the original study did.
    pub original_tokens: bool,
    pub seed: u64,
}

impl Default for InductionOptions {
    fn default() -> Self {
        InductionOptions { n_seqs: 50, seq_len: 25, batch_size: 10, threshold: 0.4, sigma_k: 2.0, exclude_bos: false, exclude_current_token: false, original_tokens: false, seed: 0 }
    }
}

/// The induction-head analysis (see the module docs).
pub struct Induction;

/// The score kinds, as named in the `score` label.
pub const SCORES: [&str; 2] = ["stripe", "mul"];
/// The detection rules, as named in the `rule` label.
pub const RULES: [&str; 3] = ["threshold", "sigma", "original"];

impl Analysis for Induction {
    const NAME: &'static str = "induction";
    const ABOUT: &'static str = "induction heads on [BOS] r r: stripe and TransformerLens mul scores, detection, survival in each twin, Pearson r, induction loss";
    type Options = InductionOptions;

    fn options_doc() -> &'static str {
        "n_seqs: number of random sequences (default 50)\n\
         seq_len: length of the random run r, repeated once after BOS (default 25)\n\
         batch_size: sequences per forward pass (default 10)\n\
         threshold: fixed detection threshold on a score (default 0.4)\n\
         sigma_k: k of the mean + k·sd detection rule over all heads of a model (default 2)\n\
         exclude_bos: mul score ignores attention to position 0 (TransformerLens option; default false)\n\
         exclude_current_token: mul score ignores the diagonal (TransformerLens option; default false)\n\
         original_tokens: draw tokens from [100, vocab - 100) as the original study did (default false)\n\
         seed: seeds the random tokens"
    }

    fn run(cmp: &Comparison, o: &InductionOptions) -> Result<Tidy> {
        if !(o.threshold.is_finite()) {
            return Err(QiError::invalid("threshold", o.threshold, "expected a finite number").into());
        }
        let v = cmp.reference.cfg.d_vocab as u32;
        let range = if o.original_tokens { Some((100.min(v), v.saturating_sub(100))) } else { None };
        let set = repeated_tokens_in(cmp.reference, o.n_seqs, o.seq_len, o.seed, range)?;
        let inputs = LossInputs::induction(cmp.reference, &set, o.batch_size)?;
        let all = cmp.all();
        let score = |m: &HookedTransformer| head_scores(m, &set, &inputs, o.exclude_bos, o.exclude_current_token);
        // the reference's scores depend only on it and the options (seed included): a study's
        // twin cells share them through the memo instead of running the reference again
        let memo_key = format!("induction head scores {}", serde_json::to_string(o)?);
        let scores: Vec<HeadScores> = all
            .iter()
            .map(|t| match cmp.reference_memo {
                Some(memo) if std::ptr::eq(t.model, cmp.reference) => memo.get_or_compute(&memo_key, || score(t.model)),
                _ => score(t.model),
            })
            .collect::<Result<_>>()?;
        let mut out = Tidy::new(cmp.name.clone());
        let n_seqs = set.rows.len();
        for (t, s) in all.iter().zip(&scores) {
            for l in 0..cmp.n_layers() {
                for h in 0..cmp.n_heads() {
                    out.push(Row::new(t.spec, "stripe_score", s.stripe[l][h]).layer(l).head(h).n(n_seqs));
                    out.push(Row::new(t.spec, "mul_score", s.mul[l][h]).layer(l).head(h).n(n_seqs));
                }
            }
            out.push(Row::new(t.spec, "induction_loss", s.loss).n(inputs.count as usize));
        }
        let flat = |g: &Vec<Vec<f64>>| g.iter().flatten().copied().collect::<Vec<f64>>();
        let nh = cmp.n_heads();
        for kind in SCORES {
            let per_model: Vec<Vec<f64>> = scores.iter().map(|s| flat(if kind == "stripe" { &s.stripe } else { &s.mul })).collect();
            for rule in RULES {
                if rule == "original" && kind != "stripe" {
                    continue;
                }
                let detector = match rule {
                    "threshold" => format!("{kind} ≥ {}", o.threshold),
                    "sigma" => format!("{kind} ≥ mean + {}σ", o.sigma_k),
                    _ => format!("{kind} > mean + {}σ_pop (reference); twin > ½ that cut-off", o.sigma_k),
                };
                let detected: Vec<(f64, Vec<bool>)> = match rule {
                    "original" => {
                        let cut = population_sigma_cutoff(&per_model[0], o.sigma_k);
                        let reference: Vec<bool> = per_model[0].iter().map(|&s| s > cut).collect();
                        std::iter::once((cut, reference))
                            .chain(per_model.iter().skip(1).map(|x| (cut / 2.0, x.iter().map(|&s| s > cut / 2.0).collect())))
                            .collect()
                    }
                    _ => per_model
                        .iter()
                        .map(|x| {
                            let cut = if rule == "threshold" { o.threshold } else { sigma_cutoff(x, o.sigma_k) };
                            (cut, detect_threshold(x, cut))
                        })
                        .collect(),
                };
                let label = |r: Row| r.label("score", kind).label("rule", rule).label("detector", detector.clone());
                for (t, (cut, d)) in all.iter().zip(&detected) {
                    out.push(label(Row::new(t.spec, "cutoff", *cut)));
                    out.push(label(Row::new(t.spec, "n_detected", d.iter().filter(|&&x| x).count() as f64)));
                }
                let reference = &detected[0].1;
                for (t, (_, d)) in all.iter().zip(&detected).skip(1) {
                    let (frac, n) = survival(reference, d);
                    out.push(label(Row::new(t.spec, "survival", frac).n(n)));
                    for (i, _) in reference.iter().enumerate().filter(|(_, &r)| r) {
                        out.push(label(Row::new(t.spec, "survives", d[i] as u8 as f64).layer(i / nh).head(i % nh)));
                    }
                }
            }
            for (t, x) in all.iter().zip(&per_model).skip(1) {
                out.push(Row::new(t.spec, "pearson_r", metrics::pearson(&per_model[0], x)).label("score", kind).n(x.len()));
            }
        }
        Ok(out)
    }
}

/// Runs the induction analysis once per seed (rows tagged with their seed); follow with
/// `Tidy::mean_over_seeds()` for means with 95% CIs over seeds.
pub fn run_over_seeds(cmp: &Comparison, opts: &InductionOptions, seeds: &[u64]) -> Result<Tidy> {
    super::run_seeds(&Entry::of::<Induction>(), cmp, &serde_json::to_value(opts)?, seeds)
}

/// Per-head scatter of the twins' `score` (`stripe` or `mul`) against the reference's, one series
/// per twin spec (from a per-seed or seed-averaged table).
pub fn scatter_figure(df: &DataFrame, score: &str) -> Result<Plot> {
    let metric = format!("{score}_score");
    let d = filter_eq(df, "metric", &metric)?;
    let (spec, layer, head, value) = (str_values(&d, "spec")?, f64_values(&d, "layer")?, f64_values(&d, "head")?, f64_values(&d, "value")?);
    let reference: HashMap<(i64, i64), f64> =
        (0..d.height()).filter(|&i| spec[i] == REFERENCE.to_string()).map(|i| ((layer[i] as i64, head[i] as i64), value[i])).collect();
    let mut series: Vec<(String, Vec<f64>, Vec<f64>, Vec<String>)> = Vec::new();
    for s in super::tidy::distinct_str(&d, "spec")?.into_iter().filter(|s| *s != REFERENCE.to_string()) {
        let (mut x, mut y, mut text) = (vec![], vec![], vec![]);
        for i in (0..d.height()).filter(|&i| spec[i] == s) {
            if let Some(&r) = reference.get(&(layer[i] as i64, head[i] as i64)) {
                x.push(r);
                y.push(value[i]);
                text.push(format!("L{}H{}", layer[i], head[i]));
            }
        }
        series.push((s, x, y, text));
    }
    plots::paired_scatter(&series, &Labels::new(format!("Induction {score} score per head: twin vs reference"), "reference", "quantized twin"))
}

/// Survival of the reference's induction heads per twin (bars per detector, CI error bars when the
/// table is seed-averaged).
pub fn survival_figure(df: &DataFrame) -> Result<Plot> {
    let d = filter_eq(df, "metric", "survival")?;
    plots::bars(&d, "spec", "detector", &Labels::new("Survival of reference induction heads", "quantization", "fraction of detected heads that survive").within(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memo_shares_the_reference_scores_and_changes_no_row() {
        let (m, twins) = crate::testing::llama_and_rtn4_twin();
        let plain = Comparison::new("llama", &m, &twins).unwrap();
        let memo = super::super::ReferenceMemo::default();
        let mut shared = plain.clone();
        shared.reference_memo = Some(&memo);
        let o = InductionOptions { n_seqs: 4, seq_len: 6, batch_size: 3, ..Default::default() };
        // as text: a survival with no detected head is NaN, which no == matches
        let rows = |c: &Comparison, o: &InductionOptions| format!("{:?}", Induction::run(c, o).unwrap().rows);
        let want = rows(&plain, &o);
        assert_eq!(rows(&shared, &o), want);
        // a second twin cell of the same seed reuses the entry; another seed adds one
        assert_eq!(rows(&shared, &o), want);
        assert_eq!(memo.len(), 1);
        let o2 = InductionOptions { seed: 1, ..o.clone() };
        assert_eq!(rows(&shared, &o2), rows(&plain, &o2));
        assert_eq!(memo.len(), 2);
    }

    #[test]
    fn stripe_score_on_a_hand_made_pattern() {
        // [BOS] a b a b: t = 5, offset 1, half 2. Second-half queries 3 and 4 target keys 2 and 3.
        let t = 5;
        let mut a = vec![0f32; t * t];
        a[3 * t + 2] = 0.8;
        a[3 * t] = 0.2;
        a[4 * t + 3] = 0.4;
        a[4 * t + 1] = 0.6;
        assert!((stripe_score(&a, t, 1, 2) - 0.6).abs() < 1e-6);
    }

    #[test]
    fn detection_pattern_matches_transformer_lens() {
        // tokens BOS a b a b: duplicates (3←1), (4←2) shifted one key right: (3, 2), (4, 3).
        assert_eq!(induction_detection_pattern(&[9, 1, 2, 1, 2]), vec![(3, 2), (4, 3)]);
        // an adjacent repeat puts a one on the diagonal: tokens x y y → (2, 2).
        assert_eq!(induction_detection_pattern(&[5, 7, 7]), vec![(2, 2)]);
    }

    #[test]
    fn mul_score_of_a_perfect_induction_head() {
        let toks = [9, 1, 2, 1, 2];
        let t = 5;
        let mut a = vec![0f32; t * t];
        for q in 0..3 {
            a[q * t] = 1.0; // rest on BOS
        }
        a[3 * t + 2] = 1.0;
        a[4 * t + 3] = 1.0;
        let d = induction_detection_pattern(&toks);
        assert!((metrics::head_detection_score_mul(&a, t, &d, false, false) - 2.0 / 5.0).abs() < 1e-6);
        assert!((metrics::head_detection_score_mul(&a, t, &d, true, false) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn detection_rules_and_survival() {
        let s = [0.1, 0.5, 0.4, 0.0];
        assert_eq!(detect_threshold(&s, 0.4), vec![false, true, true, false]);
        // mean 0.25, sample sd sqrt(0.05 + 0.0625·... ) computed by hand: deviations -.15 .25 .15 -.25
        let sd = ((0.0225 + 0.0625 + 0.0225 + 0.0625) / 3.0f64).sqrt();
        assert!((sigma_cutoff(&s, 2.0) - (0.25 + 2.0 * sd)).abs() < 1e-12);
        assert_eq!(survival(&[false, true, true, false], &[true, true, false, false]), (0.5, 2));
        // population sd: sqrt(0.17 / 4)
        assert!((population_sigma_cutoff(&s, 2.0) - (0.25 + 2.0 * (0.17f64 / 4.0).sqrt())).abs() < 1e-12);
        let (f, n) = survival(&[false, false], &[true, true]);
        assert!(f.is_nan() && n == 0);
    }
}
