//! Indirect object identification (IOI): does the quantized model still complete "When Mary and
//! John went to the store, John gave a drink to" with the indirect object (Mary) rather than the
//! subject (John), and which heads carry the damage?
//!
//! Prompts come from the TransformerLens IOI templates (ABBA and BABA) with seeded names, places
//! and objects; only names that are one token (with a leading space) are used. Per model: the
//! logit difference IO − S at the final position (mean over prompts, bootstrap 95% CI) and the
//! accuracy (fraction with IO − S > 0). Per twin and head: the fraction of the logit-difference
//! damage recovered by patching that head's `hook_z` from the reference run into the twin's run,
//! (LD_patched − LD_quant) / (LD_ref − LD_quant), on mean logit differences. The reference's
//! attention from the final position to the two names ranks heads for the `top_heads` option.
use super::plots::{bars, heatmap_panels, layer_head_grid, Labels};
use super::tidy::filter_eq;
use super::{Analysis, Comparison, Row, Tidy};
use crate::batch::{Batch, Padding};
use crate::hooks::{interventions, names, Hooks};
use crate::metrics::{bootstrap_mean_ci, mean};
use crate::{HookedTransformer, QiError};
use anyhow::Result;
use candle_core::{DType, Tensor};
use plotly::Plot;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

/// Where the templates live in the shared folder.
pub const SHARED_TEMPLATES: &str = "data/ioi/ioi_templates.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IoiOptions {
    /// The IOI templates JSON; empty = `<shared>/data/ioi/ioi_templates.json`.
    pub templates: String,
    pub n_prompts: usize,
    /// Patch the reference's top heads by attention from the final position to the two names;
    /// 0 = every head.
    pub top_heads: usize,
    pub prepend_bos: bool,
    pub batch_size: usize,
    pub n_boot: usize,
    pub seed: u64,
}

impl Default for IoiOptions {
    fn default() -> Self {
        IoiOptions { templates: String::new(), n_prompts: 32, top_heads: 20, prepend_bos: true, batch_size: 16, n_boot: 1000, seed: 0 }
    }
}

/// A tokenized IOI prompt ending just before the indirect object.
#[derive(Debug, Clone, PartialEq)]
pub struct IoiPrompt {
    pub text: String,
    pub ids: Vec<u32>,
    /// The indirect object's token (the right answer) and the subject's.
    pub io: u32,
    pub s: u32,
}

/// The parts of the TransformerLens IOI file used here.
#[derive(Debug, Clone, Deserialize)]
pub struct IoiTemplates {
    #[serde(rename = "NAMES")]
    pub names: Vec<String>,
    #[serde(rename = "ABBA_TEMPLATES")]
    pub abba: Vec<String>,
    #[serde(rename = "BABA_TEMPLATES")]
    pub baba: Vec<String>,
    #[serde(rename = "PLACES")]
    pub places: Vec<String>,
    #[serde(rename = "OBJECTS")]
    pub objects: Vec<String>,
}

impl IoiTemplates {
    /// Reads and checks the file: every list non-empty, every template ending in `[A]`.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| QiError::invalid("IOI templates", &shown, format!("cannot read the file ({e})")))?;
        let t: IoiTemplates = serde_json::from_str(&text)
            .map_err(|e| QiError::invalid("IOI templates", &shown, format!("malformed: expected NAMES, ABBA_TEMPLATES, BABA_TEMPLATES, PLACES and OBJECTS lists ({e})")))?;
        for (what, list) in [("NAMES", &t.names), ("ABBA_TEMPLATES", &t.abba), ("BABA_TEMPLATES", &t.baba), ("PLACES", &t.places), ("OBJECTS", &t.objects)] {
            if list.is_empty() {
                return Err(QiError::invalid("IOI templates", &shown, format!("malformed: {what} is empty")).into());
            }
        }
        if let Some(bad) = t.abba.iter().chain(&t.baba).find(|s| !s.trim_end().ends_with("[A]")) {
            return Err(QiError::invalid("IOI templates", &shown, format!("malformed: template {bad:?} does not end with the indirect object [A]")).into());
        }
        Ok(t)
    }

    /// The templates file of the data folders ([`crate::shared::data_file`]).
    pub fn shared() -> Result<Self> {
        let p = crate::shared::data_file(SHARED_TEMPLATES)
            .ok_or_else(|| QiError::invalid("IOI templates", SHARED_TEMPLATES, "not found in QI_DATA or QI_SHARED: set one, or pass the templates option"))?;
        Self::load(&p)
    }

    /// `n` prompts: seeded template (ABBA and BABA alternate), two distinct single-token names,
    /// place and object. The prompt is the template up to its final `[A]`.
    pub fn prompts(&self, model: &HookedTransformer, n: usize, seed: u64, prepend_bos: bool) -> Result<Vec<IoiPrompt>> {
        let tok = model.tokenizer()?;
        let mut names: Vec<(&str, u32)> = Vec::new();
        for name in &self.names {
            if let [id] = tok.encode(&format!(" {name}"), false)?[..] {
                names.push((name, id));
            }
        }
        if names.len() < 2 {
            return Err(QiError::invalid("IOI names", self.names.len(), format!("{} of them are single tokens; need at least two", names.len())).into());
        }
        let mut rng = crate::rng::Rng::new(seed);
        let mut pick = |k: usize| rng.below(k as u64) as usize;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let set = if i % 2 == 0 { &self.abba } else { &self.baba };
            let template = &set[pick(set.len())];
            let a = pick(names.len());
            let b = (a + 1 + pick(names.len() - 1)) % names.len();
            let place = &self.places[pick(self.places.len())];
            let object = &self.objects[pick(self.objects.len())];
            let stem = template.trim_end().strip_suffix("[A]").expect("checked on load").trim_end();
            let text = stem.replace("[A]", names[a].0).replace("[B]", names[b].0).replace("[PLACE]", place).replace("[OBJECT]", object);
            out.push(IoiPrompt { ids: model.to_tokens(&text, prepend_bos)?, text, io: names[a].1, s: names[b].1 });
        }
        Ok(out)
    }
}

pub struct Ioi;

impl Analysis for Ioi {
    const NAME: &'static str = "ioi";
    const ABOUT: &'static str = "IOI logit difference IO − S per model and per-head hook_z patching from the reference into each twin";
    type Options = IoiOptions;

    fn options_doc() -> &'static str {
        "templates: IOI templates JSON (empty = <shared>/data/ioi/ioi_templates.json)\n\
         n_prompts: number of prompts built from the templates\n\
         top_heads: patch the reference's top-k heads by final-position attention to the names (0 = all heads)\n\
         prepend_bos: prepend the BOS token\n\
         batch_size: prompts per forward pass\n\
         n_boot: bootstrap resamples for the 95% CI of the logit difference\n\
         seed: seeds the prompts and the bootstrap"
    }

    fn run(cmp: &Comparison, opts: &IoiOptions) -> Result<Tidy> {
        let templates = if opts.templates.is_empty() { IoiTemplates::shared()? } else { IoiTemplates::load(std::path::Path::new(&opts.templates))? };
        let prompts = templates.prompts(cmp.reference, opts.n_prompts, opts.seed, opts.prepend_bos)?;
        ioi_on_prompts(cmp, &prompts, opts)
    }
}

/// Logit difference IO − S of each row at its last real position, from logits `[b, p, V]`.
pub fn logit_diffs(logits: &Tensor, prompts: &[IoiPrompt]) -> Result<Vec<f64>> {
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let row = logits.get(i)?.get(p.ids.len() - 1)?.to_dtype(DType::F32)?;
            let (io, s) = (row.get(p.io as usize)?.to_scalar::<f32>()?, row.get(p.s as usize)?.to_scalar::<f32>()?);
            Ok(f64::from(io - s))
        })
        .collect()
}

/// Mean attention of each head (`[layer * n_heads + head]`) from the final position to the
/// positions holding the IO or S token, from a cache of every layer's pattern.
fn name_attention(cache: &crate::ActivationCache, prompts: &[IoiPrompt], n_layers: usize, n_heads: usize) -> Result<Vec<f64>> {
    let mut out = vec![0.0; n_layers * n_heads];
    for l in 0..n_layers {
        let p = cache.get(&names::pattern(l))?.to_dtype(DType::F32)?; // [b, h, q, k]
        for (i, pr) in prompts.iter().enumerate() {
            let last = pr.ids.len() - 1;
            let rows: Vec<Vec<f32>> = p.get(i)?.narrow(1, last, 1)?.squeeze(1)?.to_vec2()?; // [h, k]
            for (h, r) in rows.iter().enumerate() {
                let s: f32 = pr.ids.iter().enumerate().filter(|(_, &t)| t == pr.io || t == pr.s).map(|(k, _)| r[k]).sum();
                out[l * n_heads + h] += f64::from(s) / prompts.len() as f64;
            }
        }
    }
    Ok(out)
}

/// The analysis on tokenized prompts (right-padded per batch; only each row's last real position
/// is scored, and padding keys get no attention, so padding never enters a metric).
pub fn ioi_on_prompts(cmp: &Comparison, prompts: &[IoiPrompt], opts: &IoiOptions) -> Result<Tidy> {
    if prompts.is_empty() {
        return Err(QiError::invalid("IOI prompts", "[]", "no prompts to analyse").into());
    }
    if opts.batch_size == 0 {
        return Err(QiError::invalid("batch_size", 0, "need at least one prompt per batch").into());
    }
    let (n_layers, n_heads) = (cmp.n_layers(), cmp.n_heads());
    let pad = super::pad_id(cmp.reference);
    let chunks: Vec<&[IoiPrompt]> = prompts.chunks(opts.batch_size).collect();
    let batch_of = |c: &[IoiPrompt]| Batch::from_rows(&c.iter().map(|p| p.ids.clone()).collect::<Vec<_>>(), Padding::Right, pad);

    // Reference: logit differences, every layer's hook_z (the patch source) and head ranking.
    let mut ld_ref = Vec::new();
    let mut ref_z: Vec<crate::ActivationCache> = Vec::new();
    let mut attention = vec![0.0; n_layers * n_heads];
    for c in &chunks {
        let (logits, cache) = cmp.reference.run_with_cache(&batch_of(c)?, "blocks.*.attn.hook_z,blocks.*.attn.hook_pattern")?;
        ld_ref.extend(logit_diffs(&logits, c)?);
        for (a, v) in attention.iter_mut().zip(name_attention(&cache, c, n_layers, n_heads)?) {
            *a += v * c.len() as f64 / prompts.len() as f64;
        }
        ref_z.push(cache);
    }
    let mut heads: Vec<usize> = (0..n_layers * n_heads).collect();
    if opts.top_heads > 0 && opts.top_heads < heads.len() {
        heads.sort_by(|&a, &b| attention[b].total_cmp(&attention[a]).then(a.cmp(&b)));
        heads.truncate(opts.top_heads);
        heads.sort_unstable();
    }

    let mut out = Tidy::new(cmp.name.clone());
    let mut push_ld = |spec, ld: &[f64]| {
        let (m, lo, hi) = bootstrap_mean_ci(ld, opts.n_boot, 0.95, opts.seed);
        out.push(Row::new(spec, "logit_diff", m).ci(lo, hi).n(ld.len()));
        out.push(Row::new(spec, "accuracy", ld.iter().filter(|&&v| v > 0.0).count() as f64 / ld.len() as f64).n(ld.len()));
    };
    push_ld(&super::REFERENCE, &ld_ref);
    let mut patch_rows = Vec::new();
    for twin in &cmp.twins {
        let mut ld_quant = Vec::new();
        // sum over prompts of the patched logit difference, per head in `heads`
        let mut patched = vec![0.0; heads.len()];
        for (c, z) in chunks.iter().zip(&ref_z) {
            let batch = batch_of(c)?;
            let (logits, resid) = twin.model.run_with_cache(&batch, "blocks.*.hook_resid_pre")?;
            ld_quant.extend(logit_diffs(&logits, c)?);
            for (k, &cell) in heads.iter().enumerate() {
                let (l, h) = (cell / n_heads, cell % n_heads);
                let mut hooks = Hooks::new();
                hooks.add(names::z(l), interventions::patch_heads(vec![h], z.get(&names::z(l))?.clone()));
                let logits = twin.model.logits_from_layer(l, resid.get(&names::resid_pre(l))?, &batch, Some(&mut hooks))?;
                patched[k] += logit_diffs(&logits, c)?.iter().sum::<f64>();
            }
        }
        push_ld(twin.spec, &ld_quant);
        let (r, q) = (mean(&ld_ref), mean(&ld_quant));
        for (k, &cell) in heads.iter().enumerate() {
            let f = crate::metrics::recovery_fraction(r, q, patched[k] / prompts.len() as f64);
            patch_rows.push(Row::new(twin.spec, "fraction_recovered", f).layer(cell / n_heads).head(cell % n_heads).n(prompts.len()));
        }
    }
    for (cell, a) in attention.iter().enumerate() {
        out.push(Row::new(&super::REFERENCE, "name_attention", *a).layer(cell / n_heads).head(cell % n_heads).n(prompts.len()));
    }
    for r in patch_rows {
        out.push(r);
    }
    Ok(out)
}

/// Layer × head heatmaps of the fraction of logit-difference damage recovered, one per twin
/// (heads that were not patched are empty).
pub fn patching_heatmaps(df: &DataFrame, n_layers: usize, n_heads: usize) -> Result<Plot> {
    let m = filter_eq(df, "metric", "fraction_recovered")?;
    let panels = super::tidy::distinct_str(&m, "spec")?
        .into_iter()
        .map(|s| Ok((s.clone(), layer_head_grid(&filter_eq(&m, "spec", &s)?, n_layers, n_heads)?, true)))
        .collect::<Result<Vec<_>>>()?;
    heatmap_panels(&panels, "IOI: fraction of the logit-difference damage recovered by patching one head's hook_z from the reference", "recovered")
}

/// Bars of the mean logit difference IO − S per model (95% CI).
pub fn logit_diff_bars(df: &DataFrame) -> Result<Plot> {
    bars(&filter_eq(df, "metric", "logit_diff")?, "spec", "method", &Labels::new("IOI: logit difference IO − S at the final position", "model", "logit difference"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logit_diff_reads_each_rows_last_real_position() {
        // two rows, 3 positions, vocab 3; row 0 has 2 real tokens, row 1 has 3
        let logits = Tensor::from_vec(
            vec![0f32, 0., 0., 5., 1., 2., 9., 9., 9., 0., 0., 0., 0., 0., 0., 1., 4., 0.5],
            (2, 3, 3),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let p = |n: usize, io: u32, s: u32| IoiPrompt { text: String::new(), ids: vec![0; n], io, s };
        // row 0, position 1: io 0 (5) − s 1 (1) = 4; row 1, position 2: io 2 (0.5) − s 1 (4) = −3.5
        assert_eq!(logit_diffs(&logits, &[p(2, 0, 1), p(3, 2, 1)]).unwrap(), vec![4.0, -3.5]);
    }
}
