//! Perplexity with the GPTQ paper's protocol: non-overlapping windows of `seqlen` tokens over the
//! evaluation text, remainder dropped; each window's mean next-token NLL, perplexity =
//! exp(mean over windows).
use crate::{metrics, Batch, HookedTransformer};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PerplexityOptions {
    /// Tokens per window (capped by the model's context).
    pub seqlen: usize,
    /// Use only the first N windows (None = all).
    pub max_windows: Option<usize>,
    /// Windows per forward pass.
    pub batch_size: usize,
}

impl Default for PerplexityOptions {
    fn default() -> Self {
        PerplexityOptions { seqlen: 512, max_windows: None, batch_size: 4 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PerplexityResult {
    pub perplexity: f64,
    /// Mean next-token NLL (nats).
    pub nll: f64,
    /// Tokens in the evaluated windows.
    pub tokens: usize,
    pub windows: usize,
    pub seqlen: usize,
    pub seconds: f64,
}

/// Perplexity of `model` on token ids.
pub fn perplexity(model: &HookedTransformer, ids: &[u32], opts: &PerplexityOptions) -> Result<PerplexityResult> {
    if opts.seqlen < 2 {
        bail!("perplexity seqlen must be at least 2, got {}", opts.seqlen);
    }
    if opts.seqlen > model.cfg.n_ctx {
        bail!("perplexity seqlen {} exceeds the model's context of {} tokens", opts.seqlen, model.cfg.n_ctx);
    }
    let start = std::time::Instant::now();
    let windows = crate::data::sequential_windows(ids, opts.seqlen, opts.max_windows)?;
    let pb = crate::progress::bar(windows.len() as u64, "perplexity");
    let mut window_nll = Vec::with_capacity(windows.len());
    for chunk in windows.chunks(opts.batch_size.max(1)) {
        let batch = Batch::from_rows(chunk, crate::Padding::Right, 0)?;
        let logits = model.forward(&batch)?;
        let nll = metrics::next_token_nll(&logits, &batch.tokens)?.mean(1)?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
        if let Some(bad) = nll.iter().find(|v| !v.is_finite()) {
            bail!("non-finite loss {bad} in perplexity evaluation (the model produced NaN/inf logits)");
        }
        window_nll.extend(nll);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let nll = metrics::mean(&window_nll);
    Ok(PerplexityResult { perplexity: nll.exp(), nll, tokens: windows.len() * opts.seqlen, windows: windows.len(), seqlen: opts.seqlen, seconds: start.elapsed().as_secs_f64() })
}

/// Perplexity on text, tokenized with the model's tokenizer (no BOS, as the GPTQ protocol).
pub fn perplexity_on_text(model: &HookedTransformer, text: &str, opts: &PerplexityOptions) -> Result<PerplexityResult> {
    let ids = model.tokenizer()?.encode(text, false)?;
    perplexity(model, &ids, opts)
}
