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

/// One row per (model, spec): model, method, bits, perplexity, nll, tokens, windows, seqlen, seconds.
pub fn table(rows: &[(String, crate::quant::QuantSpec, PerplexityResult)]) -> Result<polars::prelude::DataFrame> {
    use polars::prelude::*;
    Ok(DataFrame::new_infer_height(vec![
        Column::new("model".into(), rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>()),
        Column::new("method".into(), rows.iter().map(|r| r.1.to_string()).collect::<Vec<_>>()),
        Column::new("bits".into(), rows.iter().map(|r| r.1.bits().map(f64::from)).collect::<Vec<_>>()),
        Column::new("perplexity".into(), rows.iter().map(|r| r.2.perplexity).collect::<Vec<_>>()),
        Column::new("nll".into(), rows.iter().map(|r| r.2.nll).collect::<Vec<_>>()),
        Column::new("tokens".into(), rows.iter().map(|r| r.2.tokens as u64).collect::<Vec<_>>()),
        Column::new("windows".into(), rows.iter().map(|r| r.2.windows as u64).collect::<Vec<_>>()),
        Column::new("seqlen".into(), rows.iter().map(|r| r.2.seqlen as u64).collect::<Vec<_>>()),
        Column::new("seconds".into(), rows.iter().map(|r| r.2.seconds).collect::<Vec<_>>()),
    ])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perplexity_of_a_uniform_model_is_the_vocabulary_size() {
        // A model whose logits are all equal predicts uniformly: perplexity = vocab size exactly.
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/llama");
        let mut m = crate::load_model(dir.to_str().unwrap()).unwrap();
        let w = m.unembed.weight().zeros_like().unwrap();
        m.unembed.set_weight(&w).unwrap();
        let ids: Vec<u32> = (0..100).map(|i| (i * 7 % 320) as u32).collect();
        let r = perplexity(&m, &ids, &PerplexityOptions { seqlen: 16, max_windows: None, batch_size: 3 }).unwrap();
        assert_eq!(r.windows, 6);
        assert_eq!(r.tokens, 96);
        assert!((r.perplexity - 320.0).abs() < 1e-3, "{}", r.perplexity);
        let spec: crate::quant::QuantSpec = "none".parse().unwrap();
        let df = table(&[("m".into(), spec, r)]).unwrap();
        assert_eq!(df.height(), 1);
        assert!(perplexity(&m, &ids, &PerplexityOptions { seqlen: 1000, ..Default::default() }).is_err());
    }
}
