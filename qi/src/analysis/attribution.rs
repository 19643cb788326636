//! First-order attribution of a twin's damage to single heads, checked against the measured damage
//! when only that head is quantized.
//!
//! Metric `M`: the induction loss (default) or the text loss, as in [`super::patching`].
//!
//! Measured: `M(hybrid) − M(ref)` where the hybrid is the reference with head h of layer l taking
//! its weights from the twin: its rows of W_Q and its columns of W_O and, with `kv = shared`
//! (default), the rows of W_K and W_V of the key/value head it reads (under grouped-query attention
//! that KV head is shared by `n_heads / n_kv_heads` query heads, which then see the quantized K/V
//! too — the head cannot compute with quantized weights otherwise); `kv = none` takes only W_Q and
//! W_O. Biases stay the reference's. The hybrid's loss is computed from the head's layer on,
//! starting from the reference's cached `resid_pre` (earlier layers are identical).
//!
//! Attribution predicts that same number to first order, from the same intervention: the hybrid
//! changes nothing before layer l and, within it, only what the attention sublayer writes to the
//! residual stream, so `M(hybrid) − M(ref) ≈ Σ ∂M/∂a · (a_hybrid − a_ref)` with `a` = layer l's
//! `hook_attn_out` (which also carries the W_O change and, with shared K/V, the other query heads
//! of the group), summed over real positions, the gradient taken in the reference run (candle
//! autograd, [`HookedTransformer::gradients_at`]). That signed term is `attribution`; beside it
//! `attribution_abs` = `Σ |∂M/∂a| · |a_hybrid − a_ref|` over the same Δ, an upper bound on the
//! term's size that ignores cancellation. (Using Δ from the full twin instead would mix in drift
//! from every earlier layer, which the single-head hybrid does not have.)
//!
//! Which heads are measured: all (`measure_all`), or the `top_k` by |attribution| plus `random`
//! others drawn with the seed. Rows: `attribution` and `attribution_abs` per head and twin,
//! `measured_delta` per measured head; `spearman` (attribution vs measured_delta, both signed) and
//! `spearman_abs` (attribution_abs vs |measured_delta|) over the measured heads, `n` = their count.
use super::ablation::{clean_run, CleanRun};
use super::induction::{loss_target_doc, LossInputs, LossTarget};
use super::plots::{self, Labels};
use super::tidy::{f64_values, filter_eq, str_values};
use super::{Analysis, Comparison, Row, Tidy};
use crate::hooks::{names, Hooks};
use crate::models::{Linear, QkvProj};
use crate::{metrics, HookedTransformer, QiError};
use anyhow::Result;
use candle_core::{DType, Tensor};
use plotly::Plot;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

/// `dst` with the given `(start, len)` ranges along `dim` replaced by `src`'s.
pub fn splice(dst: &Tensor, src: &Tensor, dim: usize, ranges: &[(usize, usize)]) -> Result<Tensor> {
    let mut ranges = ranges.to_vec();
    ranges.sort_unstable();
    let n = dst.dim(dim)?;
    let mut pieces = Vec::new();
    let mut at = 0;
    for (s, len) in ranges {
        if s > at {
            pieces.push(dst.narrow(dim, at, s - at)?);
        }
        pieces.push(src.narrow(dim, s, len)?);
        at = s + len;
    }
    if at < n {
        pieces.push(dst.narrow(dim, at, n - at)?);
    }
    Ok(Tensor::cat(&pieces, dim)?.contiguous()?)
}

fn splice_linear(dst: &mut Linear, src: &Linear, dim: usize, ranges: &[(usize, usize)]) -> Result<()> {
    let w = splice(&dst.weight(), &src.weight(), dim, ranges)?;
    Ok(dst.set_weight(&w)?)
}

/// The reference with head `(layer, head)`'s weights from `twin` (see the module docs for `kv`).
pub fn single_head_hybrid(reference: &HookedTransformer, twin: &HookedTransformer, layer: usize, head: usize, include_kv: bool) -> Result<HookedTransformer> {
    let cfg = &reference.cfg;
    let (nh, nkv, dh) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
    let g = head / (nh / nkv);
    let mut m = reference.clone();
    let (dst, src) = (&mut m.blocks[layer].attn, &twin.blocks[layer].attn);
    match (&mut dst.qkv, &src.qkv) {
        (QkvProj::Separate { q, k, v }, QkvProj::Separate { q: sq, k: sk, v: sv }) => {
            splice_linear(q, sq, 0, &[(head * dh, dh)])?;
            if include_kv {
                splice_linear(k, sk, 0, &[(g * dh, dh)])?;
                splice_linear(v, sv, 0, &[(g * dh, dh)])?;
            }
        }
        (QkvProj::FusedContiguous(d), QkvProj::FusedContiguous(s)) => {
            let mut r = vec![(head * dh, dh)];
            if include_kv {
                r.extend([((nh + g) * dh, dh), ((nh + nkv + g) * dh, dh)]);
            }
            splice_linear(d, s, 0, &r)?;
        }
        (QkvProj::FusedPerHead(d), QkvProj::FusedPerHead(s)) => {
            // Per head [q | k | v]; NeoX has no GQA, so the head's K/V rows are its own.
            let r = if include_kv { vec![(head * 3 * dh, 3 * dh)] } else { vec![(head * 3 * dh, dh)] };
            splice_linear(d, s, 0, &r)?;
        }
        _ => return Err(QiError::invalid("twin", "attention layout", "the twin stores Q/K/V differently from the reference").into()),
    }
    splice_linear(&mut dst.out, &src.out, 1, &[(head * dh, dh)])?;
    Ok(m)
}

/// First-order estimates per head `[layer][head]` (see the module docs): the signed term and its
/// absolute form.
pub struct HeadAttribution {
    pub signed: Vec<Vec<f64>>,
    pub abs: Vec<Vec<f64>>,
}

/// For every head, `Σ ∂M/∂a · Δa` and `Σ |∂M/∂a| · |Δa|` with `a` = the head's layer's
/// `hook_attn_out` and `Δa` what [`single_head_hybrid`] changes there (layer l alone run on the
/// reference's `resid_pre`, so one block per head and batch instead of a forward pass).
pub fn attribution_scores(reference: &HookedTransformer, twin: &HookedTransformer, inputs: &LossInputs, clean: &CleanRun, include_kv: bool) -> Result<HeadAttribution> {
    let (nl, nh) = (reference.cfg.n_layers, reference.cfg.n_heads);
    let a_names: Vec<String> = (0..nl).map(names::attn_out).collect();
    let a_refs: Vec<&str> = a_names.iter().map(String::as_str).collect();
    // `hook_attn_out` of layer l run alone on the reference's input to it: the same computation for
    // the reference and every hybrid, so an untouched head's Δa is exactly zero
    let attn_out_of = |model: &HookedTransformer, l: usize, i: usize| -> Result<Tensor> {
        let mut a = None;
        let mut hooks = Hooks::new();
        hooks.add(a_names[l].as_str(), |_, x| {
            a = Some(x.to_dtype(DType::F32)?);
            Ok(None)
        });
        model.run_block(l, &clean.resid_pre[i][l], &inputs.batches[i], Some(&mut hooks))?;
        drop(hooks);
        a.ok_or_else(|| anyhow::anyhow!("{} was not reached", a_names[l]))
    };
    // per batch: ∂M/∂a per layer, masked to the real positions, and the reference's a per layer
    let mut per_batch = Vec::new();
    for (i, b) in inputs.batches.iter().enumerate() {
        let (_, grads) = reference.gradients_at(b, &a_refs, |logits| inputs.loss_tensor(i, logits))?;
        let (bs, p) = b.tokens.dims2()?;
        let mask = b.valid_mask()?.to_dtype(DType::F32)?.reshape((bs, p, 1))?;
        let g = a_names.iter().map(|n| Ok(grads[n].1.to_dtype(DType::F32)?.broadcast_mul(&mask)?)).collect::<Result<Vec<_>>>()?;
        let a_ref = (0..nl).map(|l| attn_out_of(reference, l, i)).collect::<Result<Vec<_>>>()?;
        per_batch.push((g, a_ref));
    }
    let mut out = HeadAttribution { signed: vec![vec![0.0; nh]; nl], abs: vec![vec![0.0; nh]; nl] };
    for l in 0..nl {
        for h in 0..nh {
            let hybrid = single_head_hybrid(reference, twin, l, h, include_kv)?;
            for (i, (g, a_ref)) in per_batch.iter().enumerate() {
                let da = (attn_out_of(&hybrid, l, i)? - &a_ref[l])?;
                out.signed[l][h] += (&g[l] * &da)?.sum_all()?.to_scalar::<f32>()? as f64;
                out.abs[l][h] += (g[l].abs()? * da.abs()?)?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
    }
    Ok(out)
}

/// Options of [`Attribution`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AttributionOptions {
    #[serde(flatten)]
    pub loss: LossTarget,
    pub measure_all: bool,
    pub top_k: usize,
    pub random: usize,
    pub kv: String,
    pub seed: u64,
}

impl Default for AttributionOptions {
    fn default() -> Self {
        AttributionOptions {
            loss: LossTarget::default(),
            measure_all: false,
            top_k: 10,
            random: 10,
            kv: "shared".into(),
            seed: 0,
        }
    }
}

/// The attribution analysis (see the module docs).
pub struct Attribution;

impl Analysis for Attribution {
    const NAME: &'static str = "attribution";
    const ABOUT: &'static str = "first-order attribution ∂M/∂a·Δa per head (Δa from quantizing only that head) vs the measured damage of quantizing only that head; Spearman per twin";
    type Options = AttributionOptions;

    fn options_doc() -> &'static str {
        concat!(
            loss_target_doc!(),
            "\n",
            "measure_all: measure every head's single-head damage (default false: top_k + random)\n\
         top_k: heads with the largest |attribution| that are measured (default 10)\n\
         random: further heads drawn at random (seeded) that are measured (default 10)\n\
         kv: shared (the head's hybrid also takes its shared K/V head's rows) or none (only W_Q, W_O) (default shared)\n\
         seed: seeds the random tokens, text windows and the random heads"
        )
    }

    fn run(cmp: &Comparison, o: &AttributionOptions) -> Result<Tidy> {
        let include_kv = match o.kv.as_str() {
            "shared" => true,
            "none" => false,
            k => return Err(QiError::invalid("kv", k, "expected shared or none").into()),
        };
        let set = o.loss.repeated(cmp.reference, o.seed)?;
        let inputs = o.loss.inputs(cmp.reference, &set, o.seed)?;
        let clean = clean_run(cmp.reference, &inputs)?;
        let nh = cmp.n_heads();
        let mut out = Tidy::new(cmp.name.clone());
        for twin in &cmp.twins {
            let attr = attribution_scores(cmp.reference, twin.model, &inputs, &clean, include_kv)?;
            let flat: Vec<f64> = attr.signed.iter().flatten().copied().collect();
            let flat_abs: Vec<f64> = attr.abs.iter().flatten().copied().collect();
            let magnitude: Vec<f64> = flat.iter().map(|a| a.abs()).collect();
            let measured = measured_heads(&magnitude, o.measure_all, o.top_k, o.random, o.seed);
            for (i, (&a, &a_abs)) in flat.iter().zip(&flat_abs).enumerate() {
                out.push(Row::new(twin.spec, "attribution", a).layer(i / nh).head(i % nh));
                out.push(Row::new(twin.spec, "attribution_abs", a_abs).layer(i / nh).head(i % nh));
            }
            let (mut a_m, mut a_abs_m, mut d_m) = (Vec::new(), Vec::new(), Vec::new());
            for &i in &measured {
                let (l, h) = (i / nh, i % nh);
                let hybrid = single_head_hybrid(cmp.reference, twin.model, l, h, include_kv)?;
                let m = inputs.loss(|bi, b| hybrid.logits_from_layer(l, &clean.resid_pre[bi][l], b, None))?;
                let delta = m - clean.loss;
                out.push(Row::new(twin.spec, "measured_delta", delta).layer(l).head(h));
                a_m.push(flat[i]);
                a_abs_m.push(flat_abs[i]);
                d_m.push(delta);
            }
            let d_abs: Vec<f64> = d_m.iter().map(|d| d.abs()).collect();
            out.push(Row::new(twin.spec, "spearman", metrics::spearman(&a_m, &d_m)).n(a_m.len()));
            out.push(Row::new(twin.spec, "spearman_abs", metrics::spearman(&a_abs_m, &d_abs)).n(a_m.len()));
        }
        Ok(out)
    }
}

/// Flat head indices to measure: all, or the `top_k` largest attributions plus `random` others
/// drawn with `seed` (sorted).
pub fn measured_heads(attribution: &[f64], all: bool, top_k: usize, random: usize, seed: u64) -> Vec<usize> {
    if all {
        return (0..attribution.len()).collect();
    }
    let mut idx: Vec<usize> = (0..attribution.len()).collect();
    idx.sort_by(|&a, &b| attribution[b].total_cmp(&attribution[a]));
    let mut picked: Vec<usize> = idx[..top_k.min(idx.len())].to_vec();
    let mut rest: Vec<usize> = idx[top_k.min(idx.len())..].to_vec();
    crate::rng::Rng::new(seed).shuffle(&mut rest);
    picked.extend(rest.into_iter().take(random));
    picked.sort_unstable();
    picked
}

/// Attribution (x) vs measured single-head damage (y), both signed, of the measured heads, one
/// series per twin.
pub fn attribution_figure(df: &DataFrame) -> Result<Plot> {
    let attr = filter_eq(df, "metric", "attribution")?;
    let key = |d: &DataFrame| -> Result<Vec<(String, i64, i64)>> {
        let (s, l, h) = (str_values(d, "spec")?, f64_values(d, "layer")?, f64_values(d, "head")?);
        Ok((0..s.len()).map(|i| (s[i].clone(), l[i] as i64, h[i] as i64)).collect())
    };
    let amap: std::collections::HashMap<(String, i64, i64), f64> = key(&attr)?.into_iter().zip(f64_values(&attr, "value")?).collect();
    let meas = filter_eq(df, "metric", "measured_delta")?;
    let (keys, vals) = (key(&meas)?, f64_values(&meas, "value")?);
    let mut series = Vec::new();
    for s in super::tidy::distinct_str(&meas, "spec")? {
        let (mut x, mut y, mut t) = (vec![], vec![], vec![]);
        for (k, v) in keys.iter().zip(&vals).filter(|(k, _)| k.0 == s) {
            if let Some(&a) = amap.get(k) {
                x.push(a);
                y.push(*v);
                t.push(format!("L{}H{}", k.1, k.2));
            }
        }
        series.push((s, x, y, t));
    }
    plots::paired_scatter(&series, &Labels::new("First-order attribution vs measured damage of quantizing one head", "Σ ∂M/∂a·Δa (nats)", "M(hybrid) − M(ref) (nats)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn splice_replaces_ranges() {
        let a = Tensor::zeros((5, 2), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::ones((5, 2), DType::F32, &Device::Cpu).unwrap();
        let s = splice(&a, &b, 0, &[(3, 1), (0, 2)]).unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(s, vec![2., 2., 0., 2., 0.]);
        let c = splice(&a, &b, 1, &[(1, 1)]).unwrap().sum(0).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(c, vec![0., 5.]);
    }

    #[test]
    fn measured_set_is_top_k_plus_seeded_random() {
        let a = [0.5, 0.1, 0.9, 0.3, 0.2, 0.7];
        let m = measured_heads(&a, false, 2, 2, 7);
        assert_eq!(m.len(), 4);
        assert!(m.contains(&2) && m.contains(&5));
        assert_eq!(m, measured_heads(&a, false, 2, 2, 7));
        assert_eq!(measured_heads(&a, true, 0, 0, 0), vec![0, 1, 2, 3, 4, 5]);
    }
}
