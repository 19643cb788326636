//! Feature survival, neurons and calibration analyses on the tiny fixtures.
mod common;
use common::{fixture, temp_dir};
use qi::analysis::tidy::{f64_values, filter_eq, str_values};
use qi::analysis::{calibration, features, find, neurons, Analysis, Comparison};
use qi::quant::QuantSpec;
use qi::quantize::QuantizeOptions;
use qi::{load_model, HookedTransformer, QiError};

fn setup() -> (HookedTransformer, Vec<(QuantSpec, HookedTransformer)>) {
    let m = load_model(fixture("llama").to_str().unwrap()).unwrap();
    let specs = QuantSpec::parse_list("rtn:bits=8; rtn:bits=2").unwrap();
    let twins = qi::twin_cache::twins(&m, &specs, &QuantizeOptions::default(), None).unwrap();
    (m, twins)
}

fn feature_opts() -> features::FeaturesOptions {
    features::FeaturesOptions {
        source: "random".into(),
        n_seqs: 6,
        seq_len: 16,
        training: common::tiny_sae(),
        folds: 3,
        ..Default::default()
    }
}

fn invalid_what(e: &anyhow::Error) -> String {
    match e.downcast_ref::<QiError>() {
        Some(QiError::InvalidArgument { what, .. }) => what.clone(),
        other => panic!("expected an invalid-argument error, got {other:?}: {e:#}"),
    }
}

fn value(df: &qi::polars::prelude::DataFrame, spec: &str, metric: &str) -> Vec<f64> {
    let d = filter_eq(&filter_eq(df, "spec", spec).unwrap(), "metric", metric).unwrap();
    f64_values(&d, "value").unwrap()
}

#[test]
fn feature_survival_shares_sum_to_one_and_degrade_with_bits() {
    let (m, twins) = setup();
    let cmp = Comparison::new("llama", &m, &twins).unwrap();
    let o = features::FeaturesOptions { per_feature: true, ..feature_opts() };
    let t = features::Features::run(&cmp, &o).unwrap();
    // NaN AUCs (a class empty) make row equality fail; compare the printed tables
    assert_eq!(format!("{:?}", t.rows), format!("{:?}", features::Features::run(&cmp, &o).unwrap().rows), "same seed, same table");
    let df = t.to_frame().unwrap();
    let n_active = value(&df, "none", "n_active")[0] as usize;
    let mut scored = 0;
    for spec in ["rtn:bits=8", "rtn:bits=2"] {
        let shares = value(&df, spec, "share");
        assert_eq!(shares.len(), 3);
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{shares:?}");
        // the AUC is undefined (NaN) exactly when a class has fewer members than folds
        let n_survived = (shares[0] * n_active as f64).round() as usize;
        let defined = n_survived >= o.folds && n_active - n_survived >= o.folds;
        let aucs = value(&df, spec, "survival_auc");
        assert_eq!(aucs.len(), features::PREDICTOR_SETS.len());
        for a in &aucs {
            assert!(if defined { (0.0..=1.0).contains(a) } else { a.is_nan() }, "{spec}: {n_survived} of {n_active} survived, AUCs {aucs:?}");
        }
        scored += defined as usize;
    }
    assert!(scored > 0, "no twin had both classes: the AUC path was not exercised");
    // 8-bit keeps (almost) every feature; 2-bit keeps fewer
    let surv = |spec: &str| value(&df, spec, "share")[0];
    assert!(surv("rtn:bits=8") > 0.9, "{}", surv("rtn:bits=8"));
    assert!(surv("rtn:bits=2") < surv("rtn:bits=8"));
    assert!(value(&df, "rtn:bits=8", "mean_r")[0] > value(&df, "rtn:bits=2", "mean_r")[0]);
    assert_eq!(value(&df, "rtn:bits=2", "feature_r").len(), n_active);
    // each twin's storage cost sits on its own spec: 8-bit and 2-bit rows differ by 6 bits of
    // code plus 6 more zero-point bits per row (per-row asymmetric grids)
    let bpw = |spec: &str| value(&df, spec, "bits_per_weight");
    assert_eq!(bpw("rtn:bits=8").len(), 1);
    assert_eq!(bpw("rtn:bits=8")[0], qi::quantize::model_bits_per_weight(&m, &"rtn:bits=8".parse().unwrap()));
    let gap = bpw("rtn:bits=8")[0] - bpw("rtn:bits=2")[0];
    assert!(gap > 6.0 && gap < 6.5, "8-bit minus 2-bit bits per weight {gap}");
    // each feature's category is the documented function of its r and overlap
    let per = |metric| filter_eq(&filter_eq(&df, "spec", "rtn:bits=2").unwrap(), "metric", metric).unwrap();
    let cats = str_values(&per("feature_r"), "category").unwrap();
    let (rs, ovs) = (f64_values(&per("feature_r"), "value").unwrap(), f64_values(&per("feature_topk_overlap"), "value").unwrap());
    for ((c, r), ov) in cats.iter().zip(&rs).zip(&ovs) {
        assert!((0.0..=1.0).contains(ov), "overlap {ov}");
        assert_eq!(c, features::category(*r, *ov, &o), "r {r}, overlap {ov}");
    }
    features::survival_figure(&df).unwrap();
    features::prediction_figure(&df).unwrap();
}

#[test]
fn feature_survival_with_a_saved_sae_and_bad_input() {
    let (m, twins) = setup();
    let cmp = Comparison::new("llama", &m, &twins[..1]).unwrap();
    let topts = qi::sae::TrainOptions { d_hidden: 96, k: 6, steps: 10, batch_size: 32, source: "random".into(), seq_len: 16, buffer_windows: 4, ..Default::default() };
    let (s, _) = qi::sae::train_on_model(&m, &topts).unwrap();
    let dir = temp_dir("features-sae");
    s.save(&dir, Some(&topts)).unwrap();
    let o = features::FeaturesOptions { sae: dir.to_string_lossy().into(), ..feature_opts() };
    let df = features::Features::run(&cmp, &o).unwrap().to_frame().unwrap();
    assert!(value(&df, "none", "n_active")[0] > 0.0);
    // through the registry, with JSON options
    let e = find("features").unwrap();
    let mut json = serde_json::to_value(&o).unwrap();
    json["active_frac"] = serde_json::json!(1.5);
    assert_eq!(invalid_what(&(e.run)(&cmp, &json).err().unwrap()), "active_frac");
    // an SAE whose d_in does not match the hook (mlp.hook_post is 160 wide)
    let bad = features::FeaturesOptions { hook: "blocks.0.mlp.hook_post".into(), ..o.clone() };
    assert_eq!(invalid_what(&features::Features::run(&cmp, &bad).unwrap_err()), "SAE d_in");
    // a hook that does not exist
    let bad = features::FeaturesOptions { hook: "blocks.7.hook_resid_post".into(), ..o.clone() };
    assert!(features::Features::run(&cmp, &bad).unwrap_err().to_string().contains("unknown hook"));
    // thresholds outside [0, 1] or inconsistent
    for (bad, what) in [
        (features::FeaturesOptions { survived_r: -0.1, ..o.clone() }, "survived_r"),
        (features::FeaturesOptions { destroyed_r: 0.95, ..o.clone() }, "destroyed_r"),
        (features::FeaturesOptions { folds: 1, ..o.clone() }, "folds"),
    ] {
        assert_eq!(invalid_what(&features::Features::run(&cmp, &bad).unwrap_err()), what);
    }
    // no feature fires on every token: active_frac = 1 leaves nothing
    let none = features::FeaturesOptions { active_frac: 1.0, ..o.clone() };
    assert_eq!(invalid_what(&features::Features::run(&cmp, &none).unwrap_err()), "active_frac");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn categories_follow_the_documented_thresholds() {
    let o = features::FeaturesOptions::default();
    assert_eq!(features::category(0.95, 0.6, &o), "survived");
    assert_eq!(features::category(0.95, 0.2, &o), "blurred");
    assert_eq!(features::category(0.7, 1.0, &o), "blurred");
    assert_eq!(features::category(0.3, 1.0, &o), "destroyed");
    assert_eq!(features::category(f64::NAN, 0.0, &o), "destroyed");
}

#[test]
fn a_rare_feature_is_judged_on_the_tokens_where_it_fires() {
    // Fires on 3 of 20 tokens; the twin keeps them exactly and adds weak firing (0.1) on 7 more
    // tokens: r = 0.998. Ranking all 20 tokens, the reference's "top 10" would be its 3 firing
    // tokens plus zero tokens 0..6 chosen by index, the twin's its 10 firing tokens: overlap 0.3,
    // "blurred". Among firing tokens the three strongest agree: survived.
    let o = features::FeaturesOptions::default();
    let mut reference = vec![0.0; 20];
    reference[10..13].copy_from_slice(&[3.0, 2.0, 1.0]);
    let mut twin = reference.clone();
    twin[13..].iter_mut().for_each(|v| *v = 0.1);
    let (r, ov, cat) = features::feature_verdict(&reference, &twin, &o);
    assert!((r - 0.99823).abs() < 1e-4, "{r}");
    assert_eq!((ov, cat), (1.0, "survived"));
    // a twin where the feature moved to other tokens (same values, shifted by 3) is destroyed
    let mut moved = vec![0.0; 20];
    moved[13..16].copy_from_slice(&[3.0, 2.0, 1.0]);
    let (r, ov, cat) = features::feature_verdict(&reference, &moved, &o);
    assert!(r < 0.0 && ov == 0.0 && cat == "destroyed", "{r} {ov} {cat}");
}

#[test]
fn neurons_dead_fractions_and_correlation_histograms() {
    let (m, twins) = setup();
    let cmp = Comparison::new("llama", &m, &twins).unwrap();
    let o = neurons::NeuronsOptions { source: "random".into(), n_seqs: 4, seq_len: 16, sample_neurons: 40, hist_bins: 10, ..Default::default() };
    let t = neurons::Neurons::run(&cmp, &o).unwrap();
    assert_eq!(t.rows, neurons::Neurons::run(&cmp, &o).unwrap().rows);
    let df = t.to_frame().unwrap();
    for spec in ["none", "rtn:bits=8", "rtn:bits=2"] {
        let dead = value(&df, spec, "dead_fraction");
        assert_eq!(dead.len(), 2);
        assert!(dead.iter().all(|d| (0.0..=1.0).contains(d)));
        let hist = value(&df, spec, "corr_hist");
        assert_eq!(hist.len(), 20);
        assert!((hist[..10].iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
    // a threshold above every activation makes every neuron dead
    let all_dead = neurons::Neurons::run(&cmp, &neurons::NeuronsOptions { dead_threshold: 1e9, layers: vec![1], ..o.clone() }).unwrap().to_frame().unwrap();
    assert_eq!(value(&all_dead, "none", "dead_fraction"), vec![1.0]);
    neurons::dead_figure(&df).unwrap();
    neurons::correlation_figure(&df).unwrap();
    assert_eq!(invalid_what(&neurons::Neurons::run(&cmp, &neurons::NeuronsOptions { redundant_r: 2.0, ..o.clone() }).unwrap_err()), "redundant_r");
    assert_eq!(invalid_what(&neurons::Neurons::run(&cmp, &neurons::NeuronsOptions { layers: vec![5], ..o.clone() }).unwrap_err()), "layer");
}

#[test]
fn calibration_metrics_per_method() {
    let (m, twins) = setup();
    let cmp = Comparison::new("llama", &m, &twins).unwrap();
    let o = calibration::CalibrationOptions { source: "random".into(), n_seqs: 3, seq_len: 12, n_bins: 5, ..Default::default() };
    let df = calibration::Calibration::run(&cmp, &o).unwrap().to_frame().unwrap();
    for spec in ["none", "rtn:bits=8", "rtn:bits=2"] {
        let acc = value(&df, spec, "accuracy")[0];
        let conf = value(&df, spec, "mean_confidence")[0];
        assert!((0.0..=1.0).contains(&acc) && conf > 0.0 && conf <= 1.0);
        // with one bin ECE would be |acc − conf|; with more it is at least that
        assert!(value(&df, spec, "ece")[0] >= (acc - conf).abs() - 1e-9);
        assert!((0.0..=1.0).contains(&value(&df, spec, "ace")[0]));
    }
    // 3 windows × 11 scored positions
    let n = f64_values(&filter_eq(&df, "metric", "accuracy").unwrap(), "n").unwrap();
    assert!(n.iter().all(|&x| x == 33.0));
    let one = calibration::Calibration::run(&cmp, &calibration::CalibrationOptions { n_bins: 1, ..o.clone() }).unwrap().to_frame().unwrap();
    let (a, c) = (value(&one, "none", "accuracy")[0], value(&one, "none", "mean_confidence")[0]);
    assert!((value(&one, "none", "ece")[0] - (a - c).abs()).abs() < 1e-9);
    calibration::reliability_figure(&df).unwrap();
    assert_eq!(invalid_what(&calibration::Calibration::run(&cmp, &calibration::CalibrationOptions { n_bins: 0, ..o }).unwrap_err()), "n_bins");
}
