//! Activation similarity: how far does each quantized twin's residual stream and block output drift
//! from the reference's, layer by layer, on identical tokens?
//!
//! Per layer and component (`resid_pre`, `resid_post`, `attn_out`, `mlp_out`) and per real token:
//! cosine similarity, relative L2 drift ‖a − â‖/‖a‖ and Pearson correlation of the two activation
//! vectors; reported as the mean over tokens with a seeded percentile-bootstrap 95% CI that
//! resamples whole sequences (neighbouring tokens are correlated, so resampling tokens would
//! understate the uncertainty).
use super::plots::{lines, Labels};
use super::tidy::filter_eq;
use super::{batches, pad_id, text_windows, valid_rows, Analysis, Comparison, Row, Tidy};
use crate::hooks::{names, HookFilter};
use crate::metrics::{cluster_bootstrap_mean_ci, cosine_rows, pearson_rows, rel_l2_rows};
use crate::QiError;
use anyhow::Result;
use plotly::Plot;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

/// The components compared, in the order rows are emitted.
pub const COMPONENTS: [&str; 4] = ["resid_pre", "resid_post", "attn_out", "mlp_out"];
/// The metrics per token, in the order rows are emitted.
pub const METRICS: [&str; 3] = ["cosine", "rel_l2", "pearson"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ActivationOptions {
    /// Token source: `wikitext2`, `c4`, `random` or a text file (see [`text_windows`]).
    pub text: String,
    pub n_seqs: usize,
    pub seq_len: usize,
    /// Sequences per forward pass (bounds memory: only the needed hooks are cached).
    pub batch_size: usize,
    /// Layers to compare; empty = all.
    #[serde(deserialize_with = "super::layer_list")]
    pub layers: Vec<usize>,
    /// Components to compare; empty = all of [`COMPONENTS`].
    pub components: Vec<String>,
    /// Bootstrap resamples (of sequences) for the CI of the mean over tokens.
    pub n_boot: usize,
    pub seed: u64,
}

impl Default for ActivationOptions {
    fn default() -> Self {
        ActivationOptions {
            text: "wikitext2".into(),
            n_seqs: 8,
            seq_len: 128,
            batch_size: 4,
            layers: vec![],
            components: vec![],
            n_boot: 1000,
            seed: 0,
        }
    }
}

pub struct ActivationSimilarity;

impl Analysis for ActivationSimilarity {
    const NAME: &'static str = "activations";
    const ABOUT: &'static str = "cosine, relative L2 drift and Pearson r of activations, reference vs each twin, per layer and component";
    type Options = ActivationOptions;

    fn options_doc() -> &'static str {
        "text: token source (wikitext2, c4, random or a text file path)\n\
         n_seqs: number of token windows\n\
         seq_len: tokens per window\n\
         batch_size: windows per forward pass\n\
         layers: layers to compare (empty = all)\n\
         components: subset of resid_pre, resid_post, attn_out, mlp_out (empty = all)\n\
         n_boot: bootstrap resamples (of sequences) for the 95% CI of the mean over tokens\n\
         seed: seeds the windows (c4, random) and the bootstrap"
    }

    fn run(cmp: &Comparison, opts: &ActivationOptions) -> Result<Tidy> {
        resolve(cmp, opts)?; // fail on bad options before reading any text
        let rows = text_windows(cmp.reference, &opts.text, opts.n_seqs, opts.seq_len, opts.seed)?;
        similarity_on_rows(cmp, &rows, opts)
    }
}

/// The hook of `component` at `layer`.
fn hook_of(component: &str, layer: usize) -> String {
    match component {
        "resid_pre" => names::resid_pre(layer),
        "resid_post" => names::resid_post(layer),
        "attn_out" => names::attn_out(layer),
        _ => names::mlp_out(layer),
    }
}

/// The layers and components to compare, checked against the model.
fn resolve(cmp: &Comparison, opts: &ActivationOptions) -> Result<(Vec<usize>, Vec<&'static str>)> {
    for &l in &opts.layers {
        cmp.check_layer_head(l, None)?;
    }
    let layers: Vec<usize> = if opts.layers.is_empty() { (0..cmp.n_layers()).collect() } else { opts.layers.clone() };
    for c in &opts.components {
        if !COMPONENTS.contains(&c.as_str()) {
            return Err(QiError::invalid("components", c, format!("expected some of {COMPONENTS:?}")).into());
        }
    }
    let components = COMPONENTS.iter().copied().filter(|c| opts.components.is_empty() || opts.components.iter().any(|o| o == c)).collect();
    if opts.batch_size == 0 {
        return Err(QiError::invalid("batch_size", 0, "need at least one sequence per batch").into());
    }
    Ok((layers, components))
}

/// The analysis on given token rows (of any lengths; they are right-padded per batch and the
/// padding is dropped before any metric). Twins only: the reference compared with itself is exact.
pub fn similarity_on_rows(cmp: &Comparison, rows: &[Vec<u32>], opts: &ActivationOptions) -> Result<Tidy> {
    let (layers, components) = resolve(cmp, opts)?;
    let hooks: Vec<(usize, &str, String)> = layers.iter().flat_map(|&l| components.iter().map(move |&c| (l, c, hook_of(c, l)))).collect();
    let filter = HookFilter::new(&hooks.iter().map(|h| h.2.as_str()).collect::<Vec<_>>());
    let last_layer = *layers.iter().max().expect("at least one layer");

    // values[twin][hook][metric] = one value per real token
    let mut values = vec![vec![[Vec::new(), Vec::new(), Vec::new()]; hooks.len()]; cmp.twins.len()];
    for batch in batches(rows, opts.batch_size, pad_id(cmp.reference))? {
        let mask = batch.valid_mask()?;
        let rc = cmp.reference.run_with_cache_until(&batch, filter.clone(), last_layer)?;
        let reference: Vec<_> = hooks.iter().map(|h| valid_rows(rc.get(&h.2)?, &mask)).collect::<Result<_>>()?;
        drop(rc);
        for (ti, twin) in cmp.twins.iter().enumerate() {
            let qc = twin.model.run_with_cache_until(&batch, filter.clone(), last_layer)?;
            for (hi, h) in hooks.iter().enumerate() {
                let q = valid_rows(qc.get(&h.2)?, &mask)?;
                let a = &reference[hi];
                for (mi, t) in [cosine_rows(a, &q)?, rel_l2_rows(a, &q)?, pearson_rows(a, &q)?].iter().enumerate() {
                    values[ti][hi][mi].extend(t.to_vec1::<f32>()?.into_iter().map(f64::from));
                }
            }
        }
    }

    // real tokens per sequence, in the order their values were collected (batches keep the row
    // order, and padding is on the right)
    let seq_lens: Vec<usize> = rows.iter().map(|r| r.len()).collect();
    let mut out = Tidy::new(cmp.name.clone());
    for (ti, twin) in cmp.twins.iter().enumerate() {
        for (hi, (l, c, _)) in hooks.iter().enumerate() {
            for (mi, metric) in METRICS.iter().enumerate() {
                let v = &values[ti][hi][mi];
                let (m, lo, hi_ci) = cluster_bootstrap_mean_ci(v, &seq_lens, opts.n_boot, 0.95, opts.seed)?;
                out.push(Row::new(twin.spec, metric, m).layer(*l).label("component", *c).ci(lo, hi_ci).n(v.len()));
            }
        }
    }
    Ok(out)
}

fn metric_title(metric: &str) -> &'static str {
    match metric {
        "cosine" => "cosine similarity",
        "rel_l2" => "relative L2 drift ‖a − â‖/‖a‖",
        _ => "Pearson r",
    }
}

/// One line per method across layers for `metric` at `component` (95% bootstrap CI bars).
pub fn figure(df: &DataFrame, metric: &str, component: &str) -> Result<Plot> {
    let sub = filter_eq(&filter_eq(df, "metric", metric)?, "component", component)?;
    let y = metric_title(metric);
    lines(&sub, "layer", "spec", &Labels::new(format!("{component}: {y}, reference vs quantized"), "layer", y))
}

/// Every (metric, component) figure of the frame, named `<metric>_<component>`.
pub fn figures(df: &DataFrame) -> Result<Vec<(String, Plot)>> {
    let mut out = Vec::new();
    for metric in super::tidy::distinct_str(df, "metric")? {
        for component in super::tidy::distinct_str(df, "component")? {
            out.push((format!("{metric}_{component}"), figure(df, &metric, &component)?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_has_its_hook() {
        assert_eq!(hook_of("resid_pre", 3), "blocks.3.hook_resid_pre");
        assert_eq!(hook_of("resid_post", 0), "blocks.0.hook_resid_post");
        assert_eq!(hook_of("attn_out", 1), "blocks.1.hook_attn_out");
        assert_eq!(hook_of("mlp_out", 2), "blocks.2.hook_mlp_out");
    }
}
