//! `qi study run|plan|report|collect|verify`: the scaling-study grid of a spec file (see `qi::study`).
use anyhow::{bail, Result};
use qi::study::{self, Shard, Study};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct StudyArgs {
    #[command(subcommand)]
    pub command: StudyCommand,
}

#[derive(clap::Subcommand)]
pub enum StudyCommand {
    /// Run the unfinished cells (of one shard); finished cells are skipped, so a re-run resumes.
    Run {
        /// Study spec file (.toml or .json).
        spec: PathBuf,
        #[command(flatten)]
        sel: Selection,
        /// Quantized-twin cache directory (default: QI_CACHE, else ~/.cache/qi/twins).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Quantize in memory only.
        #[arg(long)]
        no_cache: bool,
        /// Print the run's summary as one JSON object on stdout (each cell's record, the skipped
        /// and failed cells, seconds and peak memory); the table stays on stderr.
        #[arg(long)]
        json: bool,
    },
    /// List the cells (of one shard) and which are done.
    Plan {
        spec: PathBuf,
        #[command(flatten)]
        sel: Selection,
        /// Print the cells and their states as one JSON object instead of the listing.
        #[arg(long)]
        json: bool,
    },
    /// Print a study's summary as a Markdown table with the size-axis finding, from its finished
    /// cells (the README's size table is this output).
    Report {
        /// Study spec file (.toml or .json).
        spec: PathBuf,
        /// Results directory (default: data/results/STUDY_NAME beside the spec file's folder).
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// Write the size-axis figures (survival under each rule, perplexity ratio, and feature
    /// survival and attention JSD where present, against non-embedding parameters) from the
    /// study's finished cells, as HTML + SVG; runs nothing.
    Figures {
        /// Study spec file (.toml or .json).
        spec: PathBuf,
        /// Results directory (default: data/results/STUDY_NAME beside the spec file's folder).
        #[arg(long)]
        results: Option<PathBuf>,
        /// File-name prefix of the figures.
        #[arg(long, default_value = "09_scaling")]
        prefix: String,
        /// Output folder (default: QI_FIGURES_DIR, else ./figures).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Cost against model size: per study model, load, forward and peak RSS (`qi bench-forward`
    /// lines), the RTN-4 twin's size (`qi bench-twins` lines), making the GPTQ-4 twin and the
    /// reference's induction and perplexity (the study's cells), and the ratios to PyTorch
    /// (side-by-side round lines); prints the table (the `size-costs` report block) and, with
    /// --figure, writes the time of each step against parameters (`cost_vs_size`). Runs nothing.
    Costs {
        /// Study spec file (.toml or .json).
        spec: PathBuf,
        /// Results directory (default: data/results/STUDY_NAME beside the spec file's folder).
        #[arg(long)]
        results: Option<PathBuf>,
        /// `qi bench-forward` lines, one per model (scripts/bench_models.sh QI sizes).
        #[arg(long)]
        forward: PathBuf,
        /// `qi bench-twins` lines (scripts/bench_models.sh QI twins).
        #[arg(long)]
        twins: PathBuf,
        /// Side-by-side round lines (scripts/bench_forward.sh, scripts/bench_job.sh); repeatable.
        #[arg(long)]
        peers: Vec<PathBuf>,
        /// Also write the figure (HTML + SVG) to --out-dir.
        #[arg(long)]
        figure: bool,
        /// Output folder of the figure (default: QI_FIGURES_DIR, else ./figures).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Merge every finished cell into one parquet file (columns missing in a cell are null). A
    /// cell whose parquet file does not match its sidecar's digest is left out with a warning
    /// naming it, and the exit status is 1 unless --allow-missing.
    Collect {
        #[arg(long)]
        results: PathBuf,
        /// Output parquet file (written atomically).
        #[arg(long)]
        out: PathBuf,
        /// Exit 0 even when damaged cells were left out.
        #[arg(long)]
        allow_missing: bool,
        /// Print what was written and left out as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check every result cell against its sidecar (size and XXH3-128 of the parquet file, the
    /// cell's key); exit 1 when any cannot be trusted (`qi study run` redoes those).
    Verify {
        #[arg(long)]
        results: PathBuf,
        /// Record digests for cells written before qi recorded them, where the parquet file reads
        /// and holds the row count its sidecar records.
        #[arg(long)]
        adopt: bool,
        /// Print the counts and the damaged cells as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub struct Selection {
    /// Results directory (default: results/STUDY_NAME).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Run only shard i of n (1-based), e.g. --shard 3/8 (a Slurm array / indexed Job / CI matrix index).
    #[arg(long, default_value = "1/1")]
    pub shard: Shard,
    /// Only these models (display names; repeat the flag).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Only these quantizer specs, canonical form as `plan` prints them (repeat; `none` = reference).
    #[arg(long = "quant")]
    pub quants: Vec<String>,
    /// Only these analyses (ids; repeat).
    #[arg(long = "analysis")]
    pub analyses: Vec<String>,
}

impl Selection {
    fn results_dir(&self, s: &Study) -> PathBuf {
        self.results.clone().unwrap_or_else(|| PathBuf::from("results").join(qi::twin_cache::slug(&s.name)))
    }

    /// The study's cells of this shard that pass the filters (unknown filter values are errors).
    fn cells(&self, s: &Study) -> Result<Vec<study::Cell>> {
        let models: Vec<&str> = s.models.iter().map(|m| m.name.as_str()).collect();
        let specs: Vec<String> = s.all_specs().iter().map(|q| q.to_string()).collect();
        let analyses: Vec<&str> = s.analyses.iter().map(|a| a.id.as_str()).collect();
        for (flag, given, valid) in [
            ("--model", &self.models, models.iter().map(|x| x.to_string()).collect::<Vec<_>>()),
            ("--quant", &self.quants, specs.clone()),
            ("--analysis", &self.analyses, analyses.iter().map(|x| x.to_string()).collect()),
        ] {
            if let Some(g) = given.iter().find(|g| !valid.contains(g)) {
                bail!("{flag} '{g}': not in the study; valid: {}", valid.join(", "));
            }
        }
        Ok(s.shard_cells(self.shard)
            .into_iter()
            .filter(|c| self.models.is_empty() || self.models.contains(&s.models[c.model].name))
            .filter(|c| self.quants.is_empty() || self.quants.contains(&c.spec.to_string()))
            .filter(|c| self.analyses.is_empty() || self.analyses.contains(&s.analyses[c.analysis].id))
            .collect())
    }
}

pub fn run(a: StudyArgs) -> Result<()> {
    match a.command {
        StudyCommand::Plan { spec, sel, json } => plan(&spec, &sel, json),
        StudyCommand::Run { spec, sel, cache, no_cache, json } => run_study(&spec, &sel, cache, no_cache, json),
        StudyCommand::Report { spec, results } => {
            let cmd = match results {
                Some(r) => format!("study {} {}", spec.display(), r.display()),
                None => format!("study {}", spec.display()),
            };
            println!("{}", qi::report::render(&cmd, Path::new(""))?);
            Ok(())
        }
        StudyCommand::Figures { spec, results, prefix, out_dir } => {
            let s = Study::load(&spec)?;
            let dir = results.unwrap_or_else(|| qi::size_axis::default_results(&spec, &s, false));
            let sizes = qi::size_axis::model_sizes(&s, &dir)?;
            let table = study::summary(&study::collect_study(&s, &dir)?, &sizes)?;
            let out_dir = out_dir.unwrap_or_else(qi::figures::figures_dir);
            for (name, fig) in qi::size_axis::figures(&table)? {
                let p = qi::figures::save_figure_in(&fig, &format!("{prefix}_{name}"), &out_dir)?;
                println!("{}", p.svg.display());
            }
            Ok(())
        }
        StudyCommand::Costs { spec, results, forward, twins, peers, figure, out_dir } => {
            let s = Study::load(&spec)?;
            let results = results.unwrap_or_else(|| qi::size_axis::default_results(&spec, &s, false));
            let rows = qi::report::cost_rows(&qi::report::CostSources { study: &spec, results: &results, forward: &forward, twins: &twins, peers: &peers })?;
            print!("{}", qi::report::cost_markdown(&rows)?);
            if figure {
                let p = qi::figures::save_figure_in(&qi::report::cost_figure(&rows)?, "cost_vs_size", &out_dir.unwrap_or_else(qi::figures::figures_dir))?;
                eprintln!("{}", p.svg.display());
            }
            Ok(())
        }
        StudyCommand::Collect { results, out, allow_missing, json } => {
            if out.extension().and_then(|e| e.to_str()) != Some("parquet") {
                bail!("--out {}: expected a path ending in .parquet", out.display());
            }
            let (df, bad) = study::collect_lenient(&results)?;
            qi::analysis::tidy::write_parquet(&df, &out)?;
            let cols: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
            let n = study::result_files(&results)?.len() - bad.len();
            eprintln!("wrote {} ({} rows from {n} cells; columns: {})", out.display(), df.height(), cols.join(", "));
            for (_, why) in &bad {
                eprintln!("left out: {why}");
            }
            if json {
                let left: Vec<serde_json::Value> = bad.iter().map(|(p, why)| serde_json::json!({ "file": p.display().to_string(), "why": why })).collect();
                println!("{}", serde_json::json!({ "out": out.display().to_string(), "rows": df.height(), "cells": n, "columns": cols, "left_out": left }));
            }
            if !bad.is_empty() && !allow_missing {
                bail!("{} damaged cell(s) left out of {} (re-run the study to redo them, or pass --allow-missing)", bad.len(), out.display());
            }
            Ok(())
        }
        StudyCommand::Verify { results, adopt, json } => {
            if adopt {
                let (n, refused) = study::adopt_unrecorded(&results)?;
                eprintln!("recorded digests for {n} cell(s) written before qi recorded them");
                for (_, why) in &refused {
                    eprintln!("not adopted: {why}");
                }
            }
            let (good, bad) = study::checked_result_files(&results)?;
            if json {
                let damaged: Vec<serde_json::Value> = bad.iter().map(|(p, why)| serde_json::json!({ "file": p.display().to_string(), "why": why })).collect();
                println!("{}", serde_json::json!({ "results": results.display().to_string(), "sound": good.len(), "damaged": damaged }));
            } else {
                for (_, why) in &bad {
                    println!("damaged: {why}");
                }
                println!("{}: {} cell(s) check out, {} cannot be trusted", results.display(), good.len(), bad.len());
            }
            if !bad.is_empty() {
                bail!("{} damaged cell(s) in {} (`qi study run` redoes them)", bad.len(), results.display());
            }
            Ok(())
        }
    }
}

/// How `plan` names a cell's state: done, todo (missing) or redo (damaged).
fn state_word(state: &study::CellState) -> &'static str {
    match state {
        study::CellState::Done => "done",
        study::CellState::Missing => "todo",
        study::CellState::Damaged(_) => "redo",
    }
}

fn plan(spec: &Path, sel: &Selection, json: bool) -> Result<()> {
    let s = Study::load_selected(spec, &sel.analyses)?;
    let results = sel.results_dir(&s);
    let cells = sel.cells(&s)?;
    let done = cells.iter().filter(|c| c.is_done(&results)).count();
    if json {
        let listed: Vec<serde_json::Value> = cells
            .iter()
            .map(|c| {
                let state = state_word(&c.state(&results));
                serde_json::json!({ "state": state, "model": s.models[c.model].name, "spec": c.spec.to_string(), "analysis": s.analyses[c.analysis].id, "seed": c.seed, "stem": c.stem })
            })
            .collect();
        let orphans: Vec<String> = if results.is_dir() { study::orphans(&s, &results)?.iter().map(|p| p.display().to_string()).collect() } else { Vec::new() };
        println!("{}", serde_json::json!({ "study": s.name, "results": results.display().to_string(), "cells": listed, "done": done, "todo": cells.len() - done, "orphans": orphans }));
        return Ok(());
    }
    println!("study {} ({}): {} models × {} specs (with the reference) × cells per analysis and seed; shard {}/{}", s.name, spec.display(), s.models.len(), s.all_specs().len(), sel.shard.index, sel.shard.count);
    for c in &cells {
        let state = state_word(&c.state(&results));
        println!("{state}  {:<24} {:<40} {:<14} seed {:<3} {}", s.models[c.model].name, c.spec.to_string(), s.analyses[c.analysis].id, c.seed, c.stem);
    }
    println!("{} cells, {done} done, {} to run (results: {})", cells.len(), cells.len() - done, results.display());
    if results.is_dir() {
        let orphans = study::orphans(&s, &results)?;
        if !orphans.is_empty() {
            println!("{} result file(s) in {} belong to no cell of this study (an older key or another study); `qi study collect` would include them:", orphans.len(), results.display());
            for p in &orphans {
                println!("  {}", p.display());
            }
        }
    }
    Ok(())
}

fn run_study(spec: &Path, sel: &Selection, cache: Option<PathBuf>, no_cache: bool, json: bool) -> Result<()> {
    let s = Study::load_selected(spec, &sel.analyses)?;
    let cells = sel.cells(&s)?;
    let results = sel.results_dir(&s);
    let opts = study::RunOptions {
        results: results.clone(),
        shard: sel.shard,
        cache: if no_cache { None } else { Some(cache.unwrap_or_else(qi::twin_cache::cache_root)) },
        quantize: Default::default(),
    };
    let keep: std::collections::HashSet<&str> = cells.iter().map(|c| c.key.as_str()).collect();
    let summary = study::run_cells(&s, &opts, &|c| keep.contains(c.key.as_str()))?;
    eprintln!("{:<24} {:<40} {:<14} {:>4} {:>6} {:>9} {:>9} {:>10} {:>9} {:>9}", "model", "spec", "analysis", "seed", "rows", "load s", "twin s", "analysis s", "twin MB", "cell MB");
    let mb = |k: Option<u64>| k.map_or("–".to_string(), |k| format!("{:.0}", k as f64 / 1024.0));
    for r in &summary.ran {
        eprintln!(
            "{:<24} {:<40} {:<14} {:>4} {:>6} {:>9.1} {:>9.1} {:>10.1} {:>9} {:>9}  ({})",
            r.model, r.spec, r.analysis, r.seed, r.rows, r.reference_load_s, r.twin_s, r.analysis_s, mb(r.twin_peak_rss_kb), mb(r.peak_rss_kb), r.twin_origin
        );
    }
    let peak = summary.peak_rss_kb.map(|k| format!("{:.0} MB", k as f64 / 1024.0)).unwrap_or_else(|| "unknown".into());
    eprintln!(
        "study {}: {} cells run, {} already done, {} failed in {:.1} s; peak memory {peak}; results in {}",
        s.name,
        summary.ran.len(),
        summary.skipped,
        summary.failed.len(),
        summary.seconds,
        results.display()
    );
    for (cell, e) in &summary.failed {
        eprintln!("failed {cell}: {e}");
    }
    if json {
        let failed: Vec<serde_json::Value> = summary.failed.iter().map(|(c, e)| serde_json::json!({ "cell": c, "error": e })).collect();
        println!(
            "{}",
            serde_json::json!({ "study": s.name, "results": results.display().to_string(), "ran": summary.ran, "skipped": summary.skipped, "failed": failed, "seconds": summary.seconds, "peak_rss_kb": summary.peak_rss_kb })
        );
    }
    if !summary.failed.is_empty() {
        bail!("{} cells failed (re-run to retry them)", summary.failed.len());
    }
    Ok(())
}
