//! `sae-compare` (SAEs trained on reference vs quantized activations) on the tiny llama fixture.
mod common;
use common::{fixture, temp_dir};
use qi::analysis::sae_compare::{self, SaeCompare, SaeCompareOptions};
use qi::analysis::tidy::{f64_values, filter_eq, str_values};
use qi::analysis::{find, Analysis, Comparison};
use qi::quant::QuantSpec;
use qi::quantize::QuantizeOptions;
use qi::{load_model, HookedTransformer, QiError};

fn setup() -> (HookedTransformer, Vec<(QuantSpec, HookedTransformer)>) {
    let m = load_model(fixture("llama").to_str().unwrap()).unwrap();
    let specs = QuantSpec::parse_list("rtn:bits=8; rtn:bits=2").unwrap();
    let twins = qi::twin_cache::twins(&m, &specs, &QuantizeOptions::default(), None).unwrap();
    (m, twins)
}

fn opts() -> SaeCompareOptions {
    SaeCompareOptions {
        source: "random".into(),
        n_seqs: 6,
        seq_len: 16,
        training: common::tiny_sae(),
        null_draws: 3,
        n_boot: 200,
        n_perm: 200,
        ..Default::default()
    }
}

fn invalid_what(e: &anyhow::Error) -> String {
    match e.downcast_ref::<QiError>() {
        Some(QiError::InvalidArgument { what, .. }) => what.clone(),
        other => panic!("expected an invalid-argument error, got {other:?}: {e:#}"),
    }
}

fn rows(df: &qi::polars::prelude::DataFrame, spec: &str, metric: &str) -> qi::polars::prelude::DataFrame {
    filter_eq(&filter_eq(df, "spec", spec).unwrap(), "metric", metric).unwrap()
}

fn real(df: &qi::polars::prelude::DataFrame, spec: &str, metric: &str) -> f64 {
    f64_values(&filter_eq(&rows(df, spec, metric), "null", "none").unwrap(), "value").unwrap()[0]
}

fn null(df: &qi::polars::prelude::DataFrame, spec: &str, metric: &str) -> f64 {
    f64_values(&filter_eq(&rows(df, spec, metric), "null", "random").unwrap(), "value").unwrap()[0]
}

#[test]
fn trained_saes_compare_against_nulls_and_are_deterministic() {
    let (m, twins) = setup();
    let cmp = Comparison::new("llama", &m, &twins).unwrap();
    let o = SaeCompareOptions { seed_control: true, ..opts() };
    let t = SaeCompare::run(&cmp, &o).unwrap();
    assert_eq!(t.rows, SaeCompare::run(&cmp, &o).unwrap().rows, "same seed, same table");
    let df = t.to_frame().unwrap();
    for spec in ["none", "rtn:bits=8", "rtn:bits=2"] {
        let shares = f64_values(&rows(&df, spec, "feature_share"), "value").unwrap();
        assert_eq!(shares.len(), 4);
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{shares:?}");
        assert!(f64_values(&rows(&df, spec, "sae_l0"), "value").unwrap()[0] <= 8.0 + 1e-9);
    }
    for spec in ["rtn:bits=8", "rtn:bits=2"] {
        for metric in ["best_match_cos", "best_match_share", "mnn_share", "same_index_share", "cka"] {
            let v = real(&df, spec, metric);
            assert!((0.0..=1.0 + 1e-6).contains(&v), "{spec} {metric} {v}");
        }
        assert!(real(&df, spec, "procrustes_residual") >= 0.0);
    }
    // 8-bit activations are nearly the reference's, and the SAEs share seed and data: the
    // dictionaries should be far closer than random ones
    assert!(real(&df, "rtn:bits=8", "best_match_cos") > null(&df, "rtn:bits=8", "best_match_cos") + 0.2);
    assert!(real(&df, "rtn:bits=8", "cka") > null(&df, "rtn:bits=8", "cka"));
    assert!(real(&df, "rtn:bits=8", "cka_debiased") > null(&df, "rtn:bits=8", "cka_debiased") + 0.2);
    assert!(null(&df, "rtn:bits=8", "cka_debiased").abs() < 0.2);
    assert!(real(&df, "rtn:bits=8", "procrustes_residual") < null(&df, "rtn:bits=8", "procrustes_residual"));
    assert!(real(&df, "rtn:bits=8", "best_match_cos") >= real(&df, "rtn:bits=2", "best_match_cos"));
    // the nulls are the same for every twin
    assert_eq!(null(&df, "rtn:bits=8", "cka"), null(&df, "rtn:bits=2", "cka"));
    // one paired comparison between the two twins
    let p = rows(&df, "rtn:bits=8", "best_match_cos_perm_p");
    assert_eq!(str_values(&p, "versus").unwrap(), vec!["rtn:bits=2"]);
    let p = f64_values(&p, "value").unwrap()[0];
    assert!(p > 0.0 && p <= 1.0);
    let d = f64_values(&rows(&df, "rtn:bits=8", "best_match_cos_diff"), "value").unwrap()[0];
    assert!((d - (real(&df, "rtn:bits=8", "best_match_cos") - real(&df, "rtn:bits=2", "best_match_cos"))).abs() < 1e-9);
    // same seed → the twins' SAEs keep the reference's feature order; another seed does not
    assert!(real(&df, "rtn:bits=8", "same_index_share") > 0.5);
    let seed_rows = filter_eq(&rows(&df, "none", "same_index_share"), "null", "seed").unwrap();
    assert!(f64_values(&seed_rows, "value").unwrap()[0] < real(&df, "rtn:bits=8", "same_index_share"));
    let seed_cos = f64_values(&filter_eq(&rows(&df, "none", "best_match_cos"), "null", "seed").unwrap(), "value").unwrap()[0];
    // (barely trained tiny SAEs from another init are about as far apart as random matrices)
    assert!(seed_cos > 0.0 && seed_cos < real(&df, "rtn:bits=8", "best_match_cos"), "{seed_cos}");
    sae_compare::similarity_figure(&df).unwrap();
    sae_compare::frequency_figure(&df).unwrap();
    // through the registry by its CLI name
    let e = find("sae-compare").unwrap();
    assert_eq!(e.name, "sae-compare");
}

#[test]
fn saved_saes_per_spec_and_bad_input() {
    let (m, twins) = setup();
    let cmp = Comparison::new("llama", &m, &twins[..1]).unwrap();
    let o = opts();
    // save one SAE per spec as `qi sae train [--quant]` would
    let dir = temp_dir("sae-compare");
    let topts = o.train_options("blocks.1.hook_resid_post");
    for (spec, model) in [(&qi::analysis::REFERENCE, &m), (&twins[0].0, &twins[0].1)] {
        let (s, _) = qi::sae::train_on_model(model, &topts).unwrap();
        s.save(&sae_compare::sae_path(&dir, spec), Some(&topts)).unwrap();
    }
    assert!(dir.join("none").is_dir() && dir.join("rtn_bits_8").is_dir());
    let saved = SaeCompareOptions { sae_dir: dir.to_string_lossy().into(), ..o.clone() };
    let from_disk = SaeCompare::run(&cmp, &saved).unwrap();
    // the saved SAEs are the ones training here would produce (same options and seed)
    assert_eq!(from_disk.rows, SaeCompare::run(&cmp, &o).unwrap().rows);

    // the seed control asked for but not saved
    let no_control = SaeCompareOptions { seed_control: true, ..saved.clone() };
    assert_eq!(invalid_what(&SaeCompare::run(&cmp, &no_control).unwrap_err()), "sae_dir");
    // a spec without a saved SAE
    let cmp2 = Comparison::new("llama", &m, &twins).unwrap();
    assert_eq!(invalid_what(&SaeCompare::run(&cmp2, &saved).unwrap_err()), "sae_dir");
    // saved SAEs whose d_in does not match the hook (mlp.hook_post is 160 wide)
    let bad = SaeCompareOptions { hook: "blocks.0.mlp.hook_post".into(), ..saved.clone() };
    assert_eq!(invalid_what(&SaeCompare::run(&cmp, &bad).unwrap_err()), "SAE d_in");
    // same width, another hook than the SAEs were trained on
    let bad = SaeCompareOptions { hook: "blocks.0.hook_resid_post".into(), ..saved.clone() };
    assert_eq!(invalid_what(&SaeCompare::run(&cmp, &bad).unwrap_err()), "SAE hook");
    // a hook that does not exist
    let bad = SaeCompareOptions { hook: "blocks.7.hook_resid_post".into(), ..o.clone() };
    assert!(SaeCompare::run(&cmp, &bad).unwrap_err().to_string().contains("unknown hook"));
    // thresholds outside [0, 1] or inconsistent, through the registry's JSON options too
    for (bad, what) in [
        (SaeCompareOptions { rare_frac: -0.1, ..o.clone() }, "rare_frac"),
        (SaeCompareOptions { frequent_frac: 1.5, ..o.clone() }, "frequent_frac"),
        (SaeCompareOptions { match_threshold: 2.0, ..o.clone() }, "match_threshold"),
        (SaeCompareOptions { rare_frac: 0.6, ..o.clone() }, "rare_frac"),
        (SaeCompareOptions { null_draws: 0, ..o.clone() }, "null_draws"),
    ] {
        assert_eq!(invalid_what(&SaeCompare::run(&cmp, &bad).unwrap_err()), what);
        let e = find("sae-compare").unwrap();
        assert_eq!(invalid_what(&(e.run)(&cmp, &serde_json::to_value(&bad).unwrap()).err().unwrap()), what);
    }
    // fewer training tokens than one batch (8 windows × 15 usable tokens < 1000)
    let bad = SaeCompareOptions { training: qi::sae::SaeTraining { train_batch: 1000, ..o.training.clone() }, ..o.clone() };
    assert_eq!(invalid_what(&SaeCompare::run(&cmp, &bad).unwrap_err()), "batch_size");
    let _ = std::fs::remove_dir_all(&dir);
}
