//! Study specs, the grid, resumable and sharded runs, collect (on the tiny fixtures, with the
//! `perplexity` analysis on random tokens so no tokenizer is needed).
mod common;
use common::{fixture, temp_dir};
use qi::analysis::tidy::{f64_values, filter_eq, str_values};
use qi::study::{self, RunOptions, Shard, Study};
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A small study on both fixtures: 2 models × (reference + rtn 8/4) × perplexity × 2 seeds.
fn small_spec(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
name = "tiny"
seeds = 2
bits = [8, 4]
quantizers = ["rtn"]
models = ["{}", {{ source = "{}", name = "gpt2-tiny" }}]
[data]
seqlen = 8
[[analyses]]
name = "perplexity"
options = {{ text = "random", max_windows = 2, batch_size = 2 }}
"#,
        fixture("llama").display(),
        fixture("gpt2").display()
    );
    write(dir, "tiny.toml", &text)
}

fn opts(results: &Path, cache: &Path, shard: Shard) -> RunOptions {
    RunOptions { results: results.to_path_buf(), shard, cache: Some(cache.to_path_buf()), quantize: Default::default() }
}

#[test]
fn spec_parsing_and_expansion() {
    let dir = temp_dir("study-parse");
    let toml = write(
        &dir,
        "s.toml",
        &format!(
            r#"
name = "x"
seeds = [3, 5]
bits = [8, 4]
quantizers = ["rtn", "gptq:samples=4,seqlen=16", "nf4", "rtn:bits=3,group=16"]
models = ["{}", "gpt2", {{ source = "./rel/model", name = "mine" }}]
[data]
seqlen = 16
[[analyses]]
name = "perplexity"
seeds = 1
[[analyses]]
name = "perplexity"
id = "ppl_random"
options = {{ text = "random", max_windows = 3 }}
[[analyses]]
name = "perplexity"
id = "ppl_mine"
seeds = 1
models = ["mine"]
"#,
            fixture("llama").display()
        ),
    );
    let s = Study::load(&toml).unwrap();
    let specs: Vec<String> = s.specs.iter().map(|q| q.to_string()).collect();
    assert_eq!(
        specs,
        ["rtn:bits=8", "rtn:bits=4", "gptq:bits=8,samples=4,seqlen=16", "gptq:bits=4,samples=4,seqlen=16", "nf4", "rtn:bits=3,group=16"]
    );
    let names: Vec<&str> = s.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["llama", "gpt2", "mine"]);
    assert_eq!(s.models[1].resolved, "gpt2", "Hub ids stay as written");
    assert_eq!(Path::new(&s.models[2].resolved), dir.join("./rel/model"), "relative paths are against the spec file");
    assert_eq!(s.analyses[0].seeds, [0]);
    assert_eq!(s.analyses[1].seeds, [3, 5]);
    assert_eq!(s.analyses[0].options["seqlen"], 16, "data keys reach the analyses");
    assert_eq!(s.analyses[1].options["text"], "random");
    assert!(s.analyses[0].options.get("seed").is_none());
    assert_eq!(s.analyses[2].models.as_deref(), Some(&["mine".to_string()][..]));
    assert!(s.analyses[0].models.is_none());
    let cells = s.cells();
    // the third analysis runs on one model of three: 7 more cells, all of `mine`
    assert_eq!(cells.len(), 3 * 7 * (1 + 2) + 7);
    let restricted: Vec<_> = cells.iter().filter(|c| c.analysis == 2).collect();
    assert_eq!(restricted.len(), 7);
    assert!(restricted.iter().all(|c| s.models[c.model].name == "mine"));
    assert_eq!(cells[0].spec, qi::quant::QuantSpec::None, "reference first");
    let mut stems: Vec<&str> = cells.iter().map(|c| c.stem.as_str()).collect();
    stems.sort();
    stems.dedup();
    assert_eq!(stems.len(), cells.len(), "one file per cell");
    // the same study as JSON gives the same cells
    let json = write(
        &dir,
        "s.json",
        &serde_json::json!({
            "name": "x", "seeds": [3, 5], "bits": [8, 4],
            "quantizers": ["rtn", "gptq:samples=4,seqlen=16", "nf4", "rtn:bits=3,group=16"],
            "models": [fixture("llama").display().to_string(), "gpt2", {"source": "./rel/model", "name": "mine"}],
            "data": {"seqlen": 16},
            "analyses": [{"name": "perplexity", "seeds": 1}, {"name": "perplexity", "id": "ppl_random", "options": {"text": "random", "max_windows": 3}}, {"name": "perplexity", "id": "ppl_mine", "seeds": 1, "models": ["mine"]}]
        })
        .to_string(),
    );
    let keys = |s: &Study| s.cells().into_iter().map(|c| c.key).collect::<Vec<_>>();
    assert_eq!(keys(&Study::load(&json).unwrap()), keys(&s));
    // a quantizer table limits that quantizer (each of its bit widths) to some models; the other
    // cells, and their keys, are those of the unrestricted study
    let limited = write(
        &dir,
        "limited.toml",
        &std::fs::read_to_string(&toml).unwrap().replace("\"gptq:samples=4,seqlen=16\"", "{ spec = \"gptq:samples=4,seqlen=16\", models = [\"gpt2\"] }"),
    );
    let l = Study::load(&limited).unwrap();
    assert_eq!(l.spec_models[2].as_deref(), Some(&["gpt2".to_string()][..]));
    assert!(l.spec_models[0].is_none());
    let gptq_cells = |s: &Study| s.cells().into_iter().filter(|c| c.spec.to_string().starts_with("gptq")).map(|c| s.models[c.model].name.clone()).collect::<Vec<_>>();
    // 2 bit widths × (perplexity 1 seed + ppl_random 2 seeds) on gpt2 only; ppl_mine runs on mine only
    assert_eq!(gptq_cells(&l), vec!["gpt2".to_string(); 2 * 3]);
    assert_eq!(gptq_cells(&s).len(), 3 * 2 * 3 + 2);
    let all: Vec<String> = keys(&s);
    let lk = keys(&l);
    assert_eq!(lk.len(), s.cells().len() - (3 * 2 * 3 + 2) + 2 * 3);
    assert!(lk.iter().all(|k| all.contains(k)), "the kept cells keep their keys");
    let bad = write(&dir, "bad-q.toml", &std::fs::read_to_string(&limited).unwrap().replace("models = [\"gpt2\"] }", "models = [\"gpt3\"] }"));
    let e = Study::load(&bad).unwrap_err().to_string();
    assert!(e.contains("quantizers[1].models") && e.contains("gpt3") && e.contains("its models: llama, gpt2, mine"), "{e}");
    let bad = write(&dir, "bad-k.toml", &std::fs::read_to_string(&limited).unwrap().replace("models = [\"gpt2\"] }", "model = [\"gpt2\"] }"));
    let e = Study::load(&bad).unwrap_err().to_string();
    assert!(e.contains("quantizers[1].model") && e.contains("valid keys: spec, models"), "{e}");
    // shared: sources resolve inside the shared folder
    let shared = write(&dir, "sh.toml", "name = \"x\"\nquantizers = [\"nf4\"]\nanalyses = [\"perplexity\"]\nmodels = [\"shared:models/m.gguf\"]\n");
    let s = Study::load(&shared).unwrap();
    assert!(s.models[0].resolved.ends_with("models/m.gguf") && !s.models[0].resolved.starts_with("shared:"));
    assert_eq!(s.models[0].name, "m");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_specs_are_clear_errors() {
    let dir = temp_dir("study-bad");
    let base = |over: &str| {
        // a valid study with one line replaced or added
        let mut lines = vec![
            ("name", "name = \"x\"".to_string()),
            ("models", "models = [\"gpt2\"]".to_string()),
            ("quantizers", "quantizers = [\"rtn\"]".to_string()),
            ("bits", "bits = [4]".to_string()),
            ("analyses", "analyses = [\"perplexity\"]".to_string()),
        ];
        let key = over.split([' ', '=']).next().unwrap();
        match lines.iter_mut().find(|(k, _)| *k == key) {
            Some(l) if over.ends_with("= DELETE") => l.1 = String::new(),
            Some(l) => l.1 = over.to_string(),
            None => lines.push(("", over.to_string())),
        }
        lines.into_iter().map(|(_, l)| l).collect::<Vec<_>>().join("\n")
    };
    let cases: &[(&str, &[&str])] = &[
        ("modles = []", &["`modles`", "unknown key", "valid keys: name, models"]),
        ("name = DELETE", &["`name`", "non-empty string"]),
        ("models = []", &["`models`", "non-empty list"]),
        ("models = [\"gpt2\", \"gpt2\"]", &["`models[1]`", "already used by models[0]"]),
        ("models = [{ source = \"gpt2\", nme = \"g\" }]", &["`models[0].nme`", "valid keys: source, name"]),
        ("quantizers = []", &["`quantizers`", "non-empty list"]),
        ("quantizers = [\"foo\"]", &["`quantizers[0]`", "'foo'", "rtn"]),
        ("quantizers = [\"rtn:bits=4,colour=red\"]", &["`quantizers[0]`", "colour"]),
        ("bits = [9]", &["`bits[0]`", "2..=8"]),
        ("bits = [4, 4]", &["`bits[1]`", "twice"]),
        ("bits = DELETE", &["`quantizers[0]`", "rtn needs bits"]),
        ("quantizers = [\"nf4\"]", &["`bits`", "no quantizer leaves bits open"]),
        ("quantizers = [\"rtn\", \"rtn:bits=4\"]", &["`quantizers[1]`", "duplicate cell", "rtn:bits=4"]),
        ("quantizers = [\"rtn\", \"none\"]", &["`quantizers[1]`", "always part of the grid"]),
        ("analyses = [\"nosuch\"]", &["`analyses[0].name`", "'nosuch'", "valid analyses: perplexity"]),
        ("analyses = []", &["`analyses`", "non-empty"]),
        ("analyses = [{ name = \"perplexity\", options = { windows = 3 } }]", &["`analyses[0].options.windows`", "valid options", "max_windows"]),
        ("analyses = [{ name = \"perplexity\", options = { seqlen = \"long\" } }]", &["`analyses[0].options`", "perplexity"]),
        ("analyses = [{ name = \"perplexity\", options = { seed = 3 } }]", &["`analyses[0].options.seed`", "seeds"]),
        ("analyses = [\"perplexity\", \"perplexity\"]", &["`analyses[1]`", "duplicate cells", "id"]),
        ("analyses = [{ name = \"perplexity\", colour = 1 }]", &["`analyses[0].colour`", "valid keys: name, id, options, seeds, models"]),
        ("analyses = [{ name = \"perplexity\", models = [\"gtp2\"] }]", &["`analyses[0].models`", "gtp2", "its models: gpt2"]),
        ("analyses = [{ name = \"perplexity\", models = [] }]", &["`analyses[0].models`", "non-empty list"]),
        ("seeds = 0", &["`seeds`", "seed count >= 1"]),
        ("seeds = [1, 1]", &["`seeds`", "seed 1 is listed twice"]),
        ("data = { n_prompts = 4 }", &["`data.n_prompts`", "no analysis of the study has this option"]),
    ];
    for (i, (over, expect)) in cases.iter().enumerate() {
        let p = write(&dir, &format!("bad{i}.toml"), &base(over));
        let e = format!("{:#}", Study::load(&p).unwrap_err());
        assert!(e.contains(&format!("bad{i}.toml")), "case {over}: error does not name the file: {e}");
        for x in expect.iter() {
            assert!(e.contains(x), "case {over}: expected '{x}' in: {e}");
        }
    }
    // an analysis not merged yet: rejected, unless the run selects the others
    let p = write(&dir, "later.toml", &base("analyses = [\"perplexity\", { name = \"not_yet\", options = { k = 1 } }]"));
    assert!(Study::load(&p).unwrap_err().to_string().contains("not_yet"));
    let s = Study::load_selected(&p, &["perplexity".to_string()]).unwrap();
    assert_eq!(s.analyses.len(), 1);
    let e = Study::load_selected(&p, &["nosuch".to_string()]).unwrap_err().to_string();
    assert!(e.contains("none of the selected analyses"), "{e}");
    let e = Study::load(&write(&dir, "bad.toml", "name = ")).unwrap_err().to_string();
    assert!(e.contains("bad.toml") && e.contains("not valid TOML"), "{e}");
    let e = Study::load(&write(&dir, "bad.yaml", "name: x")).unwrap_err().to_string();
    assert!(e.contains("expected a .toml or .json file"), "{e}");
    let e = "3/2".parse::<Shard>().unwrap_err().to_string();
    assert!(e.contains("shard") && e.contains("i/n"), "{e}");
    for bad in ["0/2", "1/0", "x"] {
        let e = bad.parse::<Shard>().unwrap_err().to_string();
        assert!(e.contains("shard") && e.contains(&format!("'{bad}'")), "{bad}: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shards_partition_the_grid() {
    let dir = temp_dir("study-shards");
    let s = Study::load(&small_spec(&dir)).unwrap();
    let all: Vec<String> = s.cells().into_iter().map(|c| c.key).collect();
    for n in 1..=5 {
        let mut union: Vec<String> = Vec::new();
        for i in 1..=n {
            let shard = Shard { index: i, count: n };
            let part: Vec<study::Cell> = s.shard_cells(shard);
            // a (model, spec) group is never split between shards
            for c in &part {
                assert!(shard.takes(c.group));
            }
            union.extend(part.into_iter().map(|c| c.key));
        }
        let mut sorted = union.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), union.len(), "shards of {n} overlap");
        let mut expect = all.clone();
        expect.sort();
        assert_eq!(sorted, expect, "shards of {n} do not cover the grid");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_resume_collect_and_determinism() {
    let dir = temp_dir("study-run");
    let cache = dir.join("cache");
    let s = Study::load(&small_spec(&dir)).unwrap();
    assert_eq!(s.cells().len(), 2 * 3 * 2);

    // full run
    let results = dir.join("results");
    let sum = study::run(&s, &opts(&results, &cache, Shard::default())).unwrap();
    assert!(sum.failed.is_empty(), "{:?}", sum.failed);
    assert_eq!((sum.ran.len(), sum.skipped), (12, 0));
    assert!(sum.peak_rss_kb.unwrap_or(1) > 0);
    let first = &sum.ran[0];
    assert_eq!(first.twin_origin, "reference");
    assert!(first.reference_load_s > 0.0 && first.analysis_s > 0.0);
    assert!(sum.ran.iter().any(|r| r.twin_origin == "quantized" && r.twin_s > 0.0));
    assert_eq!(sum.ran.iter().filter(|r| r.reference_load_s > 0.0).count(), 2, "each reference loaded once");
    if study::reset_peak_rss() {
        // per-phase peaks: every cell has one, the twin's only where it was made or read, and the
        // run's peak is the largest phase's (not the last phase's)
        let cell_peaks: Vec<u64> = sum.ran.iter().map(|r| r.peak_rss_kb.expect("a cell peak")).collect();
        let twin_peaks: Vec<u64> = sum.ran.iter().filter_map(|r| r.twin_peak_rss_kb).collect();
        let groups: std::collections::BTreeSet<(&str, &str)> = sum.ran.iter().map(|r| (r.model.as_str(), r.spec.as_str())).collect();
        assert_eq!(twin_peaks.len(), groups.len(), "one twin peak per (model, spec), on its first cell");
        let most = cell_peaks.iter().chain(&twin_peaks).max().copied().unwrap();
        assert!(sum.peak_rss_kb.unwrap() >= most, "run peak {:?} below a phase's {most}", sum.peak_rss_kb);
    }
    assert_eq!(study::result_files(&results).unwrap().len(), 12);
    for c in s.cells() {
        let side: study::CellRecord = serde_json::from_str(&std::fs::read_to_string(c.sidecar(&results)).unwrap()).unwrap();
        assert_eq!((side.key, side.rows), (c.key.clone(), 2));
    }

    // resume: nothing to do; a deleted cell is redone; a stale temp file is ignored
    let sum = study::run(&s, &opts(&results, &cache, Shard::default())).unwrap();
    assert_eq!((sum.ran.len(), sum.skipped), (0, 12));
    let cells = s.cells();
    let victim = cells.iter().rev().find(|c| c.spec != qi::quant::QuantSpec::None).unwrap();
    std::fs::remove_file(victim.parquet(&results)).unwrap();
    std::fs::write(results.join(format!(".{}.parquet.tmp-999999", victim.stem)), b"half a parquet file").unwrap();
    let sum = study::run(&s, &opts(&results, &cache, Shard::default())).unwrap();
    assert_eq!((sum.ran.len(), sum.skipped), (1, 11));
    assert_eq!(sum.ran[0].key, victim.key);
    assert_eq!(sum.ran[0].twin_origin, "cached", "the twin comes from the cache on the second run");

    // collect
    let out = dir.join("all.parquet");
    let df = study::collect_to(&results, &out).unwrap();
    assert_eq!(df.height(), 12 * 2);
    let cols: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
    assert_eq!(cols, ["model", "analysis", "method", "spec", "bits", "metric", "value", "n", "seed"]);
    assert!(qi::analysis::tidy::read_parquet(&out).unwrap().equals_missing(&df));
    let specs = str_values(&df, "spec").unwrap();
    for spec in ["none", "rtn:bits=8", "rtn:bits=4"] {
        assert_eq!(specs.iter().filter(|s| *s == spec).count(), 8, "{spec}: 2 models × 2 seeds × 2 metrics");
    }
    let models = str_values(&df, "model").unwrap();
    assert!(models.contains(&"llama".to_string()) && models.contains(&"gpt2-tiny".to_string()));
    assert!(f64_values(&df, "value").unwrap().iter().all(|v| v.is_finite() && *v > 0.0));

    // perplexity is per model: its twin cells run the twin alone, with the numbers of a joint run
    let m = qi::load_model(fixture("llama").to_str().unwrap()).unwrap();
    let spec: qi::quant::QuantSpec = "rtn:bits=4".parse().unwrap();
    let twins = vec![(spec.clone(), qi::quantize::quantize_model(&m, &spec, &Default::default()).unwrap().0)];
    let cmp = qi::analysis::Comparison::new("llama", &m, &twins).unwrap();
    let entry = qi::analysis::find("perplexity").unwrap();
    assert!(entry.per_model);
    let joint = qi::analysis::run_seeds(&entry, &cmp, &s.analyses[0].options, &[0]).unwrap();
    let joint: Vec<f64> = joint.rows.iter().filter(|r| r.spec == "rtn:bits=4").map(|r| r.value).collect();
    let mut alone = cmp.clone();
    alone.reference_rows = false;
    let alone = qi::analysis::run_seeds(&entry, &alone, &s.analyses[0].options, &[0]).unwrap();
    assert!(alone.rows.iter().all(|r| r.spec == "rtn:bits=4"));
    assert_eq!(alone.rows.iter().map(|r| r.value).collect::<Vec<_>>(), joint);
    let cell_df = filter_eq(&filter_eq(&df, "model", "llama").unwrap(), "spec", "rtn:bits=4").unwrap();
    let seed0: Vec<f64> = f64_values(&cell_df, "value").unwrap().into_iter().zip(f64_values(&cell_df, "seed").unwrap()).filter(|&(_, s)| s == 0.0).map(|(v, _)| v).collect();
    assert_eq!(seed0, joint);

    // determinism: the same study run as two shards elsewhere gives the identical frame
    let results2 = dir.join("results2");
    for i in 1..=2 {
        let sum = study::run(&s, &opts(&results2, &cache, Shard { index: i, count: 2 })).unwrap();
        assert!(sum.failed.is_empty() && !sum.ran.is_empty());
    }
    let df2 = study::collect(&results2).unwrap();
    assert!(df2.equals_missing(&df), "same seeds, different frame:\n{df}\n{df2}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cell_keys_carry_the_quantizer_and_text_versions() {
    let dir = temp_dir("study-keys");
    let toml = write(
        &dir,
        "k.toml",
        &format!(
            "name = \"k\"\nquantizers = [\"rtn:bits=4\", \"gptq:bits=4,samples=4,seqlen=16\"]\nmodels = [\"{}\"]\n[[analyses]]\nname = \"perplexity\"\noptions = {{ text = \"wikitext2\" }}\n[[analyses]]\nname = \"perplexity\"\nid = \"ppl_random\"\noptions = {{ text = \"random\" }}\n",
            fixture("llama").display()
        ),
    );
    let s = Study::load(&toml).unwrap();
    let key = |spec: &str, id: &str| s.cells().into_iter().find(|c| c.spec.to_string() == spec && s.analyses[c.analysis].id == id).unwrap().key;
    // a changed quantizer (GPTQ v2) or text (WikiText-2 rows) must give new cells, never reuse old ones
    assert!(key("gptq:bits=4,samples=4,seqlen=16", "ppl_random").ends_with("|algo=gptq-v2-data2"), "{}", key("gptq:bits=4,samples=4,seqlen=16", "ppl_random"));
    assert!(key("rtn:bits=4", "perplexity").ends_with(&format!("|data=wikitext2-v{}", qi::data::WIKITEXT2_TEXT_VERSION)));
    // first versions leave the key as it was, so cells made before versions existed stay valid
    let plain = key("rtn:bits=4", "ppl_random");
    assert!(!plain.contains("|algo=") && !plain.contains("|data="), "{plain}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_result_cell_is_redone_never_counted_as_done() {
    let dir = temp_dir("study-damage");
    let s = Study::load(&small_spec(&dir)).unwrap();
    let (results, cache) = (dir.join("results"), dir.join("cache"));
    assert!(study::run(&s, &opts(&results, &cache, Shard::default())).unwrap().failed.is_empty());
    let clean = study::collect(&results).unwrap();
    let cells = s.cells();
    let twin_cells: Vec<&study::Cell> = cells.iter().filter(|c| c.spec != qi::quant::QuantSpec::None).collect();
    let (a, b, c, d) = (twin_cells[0], twin_cells[1], twin_cells[2], twin_cells[3]);
    // truncated parquet; one flipped bit in a value (size unchanged: reads fine, wrong number);
    // a sidecar that is gone; a sidecar of another cell copied in
    let pa = a.parquet(&results);
    let bytes = std::fs::read(&pa).unwrap();
    std::fs::write(&pa, &bytes[..bytes.len() / 2]).unwrap();
    let pb = b.parquet(&results);
    let mut bytes = std::fs::read(&pb).unwrap();
    let k = bytes.len() / 3;
    bytes[k] ^= 0x01;
    std::fs::write(&pb, &bytes).unwrap();
    std::fs::remove_file(c.sidecar(&results)).unwrap();
    std::fs::copy(a.sidecar(&results), d.sidecar(&results)).unwrap();
    for x in [a, b, c, d] {
        assert!(matches!(x.state(&results), study::CellState::Damaged(_)), "{}", x.stem);
    }
    // collect names every damaged file; the lenient form keeps the rest
    let err = format!("{:#}", study::collect(&results).unwrap_err());
    assert!(err.contains("4 result cell(s)") && err.contains(&a.stem) && err.contains(&b.stem), "{err}");
    let (rest, bad) = study::collect_lenient(&results).unwrap();
    assert_eq!((rest.height(), bad.len()), (clean.height() - 4 * 2, 4));
    // the next run redoes exactly those four and the tables are those of the clean run
    let sum = study::run(&s, &opts(&results, &cache, Shard::default())).unwrap();
    let mut redone: Vec<&str> = sum.ran.iter().map(|r| r.key.as_str()).collect();
    redone.sort();
    let mut want = vec![a.key.as_str(), b.key.as_str(), c.key.as_str(), d.key.as_str()];
    want.sort();
    assert_eq!((redone, sum.skipped), (want, cells.len() - 4));
    assert!(study::collect(&results).unwrap().equals_missing(&clean));
    // cells from before digests were recorded are adopted only when their rows are all there
    let side = a.sidecar(&results);
    let mut rec: study::CellRecord = serde_json::from_str(&std::fs::read_to_string(&side).unwrap()).unwrap();
    rec.parquet = None;
    std::fs::write(&side, serde_json::to_string(&rec).unwrap()).unwrap();
    rec.rows += 1;
    std::fs::write(b.sidecar(&results), serde_json::to_string(&study::CellRecord { key: b.key.clone(), file: rec.file.clone(), ..rec.clone() }).unwrap()).unwrap();
    assert!(matches!(a.state(&results), study::CellState::Damaged(_)));
    let (adopted, refused) = study::adopt_unrecorded(&results).unwrap();
    assert_eq!((adopted, refused.len()), (1, 1));
    assert!(refused[0].1.contains("the sidecar records"), "{refused:?}");
    assert!(a.is_done(&results) && !b.is_done(&results));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A full disk, simulated where a cell's temporary file would go: a link to /dev/full, where
/// every write fails with ENOSPC.
#[test]
fn a_full_disk_fails_the_cell_cleanly_and_the_next_run_completes_it() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full on this system");
        return;
    }
    let dir = temp_dir("study-full");
    let s = Study::load(&small_spec(&dir)).unwrap();
    let (results, cache) = (dir.join("results"), dir.join("cache"));
    std::fs::create_dir_all(&results).unwrap();
    let victim = s.cells().into_iter().find(|c| c.spec != qi::quant::QuantSpec::None).unwrap();
    let tmp = results.join(format!(".{}.parquet.tmp-{}", victim.stem, std::process::id()));
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    let sum = study::run(&s, &opts(&results, &cache, Shard::default())).unwrap();
    assert_eq!(sum.failed.len(), 1, "{:?}", sum.failed);
    assert_eq!(sum.failed[0].0, victim.stem);
    assert!(sum.failed[0].1.to_lowercase().contains("no space left"), "{}", sum.failed[0].1);
    assert!(!victim.parquet(&results).exists() && !victim.sidecar(&results).exists() && !tmp.exists(), "nothing half-written stays");
    let sum = study::run(&s, &opts(&results, &cache, Shard::default())).unwrap();
    assert_eq!((sum.ran.len(), sum.failed.len()), (1, 0));
    assert!(victim.is_done(&results));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn diagonal_concat_fills_missing_columns_with_nulls() {
    use qi::analysis::{Row, Tidy};
    let rtn: qi::quant::QuantSpec = "rtn:bits=4".parse().unwrap();
    let mut a = Tidy::new("m");
    a.push(Row::new(&rtn, "score", 1.0).layer(2).head(1).label("k", 3usize));
    let mut b = Tidy::new("m");
    b.push(Row::new(&rtn, "ppl", 5.0).label("k", "x").ci(4.0, 6.0));
    let df = study::concat_diagonal(&[a.to_frame().unwrap(), b.to_frame().unwrap()]).unwrap();
    let cols: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
    assert_eq!(cols, ["model", "method", "spec", "bits", "layer", "head", "k", "metric", "value", "ci_low", "ci_high"]);
    assert_eq!(str_values(&df, "k").unwrap(), ["3", "x"], "int and string labels become strings");
    let layer = f64_values(&df, "layer").unwrap();
    assert!(layer[0] == 2.0 && layer[1].is_nan());
    assert!(f64_values(&df, "ci_low").unwrap()[0].is_nan());
}

#[test]
fn summary_has_the_original_studys_shape() {
    use qi::analysis::{Row, Tidy};
    use qi::quant::QuantSpec;
    let rtn: QuantSpec = "rtn:bits=4".parse().unwrap();
    let mut t = Tidy::new("m");
    t.push(Row::new(&QuantSpec::None, "perplexity", 30.0));
    t.push(Row::new(&rtn, "perplexity", 40.0));
    for (seed, v) in [(0, 0.5), (1, 1.0)] {
        t.push(Row::new(&rtn, "survival", v).label("score", "stripe").label("rule", "threshold").seed(seed));
        t.push(Row::new(&rtn, "survival", 0.0).label("score", "mul").label("rule", "threshold").seed(seed));
        t.push(Row::new(&rtn, "pearson_r", 0.9).label("score", "stripe").seed(seed));
        // the features analysis: only the `survived` share is the feature-survival column
        t.push(Row::new(&rtn, "share", 0.2 + 0.1 * seed as f64).label("category", "survived").seed(seed));
        t.push(Row::new(&rtn, "share", 0.7).label("category", "destroyed").seed(seed));
    }
    // attention: two heads per seed, averaged within a seed first (seed means 0.2 and 0.4)
    for (seed, heads) in [(0, [0.1, 0.3]), (1, [0.2, 0.6])] {
        for (h, v) in heads.into_iter().enumerate() {
            t.push(Row::new(&rtn, "js_divergence", v).layer(0).head(h).seed(seed));
        }
    }
    // logit lens: only the `all` prompt category counts (the 100s would move the mean)
    for (seed, layers) in [(0, [1.0, 3.0]), (1, [2.0, 2.0])] {
        for (l, v) in layers.into_iter().enumerate() {
            t.push(Row::new(&rtn, "kl_ref_quant", v).layer(l).label("category", "all").seed(seed));
            t.push(Row::new(&rtn, "kl_ref_quant", 100.0).layer(l).label("category", "induction").seed(seed));
        }
    }
    let params = std::collections::BTreeMap::from([("m".to_string(), 1234usize)]);
    let s = qi::study::summary(&t.to_frame().unwrap(), &params).unwrap();
    assert_eq!(s.height(), 2);
    assert_eq!(qi::analysis::tidy::str_values(&s, "spec").unwrap(), ["none", "rtn:bits=4"]);
    let f = |c: &str| qi::analysis::tidy::f64_values(&s, c).unwrap();
    assert_eq!(f("perplexity"), [30.0, 40.0]);
    assert_eq!(f("params"), [1234.0, 1234.0]);
    assert!(f("survival")[0].is_nan());
    assert_eq!(f("survival")[1], 0.75);
    // two seeds: t(0.975, 1) · sd / √2 = 12.706 · 0.35355 / 1.41421
    assert!((f("survival_ci")[1] - 12.706 * (0.125f64).sqrt() / 2f64.sqrt()).abs() < 1e-9);
    assert_eq!(f("score_r")[1], 0.9);
    assert!(f("feature_survival")[0].is_nan());
    assert!((f("feature_survival")[1] - 0.25).abs() < 1e-12);
    assert_eq!(f("n_seeds")[1], 2.0);
    // one sample per seed: t(0.975, 1) · sd(0.2, 0.4) / √2; pooling the four heads gives another CI
    assert!((f("attention_jsd")[1] - 0.3).abs() < 1e-12);
    assert!((f("attention_jsd_ci")[1] - 12.706 * 0.02f64.sqrt() / 2f64.sqrt()).abs() < 1e-9, "{}", f("attention_jsd_ci")[1]);
    assert!((f("lens_kl")[1] - 2.0).abs() < 1e-12 && f("lens_kl_ci")[1].abs() < 1e-12);
    assert!(f("lens_kl")[0].is_nan() && f("attention_jsd")[0].is_nan());
    assert_eq!(f("perplexity_ratio"), [1.0, 40.0 / 30.0]);
    // against size: the reference is left out, and the CI (0.75 ± 3.18) is clamped to [0, 1]
    let a = qi::study::against_size(&s, "survival", Some((0.0, 1.0)), false).unwrap();
    let g = |c: &str| qi::analysis::tidy::f64_values(&a, c).unwrap();
    assert_eq!(qi::analysis::tidy::str_values(&a, "spec").unwrap(), ["rtn:bits=4"]);
    assert_eq!((g("params"), g("value"), g("ci_low"), g("ci_high")), (vec![1234.0], vec![0.75], vec![0.0], vec![1.0]));
    let unclamped = qi::study::against_size(&s, "survival", None, false).unwrap();
    assert!(qi::analysis::tidy::f64_values(&unclamped, "ci_high").unwrap()[0] > 3.0);
    // perplexity has no CI column: no error bars
    let p = qi::study::against_size(&s, "perplexity_ratio", None, true).unwrap();
    assert!(p.column("ci_low").is_err() && p.height() == 2);
}

#[test]
fn the_peak_memory_restarts_at_each_phase() {
    if !study::reset_peak_rss() {
        eprintln!("skipped: this kernel does not reset the peak resident size");
        return;
    }
    const MB: u64 = 1024;
    let base = study::peak_rss_kb().unwrap();
    let block = vec![1u8; 512 << 20]; // filled, so every page is resident
    let high = study::peak_rss_kb().unwrap();
    assert!(high >= base + 400 * MB, "peak {high} kB after 512 MB on {base} kB");
    assert_eq!(std::hint::black_box(&block)[12345], 1);
    drop(block);
    assert!(study::reset_peak_rss());
    let after = study::peak_rss_kb().unwrap();
    assert!(after + 400 * MB <= high, "after a reset the peak {after} kB still counts the freed 512 MB ({high} kB)");
}
