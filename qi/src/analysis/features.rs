//! Do SAE features survive quantization? One frozen SAE (trained on the reference, or loaded)
//! encodes reference and quantized activations at the same hook on identical tokens; each feature
//! active in the reference is classified by how well its quantized activations track the
//! reference ones, and survival is predicted from reference-only feature statistics.
//!
//! A feature is *active* if it fires (> 0) on at least `active_frac` of the reference tokens. Per
//! active feature: Pearson r over tokens between reference and quantized activations (a feature
//! that never fires in the quantized model has r = 0) and the overlap of the `top_k` tokens on
//! which it fires most, counting only tokens where it fires (`metrics::active_top_k_overlap`: a
//! feature firing on fewer than `top_k` reference tokens is judged on all of them, and tokens
//! where it is zero never fill a top-k). Categories:
//! - `survived`: r ≥ `survived_r` and top-k overlap ≥ `survived_overlap`;
//! - `destroyed`: r < `destroyed_r`;
//! - `blurred`: everything in between (still correlated, but degraded).
//!
//! Prediction: logistic regression of `survived` on standardised reference statistics — peak
//! activation, mean activation when firing, firing frequency, encoder norm (decoder rows are
//! unit norm by construction, so decoder norm carries no information here) — each alone and all
//! together, scored by `folds`-fold cross-validated ROC AUC (see `metrics::cv_logistic_auc`).
//!
//! Why a hand-written solver: the issue prefers `linfa` + `linfa-logistic`, but a clean build of
//! them (39 crates: ndarray, argmin, sprs, rand, …) took 77 s on this 2-core machine, more than the
//! ~1 min budget; IRLS for a handful of predictors is 60 lines and unit-tested in `metrics`.
use super::{Analysis, Comparison, Row, Tidy};
use crate::metrics::{active_top_k_overlap, cv_logistic_auc, pearson};
use crate::sae::{self, Sae, SaeTraining, TrainOptions};
use crate::{HookedTransformer, QiError};
use anyhow::Result;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

pub struct Features;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FeaturesOptions {
    /// Directory of a saved SAE (`qi sae train --out`); empty = train one on the reference.
    pub sae: String,
    /// Hook (empty = the SAE's hook, or `blocks.{n_layers/2}.hook_resid_post` when training).
    pub hook: String,
    pub source: String,
    pub n_seqs: usize,
    pub seq_len: usize,
    pub forward_batch: usize,
    pub active_frac: f64,
    pub survived_r: f64,
    pub survived_overlap: f64,
    pub destroyed_r: f64,
    pub top_k: usize,
    pub folds: usize,
    /// Per-feature rows (r, overlap, category) in addition to the summaries.
    pub per_feature: bool,
    /// Training of the SAE when `sae` is empty (windows drawn with `seed + 1`, so disjoint in
    /// distribution from the evaluation windows only by chance — use a saved SAE for real runs).
    #[serde(flatten)]
    pub training: SaeTraining,
    pub seed: u64,
}

impl Default for FeaturesOptions {
    fn default() -> Self {
        FeaturesOptions {
            sae: String::new(),
            hook: String::new(),
            source: "c4".into(),
            n_seqs: 16,
            seq_len: 128,
            forward_batch: 4,
            active_frac: 0.001,
            survived_r: 0.9,
            survived_overlap: 0.5,
            destroyed_r: 0.5,
            top_k: 10,
            folds: 5,
            per_feature: false,
            training: SaeTraining::default(),
            seed: 0,
        }
    }
}

impl FeaturesOptions {
    fn validate(&self) -> Result<()> {
        for (name, v) in [("active_frac", self.active_frac), ("survived_r", self.survived_r), ("survived_overlap", self.survived_overlap), ("destroyed_r", self.destroyed_r)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(QiError::invalid(name, v, "must be in [0, 1]").into());
            }
        }
        if self.destroyed_r > self.survived_r {
            return Err(QiError::invalid("destroyed_r", self.destroyed_r, format!("must not exceed survived_r ({})", self.survived_r)).into());
        }
        if self.top_k == 0 {
            return Err(QiError::invalid("top_k", 0, "must be at least 1").into());
        }
        if self.folds < 2 {
            return Err(QiError::invalid("folds", self.folds, "cross-validation needs at least 2 folds").into());
        }
        Ok(())
    }

    fn train_options(&self, hook: &str) -> TrainOptions {
        self.training.train_options(hook, &self.source, self.seq_len, self.forward_batch, self.seed)
    }
}

/// The category of a feature from its r and top-k overlap (see the module docs).
pub fn category(r: f64, overlap: f64, o: &FeaturesOptions) -> &'static str {
    let r = if r.is_nan() { 0.0 } else { r };
    if r >= o.survived_r && overlap >= o.survived_overlap {
        "survived"
    } else if r < o.destroyed_r {
        "destroyed"
    } else {
        "blurred"
    }
}

pub const CATEGORIES: [&str; 3] = ["survived", "blurred", "destroyed"];

/// One feature's verdict from its activations over the same tokens in the reference and a twin:
/// (Pearson r, 0 when undefined; top-k overlap of firing tokens; category).
pub fn feature_verdict(reference: &[f64], twin: &[f64], o: &FeaturesOptions) -> (f64, f64, &'static str) {
    let r = pearson(reference, twin);
    let r = if r.is_nan() { 0.0 } else { r };
    let ov = active_top_k_overlap(reference, twin, o.top_k);
    (r, ov, category(r, ov, o))
}

/// Per-feature columns of a `[tokens, features]` activation matrix.
fn columns(f: &Tensor) -> Result<Vec<Vec<f64>>> {
    let t: Vec<Vec<f32>> = f.t()?.contiguous()?.to_vec2()?;
    Ok(t.into_iter().map(|c| c.into_iter().map(f64::from).collect()).collect())
}

/// Reference-only statistics of one feature: peak, mean when firing, firing frequency.
fn stats(col: &[f64]) -> (f64, f64, f64) {
    let firing: Vec<f64> = col.iter().copied().filter(|&v| v > 0.0).collect();
    let peak = col.iter().copied().fold(0.0, f64::max);
    let mean = if firing.is_empty() { 0.0 } else { firing.iter().sum::<f64>() / firing.len() as f64 };
    (peak, mean, firing.len() as f64 / col.len().max(1) as f64)
}

/// The predictor sets scored by cross-validated AUC, as (name, column indices into
/// [peak, mean, frequency, encoder_norm]).
pub const PREDICTOR_SETS: [(&str, &[usize]); 5] =
    [("peak", &[0]), ("mean_active", &[1]), ("frequency", &[2]), ("encoder_norm", &[3]), ("all", &[0, 1, 2, 3])];

impl Analysis for Features {
    const NAME: &'static str = "features";
    const ABOUT: &'static str = "Frozen-SAE feature survival (survived / blurred / destroyed) and its prediction from reference statistics";
    type Options = FeaturesOptions;

    fn options_doc() -> &'static str {
        "sae: directory of a saved SAE (empty = train one on the reference)\n\
         hook: hook name (empty = the SAE's hook / the middle resid_post)\n\
         source: c4 | wikitext2 | random | text file\n\
         n_seqs, seq_len: evaluation windows\n\
         forward_batch: windows per forward pass\n\
         active_frac: a feature is active if it fires on at least this fraction of reference tokens, in [0, 1]\n\
         survived_r, survived_overlap: survived if r ≥ survived_r and top-k overlap ≥ survived_overlap\n\
         destroyed_r: destroyed if r < destroyed_r (blurred in between)\n\
         top_k: tokens in the top-activating overlap (only tokens where the feature fires count)\n\
         folds: cross-validation folds for the survival prediction AUC\n\
         per_feature: also emit one row per feature and metric\n\
         variant, expansion, k, l1, train_steps, train_batch, train_windows: SAE training when sae is empty\n\
         seed: data windows and SAE training"
    }

    fn run(cmp: &Comparison, o: &FeaturesOptions) -> Result<Tidy> {
        let fr = FeatureReference::new(cmp.reference, o)?;
        let n_active = fr.active.len();
        let mut t = Tidy::new(cmp.name.clone());
        fr.push_reference_rows(&mut t);
        for twin in &cmp.twins {
            let fc = fr.compare(twin.model, o)?;
            fc.push_quality_rows(&mut t, twin.spec, fr.n_tokens);
            // storage cost of the twin, so tables can put methods side by side at matched bits
            t.push(Row::new(twin.spec, "bits_per_weight", crate::quantize::model_bits_per_weight(cmp.reference, twin.spec)));
            if o.per_feature {
                for (i, &j) in fr.active.iter().enumerate() {
                    for (metric, v) in [("feature_r", fc.r[i]), ("feature_topk_overlap", fc.overlap[i])] {
                        t.push(Row::new(twin.spec, metric, v).label("feature", j).label("category", fc.category[i]));
                    }
                }
            }
            for (c, share) in CATEGORIES.iter().zip(fc.shares()) {
                t.push(Row::new(twin.spec, "share", share).label("category", *c).n(n_active));
            }
            t.push(Row::new(twin.spec, "mean_r", crate::metrics::mean(&fc.r)).n(n_active));
            t.push(Row::new(twin.spec, "mean_topk_overlap", crate::metrics::mean(&fc.overlap)).n(n_active));
            let survived: Vec<bool> = fc.damaged().iter().map(|d| !d).collect();
            for (name, cols) in PREDICTOR_SETS {
                let x: Vec<Vec<f64>> = fr.predictors.iter().map(|p| cols.iter().map(|&c| p[c]).collect()).collect();
                let auc = cv_logistic_auc(&x, &survived, o.folds, 1e-3, o.seed)?;
                t.push(Row::new(twin.spec, "survival_auc", auc).label("predictors", name).n(n_active));
            }
        }
        Ok(t)
    }
}

/// The reference side of a feature comparison, shared by [`Features`] and
/// [`super::prune_overlap`]: the SAE (trained on the reference or loaded), its hook, the
/// evaluation windows, and the reference's activations of every active feature.
pub struct FeatureReference {
    pub sae: Sae,
    pub hook: String,
    pub rows: Vec<Vec<u32>>,
    /// Real tokens evaluated (the windows are unpadded).
    pub n_tokens: usize,
    /// Features active in the reference (module docs), ascending.
    pub active: Vec<usize>,
    /// Per active feature: [peak, mean when firing, firing frequency, encoder norm].
    pub predictors: Vec<Vec<f64>>,
    /// The SAE's fraction of variance explained and L0 on the reference activations.
    pub fve: f64,
    pub l0: f64,
    /// Reference activations over tokens, one column per active feature.
    columns: Vec<Vec<f64>>,
}

/// One model's active features against the reference, in the order of
/// [`FeatureReference::active`].
#[derive(Debug, Clone)]
pub struct FeatureComparison {
    /// Pearson r over tokens (0 when undefined, e.g. a feature that never fires in the model).
    pub r: Vec<f64>,
    pub overlap: Vec<f64>,
    pub category: Vec<&'static str>,
    pub fve: f64,
    pub l0: f64,
}

impl FeatureReference {
    /// Validates `o`, gets the SAE and encodes the reference on the evaluation windows. Errors if
    /// no feature is active.
    pub fn new(model: &HookedTransformer, o: &FeaturesOptions) -> Result<Self> {
        o.validate()?;
        let sae = if o.sae.is_empty() {
            let hook = if o.hook.is_empty() { crate::hooks::names::resid_post(model.cfg.n_layers / 2) } else { o.hook.clone() };
            sae::train_on_model(model, &o.train_options(&hook))?.0
        } else {
            Sae::load(std::path::Path::new(&o.sae))?
        };
        let hook = if o.hook.is_empty() { sae.cfg.hook.clone() } else { o.hook.clone() };
        sae::check_hook(model, &hook)?;
        let rows = super::text_windows(model, &o.source, o.n_seqs, o.seq_len, o.seed)?;
        let x_ref = sae::hook_activations(model, &hook, &rows, o.forward_batch)?;
        if x_ref.dim(1)? != sae.cfg.d_in {
            return Err(QiError::invalid("SAE d_in", sae.cfg.d_in, format!("hook '{hook}' has width {}", x_ref.dim(1)?)).into());
        }
        let n_tokens = x_ref.dim(0)?;
        let all = columns(&sae.encode(&x_ref)?)?;
        let ref_stats: Vec<(f64, f64, f64)> = all.iter().map(|c| stats(c)).collect();
        let active: Vec<usize> = (0..all.len()).filter(|&j| ref_stats[j].2 > 0.0 && ref_stats[j].2 >= o.active_frac).collect();
        if active.is_empty() {
            return Err(QiError::invalid("active_frac", o.active_frac, format!("no feature fires on that fraction of the {n_tokens} reference tokens")).into());
        }
        let enc_norms: Vec<f32> = sae.encoder().sqr()?.sum(0)?.sqrt()?.to_vec1()?;
        let predictors = active.iter().map(|&j| vec![ref_stats[j].0, ref_stats[j].1, ref_stats[j].2, enc_norms[j] as f64]).collect();
        let (fve, l0) = sae::reconstruction_quality(&sae, &x_ref)?;
        let mut all = all;
        let columns = active.iter().map(|&j| std::mem::take(&mut all[j])).collect();
        Ok(FeatureReference { sae, hook, rows, n_tokens, active, predictors, fve, l0, columns })
    }

    /// Encodes `model`'s activations on the same windows and compares each active feature with
    /// the reference (r, top-k overlap, category).
    pub fn compare(&self, model: &HookedTransformer, o: &FeaturesOptions) -> Result<FeatureComparison> {
        let x = sae::hook_activations(model, &self.hook, &self.rows, o.forward_batch)?;
        let (fve, l0) = sae::reconstruction_quality(&self.sae, &x)?;
        let f = columns(&self.sae.encode(&x.to_dtype(DType::F32)?)?)?;
        let mut out = FeatureComparison { r: Vec::new(), overlap: Vec::new(), category: Vec::new(), fve, l0 };
        for (i, &j) in self.active.iter().enumerate() {
            let (r, ov, cat) = feature_verdict(&self.columns[i], &f[j], o);
            out.category.push(cat);
            out.r.push(r);
            out.overlap.push(ov);
        }
        Ok(out)
    }

    /// The reference's rows: `sae_fve`, `sae_l0` (n = tokens), `n_active` (n = SAE width).
    pub fn push_reference_rows(&self, t: &mut Tidy) {
        let reference = &super::REFERENCE;
        t.push(Row::new(reference, "sae_fve", self.fve).n(self.n_tokens));
        t.push(Row::new(reference, "sae_l0", self.l0).n(self.n_tokens));
        t.push(Row::new(reference, "n_active", self.active.len() as f64).n(self.sae.cfg.d_hidden));
    }
}

impl FeatureComparison {
    /// Damaged = not `survived` (blurred or destroyed).
    pub fn damaged(&self) -> Vec<bool> {
        self.category.iter().map(|&c| c != "survived").collect()
    }

    /// Per-feature damage score 1 − r.
    pub fn damage(&self) -> Vec<f64> {
        self.r.iter().map(|r| 1.0 - r).collect()
    }

    /// Share of active features per category, in the order of [`CATEGORIES`].
    pub fn shares(&self) -> [f64; 3] {
        let mut counts = [0usize; 3];
        for c in &self.category {
            counts[CATEGORIES.iter().position(|x| x == c).expect("known category")] += 1;
        }
        counts.map(|n| n as f64 / self.category.len() as f64)
    }

    /// `sae_fve` and `sae_l0` of the model (n = tokens).
    pub fn push_quality_rows(&self, t: &mut Tidy, spec: &crate::quant::QuantSpec, n_tokens: usize) {
        t.push(Row::new(spec, "sae_fve", self.fve).n(n_tokens));
        t.push(Row::new(spec, "sae_l0", self.l0).n(n_tokens));
    }
}

/// Survival curves: share of active features per category against bits, one line per method and
/// category (frame from [`Features::run`]).
pub fn survival_figure(df: &polars::prelude::DataFrame) -> Result<plotly::Plot> {
    use polars::prelude::Column;
    let mut shares = super::tidy::filter_eq(df, "metric", "share")?;
    let (m, c) = (super::tidy::str_values(&shares, "method")?, super::tidy::str_values(&shares, "category")?);
    let series: Vec<String> = m.iter().zip(&c).map(|(m, c)| format!("{m} · {c}")).collect();
    shares.with_column(Column::new("series".into(), series))?;
    super::plots::lines(&shares, "bits", "series", &super::plots::Labels::new("SAE feature survival under quantization", "bits", "share of active features").within(0.0, 1.0))
}

/// Cross-validated AUC of each predictor set per method (frame from [`Features::run`]).
pub fn prediction_figure(df: &polars::prelude::DataFrame) -> Result<plotly::Plot> {
    let aucs = super::tidy::filter_eq(df, "metric", "survival_auc")?;
    super::plots::bars(&aucs, "predictors", "spec", &super::plots::Labels::new("Predicting feature survival from reference statistics", "predictors", "cross-validated ROC AUC"))
}
