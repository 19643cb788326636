//! `qi report`: the result blocks of the docs match the committed results, and a stale block is
//! found, named and rewritten.
use std::path::Path;
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn qi(args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_qi")).args(args).current_dir(ROOT).output().unwrap();
    (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// A one-model perplexity study on the llama fixture (`quantizers` is the TOML line(s) naming
/// them), run into `DIR/results`; returns (DIR, the results folder). The spec is `DIR/tiny.toml`.
fn tiny_study(tag: &str, seeds: u32, quantizers: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("tiny.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"tiny\"\nseeds = {seeds}\n{quantizers}\nmodels = [{{ source = \"{ROOT}/data/fixtures/llama\", name = \"llama\" }}]\n[data]\nseqlen = 8\n[[analyses]]\nname = \"perplexity\"\noptions = {{ text = \"random\", max_windows = 2, batch_size = 2 }}\n"
        ),
    )
    .unwrap();
    let results = dir.join("results");
    let (code, out) = qi(&["study", "run", spec.to_str().unwrap(), "--results", results.to_str().unwrap(), "--no-cache"]);
    assert_eq!(code, Some(0), "{out}");
    (dir, results)
}

#[test]
fn the_docs_tables_match_the_committed_results() {
    // every Markdown file of the repository that holds a report block
    let mut files = vec![Path::new(ROOT).join("README.md"), Path::new(ROOT).join("CONTRIBUTING.md")];
    files.extend(std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "md")));
    let mut checked = 0;
    for f in files {
        if !std::fs::read_to_string(&f).unwrap().contains("<!-- qi:report ") {
            continue;
        }
        let (code, out) = qi(&["report", f.to_str().unwrap(), "--check"]);
        assert_eq!(code, Some(0), "{}: {out}", f.display());
        assert!(out.contains("every report block matches"), "{out}");
        checked += 1;
    }
    assert!(checked >= 1, "no report block found in the docs");
}

#[test]
fn a_stale_block_is_named_and_rewritten() {
    let (dir, results) = tiny_study("qi-report", 1, "bits = [4]\nquantizers = [\"rtn\"]");
    let md = dir.join("doc.md");
    let block = |body: &str| format!("# Doc\n\ntext before\n<!-- qi:report study tiny.toml results -->\n{body}<!-- /qi:report -->\ntext after\n");
    std::fs::write(&md, block("| made up | 1.00 |\n")).unwrap();
    // --json: stdout is one value naming the stale block, the exit code unchanged
    let o = Command::new(env!("CARGO_BIN_EXE_qi")).args(["report", md.to_str().unwrap(), "--check", "--json"]).current_dir(ROOT).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    assert_eq!(v["stale"], serde_json::json!(["study tiny.toml results"]));
    assert_eq!(v["check"], true);
    let (code, out) = qi(&["report", md.to_str().unwrap(), "--check"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("block `study tiny.toml results` differs"), "{out}");
    assert!(std::fs::read_to_string(&md).unwrap().contains("made up"), "--check must not write");
    let (code, out) = qi(&["report", md.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.starts_with("# Doc\n\ntext before\n") && text.ends_with("<!-- /qi:report -->\ntext after\n"), "{text}");
    let row = text.lines().find(|l| l.starts_with("| llama ") && l.contains("`rtn:bits=4`")).unwrap_or_else(|| panic!("{text}"));
    // the perplexity in the row is the one in the results
    let df = qi::study::collect(&results).unwrap();
    let specs = qi::analysis::tidy::str_values(&df, "spec").unwrap();
    let vals = qi::analysis::tidy::f64_values(&df, "value").unwrap();
    let ppl = (0..specs.len()).find(|&i| specs[i] == "rtn:bits=4").map(|i| vals[i]).unwrap();
    assert!(row.contains(&format!("| {ppl:.2} |")), "{row} vs {ppl}");
    let (code, out) = qi(&["report", md.to_str().unwrap(), "--check"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!Path::new(&md).with_extension("md.tmp").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn study_memory_takes_each_phase_peak_from_the_cells() {
    let (dir, results) = tiny_study("qi-report-mem", 2, "bits = [4]\nquantizers = [\"rtn\"]");
    // Hand-made peaks (the sidecar's timing fields are not part of the checked digest). The twin
    // is made in one cell and loaded from the cache in the other, whose analysis peak is larger;
    // one reference cell has no record. Mixing making with loading, or taking the first cell's
    // analysis peak, prints other numbers.
    const GIB: u64 = 1 << 20; // kB
    for f in std::fs::read_dir(&results).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let Some(seed) = v["seed"].as_u64() else { continue };
        let o = v.as_object_mut().unwrap();
        o.remove("twin_peak_rss_kb");
        o.remove("peak_rss_kb");
        match (o["spec"].as_str().unwrap(), seed) {
            ("none", 0) => {
                o.insert("peak_rss_kb".into(), (GIB / 2).into());
            }
            ("none", _) => {}
            (_, 0) => {
                o.insert("twin_origin".into(), "quantized".into());
                o.insert("twin_s".into(), 125.0.into());
                o.insert("twin_peak_rss_kb".into(), (3 * GIB).into());
                o.insert("peak_rss_kb".into(), GIB.into());
            }
            _ => {
                o.insert("twin_origin".into(), "cached".into());
                o.insert("twin_s".into(), 0.5.into());
                o.insert("twin_peak_rss_kb".into(), (2 * GIB).into());
                o.insert("peak_rss_kb".into(), (3 * GIB / 2).into());
            }
        }
        std::fs::write(&f, serde_json::to_string(&v).unwrap()).unwrap();
    }
    let md = dir.join("doc.md");
    std::fs::write(&md, "<!-- qi:report study-memory tiny.toml results -->\n<!-- /qi:report -->\n").unwrap();
    let (code, out) = qi(&["report", md.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    let text = std::fs::read_to_string(&md).unwrap();
    // the time is the quantizing cell's (125 s), not the loading one's (0.5 s)
    assert!(text.contains("| llama | reference | – | – | – | 0.50 GiB (perplexity) | 1 of 2 |\n"), "{text}");
    assert!(text.contains("| llama | `rtn:bits=4` | 125 s | 3.00 GiB | 2.00 GiB | 1.50 GiB (perplexity) | 2 of 2 |\n"), "{text}");
    // a damaged cell is named, not skipped
    let parquet = std::fs::read_dir(&results).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "parquet")).unwrap();
    std::fs::write(&parquet, b"not a parquet file").unwrap();
    let (code, out) = qi(&["report", md.to_str().unwrap(), "--check"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(parquet.file_name().unwrap().to_str().unwrap()), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn study_perplexity_prints_each_twins_recorded_bits_and_refuses_a_partial_table() {
    let (dir, results) = tiny_study("qi-report-ppl", 1, "quantizers = [\"rtn:bits=8\", \"rtn:bits=3\"]");
    let md = dir.join("doc.md");
    std::fs::write(&md, "<!-- qi:report study-perplexity tiny.toml results -->\n<!-- /qi:report -->\n").unwrap();
    let (code, out) = qi(&["report", md.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    let text = std::fs::read_to_string(&md).unwrap();
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| `")).collect();
    assert_eq!(rows.len(), 3, "{text}");
    // the reference first, then the twins in the study's order
    assert!(rows[0].starts_with("| `none` | 32 |") && rows[0].ends_with("| +0.00 |"), "{text}");
    assert!(rows[1].starts_with("| `rtn:bits=8` |") && rows[2].starts_with("| `rtn:bits=3` |"), "{text}");
    // bits per weight are what `qi quantize --json` reports for the same twin (codes plus a
    // scale and zero per row), not the spec's nominal 3
    let o = Command::new(env!("CARGO_BIN_EXE_qi"))
        .args(["quantize", "--model", &format!("{ROOT}/data/fixtures/llama"), "--quant", "rtn:bits=3", "--out", dir.join("q").to_str().unwrap(), "--json"])
        .current_dir(ROOT)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    let bits = v["bits_per_weight"].as_f64().unwrap();
    assert!(bits > 3.05, "{bits}");
    assert!(rows[2].starts_with(&format!("| `rtn:bits=3` | {bits:.2} |")), "{} vs {bits}", rows[2]);
    // Δ is this row's perplexity minus the reference's, both as the cells hold them
    let df = qi::study::collect(&results).unwrap();
    let (specs, vals, metrics) = (qi::analysis::tidy::str_values(&df, "spec").unwrap(), qi::analysis::tidy::f64_values(&df, "value").unwrap(), qi::analysis::tidy::str_values(&df, "metric").unwrap());
    let ppl = |s: &str| (0..specs.len()).find(|&i| specs[i] == s && metrics[i] == "perplexity").map(|i| vals[i]).unwrap();
    assert!(rows[2].ends_with(&format!("| {:.2} | {:+.2} |", ppl("rtn:bits=3"), ppl("rtn:bits=3") - ppl("none"))), "{}", rows[2]);
    // a cell without recorded bits is named; a cell not run yet makes the table an error, not a shorter table
    let sidecars: Vec<_> = std::fs::read_dir(&results).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    let eight = sidecars.iter().find(|p| p.file_name().unwrap().to_str().unwrap().contains("rtn_bits_8")).unwrap().clone();
    let kept = std::fs::read_to_string(&eight).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&kept).unwrap();
    v.as_object_mut().unwrap().remove("bits_per_weight");
    std::fs::write(&eight, serde_json::to_string(&v).unwrap()).unwrap();
    let (code, out) = qi(&["report", md.to_str().unwrap(), "--check"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no bits_per_weight") && out.contains(eight.file_name().unwrap().to_str().unwrap()), "{out}");
    std::fs::write(&eight, kept).unwrap();
    std::fs::remove_file(&eight).unwrap();
    std::fs::remove_file(eight.with_extension("parquet")).unwrap();
    let (code, out) = qi(&["report", md.to_str().unwrap(), "--check"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not run yet") && out.contains("rtn:bits=8"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cost_table_takes_each_step_from_its_own_record() {
    // GPTQ draws C4 calibration text: a model with a tokenizer (SmolLM2 from the shared folder)
    let dir = std::env::temp_dir().join(format!("qi-costs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("tiny.toml"),
        "name = \"tiny\"\nseeds = 2\nquantizers = [\"rtn:bits=4\", \"gptq:bits=4,samples=2,seqlen=16\"]\nmodels = [{ source = \"shared:models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf\", name = \"smol\" }]\n[[analyses]]\nname = \"perplexity\"\noptions = { text = \"random\", seqlen = 8, max_windows = 2, batch_size = 2 }\n",
    )
    .unwrap();
    let results = dir.join("results");
    let (code, out) = qi(&["study", "run", dir.join("tiny.toml").to_str().unwrap(), "--results", results.to_str().unwrap(), "--no-cache"]);
    assert_eq!(code, Some(0), "{out}");
    // what the cells recorded: the GPTQ twin's time (charged to the first of its two cells, the
    // other records 0; not the RTN twin's), the reference's perplexity over both seeds (not a twin's)
    let sidecars = |spec: &str| -> Vec<serde_json::Value> {
        let files = std::fs::read_dir(&results).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "json") && p.file_name().unwrap().to_str().unwrap().starts_with(&format!("smol__{spec}__")));
        files.map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap()).collect()
    };
    let field = |v: &[serde_json::Value], k: &str| v.iter().map(|c| c[k].as_f64().unwrap()).collect::<Vec<_>>();
    let (gptq, rtn, reference) = (sidecars("gptq_bits_4_samples_2_seqlen_16"), sidecars("rtn_bits_4"), sidecars("none"));
    let secs = |s: f64| if s < 10.0 { format!("{s:.2} s") } else { format!("{s:.0} s") };
    let gptq_s = field(&gptq, "twin_s").into_iter().fold(0.0, f64::max);
    let ppl_s: f64 = field(&reference, "analysis_s").iter().sum();
    assert!(gptq.len() == 2 && gptq.iter().all(|c| c["twin_origin"] == "quantized") && field(&gptq, "twin_s").contains(&0.0), "{gptq:?}");
    assert_ne!(secs(gptq_s), secs(field(&rtn, "twin_s").into_iter().fold(0.0, f64::max)), "the test must tell the two twins' times apart");
    let model = "/any/folder/SmolLM2-135M-Instruct.Q4_1.gguf"; // matched by file name
    std::fs::write(dir.join("fwd.jsonl"), format!("{{\"model\":\"{model}\",\"params\":2.4e6,\"batch\":8,\"seq\":128,\"median_s\":0.5,\"load_s\":0.25,\"peak_rss_kb\":2097152}}\n")).unwrap();
    std::fs::write(dir.join("twins.jsonl"), format!("{{\"model\":\"{model}\",\"spec\":\"nf4\",\"compact_dir_bytes\":9e6}}\n{{\"model\":\"{model}\",\"spec\":\"rtn:bits=4\",\"compact_dir_bytes\":3e6}}\n")).unwrap();
    // forward rounds 0.5, 2.0, 0.8: median 0.80 (the mean would be 1.10)
    let round = |job: &str, q: f64, p: f64| format!("{{\"round\":1,\"job\":\"{job}\",\"model\":\"{model}\",\"peer\":\"PyTorch\",\"qi_s\":{q},\"peer_s\":{p}}}\n");
    std::fs::write(dir.join("peers.jsonl"), round("forward 8 × 128, cached", 1.0, 2.0) + &round("forward 8 × 128, cached", 2.0, 1.0) + &round("forward 8 × 128, cached", 0.8, 1.0) + &round("whole job", 3.0, 10.0)).unwrap();
    let args = |peers: bool| {
        let mut a = vec!["study", "costs", "tiny.toml", "--results", "results", "--forward", "fwd.jsonl", "--twins", "twins.jsonl"];
        if peers {
            a.extend(["--peers", "peers.jsonl"]);
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let o = Command::new(env!("CARGO_BIN_EXE_qi")).args(&a).current_dir(&dir).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let (code, out, err) = run(args(true));
    assert_eq!(code, Some(0), "{err}");
    let want = format!("| smol | 2 M | 0.25 s | 0.50 s | 0.80 | {} | – | {} (2 seeds) | 0.30 | 2.00 GiB | 3 MB |", secs(gptq_s), secs(ppl_s));
    assert!(out.contains(&want), "want {want}\n{out}");
    // the report block prints the same table
    std::fs::write(dir.join("doc.md"), "<!-- qi:report size-costs tiny.toml results fwd.jsonl twins.jsonl peers.jsonl -->\n<!-- /qi:report -->\n").unwrap();
    let (code, out) = qi(&["report", dir.join("doc.md").to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(std::fs::read_to_string(dir.join("doc.md")).unwrap().contains(&want));
    // without peers the ratios are –; a model without a forward line is an error naming it
    let (_, out, _) = run(args(false));
    assert!(out.contains("| 0.50 s | – |"), "{out}");
    std::fs::write(dir.join("fwd.jsonl"), "{\"model\":\"/elsewhere/other.gguf\",\"params\":1,\"batch\":8,\"seq\":128,\"median_s\":0.5,\"load_s\":0.25,\"peak_rss_kb\":1}\n").unwrap();
    let (code, _, err) = run(args(false));
    assert_eq!(code, Some(1));
    assert!(err.contains("fwd.jsonl") && err.contains("no forward line for smol"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
