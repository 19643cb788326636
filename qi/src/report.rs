//! Tables in the docs printed from committed results, so their numbers cannot drift from the data.
//! A Markdown file marks each such table as a block:
//!
//! ```text
//! <!-- qi:report study studies/sizes.toml -->
//! …what `qi report` renders for `study studies/sizes.toml`…
//! <!-- /qi:report -->
//! ```
//!
//! `qi report FILE` rewrites every block from the current results; `qi report FILE --check` fails,
//! naming each block, when one differs (a test runs it on every doc that has blocks). Paths in a block's command
//! are relative to the Markdown file's folder.
//!
//! Kinds:
//! - `study SPEC [RESULTS]` — a study's summary table ([`crate::size_axis::markdown`]) and its
//!   finding ([`crate::size_axis::finding`]) from the study's finished cells
//!   ([`crate::study::collect_study`]; default results folder [`crate::size_axis::default_results`]).
//! - `study-memory SPEC [RESULTS]` — peak resident memory of a study's finished cells, from their
//!   sidecars ([`study_memory_table`]).
//! - `study-perplexity SPEC [RESULTS]` — the perplexity table (quantizer, bits per weight,
//!   perplexity, difference to the reference) of a one-model study's perplexity cells
//!   ([`study_perplexity_table`]), as `./dev study` runs `studies/smollm2.toml`.
//! - `perplexity FILE.jsonl` — the same table from lines of `qi perplexity --json` output, in file
//!   order.
//! - `twins FILE.jsonl` — one row per line of `qi bench-twins` output (model, spec, bits per
//!   weight of the method and of the compact file, sizes on disk, median load times and the load
//!   ratios), as `scripts/bench_models.sh QI twins` writes it.
//! - `costs FILE.jsonl` — one row per line of `qi bench-forward` output (parameters, load time,
//!   median forward, the matmul rate it implies, peak RSS), as `scripts/bench_models.sh QI sizes` writes it.
//! - `peers FILE.jsonl …` — qi against a peer (PyTorch, GPTQModel) doing the same job in the same
//!   run, one line per alternating round as `scripts/bench_forward.sh`, `scripts/bench_job.sh` and
//!   `scripts/bench_gptqmodel.sh` print them ([`peers_table`]).
//! - `size-costs SPEC RESULTS FORWARD.jsonl TWINS.jsonl [PEERS.jsonl …]` — cost against model size
//!   ([`costs`]): per study model, load, forward, its ratio to PyTorch, making the GPTQ-4 twin,
//!   the reference's induction and perplexity, the whole job's ratio to PyTorch, peak RSS and the
//!   RTN-4 twin's size, and how each grows with the parameter count.
//! - `sae-reports REPORT.json …` — one row per SAE trained by `qi sae train` (its `report.json` and
//!   the `config.json` beside it, named `…_report.json` / `…_config.json`): variant, training
//!   tokens and time, FVE and dead fraction held out and in sample, L0, the loss with the SAE
//!   spliced in.
//! - `hybrids FILE.txt` — the per-layer GPTQ hybrid table printed by the research check
//!   `qi/research/gptq_hybrid_ppl.rs` (model, matrices swapped, perplexity, share of act-order's
//!   gain), each row's share checked against its perplexity.
//! - `features|ioi|prune-overlap|sae-compare|induction|calibration|activations|attention|logit-lens|ablation|patching|neurons|salient-neurons FILE.parquet`
//!   — the summary table of one `qi analyze` result ([`tables`]), as `scripts/smollm2_results.sh`
//!   writes them.
mod costs;
mod tables;

pub use costs::{cost_rows, figure as cost_figure, markdown as cost_markdown, CostRow, CostSources};

use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

const OPEN: &str = "<!-- qi:report ";
const CLOSE: &str = "<!-- /qi:report -->";

/// What the block command `cmd` renders, paths relative to `base`.
pub fn render(cmd: &str, base: &Path) -> Result<String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    match words.as_slice() {
        ["study", spec, rest @ ..] if rest.len() <= 1 => {
            // every model of the file, also those not on this machine: the table is of the
            // committed cells, whatever this machine holds
            let path = base.join(spec);
            let study = crate::study::Study::load(&path)?;
            let dir = rest.first().map(|r| base.join(r)).unwrap_or_else(|| crate::size_axis::default_results(&path, &study, false));
            let sizes = crate::size_axis::model_sizes(&study, &dir)?;
            let table = crate::study::summary(&crate::study::collect_study(&study, &dir)?, &sizes)?;
            Ok(format!("{}\n{}", crate::size_axis::markdown(&table)?, crate::size_axis::finding(&table)?))
        }
        ["study-memory", spec, rest @ ..] if rest.len() <= 1 => {
            let path = base.join(spec);
            let study = crate::study::Study::load(&path)?;
            let dir = rest.first().map(|r| base.join(r)).unwrap_or_else(|| crate::size_axis::default_results(&path, &study, false));
            study_memory_table(&study, &dir)
        }
        ["study-perplexity", spec, rest @ ..] if rest.len() <= 1 => {
            let path = base.join(spec);
            let study = crate::study::Study::load(&path)?;
            let dir = rest.first().map(|r| base.join(r)).unwrap_or_else(|| crate::size_axis::default_results(&path, &study, false));
            study_perplexity_table(&study, &dir)
        }
        ["perplexity", file] => perplexity_table(&base.join(file)),
        ["twins", file] => twins_table(&base.join(file)),
        ["costs", file] => costs_table(&base.join(file)),
        ["size-costs", study, results, forward, twins, peers @ ..] => {
            let peers: Vec<std::path::PathBuf> = peers.iter().map(|f| base.join(f)).collect();
            costs::markdown(&cost_rows(&CostSources { study: &base.join(study), results: &base.join(results), forward: &base.join(forward), twins: &base.join(twins), peers: &peers })?)
        }
        ["peers", files @ ..] if !files.is_empty() => peers_table(&files.iter().map(|f| base.join(f)).collect::<Vec<_>>()),
        ["sae-reports", files @ ..] if !files.is_empty() => sae_reports_table(&files.iter().map(|f| base.join(f)).collect::<Vec<_>>()),
        ["hybrids", file] => hybrids_table(&base.join(file)),
        [kind, file] if tables::KINDS.contains(kind) => tables::render(kind, &base.join(file)),
        _ => bail!(
            "report block '{cmd}': unknown; expected `study SPEC [RESULTS]`, `study-memory SPEC [RESULTS]`, `study-perplexity SPEC [RESULTS]`, `perplexity FILE.jsonl`, `twins FILE.jsonl`, `costs FILE.jsonl`, `peers FILE.jsonl …`, `size-costs SPEC RESULTS FORWARD.jsonl TWINS.jsonl [PEERS.jsonl …]`, `hybrids FILE.txt`, `sae-reports REPORT.json …` or `KIND FILE.parquet` with KIND one of {}",
            tables::KINDS.join(", ")
        ),
    }
}

/// The summary table that the block `KIND FILE.parquet` prints, from results in memory: a
/// notebook shows its own run's table, the docs the committed run's, through the same code.
pub fn analysis_table(kind: &str, results: &crate::analysis::Tidy) -> Result<String> {
    if !tables::KINDS.contains(&kind) {
        bail!("no summary table for '{kind}'; tables exist for {}", tables::KINDS.join(", "));
    }
    tables::render_tidy(kind, results.clone(), Path::new(&format!("the {kind} results of {}", results.model)))
}

/// The Markdown perplexity table of a `qi perplexity --json` lines file (see the module docs).
pub fn perplexity_table(path: &Path) -> Result<String> {
    let mut rows = Vec::new();
    for l in json_lines(path)? {
        rows.push((l.st("quant")?, l.num("bits_per_weight")?, l.num("perplexity")?, l.num("windows")?, l.num("seqlen")?));
    }
    let first = rows[0].clone();
    if let Some(r) = rows.iter().find(|r| (r.3, r.4) != (first.3, first.4)) {
        bail!("{}: row '{}' has {} windows of {} tokens, the first row {} of {}: rows must share their windows", path.display(), r.0, r.3, r.4, first.3, first.4);
    }
    let rows: Vec<(String, f64, f64)> = rows.into_iter().map(|(q, b, p, _, _)| (q, b, p)).collect();
    perplexity_markdown(&rows).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Rows (quantizer, bits per weight, perplexity) as the perplexity table, each row's Δ against the
/// `none` row wherever that row is.
fn perplexity_markdown(rows: &[(String, f64, f64)]) -> Result<String> {
    let base = rows.iter().find(|r| r.0 == "none").map(|r| r.2).ok_or_else(|| anyhow!("no `none` (reference) row"))?;
    let bits = |b: f64| if b.fract() == 0.0 { format!("{b:.0}") } else { format!("{b:.2}") };
    let mut out = String::from("| quantizer (`--quant`) | bits/weight | perplexity | Δ vs reference |\n|---|---:|---:|---:|\n");
    for (q, b, p) in rows {
        out.push_str(&format!("| `{q}` | {} | {p:.2} | {:+.2} |\n", bits(*b), p - base));
    }
    Ok(out)
}

/// The perplexity table of a study with one model and one single-seed `perplexity` analysis, from
/// its cells: the reference, then each twin in the study's order, bits per weight from each cell's
/// sidecar (what the twin's quantization report counts). Every cell must be finished: a table with
/// rows left out would read as complete.
pub fn study_perplexity_table(study: &crate::study::Study, results: &Path) -> Result<String> {
    let cells: Vec<crate::study::Cell> = study.cells().into_iter().filter(|c| study.analyses[c.analysis].name == "perplexity").collect();
    let models: std::collections::BTreeSet<&str> = cells.iter().map(|c| study.models[c.model].name.as_str()).collect();
    if cells.is_empty() || models.len() != 1 || cells.iter().any(|c| c.analysis != cells[0].analysis || c.seed != cells[0].seed) {
        bail!("study {}: a perplexity table needs exactly one model and one perplexity analysis with one seed (models: {models:?})", study.name);
    }
    let (mut rows, mut missing) = (Vec::new(), Vec::new());
    for c in &cells {
        let (parquet, sidecar) = (c.parquet(results), c.sidecar(results));
        if !parquet.exists() && !sidecar.exists() {
            missing.push(c.spec.to_string());
            continue;
        }
        let rec = crate::study::check_cell(&parquet, &sidecar).map_err(|e| anyhow!("a result cell cannot be trusted: {e}"))?;
        let bits = rec.bits_per_weight.ok_or_else(|| anyhow!("{}: no bits_per_weight recorded (a cell made before cells recorded it: remove it and run the study again)", sidecar.display()))?;
        let df = crate::analysis::tidy::read_parquet(&parquet)?;
        let (metric, value) = (crate::analysis::tidy::str_values(&df, "metric")?, crate::analysis::tidy::f64_values(&df, "value")?);
        let ppl: Vec<f64> = metric.iter().zip(&value).filter(|(m, _)| *m == "perplexity").map(|(_, v)| *v).collect();
        let [p] = ppl.as_slice() else {
            bail!("{}: expected one perplexity row, found {}", parquet.display(), ppl.len());
        };
        rows.push((c.spec.to_string(), bits, *p));
    }
    if !missing.is_empty() {
        bail!("study {}: {} perplexity cell(s) not run yet in {} ({}): run `qi study run {}`", study.name, missing.len(), results.display(), missing.join(", "), study.file.display());
    }
    perplexity_markdown(&rows).map_err(|e| anyhow!("study {}: {e}", study.name))
}

/// The Markdown table of the text `qi/research/gptq_hybrid_ppl.rs` prints: a description line, a
/// header line, then `NAME SWAPPED PERPLEXITY SHARE %` rows (the name may hold spaces and digits,
/// so a row is read from the right). The share of act-order's gain is recomputed from the
/// perplexities (the `plain GPTQ` and `GPTQ act-order` rows) and must agree with the printed one
/// to within the rounding of two-decimal perplexities.
pub fn hybrids_table(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut rows: Vec<(String, usize, f64, f64)> = Vec::new();
    for (i, line) in text.lines().enumerate().skip(2).filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("{} line {}", path.display(), i + 1);
        let w: Vec<&str> = line.split_whitespace().collect();
        let [name @ .., n, p, share, "%"] = w.as_slice() else {
            bail!("{}: expected `NAME SWAPPED PERPLEXITY SHARE %`, found '{line}'", at());
        };
        if name.is_empty() {
            bail!("{}: a row without a name", at());
        }
        let n: usize = n.parse().with_context(|| format!("{}: swapped '{n}' is not a count", at()))?;
        let p: f64 = p.parse().with_context(|| format!("{}: perplexity '{p}' is not a number", at()))?;
        let share: f64 = share.parse().with_context(|| format!("{}: share '{share}' is not a number", at()))?;
        rows.push((name.join(" "), n, p, share));
    }
    let find = |name: &str| rows.iter().find(|r| r.0 == name).map(|r| r.2).ok_or_else(|| anyhow!("{}: no '{name}' row", path.display()));
    let (plain, act) = (find("plain GPTQ")?, find("GPTQ act-order")?);
    let mut out = String::from("| model | matrices swapped | perplexity | share of act-order's gain |\n|---|---:|---:|---:|\n");
    for (name, n, p, share) in &rows {
        // two-decimal perplexities move a recomputed share by well under 1.5 points
        let again = 100.0 * (plain - p) / (plain - act);
        if (again - share).abs() > 1.5 {
            bail!("{}: row '{name}' says {share} % of the gain, its perplexity gives {again:.1} %", path.display());
        }
        out.push_str(&format!("| {name} | {n} | {p:.2} | {share:.0} % |\n"));
    }
    Ok(out)
}

/// The table of SAE training reports (see the module docs); the config is the report's path with
/// `_report.json` replaced by `_config.json`.
pub fn sae_reports_table(reports: &[std::path::PathBuf]) -> Result<String> {
    let read = |p: &Path| -> Result<serde_json::Value> {
        let text = std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))
    };
    let mut out = String::from("| variant | training tokens | train time | FVE held out (in sample) | L0 | dead held out (in sample) | loss, SAE spliced in |\n|---|---:|---:|---:|---:|---:|---|\n");
    for rp in reports {
        let name = rp.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let Some(stem) = name.strip_suffix("_report.json") else {
            bail!("{}: expected a file named …_report.json (with its …_config.json beside it)", rp.display());
        };
        let (r, c) = (read(rp)?, read(&rp.with_file_name(format!("{stem}_config.json")))?);
        let num = |v: &serde_json::Value, k: &str, file: &Path| v[k].as_f64().ok_or_else(|| anyhow!("{}: no number '{k}'", file.display()));
        let (held, ins) = (&r["report"], &r["report_in_sample"]);
        let sae = &c["sae"];
        let variant = match sae["variant"].as_str() {
            Some("topk") => format!("TopK (k = {})", sae["k"]),
            Some(v @ ("relu" | "gated")) => format!("{} (L1 = {})", if v == "relu" { "ReLU" } else { "Gated" }, sae["l1"].as_f64().unwrap_or(f64::NAN)),
            _ => bail!("{}: no SAE variant", rp.display()),
        };
        out.push_str(&format!(
            "| {variant} | {:.0} | {:.0} s | {:.3} ({:.3}) | {:.0} | {:.1} % ({:.1} %) | {:.2} → {:.2} |\n",
            num(&r, "tokens", rp)?,
            num(&r, "seconds", rp)?,
            num(held, "fraction_variance_explained", rp)?,
            num(ins, "fraction_variance_explained", rp)?,
            num(held, "mean_l0", rp)?,
            100.0 * num(held, "dead_fraction", rp)?,
            100.0 * num(ins, "dead_fraction", rp)?,
            num(held, "loss_clean", rp)?,
            num(held, "loss_spliced", rp)?,
        ));
    }
    Ok(out)
}

/// One line of a JSON-lines results file; its accessors' errors name the file, line and key.
struct Line {
    at: String,
    v: serde_json::Value,
}

impl Line {
    fn num(&self, k: &str) -> Result<f64> {
        self.v.get(k).and_then(|x| x.as_f64()).ok_or_else(|| anyhow!("{}: no number '{k}'", self.at))
    }
    fn st(&self, k: &str) -> Result<String> {
        self.v.get(k).and_then(|x| x.as_str()).map(str::to_string).ok_or_else(|| anyhow!("{}: no string '{k}'", self.at))
    }
}

/// The non-empty lines of a JSON-lines file; an error if there are none.
fn json_lines(path: &Path) -> Result<Vec<Line>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = format!("{} line {}", path.display(), i + 1);
        let v = serde_json::from_str(line).with_context(|| at.clone())?;
        out.push(Line { at, v });
    }
    if out.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok(out)
}

/// The Markdown table of a `qi bench-twins` lines file (see the module docs).
pub fn twins_table(path: &Path) -> Result<String> {
    let mut out = String::from(
        "| model | twin | method bits/weight | compact file bits/weight | × method | compact twin | f32 twin | load reference | load compact | load f32 | compact ÷ reference | compact ÷ f32 |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for l in json_lines(path)? {
        let (method, file) = (l.num("method_bits_per_weight")?, l.num("compact_bits_per_quantized_weight")?);
        let (r, c, f) = (l.num("load_reference_s")?, l.num("load_compact_s")?, l.num("load_f32_s")?);
        let mb = |k: &str| l.num(k).map(|b| format!("{:.0} MB", b / 1e6));
        out.push_str(&format!(
            "| {} | `{}` | {method:.2} | {file:.2} | {:.2} | {} | {} | {r:.2} s | {c:.2} s | {f:.2} s | {:.2} | {:.2} |\n",
            crate::loader::display_name(&l.st("model")?),
            l.st("spec")?,
            file / method,
            mb("compact_dir_bytes")?,
            mb("f32_dir_bytes")?,
            c / r,
            c / f
        ));
    }
    Ok(out)
}

/// The Markdown table of `qi bench-forward` lines, one per model (see the module docs). The
/// matmul rate is 2 × matmul parameters × tokens over the median forward: a rate that falls with
/// size means the forward costs more than its parameter count predicts.
pub fn costs_table(path: &Path) -> Result<String> {
    let count = |n: f64| if n >= 1e9 { format!("{:.2} B", n / 1e9) } else { format!("{:.0} M", n / 1e6) };
    let mut out = String::from(
        "| model | parameters | non-embedding | load | forward (batch × tokens) | matmul GFLOP/s | peak RSS |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for l in json_lines(path)? {
        let (batch, seq, median) = (l.num("batch")?, l.num("seq")?, l.num("median_s")?);
        let gflops = 2.0 * l.num("matmul_params")? * batch * seq / median / 1e9;
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} s | {median:.2} s ({batch} × {seq}) | {gflops:.0} | {} |\n",
            crate::loader::display_name(&l.st("model")?),
            count(l.num("params")?),
            count(l.num("params_non_embedding")?),
            l.num("load_s")?,
            gib_of_kib(l.num("peak_rss_kb")?)
        ));
    }
    Ok(out)
}

/// Side-by-side rounds grouped by (job, model file name, peer) in order of first appearance, each
/// with its (qi, peer) seconds per round.
#[allow(clippy::type_complexity)]
fn peer_rounds(paths: &[std::path::PathBuf]) -> Result<Vec<((String, String, String), Vec<(f64, f64)>)>> {
    let mut jobs: Vec<((String, String, String), Vec<(f64, f64)>)> = Vec::new();
    for path in paths {
        for l in json_lines(path)? {
            let key = (l.st("job")?, crate::loader::display_name(&l.st("model")?), l.st("peer")?);
            let (q, p) = (l.num("qi_s")?, l.num("peer_s")?);
            if !(q > 0.0 && p > 0.0) {
                bail!("{}: qi_s {q} and peer_s {p} must be positive times", l.at);
            }
            match jobs.iter_mut().find(|(k, _)| *k == key) {
                Some((_, rounds)) => rounds.push((q, p)),
                None => jobs.push((key, vec![(q, p)])),
            }
        }
    }
    Ok(jobs)
}

/// The Markdown table of side-by-side benchmark rounds (`{"round", "job", "model", "peer", "qi_s",
/// "peer_s"}` per line, from one or more files): per (job, model, peer), in order of first
/// appearance, each round's two times and the median over rounds of the per-round ratio (the two
/// alternate within a round, so a slow minute of the machine hits both sides of one ratio).
pub fn peers_table(paths: &[std::path::PathBuf]) -> Result<String> {
    let jobs = peer_rounds(paths)?;
    let mut out = String::from("| job | model | peer | rounds | qi per round | peer per round | qi ÷ peer (median of rounds) |\n|---|---|---|---:|---:|---:|---:|\n");
    for ((job, model, peer), rounds) in &jobs {
        let list = |f: &dyn Fn(&(f64, f64)) -> f64| rounds.iter().map(|r| secs(f(r))).collect::<Vec<_>>().join(", ");
        let ratios: Vec<f64> = rounds.iter().map(|(q, p)| q / p).collect();
        out.push_str(&format!("| {job} | {model} | {peer} | {} | {} | {} | {:.2} |\n", rounds.len(), list(&|r| r.0), list(&|r| r.1), crate::metrics::median(&ratios)));
    }
    Ok(out)
}

/// Seconds as every table prints them: two decimals under 10 s, whole seconds to 10 min, then
/// minutes.
fn secs(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.2} s")
    } else if s < 600.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

/// A memory size the kernel reports in KiB (VmHWM, ru_maxrss), in GiB as every table prints it.
fn gib_of_kib(kib: f64) -> String {
    format!("{:.2} GiB", kib / (1u64 << 20) as f64)
}

/// Peak resident memory per (model, twin) of a study, and the time the quantizing cell took to make
/// and store the twin, from the sidecars of its finished cells, memory in
/// GiB (2^30 bytes, as the kernel counts): the largest peak of making the twin and storing it in
/// the cache, of loading it from the cache, and of any analysis cell (with that cell's analysis),
/// and how many of the pair's finished cells recorded a peak. Only pairs with a recorded peak are
/// listed (older cells have none). A damaged cell is an error naming it.
pub fn study_memory_table(study: &crate::study::Study, results: &Path) -> Result<String> {
    #[derive(Default)]
    struct Peaks {
        make: Option<u64>,
        make_s: Option<f64>,
        load: Option<u64>,
        analysis: Option<(u64, String)>,
        recorded: usize,
        done: usize,
    }
    let mut order: Vec<(String, String)> = Vec::new();
    let mut peaks: std::collections::HashMap<(String, String), Peaks> = std::collections::HashMap::new();
    for c in study.cells() {
        if !c.sidecar(results).exists() && !c.parquet(results).exists() {
            continue;
        }
        let rec = crate::study::check_cell(&c.parquet(results), &c.sidecar(results)).map_err(|e| anyhow!("a result cell cannot be trusted: {e}"))?;
        let k = (rec.model.clone(), rec.spec.clone());
        if !peaks.contains_key(&k) {
            order.push(k.clone());
        }
        let p = peaks.entry(k).or_default();
        p.done += 1;
        if rec.twin_peak_rss_kb.is_some() || rec.peak_rss_kb.is_some() {
            p.recorded += 1;
        }
        // charged to the first cell that used the twin (the others of that run record 0)
        if rec.twin_origin == "quantized" && rec.spec != "none" {
            p.make_s = Some(p.make_s.map_or(rec.twin_s, |t| t.max(rec.twin_s)));
        }
        if let Some(t) = rec.twin_peak_rss_kb {
            let slot = if rec.twin_origin == "quantized" { &mut p.make } else { &mut p.load };
            *slot = Some(slot.map_or(t, |m| m.max(t)));
        }
        if let Some(a) = rec.peak_rss_kb {
            if p.analysis.as_ref().is_none_or(|(m, _)| a > *m) {
                p.analysis = Some((a, rec.analysis.clone()));
            }
        }
    }
    let gib = |kb: Option<u64>| kb.map_or("–".to_string(), |k| gib_of_kib(k as f64));
    let mut out = String::from(
        "| model | twin | quantize and store the twin: time | peak | load the cached twin | largest analysis peak | cells with a record |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    let mut any = false;
    for k in &order {
        let p = &peaks[k];
        if p.recorded == 0 {
            continue;
        }
        any = true;
        let analysis = p.analysis.as_ref().map_or("–".to_string(), |(kb, name)| format!("{} ({name})", gib(Some(*kb))));
        let twin = if k.1 == "none" { "reference".to_string() } else { format!("`{}`", k.1) };
        let made = p.make_s.map_or("–".to_string(), secs);
        out.push_str(&format!("| {} | {twin} | {made} | {} | {} | {analysis} | {} of {} |\n", k.0, gib(p.make), gib(p.load), p.recorded, p.done));
    }
    if !any {
        bail!("no finished cell of study {} in {} records its peak memory", study.name, results.display());
    }
    Ok(out)
}

/// `text` with every block re-rendered, and the commands of the blocks whose content changed.
pub fn update(text: &str, base: &Path) -> Result<(String, Vec<String>)> {
    let mut out = String::with_capacity(text.len());
    let mut stale = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let line_end = rest[start..].find('\n').map(|i| start + i + 1).ok_or_else(|| anyhow!("a `{OPEN}…-->` line without an end"))?;
        let header = rest[start..line_end].trim_end();
        let cmd = header.strip_prefix(OPEN).and_then(|h| h.strip_suffix("-->")).map(str::trim).ok_or_else(|| anyhow!("malformed report block header '{header}': expected `{OPEN}COMMAND -->` on its own line"))?;
        let close = rest[line_end..].find(CLOSE).map(|i| line_end + i).ok_or_else(|| anyhow!("report block '{cmd}' has no closing `{CLOSE}`"))?;
        let old = &rest[line_end..close];
        let new = render(cmd, base).with_context(|| format!("report block '{cmd}'"))?;
        let new = format!("{}\n", new.trim_end());
        if old != new {
            stale.push(cmd.to_string());
        }
        out.push_str(&rest[..line_end]);
        out.push_str(&new);
        rest = &rest[close..];
        out.push_str(&rest[..CLOSE.len()]);
        rest = &rest[CLOSE.len()..];
    }
    out.push_str(rest);
    Ok((out, stale))
}

/// Re-renders the blocks of the Markdown file `path` (atomically) or, with `check`, only reports
/// the stale ones. Returns the commands of the blocks that were (or would be) changed.
pub fn update_file(path: &Path, check: bool) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let (new, stale) = update(&text, base).with_context(|| path.display().to_string())?;
    if !check && new != text {
        crate::io::save_text(&new, path)?;
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sae_report_rows_read_held_out_and_in_sample_apart() {
        let dir = std::env::temp_dir().join(format!("qi-report-sae-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = |fve: f64, fve_in: f64, dead: f64, dead_in: f64| {
            serde_json::json!({ "tokens": 204800, "seconds": 600.9,
                "report": { "fraction_variance_explained": fve, "mean_l0": 248.9, "dead_fraction": dead, "loss_clean": 3.8119, "loss_spliced": 7.5267 },
                "report_in_sample": { "fraction_variance_explained": fve_in, "mean_l0": 230.7, "dead_fraction": dead_in, "loss_clean": 4.1, "loss_spliced": 7.7 } })
        };
        std::fs::write(dir.join("relu_report.json"), report(0.391, 0.363, 0.0773, 0.061).to_string()).unwrap();
        std::fs::write(dir.join("relu_config.json"), serde_json::json!({ "sae": { "variant": "relu", "l1": 1.0, "k": 32 } }).to_string()).unwrap();
        std::fs::write(dir.join("topk_report.json"), report(0.669, 0.688, 0.0968, 0.118).to_string()).unwrap();
        std::fs::write(dir.join("topk_config.json"), serde_json::json!({ "sae": { "variant": "topk", "l1": 1.0, "k": 32 } }).to_string()).unwrap();
        let t = render("sae-reports topk_report.json relu_report.json", &dir).unwrap();
        // in-sample values in brackets, the held-out ones first; the in-sample loss is not the one shown
        assert!(t.ends_with("| TopK (k = 32) | 204800 | 601 s | 0.669 (0.688) | 249 | 9.7 % (11.8 %) | 3.81 → 7.53 |\n| ReLU (L1 = 1) | 204800 | 601 s | 0.391 (0.363) | 249 | 7.7 % (6.1 %) | 3.81 → 7.53 |\n"), "{t}");
        std::fs::remove_file(dir.join("relu_config.json")).unwrap();
        assert!(format!("{:#}", render("sae-reports relu_report.json", &dir).unwrap_err()).contains("relu_config.json"));
        assert!(format!("{:#}", render("sae-reports topk_config.json", &dir).unwrap_err()).contains("…_report.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hybrid_rows_are_read_from_the_right_and_checked() {
        let dir = std::env::temp_dir().join(format!("qi-report-hybrids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("h.txt");
        let head = "20 windows; 4 bits\nmodel swapped perplexity share of gain\n";
        // names with digits and several words; a negative share
        let body = "plain GPTQ 0 65.31 0 %\nGPTQ act-order 210 54.97 100 %\nplain + act-order L11 down 1 63.35 19 %\nplain + RTN every down but L11 29 71.08 -56 %\n";
        std::fs::write(&f, format!("{head}{body}")).unwrap();
        assert_eq!(
            hybrids_table(&f).unwrap(),
            "| model | matrices swapped | perplexity | share of act-order's gain |\n|---|---:|---:|---:|\n| plain GPTQ | 0 | 65.31 | 0 % |\n| GPTQ act-order | 210 | 54.97 | 100 % |\n| plain + act-order L11 down | 1 | 63.35 | 19 % |\n| plain + RTN every down but L11 | 29 | 71.08 | -56 % |\n"
        );
        // a share that its perplexity does not give is refused, naming the row
        std::fs::write(&f, format!("{head}{}", body.replace("63.35 19 %", "63.35 29 %"))).unwrap();
        assert!(format!("{:#}", hybrids_table(&f).unwrap_err()).contains("'plain + act-order L11 down' says 29 %"));
        std::fs::write(&f, format!("{head}{}", body.replace("GPTQ act-order 210", "GPTQ act-order x"))).unwrap();
        assert!(format!("{:#}", hybrids_table(&f).unwrap_err()).contains("line 4"));
        std::fs::write(&f, format!("{head}plain GPTQ 0 65.31 0 %\n")).unwrap();
        assert!(format!("{:#}", hybrids_table(&f).unwrap_err()).contains("no 'GPTQ act-order' row"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_blocks_are_errors_naming_them() {
        let base = Path::new(".");
        assert!(format!("{:#}", update("a\n<!-- qi:report nope x -->\nold\n<!-- /qi:report -->\n", base).unwrap_err()).contains("'nope x': unknown"));
        assert!(format!("{:#}", update("<!-- qi:report study s.toml -->\nno end\n", base).unwrap_err()).contains("no closing"));
        // text without blocks passes through unchanged
        assert_eq!(update("plain\ntext\n", base).unwrap(), ("plain\ntext\n".to_string(), vec![]));
    }

    #[test]
    fn twins_table_divides_the_right_loads() {
        let dir = crate::testing::scratch("report-twins");
        let f = dir.join("t.jsonl");
        let line = r#"{"model":"/m/SmolLM2.Q4_1.gguf","spec":"nf4","method_bits_per_weight":4.5,"compact_bits_per_quantized_weight":4.6,"compact_dir_bytes":60000000,"f32_dir_bytes":540000000,"load_reference_s":2.0,"load_compact_s":1.5,"load_f32_s":3.0}"#;
        std::fs::write(&f, format!("{line}\n")).unwrap();
        let t = twins_table(&f).unwrap();
        // compact ÷ reference = 0.75 and compact ÷ f32 = 0.50 (swapped, they would read 0.50 and 0.75)
        assert!(t.ends_with("| SmolLM2.Q4_1 | `nf4` | 4.50 | 4.60 | 1.02 | 60 MB | 540 MB | 2.00 s | 1.50 s | 3.00 s | 0.75 | 0.50 |\n"), "{t}");
        std::fs::write(&f, line.replace("\"load_f32_s\":3.0", "\"load_f32\":3.0")).unwrap();
        let e = format!("{:#}", twins_table(&f).unwrap_err());
        assert!(e.contains("line 1") && e.contains("load_f32_s"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn costs_table_counts_matmul_parameters_only() {
        let dir = crate::testing::scratch("report-costs");
        let f = dir.join("c.jsonl");
        // 2 × 1e8 matmul parameters × 1024 tokens / 2 s = 102 GFLOP/s; counted with all 1.5e8
        // parameters (the embedding lookup too) it would read 154
        let line = r#"{"model":"/m/q.gguf","params":150000000,"params_non_embedding":60000000,"matmul_params":100000000,"batch":8,"seq":128,"median_s":2.0,"load_s":1.5,"peak_rss_kb":3000000}"#;
        std::fs::write(&f, format!("\n{line}\n")).unwrap();
        let t = costs_table(&f).unwrap();
        assert!(t.ends_with("| q | 150 M | 60 M | 1.50 s | 2.00 s (8 × 128) | 102 | 2.86 GiB |\n"), "{t}");
        std::fs::write(&f, line.replace("\"seq\":128,", "")).unwrap();
        let e = format!("{:#}", costs_table(&f).unwrap_err());
        assert!(e.contains("line 1") && e.contains("'seq'"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn peer_ratio_is_the_median_of_per_round_ratios() {
        let dir = crate::testing::scratch("report-peers");
        let (f, g) = (dir.join("g.jsonl"), dir.join("h.jsonl"));
        let line = |job: &str, q: f64, p: f64| format!("{{\"round\":1,\"job\":\"{job}\",\"model\":\"/m/q.gguf\",\"peer\":\"GPTQModel\",\"qi_s\":{q},\"peer_s\":{p},\"peer_detail\":{{}}}}\n");
        // per-round ratios 0.5, 1.0, 0.25: median 0.50; the ratio of medians would be 0.33 and
        // of the sums 0.56. Rounds of one job may come from two files.
        std::fs::write(&f, line("GPTQ-4", 100.0, 200.0) + &line("GPTQ-4", 300.0, 300.0) + &line("forward", 2.5, 5.0)).unwrap();
        std::fs::write(&g, line("GPTQ-4", 100.0, 400.0)).unwrap();
        let t = peers_table(&[f.clone(), g.clone()]).unwrap();
        assert!(t.contains("| GPTQ-4 | q | GPTQModel | 3 | 100 s, 300 s, 100 s | 200 s, 300 s, 400 s | 0.50 |\n"), "{t}");
        assert!(t.contains("| forward | q | GPTQModel | 1 | 2.50 s | 5.00 s | 0.50 |\n"), "{t}");
        assert!(t.find("GPTQ-4").unwrap() < t.find("forward").unwrap(), "rows in order of first appearance: {t}");
        std::fs::write(&f, "{\"job\":\"x\",\"model\":\"m\",\"peer\":\"p\",\"qi_s\":1}\n").unwrap();
        let e = format!("{:#}", peers_table(&[f.clone()]).unwrap_err());
        assert!(e.contains("line 1") && e.contains("peer_s"), "{e}");
        std::fs::write(&f, line("x", 1.0, 0.0)).unwrap();
        let e = format!("{:#}", peers_table(&[f.clone()]).unwrap_err());
        assert!(e.contains("line 1") && e.contains("positive"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn perplexity_table_from_json_lines() {
        let dir = crate::testing::scratch("report-ppl");
        let f = dir.join("p.jsonl");
        let row = |q: &str, b: f64, p: f64, w: u32| format!("{{\"quant\":\"{q}\",\"bits_per_weight\":{b},\"perplexity\":{p},\"windows\":{w},\"seqlen\":512}}\n");
        // the reference need not come first; Δ is against it, not against the first row
        std::fs::write(&f, row("rtn:bits=4", 4.03125, 61.554, 20) + &row("none", 32.0, 35.876, 20) + "\n" + &row("q4_0", 4.5, 34.9, 20)).unwrap();
        let t = update("x\n<!-- qi:report perplexity p.jsonl -->\nold\n<!-- /qi:report -->\n", &dir).unwrap();
        assert_eq!(
            t.0,
            "x\n<!-- qi:report perplexity p.jsonl -->\n| quantizer (`--quant`) | bits/weight | perplexity | Δ vs reference |\n|---|---:|---:|---:|\n\
             | `rtn:bits=4` | 4.03 | 61.55 | +25.68 |\n| `none` | 32 | 35.88 | +0.00 |\n| `q4_0` | 4.50 | 34.90 | -0.98 |\n<!-- /qi:report -->\n"
        );
        assert_eq!(t.1, vec!["perplexity p.jsonl".to_string()]);
        // rows on other windows, a missing field, no reference: errors naming the file and line
        std::fs::write(&f, row("none", 32.0, 35.9, 20) + &row("nf4", 4.5, 40.0, 8)).unwrap();
        assert!(format!("{:#}", perplexity_table(&f).unwrap_err()).contains("'nf4' has 8 windows"));
        std::fs::write(&f, row("none", 32.0, 35.9, 20) + "{\"quant\":\"nf4\",\"perplexity\":40,\"windows\":20,\"seqlen\":512}\n").unwrap();
        let e = format!("{:#}", perplexity_table(&f).unwrap_err());
        assert!(e.contains("line 2") && e.contains("bits_per_weight"), "{e}");
        std::fs::write(&f, row("nf4", 4.5, 40.0, 20)).unwrap();
        assert!(format!("{:#}", perplexity_table(&f).unwrap_err()).contains("no `none`"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
