//! SAEs trained on reference vs quantized activations: does a quantized model's residual stream
//! yield the *same dictionary* of features? The reference and each twin get their own SAE — same
//! config, same seed, same hook, same token windows (C4 by default) — trained here or loaded from
//! `sae_dir/<spec-slug>/` (e.g. `sae_dir/none`, `sae_dir/rtn_bits_4`, written by
//! `qi sae train [--quant SPEC] --out …`). Every SAE then encodes its own model's activations on
//! the same evaluation windows (drawn with `seed`; training uses `seed + 1`).
//!
//! Rows (`spec` = the twin compared with the reference unless said otherwise):
//! - `sae_fve`, `sae_l0` (every spec): each SAE's fraction of variance explained and mean L0 on its
//!   own model's evaluation activations.
//! - `feature_share` (every spec, label `class` = dead | rare | common | frequent): share of the
//!   SAE's features firing on no evaluation token, on fewer than `rare_frac` of them, in between,
//!   or on at least `frequent_frac`.
//! - `best_match_cos`: mean over reference features of the max |cos| between its decoder direction
//!   and the twin SAE's decoder directions (bootstrap CI over features); `best_match_share`: share
//!   of reference features whose best |cos| is ≥ `match_threshold` (0.9 by default; bootstrap CI).
//! - `mnn_share`: share of reference features that are mutual nearest neighbours (their best
//!   twin match has them as its best reference match; bootstrap CI over features).
//! - `procrustes_residual`: ‖A R − B‖_F / ‖B‖_F for the orthogonal R aligning the d_in spaces,
//!   with A = the reference decoder and B = for each reference feature its best-matching twin
//!   decoder row (rows put in correspondence by the best-match assignment, because two separately
//!   trained SAEs have no shared feature order; a sign flip is not undone). Lower = the twin's
//!   dictionary is a rotation of the reference one; it can exceed 1 (worse than B = 0) when the
//!   matched rows point in unrelated directions.
//! - `cka`: linear CKA between the reference SAE's feature activations and the twin SAE's on the
//!   same evaluation tokens; `cka_debiased`: the same with the unbiased HSIC estimator (plain
//!   linear CKA of unrelated matrices approaches 1 when the SAE width exceeds the number of
//!   tokens — the random null shows it — the debiased one stays near 0).
//! - Nulls, with label `null` = `random`: the same statistic with the twin side replaced by a
//!   seeded random Gaussian matrix of the same shape (decoder `[d_hidden, d_in]`, activations
//!   `[n_tokens, d_hidden]`); `null_draws` draws → value = their mean, CI = their central 95%
//!   interval. The nulls depend only on the reference and the shapes (those of the first twin's
//!   SAE), so they are computed once and repeated for every twin (for plotting beside it). Real
//!   rows have `null` = `none`. No CI over tokens for CKA (each resample would redo the
//!   `n × n` Gram products).
//! - `same_index_share`: share of reference features whose best twin match has the same index.
//!   SAEs trained with the same seed start from the same decoder, so a high value says the match
//!   is inherited from the shared initialisation rather than found twice independently.
//! - Seed control (`seed_control`), spec `none` with `null` = `seed`: the same statistics between
//!   the reference SAE and a second reference SAE trained on the *same* reference activations
//!   from another seed (`seed + 2`; loaded from `sae_dir/seed_control/` when `sae_dir` is set):
//!   how similar two dictionaries are when nothing but the initialisation differs.
//! - `best_match_cos_diff` (label `versus` = another twin): mean over reference features of this
//!   twin's best-match |cos| minus the other's (bootstrap CI), and `best_match_cos_perm_p`: the
//!   two-sided paired sign-flip permutation p-value of that difference (`n_perm` flips). One pair
//!   per unordered pair of twins, in the order given.
use super::{Analysis, Comparison, Row, Tidy};
use crate::metrics::{best_matches, bootstrap_mean_ci, debiased_linear_cka, firing_classes, linear_cka, mean, mean_and_interval, mutual_nearest, paired_permutation_p, procrustes_residual};
use crate::quant::QuantSpec;
use crate::rng::Rng;
use crate::sae::{self, Sae, SaeTraining, TrainOptions};
use crate::{HookedTransformer, QiError};
use anyhow::Result;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub struct SaeCompare;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SaeCompareOptions {
    /// Directory holding one saved SAE per spec in `<spec-slug>/` (`none` for the reference);
    /// empty = train every SAE here.
    pub sae_dir: String,
    /// Hook (empty = the reference SAE's hook, or `blocks.{n_layers/2}.hook_resid_post`).
    pub hook: String,
    pub source: String,
    /// Evaluation windows.
    pub n_seqs: usize,
    pub seq_len: usize,
    pub forward_batch: usize,
    pub rare_frac: f64,
    pub frequent_frac: f64,
    pub match_threshold: f64,
    pub null_draws: usize,
    pub n_boot: usize,
    pub n_perm: usize,
    /// Also compare with a reference SAE trained from another seed (see the module docs).
    pub seed_control: bool,
    /// Training when `sae_dir` is empty (every model: same options, same seed `seed + 1`).
    #[serde(flatten)]
    pub training: SaeTraining,
    pub seed: u64,
}

impl Default for SaeCompareOptions {
    fn default() -> Self {
        SaeCompareOptions {
            sae_dir: String::new(),
            hook: String::new(),
            source: "c4".into(),
            n_seqs: 16,
            seq_len: 128,
            forward_batch: 4,
            rare_frac: 0.01,
            frequent_frac: 0.5,
            match_threshold: 0.9,
            null_draws: 5,
            n_boot: 1000,
            n_perm: 1000,
            seed_control: false,
            training: SaeTraining::default(),
            seed: 0,
        }
    }
}

impl SaeCompareOptions {
    fn validate(&self) -> Result<()> {
        for (name, v) in [("rare_frac", self.rare_frac), ("frequent_frac", self.frequent_frac), ("match_threshold", self.match_threshold)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(QiError::invalid(name, v, "must be in [0, 1]").into());
            }
        }
        if self.rare_frac > self.frequent_frac {
            return Err(QiError::invalid("rare_frac", self.rare_frac, format!("must not exceed frequent_frac ({})", self.frequent_frac)).into());
        }
        if self.null_draws == 0 {
            return Err(QiError::invalid("null_draws", 0, "need at least one null draw").into());
        }
        Ok(())
    }

    /// Training options for every model's SAE (same for all, so only the activations differ).
    pub fn train_options(&self, hook: &str) -> TrainOptions {
        self.training.train_options(hook, &self.source, self.seq_len, self.forward_batch, self.seed)
    }
}

/// Where the SAE of `spec` lives under `sae_dir` (`none` for the reference).
pub fn sae_path(sae_dir: &Path, spec: &QuantSpec) -> PathBuf {
    sae_dir.join(crate::twin_cache::slug(&spec.to_string()))
}

/// The directory of the seed-control SAE under `sae_dir`.
pub const SEED_CONTROL_DIR: &str = "seed_control";

fn load_sae(sae_dir: &Path, spec: &QuantSpec) -> Result<Sae> {
    load_from(sae_dir, &sae_path(sae_dir, spec), &format!("'{spec}'"), &format!("--quant '{spec}'"))
}

fn load_from(sae_dir: &Path, dir: &Path, what: &str, how: &str) -> Result<Sae> {
    if !dir.join("config.json").is_file() {
        return Err(QiError::invalid(
            "sae_dir",
            sae_dir.display(),
            format!("no SAE for {what} at {} (train it with `qi sae train --model … {how} --out {}`)", dir.display(), dir.display()),
        )
        .into());
    }
    Sae::load(dir)
}

/// A seeded standard-normal matrix.
fn gaussian(rows: usize, cols: usize, seed: u64) -> Result<Tensor> {
    let mut rng = Rng::new(seed);
    let v: Vec<f32> = (0..rows * cols).map(|_| rng.normal() as f32).collect();
    Ok(Tensor::from_vec(v, (rows, cols), &crate::device::device()?)?)
}

/// Firing frequency of each feature over the rows of `f` `[n_tokens, d_hidden]`.
fn firing_frequency(f: &Tensor) -> Result<Vec<f64>> {
    let n = f.dim(0)? as f64;
    let c: Vec<f32> = f.gt(0f64)?.to_dtype(DType::F32)?.sum(0)?.to_vec1()?;
    Ok(c.into_iter().map(|x| x as f64 / n).collect())
}

/// The twin decoder's rows in the order of their best-matching reference features.
fn matched_rows(b: &Tensor, a_to_b: &[usize]) -> Result<Tensor> {
    let idx: Vec<u32> = a_to_b.iter().map(|&i| i as u32).collect();
    Ok(b.index_select(&Tensor::from_vec(idx, a_to_b.len(), b.device())?, 0)?)
}

/// Decoder statistics of `b` against the reference decoder `a`, per reference feature where
/// possible.
struct DecoderStats {
    /// Best-match |cos|.
    cos: Vec<f64>,
    /// 1 for mutual nearest neighbours, else 0.
    mnn: Vec<f64>,
    /// 1 if the best match has the same index, else 0.
    same_index: Vec<f64>,
    procrustes: f64,
}

fn decoder_stats(a: &Tensor, b: &Tensor) -> Result<DecoderStats> {
    let m = best_matches(a, b)?;
    let flag = |x: bool| if x { 1.0 } else { 0.0 };
    let mnn = mutual_nearest(&m.a_to_b, &m.b_to_a).into_iter().map(flag).collect();
    let same_index = m.a_to_b.iter().enumerate().map(|(i, &j)| flag(i == j)).collect();
    let procrustes = procrustes_residual(a, &matched_rows(b, &m.a_to_b)?)?;
    Ok(DecoderStats { cos: m.cos, mnn, same_index, procrustes })
}

fn share_at_least(x: &[f64], t: f64) -> Vec<f64> {
    x.iter().map(|&v| if v >= t { 1.0 } else { 0.0 }).collect()
}

/// One model's SAE and its feature activations on the evaluation tokens.
struct Side {
    sae: Sae,
    features: Tensor,
}

impl Analysis for SaeCompare {
    const NAME: &'static str = "sae-compare";
    const ABOUT: &'static str = "SAEs trained on reference vs quantized activations: decoder best-match cosine, Procrustes, mutual neighbours, CKA (with random nulls), firing classes";
    type Options = SaeCompareOptions;

    fn options_doc() -> &'static str {
        "sae_dir: directory with one saved SAE per spec in <spec-slug>/ (none/, rtn_bits_4/, …; qi sae train --quant SPEC); empty = train each here\n\
         hook: hook name (empty = the reference SAE's hook / the middle resid_post)\n\
         source: c4 | wikitext2 | random | text file (evaluation and training windows)\n\
         n_seqs, seq_len: evaluation windows\n\
         forward_batch: windows per forward pass\n\
         rare_frac, frequent_frac: firing-frequency classes: rare < rare_frac ≤ common < frequent_frac ≤ frequent, in [0, 1]\n\
         match_threshold: best_match_share counts reference features with best |cos| ≥ this, in [0, 1]\n\
         null_draws: random Gaussian matrices per null statistic\n\
         n_boot: bootstrap resamples (over features)\n\
         n_perm: sign flips of the paired permutation test between twins\n\
         seed_control: also compare with a reference SAE from another seed (trained, or sae_dir/seed_control/)\n\
         variant, expansion, k, l1, train_steps, train_batch, train_windows: SAE training when sae_dir is empty\n\
         seed: evaluation windows (training uses seed + 1), nulls, bootstrap and permutations"
    }

    fn run(cmp: &Comparison, o: &SaeCompareOptions) -> Result<Tidy> {
        o.validate()?;
        let reference = cmp.reference;
        let models: Vec<(&QuantSpec, &HookedTransformer)> = std::iter::once((&super::REFERENCE, reference)).chain(cmp.twins.iter().map(|t| (t.spec, t.model))).collect();
        let sae_dir = (!o.sae_dir.is_empty()).then(|| PathBuf::from(&o.sae_dir));
        // the hook: given, else the saved reference SAE's, else the middle residual stream
        let mut saes: Vec<Option<Sae>> = match &sae_dir {
            Some(d) => models.iter().map(|(s, _)| load_sae(d, s).map(Some)).collect::<Result<_>>()?,
            None => models.iter().map(|_| None).collect(),
        };
        let hook = if !o.hook.is_empty() {
            o.hook.clone()
        } else if let Some(Some(s)) = saes.first() {
            s.cfg.hook.clone()
        } else {
            crate::hooks::names::resid_post(cmp.n_layers() / 2)
        };
        sae::check_hook(reference, &hook)?;
        let rows = super::text_windows(reference, &o.source, o.n_seqs, o.seq_len, o.seed)?;
        let mut sides: Vec<Side> = Vec::with_capacity(models.len());
        let mut ref_x: Option<Tensor> = None;
        let mut t = Tidy::new(cmp.name.clone());
        for ((spec, model), saved) in models.iter().zip(saes.iter_mut()) {
            let sae = match saved.take() {
                Some(s) => s,
                None => sae::train_on_model(model, &o.train_options(&hook))?.0,
            };
            let x = sae::hook_activations(model, &hook, &rows, o.forward_batch)?;
            if x.dim(1)? != sae.cfg.d_in {
                return Err(QiError::invalid("SAE d_in", sae.cfg.d_in, format!("the SAE for '{spec}' reads width {} but hook '{hook}' has width {}", sae.cfg.d_in, x.dim(1)?)).into());
            }
            if sae.cfg.hook != hook {
                return Err(QiError::invalid("SAE hook", &sae.cfg.hook, format!("the SAE for '{spec}' was trained on '{}', the comparison uses '{hook}'", sae.cfg.hook)).into());
            }
            let n_tok = x.dim(0)?;
            let (fve, l0) = sae::reconstruction_quality(&sae, &x)?;
            t.push(Row::new(spec, "sae_fve", fve).n(n_tok));
            t.push(Row::new(spec, "sae_l0", l0).n(n_tok));
            let features = sae.encode(&x)?;
            let classes = firing_classes(&firing_frequency(&features)?, o.rare_frac, o.frequent_frac);
            for (class, share) in ["dead", "rare", "common", "frequent"].iter().zip(classes) {
                t.push(Row::new(spec, "feature_share", share).label("class", *class).n(sae.cfg.d_hidden));
            }
            sides.push(Side { sae, features });
            if ref_x.is_none() {
                ref_x = Some(x);
            }
        }
        let (ref_side, twin_sides) = sides.split_first().expect("the reference is first");
        let ref_x = ref_x.expect("the reference is first");
        let a = ref_side.sae.decoder();
        let n_feat = a.dim(0)?;

        // nulls: the reference against random matrices shaped like the (first) twin's
        let mut null_rows: Vec<(&str, (f64, f64, f64), usize)> = Vec::new();
        if let Some(first) = twin_sides.first() {
            let (h, d) = first.sae.decoder().dims2()?;
            let n_tok = first.features.dim(0)?;
            let (mut cos, mut share, mut mnn, mut res, mut cka, mut dcka) = (vec![], vec![], vec![], vec![], vec![], vec![]);
            for draw in 0..o.null_draws as u64 {
                let g = gaussian(h, d, o.seed ^ 0x5AE_C0DE ^ (draw << 32))?;
                let st = decoder_stats(&a, &g)?;
                share.push(mean(&share_at_least(&st.cos, o.match_threshold)));
                cos.push(mean(&st.cos));
                mnn.push(mean(&st.mnn));
                res.push(st.procrustes);
                let gf = gaussian(n_tok, first.features.dim(1)?, o.seed ^ 0xC4A ^ (draw << 32))?;
                cka.push(linear_cka(&ref_side.features, &gf)?);
                dcka.push(debiased_linear_cka(&ref_side.features, &gf)?);
            }
            for (metric, v, n) in [("best_match_cos", &cos, n_feat), ("best_match_share", &share, n_feat), ("mnn_share", &mnn, n_feat), ("procrustes_residual", &res, n_feat), ("cka", &cka, n_tok), ("cka_debiased", &dcka, n_tok)] {
                null_rows.push((metric, mean_and_interval(v, 0.95), n));
            }
        }

        // rows of one comparison with the reference SAE (a twin's SAE, or the seed control)
        let emit = |t: &mut Tidy, spec: &QuantSpec, null: &str, other: &Side, seed: u64| -> Result<Vec<f64>> {
            let st = decoder_stats(&a, &other.sae.decoder())?;
            let boot = |x: &[f64], s: u64| bootstrap_mean_ci(x, o.n_boot, 0.95, s);
            let share = share_at_least(&st.cos, o.match_threshold);
            for (k, (metric, x)) in [("best_match_cos", &st.cos), ("best_match_share", &share), ("mnn_share", &st.mnn), ("same_index_share", &st.same_index)].into_iter().enumerate() {
                let (m, lo, hi) = boot(x, seed.wrapping_add(k as u64));
                t.push(Row::new(spec, metric, m).ci(lo, hi).n(n_feat).label("null", null));
            }
            t.push(Row::new(spec, "procrustes_residual", st.procrustes).n(n_feat).label("null", null));
            let n_tok = other.features.dim(0)?;
            t.push(Row::new(spec, "cka", linear_cka(&ref_side.features, &other.features)?).n(n_tok).label("null", null));
            t.push(Row::new(spec, "cka_debiased", debiased_linear_cka(&ref_side.features, &other.features)?).n(n_tok).label("null", null));
            Ok(st.cos)
        };
        let mut per_twin_cos: Vec<Vec<f64>> = Vec::new();
        for (i, (tw, side)) in cmp.twins.iter().zip(twin_sides).enumerate() {
            per_twin_cos.push(emit(&mut t, tw.spec, "none", side, o.seed.wrapping_add(1000 * (i as u64 + 1)))?);
            for (metric, (m, lo, hi), n) in &null_rows {
                t.push(Row::new(tw.spec, metric, *m).ci(*lo, *hi).n(*n).label("null", "random"));
            }
        }
        if o.seed_control {
            let sae = match &sae_dir {
                Some(d) => load_from(d, &d.join(SEED_CONTROL_DIR), "the seed control", "--set seed=<another seed>")?,
                None => sae::train_on_model(reference, &TrainOptions { seed: o.seed.wrapping_add(2), ..o.train_options(&hook) })?.0,
            };
            if sae.cfg.d_in != ref_x.dim(1)? || sae.cfg.hook != hook {
                return Err(QiError::invalid("seed-control SAE", &sae.cfg.hook, format!("expected an SAE on '{hook}' of width {}", ref_x.dim(1)?)).into());
            }
            let features = sae.encode(&ref_x)?;
            emit(&mut t, &super::REFERENCE, "seed", &Side { sae, features }, o.seed.wrapping_add(999))?;
        }
        // paired differences between twins on the same reference features
        for i in 0..cmp.twins.len() {
            for j in i + 1..cmp.twins.len() {
                let (x, y) = (&per_twin_cos[i], &per_twin_cos[j]);
                let d: Vec<f64> = x.iter().zip(y).map(|(a, b)| a - b).collect();
                let s = o.seed.wrapping_add(7919 * (i * cmp.twins.len() + j) as u64);
                let (m, lo, hi) = bootstrap_mean_ci(&d, o.n_boot, 0.95, s);
                let versus = cmp.twins[j].spec.to_string();
                t.push(Row::new(cmp.twins[i].spec, "best_match_cos_diff", m).ci(lo, hi).n(n_feat).label("versus", versus.clone()));
                t.push(Row::new(cmp.twins[i].spec, "best_match_cos_perm_p", paired_permutation_p(x, y, o.n_perm, s ^ 0x9E37)).n(n_feat).label("versus", versus));
            }
        }
        Ok(t)
    }
}

/// Bars per similarity metric (best-match cosine, its share ≥ threshold, mutual-NN share, CKA):
/// each twin beside the random null (frame from [`SaeCompare::run`]).
pub fn similarity_figure(df: &polars::prelude::DataFrame) -> Result<plotly::Plot> {
    use polars::prelude::Column;
    let mut parts = Vec::new();
    for metric in ["best_match_cos", "best_match_share", "mnn_share", "cka", "cka_debiased"] {
        parts.push(super::tidy::filter_eq(df, "metric", metric)?);
    }
    let mut d = parts[0].clone();
    for p in &parts[1..] {
        d.vstack_mut(p)?;
    }
    // one series per twin, and one for the null (identical for every twin: keep the first's)
    let first = super::tidy::str_values(&super::tidy::filter_eq(&d, "null", "random")?, "spec")?.first().cloned().unwrap_or_default();
    let mut d2 = super::tidy::filter_eq(&d, "null", "none")?;
    d2.vstack_mut(&super::tidy::filter_eq(&d, "null", "seed")?)?;
    d2.vstack_mut(&super::tidy::filter_eq(&super::tidy::filter_eq(&d, "null", "random")?, "spec", &first)?)?;
    let (spec, null) = (super::tidy::str_values(&d2, "spec")?, super::tidy::str_values(&d2, "null")?);
    let series: Vec<String> = spec
        .iter()
        .zip(&null)
        .map(|(s, n)| match n.as_str() {
            "random" => "random null".to_string(),
            "seed" => "reference, other seed".to_string(),
            _ => s.clone(),
        })
        .collect();
    d2.with_column(Column::new("series".into(), series))?;
    let d = d2;
    super::plots::bars(&d, "metric", "series", &super::plots::Labels::new("SAEs trained on quantized activations vs the reference SAE", "statistic", "value (higher = more similar)"))
}

/// Firing-frequency class shares of each model's SAE (frame from [`SaeCompare::run`]).
pub fn frequency_figure(df: &polars::prelude::DataFrame) -> Result<plotly::Plot> {
    let d = super::tidy::filter_eq(df, "metric", "feature_share")?;
    super::plots::bars(&d, "class", "spec", &super::plots::Labels::new("Firing-frequency classes of each model's SAE", "class", "share of features").within(0.0, 1.0))
}
