//! `prune-overlap`: does quantization damage the same SAE features as magnitude pruning of equal
//! harm? For each quantized twin q, the sparsity s whose pruned twin p (`prune:sparsity=s`,
//! unstructured magnitude pruning of the same matrices, see [`crate::quant::prune`]) has the
//! perplexity of q is found by bisection ([`SparsityMatcher`]); then both twins go through the
//! feature comparison of [`super::features`] (one frozen SAE, same windows, same thresholds) and
//! their damage is compared over the reference's active features:
//! - `jaccard_damaged`: Jaccard of the damaged sets (damaged = not `survived`: blurred or
//!   destroyed; 1 when neither twin damages any feature), with `jaccard_chance`, the Jaccard expected for independent random sets of the
//!   same sizes ([`crate::metrics::jaccard_chance`], analytic, so no seed enters it);
//! - `spearman_damage`: Spearman correlation of the per-feature damage scores 1 − r.
//!
//! Matching assumes perplexity grows monotonically with sparsity (true in practice for magnitude
//! pruning, not guaranteed: a slightly non-monotone curve only makes bisection settle on one of
//! several crossings). Perplexity follows [`crate::perplexity`] on `match_windows` windows of
//! `match_seqlen` tokens of `match_text` (WikiText-2 by default). The search stops when
//! |ln ppl(p) − ln ppl(q)| ≤ `match_tolerance` or after `match_max_iters` pruned evaluations and
//! keeps the closest sparsity seen; `match_converged` says which. If even `max_sparsity` does not
//! reach the twin's perplexity the analysis fails, naming `max_sparsity` (a bracket without a
//! crossing would compare twins of different harm). A twin no worse than the reference (within the
//! tolerance) matches sparsity 0.
//!
//! Rows are labelled by the quantizer's spec (so `bits` is the quantizer's); `twin` = `quantized`
//! or `pruned` tells the two apart where both appear. Pruned twins are built here (at arbitrary
//! sparsities, so never stored in the twin cache) with [`QuantizeOptions::default`], the matrices
//! every quantizer touches by default (all linear weights of the blocks).
use super::features::{FeatureReference, FeaturesOptions, CATEGORIES};
use super::{text_windows, Analysis, Comparison, Row, Tidy, REFERENCE};
use crate::metrics::{jaccard, jaccard_chance, spearman};
use crate::perplexity::{perplexity, PerplexityOptions};
use crate::quant::{PruneSpec, QuantSpec};
use crate::quantize::{quantize_model, QuantizeOptions};
use crate::{HookedTransformer, QiError};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub struct PruneOverlap;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PruneOverlapOptions {
    /// The feature comparison (SAE, windows, thresholds, `seed`), as in `features`.
    #[serde(flatten)]
    pub features: FeaturesOptions,
    /// Perplexity matching: text source, windows and their length (see [`SparsityMatchOptions`]).
    pub match_text: String,
    pub match_windows: usize,
    pub match_seqlen: usize,
    pub match_tolerance: f64,
    pub match_max_iters: usize,
    pub max_sparsity: f64,
}

impl Default for PruneOverlapOptions {
    fn default() -> Self {
        let m = SparsityMatchOptions::default();
        PruneOverlapOptions {
            features: FeaturesOptions::default(),
            match_text: m.text,
            match_windows: m.windows,
            match_seqlen: m.seqlen,
            match_tolerance: m.tolerance,
            match_max_iters: m.max_iters,
            max_sparsity: m.max_sparsity,
        }
    }
}

impl PruneOverlapOptions {
    pub fn matching(&self) -> SparsityMatchOptions {
        SparsityMatchOptions {
            text: self.match_text.clone(),
            windows: self.match_windows,
            seqlen: self.match_seqlen,
            batch_size: self.features.forward_batch,
            tolerance: self.match_tolerance,
            max_iters: self.match_max_iters,
            max_sparsity: self.max_sparsity,
            seed: self.features.seed,
        }
    }
}

/// How [`SparsityMatcher`] finds the sparsity matching a twin's perplexity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SparsityMatchOptions {
    /// `wikitext2`, `c4`, `random` or a text file ([`super::text_windows`]).
    pub text: String,
    pub windows: usize,
    pub seqlen: usize,
    /// Windows per forward pass.
    pub batch_size: usize,
    /// Match when |ln ppl(pruned) − ln ppl(twin)| ≤ tolerance (0.02 ≈ 2 % in perplexity).
    pub tolerance: f64,
    /// Pruned perplexity evaluations at most (the first is at `max_sparsity`).
    pub max_iters: usize,
    /// Upper end of the bracket, in (0, 1).
    pub max_sparsity: f64,
    /// Draws the `c4` / `random` windows.
    pub seed: u64,
}

impl Default for SparsityMatchOptions {
    fn default() -> Self {
        SparsityMatchOptions { text: "wikitext2".into(), windows: 4, seqlen: 256, batch_size: 4, tolerance: 0.02, max_iters: 12, max_sparsity: 0.9, seed: 0 }
    }
}

impl SparsityMatchOptions {
    pub fn validate(&self) -> Result<()> {
        if !(self.max_sparsity > 0.0 && self.max_sparsity < 1.0) {
            return Err(QiError::invalid("max_sparsity", self.max_sparsity, "expected a fraction in (0, 1)").into());
        }
        if !(self.tolerance > 0.0) {
            return Err(QiError::invalid("match_tolerance", self.tolerance, "expected a positive tolerance on |ln perplexity ratio|").into());
        }
        if self.max_iters == 0 {
            return Err(QiError::invalid("match_max_iters", 0, "need at least one pruned evaluation").into());
        }
        Ok(())
    }
}

/// The sparsity whose pruned twin matches a twin's perplexity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparsityMatch {
    pub sparsity: f64,
    pub twin_perplexity: f64,
    pub pruned_perplexity: f64,
    pub reference_perplexity: f64,
    /// Pruned perplexity evaluations made.
    pub steps: usize,
    /// The final bisection bracket (perplexity below the target at `lo`, above at `hi`).
    pub bracket: (f64, f64),
    /// Whether the tolerance was met (otherwise the closest sparsity seen is returned).
    pub converged: bool,
}

/// Matches twins of one reference by pruning it: the evaluation tokens and the reference's
/// perplexity are computed once.
pub struct SparsityMatcher<'a> {
    reference: &'a HookedTransformer,
    ids: Vec<u32>,
    popts: PerplexityOptions,
    opts: SparsityMatchOptions,
    pub reference_perplexity: f64,
}

impl<'a> SparsityMatcher<'a> {
    pub fn new(reference: &'a HookedTransformer, opts: &SparsityMatchOptions) -> Result<Self> {
        opts.validate()?;
        let ids = text_windows(reference, &opts.text, opts.windows, opts.seqlen, opts.seed)?.concat();
        // the windows are exactly those of `ids`, so perplexity() re-splits them identically
        let popts = PerplexityOptions { seqlen: opts.seqlen, max_windows: None, batch_size: opts.batch_size };
        let reference_perplexity = perplexity(reference, &ids, &popts)?.perplexity;
        Ok(SparsityMatcher { reference, ids, popts, opts: opts.clone(), reference_perplexity })
    }

    /// Perplexity of `model` on the matching windows.
    pub fn perplexity(&self, model: &HookedTransformer) -> Result<f64> {
        Ok(perplexity(model, &self.ids, &self.popts)?.perplexity)
    }

    /// The reference pruned at `sparsity`.
    pub fn pruned(&self, sparsity: f64) -> Result<HookedTransformer> {
        Ok(quantize_model(self.reference, &QuantSpec::Prune(PruneSpec { sparsity }), &QuantizeOptions::default())?.0)
    }

    /// Bisection on sparsity in [0, max_sparsity] for the perplexity of `twin` (module docs);
    /// returns the match and the pruned twin at the matched sparsity.
    pub fn match_twin(&self, twin: &HookedTransformer) -> Result<(SparsityMatch, HookedTransformer)> {
        let target = self.perplexity(twin)?;
        let (m, pruned) = bisect_sparsity(target, self.reference_perplexity, &self.opts, |s| {
            let model = self.pruned(s)?;
            Ok((self.perplexity(&model)?, model))
        })?;
        Ok((m, match pruned {
            Some(model) => model,
            None => self.pruned(0.0)?,
        }))
    }
}

/// The search of [`SparsityMatcher::match_twin`] for a twin of perplexity `target`, with
/// `eval(s)` giving the perplexity (and whatever model) at sparsity `s`. Separate from the models
/// so the search itself can be tested on a known curve. `None` when the twin is no worse than the
/// reference (sparsity 0, nothing evaluated).
pub fn bisect_sparsity<T>(target: f64, reference_perplexity: f64, o: &SparsityMatchOptions, mut eval: impl FnMut(f64) -> Result<(f64, T)>) -> Result<(SparsityMatch, Option<T>)> {
    o.validate()?;
    let gap = |p: f64| (p.ln() - target.ln()).abs();
    let mut m = SparsityMatch {
        sparsity: 0.0,
        twin_perplexity: target,
        pruned_perplexity: reference_perplexity,
        reference_perplexity,
        steps: 0,
        bracket: (0.0, 0.0),
        converged: true,
    };
    if target <= reference_perplexity || gap(reference_perplexity) <= o.tolerance {
        return Ok((m, None));
    }
    let (mut lo, mut hi) = (0.0, o.max_sparsity);
    let mut best: Option<(f64, f64, T)> = None; // (sparsity, perplexity, model)
    let mut s = hi;
    while m.steps < o.max_iters {
        let (p, model) = eval(s)?;
        m.steps += 1;
        if m.steps == 1 && p < target && gap(p) > o.tolerance {
            return Err(QiError::invalid(
                "max_sparsity",
                o.max_sparsity,
                format!("pruning that fraction gives perplexity {p:.3}, still below the twin's {target:.3}: raise max_sparsity (below 1) or match a milder twin"),
            )
            .into());
        }
        if best.as_ref().map_or(true, |b| gap(p) < gap(b.1)) {
            best = Some((s, p, model));
        }
        if gap(p) <= o.tolerance {
            break;
        }
        if p < target {
            lo = s;
        } else {
            hi = s;
        }
        // sparsities on a 1e-4 grid keep the spec labels readable; stop when the grid is exhausted
        s = ((lo + hi) / 2.0 * 1e4).round() / 1e4;
        if s <= lo || s >= hi {
            break;
        }
    }
    let (sparsity, p, model) = best.expect("at least one evaluation");
    m.sparsity = sparsity;
    m.pruned_perplexity = p;
    m.bracket = (lo, hi);
    m.converged = gap(p) <= o.tolerance;
    Ok((m, Some(model)))
}

impl Analysis for PruneOverlap {
    const NAME: &'static str = "prune-overlap";
    const ABOUT: &'static str = "Do quantization and perplexity-matched magnitude pruning damage the same SAE features? (Jaccard, Spearman)";
    type Options = PruneOverlapOptions;

    fn options_doc() -> &'static str {
        "every option of `features` (sae, hook, source, n_seqs, seq_len, thresholds, SAE training, per_feature, seed)\n\
         match_text: wikitext2 | c4 | random | text file, for the perplexity matching\n\
         match_windows, match_seqlen: matching windows and their length\n\
         match_tolerance: match when |ln ppl(pruned) − ln ppl(twin)| ≤ this\n\
         match_max_iters: pruned perplexity evaluations at most\n\
         max_sparsity: upper end of the sparsity bracket, in (0, 1)"
    }

    fn run(cmp: &Comparison, o: &PruneOverlapOptions) -> Result<Tidy> {
        let fo = &o.features;
        let matcher = SparsityMatcher::new(cmp.reference, &o.matching())?;
        let fr = FeatureReference::new(cmp.reference, fo)?;
        let n_active = fr.active.len();
        let mut t = Tidy::new(cmp.name.clone());
        fr.push_reference_rows(&mut t);
        t.push(Row::new(&REFERENCE, "perplexity", matcher.reference_perplexity).n(o.match_windows));
        for twin in &cmp.twins {
            let (m, pruned) = matcher.match_twin(twin.model).with_context(|| format!("matching a pruned twin to {}", twin.spec))?;
            let pruned_spec = QuantSpec::Prune(PruneSpec { sparsity: m.sparsity }).to_string();
            t.push(Row::new(twin.spec, "matched_sparsity", m.sparsity).label("pruned", pruned_spec.as_str()).n(m.steps));
            t.push(Row::new(twin.spec, "match_converged", if m.converged { 1.0 } else { 0.0 }).n(m.steps));
            let sides = [("quantized", m.twin_perplexity, fr.compare(twin.model, fo)?), ("pruned", m.pruned_perplexity, fr.compare(&pruned, fo)?)];
            for (side, ppl, fc) in &sides {
                t.push(Row::new(twin.spec, "perplexity", *ppl).label("twin", *side).n(o.match_windows));
                t.push(Row::new(twin.spec, "sae_fve", fc.fve).label("twin", *side).n(fr.n_tokens));
                for (c, share) in CATEGORIES.iter().zip(fc.shares()) {
                    t.push(Row::new(twin.spec, "share", share).label("twin", *side).label("category", *c).n(n_active));
                }
                if fo.per_feature {
                    for (i, &j) in fr.active.iter().enumerate() {
                        t.push(Row::new(twin.spec, "feature_damage", 1.0 - fc.r[i]).label("twin", *side).label("feature", j).label("category", fc.category[i]));
                    }
                }
            }
            let (q, p) = (&sides[0].2, &sides[1].2);
            let (dq, dp) = (q.damaged(), p.damaged());
            let members = |d: &[bool]| -> Vec<usize> { d.iter().enumerate().filter(|(_, &x)| x).map(|(i, _)| i).collect() };
            let (sq, sp) = (members(&dq), members(&dp));
            t.push(Row::new(twin.spec, "jaccard_damaged", jaccard(&sq, &sp)).n(n_active));
            t.push(Row::new(twin.spec, "jaccard_chance", jaccard_chance(sq.len(), sp.len(), n_active)).n(n_active));
            t.push(Row::new(twin.spec, "spearman_damage", spearman(&q.damage(), &p.damage())).n(n_active));
        }
        Ok(t)
    }
}

/// Damage overlap per quantizer: Jaccard of the damaged sets against its chance level, and the
/// Spearman correlation of damage scores (frame from [`PruneOverlap::run`]).
pub fn overlap_figure(df: &polars::prelude::DataFrame) -> Result<plotly::Plot> {
    let mut rows = super::tidy::filter_eq(df, "metric", "jaccard_damaged")?;
    for metric in ["jaccard_chance", "spearman_damage"] {
        rows.vstack_mut(&super::tidy::filter_eq(df, "metric", metric)?)?;
    }
    super::plots::bars(
        &rows,
        "spec",
        "metric",
        &super::plots::Labels::new("Quantization vs perplexity-matched magnitude pruning: same damaged SAE features?", "quantizer", "value"),
    )
}
