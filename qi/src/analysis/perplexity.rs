//! `perplexity`: [`crate::perplexity`] (the GPTQ protocol) as a registry analysis, so perplexity is
//! a study column like any other. Rows per spec: metric `perplexity` and `nll` (mean next-token
//! NLL in nats), `n` = windows evaluated.
use super::{text_windows, Analysis, Comparison, Row, Tidy};
use crate::perplexity::{perplexity, PerplexityOptions};
use crate::QiError;
use anyhow::Result;
use serde::{Deserialize, Serialize};

pub struct Perplexity;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PerplexityAnalysisOptions {
    /// `wikitext2`, `c4`, `random` or a path to a text file (see [`super::text_windows`]).
    pub text: String,
    pub seqlen: usize,
    /// First N windows (`null` = every window of the text; required for `c4` and `random`).
    pub max_windows: Option<usize>,
    pub batch_size: usize,
    /// Draws the windows of `c4` and `random` (WikiText-2 and files use consecutive windows).
    pub seed: u64,
}

impl Default for PerplexityAnalysisOptions {
    fn default() -> Self {
        // the README table's protocol: WikiText-2 test, the first 20 windows of 512 tokens
        PerplexityAnalysisOptions { text: "wikitext2".into(), seqlen: 512, max_windows: Some(20), batch_size: 4, seed: 0 }
    }
}

impl Analysis for Perplexity {
    const NAME: &'static str = "perplexity";
    const ABOUT: &'static str = "GPTQ-protocol perplexity and mean next-token NLL per spec";
    type Options = PerplexityAnalysisOptions;
    const PER_MODEL: bool = true;

    fn options_doc() -> &'static str {
        "text: wikitext2, c4, random (seeded uniform tokens, no tokenizer needed) or a text file path
seqlen: tokens per window
max_windows: first N windows (null = all; required for c4 and random)
batch_size: windows per forward pass
seed: draws the c4 / random windows"
    }

    fn run(cmp: &Comparison, opts: &Self::Options) -> Result<Tidy> {
        let ids = tokens(cmp, opts)?;
        // the windows are exactly those of `ids`, so perplexity() re-splits them identically
        let popts = PerplexityOptions { seqlen: opts.seqlen, max_windows: opts.max_windows, batch_size: opts.batch_size };
        let mut out = Tidy::new(cmp.name.clone());
        for twin in cmp.all() {
            let r = perplexity(twin.model, &ids, &popts)?;
            out.push(Row::new(twin.spec, "perplexity", r.perplexity).n(r.windows));
            out.push(Row::new(twin.spec, "nll", r.nll).n(r.windows));
        }
        Ok(out)
    }
}

/// The evaluation tokens, consecutive windows of `seqlen` concatenated.
fn tokens(cmp: &Comparison, opts: &PerplexityAnalysisOptions) -> Result<Vec<u32>> {
    let model = cmp.reference;
    match opts.max_windows {
        Some(0) => Err(QiError::invalid("perplexity option max_windows", 0, "need at least one window (or null for all)").into()),
        Some(n) => Ok(text_windows(model, &opts.text, n, opts.seqlen, opts.seed)?.concat()),
        None => {
            let text = match opts.text.as_str() {
                "wikitext2" => return crate::data::wikitext2_eval_ids(model),
                "c4" | "random" => {
                    return Err(QiError::invalid("perplexity option max_windows", "null", format!("text '{}' has no fixed length: give a number of windows", opts.text)).into())
                }
                path => std::fs::read_to_string(path).map_err(|e| QiError::invalid("perplexity option text", path, format!("expected wikitext2, c4, random or a readable text file ({e})")))?,
            };
            model.tokenizer()?.encode(&text, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_per_spec_and_bad_window_counts() {
        let (m, twins) = crate::testing::llama_and_rtn4_twin();
        let cmp = Comparison::new("llama", &m, &twins).unwrap();
        let opts = PerplexityAnalysisOptions { text: "random".into(), seqlen: 8, max_windows: Some(3), batch_size: 2, seed: 1 };
        let t = Perplexity::run(&cmp, &opts).unwrap();
        let got: Vec<(&str, &str)> = t.rows.iter().map(|r| (r.spec.as_str(), r.metric.as_str())).collect();
        assert_eq!(got, [("none", "perplexity"), ("none", "nll"), ("rtn:bits=4", "perplexity"), ("rtn:bits=4", "nll")]);
        assert!((t.rows[0].value.ln() - t.rows[1].value).abs() < 1e-9 && t.rows[0].n == Some(3));
        assert_eq!(Perplexity::run(&cmp, &opts).unwrap().rows, t.rows, "same seed, same rows");
        for bad in [Some(0), None] {
            let e = Perplexity::run(&cmp, &PerplexityAnalysisOptions { max_windows: bad, ..opts.clone() }).unwrap_err().to_string();
            assert!(e.contains("max_windows"), "{e}");
        }
    }
}
