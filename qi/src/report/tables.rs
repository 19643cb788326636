//! Markdown tables of one analysis's tidy results (a `qi analyze NAME --out FILE.parquet` table),
//! for `qi report` blocks `<!-- qi:report NAME FILE.parquet -->`. Each table states its own
//! definitions (thresholds, layers) so that the prose around it need not repeat numbers.
//!
//! Tables with several seeds are averaged over seeds first ([`Tidy::mean_over_seeds`]: the CI is
//! the t-interval over seeds); single-seed tables keep the analysis's own CIs (bootstrap).
use crate::analysis::tidy::{read_parquet, Label, Row, Tidy};
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

/// The analyses with a table, as block kinds.
pub const KINDS: [&str; 13] = [
    "features",
    "ioi",
    "prune-overlap",
    "sae-compare",
    "induction",
    "calibration",
    "activations",
    "attention",
    "logit-lens",
    "ablation",
    "patching",
    "neurons",
    "salient-neurons",
];

/// The table of analysis `kind` from the parquet file `path`.
pub fn render(kind: &str, path: &Path) -> Result<String> {
    let df = read_parquet(path)
        .with_context(|| format!("{}: cannot read a tidy results table", path.display()))?;
    let raw = Tidy::from_frame(&df).with_context(|| path.display().to_string())?;
    render_tidy(kind, raw, path)
}

/// The table of analysis `kind` from results in memory; `path` names them in errors.
pub fn render_tidy(kind: &str, raw: Tidy, path: &Path) -> Result<String> {
    let seeds: std::collections::BTreeSet<Option<u64>> = raw.rows.iter().map(|r| r.seed).collect();
    let t = Results {
        tidy: if seeds.len() > 1 {
            raw.mean_over_seeds()
        } else {
            raw
        },
        path,
    };
    match kind {
        "features" => t.features(),
        "ioi" => t.ioi(),
        "prune-overlap" => t.prune_overlap(),
        "sae-compare" => t.sae_compare(),
        "induction" => t.induction(),
        "calibration" => t.calibration(),
        "activations" => t.activations(),
        "attention" => t.attention(),
        "logit-lens" => t.logit_lens(),
        "ablation" => t.ablation(),
        "patching" => t.patching(),
        "neurons" => t.neurons(),
        "salient-neurons" => t.salient(),
        _ => bail!(
            "no table for '{kind}'; tables exist for {}",
            KINDS.join(", ")
        ),
    }
}

struct Results<'a> {
    tidy: Tidy,
    path: &'a Path,
}

fn label_is(r: &Row, name: &str, value: &str) -> bool {
    r.labels.iter().any(|(k, v)| {
        k == name
            && match v {
                Label::Str(s) => s == value,
                Label::Int(i) => i.to_string() == value,
                Label::Float(f) => f.to_string() == value,
            }
    })
}

fn label_int(r: &Row, name: &str) -> Option<i64> {
    r.labels.iter().find_map(|(k, v)| match v {
        Label::Int(i) if k == name => Some(*i),
        _ => None,
    })
}

/// `L{layer}H{head}`, or `L{layer}` for a row without a head.
fn site(r: &Row) -> String {
    match (r.layer, r.head) {
        (Some(l), Some(h)) => format!("L{l}H{h}"),
        (Some(l), None) => format!("L{l}"),
        _ => "–".into(),
    }
}

/// `v` with `d` decimals, and its CI when it has a non-empty one; NaN as "–".
fn num(r: &Row, d: usize) -> String {
    let v = fmt(r.value, d);
    match r.ci {
        Some((lo, hi)) if hi > lo && lo.is_finite() && hi.is_finite() => {
            format!("{v} [{}, {}]", fmt(lo, d), fmt(hi, d))
        }
        _ => v,
    }
}

fn fmt(v: f64, d: usize) -> String {
    if v.is_finite() {
        format!("{v:.d$}")
    } else {
        "–".into()
    }
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1} %", 100.0 * v)
    } else {
        "–".into()
    }
}

fn spec_cell(spec: &str) -> String {
    if spec == "none" {
        "reference".into()
    } else {
        format!("`{spec}`")
    }
}

impl Results<'_> {
    /// Specs in order of first appearance.
    fn specs(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.tidy.rows {
            if !out.contains(&r.spec.as_str()) {
                out.push(&r.spec);
            }
        }
        out
    }
    /// The highest layer any row has (the model's output layer for per-layer analyses).
    fn last_layer(&self) -> Result<usize> {
        self.tidy.rows.iter().filter_map(|r| r.layer).max().ok_or_else(|| anyhow!("{}: no layer rows", self.path.display()))
    }
    fn twins(&self) -> Vec<&str> {
        self.specs().into_iter().filter(|s| *s != "none").collect()
    }
    fn rows<'s: 'q, 'q>(
        &'s self,
        spec: &'q str,
        metric: &'q str,
    ) -> impl Iterator<Item = &'s Row> + 'q {
        self.tidy
            .rows
            .iter()
            .filter(move |r| r.spec == spec && r.metric == metric)
    }
    /// The single row of `spec` and `metric` that `keep` accepts.
    fn one(&self, spec: &str, metric: &str, keep: impl Fn(&Row) -> bool) -> Result<&Row> {
        let mut found = self.rows(spec, metric).filter(|r| keep(r));
        let first = found.next().ok_or_else(|| {
            anyhow!(
                "{}: no '{metric}' row for spec '{spec}'",
                self.path.display()
            )
        })?;
        if found.next().is_some() {
            bail!(
                "{}: several '{metric}' rows for spec '{spec}' where the table expects one",
                self.path.display()
            );
        }
        Ok(first)
    }
    fn value(&self, spec: &str, metric: &str, keep: impl Fn(&Row) -> bool) -> Result<f64> {
        Ok(self.one(spec, metric, keep)?.value)
    }

    fn features(&self) -> Result<String> {
        let n_active = self.one("none", "n_active", |_| true)?;
        let fve = self.one("none", "sae_fve", |_| true)?;
        let mut out = format!(
            "{:.0} of {} SAE features fire on the {} evaluation tokens. Survived: r ≥ survived_r and top-k overlap ≥ survived_overlap; destroyed: r < destroyed_r; blurred: between (the analysis's thresholds).\n\n\
             | twin (`--quant`) | bits/weight | survived | blurred | destroyed | SAE FVE | AUC (all predictors) |\n|---|---:|---:|---:|---:|---:|---:|\n\
             | reference | 32 | – | – | – | {} | – |\n",
            n_active.value,
            n_active.n.map_or("?".into(), |n| n.to_string()),
            fve.n.map_or("?".into(), |n| n.to_string()),
            fmt(fve.value, 2)
        );
        for s in self.twins() {
            let share = |c: &str| self.value(s, "share", |r| label_is(r, "category", c));
            let bits = self
                .rows(s, "bits_per_weight")
                .next()
                .map_or("–".into(), |r| fmt(r.value, 2));
            out.push_str(&format!(
                "| {} | {bits} | {} | {} | {} | {} | {} |\n",
                spec_cell(s),
                pct(share("survived")?),
                pct(share("blurred")?),
                pct(share("destroyed")?),
                fmt(self.value(s, "sae_fve", |_| true)?, 2),
                fmt(
                    self.value(s, "survival_auc", |r| label_is(r, "predictors", "all"))?,
                    2
                )
            ));
        }
        Ok(out)
    }

    fn induction(&self) -> Result<String> {
        let stripe = |rule: &'static str| {
            move |r: &Row| label_is(r, "score", "stripe") && label_is(r, "rule", rule)
        };
        let twins = self.twins();
        let first = twins
            .first()
            .ok_or_else(|| anyhow!("{}: no twin rows", self.path.display()))?;
        let detector = |rule| {
            self.one(first, "survival", stripe(rule))
                .map(|r| r.label_str("detector").unwrap_or(rule).to_string())
        };
        // after averaging over seeds `n` counts seeds, so the heads are counted from the scores
        let heads = match self.per_head("none", "stripe_score").len() {
            0 => String::new(),
            n => format!(" ({n} heads)"),
        };
        let mut out = format!(
            "| twin (`--quant`) | survival, {} | survival, {} | Pearson r of stripe scores{heads} | induction loss (nats) |\n|---|---:|---:|---:|---:|\n",
            detector("threshold")?,
            detector("sigma")?
        );
        out.push_str(&format!(
            "| reference | – | – | – | {} |\n",
            num(self.one("none", "induction_loss", |_| true)?, 2)
        ));
        for s in twins {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                spec_cell(s),
                num(self.one(s, "survival", stripe("threshold"))?, 3),
                num(self.one(s, "survival", stripe("sigma"))?, 3),
                fmt(
                    self.value(s, "pearson_r", |r| label_is(r, "score", "stripe"))?,
                    3
                ),
                num(self.one(s, "induction_loss", |_| true)?, 2)
            ));
        }
        Ok(out)
    }

    fn calibration(&self) -> Result<String> {
        let mut out = String::from("| model (`--quant`) | predictions | accuracy | mean confidence | ECE | ACE |\n|---|---:|---:|---:|---:|---:|\n");
        for s in self.specs() {
            let acc = self.one(s, "accuracy", |_| true)?;
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                spec_cell(s),
                acc.n.map_or("?".into(), |n| n.to_string()),
                fmt(acc.value, 3),
                fmt(self.value(s, "mean_confidence", |_| true)?, 3),
                fmt(self.value(s, "ece", |_| true)?, 3),
                fmt(self.value(s, "ace", |_| true)?, 3)
            ));
        }
        Ok(out)
    }

    fn activations(&self) -> Result<String> {
        let resid =
            |l: usize| move |r: &Row| r.layer == Some(l) && label_is(r, "component", "resid_post");
        let last = self.last_layer()?;
        let mut out = format!(
            "`hook_resid_post`, reference vs twin, mean over tokens (95 % CI):\n\n\
             | twin (`--quant`) | ‖a − â‖/‖a‖ after layer 0 | ‖a − â‖/‖a‖ after layer {last} | cosine after layer {last} |\n|---|---:|---:|---:|\n"
        );
        for s in self.twins() {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                spec_cell(s),
                num(self.one(s, "rel_l2", resid(0))?, 3),
                num(self.one(s, "rel_l2", resid(last))?, 3),
                num(self.one(s, "cosine", resid(last))?, 3)
            ));
        }
        Ok(out)
    }

    /// Per-head values of `metric` for `spec`, keyed by (layer, head) in sorted order.
    fn per_head(
        &self,
        spec: &str,
        metric: &str,
    ) -> std::collections::BTreeMap<(usize, usize), f64> {
        self.rows(spec, metric)
            .filter_map(|r| Some(((r.layer?, r.head?), r.value)))
            .collect()
    }

    fn attention(&self) -> Result<String> {
        const HIGH: f64 = 0.1;
        let paired = |spec: &str, metric: &str| -> Result<f64> {
            let (a, b) = (self.per_head("none", metric), self.per_head(spec, metric));
            if a.is_empty() || a.keys().ne(b.keys()) {
                bail!(
                    "{}: '{metric}' heads of '{spec}' differ from the reference's",
                    self.path.display()
                );
            }
            Ok(crate::metrics::pearson(
                &a.into_values().collect::<Vec<_>>(),
                &b.into_values().collect::<Vec<_>>(),
            ))
        };
        let mut out = format!(
            "Jensen–Shannon divergence of each head's attention rows (nats, at most ln 2), mean over heads; Pearson r over heads of the twin's previous- and duplicate-token scores against the reference's.\n\n\
             | twin (`--quant`) | mean JSD | heads with JSD > {HIGH} | r, previous-token | r, duplicate-token |\n|---|---:|---:|---:|---:|\n"
        );
        for s in self.twins() {
            let js: Vec<f64> = self.per_head(s, "js_divergence").into_values().collect();
            if js.is_empty() {
                bail!(
                    "{}: no per-head 'js_divergence' rows for '{s}'",
                    self.path.display()
                );
            }
            out.push_str(&format!(
                "| {} | {} | {} of {} | {} | {} |\n",
                spec_cell(s),
                fmt(crate::metrics::mean(&js), 3),
                js.iter().filter(|&&v| v > HIGH).count(),
                js.len(),
                fmt(paired(s, "prev_token")?, 3),
                fmt(paired(s, "duplicate_token")?, 3)
            ));
        }
        Ok(out)
    }

    fn logit_lens(&self) -> Result<String> {
        let last = self.last_layer()?;
        let mut categories = self.tidy.label_values("category");
        // "all" first, the categories in file order after it
        categories.sort_by_key(|c| c != "all");
        if categories.is_empty() {
            bail!(
                "{}: no 'category' label (run the logit lens with by_category=true)",
                self.path.display()
            );
        }
        let twins = self.twins();
        let mut out = format!("At the output (layer {last}): KL(P_ref ‖ P_twin) in nats (top-1 agreement with the reference).\n\n| prompts | n | reference target p |");
        for s in &twins {
            out.push_str(&format!(" {} |", spec_cell(s)));
        }
        out.push_str(&format!(
            "\n|---|---:|---:|{}\n",
            "---|".repeat(twins.len())
        ));
        for cat in &categories {
            let here = |r: &Row| r.layer == Some(last) && label_is(r, "category", cat);
            let p = self.one("none", "target_prob", here)?;
            out.push_str(&format!(
                "| {cat} | {} | {} |",
                p.n.map_or("?".into(), |n| n.to_string()),
                fmt(p.value, 2)
            ));
            for s in &twins {
                out.push_str(&format!(
                    " {} ({}) |",
                    num(self.one(s, "kl_ref_quant", here)?, 2),
                    fmt(self.value(s, "top1_agreement", here)?, 2)
                ));
            }
            out.push('\n');
        }
        Ok(out)
    }

    /// The heads whose ablation moves the reference's loss most, per target and ablation, and
    /// each twin's heads ranked by importance × drift (the analysis's own ranks).
    fn ablation(&self) -> Result<String> {
        const TOP: usize = 5;
        let mut out = format!(
            "Reference: loss increase (nats) when one head's `hook_z` is ablated, the {TOP} largest per target and ablation.\n\n\
             | target (clean loss) | ablation | largest increases |\n|---|---|---|\n"
        );
        let deltas: Vec<&Row> = self.rows("none", "ablation_delta").collect();
        if deltas.is_empty() {
            bail!("{}: no 'ablation_delta' rows for the reference", self.path.display());
        }
        for target in crate::analysis::tidy::label_values(deltas.iter().copied(), "target") {
            let clean = self.one("none", "clean_loss", |r| label_is(r, "target", &target))?;
            for how in crate::analysis::tidy::label_values(deltas.iter().copied().filter(|r| label_is(r, "target", &target)), "ablation") {
                let mut here: Vec<&Row> = deltas.iter().copied().filter(|r| label_is(r, "target", &target) && label_is(r, "ablation", &how)).collect();
                here.sort_by(|a, b| b.value.total_cmp(&a.value));
                let top: Vec<String> = here.iter().take(TOP).map(|r| format!("{} {:+.2}", site(r), r.value)).collect();
                out.push_str(&format!("| {target} ({}) | {how} | {} |\n", fmt(clean.value, 2), top.join(", ")));
            }
        }
        let twins = self.twins();
        if !twins.is_empty() {
            let drift = self
                .tidy
                .rows
                .iter()
                .find(|r| r.metric == "importance_x_drift")
                .and_then(|r| r.label_str("drift"))
                .unwrap_or("?")
                .to_string();
            out.push_str(&format!(
                "\nEach twin's heads by importance (induction-loss increase under ablation, at least 0) × drift ({drift}), the {TOP} first:\n\n\
                 | twin (`--quant`) | heads ranked by importance × drift |\n|---|---|\n"
            ));
            for s in twins {
                let mut ranked: Vec<&Row> = self.rows(s, "importance_x_drift_rank").collect();
                if ranked.is_empty() {
                    bail!("{}: no 'importance_x_drift_rank' rows for '{s}'", self.path.display());
                }
                ranked.sort_by(|a, b| a.value.total_cmp(&b.value));
                let top: Vec<String> = ranked.iter().take(TOP).map(|r| site(r)).collect();
                out.push_str(&format!("| {} | {} |\n", spec_cell(s), top.join(", ")));
            }
        }
        Ok(out)
    }

    /// Per twin: the loss it starts from, the greedy repair's recovery at its largest k for each
    /// ranking rule, and the best single site.
    fn patching(&self) -> Result<String> {
        let reference = self.one("none", "metric_value", |_| true)?;
        let target = reference.label_str("target").unwrap_or("?").to_string();
        let repair: Vec<&Row> = self.tidy.rows.iter().filter(|r| r.metric == "repair_recovery").collect();
        let rules = crate::analysis::tidy::label_values(repair.iter().copied(), "rule");
        let k = repair.iter().filter_map(|r| label_int(r, "k")).max();
        let component = self.tidy.rows.iter().find(|r| r.metric == "recovery").and_then(|r| r.label_str("component")).map(str::to_string);
        let mut out = format!(
            "Recovery of each twin's {target}-loss damage, (M_patched − M_twin) / (M_ref − M_twin): 1 = all of it, 0 = none. Repair restores the reference's `hook_z` of the first k heads of a ranking together.\n\n| twin (`--quant`) | {target} loss, reference → twin |"
        );
        if let Some(k) = k {
            for rule in &rules {
                out.push_str(&format!(" repair, top {k} by {} |", rule.replace("_x_", " × ").replace('_', " ")));
            }
        }
        if let Some(c) = &component {
            out.push_str(&format!(" best single `{c}` (site) |"));
        }
        let cols = 1 + k.map_or(0, |_| rules.len()) + usize::from(component.is_some());
        out.push_str(&format!("\n|---|{}\n", "---:|".repeat(cols)));
        for s in self.twins() {
            let m = self.one(s, "metric_value", |_| true)?;
            out.push_str(&format!("| {} | {} → {} |", spec_cell(s), fmt(reference.value, 2), fmt(m.value, 2)));
            if let Some(k) = k {
                for rule in &rules {
                    let v = self.value(s, "repair_recovery", |r| label_is(r, "rule", rule) && label_int(r, "k") == Some(k))?;
                    out.push_str(&format!(" {} |", pct(v)));
                }
            }
            if component.is_some() {
                let best = self.rows(s, "recovery").max_by(|a, b| a.value.total_cmp(&b.value)).ok_or_else(|| anyhow!("{}: no 'recovery' rows for '{s}'", self.path.display()))?;
                out.push_str(&format!(" {} ({}) |", pct(best.value), site(best)));
            }
            out.push('\n');
        }
        Ok(out)
    }

    /// Dead neurons and redundancy per model, over the analysed layers (worst layer and range).
    fn neurons(&self) -> Result<String> {
        let mut out = String::from(
            "MLP neurons (`mlp.hook_post`): dead = |a| below the analysis's `dead_threshold` on every token; redundancy from pairwise Pearson r over a seeded sample of neurons per layer (pairs with |r| ≥ `redundant_r`).\n\n\
             | model (`--quant`) | layers | tokens | dead neurons, worst layer | mean abs(r), range over layers | redundant pairs, worst layer |\n|---|---|---:|---:|---:|---:|\n",
        );
        // the worst layer is named only when something is dead or redundant there
        fn worst<'r>(rows: &[&'r Row]) -> Option<(&'r Row, String)> {
            rows.iter().copied().max_by(|a, b| a.value.total_cmp(&b.value)).map(|r| (r, if r.value > 0.0 { format!(" ({})", site(r)) } else { String::new() }))
        }
        for s in self.specs() {
            let dead: Vec<&Row> = self.rows(s, "dead_fraction").collect();
            let (d, dl) = worst(&dead).ok_or_else(|| anyhow!("{}: no 'dead_fraction' rows for '{s}'", self.path.display()))?;
            let layers: Vec<String> = dead.iter().filter_map(|r| r.layer).map(|l| l.to_string()).collect();
            let corr: Vec<f64> = self.rows(s, "mean_abs_corr").map(|r| r.value).collect();
            let red: Vec<&Row> = self.rows(s, "redundant_share").collect();
            let (rv, rl) = worst(&red).ok_or_else(|| anyhow!("{}: no 'redundant_share' rows for '{s}'", self.path.display()))?;
            // a share of a few pairs in tens of thousands reads better as a count
            let pairs = match rv.n {
                Some(n) => format!("{:.0} of {n}", rv.value * n as f64),
                None => pct(rv.value),
            };
            let (lo, hi) = corr.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            out.push_str(&format!(
                "| {} | {} | {} | {}{dl} | {}–{} | {pairs}{rl} |\n",
                spec_cell(s),
                layers.join(", "),
                d.n.map_or("?".into(), |n| n.to_string()),
                pct(d.value),
                fmt(lo, 3),
                fmt(hi, 3),
            ));
        }
        Ok(out)
    }

    /// IOI per model: the logit difference with its CI, the accuracy, and for each twin the head
    /// whose reference `hook_z` recovers the most of the damage.
    fn ioi(&self) -> Result<String> {
        let mut out = String::from(
            "Logit difference IO − S at the final position (mean over prompts, 95 % bootstrap CI); accuracy = share of prompts with IO − S > 0; recovery = share of the twin's logit-difference damage undone by patching one head's `hook_z` from the reference (a small damage makes it ill-conditioned).\n\n\
             | model (`--quant`) | prompts | logit difference | accuracy | head recovering the most | heads patched |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for s in self.specs() {
            let ld = self.one(s, "logit_diff", |_| true)?;
            let patched: Vec<&Row> = self.rows(s, "fraction_recovered").filter(|r| r.value.is_finite()).collect();
            let best = patched.iter().copied().max_by(|a, b| a.value.total_cmp(&b.value)).map_or("–".to_string(), |r| format!("{} ({})", site(r), pct(r.value)));
            out.push_str(&format!(
                "| {} | {} | {} | {} | {best} | {} |\n",
                spec_cell(s),
                ld.n.map_or("?".into(), |n| n.to_string()),
                num(ld, 2),
                fmt(self.value(s, "accuracy", |_| true)?, 2),
                if s == "none" { "–".to_string() } else { patched.len().to_string() },
            ));
        }
        Ok(out)
    }

    /// Quantized vs perplexity-matched pruned twins: how many features each damages and whether
    /// they are the same ones.
    fn prune_overlap(&self) -> Result<String> {
        let n_active = self.one("none", "n_active", |_| true)?;
        let windows = self.one("none", "perplexity", |_| true)?;
        let mut out = format!(
            "Unstructured magnitude pruning of the same matrices, bisected until its perplexity matches the twin's ({} windows; reference perplexity {}); both twins then read by the frozen SAE. Damaged = blurred or destroyed, over the {:.0} features active on the reference; the chance Jaccard is that of random sets of the same sizes.\n\n\
             | twin (`--quant`) | matched sparsity | perplexity, quantized / pruned | damaged, quantized / pruned | Jaccard of damaged sets (chance) | Spearman of damage 1 − r |\n|---|---:|---:|---:|---:|---:|\n",
            windows.n.map_or("?".into(), |n| n.to_string()),
            fmt(windows.value, 2),
            n_active.value,
        );
        for s in self.twins() {
            let side = |metric: &str, twin: &str| self.value(s, metric, |r| label_is(r, "twin", twin));
            let survived = |twin: &str| self.value(s, "share", |r| label_is(r, "twin", twin) && label_is(r, "category", "survived"));
            let converged = self.value(s, "match_converged", |_| true)? == 1.0;
            out.push_str(&format!(
                "| {} | {}{} | {} / {} | {} / {} | {} ({}) | {} |\n",
                spec_cell(s),
                pct(self.value(s, "matched_sparsity", |_| true)?),
                if converged { "" } else { " (not converged)" },
                fmt(side("perplexity", "quantized")?, 2),
                fmt(side("perplexity", "pruned")?, 2),
                pct(1.0 - survived("quantized")?),
                pct(1.0 - survived("pruned")?),
                fmt(self.value(s, "jaccard_damaged", |_| true)?, 2),
                fmt(self.value(s, "jaccard_chance", |_| true)?, 2),
                fmt(self.value(s, "spearman_damage", |_| true)?, 2),
            ));
        }
        Ok(out)
    }

    /// Each model's own SAE against the reference SAE, with the random null and the seed control,
    /// then the firing classes of every model's SAE.
    fn sae_compare(&self) -> Result<String> {
        const STATS: [(&str, usize); 6] = [("best_match_cos", 3), ("best_match_share", 2), ("mnn_share", 2), ("same_index_share", 2), ("procrustes_residual", 2), ("cka_debiased", 2)];
        let mut out = String::from(
            "Each model's own SAE against the reference's SAE: best-match abs(cos) of decoder directions (mean over reference features) and the share of them at ≥ the analysis's `match_threshold`, mutual nearest neighbours, the share whose best match has the same index (near 1 when SAEs have not moved far from a shared initialisation), the orthogonal Procrustes residual of the decoders, and the debiased linear CKA of the codes on the evaluation tokens. Random null: Gaussian decoders and codes of the same shapes (mean over draws); another seed: a reference SAE trained from another seed on the same activations.\n\n\
             | SAE compared with the reference's | FVE | best-match abs(cos) | share ≥ threshold | mutual nearest neighbours | same index | Procrustes residual | CKA (debiased) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let line = |label: String, fve: String, spec: &str, null: &str| -> Result<String> {
            let mut cells = vec![label, fve];
            for (m, d) in STATS {
                // the null has no same-index statistic: random matrices have no indices to share
                cells.push(match self.rows(spec, m).find(|r| label_is(r, "null", null)) {
                    Some(r) => fmt(r.value, d),
                    None if m == "same_index_share" && null == "random" => "–".into(),
                    None => bail!("{}: no '{m}' row for spec '{spec}' (null = {null})", self.path.display()),
                });
            }
            Ok(format!("| {} |\n", cells.join(" | ")))
        };
        let twins = self.twins();
        for s in &twins {
            out.push_str(&line(spec_cell(s), fmt(self.value(s, "sae_fve", |_| true)?, 2), s, "none")?);
        }
        if let Some(first) = twins.first() {
            out.push_str(&line("random null".into(), "–".into(), first, "random")?);
        }
        if self.rows("none", "best_match_cos").any(|r| label_is(r, "null", "seed")) {
            out.push_str(&line("reference, another seed".into(), fmt(self.value("none", "sae_fve", |_| true)?, 2), "none", "seed")?);
        }
        out.push_str("\nFiring classes of each model's SAE on the evaluation tokens (share of its features; the analysis's `rare_frac` and `frequent_frac` bound them):\n\n| model (`--quant`) | dead | rare | common | frequent |\n|---|---:|---:|---:|---:|\n");
        for s in self.specs() {
            let c = |class: &str| self.value(s, "feature_share", |r| label_is(r, "class", class)).map(pct);
            out.push_str(&format!("| {} | {} | {} | {} | {} |\n", spec_cell(s), c("dead")?, c("rare")?, c("common")?, c("frequent")?));
        }
        Ok(out)
    }

    /// Salient neurons per model over all analysed layers (`scope = total` rows).
    fn salient(&self) -> Result<String> {
        let total = |r: &Row| label_is(r, "scope", "total");
        let mut out = String::from(
            "Integrated gradients of each model's own predicted token with respect to `mlp.hook_post`; a neuron is salient at ≥ the analysis's `threshold` of its layer's largest |IG|. Means over examples with bootstrap CIs, summed over the analysed layers.\n\n\
             | model (`--quant`) | examples | salient neurons per example | Jaccard with the reference's set | predicts the reference's token | completeness gap, worst layer |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for s in self.specs() {
            let count = self.one(s, "salient_count", total)?;
            let gap = self.rows(s, "ig_completeness_rel").map(|r| r.value).fold(f64::NEG_INFINITY, f64::max);
            let (jac, agree) = if s == "none" {
                ("–".to_string(), "–".to_string())
            } else {
                (num(self.one(s, "salient_jaccard", total)?, 2), pct(self.value(s, "target_agreement", total)?))
            };
            out.push_str(&format!(
                "| {} | {} | {} | {jac} | {agree} | {} |\n",
                spec_cell(s),
                count.n.map_or("?".into(), |n| n.to_string()),
                num(count, 2),
                pct(gap)
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::tidy::write_parquet;
    use crate::quant::QuantSpec;

    fn spec(s: &str) -> QuantSpec {
        s.parse().unwrap()
    }

    /// Renders `rows` (as one parquet file) as the `kind` table.
    fn table(kind: &str, rows: Vec<Row>) -> Result<String> {
        let dir = crate::testing::scratch(&format!("report-tables-{kind}"));
        let f = dir.join("t.parquet");
        write_parquet(
            &Tidy {
                model: "m".into(),
                rows,
            }
            .to_frame()
            .unwrap(),
            &f,
        )
        .unwrap();
        let out = render(kind, &f);
        std::fs::remove_dir_all(&dir).unwrap();
        out
    }

    #[test]
    fn features_table_reads_shares_bits_and_the_all_predictor_auc() {
        let (none, q) = (spec("none"), spec("rtn:bits=4,group=64"));
        let mut rows = vec![
            Row::new(&none, "sae_fve", 0.681).n(2032),
            Row::new(&none, "n_active", 3831.0).n(4608),
        ];
        rows.push(Row::new(&q, "sae_fve", 0.654).n(2032));
        rows.push(Row::new(&q, "bits_per_weight", 4.3125));
        for (c, v) in [("survived", 0.25), ("blurred", 0.5), ("destroyed", 0.25)] {
            rows.push(Row::new(&q, "share", v).label("category", c).n(3831));
        }
        // the `all` AUC is the column, not the first predictor's
        rows.push(Row::new(&q, "survival_auc", 0.61).label("predictors", "peak"));
        rows.push(Row::new(&q, "survival_auc", 0.93).label("predictors", "all"));
        let t = table("features", rows).unwrap();
        assert!(
            t.starts_with("3831 of 4608 SAE features fire on the 2032 evaluation tokens."),
            "{t}"
        );
        assert!(t.ends_with("| reference | 32 | – | – | – | 0.68 | – |\n| `rtn:bits=4,group=64` | 4.31 | 25.0 % | 50.0 % | 25.0 % | 0.65 | 0.93 |\n"), "{t}");
    }

    #[test]
    fn induction_table_averages_seeds_with_t_intervals() {
        let (none, q) = (spec("none"), spec("rtn:bits=3"));
        let mut rows = Vec::new();
        for (seed, surv, loss) in [(0u64, 0.5, 13.0), (1, 0.6, 13.5), (2, 0.7, 14.0)] {
            rows.push(Row::new(&none, "induction_loss", 4.0).seed(seed));
            rows.push(Row::new(&q, "induction_loss", loss).seed(seed));
            for (rule, det, v) in [
                ("threshold", "stripe ≥ 0.4", surv),
                ("sigma", "stripe ≥ mean + 2σ", 1.0),
            ] {
                rows.push(
                    Row::new(&q, "survival", v)
                        .label("score", "stripe")
                        .label("rule", rule)
                        .label("detector", det)
                        .seed(seed),
                );
                // the mul score's survival must not be mistaken for the stripe score's
                rows.push(
                    Row::new(&q, "survival", 0.0)
                        .label("score", "mul")
                        .label("rule", rule)
                        .label("detector", det)
                        .seed(seed),
                );
            }
            rows.push(
                Row::new(&q, "pearson_r", 0.9)
                    .label("score", "stripe")
                    .n(2)
                    .seed(seed),
            );
            for h in 0..2 {
                rows.push(
                    Row::new(&none, "stripe_score", 0.5)
                        .layer(0)
                        .head(h)
                        .seed(seed),
                );
            }
        }
        let t = table("induction", rows).unwrap();
        // mean 0.6, sd 0.1: half width 4.303 · 0.1/√3 = 0.248
        let want = "| twin (`--quant`) | survival, stripe ≥ 0.4 | survival, stripe ≥ mean + 2σ | Pearson r of stripe scores (2 heads) | induction loss (nats) |\n|---|---:|---:|---:|---:|\n\
                    | reference | – | – | – | 4.00 |\n| `rtn:bits=3` | 0.600 [0.352, 0.848] | 1.000 | 0.900 | 13.50 [12.26, 14.74] |\n";
        assert_eq!(t, want);
    }

    #[test]
    fn attention_table_correlates_heads_and_counts_high_divergence() {
        let (none, q) = (spec("none"), spec("rtn:bits=4"));
        let mut rows = Vec::new();
        let (prev_ref, prev_q, js) = ([0.1, 0.5, 0.9], [0.9, 0.5, 0.1], [0.05, 0.1, 0.3]);
        for h in 0..3 {
            rows.push(Row::new(&none, "prev_token", prev_ref[h]).layer(0).head(h));
            rows.push(
                Row::new(&none, "duplicate_token", h as f64)
                    .layer(0)
                    .head(h),
            );
            rows.push(Row::new(&q, "prev_token", prev_q[h]).layer(0).head(h));
            rows.push(
                Row::new(&q, "duplicate_token", 2.0 * h as f64)
                    .layer(0)
                    .head(h),
            );
            rows.push(Row::new(&q, "js_divergence", js[h]).layer(0).head(h));
        }
        let t = table("attention", rows).unwrap();
        // 0.1 is not above the 0.1 line; reversed previous-token scores correlate at −1
        assert!(
            t.ends_with("| `rtn:bits=4` | 0.150 | 1 of 3 | -1.000 | 1.000 |\n"),
            "{t}"
        );
    }

    #[test]
    fn logit_lens_table_puts_all_prompts_first_and_reads_the_last_layer() {
        let (none, q) = (spec("none"), spec("gptq:bits=3"));
        let mut rows = Vec::new();
        for (cat, n, p, kl) in [("facts", 20, 0.53, 6.5), ("all", 46, 0.58, 5.0)] {
            for layer in [0, 29] {
                // layer 0 values differ, so reading the wrong layer shows
                let l = if layer == 0 { 100.0 } else { 1.0 };
                rows.push(
                    Row::new(&none, "target_prob", p * l)
                        .layer(layer)
                        .label("category", cat)
                        .n(n),
                );
                rows.push(
                    Row::new(&q, "kl_ref_quant", kl * l)
                        .layer(layer)
                        .label("category", cat)
                        .ci(kl * l - 1.0, kl * l + 1.0)
                        .n(n),
                );
                rows.push(
                    Row::new(&q, "top1_agreement", 0.05 * l)
                        .layer(layer)
                        .label("category", cat)
                        .n(n),
                );
            }
        }
        let t = table("logit-lens", rows).unwrap();
        assert!(t.contains("| all | 46 | 0.58 | 5.00 [4.00, 6.00] (0.05) |\n| facts | 20 | 0.53 | 6.50 [5.50, 7.50] (0.05) |\n"), "{t}");
        assert!(t.starts_with("At the output (layer 29)"), "{t}");
    }

    #[test]
    fn calibration_and_activation_tables() {
        let (none, q) = (spec("none"), spec("rtn:bits=4"));
        let mut rows = Vec::new();
        for (s, acc) in [(&none, 0.335), (&q, 0.271)] {
            rows.push(Row::new(s, "accuracy", acc).n(2032));
            rows.push(Row::new(s, "mean_confidence", acc + 0.01).n(2032));
            rows.push(Row::new(s, "ece", 0.04).n(2032));
            rows.push(Row::new(s, "ace", 0.05).n(2032));
        }
        let t = table("calibration", rows).unwrap();
        assert!(t.ends_with("| reference | 2032 | 0.335 | 0.345 | 0.040 | 0.050 |\n| `rtn:bits=4` | 2032 | 0.271 | 0.281 | 0.040 | 0.050 |\n"), "{t}");
        let mut rows = Vec::new();
        for l in 0..3 {
            for c in ["resid_post", "attn_out"] {
                let v = if c == "attn_out" {
                    9.0
                } else {
                    0.1 * (l + 1) as f64
                };
                rows.push(
                    Row::new(&q, "rel_l2", v)
                        .layer(l)
                        .label("component", c)
                        .ci(v - 0.01, v + 0.01),
                );
                rows.push(
                    Row::new(&q, "cosine", 1.0 - v)
                        .layer(l)
                        .label("component", c),
                );
            }
        }
        let t = table("activations", rows).unwrap();
        assert!(
            t.ends_with("| `rtn:bits=4` | 0.100 [0.090, 0.110] | 0.300 [0.290, 0.310] | 0.700 |\n"),
            "{t}"
        );
        assert!(t.contains("after layer 2 |"), "{t}");
    }

    #[test]
    fn ablation_table_ranks_by_signed_increase_per_target_and_reads_twin_ranks() {
        let (none, q) = (spec("none"), spec("rtn:bits=4"));
        let mut rows = vec![
            Row::new(&none, "clean_loss", 3.84).label("target", "induction"),
            Row::new(&none, "clean_loss", 4.44).label("target", "text"),
        ];
        // a large negative change must not rank first (sorting by |Δ| would put it there)
        let deltas = [(0, 0, -9.0), (0, 1, 4.5), (1, 0, 1.5), (1, 1, 0.2), (2, 0, 0.9), (2, 1, 0.1)];
        for target in ["induction", "text"] {
            for how in ["zero", "mean"] {
                let scale = if target == "text" { 0.1 } else { 1.0 } * if how == "mean" { 2.0 } else { 1.0 };
                for (l, h, d) in deltas {
                    rows.push(Row::new(&none, "ablation_delta", d * scale).layer(l).head(h).label("ablation", how).label("target", target));
                }
            }
        }
        // ranks say L2H1 first even though its product is the smaller: the table follows the ranks
        for (r, (l, h, v)) in [(2, 0, 0.5), (1, 1, 0.9), (0, 1, 0.8), (2, 1, 0.3), (0, 0, 0.0), (1, 0, 0.1)].into_iter().enumerate() {
            rows.push(Row::new(&q, "importance_x_drift", v).layer(l).head(h).label("drift", "js"));
            rows.push(Row::new(&q, "importance_x_drift_rank", (r + 1) as f64).layer(l).head(h).label("drift", "js"));
        }
        let t = table("ablation", rows).unwrap();
        assert!(t.contains("| induction (3.84) | zero | L0H1 +4.50, L1H0 +1.50, L2H0 +0.90, L1H1 +0.20, L2H1 +0.10 |\n"), "{t}");
        assert!(t.contains("| induction (3.84) | mean | L0H1 +9.00, L1H0 +3.00,"), "{t}");
        assert!(t.contains("| text (4.44) | zero | L0H1 +0.45, L1H0 +0.15,"), "{t}");
        assert!(t.contains("drift (js)"), "{t}");
        assert!(t.ends_with("| `rtn:bits=4` | L2H0, L1H1, L0H1, L2H1, L0H0 |\n"), "{t}");
    }

    #[test]
    fn patching_table_reads_the_largest_k_per_rule_and_the_best_site() {
        let (none, q) = (spec("none"), spec("gptq:bits=3"));
        let mut rows = vec![
            Row::new(&none, "metric_value", 3.84).label("target", "induction"),
            Row::new(&q, "metric_value", 13.0).label("target", "induction"),
        ];
        for (l, v) in [(0, 0.05), (1, 0.42), (2, -0.3)] {
            rows.push(Row::new(&q, "recovery", v).layer(l).label("component", "attn_out").label("target", "induction"));
        }
        for (rule, base) in [("drift", 0.1), ("importance", 0.2), ("importance_x_drift", 0.3)] {
            for k in 1..=3usize {
                // k = 1 reads differently from k = 3, and each rule differently from the others
                rows.push(Row::new(&q, "repair_recovery", base + 0.01 * k as f64).label("rule", rule).label("k", k).label("target", "induction"));
            }
        }
        let t = table("patching", rows).unwrap();
        assert!(t.contains("| twin (`--quant`) | induction loss, reference → twin | repair, top 3 by drift | repair, top 3 by importance | repair, top 3 by importance × drift | best single `attn_out` (site) |\n|---|---:|---:|---:|---:|---:|\n"), "{t}");
        assert!(t.ends_with("| `gptq:bits=3` | 3.84 → 13.00 | 13.0 % | 23.0 % | 33.0 % | 42.0 % (L1) |\n"), "{t}");
    }

    #[test]
    fn a_table_from_results_in_memory_equals_the_one_from_their_parquet_file() {
        let (none, q) = (spec("none"), spec("gptq:bits=3"));
        let mut rows = vec![
            Row::new(&none, "metric_value", 3.84).label("target", "induction"),
            Row::new(&q, "metric_value", 13.0).label("target", "induction"),
        ];
        for k in 1..=2usize {
            rows.push(Row::new(&q, "repair_recovery", 0.1 * k as f64).label("rule", "drift").label("k", k).label("target", "induction"));
        }
        let memory = crate::report::analysis_table("patching", &Tidy { model: "m".into(), rows: rows.clone() }).unwrap();
        assert_eq!(memory, table("patching", rows).unwrap());
        assert!(memory.contains("| 20.0 % |"), "{memory}");
        let e = crate::report::analysis_table("sankey", &Tidy { model: "m".into(), rows: vec![] }).unwrap_err().to_string();
        assert!(e.contains("no summary table for 'sankey'") && e.contains("patching"), "{e}");
    }

    #[test]
    fn neurons_table_reports_the_worst_layer_and_the_range() {
        let q = spec("rtn:bits=3");
        let mut rows = Vec::new();
        for (l, dead, corr, red) in [(0, 0.0, 0.04, 0.0), (5, 0.02, 0.07, 0.001), (10, 0.01, 0.05, 0.003)] {
            rows.push(Row::new(&q, "dead_fraction", dead).layer(l).n(2032));
            rows.push(Row::new(&q, "mean_abs_corr", corr).layer(l).n(100));
            rows.push(Row::new(&q, "redundant_share", red).layer(l).n(1000));
        }
        let t = table("neurons", rows).unwrap();
        // the mean over layers (1.0 %) or the first layer's value (0.0 %) would read differently
        assert!(t.ends_with("| `rtn:bits=3` | 0, 5, 10 | 2032 | 2.0 % (L5) | 0.040–0.070 | 3 of 1000 (L10) |\n"), "{t}");
    }

    #[test]
    fn prune_overlap_table_reads_each_side_and_counts_damage_as_not_survived() {
        let (none, q) = (spec("none"), spec("rtn:bits=4"));
        let mut rows = vec![Row::new(&none, "n_active", 3831.0).n(4608), Row::new(&none, "perplexity", 21.5).n(4)];
        rows.push(Row::new(&q, "matched_sparsity", 0.32).label("pruned", "prune:sparsity=0.32").n(9));
        rows.push(Row::new(&q, "match_converged", 1.0).n(9));
        for (side, ppl, shares) in [("quantized", 30.1, [0.07, 0.60, 0.33]), ("pruned", 30.4, [0.05, 0.50, 0.45])] {
            rows.push(Row::new(&q, "perplexity", ppl).label("twin", side).n(4));
            for (c, v) in ["survived", "blurred", "destroyed"].into_iter().zip(shares) {
                rows.push(Row::new(&q, "share", v).label("twin", side).label("category", c).n(3831));
            }
        }
        rows.push(Row::new(&q, "jaccard_damaged", 0.95).n(3831));
        rows.push(Row::new(&q, "jaccard_chance", 0.87).n(3831));
        rows.push(Row::new(&q, "spearman_damage", 0.73).n(3831));
        let t = table("prune-overlap", rows.clone()).unwrap();
        // damaged = 1 − survived (blurred + destroyed); the destroyed share alone (33 %, 45 %) or
        // the sides swapped would read differently
        assert!(t.contains("(4 windows; reference perplexity 21.50)") && t.contains("over the 3831 features"), "{t}");
        assert!(t.ends_with("| `rtn:bits=4` | 32.0 % | 30.10 / 30.40 | 93.0 % / 95.0 % | 0.95 (0.87) | 0.73 |\n"), "{t}");
        rows[3] = Row::new(&q, "match_converged", 0.0).n(9);
        assert!(table("prune-overlap", rows).unwrap().contains("| 32.0 % (not converged) |"));
    }

    #[test]
    fn sae_compare_table_keeps_twin_null_and_seed_rows_apart() {
        let (none, q) = (spec("none"), spec("rtn:bits=4"));
        let mut rows = vec![Row::new(&none, "sae_fve", 0.57).n(2032), Row::new(&q, "sae_fve", 0.55).n(2032)];
        for s in [&none, &q] {
            for (c, v) in [("dead", 0.01), ("rare", 0.82), ("common", 0.17), ("frequent", 0.0)] {
                rows.push(Row::new(s, "feature_share", v).label("class", c).n(4608));
            }
        }
        // (null label, spec, values of best_match_cos, best_match_share, mnn_share, same_index_share, procrustes, cka_debiased)
        for (null, s, v) in [("none", &q, [0.975, 0.8, 0.7, 1.0, 0.22, 0.92]), ("random", &q, [0.159, 0.0, 0.01, f64::NAN, 0.99, 0.0]), ("seed", &none, [0.19, 0.01, 0.05, 0.0, 0.9, 0.88])] {
            for (m, x) in ["best_match_cos", "best_match_share", "mnn_share", "same_index_share", "procrustes_residual", "cka_debiased"].into_iter().zip(v) {
                if !(m == "same_index_share" && null == "random") {
                    rows.push(Row::new(s, m, x).label("null", null).ci(x - 0.01, x + 0.01).n(4608));
                }
            }
            rows.push(Row::new(s, "cka", 0.5).label("null", null).n(2032));
        }
        let t = table("sae-compare", rows).unwrap();
        // a twin row that took the null's or the seed control's numbers would read differently
        assert!(t.contains("| `rtn:bits=4` | 0.55 | 0.975 | 0.80 | 0.70 | 1.00 | 0.22 | 0.92 |\n| random null | – | 0.159 | 0.00 | 0.01 | – | 0.99 | 0.00 |\n| reference, another seed | 0.57 | 0.190 | 0.01 | 0.05 | 0.00 | 0.90 | 0.88 |\n"), "{t}");
        assert!(t.ends_with("| reference | 1.0 % | 82.0 % | 17.0 % | 0.0 % |\n| `rtn:bits=4` | 1.0 % | 82.0 % | 17.0 % | 0.0 % |\n"), "{t}");
    }

    #[test]
    fn ioi_table_names_the_best_head_per_twin() {
        let (none, q) = (spec("none"), spec("rtn:bits=3"));
        let mut rows = vec![
            Row::new(&none, "logit_diff", 4.094).ci(3.377, 4.803).n(32),
            Row::new(&none, "accuracy", 1.0).n(32),
            Row::new(&q, "logit_diff", -0.1775).ci(-0.8806, 0.5944).n(32),
            Row::new(&q, "accuracy", 0.375).n(32),
        ];
        // the largest recovery, not the first or the last row, and a NaN (no damage) is skipped
        for (l, h, f) in [(2, 1, 0.2), (23, 3, 0.62), (29, 1, 0.36), (5, 0, f64::NAN)] {
            rows.push(Row::new(&q, "fraction_recovered", f).layer(l).head(h).n(32));
        }
        let t = table("ioi", rows).unwrap();
        assert!(t.ends_with("| reference | 32 | 4.09 [3.38, 4.80] | 1.00 | – | – |\n| `rtn:bits=3` | 32 | -0.18 [-0.88, 0.59] | 0.38 | L23H3 (62.0 %) | 3 |\n"), "{t}");
    }

    #[test]
    fn salient_table_reads_totals_not_layers() {
        let (none, q) = (spec("none"), spec("rtn:bits=4"));
        let mut rows = Vec::new();
        for s in [&none, &q] {
            rows.push(Row::new(s, "salient_count", 1.0).layer(3).label("scope", "layer").ci(0.5, 1.5).n(16));
            rows.push(Row::new(s, "salient_count", 9.5).label("scope", "total").ci(8.0, 11.0).n(16));
            rows.push(Row::new(s, "ig_completeness_rel", 0.004).layer(3).label("scope", "layer").n(16));
            rows.push(Row::new(s, "ig_completeness_rel", 0.001).layer(9).label("scope", "layer").n(16));
        }
        rows.push(Row::new(&q, "salient_jaccard", 0.9).layer(3).label("scope", "layer").ci(0.8, 1.0).n(16));
        rows.push(Row::new(&q, "salient_jaccard", 0.25).label("scope", "total").ci(0.2, 0.3).n(16));
        rows.push(Row::new(&q, "target_agreement", 0.5).label("scope", "total").n(16));
        let t = table("salient-neurons", rows).unwrap();
        assert!(t.ends_with("| reference | 16 | 9.50 [8.00, 11.00] | – | – | 0.4 % |\n| `rtn:bits=4` | 16 | 9.50 [8.00, 11.00] | 0.25 [0.20, 0.30] | 50.0 % | 0.4 % |\n"), "{t}");
    }

    #[test]
    fn missing_rows_and_unknown_kinds_are_errors_naming_them() {
        let q = spec("rtn:bits=4");
        let e = format!(
            "{:#}",
            table("calibration", vec![Row::new(&q, "accuracy", 0.3)]).unwrap_err()
        );
        assert!(
            e.contains("no 'mean_confidence' row for spec 'rtn:bits=4'"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            table("sankey", vec![Row::new(&q, "accuracy", 0.3)]).unwrap_err()
        );
        assert!(e.contains("no table for 'sankey'"), "{e}");
    }
}
