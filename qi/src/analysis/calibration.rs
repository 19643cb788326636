//! Is the quantized model still calibrated? Next-token prediction on text windows (WikiText-2 by
//! default): top-1 accuracy, mean confidence (probability of the top-1 token), expected
//! calibration error with equal-width bins (ECE) and adaptive calibration error with equal-mass
//! bins (ACE), and the reliability diagram (accuracy against mean confidence per equal-width bin).
//! Only positions whose next token is real enter (padding never does).
use super::{Analysis, Comparison, Row, Tidy};
use crate::metrics::{calibration_bins, calibration_error, next_token_mask};
use crate::QiError;
use anyhow::Result;
use candle_core::{DType, D};
use serde::{Deserialize, Serialize};

pub struct Calibration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CalibrationOptions {
    pub source: String,
    pub n_seqs: usize,
    pub seq_len: usize,
    pub n_bins: usize,
    pub forward_batch: usize,
    pub seed: u64,
}

impl Default for CalibrationOptions {
    fn default() -> Self {
        CalibrationOptions { source: "wikitext2".into(), n_seqs: 16, seq_len: 128, n_bins: 15, forward_batch: 4, seed: 0 }
    }
}

/// Top-1 confidence and correctness of every scored next-token prediction of `model`.
pub fn predictions(model: &crate::HookedTransformer, rows: &[Vec<u32>], forward_batch: usize) -> Result<(Vec<f64>, Vec<bool>)> {
    let (mut conf, mut correct) = (Vec::new(), Vec::new());
    for b in super::batches(rows, forward_batch, super::pad_id(model))? {
        let logits = model.forward(&b)?;
        let p = logits.dim(1)?;
        let lp = crate::ops::log_softmax_last(&logits.narrow(1, 0, p - 1)?.to_dtype(DType::F32)?)?;
        let c: Vec<Vec<f32>> = lp.max(D::Minus1)?.exp()?.to_vec2()?;
        let pred: Vec<Vec<u32>> = lp.argmax(D::Minus1)?.to_vec2()?;
        let next: Vec<Vec<u32>> = b.tokens.narrow(1, 1, p - 1)?.to_dtype(DType::U32)?.to_vec2()?;
        let m: Vec<Vec<f32>> = next_token_mask(&b.valid_mask()?)?.to_vec2()?;
        for i in 0..c.len() {
            for t in 0..c[i].len() {
                if m[i][t] > 0.0 {
                    conf.push(c[i][t] as f64);
                    correct.push(pred[i][t] == next[i][t]);
                }
            }
        }
    }
    Ok((conf, correct))
}

impl Analysis for Calibration {
    const NAME: &'static str = "calibration";
    const ABOUT: &'static str = "Next-token calibration: accuracy, confidence, ECE, ACE and reliability bins per method";
    type Options = CalibrationOptions;
    const PER_MODEL: bool = true;

    fn options_doc() -> &'static str {
        "source: wikitext2 | c4 | random | text file\n\
         n_seqs, seq_len: evaluation windows\n\
         n_bins: bins for ECE (equal width), ACE (equal mass) and the reliability diagram\n\
         forward_batch: windows per forward pass\n\
         seed: window choice (c4, random)"
    }

    fn run(cmp: &Comparison, o: &CalibrationOptions) -> Result<Tidy> {
        if o.n_bins == 0 {
            return Err(QiError::invalid("n_bins", 0, "need at least one bin").into());
        }
        let rows = super::text_windows(cmp.reference, &o.source, o.n_seqs, o.seq_len, o.seed)?;
        let mut t = Tidy::new(cmp.name.clone());
        for twin in cmp.all() {
            let (conf, correct) = predictions(twin.model, &rows, o.forward_batch)?;
            let n = conf.len();
            let acc = correct.iter().filter(|&&c| c).count() as f64 / n as f64;
            let width = calibration_bins(&conf, &correct, o.n_bins, false);
            let mass = calibration_bins(&conf, &correct, o.n_bins, true);
            t.push(Row::new(twin.spec, "accuracy", acc).n(n));
            t.push(Row::new(twin.spec, "mean_confidence", crate::metrics::mean(&conf)).n(n));
            t.push(Row::new(twin.spec, "ece", calibration_error(&width)).n(n));
            t.push(Row::new(twin.spec, "ace", calibration_error(&mass)).n(n));
            for b in &width {
                t.push(Row::new(twin.spec, "bin_accuracy", b.accuracy).label("confidence", b.confidence).n(b.count));
            }
        }
        Ok(t)
    }
}

/// Reliability diagram: accuracy against mean confidence per equal-width bin, one line per
/// method, with the diagonal of perfect calibration.
pub fn reliability_figure(df: &polars::prelude::DataFrame) -> Result<plotly::Plot> {
    let bins = super::tidy::filter_eq(df, "metric", "bin_accuracy")?;
    let mut plot = super::plots::lines(&bins, "confidence", "spec", &super::plots::Labels::new("Reliability diagram (next-token top-1)", "mean confidence in bin", "accuracy in bin"))?;
    plot.add_trace(plotly::Scatter::new(vec![0.0, 1.0], vec![0.0, 1.0]).mode(plotly::common::Mode::Lines).name("perfect calibration").line(plotly::common::Line::new().dash(plotly::common::DashType::Dash)));
    Ok(plot)
}
