//! Cost against model size: per model of a study, what each step of the study's job costs, from
//! committed measurements only — load, forward and peak RSS from `qi bench-forward` lines
//! (`scripts/bench_models.sh QI sizes`), the compact RTN-4 twin's size from `qi bench-twins` lines,
//! making the GPTQ-4 twin, the reference's induction (every seed) and perplexity from the study's
//! cells (their sidecars' `twin_s` and `analysis_s`), and the ratios to PyTorch from side-by-side
//! rounds ([`super::peers_table`]'s lines). Each row is one model; a step without a measurement is
//! `–`, never a guess.
use super::{gib_of_kib, json_lines, peer_rounds, secs};
use crate::quant::QuantSpec;
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};

/// One model's costs (seconds unless named otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct CostRow {
    /// The study's name for the model.
    pub model: String,
    /// All parameters (embedding and output matrix included).
    pub params: f64,
    pub load_s: f64,
    /// Median forward of `batch × seq` random tokens caching every residual and pattern.
    pub forward_s: f64,
    pub batch_seq: (usize, usize),
    /// Median over rounds of qi ÷ PyTorch for that forward.
    pub forward_vs_torch: Option<f64>,
    /// Making the study's GPTQ-4 twin (calibration forwards, Hessians, GPTQ, storing).
    pub gptq_s: Option<f64>,
    /// The reference's induction analysis, summed over the study's seeds, and how many seeds.
    pub induction_s: Option<(f64, usize)>,
    /// The reference's perplexity analysis, summed over the study's seeds, and how many seeds.
    pub perplexity_s: Option<(f64, usize)>,
    /// Peak resident memory of the forward benchmark (load + one cached forward), KiB.
    pub peak_rss_kb: f64,
    /// The compact RTN-4 twin on disk, bytes.
    pub twin_bytes: Option<f64>,
    /// Median over rounds of qi ÷ PyTorch for the whole job (`scripts/bench_job.sh`).
    pub job_vs_torch: Option<f64>,
}

/// The inputs of a cost table: the study and its results folder, the forward lines, the twin
/// lines and any number of side-by-side round files.
pub struct CostSources<'a> {
    pub study: &'a Path,
    pub results: &'a Path,
    pub forward: &'a Path,
    pub twins: &'a Path,
    pub peers: &'a [PathBuf],
}

/// The study's GPTQ quantizer at 4 bits (exactly one).
fn gptq4(study: &crate::study::Study) -> Result<QuantSpec> {
    let found: Vec<&QuantSpec> = study.specs.iter().filter(|s| matches!(s, QuantSpec::Gptq(g) if g.bits == 4)).collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        _ => bail!("study {}: a cost table needs exactly one 4-bit GPTQ quantizer, found {}", study.name, found.len()),
    }
}

/// The rows, one per study model in the study's order. Every study model must have a forward line
/// (matched by the model file's name); the other steps may be missing.
pub fn cost_rows(src: &CostSources) -> Result<Vec<CostRow>> {
    let study = crate::study::Study::load(src.study)?;
    let gptq = gptq4(&study)?;
    let forward = json_lines(src.forward)?;
    let twins = json_lines(src.twins)?;
    let rounds = peer_rounds(src.peers)?;
    let cells = study.cells();
    let mut out = Vec::new();
    for (mi, m) in study.models.iter().enumerate() {
        let file = crate::loader::display_name(&m.resolved);
        let same = |l: &super::Line| l.st("model").map(|s| crate::loader::display_name(&s) == file);
        let mut fw = None;
        for l in &forward {
            if same(l)? {
                fw = Some(l);
            }
        }
        let fw = fw.ok_or_else(|| anyhow!("{}: no forward line for {} ({file})", src.forward.display(), m.name))?;
        let mut twin_bytes = None;
        for l in &twins {
            if same(l)? && l.st("spec")? == "rtn:bits=4" {
                twin_bytes = Some(l.num("compact_dir_bytes")?);
            }
        }
        let ratio = |job: &str| {
            rounds.iter().find(|((j, model, _), _)| j.starts_with(job) && *model == file).map(|(_, r)| crate::metrics::median(&r.iter().map(|(q, p)| q / p).collect::<Vec<_>>()))
        };
        // the finished cells of this model, checked before they are trusted
        let mut gptq_s = None;
        let (mut induction, mut perplexity) = ((0.0, 0usize), (0.0, 0usize));
        for c in cells.iter().filter(|c| c.model == mi) {
            let (parquet, sidecar) = (c.parquet(src.results), c.sidecar(src.results));
            if !parquet.exists() && !sidecar.exists() {
                continue;
            }
            let rec = crate::study::check_cell(&parquet, &sidecar).map_err(|e| anyhow!("a result cell cannot be trusted: {e}"))?;
            // the run charges making the twin to the first cell that used it (the others of that
            // run record 0): the largest time of the quantizing cells
            if c.spec == gptq && rec.twin_origin == "quantized" {
                gptq_s = Some(gptq_s.map_or(rec.twin_s, |t: f64| t.max(rec.twin_s)));
            }
            if matches!(c.spec, QuantSpec::None) {
                match study.analyses[c.analysis].name.as_str() {
                    "induction" => induction = (induction.0 + rec.analysis_s, induction.1 + 1),
                    "perplexity" => perplexity = (perplexity.0 + rec.analysis_s, perplexity.1 + 1),
                    _ => {}
                }
            }
        }
        out.push(CostRow {
            model: m.name.clone(),
            params: fw.num("params")?,
            load_s: fw.num("load_s")?,
            forward_s: fw.num("median_s")?,
            batch_seq: (fw.num("batch")? as usize, fw.num("seq")? as usize),
            forward_vs_torch: ratio("forward"),
            gptq_s,
            induction_s: (induction.1 > 0).then_some(induction),
            perplexity_s: (perplexity.1 > 0).then_some(perplexity),
            peak_rss_kb: fw.num("peak_rss_kb")?,
            twin_bytes,
            job_vs_torch: ratio("whole job"),
        });
    }
    Ok(out)
}

/// The Markdown table of [`cost_rows`], smallest model first, with each step's time per billion
/// parameters growth summarised in the last row: the exponent `k` of time ∝ parametersᵏ between
/// the smallest and the largest model (1: cost grows as the parameter count).
pub fn markdown(rows: &[CostRow]) -> Result<String> {
    if rows.is_empty() {
        bail!("no models for a cost table");
    }
    let mut rows = rows.to_vec();
    rows.sort_by(|a, b| a.params.total_cmp(&b.params));
    let count = |n: f64| if n >= 1e9 { format!("{:.2} B", n / 1e9) } else { format!("{:.0} M", n / 1e6) };
    let opt = |v: Option<f64>| v.map_or("–".to_string(), secs);
    let ratio = |v: Option<f64>| v.map_or("–".to_string(), |r| format!("{r:.2}"));
    let (b, s) = rows[0].batch_seq;
    let mut out = format!(
        "| model | parameters | load | forward {b} × {s} | forward ÷ torch | GPTQ-4 twin | induction, reference | perplexity, reference | whole job ÷ torch | peak RSS (forward) | RTN-4 twin on disk |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in &rows {
        if r.batch_seq != (b, s) {
            bail!("{}: forward of {:?} tokens, the others {b} × {s}: rows must share their forward", r.model, r.batch_seq);
        }
        let seeds = |v: Option<(f64, usize)>| v.map_or("–".to_string(), |(t, n)| if n > 1 { format!("{} ({n} seeds)", secs(t)) } else { secs(t) });
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.model,
            count(r.params),
            secs(r.load_s),
            secs(r.forward_s),
            ratio(r.forward_vs_torch),
            opt(r.gptq_s),
            seeds(r.induction_s),
            seeds(r.perplexity_s),
            ratio(r.job_vs_torch),
            gib_of_kib(r.peak_rss_kb),
            r.twin_bytes.map_or("–".to_string(), |x| format!("{:.0} MB", x / 1e6)),
        ));
    }
    let (first, last) = (&rows[0], &rows[rows.len() - 1]);
    let k = |a: Option<f64>, z: Option<f64>| match (a, z) {
        (Some(a), Some(z)) if rows.len() > 1 => format!("{:.2}", (z / a).ln() / (last.params / first.params).ln()),
        _ => "–".into(),
    };
    out.push_str(&format!(
        "| growth: k in time ∝ parametersᵏ, {} → {} | | {} | {} | | {} | {} | {} | | {} | {} |\n",
        first.model,
        last.model,
        k(Some(first.load_s), Some(last.load_s)),
        k(Some(first.forward_s), Some(last.forward_s)),
        k(first.gptq_s, last.gptq_s),
        k(first.induction_s.map(|x| x.0), last.induction_s.map(|x| x.0)),
        k(first.perplexity_s.map(|x| x.0), last.perplexity_s.map(|x| x.0)),
        k(Some(first.peak_rss_kb), Some(last.peak_rss_kb)),
        k(first.twin_bytes, last.twin_bytes),
    ));
    Ok(out)
}

/// Time of each step against parameters, both axes logarithmic (a slope of one is cost
/// proportional to size).
pub fn figure(rows: &[CostRow]) -> Result<plotly::Plot> {
    use polars::prelude::{Column, DataFrame};
    let (mut x, mut step, mut v) = (Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let (b, s) = r.batch_seq;
        let points = [
            ("load".to_string(), Some(r.load_s)),
            (format!("forward {b} × {s}"), Some(r.forward_s)),
            ("GPTQ-4 twin".to_string(), r.gptq_s),
            ("induction, reference, all seeds".to_string(), r.induction_s.map(|i| i.0)),
            ("perplexity, reference".to_string(), r.perplexity_s.map(|p| p.0)),
        ];
        for (name, t) in points {
            if let Some(t) = t {
                x.push(r.params);
                step.push(name);
                v.push(t);
            }
        }
    }
    let df = DataFrame::new_infer_height(vec![Column::new("params".into(), x), Column::new("step".into(), step), Column::new("value".into(), v)])?;
    let labels = crate::analysis::plots::Labels::new("Time of each step against model size (2-core CPU)", "parameters (log)", "seconds (log)");
    crate::analysis::plots::lines_log_log(&df, "params", "step", &labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, params: f64, load: f64, gptq: Option<f64>) -> CostRow {
        CostRow {
            model: model.into(),
            params,
            load_s: load,
            forward_s: 2.0,
            batch_seq: (8, 128),
            forward_vs_torch: Some(0.9),
            gptq_s: gptq,
            induction_s: Some((30.0, 5)),
            perplexity_s: Some((700.0, 1)),
            peak_rss_kb: 1048576.0,
            twin_bytes: Some(5.4e7),
            job_vs_torch: None,
        }
    }

    #[test]
    fn growth_is_the_exponent_between_the_smallest_and_largest_model() {
        // given largest first: the table sorts by size. Load 1 s → 10 s over 10× the parameters
        // is k = 1; GPTQ 100 s → 3162 s is k = 1.5 (a ratio of times, 31.6, would read as growth
        // far beyond the size)
        let rows = [row("big", 1e9, 10.0, Some(3162.28)), row("small", 1e8, 1.0, Some(100.0)), row("mid", 3e8, 4.0, None)];
        let t = markdown(&rows).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[2].starts_with("| small | 100 M | 1.00 s | 2.00 s | 0.90 | 100 s | 30 s (5 seeds) | 11.7 min | – | 1.00 GiB | 54 MB |"), "{t}");
        assert!(lines[3].starts_with("| mid |") && lines[3].contains("| – |"), "a missing step prints –: {t}");
        assert!(lines[5].starts_with("| growth: k in time ∝ parametersᵏ, small → big | | 1.00 | 0.00 | | 1.50 | 0.00 | 0.00 | | 0.00 | 0.00 |"), "{t}");
        let mut other = rows[1].clone();
        other.batch_seq = (1, 128);
        assert!(markdown(&[rows[0].clone(), other]).unwrap_err().to_string().contains("rows must share their forward"));
    }
}
