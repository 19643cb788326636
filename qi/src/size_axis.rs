//! The size axis of a study (notebook 09, `studies/sizes.toml`): a study file run with optional
//! small-run overrides, model sizes as non-embedding parameters, and the finding in words,
//! computed from the summary table ([`crate::study::summary`]).
use crate::quant::QuantSpec;
use crate::study::Study;
use crate::QiError;
use anyhow::{anyhow, Context, Result};
use polars::prelude::DataFrame;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Changes to a study file for a quick run (every `None` keeps the file's value).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `;`-separated model names (the study's `name`s) to keep; the others are left out.
    pub models: Option<String>,
    /// `;`-separated QuantSpecs replacing the file's quantizers.
    pub methods: Option<String>,
    /// Seeds `0..n` for every analysis with more than one seed.
    pub seeds: Option<u64>,
    /// `(n_seqs, seq_len)` for every analysis that has those options (0 keeps the value). An
    /// analysis that trains an SAE (`features`) scales its training with `n_seqs` as notebook 07
    /// does — at most 25 × n_seqs steps on 4 × n_seqs windows, 2 folds below 8 windows — so a
    /// quick run stays quick.
    pub windows: Option<(usize, usize)>,
    /// Perplexity `(max_windows, seqlen)` (0 keeps the value).
    pub perplexity: Option<(usize, usize)>,
    /// Results folder (default: see [`load`]).
    pub results: Option<PathBuf>,
}

impl Overrides {
    fn any(&self) -> bool {
        self.models.is_some() || self.methods.is_some() || self.seeds.is_some() || self.windows.is_some() || self.perplexity.is_some()
    }
}

/// Loads a study file, applies `o`, and leaves out local models whose file is absent (printing
/// which, and how to fetch them). Returns the study and its results folder: `o.results`, else
/// `data/results/NAME` beside the file's folder (the committed cells) when nothing is overridden,
/// else the scratch folder `target/study/NAME-custom`, so small runs never mix with the study's
/// cells.
pub fn load(path: &Path, o: &Overrides) -> Result<(Study, PathBuf)> {
    let mut study = Study::load(path)?;
    if let Some(m) = &o.methods {
        study.specs = QuantSpec::parse_list(m).with_context(|| format!("methods '{m}'"))?;
        study.spec_models = vec![None; study.specs.len()];
    }
    for a in study.analyses.iter_mut() {
        if let Some(n) = o.seeds {
            if n == 0 {
                return Err(QiError::invalid("seeds", 0, "need at least one seed").into());
            }
            if a.seeds.len() > 1 {
                a.seeds = (0..n).collect();
            }
        }
        let mut set = |key: &str, v: usize| {
            if v > 0 {
                if let Some(slot) = a.options.get_mut(key) {
                    *slot = serde_json::json!(v);
                }
            }
        };
        if let Some((n_seqs, seq_len)) = o.windows {
            set("n_seqs", n_seqs);
            set("seq_len", seq_len);
        }
        if a.name == "perplexity" {
            if let Some((windows, seqlen)) = o.perplexity {
                set("max_windows", windows);
                set("seqlen", seqlen);
            }
        }
        // an SAE-training analysis: training scaled with n_seqs, as notebook 07 does
        if let Some((n_seqs, _)) = o.windows.filter(|w| w.0 > 0 && a.options.get("train_steps").is_some()) {
            let get = |opts: &serde_json::Value, k: &str| opts.get(k).and_then(serde_json::Value::as_u64).unwrap_or(u64::MAX) as usize;
            let windows = (4 * n_seqs).min(get(&a.options, "train_windows"));
            // the first position of a window (BOS, an attention sink) is not an SAE training token
            let tokens = windows * get(&a.options, "seq_len").saturating_sub(1);
            for (k, v) in [("train_steps", 25 * n_seqs), ("train_windows", windows), ("train_batch", tokens)] {
                let v = v.min(get(&a.options, k));
                a.options[k] = serde_json::json!(v);
            }
            if n_seqs < 8 && a.options.get("folds").is_some() {
                a.options["folds"] = serde_json::json!(2);
            }
        }
    }
    if let Some(names) = &o.models {
        let keep: Vec<&str> = names.split(';').map(str::trim).filter(|s| !s.is_empty()).collect();
        let known: Vec<String> = study.models.iter().map(|m| m.name.clone()).collect();
        if let Some(bad) = keep.iter().find(|k| !known.iter().any(|n| n == *k)) {
            return Err(QiError::invalid("models", bad, format!("not a model of {}; its models: {}", path.display(), known.join(", "))).into());
        }
        study.models.retain(|m| keep.contains(&m.name.as_str()));
    }
    let before = study.models.len();
    study.models.retain(|m| {
        let local = m.source.starts_with("shared:") || m.source.starts_with("models:") || m.source.starts_with('/') || m.source.starts_with('.');
        let keep = !local || Path::new(&m.resolved).exists();
        if !keep {
            crate::progress::note(&format!("skipping {}: {} not found (./dev models fetches the larger models)", m.name, m.resolved));
        }
        keep
    });
    if study.models.is_empty() {
        return Err(anyhow!("{}: none of the study's {before} models is on this machine (run ./dev models)", path.display()));
    }
    let results = match &o.results {
        Some(r) => r.clone(),
        None => default_results(path, &study, o.any()),
    };
    Ok((study, results))
}

/// The results folder of a study file `STUDIES/NAME.toml`: `STUDIES/../data/results/NAME` (the
/// committed cells), or `STUDIES/../target/study/NAME-custom` for a run with overrides.
pub fn default_results(path: &Path, study: &Study, overridden: bool) -> PathBuf {
    let root = path.canonicalize().ok().and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf)).unwrap_or_else(|| PathBuf::from("."));
    if overridden {
        root.join("target").join("study").join(format!("{}-custom", study.name))
    } else {
        root.join("data").join("results").join(&study.name)
    }
}

/// Non-embedding parameters of a model file: GGUF tensors counted from the header (no weights are
/// read), anything else by loading the model.
pub fn non_embedding_params(source: &str) -> Result<usize> {
    let p = Path::new(source);
    if p.extension().and_then(|e| e.to_str()) == Some("gguf") {
        let (_, content) = crate::loader::gguf::read_content(p)?;
        const EMBEDDING: [&str; 4] = ["token_embd.weight", "position_embd.weight", "output.weight", "rope_freqs.weight"];
        return Ok(content.tensor_infos.iter().filter(|(n, _)| !EMBEDDING.contains(&n.as_str())).map(|(_, t)| t.shape.elem_count()).sum());
    }
    Ok(crate::load_model(source)?.n_params_non_embedding())
}

/// Non-embedding parameters of each study model, by name: counted for the models on this machine,
/// read from `results/params.json` for the others (written here, so committed results keep their
/// size axis on a machine without the models).
pub fn model_sizes(study: &Study, results: &Path) -> Result<BTreeMap<String, usize>> {
    let file = results.join("params.json");
    let mut sizes: BTreeMap<String, usize> = match std::fs::read_to_string(&file) {
        Ok(t) => serde_json::from_str(&t).with_context(|| format!("{}: not a JSON object of model sizes", file.display()))?,
        Err(_) => BTreeMap::new(),
    };
    for m in &study.models {
        if Path::new(&m.resolved).exists() || !sizes.contains_key(&m.name) {
            sizes.insert(m.name.clone(), non_embedding_params(&m.resolved).with_context(|| format!("counting the parameters of {}", m.name))?);
        }
    }
    std::fs::create_dir_all(results).with_context(|| format!("cannot create {}", results.display()))?;
    crate::io::save_text(&serde_json::to_string_pretty(&sizes)?, &file)?;
    Ok(sizes)
}

/// The summary as a Markdown table (what the README's size table is printed from): model and its
/// non-embedding parameters, spec, bits per weight where the method fixes them, perplexity and its
/// ratio to the reference, survival under the three rules and the score correlation, each `mean ±
/// 95 % half-width` over seeds (no ± when the seeds agree or there is one).
pub fn markdown(summary: &DataFrame) -> Result<String> {
    use crate::analysis::tidy::{f64_values, str_values};
    let (models, specs) = (str_values(summary, "model")?, str_values(summary, "spec")?);
    let f = |c: &str| f64_values(summary, c);
    let (params, ppl, ratio) = (f("params")?, f("perplexity")?, f("perplexity_ratio")?);
    let cols = ["survival", "survival_sigma", "survival_original", "score_r"];
    let vals: Vec<(Vec<f64>, Vec<f64>)> = cols.iter().map(|c| Ok((f(c)?, f(&format!("{c}_ci"))?))).collect::<Result<_>>()?;
    let num = |x: f64, d: usize| if x.is_finite() { format!("{x:.d$}") } else { "–".into() };
    let pm = |x: f64, ci: f64, d: usize| if !x.is_finite() { "–".into() } else if ci.is_finite() && ci > 0.0 { format!("{x:.d$} ± {ci:.d$}") } else { format!("{x:.d$}") };
    // smallest model first (the size axis reads down the table); the summary's order within a model
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by(|&a, &b| params[a].total_cmp(&params[b]).then(models[a].cmp(&models[b])).then(a.cmp(&b)));
    let size = |i: usize| if params[i].is_finite() { format!("{:.0} M", params[i] / 1e6) } else { "–".into() };
    let spec = |i: usize| if specs[i] == "none" { "reference".to_string() } else { format!("`{}`", specs[i]) };
    let mut out = String::from("| model | non-embedding params | spec | perplexity | × reference | survival (stripe ≥ 0.4) | survival (mean + 2σ) | survival (original rule) | score r |\n|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for &i in &order {
        let mut row = format!("| {} | {} | {} | {} | {} |", models[i], size(i), spec(i), num(ppl[i], 2), if specs[i] == "none" { "–".into() } else { num(ratio[i], 2) });
        for (j, (v, ci)) in vals.iter().enumerate() {
            row.push_str(&format!(" {} |", pm(v[i], ci[i], if j == 3 { 3 } else { 2 })));
        }
        out.push_str(&row);
        out.push('\n');
    }
    // attention, logit lens and features: a second table, of the twins that have any of them
    let more = ["attention_jsd", "lens_kl", "feature_survival"];
    let more: Vec<(Vec<f64>, Vec<f64>)> = more.iter().map(|c| Ok((f(c)?, f(&format!("{c}_ci"))?))).collect::<Result<_>>()?;
    let rows: Vec<usize> = order.iter().copied().filter(|&i| specs[i] != "none" && more.iter().any(|(v, _)| v[i].is_finite())).collect();
    if !rows.is_empty() {
        out.push_str("\n| model | spec | attention JSD (mean over heads) | logit-lens KL (mean over layers) | feature survival |\n|---|---|---:|---:|---:|\n");
        for i in rows {
            let cell = |(v, ci): &(Vec<f64>, Vec<f64>), d: usize| pm(v[i], ci[i], d);
            out.push_str(&format!("| {} | {} | {} | {} | {} |\n", models[i], spec(i), cell(&more[0], 4), cell(&more[1], 3), cell(&more[2], 2)));
        }
    }
    Ok(out)
}

/// The size-axis figures of a summary table (what notebook 09 shows and `qi study figures`
/// writes), as (file-stem suffix, figure): induction-head survival against non-embedding
/// parameters under each detection rule (mean and 95 % CI over seeds, clamped to [0, 1]), the
/// perplexity ratio against size, and, where the study has them, feature survival and attention
/// JSD against size.
pub fn figures(summary: &DataFrame) -> Result<Vec<(String, plotly::Plot)>> {
    use crate::analysis::plots::{lines_log_x, Labels};
    let x = "non-embedding parameters (log)";
    let mut out = Vec::new();
    for (col, rule) in [("survival", "stripe ≥ 0.4"), ("survival_sigma", "mean + 2σ of the model's own heads"), ("survival_original", "the original study's rule")] {
        let df = crate::study::against_size(summary, col, Some((0.0, 1.0)), false)?;
        let labels = Labels::new(format!("Induction-head survival ({rule}) vs size, mean and 95% CI over seeds"), x, "share of reference induction heads surviving");
        out.push((format!("{col}_vs_size"), lines_log_x(&df, "params", "spec", &labels, Some((-0.05, 1.05)))?));
    }
    let df = crate::study::against_size(summary, "perplexity_ratio", None, false)?;
    let labels = Labels::new("WikiText-2 perplexity of each twin over its reference's, vs size", x, "perplexity / reference perplexity");
    out.push(("perplexity_vs_size".into(), lines_log_x(&df, "params", "spec", &labels, None)?));
    let has = |c: &str| crate::analysis::tidy::f64_values(summary, c).is_ok_and(|v| v.iter().any(|x| x.is_finite()));
    if has("feature_survival") {
        let df = crate::study::against_size(summary, "feature_survival", Some((0.0, 1.0)), false)?;
        let labels = Labels::new("SAE feature survival vs size (one SAE per model)", x, "share of active features that survive");
        out.push(("feature_survival_vs_size".into(), lines_log_x(&df, "params", "spec", &labels, Some((-0.05, 1.05)))?));
    }
    if has("attention_jsd") {
        let df = crate::study::against_size(summary, "attention_jsd", None, false)?;
        let labels = Labels::new("Attention-pattern divergence from the reference vs size, mean over heads, 95% CI over seeds", x, "Jensen–Shannon divergence");
        out.push(("attention_jsd_vs_size".into(), lines_log_x(&df, "params", "spec", &labels, None)?));
    }
    Ok(out)
}

/// The size-axis finding in words, from a summary table: per quantizer, survival (stripe ≥ 0.4) and
/// perplexity ratio from the smallest to the largest model, and the rank correlation of survival
/// with size; then how many quantizers' survival rises with size.
pub fn finding(summary: &DataFrame) -> Result<String> {
    use crate::analysis::tidy::{f64_values, str_values};
    let (models, specs) = (str_values(summary, "model")?, str_values(summary, "spec")?);
    let (params, surv, ppl) = (f64_values(summary, "params")?, f64_values(summary, "survival")?, f64_values(summary, "perplexity_ratio")?);
    let mut order: Vec<String> = Vec::new();
    for s in specs.iter().filter(|s| s.as_str() != "none") {
        if !order.contains(s) {
            order.push(s.clone());
        }
    }
    let mut out = String::new();
    let n_models = {
        let mut m = models.clone();
        m.sort();
        m.dedup();
        m.len()
    };
    out.push_str(&format!("{n_models} model(s); every reference is itself a 4-bit GGUF dequantized to f32.\n\n"));
    let (mut rising, mut judged) = (0, 0);
    for spec in &order {
        let mut idx: Vec<usize> = (0..specs.len()).filter(|&i| &specs[i] == spec && params[i].is_finite()).collect();
        idx.sort_by(|&a, &b| params[a].total_cmp(&params[b]));
        // a model whose induction cells are not in yet shows "–", not NaN
        let show = |x: f64| if x.is_finite() { format!("{x:.2}") } else { "–".into() };
        let pts: Vec<String> = idx.iter().map(|&i| format!("{} {} (ppl ×{})", models[i], show(surv[i]), show(ppl[i]))).collect();
        let with_surv: Vec<usize> = idx.iter().copied().filter(|&i| surv[i].is_finite()).collect();
        let rho = if with_surv.len() >= 3 {
            let r = crate::metrics::spearman(&with_surv.iter().map(|&i| params[i]).collect::<Vec<_>>(), &with_surv.iter().map(|&i| surv[i]).collect::<Vec<_>>());
            if r.is_finite() {
                judged += 1;
                if r > 0.0 {
                    rising += 1;
                }
                format!("; rank correlation of survival with size {r:+.2}")
            } else {
                "; survival is the same at every size".to_string()
            }
        } else {
            String::new()
        };
        out.push_str(&format!("- {spec}: survival by size {}{rho}\n", pts.join(" → ")));
    }
    if judged > 0 {
        out.push_str(&format!(
            "\nSurvival rises with size for {rising} of {judged} quantizers with at least three models. Families and training data differ \
             between the points (SmolLM2, Gemma 3, Qwen2.5-Coder), so size is confounded with family except for Qwen 0.5B vs 1.5B.\n"
        ));
    } else {
        out.push_str("\nFewer than three models with survival values: no size trend can be read.\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Row, Tidy};

    #[test]
    fn gguf_header_count_equals_the_loaded_models() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/llama/model.gguf");
        let src = dir.to_str().unwrap();
        let loaded = crate::load_model(src).unwrap();
        assert_eq!(non_embedding_params(src).unwrap(), loaded.n_params_non_embedding());
        // the llama fixture is untied: its unembedding is not counted either
        assert!(!loaded.cfg.tied_embeddings);
        assert_eq!(loaded.n_params() - loaded.n_params_non_embedding(), 2 * loaded.cfg.d_vocab * loaded.cfg.d_model);
    }

    #[test]
    fn finding_reads_the_trend_from_the_table() {
        let rtn: QuantSpec = "rtn:bits=4".parse().unwrap();
        let mut frames = Vec::new();
        // survival 0.2, 0.5, 0.9 with sizes 10, 30, 20: not monotone in input order, rising in size order
        for (m, surv) in [("a", 0.2), ("b", 0.9), ("c", 0.5)] {
            let mut t = Tidy::new(m);
            t.push(Row::new(&QuantSpec::None, "perplexity", 10.0));
            t.push(Row::new(&rtn, "perplexity", 12.0));
            t.push(Row::new(&rtn, "survival", surv).label("score", "stripe").label("rule", "threshold").seed(0));
            frames.push(t.to_frame().unwrap());
        }
        let df = crate::study::concat_diagonal(&frames).unwrap();
        let sizes = BTreeMap::from([("a".to_string(), 10), ("b".to_string(), 30), ("c".to_string(), 20)]);
        let s = crate::study::summary(&df, &sizes).unwrap();
        let text = finding(&s).unwrap();
        assert!(text.contains("a 0.20 (ppl ×1.20) → c 0.50 (ppl ×1.20) → b 0.90"), "{text}");
        assert!(text.contains("rank correlation of survival with size +1.00"), "{text}");
        assert!(text.contains("rises with size for 1 of 1"), "{text}");
        // a model with perplexity but no induction cells yet
        let mut late = Tidy::new("d");
        late.push(Row::new(&QuantSpec::None, "perplexity", 10.0));
        late.push(Row::new(&rtn, "perplexity", 11.0));
        let mut with_late = frames.clone();
        with_late.push(late.to_frame().unwrap());
        let mut sizes4 = sizes.clone();
        sizes4.insert("d".into(), 40);
        let t4 = finding(&crate::study::summary(&crate::study::concat_diagonal(&with_late).unwrap(), &sizes4).unwrap()).unwrap();
        assert!(t4.contains("→ d – (ppl ×1.10)") && !t4.contains("NaN"), "{t4}");
        assert!(t4.contains("rank correlation of survival with size +1.00"), "the model without survival is left out of the correlation: {t4}");
        let md = markdown(&s).unwrap();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 2 + 6, "no attention, lens or feature values: no second table\n{md}");
        assert_eq!(lines[2], "| a | 0 M | reference | 10.00 | – | – | – | – | – |");
        assert_eq!(lines[3], "| a | 0 M | `rtn:bits=4` | 12.00 | 1.20 | 0.20 | – | – | – |");
        // by size, not by name: c (20) before b (30)
        assert!(lines[5].starts_with("| c |") && lines[7].starts_with("| b |"), "{md}");
        // a twin with an attention value gets a row in the second table
        let mut t = Tidy::new("a");
        t.push(Row::new(&rtn, "js_divergence", 0.01).layer(0).head(0).seed(0));
        let with_jsd = crate::study::concat_diagonal(&[df.clone(), t.to_frame().unwrap()]).unwrap();
        let md = markdown(&crate::study::summary(&with_jsd, &sizes).unwrap()).unwrap();
        assert!(md.contains("| a | `rtn:bits=4` | 0.0100 | – | – |"), "{md}");
        assert_eq!(md.lines().filter(|l| l.starts_with("| a |")).count(), 3, "{md}");
        // two models: no trend claimed
        let two = BTreeMap::from([("a".to_string(), 10), ("b".to_string(), 30)]);
        let s2 = crate::study::summary(&crate::study::concat_diagonal(&frames[..2]).unwrap(), &two).unwrap();
        assert!(finding(&s2).unwrap().contains("no size trend can be read"));
    }

    #[test]
    fn overrides_change_options_and_pick_a_scratch_folder() {
        let dir = std::env::temp_dir().join(format!("qi-size-axis-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("studies")).unwrap();
        let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/llama").canonicalize().unwrap();
        let file = dir.join("studies/s.toml");
        std::fs::write(
            &file,
            format!(
                "name = \"s\"\nseeds = 3\nquantizers = [\"rtn:bits=4\"]\nmodels = [\"{}\", \"models:absent-model.gguf\"]\n\
                 [[analyses]]\nname = \"perplexity\"\nseeds = 1\noptions = {{ text = \"random\", seqlen = 16, max_windows = 4 }}\n\
                 [[analyses]]\nname = \"induction\"\n\
                 [[analyses]]\nname = \"features\"\nseeds = 1\noptions = {{ seq_len = 16 }}\n",
                model.display()
            ),
        )
        .unwrap();
        let (plain, r) = load(&file, &Overrides::default()).unwrap();
        assert_eq!(plain.models.len(), 1, "the absent model is left out");
        assert!(r.ends_with("data/results/s"), "{}", r.display());
        let o = Overrides { models: None, methods: Some("rtn:bits=3; nf4".into()), seeds: Some(2), windows: Some((2, 0)), perplexity: Some((1, 8)), results: None };
        let (s, r) = load(&file, &o).unwrap();
        assert!(r.ends_with("target/study/s-custom"), "{}", r.display());
        assert_eq!(s.specs.iter().map(|x| x.to_string()).collect::<Vec<_>>(), ["rtn:bits=3", "nf4"]);
        let ind = s.analyses.iter().find(|a| a.name == "induction").unwrap();
        assert_eq!(ind.seeds, [0, 1]);
        assert_eq!(ind.options["n_seqs"], 2);
        assert_eq!(ind.options["seq_len"], plain.analyses[1].options["seq_len"], "0 keeps the value");
        // the SAE's training shrinks with n_seqs = 2: 50 steps on 8 windows of 16 tokens, 15 usable each
        let feat = s.analyses.iter().find(|a| a.name == "features").unwrap();
        let opt = |k: &str| feat.options[k].as_u64().unwrap();
        assert_eq!((opt("train_steps"), opt("train_windows"), opt("train_batch"), opt("folds")), (50, 8, 120, 2));
        let plain_feat = plain.analyses.iter().find(|a| a.name == "features").unwrap();
        assert_eq!(plain_feat.options["train_steps"], 300, "no override: the file's training");
        let ppl = s.analyses.iter().find(|a| a.name == "perplexity").unwrap();
        assert_eq!((ppl.seeds.clone(), ppl.options["max_windows"].clone(), ppl.options["seqlen"].clone()), (vec![0], serde_json::json!(1), serde_json::json!(8)));
        assert!(load(&file, &Overrides { seeds: Some(0), ..Default::default() }).unwrap_err().to_string().contains("at least one seed"));
        let e = load(&file, &Overrides { models: Some("llama; nope".into()), ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("its models: llama, absent-model"), "{e}");
        let (kept, r) = load(&file, &Overrides { models: Some("llama".into()), ..Default::default() }).unwrap();
        assert_eq!((kept.models.len(), r.ends_with("target/study/s-custom")), (1, true));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
