//! The `qi` command-line program.
mod analyze;
mod bench;
mod study;
mod sae;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use qi::quant::QuantSpec;
use qi::quantize::{quantize_model, QuantizeOptions};
use qi::{load_model, Batch, HookFilter};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "qi", version, about = "Does quantization kill interpretability? Hooked transformers, quantizers and analyses.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Compute device: cpu (default), cuda, cuda:N, metal, metal:N; as QI_DEVICE. The GPU
    /// backends need qi built with --features qi/cuda or qi/metal.
    #[arg(long, global = true, value_name = "DEVICE", value_parser = parse_device)]
    device: Option<String>,
}

fn parse_device(s: &str) -> std::result::Result<String, String> {
    qi::device::parse(s).map(|_| s.to_string()).map_err(|e| format!("{e:#}"))
}

#[derive(Subcommand)]
enum Command {
    /// Architecture, sizes, parameter count and source quantization types of a model.
    Info {
        /// Hub id (gpt2, EleutherAI/pythia-70m), HF directory, .safetensors or .gguf file.
        #[arg(long)]
        model: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One forward pass; writes logits, tokens and the requested activations to a safetensors file.
    Trace {
        #[arg(long)]
        model: String,
        /// Text to tokenize.
        #[arg(long, conflicts_with = "tokens", required_unless_present = "tokens")]
        text: Option<String>,
        /// Comma-separated token ids.
        #[arg(long, value_delimiter = ',')]
        tokens: Option<Vec<u32>>,
        /// Prepend the model's BOS token to --text.
        #[arg(long)]
        prepend_bos: bool,
        /// Hook names or patterns (`*` wildcard), comma-separated, e.g. 'blocks.3.attn.hook_pattern,*hook_resid_post'.
        #[arg(long, value_delimiter = ',')]
        hooks: Vec<String>,
        /// Output .safetensors file (tensors named by hook name, plus `logits` and `tokens`).
        #[arg(long)]
        out: PathBuf,
        /// Trace the quantized twin (a QuantSpec, e.g. 'rtn:bits=4'; one: a trace is of one model).
        #[arg(long)]
        quant: Option<String>,
        /// Print what was written (file, tokens, each tensor's shape) as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Quantize a model and write it as an HF directory (dequantized weights + report).
    Quantize {
        #[arg(long)]
        model: String,
        /// QuantSpec, e.g. 'rtn:bits=4', 'gptq:bits=4,group=128,samples=128,seqlen=512', 'nf4', 'q4_k'.
        #[arg(long)]
        quant: String,
        /// Output directory (must not exist or be empty).
        #[arg(long, required_unless_present = "cache")]
        out: Option<PathBuf>,
        /// Store the twin in the quantized-twin cache (QI_CACHE, else ~/.cache/qi/twins) that
        /// `qi analyze` and studies read, instead of --out.
        #[arg(long, conflicts_with = "out")]
        cache: bool,
        /// Also quantize the token embedding / unembedding.
        #[arg(long)]
        embeddings: bool,
        #[arg(long)]
        unembedding: bool,
        /// Print the report's summary (bits per weight, size, worst error, time, where) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Perplexity with the GPTQ protocol (non-overlapping windows, remainder dropped).
    Perplexity {
        #[arg(long)]
        model: String,
        /// Evaluate quantized twins, one QuantSpec each (repeat the flag; `none` = the reference,
        /// the default when the flag is absent): one line (or JSON object) per spec.
        #[arg(long)]
        quant: Vec<String>,
        #[arg(long, default_value_t = 512)]
        seqlen: usize,
        /// Use only the first N windows.
        #[arg(long)]
        windows: Option<usize>,
        /// Text file to evaluate (default: WikiText-2 test from the shared folder).
        #[arg(long)]
        text: Option<PathBuf>,
        /// Print one JSON object per spec (JSON lines, what `qi report`'s perplexity blocks read).
        #[arg(long)]
        json: bool,
    },
    /// Run an analysis (reference vs quantized twins) and write its tidy table as parquet.
    Analyze(analyze::AnalyzeArgs),
    /// A study: the grid of models × quantizers × seeds × analyses of a spec file, resumable and shardable.
    Study(study::StudyArgs),
    /// Sparse autoencoders: `qi sae train`.
    #[command(subcommand)]
    Sae(sae::SaeCommand),
    /// Re-render the result tables of a Markdown file (blocks `<!-- qi:report … -->`) from the
    /// committed results; with --check, only report the blocks that differ (exit 1).
    Report {
        file: PathBuf,
        #[arg(long)]
        check: bool,
        /// Print {file, check, stale} as JSON: the commands of the blocks that differ (with --check)
        /// or were re-rendered.
        #[arg(long)]
        json: bool,
    },
    /// The quantized-twin cache (QI_CACHE, else ~/.cache/qi/twins): check or clear it.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Print a tidy results table (parquet from `qi analyze` / `qi study`) as markdown, optionally
    /// only some metrics and columns.
    Show {
        file: std::path::PathBuf,
        /// Keep rows whose `metric` is one of these (repeatable; default: all).
        #[arg(long)]
        metric: Vec<String>,
        /// Columns to print (comma-separated; default: spec, layer, head, metric, value, ci_low, ci_high, n).
        #[arg(long)]
        columns: Option<String>,
        /// Rows at most (the first and last halves; 0 = all).
        #[arg(long, default_value_t = 200)]
        rows: usize,
        /// Print the rows as a JSON array of objects (column → value; NaN as null), every row.
        #[arg(long, conflicts_with = "rows")]
        json: bool,
    },
    /// List the hook points of a model.
    Hooks {
        #[arg(long)]
        model: String,
        /// Print them as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Forward-pass benchmark: a cache of every hook_resid_post and hook_pattern on a batch of
    /// random tokens; prints one JSON line (compare with scripts/bench_forward_torch.py).
    BenchForward {
        #[arg(long)]
        model: String,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        seq: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// The exact token inputs qi's jobs use, as JSON, so that a peer (a PyTorch script,
    /// TransformerLens) runs on the same tokens: GPTQ/AWQ calibration windows (C4 calibration
    /// split), the perplexity windows (WikiText-2 evaluation half) and the induction sequences
    /// ([BOS] r r per seed). A group with a count of 0 is left out.
    Inputs {
        #[arg(long)]
        model: String,
        /// Calibration windows, as `gptq:samples=N,seqlen=L` draws them (seed `--calib-seed`).
        #[arg(long, default_value_t = 64)]
        calib_samples: usize,
        #[arg(long, default_value_t = 512)]
        calib_seqlen: usize,
        #[arg(long, default_value_t = 0)]
        calib_seed: u64,
        /// Perplexity windows (consecutive, from the start of the evaluation half).
        #[arg(long, default_value_t = 20)]
        ppl_windows: usize,
        #[arg(long, default_value_t = 512)]
        ppl_seqlen: usize,
        /// Induction sequences: seeds 0..N, each with `--induction-seqs` rows of [BOS] r r.
        #[arg(long, default_value_t = 5)]
        induction_seeds: u64,
        #[arg(long, default_value_t = 50)]
        induction_seqs: usize,
        #[arg(long, default_value_t = 25)]
        induction_len: usize,
        /// Write the JSON here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Twin storage benchmark: each twin as the cache stores it (compact codes and scales) against
    /// the same twin as f32, on disk and at load (alternating rounds, the reference's own load
    /// timed in each); prints one JSON line per spec.
    BenchTwins {
        #[arg(long)]
        model: String,
        /// A quantization spec; repeat the flag for several (e.g. --quant rtn:bits=4 --quant nf4).
        #[arg(long, required = true)]
        quant: Vec<String>,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Where the f32 copies are written (removed afterwards).
        #[arg(long, default_value = "/tmp")]
        scratch: PathBuf,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Check every cached twin's files against its manifest (size and XXH3-128); exit 1 when any
    /// entry is damaged (a study or analysis re-quantizes damaged entries by itself).
    Verify {
        /// Cache directory (default: QI_CACHE, else ~/.cache/qi/twins).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Remove the damaged entries.
        #[arg(long)]
        remove_damaged: bool,
        /// Print every entry (directory, bytes, problems) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every cached twin.
    Clear {
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Print {cache, removed, bytes} as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn cache_command(c: CacheCommand) -> Result<()> {
    let gb = |b: u64| b as f64 / 1e9;
    match c {
        CacheCommand::Verify { cache, remove_damaged, json } => {
            let root = cache.unwrap_or_else(qi::twin_cache::cache_root);
            let checks = qi::twin_cache::verify(&root)?;
            let damaged: Vec<_> = checks.iter().filter(|e| !e.problems.is_empty()).collect();
            let total: u64 = checks.iter().map(|e| e.bytes).sum();
            let summary = format!("{}: {} twin(s), {:.2} GB; {} sound, {} damaged", root.display(), checks.len(), gb(total), checks.len() - damaged.len(), damaged.len());
            let removed = if remove_damaged && !damaged.is_empty() { Some(qi::twin_cache::clear(&root, true)?) } else { None };
            let removed_text = removed.map(|(n, bytes)| format!("removed {n} damaged entr{} ({:.2} GB)", if n == 1 { "y" } else { "ies" }, gb(bytes)));
            if json {
                let entries: Vec<serde_json::Value> = checks
                    .iter()
                    .map(|e| serde_json::json!({ "dir": e.dir.display().to_string(), "bytes": e.bytes, "sound": e.problems.is_empty(), "problems": if e.problems.is_empty() { serde_json::Value::Null } else { qi::integrity::describe(&e.problems).into() } }))
                    .collect();
                println!("{}", serde_json::json!({ "cache": root.display().to_string(), "entries": entries, "bytes": total, "damaged": damaged.len(), "removed": removed.map(|r| r.0) }));
                eprintln!("{summary}");
                if let Some(t) = &removed_text {
                    eprintln!("{t}");
                }
            } else {
                for e in &damaged {
                    println!("damaged: {}: {}", e.dir.display(), qi::integrity::describe(&e.problems));
                }
                println!("{summary}");
                if let Some(t) = &removed_text {
                    println!("{t}");
                }
            }
            if removed.is_some() {
                return Ok(());
            }
            if !damaged.is_empty() {
                bail!("{} damaged twin(s) in {} (they are re-quantized when next used; --remove-damaged removes them now)", damaged.len(), root.display());
            }
            Ok(())
        }
        CacheCommand::Clear { cache, json } => {
            let root = cache.unwrap_or_else(qi::twin_cache::cache_root);
            let (n, bytes) = qi::twin_cache::clear(&root, false)?;
            let text = format!("{}: removed {n} twin(s), {:.2} GB", root.display(), gb(bytes));
            if json {
                println!("{}", serde_json::json!({ "cache": root.display().to_string(), "removed": n, "bytes": bytes }));
                eprintln!("{text}");
            } else {
                println!("{text}");
            }
            Ok(())
        }
    }
}

fn main() {
    let cmd = Cli::command().mut_subcommand("analyze", |c| c.after_long_help(analyze::long_help()));
    let cli = Cli::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit());
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(d) = &cli.device {
        qi::device::set_device(d)?;
    }
    match cli.command {
        Command::Info { model, json } => info(&model, json),
        Command::Trace { model, text, tokens, prepend_bos, hooks, out, quant, json } => trace(&model, quant.as_deref(), text, tokens, prepend_bos, &hooks, &out, json),
        Command::Quantize { model, quant, out, cache, embeddings, unembedding, json } => quantize(&model, &quant, out.as_deref().filter(|_| !cache), embeddings, unembedding, json),
        Command::Perplexity { model, quant, seqlen, windows, text, json } => perplexity(&model, &quant, seqlen, windows, text.as_deref(), json),
        Command::BenchForward { model, batch, seq, runs, seed } => bench_forward(&model, batch, seq, runs, seed),
        Command::Inputs { model, calib_samples, calib_seqlen, calib_seed, ppl_windows, ppl_seqlen, induction_seeds, induction_seqs, induction_len, out } => {
            inputs(&model, (calib_samples, calib_seqlen, calib_seed), (ppl_windows, ppl_seqlen), (induction_seeds, induction_seqs, induction_len), out.as_deref())
        }
        Command::BenchTwins { model, quant, rounds, scratch } => bench::bench_twins(&model, &quant, rounds, &scratch),
        Command::Analyze(a) => analyze::run(a),
        Command::Study(a) => study::run(a),
        Command::Sae(c) => sae::run(c),
        Command::Cache(c) => cache_command(c),
        Command::Report { file, check, json } => {
            let stale = qi::report::update_file(&file, check)?;
            if json {
                println!("{}", serde_json::json!({ "file": file.display().to_string(), "check": check, "stale": stale }));
            }
            for cmd in &stale {
                eprintln!("{}: block `{cmd}` {}", file.display(), if check { "differs from the results" } else { "re-rendered" });
            }
            if check && !stale.is_empty() {
                bail!("{}: {} report block(s) out of date; `qi report {}` rewrites them", file.display(), stale.len(), file.display());
            }
            eprintln!("{}: {}", file.display(), if stale.is_empty() { "every report block matches the results" } else if check { "" } else { "updated" });
            Ok(())
        }
        Command::Show { file, metric, columns, rows, json } => show(&file, &metric, columns.as_deref(), rows, json),
        Command::Hooks { model, json } => {
            let m = load_model(&model)?;
            if json {
                println!("{}", serde_json::json!(m.hook_names()));
            } else {
                for n in m.hook_names() {
                    println!("{n}");
                }
            }
            Ok(())
        }
    }
}

fn info(src: &str, json: bool) -> Result<()> {
    let m = load_model(src)?;
    let c = &m.cfg;
    let types = m.source.type_counts();
    let v = serde_json::json!({
        "source": m.source.source,
        "architecture": c.architecture.name(),
        "layers": c.n_layers, "heads": c.n_heads, "kv_heads": c.n_kv_heads, "d_model": c.d_model,
        "d_head": c.d_head, "d_mlp": c.d_mlp, "vocab": c.d_vocab, "context": c.n_ctx,
        "parameters": m.n_params(), "positional": c.positional, "parallel_residual": c.parallel_residual,
        "tied_embeddings": c.tied_embeddings, "source_tensor_types": types,
        "tokenizer": m.tokenizer.is_some(), "quantization": m.source.quantization, "extras": c.extras,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("source        {}", m.source.source);
    println!("architecture  {}", c.architecture.name());
    println!("layers        {}", c.n_layers);
    println!("heads         {} (kv heads {}, d_head {})", c.n_heads, c.n_kv_heads, c.d_head);
    println!("d_model       {}", c.d_model);
    println!("d_mlp         {}", c.d_mlp);
    println!("vocab         {}", c.d_vocab);
    println!("context       {}", c.n_ctx);
    println!("parameters    {} ({:.1} M)", m.n_params(), m.n_params() as f64 / 1e6);
    println!("positional    {:?}", c.positional);
    println!("tied          {}", c.tied_embeddings);
    if let Some(w) = c.extras.sliding_window {
        let local: Vec<usize> = (0..c.n_layers).filter(|&l| c.extras.is_sliding(l)).collect();
        let theta = c.extras.local_rope_theta.map_or(String::new(), |t| format!(", rotary base {t}"));
        println!("sliding       window {w} on layers {local:?}{theta}");
    }
    if let Some(s) = c.extras.query_pre_attn_scalar {
        println!("query scale   {s}^-0.5");
    }
    println!("source types  {}", types.iter().map(|(k, v)| format!("{k}×{v}")).collect::<Vec<_>>().join(", "));
    if let Some(q) = &m.source.quantization {
        println!("quantized by qi  {q}");
    }
    Ok(())
}

/// Loads a model and, when a spec is given, returns its quantized twin instead (cached on disk).
fn load_maybe_quantized(src: &str, quant: Option<&str>) -> Result<qi::HookedTransformer> {
    let spec: Option<QuantSpec> = quant.map(|q| q.parse().with_context(|| format!("--quant '{q}'"))).transpose()?;
    let m = load_model(src)?;
    match spec {
        None => Ok(m),
        Some(spec) => {
            // through the twin cache, so repeated runs (and `qi analyze`) share one quantization
            let root = qi::twin_cache::cache_root();
            Ok(qi::twin_cache::twins(&m, &[spec], &QuantizeOptions::default(), Some(&root))?.remove(0).1)
        }
    }
}

/// `qi quantize`: into `out` as an HF directory, or into the twin cache when `out` is `None`.
fn quantize(src: &str, quant: &str, out: Option<&std::path::Path>, embeddings: bool, unembedding: bool, json: bool) -> Result<()> {
    let spec: QuantSpec = quant.parse().with_context(|| format!("--quant '{quant}'"))?;
    if let Some(out) = out {
        qi::export::ensure_empty_output_dir(out).context("--out")?;
    }
    let m = load_model(src)?;
    let opts = QuantizeOptions { embeddings, unembedding, ..Default::default() };
    let (dest, report) = match out {
        Some(out) => {
            let (q, report) = quantize_model(&m, &spec, &opts)?;
            qi::export::save_hf_dir(&q, out, Some(&report))?;
            (out.to_path_buf(), Some(report))
        }
        None => {
            let root = qi::twin_cache::cache_root();
            let t = std::time::Instant::now();
            let (_, report, origin) = qi::twin_cache::quantize_cached(&m, &spec, &opts, Some(&root))?;
            qi::twin_cache::log_origin(&spec, &origin, report.as_ref(), t);
            let dir = qi::twin_cache::twin_dir(&root, &m, &spec, &opts)?;
            // storing is this command's whole job: a cache that took nothing is a failure here
            if !dir.is_dir() {
                bail!("the twin was not stored in {} (QI_CACHE = {}); set QI_CACHE to a writable folder, or write the twin elsewhere with --out", dir.display(), root.display());
            }
            (dir, report)
        }
    };
    let worst = report.as_ref().map(|r| r.matrices.iter().map(|r| r.rel_error).fold(0.0, f64::max));
    if json {
        let v = serde_json::json!({
            "model": src, "quant": spec.to_string(), "out": dest.display().to_string(), "cached": out.is_none(),
            "bits_per_weight": report.as_ref().map(|r| r.bits_per_weight), "matrices": report.as_ref().map(|r| r.matrices.len()),
            "model_bytes": report.as_ref().map(|r| r.model_bytes), "worst_rel_error": worst, "seconds": report.as_ref().map(|r| r.seconds),
        });
        println!("{v}");
    }
    match &report {
        Some(r) => eprintln!(
            "{} {} ({spec}: {} matrices, {:.2} bits/weight, {:.1} MB estimated, worst relative error {:.4}, {:.1} s)",
            if out.is_some() { "wrote" } else { "cached in" },
            dest.display(),
            r.matrices.len(),
            r.bits_per_weight,
            r.model_bytes / 1e6,
            worst.unwrap_or(0.0),
            r.seconds
        ),
        None => eprintln!("cached in {} (a twin stored without its report)", dest.display()),
    }
    Ok(())
}

/// `qi perplexity`: the reference (no `--quant`, or `none`) and each twin, one line each.
fn perplexity(src: &str, quant: &[String], seqlen: usize, windows: Option<usize>, text: Option<&std::path::Path>, json: bool) -> Result<()> {
    let specs: Vec<QuantSpec> = if quant.is_empty() { vec![QuantSpec::None] } else { quant.iter().map(|q| q.parse().with_context(|| format!("--quant '{q}'"))).collect::<Result<_>>()? };
    let opts = qi::perplexity::PerplexityOptions { seqlen, max_windows: windows, ..Default::default() };
    // read the text before loading anything, so a bad --text fails fast
    let text = text.map(|p| std::fs::read_to_string(p).with_context(|| format!("--text {}: cannot read", p.display()))).transpose()?;
    let reference = load_model(src)?;
    let root = qi::twin_cache::cache_root();
    for spec in &specs {
        // through the twin cache, so repeated runs (and `qi analyze`) share one quantization
        let (twin, report) = match spec {
            QuantSpec::None => (None, None),
            _ => {
                let (t, r, _) = qi::twin_cache::quantize_cached(&reference, spec, &QuantizeOptions::default(), Some(&root)).with_context(|| format!("quantizing with {spec}"))?;
                (Some(t), r)
            }
        };
        let m = twin.as_ref().unwrap_or(&reference);
        let r = match &text {
            Some(t) => qi::perplexity::perplexity_on_text(m, t, &opts)?,
            // the evaluation half: the rest of the split is reserved for calibration and SAE training
            None => qi::perplexity::perplexity(m, &qi::data::wikitext2_eval_ids(m)?, &opts)?,
        };
        if json {
            let mut v = serde_json::to_value(&r)?;
            v["model"] = serde_json::json!(src);
            v["quant"] = serde_json::json!(spec.to_string());
            let bits = qi::quantize::twin_bits_per_weight(&reference, spec, report.as_ref());
            v["bits_per_weight"] = serde_json::json!(bits);
            println!("{v}");
        } else {
            println!("{spec}: perplexity {:.4} (nll {:.4}, {} windows x {} tokens, {:.1} s)", r.perplexity, r.nll, r.windows, r.seqlen, r.seconds);
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn trace(src: &str, quant: Option<&str>, text: Option<String>, tokens: Option<Vec<u32>>, prepend_bos: bool, hooks: &[String], out: &std::path::Path, json: bool) -> Result<()> {
    if out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!("--out {}: expected a path ending in .safetensors", out.display());
    }
    let m = load_maybe_quantized(src, quant)?;
    let ids = match (text, tokens) {
        (Some(t), _) => m.to_tokens(&t, prepend_bos)?,
        (None, Some(ids)) => ids,
        (None, None) => bail!("give --text or --tokens"),
    };
    if ids.is_empty() {
        bail!("no tokens to run (empty --text or --tokens)");
    }
    let batch = Batch::from_ids(&ids)?;
    let filter = HookFilter::new(hooks);
    let (logits, cache) = m.run_with_cache(&batch, filter)?;
    let mut tensors: HashMap<String, Tensor> = cache.into_map().into_iter().map(|(k, v)| (k, v.contiguous().unwrap_or(v))).collect();
    tensors.insert("logits".into(), logits);
    tensors.insert("tokens".into(), batch.tokens.to_dtype(DType::I64)?);
    qi::io::save_safetensors(&tensors, out).with_context(|| format!("writing {}", out.display()))?;
    if json {
        let shapes: std::collections::BTreeMap<&String, &[usize]> = tensors.iter().map(|(k, v)| (k, v.dims())).collect();
        println!("{}", serde_json::json!({ "out": out.display().to_string(), "tokens": ids, "tensors": shapes }));
    }
    eprintln!("wrote {} ({} tensors, {} tokens)", out.display(), tensors.len(), ids.len());
    Ok(())
}

fn bench_forward(src: &str, batch: usize, seq: usize, runs: usize, seed: u64) -> Result<()> {
    let t_load = std::time::Instant::now();
    let m = load_model(src)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let exclude = m.tokenizer.as_ref().map(|t| t.special_ids()).unwrap_or_default();
    let mut rng = qi::rng::Rng::new(seed);
    let rows: Vec<Vec<u32>> = (0..batch).map(|_| rng.tokens(seq, m.cfg.d_vocab, &exclude)).collect();
    let b = Batch::from_rows(&rows, qi::Padding::Right, 0)?;
    let filter = HookFilter::from("*hook_resid_post,*hook_pattern");
    m.run_with_cache(&b, filter.clone())?; // warm-up
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = std::time::Instant::now();
        let (logits, cache) = m.run_with_cache(&b, filter.clone())?;
        std::hint::black_box((logits, cache));
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    // matmul parameters: every block weight plus the unembedding (an embedding lookup costs no
    // multiply), so 2 × matmul_params × tokens is the forward's FLOP count up to attention scores
    let non_embedding = m.n_params_non_embedding();
    let matmul_params = non_embedding + m.cfg.d_vocab * m.cfg.d_model;
    let v = serde_json::json!({
        "impl": "qi", "median_s": times[times.len() / 2], "min_s": times[0], "runs": times.len(), "load_s": load_s,
        "threads": candle_core::utils::get_num_threads(), "matmul": qi::blas::backend_name(), "batch": batch, "seq": seq,
        "model": src, "params": m.n_params(), "params_non_embedding": non_embedding,
        "matmul_params": matmul_params, "peak_rss_kb": qi::study::peak_rss_kb(),
    });
    println!("{v}");
    Ok(())
}

/// `qi inputs`: the token ids of each group, drawn by the functions the jobs themselves call.
fn inputs(src: &str, calib: (usize, usize, u64), ppl: (usize, usize), induction: (u64, usize, usize), out: Option<&std::path::Path>) -> Result<()> {
    let m = load_model(src)?;
    let mut v = serde_json::json!({ "model": src, "bos_token_id": m.cfg.bos_token_id });
    let (n, seqlen, seed) = calib;
    if n > 0 {
        let rows = qi::data::calibration_windows(&m, qi::data::Corpus::C4, n, seqlen.min(m.cfg.n_ctx), seed).context("--calib-samples")?;
        v["calibration"] = serde_json::json!({ "source": "c4, calibration split", "seed": seed, "rows": rows });
    }
    let (windows, seqlen) = ppl;
    if windows > 0 {
        let rows = qi::data::sequential_windows(&qi::data::wikitext2_eval_ids(&m)?, seqlen, Some(windows)).context("--ppl-windows")?;
        if rows.len() < windows {
            bail!("--ppl-windows {windows}: the WikiText-2 evaluation half holds only {} windows of {seqlen} tokens", rows.len());
        }
        v["perplexity"] = serde_json::json!({ "source": "wikitext2, evaluation half", "rows": rows });
    }
    let (seeds, n_seqs, len) = induction;
    if seeds > 0 && n_seqs > 0 {
        let (mut per_seed, mut offset) = (serde_json::Map::new(), 0);
        for s in 0..seeds {
            let set = qi::analysis::induction::repeated_tokens(&m, n_seqs, len, s).context("--induction-seqs / --induction-len")?;
            offset = set.offset;
            per_seed.insert(s.to_string(), serde_json::json!(set.rows));
        }
        // rows are [BOS] r r: r starts at `offset`, its repeat at `offset + seq_len`
        v["induction"] = serde_json::json!({ "seq_len": len, "offset": offset, "seeds": per_seed });
    }
    let text = v.to_string();
    match out {
        Some(p) => qi::io::save_text(&text, p),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn show(file: &std::path::Path, metrics: &[String], columns: Option<&str>, rows: usize, json: bool) -> Result<()> {
    use qi::analysis::tidy;
    let df = tidy::read_parquet(file)?;
    let df = if metrics.is_empty() {
        df
    } else {
        let mut parts = metrics.iter().map(|m| tidy::filter_eq(&df, "metric", m));
        let mut out = parts.next().expect("non-empty")?;
        for p in parts {
            out.vstack_mut(&p?)?;
        }
        out
    };
    let have: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
    let wanted: Vec<String> = match columns {
        Some(c) => c.split(',').map(|s| s.trim().to_string()).collect(),
        None => ["spec", "layer", "head", "metric", "value", "ci_low", "ci_high", "n"].iter().map(|s| s.to_string()).filter(|c| have.contains(c)).collect(),
    };
    if let Some(missing) = wanted.iter().find(|c| !have.contains(c)) {
        anyhow::bail!("--columns: {} has no column '{missing}' (columns: {})", file.display(), have.join(", "));
    }
    let df = df.select(wanted)?;
    if json {
        println!("{}", tidy::to_json_rows(&df)?);
    } else {
        print!("{}", qi::display::table(&df).max_rows(rows).to_markdown());
    }
    Ok(())
}
