//! Every analysis figure builder on the committed results: each figure draws exactly the rows its
//! caption promises (every point is a row of the intended metric and filter, no row is dropped or
//! drawn twice, each line or bar group is one spec), its title and axis titles are set, and the
//! heatmap panels of one kind share one colour scale. A builder that filters the wrong metric,
//! swaps x and series, drops the reference or gives each panel its own scale fails here.
use qi::analysis::tidy::{f64_values, filter_eq, read_parquet, str_values};
use qi::analysis::{ablation, activations, attention, attribution, calibration, features, induction, ioi, logit_lens, neurons, patching, prune_overlap, sae_compare, salient};
use serde_json::Value;
use std::path::PathBuf;

fn results(name: &str) -> polars::prelude::DataFrame {
    read_parquet(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/results").join(name)).unwrap()
}

fn json(p: &plotly::Plot) -> Value {
    serde_json::from_str(&p.to_json()).unwrap()
}

/// A value as a comparable key: numbers to 10 significant digits (3 and 3.0 agree, and the last
/// bit that a JSON round trip may change does not count), NaN/null as "NaN".
fn key(v: &Value) -> String {
    match v {
        Value::Number(n) => num_key(n.as_f64().unwrap()),
        Value::String(s) => s.clone(),
        Value::Null => "NaN".into(),
        other => other.to_string(),
    }
}

fn num_key(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else {
        format!("{x:.9e}")
    }
}

/// Title, x-axis title and y-axis title of a figure; none may be empty.
fn titles(v: &Value) -> (String, String, String) {
    let t = |k: &str, p: &str| v["layout"][k][p]["text"].as_str().unwrap_or_default().to_string();
    let out: (String, String, String) = (v["layout"]["title"]["text"].as_str().unwrap_or_default().to_string(), t("xaxis", "title"), t("yaxis", "title"));
    assert!(!out.0.is_empty() && !out.1.is_empty() && !out.2.is_empty(), "untitled figure or axis: {out:?}");
    out
}

/// The (trace name, x, y) points of a line or bar figure, sorted.
fn points(v: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for tr in v["data"].as_array().unwrap() {
        let name = tr["name"].as_str().unwrap().to_string();
        let (xs, ys) = (tr["x"].as_array().unwrap(), tr["y"].as_array().unwrap());
        assert_eq!(xs.len(), ys.len(), "{name}");
        assert!(!xs.is_empty(), "trace '{name}' is empty");
        out.extend(xs.iter().zip(ys).map(|(x, y)| (name.clone(), key(x), key(y))));
    }
    out.sort();
    out
}

/// The points a figure must draw: one per row of `df`, series from `series(row)`, x from column
/// `x` (numeric or string) and y from `value`.
fn expected(df: &polars::prelude::DataFrame, series: impl Fn(usize) -> String, x: &str) -> Vec<(String, String, String)> {
    let xs: Vec<String> = match str_values(df, x) {
        Ok(_) if df.column(x).unwrap().dtype().is_primitive_numeric() => f64_values(df, x).unwrap().into_iter().map(num_key).collect(),
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let ys = f64_values(df, "value").unwrap();
    let mut out: Vec<_> = (0..df.height()).map(|i| (series(i), xs[i].clone(), num_key(ys[i]))).collect();
    out.sort();
    out
}

fn col(df: &polars::prelude::DataFrame, c: &str) -> Vec<String> {
    str_values(df, c).unwrap()
}

/// A line or bar figure draws exactly the rows of `want`, one trace per series.
fn check_points(name: &str, fig: &plotly::Plot, want: &polars::prelude::DataFrame, series: &str, x: &str) -> (String, String, String) {
    assert!(want.height() > 0, "{name}: the committed table has no rows for it");
    let v = json(fig);
    let s = col(want, series);
    assert_eq!(points(&v), expected(want, |i| s[i].clone(), x), "{name}");
    let mut names: Vec<String> = v["data"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect();
    let mut distinct = s.clone();
    distinct.sort();
    distinct.dedup();
    names.sort();
    assert_eq!(names, distinct, "{name}: one trace per {series}");
    titles(&v)
}

#[test]
fn line_and_bar_figures_draw_exactly_their_rows() {
    let act = results("02_activations.parquet");
    let (metric, component) = (col(&act, "metric")[0].clone(), col(&act, "component")[0].clone());
    let t = check_points("activations", &activations::figure(&act, &metric, &component).unwrap(), &filter_eq(&filter_eq(&act, "metric", &metric).unwrap(), "component", &component).unwrap(), "spec", "layer");
    assert!(t.0.starts_with(&format!("{component}:")) && t.1 == "layer", "{t:?}");
    assert_eq!(activations::figures(&act).unwrap().len(), qi::analysis::tidy::distinct_str(&act, "metric").unwrap().len() * qi::analysis::tidy::distinct_str(&act, "component").unwrap().len());

    let lens = results("04_logit_lens.parquet");
    let all = filter_eq(&lens, "category", "all").unwrap();
    for m in ["kl_ref_quant", "top1_agreement", "target_prob"] {
        let t = check_points(m, &logit_lens::figure(&lens, m).unwrap(), &filter_eq(&all, "metric", m).unwrap(), "spec", "layer");
        assert_eq!(t.1, "layer");
    }
    // the category bars are at the last layer only
    let kl = filter_eq(&lens, "metric", "kl_ref_quant").unwrap();
    let last = f64_values(&kl, "layer").unwrap().into_iter().fold(0.0, f64::max);
    let t = check_points("lens categories", &logit_lens::category_figure(&lens, "kl_ref_quant").unwrap(), &qi::analysis::tidy::filter_num_eq(&kl, "layer", last).unwrap(), "spec", "category");
    assert!(t.0.contains(&format!("({last})")), "{t:?}");

    let ioi_df = results("04_ioi_smollm2.parquet");
    check_points("ioi bars", &ioi::logit_diff_bars(&ioi_df).unwrap(), &filter_eq(&ioi_df, "metric", "logit_diff").unwrap(), "method", "spec");

    let ind = results("05_induction_smollm2.parquet");
    let t = check_points("induction survival", &induction::survival_figure(&ind).unwrap(), &filter_eq(&ind, "metric", "survival").unwrap(), "detector", "spec");
    assert_eq!(t.1, "quantization");

    let pat = results("06_patching_smollm2.parquet");
    check_points("repair", &patching::repair_figure(&pat).unwrap(), &filter_eq(&pat, "metric", "repair_recovery").unwrap(), "curve", "k");
    check_points("sites", &patching::site_figure(&pat).unwrap(), &filter_eq(&pat, "metric", "recovery").unwrap(), "spec", "layer");

    let neu = results("08_neurons_smollm2.parquet");
    check_points("dead", &neurons::dead_figure(&neu).unwrap(), &filter_eq(&neu, "metric", "dead_fraction").unwrap(), "spec", "layer");

    let sal = results("08_salient_smollm2.parquet");
    let per_layer = |m: &str| filter_eq(&filter_eq(&sal, "metric", m).unwrap(), "scope", "layer").unwrap();
    check_points("salient count", &salient::count_figure(&sal).unwrap(), &per_layer("salient_count"), "spec", "layer");
    check_points("salient overlap", &salient::overlap_figure(&sal).unwrap(), &per_layer("salient_jaccard"), "spec", "layer");

    let feat = results("07_sae_features_smollm2.parquet");
    check_points("feature AUCs", &features::prediction_figure(&feat).unwrap(), &filter_eq(&feat, "metric", "survival_auc").unwrap(), "spec", "predictors");
    // survival lines are named "method · category"
    let shares = filter_eq(&feat, "metric", "share").unwrap();
    let (m, c) = (col(&shares, "method"), col(&shares, "category"));
    let v = json(&features::survival_figure(&feat).unwrap());
    assert_eq!(points(&v), expected(&shares, |i| format!("{} · {}", m[i], c[i]), "bits"));
    assert_eq!(titles(&v).1, "bits");
}

#[test]
fn aggregated_figures_draw_their_aggregates() {
    // correlation histogram: the mean over layers of each (spec, r) bin
    let neu = results("08_neurons_smollm2.parquet");
    let h = filter_eq(&neu, "metric", "corr_hist").unwrap();
    let (s, r, v) = (col(&h, "spec"), f64_values(&h, "r").unwrap(), f64_values(&h, "value").unwrap());
    let mut bins: std::collections::BTreeMap<(String, String), (f64, usize)> = Default::default();
    for i in 0..v.len() {
        let e = bins.entry((s[i].clone(), num_key(r[i]))).or_default();
        e.0 += v[i];
        e.1 += 1;
    }
    let layers = bins.values().map(|e| e.1).max().unwrap();
    assert!(layers > 1, "several layers per bin, so a sum and a mean differ");
    let fig = json(&neurons::correlation_figure(&neu).unwrap());
    let got = points(&fig);
    assert_eq!(got.len(), bins.len());
    for (name, x, y) in &got {
        let (sum, n) = bins[&(name.clone(), x.clone())];
        // points carry 10 significant digits
        assert!((y.parse::<f64>().unwrap() - sum / n as f64).abs() <= 1e-9 * (sum / n as f64).abs(), "{name} at r = {x}: {y} vs mean {}", sum / n as f64);
    }
    assert_eq!(titles(&fig).1, "Pearson r");

    // reliability diagram: one line per spec, x = the bin's mean confidence
    let cal = results("08_calibration_smollm2.parquet");
    let fig = json(&calibration::reliability_figure(&cal).unwrap());
    let specs: std::collections::BTreeSet<String> = col(&cal, "spec").into_iter().collect();
    let names: std::collections::BTreeSet<String> = fig["data"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).map(str::to_string).collect();
    assert!(specs.is_subset(&names), "every spec has a line: {specs:?} vs {names:?}");
    for tr in fig["data"].as_array().unwrap().iter().filter(|t| specs.contains(t["name"].as_str().unwrap_or(""))) {
        for (x, y) in tr["x"].as_array().unwrap().iter().zip(tr["y"].as_array().unwrap()) {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y), "confidence and accuracy are shares: ({x}, {y})");
        }
    }
    let t = titles(&fig);
    assert_eq!((t.1.as_str(), t.2.as_str()), ("mean confidence in bin", "accuracy in bin"));
}

/// Heatmap panels: their z grids, and the (zmin, zmax, showscale) of each.
fn panels(v: &Value) -> Vec<(String, Vec<Vec<f64>>, f64, f64, bool)> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let z: Vec<Vec<f64>> = t["z"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()).collect();
            (t["name"].as_str().unwrap().to_string(), z, t["zmin"].as_f64().unwrap(), t["zmax"].as_f64().unwrap(), t["showscale"].as_bool().unwrap())
        })
        .collect()
}

/// Each cell of `grid` is the row of `df` at (layer, head); cells without a row are empty.
fn assert_grid(name: &str, grid: &[Vec<f64>], df: &polars::prelude::DataFrame) {
    let (l, h, v) = (f64_values(df, "layer").unwrap(), f64_values(df, "head").unwrap(), f64_values(df, "value").unwrap());
    assert!(!v.is_empty(), "{name}: no rows");
    let mut seen = 0;
    for (li, row) in grid.iter().enumerate() {
        for (hi, &z) in row.iter().enumerate() {
            match (0..v.len()).find(|&i| l[i] as usize == li && h[i] as usize == hi) {
                Some(i) => {
                    assert_eq!(num_key(z), num_key(v[i]), "{name} L{li}H{hi}: {z} vs {}", v[i]);
                    seen += 1;
                }
                None => assert!(z.is_nan(), "{name} L{li}H{hi}: drawn without a row"),
            }
        }
    }
    assert_eq!(seen, v.len(), "{name}: every row is a cell");
}

#[test]
fn heatmaps_draw_their_grids_on_one_scale_per_kind() {
    let att = results("03_attention.parquet");
    let (nl, nh) = (f64_values(&att, "layer").unwrap().into_iter().fold(0.0, f64::max) as usize + 1, f64_values(&att, "head").unwrap().into_iter().fold(0.0, f64::max) as usize + 1);
    let js = filter_eq(&att, "metric", "js_divergence").unwrap();
    let v = json(&attention::js_heatmaps(&att, nl, nh).unwrap());
    let ps = panels(&v);
    let specs = qi::analysis::tidy::distinct_str(&js, "spec").unwrap();
    assert_eq!(ps.iter().map(|p| p.0.clone()).collect::<Vec<_>>(), specs);
    let all: Vec<f64> = f64_values(&js, "value").unwrap().into_iter().filter(|x| x.is_finite()).collect();
    let (lo, hi) = (all.iter().copied().fold(f64::INFINITY, f64::min), all.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    for (name, z, zmin, zmax, _) in &ps {
        assert_grid(name, z, &filter_eq(&js, "spec", name).unwrap());
        assert_eq!((*zmin, *zmax), (lo, hi), "{name}: every panel on the range of all panels");
    }
    assert_eq!(ps.iter().filter(|p| p.4).count(), 1, "one colour bar");

    // reference, twin and their difference: two kinds, two scales
    let twin = specs.iter().find(|s| *s != "none").unwrap().clone();
    let metric = "prev_token";
    let v = json(&attention::score_heatmaps(&att, metric, &twin, nl, nh).unwrap());
    let ps = panels(&v);
    let m = filter_eq(&att, "metric", metric).unwrap();
    assert_grid("reference", &ps[0].1, &filter_eq(&m, "spec", "none").unwrap());
    assert_grid(&twin, &ps[1].1, &filter_eq(&m, "spec", &twin).unwrap());
    assert_eq!((ps[0].2, ps[0].3), (ps[1].2, ps[1].3), "reference and twin share a scale");
    for li in 0..nl {
        for hi in 0..nh {
            let (d, want) = (ps[2].1[li][hi], ps[1].1[li][hi] - ps[0].1[li][hi]);
            assert!(d.is_nan() && want.is_nan() || (d - want).abs() <= 1e-12 * want.abs().max(1e-12), "difference is twin − reference at L{li}H{hi}: {d} vs {want}");
        }
    }
    assert_eq!(ps[2].2, -ps[2].3, "the difference is centred on 0");
    assert_eq!(ps.iter().map(|p| p.4).collect::<Vec<_>>(), [false, true, true]);

    // ablation: one panel per ablation × target, all differences on one symmetric scale
    let abl = results("06_ablation_smollm2.parquet");
    let d = filter_eq(&abl, "metric", "ablation_delta").unwrap();
    let (nl, nh) = (f64_values(&d, "layer").unwrap().into_iter().fold(0.0, f64::max) as usize + 1, f64_values(&d, "head").unwrap().into_iter().fold(0.0, f64::max) as usize + 1);
    let v = json(&ablation::importance_figure(&abl, nl, nh).unwrap());
    let ps = panels(&v);
    let m = f64_values(&d, "value").unwrap().into_iter().filter(|x| x.is_finite()).fold(0.0, |a: f64, x| a.max(x.abs()));
    for (name, z, zmin, zmax, _) in &ps {
        let (how, target) = name.split_once(" ablation, ").unwrap();
        let target = target.trim_end_matches(" loss");
        assert_grid(name, z, &filter_eq(&filter_eq(&d, "ablation", how).unwrap(), "target", target).unwrap());
        assert_eq!((*zmin, *zmax), (-m, m), "{name}");
    }
    let kinds = qi::analysis::tidy::distinct_str(&d, "ablation").unwrap().len() * qi::analysis::tidy::distinct_str(&d, "target").unwrap().len();
    assert_eq!(ps.len(), kinds);
    assert_eq!(v["layout"]["yaxis"]["title"]["text"], "layer");
    assert_eq!(v["layout"]["xaxis"]["title"]["text"], "head");

    // IOI patching: one difference panel per twin
    let ioi_df = results("04_ioi_smollm2.parquet");
    let fr = filter_eq(&ioi_df, "metric", "fraction_recovered").unwrap();
    let (nl, nh) = (f64_values(&ioi_df, "layer").unwrap().into_iter().filter(|x| x.is_finite()).fold(0.0, f64::max) as usize + 1, f64_values(&ioi_df, "head").unwrap().into_iter().filter(|x| x.is_finite()).fold(0.0, f64::max) as usize + 1);
    let ps = panels(&json(&ioi::patching_heatmaps(&ioi_df, nl, nh).unwrap()));
    assert_eq!(ps.len(), qi::analysis::tidy::distinct_str(&fr, "spec").unwrap().len());
    for (name, z, ..) in &ps {
        assert_grid(name, z, &filter_eq(&fr, "spec", name).unwrap());
    }
}

#[test]
fn bars_of_several_metrics_keep_each_metric_apart() {
    let po = results("07_prune_overlap_smollm2.parquet");
    let mut want = filter_eq(&po, "metric", "jaccard_damaged").unwrap();
    for m in ["jaccard_chance", "spearman_damage"] {
        want.vstack_mut(&filter_eq(&po, "metric", m).unwrap()).unwrap();
    }
    let t = check_points("prune overlap", &prune_overlap::overlap_figure(&po).unwrap(), &want, "metric", "spec");
    assert_eq!(t.1, "quantizer");

    let sc = results("07_sae_compare_smollm2.parquet");
    check_points("firing classes", &sae_compare::frequency_figure(&sc).unwrap(), &filter_eq(&sc, "metric", "feature_share").unwrap(), "spec", "class");
    // similarity bars: each twin's own rows, the seed control, and the random null once
    let v = json(&sae_compare::similarity_figure(&sc).unwrap());
    let metrics = ["best_match_cos", "best_match_share", "mnn_share", "cka", "cka_debiased"];
    let mut rows = Vec::new();
    for m in metrics {
        let d = filter_eq(&sc, "metric", m).unwrap();
        let (spec, null, val) = (col(&d, "spec"), col(&d, "null"), f64_values(&d, "value").unwrap());
        let first_random = (0..d.height()).find(|&i| null[i] == "random").map(|i| spec[i].clone());
        for i in 0..d.height() {
            let series = match null[i].as_str() {
                "none" => spec[i].clone(),
                "seed" => "reference, other seed".into(),
                _ if Some(&spec[i]) == first_random.as_ref() => "random null".into(),
                _ => continue,
            };
            rows.push((series, m.to_string(), num_key(val[i])));
        }
    }
    rows.sort();
    assert_eq!(points(&v), rows);
    assert_eq!(titles(&v).1, "statistic");
}

/// The (name, x, y) points of a paired scatter, without its y = x guide.
fn scatter_points(v: &Value) -> Vec<(String, String, String)> {
    let mut p = points(v);
    p.retain(|(name, ..)| name != "y = x");
    p
}

#[test]
fn paired_scatters_pair_each_head_with_its_own_reference() {
    // induction: x = the reference's score of the same head, y = the twin's
    let ind = results("05_induction_smollm2.parquet");
    let d = filter_eq(&ind, "metric", "stripe_score").unwrap();
    let per_seed = f64_values(&d, "seed").map(|s| s.iter().any(|x| x.is_finite())).unwrap_or(false);
    // a per-seed table pairs heads within a seed; the committed one is checked on seed 0
    let d = if per_seed { qi::analysis::tidy::filter_num_eq(&d, "seed", 0.0).unwrap() } else { d };
    let (spec, l, h, v) = (col(&d, "spec"), f64_values(&d, "layer").unwrap(), f64_values(&d, "head").unwrap(), f64_values(&d, "value").unwrap());
    let reference: std::collections::HashMap<(i64, i64), f64> = (0..d.height()).filter(|&i| spec[i] == "none").map(|i| ((l[i] as i64, h[i] as i64), v[i])).collect();
    let mut want: Vec<_> = (0..d.height()).filter(|&i| spec[i] != "none").map(|i| (spec[i].clone(), num_key(reference[&(l[i] as i64, h[i] as i64)]), num_key(v[i]))).collect();
    want.sort();
    let fig = json(&induction::scatter_figure(&d, "stripe").unwrap());
    assert_eq!(scatter_points(&fig), want);
    let t = titles(&fig);
    assert_eq!((t.1.as_str(), t.2.as_str()), ("reference", "quantized twin"));

    // attribution: x = the first-order estimate, y = the measured damage, same head and twin
    let at = results("06_attribution_smollm2.parquet");
    let key = |d: &polars::prelude::DataFrame| -> Vec<(String, i64, i64, f64)> {
        let (s, l, h, v) = (col(d, "spec"), f64_values(d, "layer").unwrap(), f64_values(d, "head").unwrap(), f64_values(d, "value").unwrap());
        (0..d.height()).map(|i| (s[i].clone(), l[i] as i64, h[i] as i64, v[i])).collect()
    };
    let attr: std::collections::HashMap<(String, i64, i64), f64> = key(&filter_eq(&at, "metric", "attribution").unwrap()).into_iter().map(|(s, l, h, v)| ((s, l, h), v)).collect();
    let mut want: Vec<_> = key(&filter_eq(&at, "metric", "measured_delta").unwrap())
        .into_iter()
        .filter_map(|(s, l, h, v)| attr.get(&(s.clone(), l, h)).map(|a| (s, num_key(*a), num_key(v))))
        .collect();
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(scatter_points(&json(&attribution::attribution_figure(&at).unwrap())), want);

    // importance vs drift: x = the head's mean-ablation importance on the induction loss
    let ab = results("06_ablation_smollm2.parquet");
    let imp = filter_eq(&filter_eq(&filter_eq(&ab, "metric", "ablation_delta").unwrap(), "target", "induction").unwrap(), "ablation", "mean").unwrap();
    let imp: std::collections::HashMap<(i64, i64), f64> = key(&imp).into_iter().map(|(_, l, h, v)| ((l, h), v)).collect();
    let mut want: Vec<_> = key(&filter_eq(&ab, "metric", "drift_js").unwrap()).into_iter().filter_map(|(s, l, h, v)| imp.get(&(l, h)).map(|x| (s, num_key(*x), num_key(v)))).collect();
    want.sort();
    assert!(!want.is_empty());
    let fig = json(&ablation::importance_drift_figure(&ab, "mean", "drift_js").unwrap());
    assert_eq!(points(&fig), want);
    assert_eq!(titles(&fig).2, "drift_js");
}
