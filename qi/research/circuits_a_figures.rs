//! Figures and headline numbers of the circuit analyses (activations, attention, logit lens, IOI)
//! from their tidy results in `data/results/` (written by `qi analyze … --out`), without rerunning
//! the models. Figures get the notebooks' names (`02_…`, `03_…`, `04_…`).
//!
//!     cargo run -p qi --example circuits_a_figures --target x86_64-unknown-linux-gnu [RESULTS_DIR]
use anyhow::Result;
use qi::analysis::tidy::{distinct_str, f64_values, filter_eq, read_parquet, str_values};
use qi::analysis::{activations, attention, ioi, logit_lens};
use qi::polars::prelude::DataFrame;

fn values(df: &DataFrame, filters: &[(&str, &str)]) -> Result<Vec<f64>> {
    let mut d = df.clone();
    for (c, v) in filters {
        d = filter_eq(&d, c, v)?;
    }
    f64_values(&d, "value")
}

fn save(plot: &qi::plotly::Plot, name: &str) -> Result<()> {
    let p = qi::save_figure(plot, name)?;
    println!("saved {}", p.svg.display());
    Ok(())
}

fn main() -> Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "data/results".into()));
    let (n_layers, n_heads) = (30, 9);

    let act = read_parquet(&dir.join("02_activations.parquet"))?;
    for (m, c) in [("rel_l2", "resid_post"), ("cosine", "resid_post"), ("rel_l2", "attn_out"), ("rel_l2", "mlp_out")] {
        save(&activations::figure(&act, m, c)?, &format!("02_activation_similarity_{m}_{c}"))?;
    }
    let specs = distinct_str(&act, "spec")?;
    println!("\n== activations (resid_post drift by layer 0 / 10 / 20 / 29; mean attn_out, mlp_out drift)");
    for s in &specs {
        let d = values(&act, &[("spec", s), ("component", "resid_post"), ("metric", "rel_l2")])?;
        let c = values(&act, &[("spec", s), ("component", "resid_post"), ("metric", "cosine")])?;
        let a = qi::metrics::mean(&values(&act, &[("spec", s), ("component", "attn_out"), ("metric", "rel_l2")])?);
        let m = qi::metrics::mean(&values(&act, &[("spec", s), ("component", "mlp_out"), ("metric", "rel_l2")])?);
        let peak = (0..d.len()).max_by(|&x, &y| d[x].total_cmp(&d[y])).unwrap();
        println!("{s}: drift {:.3} {:.3} {:.3} {:.3} (peak {:.3} at layer {peak}); final cosine {:.4}; attn_out {a:.3}, mlp_out {m:.3}", d[0], d[10], d[20], d[29], d[peak], c[29]);
    }

    let att = read_parquet(&dir.join("03_attention.parquet"))?;
    save(&attention::js_heatmaps(&att, n_layers, n_heads)?, "03_attention_patterns_js_divergence")?;
    println!("\n== attention");
    let score = |s: &str, m: &str| values(&att, &[("spec", s), ("metric", m)]);
    let (p_ref, d_ref) = (score("none", "prev_token")?, score("none", "duplicate_token")?);
    let argmax = |v: &[f64]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    let (tp, td) = (argmax(&p_ref), argmax(&d_ref));
    println!("reference: prev-token head L{}H{} {:.3}; duplicate-token head L{}H{} {:.3}", tp / n_heads, tp % n_heads, p_ref[tp], td / n_heads, td % n_heads, d_ref[td]);
    let mut worst = (String::new(), -1.0);
    for s in specs.iter().filter(|s| *s != "none") {
        let js = score(s, "js_divergence")?;
        let (p, d) = (score(s, "prev_token")?, score(s, "duplicate_token")?);
        let j = argmax(&js);
        let layer_means: Vec<f64> = (0..n_layers).map(|l| qi::metrics::mean(&js[l * n_heads..(l + 1) * n_heads])).collect();
        let mean_js = qi::metrics::mean(&js);
        println!(
            "{s}: mean JS {:.4}, max {:.3} at L{}H{}, {} heads > 0.1, most-moved layer {}; prev head {:.3}, dup head {:.3}; r(prev) {:.3}, r(dup) {:.3}",
            mean_js, js[j], j / n_heads, j % n_heads, js.iter().filter(|&&v| v > 0.1).count(), argmax(&layer_means),
            p[tp], d[td], qi::metrics::pearson(&p_ref, &p), qi::metrics::pearson(&d_ref, &d)
        );
        if mean_js > worst.1 {
            worst = (s.clone(), mean_js);
        }
    }
    save(&attention::score_heatmaps(&att, "prev_token", &worst.0, n_layers, n_heads)?, "03_attention_patterns_prev_token")?;
    save(&attention::score_heatmaps(&att, "duplicate_token", &worst.0, n_layers, n_heads)?, "03_attention_patterns_duplicate_token")?;

    let lens = read_parquet(&dir.join("04_logit_lens.parquet"))?;
    for (m, name) in [("kl_ref_quant", "kl_by_layer"), ("target_rank", "target_rank_by_layer"), ("kl_to_final", "kl_to_final_by_layer")] {
        save(&logit_lens::figure(&lens, m)?, &format!("04_logit_lens_{name}"))?;
    }
    println!("\n== logit lens (layer 29 = output)");
    for s in &specs {
        let v = |m: &str| values(&lens, &[("spec", s), ("metric", m)]);
        let (rank, prob, klf) = (v("target_rank")?, v("target_prob")?, v("kl_to_final")?);
        let settle = (0..klf.len()).find(|&l| klf[l..].iter().all(|&x| x < 1.0));
        print!("{s}: target rank L0 {:.0} L15 {:.1} L25 {:.1} out {:.2}, p out {:.3}, KL-to-own-output < 1 from layer {settle:?}", rank[0], rank[15], rank[25], rank[29], prob[29]);
        if s != "none" {
            let (kl, t1, t5) = (v("kl_ref_quant")?, v("top1_agreement")?, v("top5_agreement")?);
            let peak = argmax(&kl);
            print!("; KL(ref‖q) out {:.3} (max {:.3} at L{peak}), top1 {:.2}, top5 {:.2}", kl[29], kl[peak], t1[29], t5[29]);
        }
        println!();
    }

    let io = read_parquet(&dir.join("04_ioi.parquet"))?;
    save(&ioi::logit_diff_bars(&io)?, "04_logit_lens_ioi_logit_diff")?;
    save(&ioi::patching_heatmaps(&io, n_layers, n_heads)?, "04_logit_lens_ioi_patching")?;
    println!("\n== IOI");
    let ld = filter_eq(&io, "metric", "logit_diff")?;
    let (ss, vs, lo, hi) = (str_values(&ld, "spec")?, f64_values(&ld, "value")?, f64_values(&ld, "ci_low")?, f64_values(&ld, "ci_high")?);
    let acc = values(&io, &[("metric", "accuracy")])?;
    for i in 0..ss.len() {
        println!("{}: logit diff {:.3} [{:.3}, {:.3}], accuracy {:.3}", ss[i], vs[i], lo[i], hi[i], acc[i]);
    }
    let fr = filter_eq(&io, "metric", "fraction_recovered")?;
    for s in distinct_str(&fr, "spec")? {
        let d = filter_eq(&fr, "spec", &s)?;
        let (l, h, v) = (f64_values(&d, "layer")?, f64_values(&d, "head")?, f64_values(&d, "value")?);
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
        let top: Vec<String> = idx.iter().take(4).map(|&i| format!("L{}H{} {:.2}", l[i], h[i], v[i])).collect();
        println!("{s}: {} heads patched; top {}; sum over patched heads {:.2}", v.len(), top.join(", "), v.iter().sum::<f64>());
    }
    Ok(())
}
