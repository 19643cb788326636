//! Damage overlap between quantization and perplexity-matched magnitude pruning: the sparsity
//! search on a known curve, then the analysis end to end on the tiny fixtures.
mod common;
use common::fixture;
use qi::analysis::prune_overlap::{bisect_sparsity, overlap_figure, PruneOverlap, PruneOverlapOptions, SparsityMatchOptions};
use qi::analysis::tidy::{f64_values, filter_eq};
use qi::analysis::{features, find, Analysis, Comparison};
use qi::quant::QuantSpec;
use qi::quantize::QuantizeOptions;
use qi::{load_model, QiError};

fn invalid_what(e: &anyhow::Error) -> String {
    match e.downcast_ref::<QiError>() {
        Some(QiError::InvalidArgument { what, .. }) => what.clone(),
        other => panic!("expected an invalid-argument error, got {other:?}: {e:#}"),
    }
}

/// A monotone perplexity curve: ppl(s) = 10·exp(4 s²); ppl(0.7) = 10·e^1.96.
fn curve(s: f64) -> anyhow::Result<(f64, f64)> {
    Ok((10.0 * (4.0 * s * s).exp(), s))
}

#[test]
fn bisection_finds_the_sparsity_of_a_known_curve() {
    let o = SparsityMatchOptions { tolerance: 1e-3, max_iters: 30, ..Default::default() };
    let target = curve(0.7).unwrap().0;
    let (m, evaluated_at) = bisect_sparsity(target, 10.0, &o, curve).unwrap();
    assert!(m.converged, "{m:?}");
    assert_eq!(evaluated_at, Some(m.sparsity), "the returned model is the one at the matched sparsity");
    // |ln ppl − ln target| = 4 |s² − 0.49| ≤ 1e-3  ⇒  |s − 0.7| ≤ 1e-3 / (4 · 2 · 0.7) ≈ 1.8e-4 (+ the 1e-4 grid)
    assert!((m.sparsity - 0.7).abs() < 3e-4, "{m:?}");
    assert!((m.pruned_perplexity.ln() - target.ln()).abs() <= 1e-3);
    assert!(m.bracket.0 <= m.sparsity && m.sparsity <= m.bracket.1, "{m:?}");
    assert_eq!((m.twin_perplexity, m.reference_perplexity), (target, 10.0));
    assert!(m.steps <= 30);

    // a twin no worse than the reference matches sparsity 0 without evaluating anything
    let (m0, none) = bisect_sparsity(9.0, 10.0, &o, |_| -> anyhow::Result<(f64, f64)> { panic!("nothing to evaluate") }).unwrap();
    assert_eq!((m0.sparsity, m0.steps, m0.converged, none), (0.0, 0, true, None));

    // out of evaluations: the closest sparsity seen, flagged as not converged
    let few = SparsityMatchOptions { max_iters: 2, ..o.clone() };
    let (m2, _) = bisect_sparsity(target, 10.0, &few, curve).unwrap();
    assert_eq!(m2.steps, 2);
    assert!(!m2.converged);
    assert!(m2.sparsity == 0.9 || m2.sparsity == 0.45, "only the bracket end and its midpoint were evaluated: {m2:?}");

    // the bracket's upper end does not reach the twin: an error naming max_sparsity
    let short = SparsityMatchOptions { max_sparsity: 0.5, ..o.clone() };
    let e = bisect_sparsity(target, 10.0, &short, curve).unwrap_err();
    assert_eq!(invalid_what(&e), "max_sparsity", "{e:#}");

    for (bad, name) in [
        (SparsityMatchOptions { max_sparsity: 1.0, ..o.clone() }, "max_sparsity"),
        (SparsityMatchOptions { tolerance: 0.0, ..o.clone() }, "match_tolerance"),
        (SparsityMatchOptions { max_iters: 0, ..o.clone() }, "match_max_iters"),
    ] {
        assert_eq!(invalid_what(&bisect_sparsity(target, 10.0, &bad, curve).unwrap_err()), name);
    }
}

fn options() -> PruneOverlapOptions {
    PruneOverlapOptions {
        features: features::FeaturesOptions {
            source: "random".into(),
            n_seqs: 6,
            seq_len: 16,
            training: common::tiny_sae(),
            per_feature: true,
            ..Default::default()
        },
        match_text: "random".into(),
        match_windows: 4,
        match_seqlen: 16,
        match_tolerance: 0.01,
        match_max_iters: 12,
        ..Default::default()
    }
}

fn values(df: &qi::polars::prelude::DataFrame, spec: &str, metric: &str) -> Vec<f64> {
    f64_values(&filter_eq(&filter_eq(df, "spec", spec).unwrap(), "metric", metric).unwrap(), "value").unwrap()
}

#[test]
fn prune_overlap_rows_determinism_and_bad_input() {
    let m = load_model(fixture("llama").to_str().unwrap()).unwrap();
    // on this random-weight fixture rtn:bits=2 happens to lower perplexity (sparsity-0 path) and
    // rtn:bits=3 raises it (bisection path)
    let specs = QuantSpec::parse_list("rtn:bits=2; rtn:bits=3").unwrap();
    let twins = qi::twin_cache::twins(&m, &specs, &QuantizeOptions::default(), None).unwrap();
    let cmp = Comparison::new("llama", &m, &twins).unwrap();
    let o = options();
    let t = PruneOverlap::run(&cmp, &o).unwrap();
    assert_eq!(format!("{:?}", t.rows), format!("{:?}", PruneOverlap::run(&cmp, &o).unwrap().rows), "same seed, same table");
    let df = t.to_frame().unwrap();
    let n_active = values(&df, "none", "n_active")[0];
    for spec in ["rtn:bits=2", "rtn:bits=3"] {
        let s = values(&df, spec, "matched_sparsity")[0];
        assert!((0.0..=o.max_sparsity).contains(&s), "{spec}: {s}");
        let j = values(&df, spec, "jaccard_damaged")[0];
        assert!((0.0..=1.0).contains(&j), "{spec}: {j}");
        let c = values(&df, spec, "jaccard_chance")[0];
        assert!(c.is_nan() || (0.0..=1.0).contains(&c), "{spec}: {c}");
        let rho = values(&df, spec, "spearman_damage")[0];
        assert!(rho.is_nan() || (-1.0..=1.0).contains(&rho), "{spec}: {rho}");
        // both twins' shares, per-feature damage for every active feature on each side
        assert_eq!(values(&df, spec, "share").len(), 6);
        assert_eq!(values(&df, spec, "feature_damage").len() as f64, 2.0 * n_active);
        let ppl = values(&df, spec, "perplexity");
        assert_eq!(ppl.len(), 2);
        if values(&df, spec, "match_converged")[0] == 1.0 && s > 0.0 {
            assert!((ppl[0].ln() - ppl[1].ln()).abs() <= o.match_tolerance, "{spec}: {ppl:?}");
        }
    }
    // rtn:bits=2 is no worse than the reference here, so its pruned match is the reference itself
    let reference_ppl = values(&df, "none", "perplexity")[0];
    if values(&df, "rtn:bits=2", "perplexity")[0] <= reference_ppl {
        assert_eq!(values(&df, "rtn:bits=2", "matched_sparsity"), vec![0.0]);
    }
    overlap_figure(&df).unwrap();

    // through the registry, with options as the CLI passes them
    let entry = find("prune-overlap").unwrap();
    let sub = (entry.run)(&Comparison::new("llama", &m, &twins[1..]).unwrap(), &serde_json::json!({"source": "random", "n_seqs": 4, "seq_len": 16, "expansion": 2, "k": 8, "train_steps": 10, "train_batch": 32, "train_windows": 4, "match_text": "random", "match_windows": 2, "match_seqlen": 16})).unwrap();
    assert!(!sub.rows.is_empty());
    let e = (entry.run)(&cmp, &serde_json::json!({"max_sparsity": 1.5})).unwrap_err();
    assert_eq!(invalid_what(&e), "max_sparsity", "{e:#}");
}
