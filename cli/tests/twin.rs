//! `--twin PATH`: a model quantized elsewhere (here by gguf-py's own Q8_0 quantizer,
//! `scripts/make_twin_fixture.py`) compared with the reference as a qi twin is.
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn qi(args: &[&str], cache: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qi")).args(args).current_dir(ROOT).env("QI_CACHE", cache).output().unwrap()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("qi-cli-twin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn an_external_q8_0_gguf_gives_what_qis_own_q8_0_twin_gives() {
    use qi::analysis::tidy::{f64_values, str_values};
    let dir = scratch("same");
    let out = dir.join("attention.parquet");
    let twin = "data/fixtures/llama/twin-q8_0.gguf";
    let r = qi(
        &["analyze", "attention", "--model", "data/fixtures/llama/model.gguf", "--quant", "q8_0", "--twin", twin, "--set", "n_seqs=4", "--set", "seq_len=16", "--out", out.to_str().unwrap()],
        &dir.join("cache"),
    );
    let log = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{log}");
    // the report reads the storage type of each linear from the file: Q8_0, 8.5 bits per weight
    assert!(log.contains(&format!("twin:{twin}: loaded in")) && log.contains("(8.50 bits/weight)"), "{log}");
    let df = qi::analysis::tidy::read_parquet(&out).unwrap();
    let (specs, methods, metrics, values) = (str_values(&df, "spec").unwrap(), str_values(&df, "method").unwrap(), str_values(&df, "metric").unwrap(), f64_values(&df, "value").unwrap());
    let label = format!("twin:{twin}");
    let of = |spec: &str| -> Vec<(String, f64)> { (0..df.height()).filter(|&i| specs[i] == spec && metrics[i] == "js_divergence").map(|i| (metrics[i].clone(), values[i])).collect() };
    let (ours, theirs) = (of("q8_0"), of(&label));
    assert!(!ours.is_empty() && ours.len() == theirs.len(), "{} q8_0 rows, {} twin rows", ours.len(), theirs.len());
    assert!((0..df.height()).filter(|&i| specs[i] == label).all(|i| methods[i] == "twin"));
    // qi's Q8_0 is byte-identical to gguf-py's, so the twins are the same model
    assert_eq!(ours, theirs);
    // and not the reference: Q8_0 moves the attention patterns a little
    assert!(theirs.iter().any(|(_, v)| *v > 0.0), "{theirs:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_twin_of_another_model_is_an_error_naming_the_mismatch() {
    let dir = scratch("mismatch");
    let out = dir.join("x.parquet");
    // the qwen2 fixture: another architecture
    let r = qi(&["analyze", "attention", "--model", "data/fixtures/llama/model.gguf", "--twin", "data/fixtures/qwen2/model.gguf", "--out", out.to_str().unwrap()], &dir);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("not comparable") && err.contains("architecture") && err.contains("data/fixtures/qwen2/model.gguf"), "{err}");
    assert!(!err.contains("panicked") && !out.exists(), "{err}");
    let r = qi(&["analyze", "attention", "--model", "data/fixtures/llama/model.gguf", "--twin", "data/fixtures/no/such.gguf", "--out", out.to_str().unwrap()], &dir);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("--twin data/fixtures/no/such.gguf"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
