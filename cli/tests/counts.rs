//! Zero counts are errors that name the option, never a NaN or an empty table with exit 0.
use std::process::Command;

fn qi(args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_qi")).args(args).current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).output().unwrap();
    (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn zero_counts_are_errors_naming_the_option() {
    let model = "data/fixtures/llama";
    // a model with a tokenizer, for --text (the tiny fixtures have none)
    let shared = std::env::var("QI_SHARED").unwrap_or_else(|_| "../shared".into());
    let smol = format!("{shared}/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let text = std::env::temp_dir().join(format!("qi-counts-{}.txt", std::process::id()));
    std::fs::write(&text, "one two three four five six seven eight nine ten ".repeat(20)).unwrap();
    let (code, out) = qi(&["perplexity", "--model", &smol, "--text", text.to_str().unwrap(), "--seqlen", "8", "--windows", "0"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("windows") && !out.contains("NaN"), "{out}");
    let (code, out) = qi(&["perplexity", "--model", &smol, "--text", text.to_str().unwrap(), "--seqlen", "0"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("seqlen"), "{out}");
    let parquet = std::env::temp_dir().join(format!("qi-counts-{}.parquet", std::process::id()));
    let (code, out) = qi(&["analyze", "induction", "--model", model, "--quant", "rtn:bits=4", "--seeds", "0", "--out", parquet.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("--seeds 0"), "{out}");
    let (code, out) = qi(&["analyze", "induction", "--model", model, "--quant", "rtn:bits=4", "--set", "n_seqs=0", "--out", parquet.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("n_seqs"), "{out}");
    assert!(!parquet.exists(), "no table is written on an error");
    // exit codes: 2 for what the argument parser rejects, 1 for what fails at run time
    let (code, out) = qi(&["perplexity", "--model", model, "--no-such-flag"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--no-such-flag"), "{out}");
    let (code, _) = qi(&["perplexity", "--model", model, "--windows", "-3"]);
    assert_eq!(code, Some(2), "a negative count is not a count");
    // a working call, so the failures above are about the counts
    let (code, out) = qi(&["perplexity", "--model", &smol, "--text", text.to_str().unwrap(), "--seqlen", "8", "--windows", "2"]);
    assert_eq!(code, Some(0), "{out}");
    std::fs::remove_file(&text).unwrap();
}
