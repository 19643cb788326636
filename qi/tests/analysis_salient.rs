//! Salient neurons by integrated gradients on the tiny fixtures.
mod common;
use common::fixture;
use qi::analysis::salient::{self, SalientNeurons, SalientOptions};
use qi::analysis::tidy::{f64_values, filter_eq};
use qi::analysis::{find, Analysis, Comparison};
use qi::hooks::names;
use qi::quant::QuantSpec;
use qi::quantize::QuantizeOptions;
use qi::{load_model, HookedTransformer, QiError};

fn setup() -> (HookedTransformer, Vec<(QuantSpec, HookedTransformer)>) {
    let m = load_model(fixture("llama").to_str().unwrap()).unwrap();
    let specs = QuantSpec::parse_list("rtn:bits=8; rtn:bits=2").unwrap();
    let twins = qi::twin_cache::twins(&m, &specs, &QuantizeOptions::default(), None).unwrap();
    (m, twins)
}

fn opts() -> SalientOptions {
    SalientOptions { source: "random".into(), n_seqs: 3, seq_len: 8, ig_steps: 4, n_boot: 100, ..Default::default() }
}

fn invalid_what(e: &anyhow::Error) -> String {
    match e.downcast_ref::<QiError>() {
        Some(QiError::InvalidArgument { what, .. }) => what.clone(),
        other => panic!("expected an invalid-argument error, got {other:?}: {e:#}"),
    }
}

fn values(df: &qi::polars::prelude::DataFrame, spec: &str, metric: &str, scope: &str) -> Vec<f64> {
    let d = filter_eq(&filter_eq(&filter_eq(df, "spec", spec).unwrap(), "metric", metric).unwrap(), "scope", scope).unwrap();
    f64_values(&d, "value").unwrap()
}

#[test]
fn ig_completeness_improves_with_more_steps() {
    for fixture_name in ["llama", "gpt2"] {
        let m = load_model(fixture(fixture_name).to_str().unwrap()).unwrap();
        let tokens: Vec<u32> = qi::rng::Rng::new(3).tokens(7, m.cfg.d_vocab, &[]);
        let layer = 0;
        let (logits, cache) = m.run_with_cache(&qi::Batch::from_ids(&tokens).unwrap(), format!("{},{}", names::resid_pre(layer), names::mlp_post(layer))).unwrap();
        let target = logits.get(0).unwrap().get(6).unwrap().argmax(0).unwrap().to_scalar::<u32>().unwrap();
        let resid = cache.get(&names::resid_pre(layer)).unwrap();
        let act = cache.get(&names::mlp_post(layer)).unwrap().get(0).unwrap().get(6).unwrap();
        let gap = |steps| {
            let ig = salient::integrated_gradients(&m, &tokens, resid, &act, layer, target, steps).unwrap();
            assert_eq!(ig.ig.len(), m.cfg.d_mlp);
            let full = logits.get(0).unwrap().get(6).unwrap().get(target as usize).unwrap().to_scalar::<f32>().unwrap() as f64;
            assert!((ig.logit_full - full).abs() < 1e-3, "{fixture_name}: resumed α=1 logit {} vs forward {full}", ig.logit_full);
            let sum: f64 = ig.ig.iter().map(|&v| v as f64).sum();
            ((sum - (ig.logit_full - ig.logit_zero)).abs(), (ig.logit_full - ig.logit_zero).abs())
        };
        let (g1, delta) = gap(1);
        let (g32, _) = gap(32);
        assert!(delta > 1e-4, "{fixture_name}: zeroing the layer changes nothing ({delta})");
        assert!(g32 < g1 || g1 < 1e-6, "{fixture_name}: gap with 32 steps {g32} not below 1 step {g1}");
        assert!(g32 < 0.05 * delta + 1e-4, "{fixture_name}: completeness off: gap {g32}, Δlogit {delta}");
    }
}

#[test]
fn salient_rows_determinism_and_figures() {
    let (m, twins) = setup();
    let cmp = Comparison::new("llama", &m, &twins).unwrap();
    let o = opts();
    let t = SalientNeurons::run(&cmp, &o).unwrap();
    assert_eq!(t.rows, SalientNeurons::run(&cmp, &o).unwrap().rows, "same seed, same table");
    let df = t.to_frame().unwrap();
    let n_layers = m.cfg.n_layers;
    for spec in ["none", "rtn:bits=8", "rtn:bits=2"] {
        let counts = values(&df, spec, "salient_count", "layer");
        assert_eq!(counts.len(), n_layers);
        // at least the maximum neuron is salient in a layer with any attribution
        assert!(counts.iter().all(|&c| c >= 1.0 && c <= m.cfg.d_mlp as f64), "{spec}: {counts:?}");
        let total = values(&df, spec, "salient_count", "total");
        assert!((total[0] - counts.iter().sum::<f64>()).abs() < 1e-9);
        let comp = values(&df, spec, "ig_completeness_rel", "layer");
        assert!(comp.iter().all(|&c| c.is_finite() && c < 0.5), "{spec}: {comp:?}");
    }
    assert!(values(&df, "none", "salient_jaccard", "layer").is_empty());
    let j8 = values(&df, "rtn:bits=8", "salient_jaccard", "layer");
    let j2 = values(&df, "rtn:bits=2", "salient_jaccard", "layer");
    assert_eq!(j8.len(), n_layers);
    assert!(j8.iter().chain(&j2).all(|j| (0.0..=1.0).contains(j)));
    // 8-bit keeps the salient sets at least as well as 2-bit, on average
    assert!(j8.iter().sum::<f64>() >= j2.iter().sum::<f64>(), "{j8:?} vs {j2:?}");
    let agree = values(&df, "rtn:bits=8", "target_agreement", "total");
    assert!((0.0..=1.0).contains(&agree[0]));
    salient::count_figure(&df).unwrap();
    salient::overlap_figure(&df).unwrap();

    // target = reference, a layer subset, through the registry with the CLI's string form
    let entry = find("salient-neurons").unwrap();
    let sub = (entry.run)(&cmp, &serde_json::json!({"source": "random", "n_seqs": 2, "seq_len": 6, "ig_steps": 2, "layers": "1", "target": "reference"})).unwrap().to_frame().unwrap();
    assert_eq!(f64_values(&filter_eq(&filter_eq(&sub, "metric", "salient_count").unwrap(), "scope", "layer").unwrap(), "layer").unwrap(), vec![1.0; 3]);
    // agreement compares the models' own predictions, whatever the attribution target
    let own = (entry.run)(&cmp, &serde_json::json!({"source": "random", "n_seqs": 2, "seq_len": 6, "ig_steps": 2, "layers": "1"})).unwrap().to_frame().unwrap();
    assert_eq!(values(&sub, "rtn:bits=2", "target_agreement", "total"), values(&own, "rtn:bits=2", "target_agreement", "total"));
    // the reference's rows do not depend on the twins' targets
    assert_eq!(values(&sub, "none", "salient_count", "layer"), values(&own, "none", "salient_count", "layer"));
}

#[test]
fn salient_bad_input() {
    let (m, twins) = setup();
    let cmp = Comparison::new("llama", &m, &twins).unwrap();
    let o = opts();
    assert_eq!(invalid_what(&SalientNeurons::run(&cmp, &SalientOptions { threshold: 1.5, ..o.clone() }).unwrap_err()), "threshold");
    assert_eq!(invalid_what(&SalientNeurons::run(&cmp, &SalientOptions { threshold: -0.1, ..o.clone() }).unwrap_err()), "threshold");
    assert_eq!(invalid_what(&SalientNeurons::run(&cmp, &SalientOptions { ig_steps: 0, ..o.clone() }).unwrap_err()), "ig_steps");
    assert_eq!(invalid_what(&SalientNeurons::run(&cmp, &SalientOptions { layers: vec![0, 9], ..o.clone() }).unwrap_err()), "layer");
    assert_eq!(invalid_what(&SalientNeurons::run(&cmp, &SalientOptions { target: "twin".into(), ..o.clone() }).unwrap_err()), "target");
}
