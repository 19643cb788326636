//! Circuit analyses (issue #5, part A): activation similarity, attention patterns, logit lens, IOI.
//! Every path on the tiny Llama fixture with `rtn:bits=4` and `rtn:bits=2` twins; the text paths
//! (bundled prompt file, IOI templates) on SmolLM2, skipped with a printed reason when the shared
//! folder is absent.
mod common;
use common::{fixture, temp_dir};
use qi::analysis::tidy::{f64_values, filter_eq, str_values};
use qi::analysis::{activations, attention, find, ioi, logit_lens, run_seeds, Comparison, Row, Tidy};
use qi::quant::QuantSpec;
use qi::quantize::QuantizeOptions;
use qi::hooks::{interventions, names, Hooks};
use qi::{load_model, Batch, HookedTransformer};
use serde_json::json;
use std::sync::OnceLock;

type Twins = Vec<(QuantSpec, HookedTransformer)>;

fn tiny() -> &'static (HookedTransformer, Twins) {
    static T: OnceLock<(HookedTransformer, Twins)> = OnceLock::new();
    T.get_or_init(|| {
        let m = load_model(fixture("llama").to_str().unwrap()).unwrap();
        let specs = QuantSpec::parse_list("rtn:bits=4; rtn:bits=2").unwrap();
        let t = qi::twin_cache::twins(&m, &specs, &QuantizeOptions::default(), None).unwrap();
        (m, t)
    })
}

fn cmp() -> Comparison<'static> {
    let (m, t) = tiny();
    Comparison::new("llama-fixture", m, t).unwrap()
}

/// SmolLM2 with an `rtn:bits=4` twin (from the shared cache when present), or None (printed).
fn smol() -> Option<&'static (HookedTransformer, Twins)> {
    static S: OnceLock<Option<(HookedTransformer, Twins)>> = OnceLock::new();
    S.get_or_init(|| {
        let Some(p) = qi::shared::shared_path(qi::shared::SMOLLM2_GGUF) else {
            eprintln!("skipped: the shared folder with SmolLM2 is absent (set QI_SHARED)");
            return None;
        };
        let m = load_model(p.to_str().unwrap()).unwrap();
        let specs = QuantSpec::parse_list("rtn:bits=4").unwrap();
        let root = qi::twin_cache::cache_root();
        let t = qi::twin_cache::twins(&m, &specs, &QuantizeOptions::default(), Some(&root)).unwrap();
        Some((m, t))
    })
    .as_ref()
}

/// Rows of random tokens of different lengths (the batch of 3 is right-padded).
fn ragged_rows(model: &HookedTransformer) -> Vec<Vec<u32>> {
    let mut rng = qi::rng::Rng::new(7);
    [12, 7, 10].iter().map(|&n| rng.tokens(n, model.cfg.d_vocab, &[])).collect()
}

/// Asserts two tables agree row by row (labels exactly, values and CIs to `tol`).
fn assert_same(a: &Tidy, b: &Tidy, tol: f64) {
    assert_eq!(a.rows.len(), b.rows.len());
    for (x, y) in a.rows.iter().zip(&b.rows) {
        let strip = |r: &Row| Row { value: 0.0, ci: None, ..r.clone() };
        assert_eq!(strip(x), strip(y));
        let close = |u: f64, v: f64| (u.is_nan() && v.is_nan()) || (u - v).abs() <= tol * (1.0 + u.abs());
        assert!(close(x.value, y.value), "{} {:?}/{:?}: {} vs {}", x.metric, x.layer, x.head, x.value, y.value);
        if let (Some(c), Some(d)) = (x.ci, y.ci) {
            assert!(close(c.0, d.0) && close(c.1, d.1), "{} CI {c:?} vs {d:?}", x.metric);
        }
    }
}

fn values(t: &Tidy, metric: &str, spec: &str) -> Vec<f64> {
    t.rows.iter().filter(|r| r.metric == metric && r.spec == spec).map(|r| r.value).collect()
}

// ---------------------------------------------------------------- activations

#[test]
fn activations_compare_every_layer_and_component_and_rank_bit_widths() {
    let c = cmp();
    let entry = find("activations").unwrap();
    let opts = json!({"text": "random", "n_seqs": 3, "seq_len": 16, "batch_size": 2, "n_boot": 200});
    let t = run_seeds(&entry, &c, &opts, &[5]).unwrap();
    // 2 twins × 2 layers × 4 components × 3 metrics
    assert_eq!(t.len(), 2 * 2 * 4 * 3);
    let df = t.to_frame().unwrap();
    let cols: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    for col in ["model", "method", "spec", "bits", "layer", "component", "metric", "value", "ci_low", "ci_high", "n", "seed"] {
        assert!(cols.contains(&col.to_string()), "missing column {col}: {cols:?}");
    }
    let at = |spec: &str, comp: &str, metric: &str, layer: usize| {
        t.rows.iter().find(|r| r.spec == spec && r.metric == metric && r.layer == Some(layer) && r.labels[0].1 == comp.into()).unwrap().clone()
    };
    // embeddings are not quantized: layer 0's input is identical
    let r = at("rtn:bits=4", "resid_pre", "cosine", 0);
    assert!((r.value - 1.0).abs() < 1e-5 && r.n == Some(48), "{r:?}");
    assert!(at("rtn:bits=2", "resid_pre", "rel_l2", 0).value.abs() < 1e-5);
    // 4 bits drift less than 2 bits at the output
    let (c4, c2) = (at("rtn:bits=4", "resid_post", "cosine", 1), at("rtn:bits=2", "resid_post", "cosine", 1));
    assert!(c4.value > c2.value && c2.value < 0.9999, "{} vs {}", c4.value, c2.value);
    let d = at("rtn:bits=2", "mlp_out", "rel_l2", 1);
    let (lo, hi) = d.ci.unwrap();
    assert!(d.value > 0.0 && lo <= d.value && d.value <= hi);
    for r in &t.rows {
        if r.metric != "rel_l2" {
            assert!(r.value <= 1.0 + 1e-5 && r.value >= -1.0 - 1e-5, "{r:?}");
        }
    }
    // figures: one per metric × component
    let figs = activations::figures(&df).unwrap();
    assert_eq!(figs.len(), 12);
    assert!(figs[0].1.to_json().contains("rtn:bits=2"));
}

#[test]
fn activations_ignore_padding_and_are_deterministic() {
    let c = cmp();
    let rows = ragged_rows(c.reference);
    let o = |bs| activations::ActivationOptions { batch_size: bs, n_boot: 100, layers: vec![1], components: vec!["resid_post".into(), "attn_out".into()], ..Default::default() };
    let one_by_one = activations::similarity_on_rows(&c, &rows, &o(1)).unwrap();
    let padded = activations::similarity_on_rows(&c, &rows, &o(3)).unwrap();
    assert_eq!(one_by_one.len(), 2 * 2 * 3);
    assert_eq!(one_by_one.rows[0].n, Some(29));
    assert_same(&one_by_one, &padded, 1e-4);
    let entry = find("activations").unwrap();
    let opts = json!({"text": "random", "n_seqs": 2, "seq_len": 8, "n_boot": 50, "layers": [0]});
    let a = run_seeds(&entry, &c, &opts, &[3]).unwrap().to_frame().unwrap();
    let b = run_seeds(&entry, &c, &opts, &[3]).unwrap().to_frame().unwrap();
    assert!(a.equals_missing(&b));
}

#[test]
fn activations_bad_input_is_named() {
    let c = cmp();
    let entry = find("activations").unwrap();
    let err = |o| run_seeds(&entry, &c, &o, &[0]).unwrap_err().to_string();
    let e = err(json!({"text": "random", "layers": [2]}));
    assert!(e.contains("layer") && e.contains("2 layers"), "{e}");
    let e = err(json!({"text": "random", "components": ["resid_mid"]}));
    assert!(e.contains("components") && e.contains("resid_mid"), "{e}");
    let e = err(json!({"text": "random", "batch_size": 0}));
    assert!(e.contains("batch_size"), "{e}");
    let e = err(json!({"txt": "random"}));
    assert!(e.contains("'txt'"), "{e}");
    // the tiny fixture has no tokenizer: text sources need one
    assert!(err(json!({"text": "wikitext2", "seq_len": 16})).contains("tokenizer"));
}

// ---------------------------------------------------------------- attention

#[test]
fn attention_scores_every_head_of_every_model() {
    let c = cmp();
    let entry = find("attention").unwrap();
    let t = run_seeds(&entry, &c, &json!({"n_seqs": 3, "seq_len": 12, "batch_size": 2}), &[1]).unwrap();
    let cells = 2 * 4;
    // reference: 2 scores per head; twins: 3 (with JS)
    assert_eq!(t.len(), cells * 2 + 2 * cells * 3);
    for r in &t.rows {
        match r.metric.as_str() {
            // [BOS] + 12 + 12: 24 queries after position 0 (the JS mean skips query 0, whose row
            // is always [1, 0, …]), 24 with a previous token, ≥ 12 with an earlier duplicate
            "js_divergence" => assert!(r.value > 0.0 && r.value <= std::f64::consts::LN_2 + 1e-6 && r.n == Some(3 * 24), "{r:?}"),
            "prev_token" => assert!(r.value >= 0.0 && r.value <= 1.0 + 1e-6 && r.n == Some(3 * 24), "{r:?}"),
            "duplicate_token" => assert!(r.value >= 0.0 && r.value <= 1.0 + 1e-6 && r.n.unwrap() >= 3 * 12, "{r:?}"),
            m => panic!("unexpected metric {m}"),
        }
    }
    // more bits, closer patterns
    let (j4, j2) = (values(&t, "js_divergence", "rtn:bits=4"), values(&t, "js_divergence", "rtn:bits=2"));
    assert!(qi::metrics::mean(&j4) < qi::metrics::mean(&j2), "{j4:?} vs {j2:?}");
    let df = t.to_frame().unwrap();
    let h = attention::score_heatmaps(&df, "prev_token", "rtn:bits=2", 2, 4).unwrap().to_json();
    assert!(h.contains("rtn:bits=2 − reference") && h.contains("\"xaxis\":\"x3\""));
    assert!(attention::js_heatmaps(&df, 2, 4).unwrap().to_json().contains("\"xaxis\":\"x2\""));
}

#[test]
fn attention_ignores_padding_and_is_deterministic() {
    let c = cmp();
    let rows = ragged_rows(c.reference);
    let o = |bs| attention::AttentionOptions { batch_size: bs, ..Default::default() };
    let one_by_one = attention::patterns_on_rows(&c, &rows, &o(1)).unwrap();
    assert_same(&one_by_one, &attention::patterns_on_rows(&c, &rows, &o(3)).unwrap(), 1e-5);
    let entry = find("attention").unwrap();
    let opts = json!({"n_seqs": 2, "seq_len": 6});
    assert!(run_seeds(&entry, &c, &opts, &[2]).unwrap().to_frame().unwrap().equals_missing(&run_seeds(&entry, &c, &opts, &[2]).unwrap().to_frame().unwrap()));
    // bad input
    assert!(attention::patterns_on_rows(&c, &[vec![3]], &o(1)).unwrap_err().to_string().contains("fewer than 2 tokens"));
    assert!(run_seeds(&entry, &c, &json!({"batch_size": 0}), &[0]).unwrap_err().to_string().contains("batch_size"));
    assert!(run_seeds(&entry, &c, &json!({"seq_len": 1000}), &[0]).unwrap_err().to_string().contains("context"));
}

// ---------------------------------------------------------------- logit lens

fn lens_prompts(model: &HookedTransformer) -> Vec<logit_lens::LensPrompt> {
    let mut rng = qi::rng::Rng::new(11);
    [5, 9, 3, 7, 6]
        .iter()
        .enumerate()
        .map(|(i, &n)| logit_lens::LensPrompt {
            prompt: format!("p{i}"),
            category: "random".into(),
            ids: rng.tokens(n, model.cfg.d_vocab, &[]),
            target: rng.below(model.cfg.d_vocab as u64) as u32,
        })
        .collect()
}

#[test]
fn logit_lens_layers_end_at_the_model_output() {
    let c = cmp();
    let prompts = lens_prompts(c.reference);
    let o = |bs| logit_lens::LogitLensOptions { batch_size: bs, n_boot: 100, by_category: false, ..Default::default() };
    let t = logit_lens::lens_on_prompts(&c, &prompts, &o(2)).unwrap();
    // 3 models × 2 layers × 3 metrics + 2 twins × 2 layers × 3 comparisons
    assert_eq!(t.len(), 3 * 2 * 3 + 2 * 2 * 3);
    // the last layer's lens is the model's output: KL to final 0, ranks as in the forward pass
    for r in t.rows.iter().filter(|r| r.metric == "kl_to_final" && r.layer == Some(1)) {
        assert!(r.value.abs() < 1e-5, "{r:?}");
    }
    let ranks: Vec<f64> = prompts
        .iter()
        .map(|p| {
            let logits = c.reference.forward(&Batch::from_ids(&p.ids).unwrap()).unwrap();
            let v: Vec<f32> = logits.get(0).unwrap().get(p.ids.len() - 1).unwrap().to_vec1().unwrap();
            qi::metrics::rank_of(&v, p.target as usize) as f64
        })
        .collect();
    let r = t.rows.iter().find(|r| r.spec == "none" && r.metric == "target_rank" && r.layer == Some(1)).unwrap();
    assert!((r.value - qi::metrics::mean(&ranks)).abs() < 1e-9 && r.n == Some(5), "{} vs {ranks:?}", r.value);
    for r in &t.rows {
        match r.metric.as_str() {
            "target_prob" | "top1_agreement" | "top5_agreement" => assert!((0.0..=1.0).contains(&r.value), "{r:?}"),
            "kl_ref_quant" | "kl_to_final" => assert!(r.value >= -1e-6, "{r:?}"),
            _ => assert!(r.value >= 1.0, "{r:?}"),
        }
    }
    let kl4 = values(&t, "kl_ref_quant", "rtn:bits=4");
    let kl2 = values(&t, "kl_ref_quant", "rtn:bits=2");
    assert!(kl4[1] < kl2[1], "{kl4:?} vs {kl2:?}");
    // padding: one prompt per batch gives the same table
    assert_same(&t, &logit_lens::lens_on_prompts(&c, &prompts, &o(1)).unwrap(), 1e-4);
    let df = t.to_frame().unwrap();
    for m in ["kl_ref_quant", "target_rank"] {
        assert!(logit_lens::figure(&df, m).unwrap().to_json().contains("rtn:bits=4"));
    }
    // per category: the `all` rows stay, each category's mean is over its own prompts
    let mut split = prompts.clone();
    for (i, p) in split.iter_mut().enumerate() {
        p.category = (if i % 2 == 0 { "even" } else { "odd" }).into();
    }
    let tc = logit_lens::lens_on_prompts(&c, &split, &logit_lens::LogitLensOptions { by_category: true, ..o(2) }).unwrap();
    assert_eq!(tc.len(), 3 * t.len());
    let category = |r: &Row| r.labels.iter().find(|(k, _)| k == "category").map(|(_, v)| v.clone());
    let even = tc.rows.iter().find(|r| r.spec == "none" && r.metric == "target_rank" && r.layer == Some(1) && category(r) == Some(qi::analysis::Label::Str("even".into()))).unwrap();
    assert!((even.value - (ranks[0] + ranks[2] + ranks[4]) / 3.0).abs() < 1e-9 && even.n == Some(3), "{even:?} vs {ranks:?}");
    let dfc = tc.to_frame().unwrap();
    assert!(logit_lens::category_figure(&dfc, "kl_ref_quant").unwrap().to_json().contains("odd"));
    // the by-layer figure keeps to all prompts: one point per layer per twin
    assert_eq!(logit_lens::figure(&dfc, "kl_ref_quant").unwrap().to_json(), logit_lens::figure(&df.clone(), "kl_ref_quant").unwrap().to_json());
}

#[test]
fn logit_lens_bad_input_is_named() {
    let c = cmp();
    let o = logit_lens::LogitLensOptions::default();
    assert!(logit_lens::lens_on_prompts(&c, &[], &o).unwrap_err().to_string().contains("empty"));
    let mut p = lens_prompts(c.reference);
    p[1].target = 100_000;
    assert!(logit_lens::lens_on_prompts(&c, &p, &o).unwrap_err().to_string().contains("p1"));
    // the tiny model has no tokenizer, so the prompt-file path says so
    // the underscore spelling finds logit-lens too
    let e = run_seeds(&find("logit_lens").unwrap(), &c, &json!({}), &[0]).unwrap_err().to_string();
    assert!(e.contains("tokenizer"), "{e}");
}

#[test]
fn logit_lens_prompt_file_on_smollm2() {
    let Some((m, t)) = smol() else { return };
    let c = Comparison::new("SmolLM2", m, t).unwrap();
    let tab = run_seeds(&find("logit-lens").unwrap(), &c, &json!({"n_prompts": 4, "n_boot": 100, "by_category": false}), &[0]).unwrap();
    assert_eq!(tab.len(), 2 * 30 * 3 + 30 * 3);
    // the bundled prompts are ones the reference gets right (README of the prompt file)
    let last = tab.rows.iter().find(|r| r.spec == "none" && r.metric == "target_rank" && r.layer == Some(29)).unwrap();
    assert!(last.value <= 3.0, "{last:?}");
    let dir = temp_dir("lens");
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"The year was\", \"target\": \" 19845\", \"category\": \"facts\"}\n").unwrap();
    let e = run_seeds(&find("logit-lens").unwrap(), &c, &json!({"prompts": bad.to_str().unwrap()}), &[0]).unwrap_err().to_string();
    assert!(e.contains("The year was") && e.contains("tokenizes to") && e.contains("19845") && e.contains("skip_multi_token"), "{e}");
    // skip_multi_token leaves that prompt out: the rows cover the one other prompt, and their
    // values are those of that prompt alone
    let good = logit_lens::BUILTIN_PROMPTS.lines().next().unwrap();
    let both = dir.join("both.jsonl");
    let alone = dir.join("alone.jsonl");
    std::fs::write(&both, format!("{}\n{good}\n", std::fs::read_to_string(&bad).unwrap().trim())).unwrap();
    std::fs::write(&alone, format!("{good}\n")).unwrap();
    let o = |p: &std::path::Path| json!({"prompts": p.to_str().unwrap(), "n_boot": 10, "by_category": false, "skip_multi_token": true});
    let skipped = run_seeds(&find("logit-lens").unwrap(), &c, &o(&both), &[0]).unwrap();
    assert!(skipped.rows.iter().all(|r| r.n == Some(1)), "one prompt per row");
    assert_same(&skipped, &run_seeds(&find("logit-lens").unwrap(), &c, &o(&alone), &[0]).unwrap(), 0.0);
    let e = run_seeds(&find("logit-lens").unwrap(), &c, &json!({"prompts": bad.to_str().unwrap(), "skip_multi_token": true}), &[0]).unwrap_err().to_string();
    assert!(e.contains("no prompt has a one-token target") && e.contains("1 skipped"), "{e}");
    std::fs::write(&bad, "\n").unwrap();
    let e = run_seeds(&find("logit-lens").unwrap(), &c, &json!({"prompts": bad.to_str().unwrap()}), &[0]).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    std::fs::write(&bad, "{\"prompt\": 3}\n").unwrap();
    let e = run_seeds(&find("logit-lens").unwrap(), &c, &json!({"prompts": bad.to_str().unwrap()}), &[0]).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:1"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Re-checks the bundled prompt set: prints each prompt's target rank and probability under the
/// reference and fails if any target is not the reference's top-1 prediction.
/// Run: `cargo test … --test analysis_circuits_a -- --ignored --nocapture check_bundled`.
#[test]
#[ignore]
fn check_bundled_prompt_set_on_smollm2() {
    let Some((m, _)) = smol() else { return };
    let path = std::env::var("QI_LENS_PROMPTS").unwrap_or_else(|_| fixture("../prompts/logit_lens.jsonl").to_str().unwrap().to_string());
    let text = std::fs::read_to_string(&path).unwrap();
    let mut kept = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok((p, _)) = logit_lens::parse_prompts(m, line, &path, true, false) else {
            println!("SKIP (target not one token): {line}");
            continue;
        };
        let (rank, prob) = logit_lens::final_target_ranks(m, &p).unwrap()[0];
        println!("{} rank {rank} p {prob:.3}: {line}", if rank == 1 { "KEEP" } else { "DROP" });
        if rank == 1 {
            kept.push(line);
        }
    }
    println!("kept {} of {}", kept.len(), text.lines().count());
    assert_eq!(kept.len(), text.lines().filter(|l| !l.trim().is_empty()).count());
}

// ---------------------------------------------------------------- IOI

/// Token-id IOI prompts for the tokenizer-less fixture: "… io … s … s" ending before io.
fn ioi_prompts(model: &HookedTransformer) -> Vec<ioi::IoiPrompt> {
    let mut rng = qi::rng::Rng::new(3);
    [9, 6, 11, 8]
        .iter()
        .map(|&n| {
            let (io, s) = (rng.below(100) as u32 + 1, rng.below(100) as u32 + 150);
            let mut ids = rng.tokens(n, model.cfg.d_vocab, &[io, s]);
            ids[1] = io;
            ids[2] = s;
            ids[n - 2] = s;
            ioi::IoiPrompt { text: String::new(), ids, io, s }
        })
        .collect()
}

#[test]
fn ioi_logit_differences_and_patching() {
    let c = cmp();
    let prompts = ioi_prompts(c.reference);
    let o = |bs, top| ioi::IoiOptions { batch_size: bs, top_heads: top, n_boot: 100, ..Default::default() };
    let t = ioi::ioi_on_prompts(&c, &prompts, &o(3, 0)).unwrap();
    // per model: logit_diff + accuracy; reference: name_attention per head; twins: every head
    assert_eq!(t.len(), 3 * 2 + 8 + 2 * 8);
    let ld_ref = t.rows.iter().find(|r| r.spec == "none" && r.metric == "logit_diff").unwrap().clone();
    let direct: Vec<f64> = prompts
        .iter()
        .map(|p| {
            let l = c.reference.forward(&Batch::from_ids(&p.ids).unwrap()).unwrap();
            ioi::logit_diffs(&l, std::slice::from_ref(p)).unwrap()[0]
        })
        .collect();
    assert!((ld_ref.value - qi::metrics::mean(&direct)).abs() < 1e-4 && ld_ref.n == Some(4), "{ld_ref:?} vs {direct:?}");
    // recovery recomputed from scratch for every twin and head: full forward passes of the twin
    // with that head's hook_z replaced by the reference's, one prompt at a time
    let mean_ld = |m: &HookedTransformer, patch: Option<(usize, usize)>| -> f64 {
        let lds: Vec<f64> = prompts
            .iter()
            .map(|p| {
                let b = Batch::from_ids(&p.ids).unwrap();
                let logits = match patch {
                    None => m.forward(&b).unwrap(),
                    Some((l, h)) => {
                        let z = c.reference.run_with_cache(&b, names::z(l)).unwrap().1.get(&names::z(l)).unwrap().clone();
                        let mut hooks = Hooks::new();
                        hooks.add(names::z(l), interventions::patch_heads(vec![h], z));
                        m.run_with_hooks(&b, &mut hooks).unwrap()
                    }
                };
                ioi::logit_diffs(&logits, std::slice::from_ref(p)).unwrap()[0]
            })
            .collect();
        qi::metrics::mean(&lds)
    };
    let recovered: Vec<&Row> = t.rows.iter().filter(|r| r.metric == "fraction_recovered").collect();
    assert_eq!(recovered.len(), 2 * 8);
    for (twin_spec, twin) in c.twins.iter().map(|tw| (tw.spec.to_string(), tw.model)) {
        let q = mean_ld(twin, None);
        for r in recovered.iter().filter(|r| r.spec == twin_spec) {
            let want = qi::metrics::recovery_fraction(ld_ref.value, q, mean_ld(twin, Some((r.layer.unwrap(), r.head.unwrap()))));
            assert!((r.value - want).abs() < 1e-3 * want.abs().max(1.0), "{r:?} vs {want}");
        }
    }
    // top-k head set: k patched heads per twin, the ones with the most attention to the names
    let top = ioi::ioi_on_prompts(&c, &prompts, &o(2, 3)).unwrap();
    assert_eq!(top.rows.iter().filter(|r| r.metric == "fraction_recovered").count(), 2 * 3);
    // padding: one prompt per batch gives the same table
    assert_same(&t, &ioi::ioi_on_prompts(&c, &prompts, &o(1, 0)).unwrap(), 1e-4);
    let df = t.to_frame().unwrap();
    assert!(ioi::patching_heatmaps(&df, 2, 4).unwrap().to_json().contains("\"xaxis\":\"x2\""));
    assert!(ioi::logit_diff_bars(&df).unwrap().to_json().contains("rtn:bits=2"));
    assert_eq!(str_values(&filter_eq(&df, "metric", "accuracy").unwrap(), "spec").unwrap(), ["none", "rtn:bits=4", "rtn:bits=2"]);
    assert!(f64_values(&df, "value").unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn ioi_running_from_a_layer_matches_the_full_forward() {
    let (_, twins) = tiny();
    let m = &twins[1].1;
    let prompts = ioi_prompts(m);
    let rows: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
    let batch = Batch::from_rows(&rows, qi::Padding::Right, 0).unwrap();
    let (full, cache) = m.run_with_cache(&batch, "blocks.*.hook_resid_pre").unwrap();
    let want = ioi::logit_diffs(&full, &prompts).unwrap();
    for l in 0..2 {
        let logits = m.logits_from_layer(l, cache.get(&qi::hooks::names::resid_pre(l)).unwrap(), &batch, None).unwrap();
        let got = ioi::logit_diffs(&logits, &prompts).unwrap();
        assert!(want.iter().zip(&got).all(|(a, b)| (a - b).abs() < 1e-4), "layer {l}: {want:?} vs {got:?}");
    }
}

#[test]
fn ioi_bad_input_is_named() {
    let c = cmp();
    let dir = temp_dir("ioi");
    let missing = dir.join("nope.json");
    let e = run_seeds(&find("ioi").unwrap(), &c, &json!({"templates": missing.to_str().unwrap()}), &[0]).unwrap_err().to_string();
    assert!(e.contains("nope.json") && e.contains("cannot read"), "{e}");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"NAMES\": [\"Mary\"]}").unwrap();
    let e = ioi::IoiTemplates::load(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.json") && e.contains("malformed"), "{e}");
    let t = json!({"NAMES": ["Mary"], "ABBA_TEMPLATES": ["[A] met [B]"], "BABA_TEMPLATES": ["[B] and [A] left"], "PLACES": ["x"], "OBJECTS": []});
    std::fs::write(&bad, t.to_string()).unwrap();
    assert!(ioi::IoiTemplates::load(&bad).unwrap_err().to_string().contains("OBJECTS is empty"));
    let t = json!({"NAMES": ["Mary"], "ABBA_TEMPLATES": ["[A] met [B]"], "BABA_TEMPLATES": ["[B] and [A] left"], "PLACES": ["x"], "OBJECTS": ["y"]});
    std::fs::write(&bad, t.to_string()).unwrap();
    assert!(ioi::IoiTemplates::load(&bad).unwrap_err().to_string().contains("does not end with"));
    assert!(ioi::ioi_on_prompts(&c, &[], &ioi::IoiOptions::default()).unwrap_err().to_string().contains("no prompts"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ioi_templates_on_smollm2() {
    let Some((m, t)) = smol() else { return };
    let c = Comparison::new("SmolLM2", m, t).unwrap();
    let tpl = ioi::IoiTemplates::shared().unwrap();
    let prompts = tpl.prompts(m, 6, 0, true).unwrap();
    assert_eq!(prompts, tpl.prompts(m, 6, 0, true).unwrap());
    assert!(prompts.iter().all(|p| p.io != p.s && !p.text.ends_with(' ')), "{prompts:?}");
    let tab = run_seeds(&find("ioi").unwrap(), &c, &json!({"n_prompts": 4, "top_heads": 2, "n_boot": 100}), &[0]).unwrap();
    assert_eq!(tab.rows.iter().filter(|r| r.metric == "fraction_recovered").count(), 2);
    let ld = tab.rows.iter().find(|r| r.spec == "none" && r.metric == "logit_diff").unwrap();
    assert!(ld.value > 0.0, "SmolLM2 should prefer the indirect object: {ld:?}");
    // no single-token names
    let dir = temp_dir("ioi-smol");
    let p = dir.join("t.json");
    let t = json!({"NAMES": ["Xqzptlwv", "Zyxwvqrt"], "ABBA_TEMPLATES": ["[A] met [B] and [A]"], "BABA_TEMPLATES": ["[B] and [A]"], "PLACES": ["x"], "OBJECTS": ["y"]});
    std::fs::write(&p, t.to_string()).unwrap();
    let e = run_seeds(&find("ioi").unwrap(), &c, &json!({"templates": p.to_str().unwrap()}), &[0]).unwrap_err().to_string();
    assert!(e.contains("single tokens"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
