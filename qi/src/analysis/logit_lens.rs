//! Logit lens: what does each layer's residual stream already predict, and does quantization
//! change it?
//!
//! Every layer's `resid_post` at the last prompt position goes through the model's own final norm
//! and unembedding. Per model (reference and twins) and layer: probability and rank of the
//! prompt's target token, and KL to the model's own final layer, KL(P_final ‖ P_layer). Per twin
//! and layer: KL(P_ref ‖ P_quant) between the reference's and the twin's lens distributions, and
//! top-1 / top-5 agreement of their top tokens. Means over prompts with a seeded bootstrap 95% CI,
//! over all prompts (label `category` = `all`) and, with `by_category`, over each prompt category
//! (facts, code and arithmetic may not break alike).
use super::plots::{bars, lines, Labels};
use super::tidy::{f64_values, filter_eq, filter_num_eq};
use super::{Analysis, Comparison, Row, Tidy};
use crate::batch::{Batch, Padding};
use crate::hooks::names;
use crate::metrics::{bootstrap_mean_ci, kl_from_logits, rank_of, top_k_overlap};
use crate::{HookedTransformer, QiError};
use anyhow::{anyhow, Result};
use candle_core::{DType, Tensor};
use plotly::Plot;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

/// The bundled prompt set (facts, code, arithmetic; checked on SmolLM2, see
/// `data/prompts/README.md`).
pub const BUILTIN_PROMPTS: &str = include_str!("../../../data/prompts/logit_lens.jsonl");

/// Per-model metrics, then per-twin comparison metrics, in the order rows are emitted.
pub const MODEL_METRICS: [&str; 3] = ["target_prob", "target_rank", "kl_to_final"];
pub const TWIN_METRICS: [&str; 3] = ["kl_ref_quant", "top1_agreement", "top5_agreement"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogitLensOptions {
    /// A JSONL file of `{"prompt", "target", "category"}` lines; empty = the bundled set.
    pub prompts: String,
    /// Use a seeded random subset of this many prompts; 0 = all.
    pub n_prompts: usize,
    /// Prepend the model's BOS token to each prompt.
    pub prepend_bos: bool,
    pub batch_size: usize,
    pub n_boot: usize,
    /// Also report every metric per prompt category.
    pub by_category: bool,
    /// Leave out prompts whose target this model's tokenizer splits into several tokens (their
    /// count and targets are printed to stderr; each row's `n` says how many prompts it covers)
    /// instead of refusing the prompt set. A prompt set written for one tokenizer can then run on
    /// another family; models are then compared on different prompt subsets.
    pub skip_multi_token: bool,
    pub seed: u64,
}

impl Default for LogitLensOptions {
    fn default() -> Self {
        LogitLensOptions { prompts: String::new(), n_prompts: 0, prepend_bos: true, batch_size: 8, n_boot: 1000, by_category: true, skip_multi_token: false, seed: 0 }
    }
}

/// A tokenized prompt whose next token should be `target`.
#[derive(Debug, Clone, PartialEq)]
pub struct LensPrompt {
    pub prompt: String,
    pub category: String,
    pub ids: Vec<u32>,
    pub target: u32,
}

#[derive(Deserialize)]
struct PromptLine {
    prompt: String,
    target: String,
    category: String,
}

/// Parses JSONL prompt lines (`source` names the file in errors) and tokenizes them. Every target
/// must be exactly one token; with `skip_multi_token` a prompt whose target is not is left out and
/// its target returned in the second list instead of failing.
pub fn parse_prompts(model: &HookedTransformer, jsonl: &str, source: &str, prepend_bos: bool, skip_multi_token: bool) -> Result<(Vec<LensPrompt>, Vec<String>)> {
    let tok = model.tokenizer()?;
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for (i, line) in jsonl.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let p: PromptLine = serde_json::from_str(line)
            .map_err(|e| QiError::invalid("logit-lens prompts", format!("{source}:{}", i + 1), format!("expected {{\"prompt\", \"target\", \"category\"}} ({e})")))?;
        let target = tok.encode(&p.target, false)?;
        if target.len() != 1 {
            if skip_multi_token {
                skipped.push(p.target);
                continue;
            }
            let pieces: Vec<String> = target.iter().map(|&t| format!("{:?}", tok.id_to_token(t).unwrap_or_default())).collect();
            return Err(QiError::invalid(
                "target",
                format!("{:?} of prompt {:?}", p.target, p.prompt),
                format!(
                    "must be exactly one token, but tokenizes to {} tokens [{}] (skip_multi_token = true leaves such prompts out)",
                    target.len(),
                    pieces.join(", ")
                ),
            )
            .into());
        }
        out.push(LensPrompt { ids: model.to_tokens(&p.prompt, prepend_bos)?, prompt: p.prompt, category: p.category, target: target[0] });
    }
    if out.is_empty() {
        let why = if skipped.is_empty() { "the prompt set is empty".to_string() } else { format!("no prompt has a one-token target for this tokenizer ({} skipped)", skipped.len()) };
        return Err(QiError::invalid("logit-lens prompts", source, why).into());
    }
    Ok((out, skipped))
}

pub struct LogitLens;

impl Analysis for LogitLens {
    const NAME: &'static str = "logit-lens";
    const ABOUT: &'static str = "per-layer logit lens: KL and top-k agreement reference vs twin, target probability/rank, KL to final layer";
    type Options = LogitLensOptions;

    fn options_doc() -> &'static str {
        "prompts: JSONL file of {prompt, target, category} lines (empty = bundled data/prompts/logit_lens.jsonl)\n\
         n_prompts: seeded random subset of this many prompts (0 = all)\n\
         prepend_bos: prepend the BOS token to each prompt\n\
         batch_size: prompts per forward pass\n\
         n_boot: bootstrap resamples for the 95% CI over prompts\n\
         by_category: also report every metric per prompt category (label category; all = every prompt)\n\
         skip_multi_token: leave out prompts whose target this tokenizer splits into several tokens (default: refuse them)\n\
         seed: seeds the subset and the bootstrap"
    }

    fn run(cmp: &Comparison, opts: &LogitLensOptions) -> Result<Tidy> {
        let (text, source) = if opts.prompts.is_empty() {
            (BUILTIN_PROMPTS.to_string(), "data/prompts/logit_lens.jsonl".to_string())
        } else {
            let text = std::fs::read_to_string(&opts.prompts).map_err(|e| QiError::invalid("prompts", &opts.prompts, format!("cannot read the prompt file ({e})")))?;
            (text, opts.prompts.clone())
        };
        let (mut prompts, skipped) = parse_prompts(cmp.reference, &text, &source, opts.prepend_bos, opts.skip_multi_token)?;
        if !skipped.is_empty() {
            crate::progress::note(&format!("logit-lens: left out {} of {} prompts of {source}, whose targets are several tokens here: {:?}", skipped.len(), skipped.len() + prompts.len(), skipped));
        }
        if opts.n_prompts > 0 && opts.n_prompts < prompts.len() {
            crate::rng::Rng::new(opts.seed).shuffle(&mut prompts);
            prompts.truncate(opts.n_prompts);
        }
        lens_on_prompts(cmp, &prompts, opts)
    }
}

/// `[n_layers]` tensors `[b, d_model]`: each layer's `resid_post` at each row's last real position.
fn last_position_residuals(model: &HookedTransformer, batch: &Batch, lens: &[usize]) -> Result<Vec<Tensor>> {
    let n_layers = model.cfg.n_layers;
    let cache = model.run_with_cache_until(batch, "blocks.*.hook_resid_post", n_layers - 1)?;
    let t = batch.seq_len();
    let idx: Vec<u32> = lens.iter().enumerate().map(|(i, &n)| (i * t + n - 1) as u32).collect();
    let idx = Tensor::from_vec(idx, lens.len(), batch.tokens.device())?;
    (0..n_layers)
        .map(|l| {
            let x = cache.get(&names::resid_post(l))?.to_dtype(DType::F32)?;
            Ok(x.reshape((lens.len() * t, model.cfg.d_model))?.index_select(&idx, 0)?)
        })
        .collect()
}

/// The lens logits `[b, d_vocab]` of residuals `[b, d_model]`: final norm, then unembedding.
pub fn lens_logits(model: &HookedTransformer, resid: &Tensor) -> Result<Tensor> {
    Ok(model.unembed.forward(&model.ln_final.forward(resid)?)?.to_dtype(DType::F32)?)
}

/// The analysis on tokenized prompts (right-padded per batch; only each row's last real position
/// is read, so padding never enters a metric).
pub fn lens_on_prompts(cmp: &Comparison, prompts: &[LensPrompt], opts: &LogitLensOptions) -> Result<Tidy> {
    if prompts.is_empty() {
        return Err(QiError::invalid("logit-lens prompts", "[]", "the prompt set is empty").into());
    }
    if opts.batch_size == 0 {
        return Err(QiError::invalid("batch_size", 0, "need at least one prompt per batch").into());
    }
    let vocab = cmp.reference.cfg.d_vocab;
    if let Some(p) = prompts.iter().find(|p| p.ids.is_empty() || p.target as usize >= vocab) {
        return Err(QiError::invalid("prompt", &p.prompt, format!("needs at least one token and a target below the vocabulary size {vocab}")).into());
    }
    let models = cmp.all();
    let n_layers = cmp.n_layers();
    // per_model[model][metric][layer] and per_twin[twin][metric][layer]: one value per prompt
    let mut per_model = vec![vec![vec![Vec::new(); n_layers]; MODEL_METRICS.len()]; models.len()];
    let mut per_twin = vec![vec![vec![Vec::new(); n_layers]; TWIN_METRICS.len()]; cmp.twins.len()];
    for chunk in prompts.chunks(opts.batch_size) {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|p| p.ids.clone()).collect();
        let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
        let batch = Batch::from_rows(&rows, Padding::Right, super::pad_id(cmp.reference))?;
        let resid: Vec<Vec<Tensor>> = models.iter().map(|m| last_position_residuals(m.model, &batch, &lens)).collect::<Result<_>>()?;
        let finals: Vec<Tensor> = models.iter().zip(&resid).map(|(m, r)| lens_logits(m.model, &r[n_layers - 1])).collect::<Result<_>>()?;
        for l in 0..n_layers {
            let logits: Vec<Tensor> = models.iter().zip(&resid).map(|(m, r)| lens_logits(m.model, &r[l])).collect::<Result<_>>()?;
            let rows_of: Vec<Vec<Vec<f32>>> = logits.iter().map(|x| x.to_vec2::<f32>()).collect::<candle_core::Result<_>>()?;
            for (mi, x) in logits.iter().enumerate() {
                let probs: Vec<Vec<f32>> = crate::ops::softmax_last(x)?.to_vec2()?;
                let kl_final: Vec<f32> = kl_from_logits(&finals[mi], x)?.to_vec1()?;
                for (i, p) in chunk.iter().enumerate() {
                    let t = p.target as usize;
                    per_model[mi][0][l].push(f64::from(probs[i][t]));
                    per_model[mi][1][l].push(rank_of(&rows_of[mi][i], t) as f64);
                    per_model[mi][2][l].push(f64::from(kl_final[i]));
                }
                if mi > 0 {
                    let kl: Vec<f32> = kl_from_logits(&logits[0], x)?.to_vec1()?;
                    for i in 0..chunk.len() {
                        per_twin[mi - 1][0][l].push(f64::from(kl[i]));
                        per_twin[mi - 1][1][l].push(top_k_overlap(&rows_of[0][i], &rows_of[mi][i], 1));
                        per_twin[mi - 1][2][l].push(top_k_overlap(&rows_of[0][i], &rows_of[mi][i], 5));
                    }
                }
            }
        }
    }
    // prompt indices of `all`, then of each category in order of first appearance
    let mut groups: Vec<(String, Vec<usize>)> = vec![("all".into(), (0..prompts.len()).collect())];
    if opts.by_category {
        for (i, p) in prompts.iter().enumerate() {
            match groups[1..].iter_mut().find(|(c, _)| *c == p.category) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((p.category.clone(), vec![i])),
            }
        }
    }
    let mut out = Tidy::new(cmp.name.clone());
    let mut push = |spec, metric: &str, l: usize, v: &Vec<f64>| {
        for (category, idx) in &groups {
            let v: Vec<f64> = idx.iter().map(|&i| v[i]).collect();
            let (m, lo, hi) = bootstrap_mean_ci(&v, opts.n_boot, 0.95, opts.seed);
            out.push(Row::new(spec, metric, m).layer(l).label("category", category.as_str()).ci(lo, hi).n(v.len()));
        }
    };
    for (mi, m) in models.iter().enumerate() {
        for l in 0..n_layers {
            for (k, metric) in MODEL_METRICS.iter().enumerate() {
                push(m.spec, metric, l, &per_model[mi][k][l]);
            }
            if mi > 0 {
                for (k, metric) in TWIN_METRICS.iter().enumerate() {
                    push(m.spec, metric, l, &per_twin[mi - 1][k][l]);
                }
            }
        }
    }
    Ok(out)
}

/// For checking a prompt set: the reference's rank (1 = top) and probability of each prompt's
/// target at the final position.
pub fn final_target_ranks(model: &HookedTransformer, prompts: &[LensPrompt]) -> Result<Vec<(usize, f64)>> {
    prompts
        .iter()
        .map(|p| {
            let logits = model.forward(&Batch::from_ids(&p.ids)?)?;
            let last = logits.get(0)?.get(p.ids.len() - 1)?.to_dtype(DType::F32)?;
            let prob = crate::ops::softmax_last(&last)?.get(p.target as usize)?.to_scalar::<f32>()?;
            let v: Vec<f32> = last.to_vec1()?;
            Ok((rank_of(&v, p.target as usize), f64::from(prob)))
        })
        .collect::<Result<_>>()
        .map_err(|e: anyhow::Error| anyhow!("checking prompt targets: {e}"))
}

/// Rows over all prompts (tables saved before the `category` label have only those).
fn all_prompts(df: &DataFrame) -> Result<DataFrame> {
    if super::tidy::column(df, "category").is_ok() {
        filter_eq(df, "category", "all")
    } else {
        Ok(df.clone())
    }
}

/// `metric` at the output layer per prompt category (bars, one per method; 95% CI).
/// The first layer from which every value of `per_layer` stays below `limit` (None if the last
/// does not): where a model's lens has settled, e.g. KL to its own output below 1 nat for good.
pub fn settles_below(per_layer: &[f64], limit: f64) -> Option<usize> {
    (0..per_layer.len()).find(|&l| per_layer[l..].iter().all(|&x| x < limit))
}

pub fn category_figure(df: &DataFrame, metric: &str) -> Result<Plot> {
    let d = filter_eq(df, "metric", metric)?;
    let last = f64_values(&d, "layer")?.into_iter().fold(0.0, f64::max);
    let d = filter_num_eq(&d, "layer", last)?;
    let title = format!("Logit lens at the output layer ({last}): {metric} by prompt category");
    bars(&d, "category", "spec", &Labels::new(&title, "prompt category", metric))
}

/// `metric` by layer over all prompts, one line per method (95% CI bars). KL metrics: twins only.
pub fn figure(df: &DataFrame, metric: &str) -> Result<Plot> {
    let df = &all_prompts(df)?;
    let (title, y) = match metric {
        "kl_ref_quant" => ("Logit lens: KL(P_ref ‖ P_quant) by layer", "KL (nats)"),
        "kl_to_final" => ("Logit lens: KL(P_final ‖ P_layer) of each model to its own output", "KL (nats)"),
        "target_rank" => ("Logit lens: rank of the target token by layer (1 = top)", "mean rank"),
        "target_prob" => ("Logit lens: probability of the target token by layer", "probability"),
        "top1_agreement" => ("Logit lens: top-1 token agreement with the reference", "fraction of prompts"),
        _ => ("Logit lens: top-5 overlap with the reference", "fraction of the top 5"),
    };
    lines(&filter_eq(df, "metric", metric)?, "layer", "spec", &Labels::new(title, "layer", y))
}

#[cfg(test)]
mod tests {
    #[test]
    fn settling_means_staying_below_not_dipping_below_once() {
        // dips under 1 at layer 1 but comes back up: it settles at layer 3
        assert_eq!(super::settles_below(&[3.0, 0.5, 2.0, 0.5, 0.2], 1.0), Some(3));
        assert_eq!(super::settles_below(&[3.0, 0.5, 2.0, 0.5, 1.0], 1.0), None, "equal to the limit is not below it");
        assert_eq!(super::settles_below(&[0.1, 0.2], 1.0), Some(0));
    }

    use super::*;

    #[test]
    fn bundled_prompt_set_is_well_formed() {
        let lines: Vec<serde_json::Value> = BUILTIN_PROMPTS.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(lines.len() >= 30, "{} prompts", lines.len());
        for c in ["facts", "code", "arithmetic"] {
            assert!(lines.iter().any(|v| v["category"] == c), "no {c} prompt");
        }
    }

    #[test]
    fn lens_of_a_hand_model_row() {
        // The metrics used per layer, on a 3-token vocabulary: logits [2, 1, 0] vs [0, 1, 2]:
        // target 0 has rank 1 then 3; the top-1 tokens differ.
        let a = [2f32, 1., 0.];
        let b = [0f32, 1., 2.];
        assert_eq!((rank_of(&a, 0), rank_of(&b, 0)), (1, 3));
        assert_eq!(top_k_overlap(&a, &b, 1), 0.0);
        assert_eq!(top_k_overlap(&a, &b, 3), 1.0);
    }
}
