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
pub const KINDS: [&str; 6] = [
    "features",
    "induction",
    "calibration",
    "activations",
    "attention",
    "logit-lens",
];

/// The table of analysis `kind` from the parquet file `path`.
pub fn render(kind: &str, path: &Path) -> Result<String> {
    let df = read_parquet(path)
        .with_context(|| format!("{}: cannot read a tidy results table", path.display()))?;
    let raw = Tidy::from_frame(&df).with_context(|| path.display().to_string())?;
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
        "induction" => t.induction(),
        "calibration" => t.calibration(),
        "activations" => t.activations(),
        "attention" => t.attention(),
        "logit-lens" => t.logit_lens(),
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

fn label_str<'r>(r: &'r Row, name: &str) -> Option<&'r str> {
    r.labels.iter().find_map(|(k, v)| match v {
        Label::Str(s) if k == name => Some(s.as_str()),
        _ => None,
    })
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
                .map(|r| label_str(r, "detector").unwrap_or(rule).to_string())
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
        let mut categories: Vec<&str> = Vec::new();
        for r in &self.tidy.rows {
            if let Some(c) = label_str(r, "category") {
                if !categories.contains(&c) {
                    categories.push(c);
                }
            }
        }
        // "all" first, the categories in file order after it
        categories.sort_by_key(|c| *c != "all");
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
        for cat in categories {
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
