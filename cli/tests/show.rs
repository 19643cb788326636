//! `qi show` on a committed results table.
use std::process::Command;

fn qi(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qi")).args(args).current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).output().unwrap()
}

#[test]
fn show_prints_the_chosen_metrics_as_markdown_and_names_a_bad_column() {
    let table = "data/results/07_sae_features_smollm2.parquet";
    let out = qi(&["show", table, "--metric", "sae_fve", "--columns", "spec,metric,value"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("| spec") && lines[0].contains("| metric") && lines[0].contains("| value"), "{text}");
    assert!(lines.iter().skip(2).all(|l| l.contains("| sae_fve")), "only the chosen metric: {text}");
    assert!(lines.iter().any(|l| l.starts_with("| none ")), "{text}");

    // --json: every row of the metric, with the table's own numbers
    let out = qi(&["show", table, "--metric", "sae_fve", "--columns", "spec,metric,value", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let df = qi::analysis::tidy::read_parquet(&std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(table)).unwrap();
    let df = qi::analysis::tidy::filter_eq(&df, "metric", "sae_fve").unwrap();
    let (specs, values) = (qi::analysis::tidy::str_values(&df, "spec").unwrap(), qi::analysis::tidy::f64_values(&df, "value").unwrap());
    assert_eq!(rows.len(), specs.len());
    for (r, (s, v)) in rows.iter().zip(specs.iter().zip(&values)) {
        assert_eq!((r["spec"].as_str().unwrap(), r["metric"].as_str().unwrap(), r["value"].as_f64().unwrap()), (s.as_str(), "sae_fve", *v), "{r}");
        assert_eq!(r.as_object().unwrap().len(), 3, "only the chosen columns: {r}");
    }

    let bad = qi(&["show", table, "--columns", "spec,nope"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--columns") && err.contains("'nope'") && err.contains("07_sae_features_smollm2.parquet"), "{err}");

    let missing = qi(&["show", "data/results/no_such_table.parquet"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no_such_table.parquet"));
}
