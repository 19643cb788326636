//! Head ablation importance, and which important heads quantization moved most.
//!
//! In the reference model each head's `hook_z` is zeroed (`zero`) or replaced by its mean over the
//! real tokens of a reference run on the same inputs (`mean`); the metric is the induction loss on
//! `[BOS] r r` ([`super::induction::repeated_tokens`]) and, optionally, the loss on text windows
//! (`target = both`). Rows: `ablation_delta` (loss with the head ablated − clean loss, labels
//! `ablation`, `target`) and `importance_rank` (1 = largest delta) per head, `clean_loss` per
//! target. Only the blocks from the ablated head's layer on are recomputed (from the cached clean
//! `resid_pre`), which halves the cost on average.
//!
//! Per twin and head: `drift_js` (Jensen–Shannon divergence between the reference's and the twin's
//! attention rows, nats, mean over real query positions after the first of the induction inputs), `drift_induction`
//! (|Δ stripe induction score|), and `importance_x_drift` = importance (`ablation_delta` of the
//! `importance` ablation on the induction target, clamped at 0) × the `drift` chosen drift.
use super::induction::{head_scores, loss_target_doc, LossInputs, LossTarget};
use super::plots;
use super::tidy::{f64_values, filter_eq, str_values};
use super::{valid_rows, Analysis, Comparison, Row, Tidy};
use crate::hooks::{interventions, names, Hooks};
use crate::{metrics, HookedTransformer, QiError};
use anyhow::Result;
use candle_core::{DType, Tensor};
use plotly::common::{Mode, Title};
use plotly::layout::Axis;
use plotly::{Layout, Plot, Scatter};
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

/// A clean reference run kept for ablations: per batch the `resid_pre` of every layer, and per
/// layer the mean `hook_z` over all real tokens `[1, 1, n_heads, d_head]`.
pub struct CleanRun {
    pub resid_pre: Vec<Vec<Tensor>>,
    pub z_mean: Vec<Tensor>,
    pub loss: f64,
}

/// Runs `model` on `inputs` caching what [`ablated_loss`] needs.
pub fn clean_run(model: &HookedTransformer, inputs: &LossInputs) -> Result<CleanRun> {
    let nl = model.cfg.n_layers;
    let mut resid_pre = Vec::new();
    let mut z_sum: Vec<Option<Tensor>> = vec![None; nl];
    let mut n_tokens = 0f64;
    let mut loss = 0.0;
    for (i, b) in inputs.batches.iter().enumerate() {
        let (logits, cache) = model.run_with_cache(b, "blocks.*.hook_resid_pre,blocks.*.attn.hook_z")?;
        loss += inputs.loss_tensor(i, &logits)?.to_scalar::<f32>()? as f64;
        let mask = b.valid_mask()?;
        let n = mask.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as f64;
        n_tokens += n;
        for (l, acc) in z_sum.iter_mut().enumerate() {
            let s = (interventions::masked_mean(cache.get(&names::z(l))?, &mask)? * n)?;
            *acc = Some(match acc.take() {
                Some(a) => (a + s)?,
                None => s,
            });
        }
        resid_pre.push((0..nl).map(|l| cache.get(&names::resid_pre(l)).cloned()).collect::<Result<Vec<_>>>()?);
    }
    let z_mean = z_sum.into_iter().map(|s| Ok((s.expect("at least one batch") / n_tokens)?)).collect::<Result<Vec<_>>>()?;
    Ok(CleanRun { resid_pre, z_mean, loss })
}

/// How a head is ablated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ablation {
    Zero,
    Mean,
}

impl std::str::FromStr for Ablation {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zero" => Ok(Ablation::Zero),
            "mean" => Ok(Ablation::Mean),
            _ => Err(QiError::invalid("ablation", s, "expected zero or mean").into()),
        }
    }
}

impl Ablation {
    pub fn name(self) -> &'static str {
        match self {
            Ablation::Zero => "zero",
            Ablation::Mean => "mean",
        }
    }
}

/// The mean loss of `model` on `inputs` with head `(layer, head)` ablated.
pub fn ablated_loss(model: &HookedTransformer, inputs: &LossInputs, clean: &CleanRun, layer: usize, head: usize, how: Ablation) -> Result<f64> {
    inputs.loss(|i, b| {
        let mut hooks = Hooks::new();
        match how {
            Ablation::Zero => hooks.add(names::z(layer), interventions::zero_heads(vec![head])),
            Ablation::Mean => hooks.add(names::z(layer), interventions::mean_heads(vec![head], clean.z_mean[layer].clone())),
        };
        model.logits_from_layer(layer, &clean.resid_pre[i][layer], b, Some(&mut hooks))
    })
}

/// Importance of each of `heads` in `model`: ablated loss − clean loss.
pub fn head_importance(model: &HookedTransformer, inputs: &LossInputs, heads: &[(usize, usize)], how: Ablation) -> Result<Vec<f64>> {
    let clean = clean_run(model, inputs)?;
    heads.iter().map(|&(l, h)| Ok(ablated_loss(model, inputs, &clean, l, h, how)? - clean.loss)).collect()
}

/// Per head `[layer][head]`: JS divergence between `reference`'s and `twin`'s attention rows (nats),
/// mean over the real query positions of `inputs` after the first (see
/// [`super::attention::js_queries`]).
pub fn attention_js_drift(reference: &HookedTransformer, twin: &HookedTransformer, inputs: &LossInputs) -> Result<Vec<Vec<f64>>> {
    let (nl, nh) = (reference.cfg.n_layers, reference.cfg.n_heads);
    let mut sum = vec![vec![0.0; nh]; nl];
    let mut rows = 0.0;
    for b in &inputs.batches {
        let (_, cr) = reference.run_with_cache(b, "blocks.*.attn.hook_pattern")?;
        let (_, ct) = twin.run_with_cache(b, "blocks.*.attn.hook_pattern")?;
        let mask = super::attention::js_queries(&b.valid_mask()?)?;
        for l in 0..nl {
            // [b, h, q, k] → [b, q, h, k] so the real query rows can be selected.
            let (pr, pt) = (cr.get(&names::pattern(l))?.transpose(1, 2)?, ct.get(&names::pattern(l))?.transpose(1, 2)?);
            let (vr, vt) = (valid_rows(&pr, &mask)?, valid_rows(&pt, &mask)?);
            let n = vr.dim(0)?;
            let k = pr.dim(3)?;
            let js = metrics::js_divergence(&vr.reshape((n * nh, k))?, &vt.reshape((n * nh, k))?)?.reshape((n, nh))?.sum(0)?.to_vec1::<f32>()?;
            for h in 0..nh {
                sum[l][h] += js[h] as f64;
            }
            if l == 0 {
                rows += n as f64;
            }
        }
    }
    Ok(sum.into_iter().map(|r| r.into_iter().map(|v| v / rows).collect()).collect())
}

/// All heads of the given layers (all layers when empty); errors on an out-of-range layer.
pub fn heads_of_layers(cmp: &Comparison, layers: &[usize]) -> Result<Vec<(usize, usize)>> {
    for &l in layers {
        cmp.check_layer_head(l, None)?;
    }
    let layers: Vec<usize> = if layers.is_empty() { (0..cmp.n_layers()).collect() } else { layers.to_vec() };
    Ok(layers.iter().flat_map(|&l| (0..cmp.n_heads()).map(move |h| (l, h))).collect())
}

/// 1-based ranks, largest value first (ties by order).
pub fn rank_descending(x: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[b].total_cmp(&x[a]));
    let mut r = vec![0; x.len()];
    for (rank, i) in idx.into_iter().enumerate() {
        r[i] = rank + 1;
    }
    r
}

/// Options of [`HeadAblation`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AblationOptions {
    /// The losses ablated on: `target` is `induction` or `both` (induction and text).
    #[serde(flatten)]
    pub loss: LossTarget,
    #[serde(deserialize_with = "super::layer_list")]
    pub layers: Vec<usize>,
    pub ablations: Vec<String>,
    pub importance: String,
    pub drift: String,
    pub seed: u64,
}

impl Default for AblationOptions {
    fn default() -> Self {
        AblationOptions {
            loss: LossTarget { target: "both".into(), ..Default::default() },
            layers: vec![],
            ablations: vec!["zero".into(), "mean".into()],
            importance: "mean".into(),
            drift: "js".into(),
            seed: 0,
        }
    }
}

/// The head-ablation analysis (see the module docs).
pub struct HeadAblation;

impl Analysis for HeadAblation {
    const NAME: &'static str = "ablation";
    const ABOUT: &'static str = "zero/mean ablation of each head (induction and text loss), ranking, and importance × quantization drift per twin";
    type Options = AblationOptions;

    fn options_doc() -> &'static str {
        concat!(
            loss_target_doc!("target: induction, or both (induction and text loss) (default both)"),
            "\n",
            "layers: ablate the heads of these layers only (default: all layers)\n\
         ablations: which ablations to run, of zero and mean (default both)\n\
         importance: the ablation whose induction-loss delta is the importance in importance × drift (default mean)\n\
         drift: js (attention JS divergence) or induction (|Δ stripe score|) for importance × drift (default js)\n\
         seed: seeds the random tokens and text windows"
        )
    }

    fn run(cmp: &Comparison, o: &AblationOptions) -> Result<Tidy> {
        let kinds: Vec<Ablation> = o.ablations.iter().map(|s| s.parse()).collect::<Result<_>>()?;
        let importance_kind: Ablation = o.importance.parse().map_err(|_| QiError::invalid("importance", &o.importance, "expected zero or mean"))?;
        if o.drift != "js" && o.drift != "induction" {
            return Err(QiError::invalid("drift", &o.drift, "expected js or induction").into());
        }
        let with_text = match o.loss.target.as_str() {
            "induction" => false,
            "both" => true,
            t => return Err(QiError::invalid("target", t, "expected induction or both (the induction loss is always needed for importance × drift)").into()),
        };
        let heads = heads_of_layers(cmp, &o.layers)?;
        let set = o.loss.repeated(cmp.reference, o.seed)?;
        let mut targets: Vec<(&str, LossInputs)> = vec![("induction", o.loss.induction(cmp.reference, &set)?)];
        if with_text {
            targets.push(("text", o.loss.text(cmp.reference, o.seed)?));
        }
        let mut out = Tidy::new(cmp.name.clone());
        let reference = &super::REFERENCE;
        let mut importance = vec![0.0; heads.len()];
        for (target, inputs) in &targets {
            let clean = clean_run(cmp.reference, inputs)?;
            out.push(Row::new(reference, "clean_loss", clean.loss).label("target", *target));
            for &how in &kinds {
                let delta: Vec<f64> = heads.iter().map(|&(l, h)| Ok(ablated_loss(cmp.reference, inputs, &clean, l, h, how)? - clean.loss)).collect::<Result<_>>()?;
                for ((&(l, h), d), r) in heads.iter().zip(&delta).zip(rank_descending(&delta)) {
                    let lab = |row: Row| row.layer(l).head(h).label("ablation", how.name()).label("target", *target);
                    out.push(lab(Row::new(reference, "ablation_delta", *d)));
                    out.push(lab(Row::new(reference, "importance_rank", r as f64)));
                }
                if *target == "induction" && how == importance_kind {
                    importance = delta;
                }
            }
        }
        if !kinds.contains(&importance_kind) {
            let (_, inputs) = &targets[0];
            importance = head_importance(cmp.reference, inputs, &heads, importance_kind)?;
        }
        let induction_inputs = &targets[0].1;
        let ref_scores = head_scores(cmp.reference, &set, induction_inputs, false, false)?;
        for twin in &cmp.twins {
            let js = attention_js_drift(cmp.reference, twin.model, induction_inputs)?;
            let tw = head_scores(twin.model, &set, induction_inputs, false, false)?;
            let product: Vec<f64> = heads
                .iter()
                .zip(&importance)
                .map(|(&(l, h), &imp)| imp.max(0.0) * if o.drift == "js" { js[l][h] } else { (tw.stripe[l][h] - ref_scores.stripe[l][h]).abs() })
                .collect();
            for ((&(l, h), p), r) in heads.iter().zip(&product).zip(rank_descending(&product)) {
                out.push(Row::new(twin.spec, "drift_js", js[l][h]).layer(l).head(h));
                out.push(Row::new(twin.spec, "drift_induction", (tw.stripe[l][h] - ref_scores.stripe[l][h]).abs()).layer(l).head(h));
                out.push(Row::new(twin.spec, "importance_x_drift", *p).layer(l).head(h).label("drift", o.drift.clone()));
                out.push(Row::new(twin.spec, "importance_x_drift_rank", r as f64).layer(l).head(h).label("drift", o.drift.clone()));
            }
        }
        Ok(out)
    }
}

/// Heatmap of `ablation_delta` per layer × head, one panel per ablation × target.
pub fn importance_figure(df: &DataFrame, n_layers: usize, n_heads: usize) -> Result<Plot> {
    let d = filter_eq(df, "metric", "ablation_delta")?;
    let mut panels = Vec::new();
    for target in super::tidy::distinct_str(&d, "target")? {
        let dt = filter_eq(&d, "target", &target)?;
        for how in super::tidy::distinct_str(&dt, "ablation")? {
            let g = plots::layer_head_grid(&filter_eq(&dt, "ablation", &how)?, n_layers, n_heads)?;
            panels.push((format!("{how} ablation, {target} loss"), g, true));
        }
    }
    plots::heatmap_panels(&panels, "Loss increase when one head is ablated (reference model)", "Δ loss (nats)")
}

/// Scatter of each head's importance (x, `importance` ablation on the induction loss) against its
/// drift `drift_metric` (`drift_js` or `drift_induction`) in each twin.
pub fn importance_drift_figure(df: &DataFrame, importance: &str, drift_metric: &str) -> Result<Plot> {
    let imp = filter_eq(&filter_eq(&filter_eq(df, "metric", "ablation_delta")?, "target", "induction")?, "ablation", importance)?;
    let key = |d: &DataFrame| -> Result<Vec<(i64, i64)>> { Ok(f64_values(d, "layer")?.iter().zip(f64_values(d, "head")?).map(|(&l, h)| (l as i64, h as i64)).collect()) };
    let imp_map: std::collections::HashMap<(i64, i64), f64> = key(&imp)?.into_iter().zip(f64_values(&imp, "value")?).collect();
    let drift = filter_eq(df, "metric", drift_metric)?;
    let (spec, keys, vals) = (str_values(&drift, "spec")?, key(&drift)?, f64_values(&drift, "value")?);
    let mut series = Vec::new();
    for s in super::tidy::distinct_str(&drift, "spec")? {
        let (mut x, mut y, mut t) = (vec![], vec![], vec![]);
        for i in (0..spec.len()).filter(|&i| spec[i] == s) {
            if let Some(&v) = imp_map.get(&keys[i]) {
                x.push(v);
                y.push(vals[i]);
                t.push(format!("L{}H{}", keys[i].0, keys[i].1));
            }
        }
        series.push((s, x, y, t));
    }
    // Not plots::paired_scatter: its y = x guide means nothing across different units.
    let mut plot = Plot::new();
    for (name, x, y, text) in series {
        plot.add_trace(Scatter::new(x, y).mode(Mode::Markers).name(&name).text_array(text));
    }
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(format!("Head importance ({importance} ablation, induction loss) vs {drift_metric}")))
            .x_axis(Axis::new().title(Title::with_text("Δ induction loss when ablated (nats)")))
            .y_axis(Axis::new().title(Title::with_text(drift_metric)))
            .width(700)
            .height(560),
    );
    Ok(plot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_put_the_largest_first() {
        assert_eq!(rank_descending(&[0.1, 0.5, -0.2, 0.3]), vec![3, 1, 4, 2]);
    }

    #[test]
    fn ablation_names_parse() {
        assert_eq!("mean".parse::<Ablation>().unwrap(), Ablation::Mean);
        assert!("half".parse::<Ablation>().unwrap_err().to_string().contains("zero or mean"));
    }
}
