//! Activation patching and repair: how much of a twin's damage comes back when reference
//! activations are restored?
//!
//! The metric `M` is the induction loss on `[BOS] r r` (default) or the loss on text windows
//! (`target = text`). For each twin: `M_ref`, `M_quant`, and the recovery
//! `(M_patched − M_quant) / (M_ref − M_quant)` ([`crate::metrics::recovery_fraction`]) of:
//!
//! * **single sites**: in the twin's run, the reference activation restored at one
//!   (`layer`, `component`) — `resid_pre`, `attn_out`, `mlp_out`, or `z` with a `head` (that head's
//!   slice of `hook_z`). Without `layer`, every layer is swept (for `z`: every head of
//!   `candidate_layers`). Rows `recovery` (layer, head, label `component`).
//! * **greedy repair**: the reference `hook_z` of the top-k heads (among `candidate_layers`) restored
//!   together, k = 1..`k_max`, heads ranked by (a) `drift` (attention JS divergence, reference vs
//!   twin), (b) `importance` (reference induction-loss increase under `importance` ablation, on the
//!   same inputs as the metric), (c) `importance_x_drift` (importance clamped at 0 × drift). The
//!   order is fixed by the ranking, not re-searched at each k. Rows `repair_recovery` (labels
//!   `rule`, `k`, `curve` = "spec · rule") and `repair_head` (the head added at step k).
use super::ablation::{attention_js_drift, head_importance, heads_of_layers, Ablation};
use super::induction::{loss_target_doc, LossInputs, LossTarget};
use super::plots::{self, Labels};
use super::tidy::filter_eq;
use super::{Analysis, Comparison, Row, Tidy, Twin};
use crate::hooks::{interventions, names, Hooks};
use crate::{metrics, HookedTransformer, QiError};
use anyhow::Result;
use candle_core::Tensor;
use plotly::Plot;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The patchable components.
pub const COMPONENTS: [&str; 4] = ["resid_pre", "attn_out", "mlp_out", "z"];

/// The hook name of `component` at `layer`; errors on an unknown component.
pub fn component_hook(component: &str, layer: usize) -> Result<String> {
    Ok(match component {
        "resid_pre" => names::resid_pre(layer),
        "attn_out" => names::attn_out(layer),
        "mlp_out" => names::mlp_out(layer),
        "z" => names::z(layer),
        _ => return Err(QiError::invalid("component", component, format!("expected one of {COMPONENTS:?}")).into()),
    })
}

/// The metric of `twin` on `inputs` with reference activations restored: per hook name, the heads
/// to restore (`None` = the whole activation).
pub fn patched_loss(reference: &HookedTransformer, twin: &HookedTransformer, inputs: &LossInputs, sites: &BTreeMap<String, Option<Vec<usize>>>) -> Result<f64> {
    let filter: Vec<&str> = sites.keys().map(String::as_str).collect();
    inputs.loss(|_, b| {
        let (_, cache) = reference.run_with_cache(b, filter.as_slice())?;
        let mut hooks = Hooks::new();
        for (name, heads) in sites {
            let src: Tensor = cache.get(name)?.clone();
            match heads {
                None => hooks.add(name.as_str(), interventions::patch(src)),
                Some(hs) => hooks.add(name.as_str(), interventions::patch_heads(hs.clone(), src)),
            };
        }
        twin.run_with_hooks(b, &mut hooks)
    })
}

/// The restore sites of the top-`k` heads of `order` (grouped per layer's `hook_z`).
pub fn head_sites(order: &[(usize, usize)], k: usize) -> BTreeMap<String, Option<Vec<usize>>> {
    let mut sites: BTreeMap<String, Option<Vec<usize>>> = BTreeMap::new();
    for &(l, h) in order.iter().take(k) {
        sites.entry(names::z(l)).or_insert_with(|| Some(vec![])).as_mut().expect("head site").push(h);
    }
    sites
}

/// Candidates sorted by descending `score` (stable: ties keep candidate order).
pub fn ranked(candidates: &[(usize, usize)], score: &[f64]) -> Vec<(usize, usize)> {
    let mut idx: Vec<usize> = (0..candidates.len()).collect();
    idx.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    idx.into_iter().map(|i| candidates[i]).collect()
}

/// Options of [`Patching`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PatchingOptions {
    #[serde(flatten)]
    pub loss: LossTarget,
    pub component: String,
    pub layer: Option<usize>,
    pub head: Option<usize>,
    pub sweep: bool,
    #[serde(deserialize_with = "super::layer_list")]
    pub candidate_layers: Vec<usize>,
    pub k_max: usize,
    pub importance: String,
    pub seed: u64,
}

impl Default for PatchingOptions {
    fn default() -> Self {
        PatchingOptions {
            loss: LossTarget::default(),
            component: "attn_out".into(),
            layer: None,
            head: None,
            sweep: true,
            candidate_layers: vec![],
            k_max: 5,
            importance: "mean".into(),
            seed: 0,
        }
    }
}

/// The patching and repair analysis (see the module docs).
pub struct Patching;

impl Analysis for Patching {
    const NAME: &'static str = "patching";
    const ABOUT: &'static str = "restore reference activations in each twin: recovery per site, and greedy repair of the top-k heads by drift, importance, importance × drift";
    type Options = PatchingOptions;

    fn options_doc() -> &'static str {
        concat!(
            loss_target_doc!(),
            "\n",
            "component: resid_pre, attn_out, mlp_out or z (one head's hook_z) for single-site patching (default attn_out)\n\
         layer: the single site's layer; unset = sweep every layer (z: every head of candidate_layers)\n\
         head: the head for component z\n\
         sweep: run the single-site patching at all (default true)\n\
         candidate_layers: heads of these layers are repair candidates (default: all layers)\n\
         k_max: greedy repair restores k = 1..k_max heads (default 5; 0 skips the repair)\n\
         importance: ablation (zero or mean) defining head importance (default mean)\n\
         seed: seeds the random tokens and text windows"
        )
    }

    fn run(cmp: &Comparison, o: &PatchingOptions) -> Result<Tidy> {
        // Validate everything before any forward pass.
        component_hook(&o.component, 0)?;
        let how: Ablation = o.importance.parse().map_err(|_| QiError::invalid("importance", &o.importance, "expected zero or mean"))?;
        if let Some(l) = o.layer {
            cmp.check_layer_head(l, o.head)?;
        } else if let Some(h) = o.head {
            cmp.check_layer_head(0, Some(h))?;
        }
        if o.component == "z" && o.layer.is_some() && o.head.is_none() {
            return Err(QiError::invalid("head", "unset", "component z patches one head: give head (or leave layer unset to sweep all heads)").into());
        }
        let candidates = heads_of_layers(cmp, &o.candidate_layers)?;
        let set = o.loss.repeated(cmp.reference, o.seed)?;
        let induction = o.loss.induction(cmp.reference, &set)?;
        let inputs = o.loss.inputs(cmp.reference, &set, o.seed)?;
        let single_sites: Vec<(usize, Option<usize>)> = match (o.sweep, o.layer) {
            (false, _) => vec![],
            (true, Some(l)) => vec![(l, o.head)],
            (true, None) if o.component == "z" => candidates.iter().map(|&(l, h)| (l, Some(h))).collect(),
            (true, None) => (0..cmp.n_layers()).map(|l| (l, None)).collect(),
        };
        let m_ref = inputs.loss(|_, b| cmp.reference.forward(b))?;
        let importance = if o.k_max > 0 { head_importance(cmp.reference, &inputs, &candidates, how)? } else { vec![] };
        let mut out = Tidy::new(cmp.name.clone());
        out.push(Row::new(&super::REFERENCE, "metric_value", m_ref).label("target", o.loss.target.clone()));
        for Twin { spec, model } in cmp.twins.iter().copied() {
            let m_q = inputs.loss(|_, b| model.forward(b))?;
            out.push(Row::new(spec, "metric_value", m_q).label("target", o.loss.target.clone()));
            for &(l, h) in &single_sites {
                let mut sites = BTreeMap::new();
                sites.insert(component_hook(&o.component, l)?, h.map(|h| vec![h]));
                let m_p = patched_loss(cmp.reference, model, &inputs, &sites)?;
                let mut row = Row::new(spec, "recovery", metrics::recovery_fraction(m_ref, m_q, m_p)).layer(l);
                if let Some(h) = h {
                    row = row.head(h);
                }
                out.push(row.label("component", o.component.clone()).label("target", o.loss.target.clone()));
            }
            if o.k_max == 0 {
                continue;
            }
            let js = attention_js_drift(cmp.reference, model, &induction)?;
            let drift: Vec<f64> = candidates.iter().map(|&(l, h)| js[l][h]).collect();
            let product: Vec<f64> = importance.iter().zip(&drift).map(|(i, d)| i.max(0.0) * d).collect();
            for (rule, score) in [("drift", &drift), ("importance", &importance), ("importance_x_drift", &product)] {
                let order = ranked(&candidates, score);
                for k in 1..=o.k_max.min(order.len()) {
                    let m_p = patched_loss(cmp.reference, model, &inputs, &head_sites(&order, k))?;
                    let lab = |r: Row| r.label("rule", rule).label("k", k).label("curve", format!("{spec} · {rule}")).label("target", o.loss.target.clone());
                    out.push(lab(Row::new(spec, "repair_recovery", metrics::recovery_fraction(m_ref, m_q, m_p))));
                    let (l, h) = order[k - 1];
                    out.push(lab(Row::new(spec, "repair_head", (l * cmp.n_heads() + h) as f64).layer(l).head(h)));
                }
            }
        }
        Ok(out)
    }
}

/// Recovery as more heads are restored: k on x, recovery on y, one line per twin × ranking rule.
pub fn repair_figure(df: &DataFrame) -> Result<Plot> {
    let d = filter_eq(df, "metric", "repair_recovery")?;
    plots::lines(&d, "k", "curve", &Labels::new("Greedy repair: reference hook_z restored for the top-k heads", "k (heads restored)", "fraction of the damage recovered"))
}

/// Single-site recovery per layer, one line per twin.
pub fn site_figure(df: &DataFrame) -> Result<Plot> {
    let d = filter_eq(df, "metric", "recovery")?;
    plots::lines(&d, "layer", "spec", &Labels::new("Recovery when one reference activation is restored", "layer", "fraction of the damage recovered"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_order_and_sites() {
        let cands = [(0, 0), (0, 1), (1, 0), (1, 1)];
        let order = ranked(&cands, &[0.1, 0.9, 0.5, 0.5]);
        assert_eq!(order, vec![(0, 1), (1, 0), (1, 1), (0, 0)]);
        let s = head_sites(&order, 3);
        assert_eq!(s.len(), 2);
        assert_eq!(s[&names::z(0)], Some(vec![1]));
        assert_eq!(s[&names::z(1)], Some(vec![0, 1]));
    }

    #[test]
    fn unknown_component_is_named() {
        let e = component_hook("mlp_in", 0).unwrap_err().to_string();
        assert!(e.contains("component") && e.contains("mlp_in"), "{e}");
    }
}
