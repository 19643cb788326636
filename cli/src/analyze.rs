//! `qi analyze NAME …`: any registered analysis, without a notebook, into a tidy parquet file.
use anyhow::{Context, Result};
use qi::analysis::{self, Comparison};
use qi::quant::QuantSpec;
use qi::quantize::QuantizeOptions;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// Analysis name (see the list below).
    pub name: String,
    /// Reference model: Hub id, HF directory, .safetensors or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Quantized twins to compare, one QuantSpec each (repeat the flag), e.g. --quant rtn:bits=4 --quant gptq:bits=4.
    #[arg(long = "quant", required_unless_present = "twin")]
    pub quant: Vec<String>,
    /// A model quantized elsewhere to compare as a twin (a llama.cpp GGUF, an HF directory another
    /// quantizer exported), labelled `twin:PATH`; repeat the flag. Same as `--quant twin:PATH`.
    #[arg(long = "twin", value_name = "PATH")]
    pub twin: Vec<String>,
    /// Run seeds 0..N (each seed draws new inputs where the analysis samples them).
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Analysis option KEY=VALUE (repeat); VALUE is JSON, or a plain string.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Analysis options as a JSON file (then --set on top).
    #[arg(long)]
    pub options: Option<PathBuf>,
    /// Name for the `model` column (default: the model's file stem or Hub id).
    #[arg(long)]
    pub name_as: Option<String>,
    /// Quantized-twin cache directory (default: QI_CACHE, else ~/.cache/qi/twins).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Quantize in memory only.
    #[arg(long)]
    pub no_cache: bool,
    /// Output parquet file (written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Print what was written (file, rows, specs, seeds, times) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The analyses and their options, for `qi analyze --help`.
pub fn long_help() -> String {
    let mut s = String::from("Analyses (options: --set KEY=VALUE; defaults in brackets):\n");
    for e in analysis::registry() {
        s.push_str(&format!("\n  {} — {}\n", e.name, e.about));
        let defaults = (e.defaults)();
        for line in e.options_doc.lines().filter(|l| !l.trim().is_empty()) {
            let key = line.split(':').next().unwrap_or("").trim();
            let d = defaults.get(key).map(|v| format!(" [{v}]")).unwrap_or_default();
            s.push_str(&format!("      {}{d}\n", line.trim()));
        }
    }
    s
}

/// Options JSON from the file and the KEY=VALUE pairs.
pub fn options_json(file: Option<&Path>, set: &[String]) -> Result<serde_json::Value> {
    let mut v = match file {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("--options {}: cannot read", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("--options {}: not valid JSON", p.display()))?
        }
        None => serde_json::json!({}),
    };
    let obj = v.as_object_mut().ok_or_else(|| anyhow::anyhow!("--options: expected a JSON object"))?;
    for kv in set {
        let (k, val) = kv.split_once('=').ok_or_else(|| anyhow::anyhow!("--set '{kv}': expected KEY=VALUE"))?;
        let parsed = serde_json::from_str(val).unwrap_or_else(|_| serde_json::Value::String(val.to_string()));
        obj.insert(k.trim().to_string(), parsed);
    }
    Ok(v)
}

pub fn run(a: AnalyzeArgs) -> Result<()> {
    let entry = analysis::find(&a.name)?;
    if a.out.extension().and_then(|e| e.to_str()) != Some("parquet") {
        anyhow::bail!("--out {}: expected a path ending in .parquet", a.out.display());
    }
    if a.seeds == 0 {
        anyhow::bail!("--seeds 0: need at least one seed");
    }
    let options = options_json(a.options.as_deref(), &a.set)?;
    // validate the options before loading and quantizing anything
    (entry.check)(&options)?;
    let mut specs: Vec<QuantSpec> = a.quant.iter().map(|q| q.parse().with_context(|| format!("--quant '{q}'"))).collect::<Result<_>>()?;
    for t in &a.twin {
        if !Path::new(t).exists() {
            anyhow::bail!("--twin {t}: no such file or directory");
        }
        specs.push(QuantSpec::Twin(t.clone()));
    }
    let t0 = std::time::Instant::now();
    let reference = qi::load_model(&a.model)?;
    let root = if a.no_cache { None } else { Some(a.cache.clone().unwrap_or_else(qi::twin_cache::cache_root)) };
    let twins = qi::twin_cache::twins(&reference, &specs, &QuantizeOptions::default(), root.as_deref())?;
    let name = a.name_as.clone().unwrap_or_else(|| qi::loader::display_name(&a.model));
    let cmp = Comparison::new(name, &reference, &twins)?;
    let t1 = std::time::Instant::now();
    let seeds: Vec<u64> = (0..a.seeds).collect();
    let tidy = analysis::run_seeds(&entry, &cmp, &options, &seeds)?;
    let df = tidy.to_frame()?;
    qi::analysis::tidy::write_parquet(&df, &a.out)?;
    if a.json {
        let specs: Vec<String> = cmp.all().iter().map(|t| t.spec.to_string()).collect();
        println!(
            "{}",
            serde_json::json!({ "analysis": entry.name, "out": a.out.display().to_string(), "rows": df.height(), "model": cmp.name, "specs": specs, "seeds": seeds,
                "load_quantize_s": (t1 - t0).as_secs_f64(), "analysis_s": t1.elapsed().as_secs_f64() })
        );
    }
    eprintln!(
        "wrote {} ({} rows; load+quantize {:.1} s, analysis {:.1} s)",
        a.out.display(),
        df.height(),
        (t1 - t0).as_secs_f64(),
        t1.elapsed().as_secs_f64()
    );
    Ok(())
}
