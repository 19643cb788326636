//! Attention patterns: does each head still attend where it did before quantization?
//!
//! On sequences made of a window repeated once (`[BOS] w w`, so every second-half token has an
//! earlier duplicate), per layer and head:
//! - `js_divergence` (twins only): Jensen–Shannon divergence (natural log, at most ln 2) between the
//!   reference's and the twin's attention row of each real query, averaged over real queries
//!   after the first (query 0 can only attend to itself, so its divergence is always 0 and would
//!   only dilute the mean);
//! - `prev_token`: mean attention from a query at q to q − 1 (queries q ≥ 1);
//! - `duplicate_token`: attention from a query to the earlier positions holding the same token,
//!   averaged over queries that have such a position (TransformerLens's duplicate-token heads).
//!
//! Scores are reported for the reference and every twin.
use super::plots::{heatmap_panels, layer_head_grid};
use super::tidy::filter_eq;
use super::{batches, pad_id, text_windows, Analysis, Comparison, Row, Tidy};
use crate::hooks::names;
use crate::metrics::js_divergence;
use crate::QiError;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use plotly::Plot;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AttentionOptions {
    /// Source of the window that is repeated: `random` (default), `wikitext2`, `c4` or a text file.
    pub text: String,
    pub n_seqs: usize,
    /// Tokens in the window; sequences are `[BOS] + window + window`.
    pub seq_len: usize,
    pub batch_size: usize,
    pub seed: u64,
}

impl Default for AttentionOptions {
    fn default() -> Self {
        AttentionOptions { text: "random".into(), n_seqs: 8, seq_len: 50, batch_size: 4, seed: 0 }
    }
}

pub struct AttentionPatterns;

impl Analysis for AttentionPatterns {
    const NAME: &'static str = "attention";
    const ABOUT: &'static str = "per-head JS divergence of attention rows and previous-/duplicate-token scores, reference vs twins";
    type Options = AttentionOptions;

    fn options_doc() -> &'static str {
        "text: source of the repeated window (random, wikitext2, c4 or a text file path)\n\
         n_seqs: number of sequences\n\
         seq_len: window length (each sequence is [BOS] + window + window)\n\
         batch_size: sequences per forward pass\n\
         seed: seeds the windows"
    }

    fn run(cmp: &Comparison, opts: &AttentionOptions) -> Result<Tidy> {
        let windows = text_windows(cmp.reference, &opts.text, opts.n_seqs, opts.seq_len, opts.seed)?;
        let bos = cmp.reference.cfg.bos_token_id;
        let rows: Vec<Vec<u32>> = windows.iter().map(|w| bos.into_iter().chain(w.iter().copied()).chain(w.iter().copied()).collect()).collect();
        patterns_on_rows(cmp, &rows, opts)
    }
}

/// Sum and count of the previous-token score for one head and one sequence: `pattern` is the
/// row-major `[t, t]` attention of a sequence whose first `len` positions are real.
pub fn prev_token_score(pattern: &[f32], t: usize, len: usize) -> (f64, usize) {
    let sum: f64 = (1..len).map(|q| f64::from(pattern[q * t + q - 1])).sum();
    (sum, len.saturating_sub(1))
}

/// Sum and count of the duplicate-token score for one head and one sequence: for each real query
/// with an earlier position holding the same token, the attention it pays to all such positions.
pub fn duplicate_token_score(pattern: &[f32], t: usize, tokens: &[u32], len: usize) -> (f64, usize) {
    let (mut sum, mut count) = (0.0, 0);
    for q in 1..len {
        let dups: Vec<usize> = (0..q).filter(|&k| tokens[k] == tokens[q]).collect();
        if !dups.is_empty() {
            sum += dups.iter().map(|&k| f64::from(pattern[q * t + k])).sum::<f64>();
            count += 1;
        }
    }
    (sum, count)
}

/// The queries whose attention rows enter a JS-divergence mean: `mask` `[b, t]` (1 = real
/// token) as f32 with position 0 zeroed. Query 0 can only attend to itself, so its row is
/// `[1, 0, …]` in every model and its divergence always 0.
pub fn js_queries(mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?;
    let t = mask.dim(1)?;
    Ok(if t > 1 { Tensor::cat(&[&mask.narrow(1, 0, 1)?.zeros_like()?, &mask.narrow(1, 1, t - 1)?], 1)? } else { mask.zeros_like()? })
}

/// Per head, the sum of the JS divergences between the reference's and a twin's attention rows
/// over the queries that count, and their number: `reference` and `twin` are `[b, h, t, t]`
/// patterns, `mask` `[b, t]` marks real positions (1) and padding (0). Padding queries and query
/// position 0 (whose row is always `[1, 0, …]`) are excluded.
pub fn js_per_head(reference: &Tensor, twin: &Tensor, mask: &Tensor) -> Result<(Vec<f64>, usize)> {
    let (b, n_heads, t, _) = reference.dims4()?;
    let queries = js_queries(mask)?;
    let d = js_divergence(&reference.reshape((b * n_heads * t, t))?, &twin.reshape((b * n_heads * t, t))?)?;
    let per_head: Vec<f32> = d.reshape((b, n_heads, t))?.broadcast_mul(&queries.unsqueeze(1)?)?.sum(2)?.sum(0)?.to_vec1()?;
    let n_queries = queries.sum_all()?.to_scalar::<f32>()? as usize;
    Ok((per_head.into_iter().map(f64::from).collect(), n_queries))
}

/// Running sums per layer × head.
#[derive(Clone)]
struct Sums {
    sum: Vec<f64>,
    count: Vec<usize>,
}

impl Sums {
    fn new(n: usize) -> Self {
        Sums { sum: vec![0.0; n], count: vec![0; n] }
    }
    fn add(&mut self, i: usize, (s, c): (f64, usize)) {
        self.sum[i] += s;
        self.count[i] += c;
    }
    fn mean(&self, i: usize) -> f64 {
        if self.count[i] == 0 {
            f64::NAN
        } else {
            self.sum[i] / self.count[i] as f64
        }
    }
}

/// The analysis on given token rows (right-padded per batch; padding queries and keys never
/// enter a score).
pub fn patterns_on_rows(cmp: &Comparison, rows: &[Vec<u32>], opts: &AttentionOptions) -> Result<Tidy> {
    if opts.batch_size == 0 {
        return Err(QiError::invalid("batch_size", 0, "need at least one sequence per batch").into());
    }
    if let Some(i) = rows.iter().position(|r| r.len() < 2) {
        bail!("sequence {i} has fewer than 2 tokens: attention scores need a previous position");
    }
    let (n_layers, n_heads) = (cmp.n_layers(), cmp.n_heads());
    let cells = n_layers * n_heads;
    let models = cmp.all();
    let mut prev = vec![Sums::new(cells); models.len()];
    let mut dup = vec![Sums::new(cells); models.len()];
    let mut js = vec![Sums::new(cells); cmp.twins.len()];
    let filter = "blocks.*.attn.hook_pattern";
    let mut start = 0;
    for batch in batches(rows, opts.batch_size, pad_id(cmp.reference))? {
        let (b, t) = (batch.batch_size(), batch.seq_len());
        let chunk = &rows[start..start + b];
        start += b;
        let mask = batch.valid_mask()?; // [b, t]
        let mut reference: Vec<Tensor> = Vec::new();
        for (mi, m) in models.iter().enumerate() {
            let cache = m.model.run_with_cache_until(&batch, filter, n_layers - 1)?;
            for l in 0..n_layers {
                let p = cache.get(&names::pattern(l))?.to_dtype(DType::F32)?; // [b, h, t, t]
                let flat: Vec<f32> = p.flatten_all()?.to_vec1()?;
                for h in 0..n_heads {
                    for (i, row) in chunk.iter().enumerate() {
                        let one = &flat[(i * n_heads + h) * t * t..(i * n_heads + h + 1) * t * t];
                        prev[mi].add(l * n_heads + h, prev_token_score(one, t, row.len()));
                        dup[mi].add(l * n_heads + h, duplicate_token_score(one, t, row, row.len()));
                    }
                }
                if mi == 0 {
                    reference.push(p);
                } else {
                    let (per_head, n_queries) = js_per_head(&reference[l], &p, &mask)?;
                    for (h, v) in per_head.into_iter().enumerate() {
                        js[mi - 1].add(l * n_heads + h, (v, n_queries));
                    }
                }
            }
        }
    }
    let mut out = Tidy::new(cmp.name.clone());
    for (mi, m) in models.iter().enumerate() {
        for l in 0..n_layers {
            for h in 0..n_heads {
                let i = l * n_heads + h;
                if mi > 0 {
                    out.push(Row::new(m.spec, "js_divergence", js[mi - 1].mean(i)).layer(l).head(h).n(js[mi - 1].count[i]));
                }
                out.push(Row::new(m.spec, "prev_token", prev[mi].mean(i)).layer(l).head(h).n(prev[mi].count[i]));
                out.push(Row::new(m.spec, "duplicate_token", dup[mi].mean(i)).layer(l).head(h).n(dup[mi].count[i]));
            }
        }
    }
    Ok(out)
}

/// Layer × head heatmaps of a score (`prev_token` or `duplicate_token`): the reference, the twin
/// `spec`, and their difference (twin − reference).
pub fn score_heatmaps(df: &DataFrame, metric: &str, spec: &str, n_layers: usize, n_heads: usize) -> Result<Plot> {
    let m = filter_eq(df, "metric", metric)?;
    let r = layer_head_grid(&filter_eq(&m, "spec", "none")?, n_layers, n_heads)?;
    let q = layer_head_grid(&filter_eq(&m, "spec", spec)?, n_layers, n_heads)?;
    let diff: Vec<Vec<f64>> = r.iter().zip(&q).map(|(a, b)| a.iter().zip(b).map(|(x, y)| y - x).collect()).collect();
    heatmap_panels(
        &[("reference".into(), r, false), (spec.to_string(), q, false), (format!("{spec} − reference"), diff, true)],
        &format!("{metric} score per head: reference vs {spec}"),
        metric,
    )
}

/// Layer × head heatmaps of the JS divergence, one panel per twin (at most 6).
pub fn js_heatmaps(df: &DataFrame, n_layers: usize, n_heads: usize) -> Result<Plot> {
    let m = filter_eq(df, "metric", "js_divergence")?;
    let panels = super::tidy::distinct_str(&m, "spec")?
        .into_iter()
        .map(|s| Ok((s.clone(), layer_head_grid(&filter_eq(&m, "spec", &s)?, n_layers, n_heads)?, false)))
        .collect::<Result<Vec<_>>>()?;
    heatmap_panels(&panels, "JS divergence of attention rows, reference vs quantized (nats, max ln 2)", "JS")
}

#[cfg(test)]
mod tests {
    use super::*;

    // 3 positions, tokens [7, 5, 7], the last one padding when len = 2.
    const PATTERN: [f32; 9] = [1.0, 0.0, 0.0, 0.25, 0.75, 0.0, 0.5, 0.2, 0.3];

    fn close((s, c): (f64, usize), (want_s, want_c): (f64, usize)) -> bool {
        (s - want_s).abs() < 1e-6 && c == want_c
    }

    #[test]
    fn previous_token_score_hand_case() {
        // queries 1 and 2 attend 0.25 and 0.2 to their previous token
        assert!(close(prev_token_score(&PATTERN, 3, 3), (0.25 + 0.2, 2)));
        // with position 2 padding only query 1 counts
        assert_eq!(prev_token_score(&PATTERN, 3, 2), (0.25, 1));
    }

    #[test]
    fn duplicate_token_score_hand_case() {
        // only query 2 (token 7) has an earlier duplicate (position 0): attention 0.5
        assert_eq!(duplicate_token_score(&PATTERN, 3, &[7, 5, 7], 3), (0.5, 1));
        assert_eq!(duplicate_token_score(&PATTERN, 3, &[7, 5, 7], 2), (0.0, 0));
        // tokens [7, 7, 7]: query 1 → 0.25, query 2 → 0.5 + 0.2
        assert!(close(duplicate_token_score(&PATTERN, 3, &[7, 7, 7], 3), (0.25 + 0.5 + 0.2, 2)));
    }

    #[test]
    fn js_mean_skips_query_zero_and_padding() {
        let dev = candle_core::Device::Cpu;
        // one head, 2 sequences of 3 positions; the second has its last position padded.
        // Query 0 is [1, 0, 0] in both models. Query 1: reference [½, ½], twin [1, 0]:
        // JS = ½(½ ln(½/¾) + ½ ln(½/¼)) + ½ ln(1/¾) = 0.215762. Query 2 of sequence 0 is equal
        // in both (JS 0); query 2 of sequence 1 differs maximally but is padding.
        let r = [1., 0., 0., 0.5, 0.5, 0., 0.2, 0.3, 0.5, 1., 0., 0., 0.5, 0.5, 0., 0., 0., 1.];
        let q = [1., 0., 0., 1., 0., 0., 0.2, 0.3, 0.5, 1., 0., 0., 1., 0., 0., 1., 0., 0.];
        let t = |v: &[f64]| Tensor::from_vec(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), (2, 1, 3, 3), &dev).unwrap();
        let mask = Tensor::from_vec(vec![1u32, 1, 1, 1, 1, 0], (2, 3), &dev).unwrap();
        let (sum, n) = js_per_head(&t(&r), &t(&q), &mask).unwrap();
        let js1 = 0.5 * (0.5 * (0.5f64 / 0.75).ln() + 0.5 * (0.5f64 / 0.25).ln()) + 0.5 * (1.0f64 / 0.75).ln();
        // real queries after the first: q1, q2 of sequence 0 and q1 of sequence 1
        assert_eq!(n, 3);
        assert!((sum[0] - 2.0 * js1).abs() < 1e-5, "{sum:?} vs {}", 2.0 * js1);
        // counting query 0 (n = 5) would give mean 2·js1/5 instead of 2·js1/3
    }

    #[test]
    fn mean_of_empty_sums_is_nan() {
        let mut s = Sums::new(2);
        s.add(0, (1.5, 3));
        assert_eq!(s.mean(0), 0.5);
        assert!(s.mean(1).is_nan());
    }
}
