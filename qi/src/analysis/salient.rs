//! Salient MLP neurons by integrated gradients, and whether quantized twins keep the same ones.
//!
//! A separate file from [`super::neurons`] because it is a different measurement (gradient
//! attribution to one prediction, not activation statistics over a corpus) with its own options
//! and a very different cost.
//!
//! **Example.** Each text window is one example; its position is the window's last real token
//! (right padding never enters) and its target is the token the model predicts there (argmax of
//! the logits). With `target = own` (default, the standard in the original study) every model —
//! reference and each twin — is attributed towards its *own* prediction; with `target =
//! reference` every model is attributed towards the reference's prediction.
//!
//! **Neuron.** A hidden unit of the MLP, activation `a` = `blocks.{l}.mlp.hook_post` at the
//! example's position.
//!
//! **Attribution.** Integrated gradients with baseline 0:
//! `IG_i = a_i · mean_k ∂logit_target/∂a_i |_{α_k·a}` with `ig_steps` = m midpoints
//! `α_k = (k + ½)/m` (midpoint Riemann rule). All neurons of layer l at the example's position are
//! scaled together (the rest of the sequence keeps its activations) and the forward resumes from
//! block l on the cached `resid_pre`; the m steps form one batch, and candle autograd gives the
//! gradients (the scaled activation is a `Var`). Completeness: `Σ_i IG_i ≈ logit(a) − logit(0)`
//! up to the Riemann error; both endpoints are computed too (two extra batch rows) and reported as
//! `ig_completeness_rel` = Σ|ΣIG − Δlogit| / Σ|Δlogit| over examples, so a too-small m shows.
//!
//! **Salient.** Per example and layer, `|IG|` divided by its maximum over the layer's neurons
//! (per layer: what per-layer counts need, and no layer's scale swamps another's); salient =
//! normalised ≥ `threshold` (default 0.7). A layer whose attributions are all zero has none.
//!
//! **Rows** (label `scope` = `layer` with a layer, or `total` over the analysed layers):
//! `salient_count` (mean per example, bootstrap CI; total = sum over layers), for the reference and
//! each twin; `salient_jaccard` (twin vs reference salient sets, mean over examples, bootstrap CI;
//! total = sets of (layer, neuron) pairs); `ig_completeness_rel`; `target_agreement` (twins: share
//! of examples where the twin predicts the reference's token — with `target = own`, overlap is low
//! where the targets differ).
//!
//! **Cost.** Per model, example and layer: one forward + backward of `ig_steps + 2` copies of the
//! window (up to the example's position) through blocks l..n_layers, on candle's differentiable
//! (slower, composed) kernels: roughly 3·(m+2)·(n_layers − l)/n_layers full forwards of the window.
//! On SmolLM2-135M with m = 16 and 64-token windows that is seconds per (layer, example), so pick
//! a subset of layers (e.g. every third) for real runs.
use super::plots::{lines, Labels};
use super::tidy::filter_eq;
use super::{Analysis, Comparison, Row, Tidy, Twin, REFERENCE};
use crate::batch::{Batch, Padding};
use crate::hooks::{names, Hooks};
use crate::metrics::{bootstrap_mean_ci, jaccard};
use crate::{HookedTransformer, QiError};
use anyhow::Result;
use candle_core::{DType, IndexOp, Tensor, Var, D};
use plotly::Plot;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

pub struct SalientNeurons;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SalientOptions {
    pub source: String,
    pub n_seqs: usize,
    pub seq_len: usize,
    /// Layers to analyse (empty = all); from JSON also a string such as `"0,7,15"`.
    #[serde(deserialize_with = "super::layer_list")]
    pub layers: Vec<usize>,
    pub ig_steps: usize,
    pub threshold: f64,
    /// `own` or `reference` (see the module docs).
    pub target: String,
    pub forward_batch: usize,
    pub n_boot: usize,
    pub seed: u64,
}

impl Default for SalientOptions {
    fn default() -> Self {
        SalientOptions {
            source: "c4".into(),
            n_seqs: 16,
            seq_len: 64,
            layers: vec![],
            ig_steps: 16,
            threshold: 0.7,
            target: "own".into(),
            forward_batch: 4,
            n_boot: 1000,
            seed: 0,
        }
    }
}

/// Integrated gradients of one example for one layer (see the module docs).
#[derive(Debug, Clone)]
pub struct LayerIg {
    /// Per neuron of the layer.
    pub ig: Vec<f32>,
    /// Target logit with the activation as is (α = 1) and zeroed at the example's position (α = 0).
    pub logit_full: f64,
    pub logit_zero: f64,
}

/// IG of `target`'s logit at the last position of `tokens` with respect to layer `layer`'s MLP
/// hidden activation there. `resid_pre`: that layer's input for `tokens` (`[1, len, d_model]` or
/// longer, only the first `len` positions are used — causal attention makes later ones
/// irrelevant); `activation`: `mlp.hook_post` at the last position (`[d_mlp]`).
pub fn integrated_gradients(
    model: &HookedTransformer,
    tokens: &[u32],
    resid_pre: &Tensor,
    activation: &Tensor,
    layer: usize,
    target: u32,
    steps: usize,
) -> Result<LayerIg> {
    if steps == 0 {
        return Err(QiError::invalid("ig_steps", 0, "need at least one integration step").into());
    }
    let model = &model.with_fresh_tensor_ids()?; // see there: notebooks' duplicated tensor-id counters
    let p = tokens.len();
    let dev = resid_pre.device();
    // rows 0..steps: midpoints; then α = 0 and α = 1 for the completeness check
    let mut alphas: Vec<f32> = (0..steps).map(|k| (k as f32 + 0.5) / steps as f32).collect();
    alphas.extend([0.0, 1.0]);
    let n = alphas.len();
    let a = activation.to_dtype(DType::F32)?.flatten_all()?;
    let scaled = Tensor::from_vec(alphas, (n, 1), dev)?.broadcast_mul(&a.unsqueeze(0)?)?;
    let var = Var::from_tensor(&scaled)?;
    let row = var.as_tensor().unsqueeze(1)?; // [n, 1, d_mlp]
    let batch = Batch::from_rows(&vec![tokens.to_vec(); n], Padding::Right, 0)?;
    let mut x = resid_pre.narrow(1, 0, p)?.to_dtype(DType::F32)?.broadcast_as((n, p, resid_pre.dim(2)?))?.contiguous()?;
    let mut hooks = Hooks::new();
    hooks.add(names::mlp_post(layer), |_, h| {
        let h = if p > 1 { Tensor::cat(&[&h.narrow(1, 0, p - 1)?, &row], 1)? } else { row.clone() };
        Ok(Some(h))
    });
    for l in layer..model.cfg.n_layers {
        x = model.run_block(l, &x, &batch, if l == layer { Some(&mut hooks) } else { None })?;
    }
    // only the example's position reaches the unembedding (the full [n, p, vocab] is large)
    let logits = model.unembed.forward(&model.ln_final.forward(&x.narrow(1, p - 1, 1)?)?)?;
    let target_logits = logits.i((.., 0, target as usize))?; // [n]
    let values: Vec<f32> = target_logits.to_vec1()?;
    let grads = target_logits.sum_all()?.backward()?;
    let g = match grads.get(var.as_tensor()) {
        Some(g) => g.narrow(0, 0, steps)?.mean(0)?,
        None => a.zeros_like()?,
    };
    Ok(LayerIg { ig: (g * &a)?.to_vec1()?, logit_full: values[steps + 1] as f64, logit_zero: values[steps] as f64 })
}

/// Indices of the salient neurons: `|x| / max |x| ≥ threshold` (none when every `x` is 0).
pub fn salient_set(x: &[f32], threshold: f64) -> Vec<usize> {
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    if !(max > 0.0) {
        return vec![];
    }
    (0..x.len()).filter(|&i| x[i].abs() as f64 / max >= threshold).collect()
}

/// What one model gives per example: its predicted token and, per analysed layer, the salient set
/// and the completeness gap.
struct ModelIg {
    /// The token attributed to, per example.
    targets: Vec<u32>,
    /// The model's own argmax, per example (equal to `targets` with `target = own`).
    predicted: Vec<u32>,
    /// `[example][layer index]`
    salient: Vec<Vec<Vec<usize>>>,
    /// `[layer index]`: (Σ|ΣIG − Δlogit|, Σ|Δlogit|) over examples
    completeness: Vec<(f64, f64)>,
}

/// Runs IG for every example and layer of one model. `targets`: fixed targets (the reference's),
/// or `None` for the model's own predictions.
fn model_ig(model: &HookedTransformer, rows: &[Vec<u32>], layers: &[usize], o: &SalientOptions, targets: Option<&[u32]>, what: &str) -> Result<ModelIg> {
    let mut filter: Vec<String> = layers.iter().map(|&l| names::resid_pre(l)).collect();
    filter.extend(layers.iter().map(|&l| names::mlp_post(l)));
    let mut out = ModelIg { targets: vec![], predicted: vec![], salient: vec![], completeness: vec![(0.0, 0.0); layers.len()] };
    let bar = crate::progress::bar((rows.len() * layers.len()) as u64, what);
    let mut start = 0;
    for b in super::batches(rows, o.forward_batch, super::pad_id(model))? {
        let (logits, cache) = model.run_with_cache(&b, filter.clone())?;
        let lengths: Vec<u32> = b.valid_mask()?.to_dtype(DType::U32)?.sum(1)?.to_vec1()?;
        for (r, &len) in lengths.iter().enumerate() {
            let (e, pos) = (start + r, len as usize - 1);
            let own = logits.i((r, pos))?.argmax(D::Minus1)?.to_scalar::<u32>()?;
            let target = targets.map_or(own, |t| t[e]);
            out.predicted.push(own);
            out.targets.push(target);
            let mut sets = Vec::with_capacity(layers.len());
            for (li, &l) in layers.iter().enumerate() {
                let resid = cache.get(&names::resid_pre(l))?.i(r..r + 1)?;
                let act = cache.get(&names::mlp_post(l))?.i((r, pos))?;
                let ig = integrated_gradients(model, &rows[e][..=pos], &resid, &act, l, target, o.ig_steps)?;
                let delta = ig.logit_full - ig.logit_zero;
                let sum: f64 = ig.ig.iter().map(|&v| v as f64).sum();
                out.completeness[li].0 += (sum - delta).abs();
                out.completeness[li].1 += delta.abs();
                sets.push(salient_set(&ig.ig, o.threshold));
                bar.inc(1);
            }
            out.salient.push(sets);
        }
        start += lengths.len();
    }
    bar.finish_and_clear();
    Ok(out)
}

impl Analysis for SalientNeurons {
    const NAME: &'static str = "salient-neurons";
    const ABOUT: &'static str = "Salient MLP neurons by integrated gradients towards the predicted token: counts per layer, reference-vs-twin overlap (Jaccard)";
    type Options = SalientOptions;

    fn options_doc() -> &'static str {
        "source: c4 | wikitext2 | random | text file\n\
         n_seqs, seq_len: windows; each window is one example, at its last token\n\
         layers: layers to analyse, e.g. \"0,7,15\" (empty = all; each costs ig_steps+2 backward rows per example)\n\
         ig_steps: integration steps m (midpoint rule, baseline 0)\n\
         threshold: salient if |IG| / max over the layer's neurons ≥ this, in [0, 1]\n\
         target: own (each model's own predicted token) | reference (the reference's)\n\
         forward_batch: windows per caching forward pass\n\
         n_boot: bootstrap resamples for the CIs\n\
         seed: windows and bootstrap"
    }

    fn run(cmp: &Comparison, o: &SalientOptions) -> Result<Tidy> {
        if !(0.0..=1.0).contains(&o.threshold) {
            return Err(QiError::invalid("threshold", o.threshold, "must be in [0, 1]").into());
        }
        if o.ig_steps == 0 {
            return Err(QiError::invalid("ig_steps", 0, "need at least one integration step").into());
        }
        if o.target != "own" && o.target != "reference" {
            return Err(QiError::invalid("target", &o.target, "expected own or reference").into());
        }
        let layers: Vec<usize> = if o.layers.is_empty() { (0..cmp.n_layers()).collect() } else { o.layers.clone() };
        for &l in &layers {
            cmp.check_layer_head(l, None)?;
        }
        let rows = super::text_windows(cmp.reference, &o.source, o.n_seqs, o.seq_len, o.seed)?;
        let n_ex = rows.len();
        // the reference is always needed (overlap), its rows only when the comparison lists it
        let reference = model_ig(cmp.reference, &rows, &layers, o, None, "salient ref")?;
        let mut models: Vec<(Twin, ModelIg)> = Vec::new();
        for twin in cmp.twins.iter() {
            let fixed = (o.target == "reference").then_some(reference.targets.as_slice());
            models.push((*twin, model_ig(twin.model, &rows, &layers, o, fixed, &twin.spec.to_string())?));
        }
        let mut t = Tidy::new(cmp.name.clone());
        let ci = |v: &[f64]| bootstrap_mean_ci(v, o.n_boot, 0.95, o.seed);
        let ref_entry = cmp.reference_rows.then_some((Twin { spec: &REFERENCE, model: cmp.reference }, &reference));
        for (twin, ig) in ref_entry.into_iter().chain(models.iter().map(|(t, m)| (*t, m))) {
            let is_twin = !std::ptr::eq(ig, &reference);
            for (li, &l) in layers.iter().enumerate() {
                let counts: Vec<f64> = ig.salient.iter().map(|s| s[li].len() as f64).collect();
                let (m, lo, hi) = ci(&counts);
                t.push(Row::new(twin.spec, "salient_count", m).layer(l).label("scope", "layer").ci(lo, hi).n(n_ex));
                let (gap, delta) = ig.completeness[li];
                t.push(Row::new(twin.spec, "ig_completeness_rel", gap / delta.max(1e-12)).layer(l).label("scope", "layer").n(n_ex));
                if is_twin {
                    let jac: Vec<f64> = (0..n_ex).map(|e| jaccard(&reference.salient[e][li], &ig.salient[e][li])).collect();
                    let (m, lo, hi) = ci(&jac);
                    t.push(Row::new(twin.spec, "salient_jaccard", m).layer(l).label("scope", "layer").ci(lo, hi).n(n_ex));
                }
            }
            let totals: Vec<f64> = ig.salient.iter().map(|s| s.iter().map(Vec::len).sum::<usize>() as f64).collect();
            let (m, lo, hi) = ci(&totals);
            t.push(Row::new(twin.spec, "salient_count", m).label("scope", "total").ci(lo, hi).n(n_ex));
            if is_twin {
                // sets of (layer, neuron) pairs, encoded as layer·d_mlp + neuron
                let d_mlp = cmp.reference.cfg.d_mlp;
                let flat = |s: &Vec<Vec<usize>>| -> Vec<usize> { s.iter().enumerate().flat_map(|(li, v)| v.iter().map(move |&i| li * d_mlp + i)).collect() };
                let jac: Vec<f64> = (0..n_ex).map(|e| jaccard(&flat(&reference.salient[e]), &flat(&ig.salient[e]))).collect();
                let (m, lo, hi) = ci(&jac);
                t.push(Row::new(twin.spec, "salient_jaccard", m).label("scope", "total").ci(lo, hi).n(n_ex));
                let agree = (0..n_ex).filter(|&e| ig.predicted[e] == reference.predicted[e]).count();
                t.push(Row::new(twin.spec, "target_agreement", agree as f64 / n_ex as f64).label("scope", "total").n(n_ex));
            }
        }
        Ok(t)
    }
}

fn per_layer(df: &DataFrame, metric: &str) -> Result<DataFrame> {
    filter_eq(&filter_eq(df, "metric", metric)?, "scope", "layer")
}

/// Mean salient-neuron count per example against layer, one line per method.
pub fn count_figure(df: &DataFrame) -> Result<Plot> {
    lines(&per_layer(df, "salient_count")?, "layer", "spec", &Labels::new("Salient MLP neurons (integrated gradients)", "layer", "salient neurons per example"))
}

/// Jaccard overlap of each twin's salient set with the reference's, against layer.
pub fn overlap_figure(df: &DataFrame) -> Result<Plot> {
    lines(&per_layer(df, "salient_jaccard")?, "layer", "spec", &Labels::new("Salient-neuron overlap with the reference", "layer", "Jaccard (mean over examples)").within(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salient_set_normalises_by_the_max_abs() {
        // |x| / 4 = [0.25, 1, 0.75, 0.875, 0.5]: threshold 0.75 keeps 1, 2, 3 (inclusive)
        let x = [1.0, -4.0, 3.0, 3.5, -2.0];
        assert_eq!(salient_set(&x, 0.75), vec![1, 2, 3]);
        assert_eq!(salient_set(&x, 0.7), vec![1, 2, 3]);
        assert_eq!(salient_set(&x, 0.8), vec![1, 3]);
        assert_eq!(salient_set(&x, 1.0), vec![1]);
        assert_eq!(salient_set(&[1.0, -4.0], 0.0), vec![0, 1]);
        assert!(salient_set(&[0.0, 0.0], 0.5).is_empty());
        // reference {1,2,3} vs twin {1}: Jaccard 1/3
        assert!((jaccard(&salient_set(&x, 0.75), &salient_set(&x, 1.0)) - 1.0 / 3.0).abs() < 1e-12);
    }
}
