//! First-order attribution of a twin's damage to single heads, checked against the measured damage
//! when only that head is quantized.
//!
//! Metric `M`: the induction loss (default) or the text loss, as in [`super::patching`].
//! Attribution of head h in layer l for a twin: `Σ |∂M/∂z| · |z_twin − z_ref|` over the head's
//! `hook_z` slice (all `d_head` features) and the real token positions, with the gradient taken in
//! the reference run (candle autograd, [`HookedTransformer::gradients_at`]) and `z_twin` from the
//! twin's own full run on the same tokens.
//!
//! Measured: `M(hybrid) − M(ref)` where the hybrid is the reference with that head's weights taken
//! from the twin: its rows of W_Q and its columns of W_O and, with `kv = shared` (default), the rows
//! of W_K and W_V of the key/value head it reads (under grouped-query attention that KV head is
//! shared by `n_heads / n_kv_heads` query heads, which then see the quantized K/V too — the head
//! cannot compute with quantized weights otherwise); `kv = none` takes only W_Q and W_O. Biases
//! stay the reference's. The hybrid's loss is computed from the head's layer on, starting from the
//! reference's cached `resid_pre` (earlier layers are identical).
//!
//! Which heads are measured: all (`measure_all`), or the `top_k` by attribution plus `random`
//! others drawn with the seed. Rows: `attribution` per head and twin, `measured_delta` per measured
//! head, `spearman` (attribution vs |measured_delta| over the measured heads, `n` = their count).
use super::ablation::clean_run;
use super::induction::{loss_target_doc, LossInputs, LossTarget};
use super::plots::{self, Labels};
use super::tidy::{f64_values, filter_eq, str_values};
use super::{Analysis, Comparison, Row, Tidy};
use crate::hooks::names;
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

/// Per head `[layer][head]`: `Σ |∂M/∂z| · |z_twin − z_ref|` over the head's z slice and real positions.
pub fn attribution_scores(reference: &HookedTransformer, twin: &HookedTransformer, inputs: &LossInputs) -> Result<Vec<Vec<f64>>> {
    let (nl, nh) = (reference.cfg.n_layers, reference.cfg.n_heads);
    let z_names: Vec<String> = (0..nl).map(names::z).collect();
    let z_refs: Vec<&str> = z_names.iter().map(String::as_str).collect();
    let mut out = vec![vec![0.0; nh]; nl];
    for (i, b) in inputs.batches.iter().enumerate() {
        let (_, grads) = reference.gradients_at(b, &z_refs, |logits| inputs.loss_tensor(i, logits))?;
        let (_, twin_cache) = twin.run_with_cache(b, "blocks.*.attn.hook_z")?;
        let (bs, p) = b.tokens.dims2()?;
        let mask = b.valid_mask()?.to_dtype(DType::F32)?.reshape((bs, p, 1, 1))?;
        for (l, name) in z_names.iter().enumerate() {
            let (z_ref, g) = &grads[name];
            let dz = (twin_cache.get(name)?.to_dtype(DType::F32)? - z_ref.to_dtype(DType::F32)?)?.abs()?;
            // [b, p, h, d] → per head
            let a = (g.to_dtype(DType::F32)?.abs()? * dz)?.broadcast_mul(&mask)?.sum(3)?.sum(1)?.sum(0)?.to_vec1::<f32>()?;
            for h in 0..nh {
                out[l][h] += a[h] as f64;
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
    const ABOUT: &'static str = "first-order attribution |∂M/∂z|·|Δz| per head vs the measured damage of quantizing only that head; Spearman per twin";
    type Options = AttributionOptions;

    fn options_doc() -> &'static str {
        concat!(
            loss_target_doc!(),
            "\n",
            "measure_all: measure every head's single-head damage (default false: top_k + random)\n\
         top_k: heads with the largest attribution that are measured (default 10)\n\
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
            let attr = attribution_scores(cmp.reference, twin.model, &inputs)?;
            let flat: Vec<f64> = attr.iter().flatten().copied().collect();
            let measured = measured_heads(&flat, o.measure_all, o.top_k, o.random, o.seed);
            let mut a_m = Vec::new();
            let mut d_m = Vec::new();
            for (i, &a) in flat.iter().enumerate() {
                out.push(Row::new(twin.spec, "attribution", a).layer(i / nh).head(i % nh));
            }
            for &i in &measured {
                let (l, h) = (i / nh, i % nh);
                let hybrid = single_head_hybrid(cmp.reference, twin.model, l, h, include_kv)?;
                let m = inputs.loss(|bi, b| hybrid.logits_from_layer(l, &clean.resid_pre[bi][l], b, None))?;
                let delta = m - clean.loss;
                out.push(Row::new(twin.spec, "measured_delta", delta).layer(l).head(h));
                a_m.push(flat[i]);
                d_m.push(delta.abs());
            }
            out.push(Row::new(twin.spec, "spearman", metrics::spearman(&a_m, &d_m)).n(a_m.len()));
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

/// Attribution (x) vs measured single-head damage (y) of the measured heads, one series per twin.
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
                y.push(v.abs());
                t.push(format!("L{}H{}", k.1, k.2));
            }
        }
        series.push((s, x, y, t));
    }
    plots::paired_scatter(&series, &Labels::new("First-order attribution vs measured damage of quantizing one head", "Σ |∂M/∂z|·|Δz| (nats)", "|M(hybrid) − M(ref)| (nats)"))
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
