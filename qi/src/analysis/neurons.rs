//! Do MLP neurons die or become redundant under quantization? Over a dataset, per layer of
//! `mlp.hook_post` (the MLP hidden activation): the fraction of *dead* neurons (|a| below
//! `dead_threshold` on every real token) and the distribution of pairwise Pearson correlations
//! between neurons' activations over tokens (a seeded subsample of `sample_neurons` neurons per
//! layer; neurons constant on the data are left out), summarised as a histogram over [−1, 1], the
//! mean |r| and the share of pairs with |r| ≥ `redundant_r`.
use super::{Analysis, Comparison, Row, Tidy};
use crate::hooks::names;
use crate::QiError;
use anyhow::Result;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

pub struct Neurons;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NeuronsOptions {
    pub source: String,
    pub n_seqs: usize,
    pub seq_len: usize,
    /// Layers to analyse (empty = all).
    #[serde(deserialize_with = "super::layer_list")]
    pub layers: Vec<usize>,
    pub dead_threshold: f64,
    /// Neurons per layer in the correlation analysis (0 = all).
    pub sample_neurons: usize,
    pub hist_bins: usize,
    pub redundant_r: f64,
    pub forward_batch: usize,
    pub seed: u64,
}

impl Default for NeuronsOptions {
    fn default() -> Self {
        NeuronsOptions { source: "c4".into(), n_seqs: 16, seq_len: 128, layers: vec![], dead_threshold: 1e-3, sample_neurons: 256, hist_bins: 40, redundant_r: 0.9, forward_batch: 4, seed: 0 }
    }
}

/// Pairwise Pearson correlations (upper triangle) between the columns of `x` `[n, m]`; constant
/// columns are dropped first.
pub fn pairwise_correlations(x: &Tensor) -> Result<Vec<f64>> {
    let x = x.to_dtype(DType::F32)?;
    let n = x.dim(0)?;
    if n < 2 {
        return Ok(vec![]);
    }
    let centred = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    let sd: Vec<f32> = centred.sqr()?.sum(0)?.sqrt()?.to_vec1()?;
    let keep: Vec<u32> = (0..sd.len() as u32).filter(|&j| sd[j as usize] > 1e-12).collect();
    if keep.len() < 2 {
        return Ok(vec![]);
    }
    let idx = Tensor::from_vec(keep.clone(), keep.len(), x.device())?;
    let c = centred.index_select(&idx, 1)?;
    let norms = Tensor::from_vec(keep.iter().map(|&j| sd[j as usize]).collect::<Vec<_>>(), (1, keep.len()), x.device())?;
    let z = c.broadcast_div(&norms)?;
    let r: Vec<Vec<f32>> = z.t()?.matmul(&z)?.to_vec2()?;
    let m = keep.len();
    Ok((0..m).flat_map(|i| ((i + 1)..m).map(move |j| (i, j))).map(|(i, j)| (r[i][j] as f64).clamp(-1.0, 1.0)).collect())
}

/// Fractions of `values` in `bins` equal-width bins over [−1, 1], with the bin centres.
pub fn histogram(values: &[f64], bins: usize) -> Vec<(f64, f64)> {
    let mut counts = vec![0usize; bins];
    for &v in values {
        let b = (((v + 1.0) / 2.0 * bins as f64).floor() as isize).clamp(0, bins as isize - 1) as usize;
        counts[b] += 1;
    }
    let n = values.len().max(1) as f64;
    counts.iter().enumerate().map(|(i, &c)| (-1.0 + (i as f64 + 0.5) * 2.0 / bins as f64, c as f64 / n)).collect()
}

impl Analysis for Neurons {
    const NAME: &'static str = "neurons";
    const ABOUT: &'static str = "Dead MLP neurons and pairwise neuron-correlation (redundancy) histograms per layer";
    type Options = NeuronsOptions;

    fn options_doc() -> &'static str {
        "source: c4 | wikitext2 | random | text file\n\
         n_seqs, seq_len: windows\n\
         layers: layers to analyse (empty = all)\n\
         dead_threshold: a neuron is dead if |activation| < this on every real token\n\
         sample_neurons: neurons per layer in the correlation analysis (0 = all; seeded subsample)\n\
         hist_bins: bins of the correlation histogram over [-1, 1]\n\
         redundant_r: pairs with |r| at least this count as redundant, in [0, 1]\n\
         forward_batch: windows per forward pass\n\
         seed: windows and neuron subsample"
    }

    fn run(cmp: &Comparison, o: &NeuronsOptions) -> Result<Tidy> {
        if !(o.dead_threshold >= 0.0) {
            return Err(QiError::invalid("dead_threshold", o.dead_threshold, "must be ≥ 0").into());
        }
        if !(0.0..=1.0).contains(&o.redundant_r) {
            return Err(QiError::invalid("redundant_r", o.redundant_r, "must be in [0, 1]").into());
        }
        if o.hist_bins == 0 {
            return Err(QiError::invalid("hist_bins", 0, "need at least one bin").into());
        }
        let layers: Vec<usize> = if o.layers.is_empty() { (0..cmp.n_layers()).collect() } else { o.layers.clone() };
        for &l in &layers {
            cmp.check_layer_head(l, None)?;
        }
        let rows = super::text_windows(cmp.reference, &o.source, o.n_seqs, o.seq_len, o.seed)?;
        let d_mlp = cmp.reference.cfg.d_mlp;
        let mut sample: Vec<u32> = (0..d_mlp as u32).collect();
        crate::rng::Rng::new(o.seed).shuffle(&mut sample);
        if o.sample_neurons > 0 && o.sample_neurons < d_mlp {
            sample.truncate(o.sample_neurons);
        }
        sample.sort_unstable();
        let sample = Tensor::from_vec(sample.clone(), sample.len(), cmp.reference.embed.device())?;
        let filter: Vec<String> = layers.iter().map(|&l| names::mlp_post(l)).collect();
        let mut t = Tidy::new(cmp.name.clone());
        for twin in cmp.all() {
            // per layer: the valid rows of every batch, concatenated
            let mut acts: Vec<Vec<Tensor>> = vec![vec![]; layers.len()];
            for b in super::batches(&rows, o.forward_batch, super::pad_id(twin.model))? {
                let last = *layers.iter().max().expect("non-empty");
                let cache = twin.model.run_with_cache_until(&b, filter.clone(), last)?;
                let mask = b.valid_mask()?;
                for (i, name) in filter.iter().enumerate() {
                    acts[i].push(super::valid_rows(cache.get(name)?, &mask)?);
                }
            }
            for (i, &l) in layers.iter().enumerate() {
                let a = Tensor::cat(&acts[i], 0)?;
                let n_tok = a.dim(0)?;
                let max_abs: Vec<f32> = a.abs()?.max(0)?.to_vec1()?;
                let dead = max_abs.iter().filter(|&&m| (m as f64) < o.dead_threshold).count();
                t.push(Row::new(twin.spec, "dead_fraction", dead as f64 / d_mlp as f64).layer(l).n(n_tok));
                let r = pairwise_correlations(&a.index_select(&sample, 1)?)?;
                let abs: Vec<f64> = r.iter().map(|v| v.abs()).collect();
                t.push(Row::new(twin.spec, "mean_abs_corr", crate::metrics::mean(&abs)).layer(l).n(r.len()));
                let red = abs.iter().filter(|&&v| v >= o.redundant_r).count() as f64 / r.len().max(1) as f64;
                t.push(Row::new(twin.spec, "redundant_share", red).layer(l).n(r.len()));
                for (centre, frac) in histogram(&r, o.hist_bins) {
                    t.push(Row::new(twin.spec, "corr_hist", frac).layer(l).label("r", centre).n(r.len()));
                }
            }
        }
        Ok(t)
    }
}

/// Dead-neuron fraction per layer, one line per method.
pub fn dead_figure(df: &polars::prelude::DataFrame) -> Result<plotly::Plot> {
    let d = super::tidy::filter_eq(df, "metric", "dead_fraction")?;
    super::plots::lines(&d, "layer", "spec", &super::plots::Labels::new("Dead MLP neurons", "layer", "fraction of neurons dead").within(0.0, 1.0))
}

/// Histogram of pairwise neuron correlations over all analysed layers (mean over layers), one
/// line per method.
pub fn correlation_figure(df: &polars::prelude::DataFrame) -> Result<plotly::Plot> {
    let h = super::tidy::filter_eq(df, "metric", "corr_hist")?;
    let (specs, rs, vs) = (super::tidy::str_values(&h, "spec")?, super::tidy::f64_values(&h, "r")?, super::tidy::f64_values(&h, "value")?);
    let mut acc: Vec<(String, f64, f64, usize)> = Vec::new();
    for i in 0..vs.len() {
        match acc.iter_mut().find(|(s, r, _, _)| *s == specs[i] && *r == rs[i]) {
            Some(e) => {
                e.2 += vs[i];
                e.3 += 1;
            }
            None => acc.push((specs[i].clone(), rs[i], vs[i], 1)),
        }
    }
    let df = polars::prelude::DataFrame::new_infer_height(vec![
        polars::prelude::Column::new("spec".into(), acc.iter().map(|a| a.0.clone()).collect::<Vec<_>>()),
        polars::prelude::Column::new("r".into(), acc.iter().map(|a| a.1).collect::<Vec<_>>()),
        polars::prelude::Column::new("value".into(), acc.iter().map(|a| a.2 / a.3 as f64).collect::<Vec<_>>()),
    ])?;
    super::plots::lines(&df, "r", "spec", &super::plots::Labels::new("Pairwise MLP-neuron correlations", "Pearson r", "fraction of pairs (mean over layers)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlations_and_histogram_hand_case() {
        // columns a = [1,2,3], b = 2a, c = [3,2,1] (= −a), d constant (dropped): r(a,b)=1, r(a,c)=−1, r(b,c)=−1
        let x = Tensor::new(&[[1f32, 2., 3., 5.], [2., 4., 2., 5.], [3., 6., 1., 5.]], &candle_core::Device::Cpu).unwrap();
        let r = pairwise_correlations(&x).unwrap();
        assert_eq!(r.len(), 3);
        assert!((r[0] - 1.0).abs() < 1e-6 && (r[1] + 1.0).abs() < 1e-6 && (r[2] + 1.0).abs() < 1e-6, "{r:?}");
        // 2 bins over [−1, 1]: centres −0.5, 0.5; −1, −1 in the first, 1 in the last
        let h = histogram(&r, 2);
        assert_eq!(h.len(), 2);
        assert!((h[0].0 + 0.5).abs() < 1e-12 && (h[0].1 - 2.0 / 3.0).abs() < 1e-12 && (h[1].1 - 1.0 / 3.0).abs() < 1e-12);
    }
}
