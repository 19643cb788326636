//! Faults injected into what qi caches and resumes from, with real `qi` processes: concurrent
//! writers of one twin, a study killed mid-run, damaged twins and result cells found by
//! `qi cache verify` / `qi study verify` / `qi study collect`.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn qi(args: &[&str], cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qi"));
    c.args(args).current_dir(ROOT).env("QI_CACHE", cache);
    c
}

fn run(args: &[&str], cache: &Path) -> Output {
    qi(args, cache).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qi-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture() -> String {
    format!("{ROOT}/data/fixtures/llama")
}

/// A study on the llama fixture: reference + RTN 8/4 × perplexity on random tokens × 3 seeds.
fn small_study(dir: &Path) -> PathBuf {
    let p = dir.join("s.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"s\"\nseeds = 3\nbits = [8, 4]\nquantizers = [\"rtn\"]\nmodels = [\"{}\"]\n[data]\nseqlen = 8\n[[analyses]]\nname = \"perplexity\"\noptions = {{ text = \"random\", max_windows = 2, batch_size = 2 }}\n",
            fixture()
        ),
    )
    .unwrap();
    p
}

#[test]
fn two_processes_never_both_quantize_one_twin() {
    let dir = scratch("concurrent");
    let cache = dir.join("cache");
    let m = qi::load_model(&fixture()).unwrap();
    let spec: qi::quant::QuantSpec = "rtn:bits=4".parse().unwrap();
    let entry = qi::twin_cache::twin_dir(&cache, &m, &spec, &Default::default()).unwrap();
    // hold the entry's lock, start two writers: both must wait rather than write
    let held = qi::integrity::lock(&qi::twin_cache::lock_path(&entry)).expect("lock");
    let spawn = || qi(&["quantize", "--model", &fixture(), "--quant", "rtn:bits=4", "--cache"], &cache).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!entry.exists(), "a writer went ahead while the lock was held");
    drop(held);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success(), "{}\n{}", text(&a), text(&b));
    let (ta, tb) = (text(&a), text(&b));
    assert!(ta.contains("waiting for another process") && tb.contains("waiting for another process"), "{ta}\n{tb}");
    let quantized = [&ta, &tb].iter().filter(|t| t.contains("rtn:bits=4: quantized")).count();
    let cached = [&ta, &tb].iter().filter(|t| t.contains("rtn:bits=4: cached twin")).count();
    assert_eq!((quantized, cached), (1, 1), "{ta}\n{tb}");
    let v = run(&["cache", "verify"], &cache);
    assert!(v.status.success() && text(&v).contains("1 twin(s)") && text(&v).contains("1 sound, 0 damaged"), "{}", text(&v));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cache_verify_finds_a_damaged_twin_and_the_next_use_rebuilds_it() {
    let dir = scratch("cache-verify");
    let cache = dir.join("cache");
    let q = run(&["quantize", "--model", &fixture(), "--quant", "rtn:bits=4", "--cache"], &cache);
    assert!(q.status.success(), "{}", text(&q));
    let m = qi::load_model(&fixture()).unwrap();
    let entry = qi::twin_cache::twin_dir(&cache, &m, &"rtn:bits=4".parse().unwrap(), &Default::default()).unwrap();
    let st = entry.join(qi::compact::FILE);
    let mut b = std::fs::read(&st).unwrap();
    let n = b.len();
    b[n - 100] ^= 0x40;
    std::fs::write(&st, b).unwrap();
    let v = run(&["cache", "verify"], &cache);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    assert!(text(&v).contains(&format!("{}: expected", qi::compact::FILE)) && text(&v).contains("1 damaged"), "{}", text(&v));
    // the next use reports it, re-quantizes and leaves a sound entry
    let q = run(&["quantize", "--model", &fixture(), "--quant", "rtn:bits=4", "--cache"], &cache);
    assert!(q.status.success() && text(&q).contains("cannot be trusted") && text(&q).contains("rtn:bits=4: quantized"), "{}", text(&q));
    assert!(run(&["cache", "verify"], &cache).status.success());
    // --remove-damaged and clear
    std::fs::write(&st, b"").unwrap();
    let v = run(&["cache", "verify", "--remove-damaged"], &cache);
    assert!(v.status.success() && text(&v).contains("removed 1 damaged"), "{}", text(&v));
    assert!(!entry.exists());
    assert!(run(&["quantize", "--model", &fixture(), "--quant", "rtn:bits=4", "--cache"], &cache).status.success());
    let c = run(&["cache", "clear"], &cache);
    assert!(c.status.success() && text(&c).contains("removed 1 twin(s)"), "{}", text(&c));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn collect_leaves_out_a_damaged_cell_by_name_and_verify_finds_it() {
    let dir = scratch("collect");
    let (cache, results) = (dir.join("cache"), dir.join("results"));
    let spec = small_study(&dir);
    let r = run(&["study", "run", spec.to_str().unwrap(), "--results", results.to_str().unwrap(), "--json"], &cache);
    assert!(r.status.success(), "{}", text(&r));
    // --json: the summary alone on stdout, one record per cell run
    let summary: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&r)));
    assert_eq!((summary["ran"].as_array().map(Vec::len), summary["skipped"].as_u64()), (Some(9), Some(0)), "{summary}");
    assert!(summary["ran"].as_array().unwrap().iter().all(|c| c["rows"].as_u64() == Some(2) && c["key"].is_string()), "{summary}");
    let files = qi::study::result_files(&results).unwrap();
    assert_eq!(files.len(), 9);
    let victim = &files[4];
    let bytes = std::fs::read(victim).unwrap();
    std::fs::write(victim, &bytes[..bytes.len() - 7]).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    let out = dir.join("all.parquet");
    let c = run(&["study", "collect", "--results", results.to_str().unwrap(), "--out", out.to_str().unwrap()], &cache);
    assert_eq!(c.status.code(), Some(1), "{}", text(&c));
    assert!(text(&c).contains(&name) && text(&c).contains("from 8 cells"), "{}", text(&c));
    assert_eq!(qi::analysis::tidy::read_parquet(&out).unwrap().height(), 8 * 2, "the other cells are written");
    let c = run(&["study", "collect", "--results", results.to_str().unwrap(), "--out", out.to_str().unwrap(), "--allow-missing"], &cache);
    assert!(c.status.success(), "{}", text(&c));
    let v = run(&["study", "verify", "--results", results.to_str().unwrap()], &cache);
    assert_eq!(v.status.code(), Some(1));
    assert!(text(&v).contains(&name) && text(&v).contains("8 cell(s) check out, 1 cannot be trusted"), "{}", text(&v));
    let plan = run(&["study", "plan", spec.to_str().unwrap(), "--results", results.to_str().unwrap()], &cache);
    assert_eq!(text(&plan).lines().filter(|l| l.starts_with("redo")).count(), 1, "{}", text(&plan));
    let as_json = |args: &[&str]| -> (Option<i32>, serde_json::Value) {
        let o = run(args, &cache);
        (o.status.code(), serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&o))))
    };
    let (code, p) = as_json(&["study", "plan", spec.to_str().unwrap(), "--results", results.to_str().unwrap(), "--json"]);
    let states: Vec<&str> = p["cells"].as_array().unwrap().iter().map(|c| c["state"].as_str().unwrap()).collect();
    assert_eq!((code, states.len(), states.iter().filter(|s| **s == "redo").count(), p["done"].as_u64()), (Some(0), 9, 1, Some(8)), "{p}");
    let (code, v) = as_json(&["study", "verify", "--results", results.to_str().unwrap(), "--json"]);
    assert_eq!((code, v["sound"].as_u64()), (Some(1), Some(8)), "{v}");
    assert!(v["damaged"][0]["file"].as_str().unwrap().ends_with(&name), "{v}");
    let (code, c) = as_json(&["study", "collect", "--results", results.to_str().unwrap(), "--out", out.to_str().unwrap(), "--allow-missing", "--json"]);
    assert_eq!((code, c["rows"].as_u64(), c["cells"].as_u64(), c["left_out"].as_array().map(Vec::len)), (Some(0), Some(16), Some(8), Some(1)), "{c}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_study_killed_mid_run_resumes_to_the_tables_of_an_uninterrupted_run() {
    let dir = scratch("kill");
    let spec = small_study(&dir);
    let clean = dir.join("clean");
    let r = run(&["study", "run", spec.to_str().unwrap(), "--results", clean.to_str().unwrap()], &dir.join("cache-clean"));
    assert!(r.status.success(), "{}", text(&r));
    let want = qi::study::collect(&clean).unwrap();
    // kill -9 at several points of a run (while quantizing and storing a twin, while writing
    // cells), resuming each time from what the killed run left
    let (results, cache) = (dir.join("results"), dir.join("cache"));
    for delay_ms in [30u64, 80, 150, 250, 400] {
        let mut child = qi(&["study", "run", spec.to_str().unwrap(), "--results", results.to_str().unwrap()], &cache).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let r = run(&["study", "run", spec.to_str().unwrap(), "--results", results.to_str().unwrap()], &cache);
    assert!(r.status.success(), "{}", text(&r));
    let got = qi::study::collect(&results).unwrap();
    assert!(got.equals_missing(&want), "after kills:\n{got}\nuninterrupted:\n{want}");
    assert!(run(&["cache", "verify"], &cache).status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}
