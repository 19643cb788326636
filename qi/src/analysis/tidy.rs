//! Tidy results: one row per model × spec × layer × head/feature × metric, as every analysis returns
//! them, and the few DataFrame queries the figure builders need.
//!
//! Columns, in order (a column appears only when some row sets it): `model`, `method`, `spec` (the
//! canonical QuantSpec string; `none` is the reference), `bits`, `layer`, `head`, then any extra
//! labels in first-use order (e.g. `component`, `k`, `prompt`), then `metric`, `value`, `ci_low`,
//! `ci_high`, `n` (observations behind `value`), `seed`.
use crate::quant::QuantSpec;
use anyhow::{anyhow, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

/// An extra label value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Label {
    Str(String),
    Int(i64),
    Float(f64),
}

impl From<&str> for Label {
    fn from(s: &str) -> Self {
        Label::Str(s.to_string())
    }
}
impl From<String> for Label {
    fn from(s: String) -> Self {
        Label::Str(s)
    }
}
impl From<usize> for Label {
    fn from(x: usize) -> Self {
        Label::Int(x as i64)
    }
}
impl From<i64> for Label {
    fn from(x: i64) -> Self {
        Label::Int(x)
    }
}
impl From<f64> for Label {
    fn from(x: f64) -> Self {
        Label::Float(x)
    }
}

/// One result row; build with [`Row::new`] and the setters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub method: String,
    pub spec: String,
    pub bits: Option<f64>,
    pub layer: Option<usize>,
    pub head: Option<usize>,
    pub labels: Vec<(String, Label)>,
    pub metric: String,
    pub value: f64,
    pub ci: Option<(f64, f64)>,
    pub n: Option<usize>,
    pub seed: Option<u64>,
}

impl Row {
    pub fn new(spec: &QuantSpec, metric: &str, value: f64) -> Self {
        Row {
            method: spec.method_name().to_string(),
            spec: spec.to_string(),
            bits: spec.bits().map(f64::from),
            layer: None,
            head: None,
            labels: Vec::new(),
            metric: metric.to_string(),
            value,
            ci: None,
            n: None,
            seed: None,
        }
    }
    pub fn layer(mut self, l: usize) -> Self {
        self.layer = Some(l);
        self
    }
    pub fn head(mut self, h: usize) -> Self {
        self.head = Some(h);
        self
    }
    pub fn label(mut self, name: &str, v: impl Into<Label>) -> Self {
        self.labels.push((name.to_string(), v.into()));
        self
    }
    pub fn ci(mut self, low: f64, high: f64) -> Self {
        self.ci = Some((low, high));
        self
    }
    pub fn n(mut self, n: usize) -> Self {
        self.n = Some(n);
        self
    }
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = Some(s);
        self
    }
    fn label_value(&self, name: &str) -> Option<&Label> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
    /// The string label `name` (None when absent or not a string).
    pub fn label_str(&self, name: &str) -> Option<&str> {
        match self.label_value(name) {
            Some(Label::Str(s)) => Some(s),
            _ => None,
        }
    }
}

/// The distinct values of the string label `name` over `rows`, in row order.
pub fn label_values<'r>(rows: impl IntoIterator<Item = &'r Row>, name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in rows.into_iter().filter_map(|r| r.label_str(name)) {
        if !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    out
}

/// Rows of one analysis for one model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tidy {
    pub model: String,
    pub rows: Vec<Row>,
}

impl Tidy {
    pub fn new(model: impl Into<String>) -> Self {
        Tidy { model: model.into(), rows: Vec::new() }
    }
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }
    pub fn extend(&mut self, other: Tidy) {
        self.rows.extend(other.rows);
    }
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// `metric` of every head for `spec`, indexed `layer * n_heads + head` (NaN where a head has no
    /// row): the per-head grid that head heatmaps and head rankings read.
    pub fn per_head(&self, spec: &str, metric: &str, n_layers: usize, n_heads: usize) -> Vec<f64> {
        let mut v = vec![f64::NAN; n_layers * n_heads];
        for r in self.rows.iter().filter(|r| r.spec == spec && r.metric == metric) {
            if let (Some(l), Some(h)) = (r.layer, r.head) {
                if l < n_layers && h < n_heads {
                    v[l * n_heads + h] = r.value;
                }
            }
        }
        v
    }

    /// `metric` of `spec` by layer (rows with every label of `labels`, e.g. `[("component",
    /// "resid_post")]`), in layer order; one value per layer present.
    pub fn per_layer(&self, spec: &str, metric: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        let mut v: Vec<(usize, f64)> = self
            .rows
            .iter()
            .filter(|r| r.spec == spec && r.metric == metric && r.head.is_none())
            .filter(|r| labels.iter().all(|(k, want)| matches!(r.label_value(k), Some(Label::Str(s)) if s == want)))
            .filter_map(|r| r.layer.map(|l| (l, r.value)))
            .collect();
        v.sort_by_key(|x| x.0);
        v.into_iter().map(|x| x.1).collect()
    }

    /// The value of `metric` for `spec` on its row without a layer and head (a model-level number
    /// such as IOI's logit difference); None when there is no such row.
    pub fn scalar(&self, spec: &str, metric: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.spec == spec && r.metric == metric && r.layer.is_none() && r.head.is_none()).map(|r| r.value)
    }

    /// `metric` as a wide table: one row per (layer, head) present, in order, and one column per
    /// spec in order of first appearance (null where a spec has no row there), over the rows with
    /// every label of `labels`. Rows are matched by their layer and head, never by position. Two
    /// rows of one spec at one place are an error (seeds not yet averaged, or a label left
    /// unfiltered), since either value would be a silent choice.
    pub fn by_spec(&self, metric: &str, labels: &[(&str, &str)]) -> Result<DataFrame> {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.metric == metric)
            .filter(|r| labels.iter().all(|(k, want)| matches!(r.label_value(k), Some(Label::Str(s)) if s == want)))
            .collect();
        if rows.is_empty() {
            return Err(crate::QiError::invalid("metric", metric, format!("no rows of the {} results with labels {labels:?}", self.model)).into());
        }
        let mut specs: Vec<&str> = Vec::new();
        let mut places: Vec<(Option<usize>, Option<usize>)> = Vec::new();
        for r in &rows {
            if !specs.contains(&r.spec.as_str()) {
                specs.push(&r.spec);
            }
            if !places.contains(&(r.layer, r.head)) {
                places.push((r.layer, r.head));
            }
        }
        places.sort();
        let mut grid: Vec<Vec<Option<f64>>> = vec![vec![None; places.len()]; specs.len()];
        for r in &rows {
            let (si, pi) = (specs.iter().position(|s| *s == r.spec).unwrap(), places.binary_search(&(r.layer, r.head)).unwrap());
            if grid[si][pi].replace(r.value).is_some() {
                let at = match (r.layer, r.head) {
                    (Some(l), Some(h)) => format!("layer {l} head {h}"),
                    (Some(l), None) => format!("layer {l}"),
                    _ => "model level".to_string(),
                };
                return Err(anyhow!(
                    "{metric} of {} has more than one row at {at}: average the seeds first (mean_over_seeds) or pick one value of each other label",
                    r.spec
                ));
            }
        }
        let mut cols = Vec::new();
        if places.iter().any(|p| p.0.is_some()) {
            cols.push(Column::new("layer".into(), places.iter().map(|p| p.0.map(|x| x as i64)).collect::<Vec<_>>()));
        }
        if places.iter().any(|p| p.1.is_some()) {
            cols.push(Column::new("head".into(), places.iter().map(|p| p.1.map(|x| x as i64)).collect::<Vec<_>>()));
        }
        for (s, col) in specs.iter().zip(grid) {
            cols.push(Column::new((*s).into(), col));
        }
        Ok(DataFrame::new_infer_height(cols)?)
    }

    /// The distinct values of the string label `name`, in row order (e.g. a logit lens's prompt
    /// categories).
    pub fn label_values(&self, name: &str) -> Vec<String> {
        label_values(&self.rows, name)
    }

    /// Means over seeds: rows equal in everything but `seed`, `value`, `ci` and `n` are merged into
    /// one row whose value is the mean over the seeds with a finite value (NaN seeds, e.g. an
    /// undefined AUC, are dropped), whose CI is the t-based 95% interval of that mean (absent with
    /// fewer than two such seeds) and whose `n` is the number of seeds averaged. Order of first
    /// appearance is kept.
    pub fn mean_over_seeds(&self) -> Tidy {
        let mut groups: Vec<(Row, Vec<f64>)> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for r in &self.rows {
            let mut key_row = r.clone();
            key_row.seed = None;
            key_row.value = 0.0;
            key_row.ci = None;
            key_row.n = None;
            let key = serde_json::to_string(&key_row).expect("rows serialize");
            match index.get(&key) {
                Some(&i) => groups[i].1.push(r.value),
                None => {
                    index.insert(key, groups.len());
                    groups.push((key_row, vec![r.value]));
                }
            }
        }
        let rows = groups
            .into_iter()
            .map(|(mut row, values)| {
                let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
                row.value = crate::metrics::mean(&finite);
                if finite.len() > 1 {
                    let h = crate::metrics::t_ci95_half_width(&finite);
                    row.ci = Some((row.value - h, row.value + h));
                }
                row.n = Some(finite.len());
                row
            })
            .collect();
        Tidy { model: self.model.clone(), rows }
    }

    /// The DataFrame (see the module docs for the columns).
    pub fn to_frame(&self) -> Result<DataFrame> {
        let rows = &self.rows;
        let mut cols: Vec<Column> = vec![
            Column::new("model".into(), vec![self.model.clone(); rows.len()]),
            Column::new("method".into(), rows.iter().map(|r| r.method.clone()).collect::<Vec<_>>()),
            Column::new("spec".into(), rows.iter().map(|r| r.spec.clone()).collect::<Vec<_>>()),
            Column::new("bits".into(), rows.iter().map(|r| r.bits).collect::<Vec<_>>()),
        ];
        if rows.iter().any(|r| r.layer.is_some()) {
            cols.push(Column::new("layer".into(), rows.iter().map(|r| r.layer.map(|x| x as i64)).collect::<Vec<_>>()));
        }
        if rows.iter().any(|r| r.head.is_some()) {
            cols.push(Column::new("head".into(), rows.iter().map(|r| r.head.map(|x| x as i64)).collect::<Vec<_>>()));
        }
        let mut label_names: Vec<&str> = Vec::new();
        for r in rows {
            for (k, _) in &r.labels {
                if !label_names.contains(&k.as_str()) {
                    label_names.push(k);
                }
            }
        }
        for name in label_names {
            let kind = rows.iter().find_map(|r| r.label_value(name)).expect("label seen");
            let col = match kind {
                Label::Str(_) => Column::new(
                    name.into(),
                    rows.iter().map(|r| match r.label_value(name) {
                        Some(Label::Str(s)) => Some(s.clone()),
                        Some(Label::Int(i)) => Some(i.to_string()),
                        Some(Label::Float(f)) => Some(f.to_string()),
                        None => None,
                    }).collect::<Vec<_>>(),
                ),
                Label::Int(_) => Column::new(
                    name.into(),
                    rows.iter().map(|r| match r.label_value(name) {
                        Some(Label::Int(i)) => Some(*i),
                        Some(Label::Float(f)) => Some(*f as i64),
                        _ => None,
                    }).collect::<Vec<_>>(),
                ),
                Label::Float(_) => Column::new(
                    name.into(),
                    rows.iter().map(|r| match r.label_value(name) {
                        Some(Label::Float(f)) => Some(*f),
                        Some(Label::Int(i)) => Some(*i as f64),
                        _ => None,
                    }).collect::<Vec<_>>(),
                ),
            };
            cols.push(col);
        }
        cols.push(Column::new("metric".into(), rows.iter().map(|r| r.metric.clone()).collect::<Vec<_>>()));
        cols.push(Column::new("value".into(), rows.iter().map(|r| r.value).collect::<Vec<_>>()));
        if rows.iter().any(|r| r.ci.is_some()) {
            cols.push(Column::new("ci_low".into(), rows.iter().map(|r| r.ci.map(|c| c.0)).collect::<Vec<_>>()));
            cols.push(Column::new("ci_high".into(), rows.iter().map(|r| r.ci.map(|c| c.1)).collect::<Vec<_>>()));
        }
        if rows.iter().any(|r| r.n.is_some()) {
            cols.push(Column::new("n".into(), rows.iter().map(|r| r.n.map(|x| x as u64)).collect::<Vec<_>>()));
        }
        if rows.iter().any(|r| r.seed.is_some()) {
            cols.push(Column::new("seed".into(), rows.iter().map(|r| r.seed).collect::<Vec<_>>()));
        }
        Ok(DataFrame::new_infer_height(cols)?)
    }
}

impl Tidy {
    /// The rows of a table written by [`Tidy::to_frame`] (e.g. read back with [`read_parquet`]), so
    /// a saved per-seed table can be averaged again with [`Tidy::mean_over_seeds`]. Label columns
    /// (between `head` and `metric`) keep their type; nulls mean "label not set".
    pub fn from_frame(df: &DataFrame) -> Result<Tidy> {
        const FIXED: [&str; 12] = ["model", "method", "spec", "bits", "layer", "head", "metric", "value", "ci_low", "ci_high", "n", "seed"];
        let n = df.height();
        let model = if n > 0 { str_values(df, "model")?[0].clone() } else { String::new() };
        let (spec, metric, value) = (str_values(df, "spec")?, str_values(df, "metric")?, f64_values(df, "value")?);
        let opt = |c: &str| -> Result<Vec<f64>> { if column(df, c).is_ok() { f64_values(df, c) } else { Ok(vec![f64::NAN; n]) } };
        let (layer, head, lo, hi, count, seed) = (opt("layer")?, opt("head")?, opt("ci_low")?, opt("ci_high")?, opt("n")?, opt("seed")?);
        let mut labels: Vec<(String, Vec<Option<Label>>)> = Vec::new();
        for c in df.columns() {
            let name = c.name().to_string();
            if FIXED.contains(&name.as_str()) {
                continue;
            }
            let vals: Vec<Option<Label>> = match c.dtype() {
                DataType::String => c.str()?.iter().map(|v| v.map(|s| Label::Str(s.to_string()))).collect(),
                DataType::Float32 | DataType::Float64 => c.cast(&DataType::Float64)?.f64()?.iter().map(|v| v.map(Label::Float)).collect(),
                _ => c.cast(&DataType::Int64)?.i64()?.iter().map(|v| v.map(Label::Int)).collect(),
            };
            labels.push((name, vals));
        }
        let mut t = Tidy::new(model);
        for i in 0..n {
            let qs: QuantSpec = spec[i].parse().map_err(|e| anyhow!("row {i}: spec '{}' ({e})", spec[i]))?;
            let mut r = Row::new(&qs, &metric[i], value[i]);
            r.layer = layer[i].is_finite().then_some(layer[i] as usize);
            r.head = head[i].is_finite().then_some(head[i] as usize);
            r.ci = (lo[i].is_finite() && hi[i].is_finite()).then_some((lo[i], hi[i]));
            r.n = count[i].is_finite().then_some(count[i] as usize);
            r.seed = seed[i].is_finite().then_some(seed[i] as u64);
            for (name, vals) in &labels {
                if let Some(v) = &vals[i] {
                    r.labels.push((name.clone(), v.clone()));
                }
            }
            t.push(r);
        }
        Ok(t)
    }
}

/// Column `name` of `df`, found by comparing names rather than through polars' cached schema.
/// A schema cached by another copy of polars (each evcxr notebook cell is its own library, with
/// its own hash seed) hashes names differently, so a lookup through it misses a column that is
/// there; a linear scan over a few dozen columns costs nothing and is always right.
pub fn column<'a>(df: &'a DataFrame, name: &str) -> Result<&'a Column> {
    df.columns()
        .iter()
        .find(|c| c.name().as_str() == name)
        .ok_or_else(|| anyhow!("no column '{name}' (columns: {:?})", df.get_column_names()))
}

/// Rows of `df` whose string column `col` equals `value`.
pub fn filter_eq(df: &DataFrame, col: &str, value: &str) -> Result<DataFrame> {
    let c = column(df, col)?;
    let mask: BooleanChunked = c.str()?.iter().map(|v| Some(v == Some(value))).collect();
    Ok(df.filter(&mask)?)
}

/// Rows of `df` whose numeric column `col` (e.g. `layer`) equals `value`.
pub fn filter_num_eq(df: &DataFrame, col: &str, value: f64) -> Result<DataFrame> {
    let mask: BooleanChunked = f64_values(df, col)?.iter().map(|&v| Some(v == value)).collect();
    Ok(df.filter(&mask)?)
}

/// The distinct values of string column `col`, in order of first appearance.
pub fn distinct_str(df: &DataFrame, col: &str) -> Result<Vec<String>> {
    let c = column(df, col)?;
    let mut out: Vec<String> = Vec::new();
    for v in c.str()?.iter().flatten() {
        if !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    Ok(out)
}

/// Column `col` as f64 values (nulls become NaN); integer columns are converted.
pub fn f64_values(df: &DataFrame, col: &str) -> Result<Vec<f64>> {
    let c = column(df, col)?;
    let c = c.cast(&DataType::Float64)?;
    Ok(c.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// Column `col` as strings (nulls become empty strings).
pub fn str_values(df: &DataFrame, col: &str) -> Result<Vec<String>> {
    let c = column(df, col)?;
    let c = c.cast(&DataType::String)?;
    Ok(c.str()?.iter().map(|v| v.unwrap_or("").to_string()).collect())
}

/// The rows of `df` as JSON objects (column → value), numbers as numbers and strings as strings;
/// a null or a NaN is JSON `null` (JSON has no NaN).
pub fn to_json_rows(df: &DataFrame) -> Result<serde_json::Value> {
    let mut rows = vec![serde_json::Map::new(); df.height()];
    for c in df.columns() {
        let name = c.name().to_string();
        let values: Vec<serde_json::Value> = match c.dtype() {
            DataType::String => c.str()?.iter().map(|v| v.map_or(serde_json::Value::Null, |s| s.into())).collect(),
            DataType::Boolean => c.bool()?.iter().map(|v| v.map_or(serde_json::Value::Null, |b| b.into())).collect(),
            d if d.is_integer() => c.cast(&DataType::Int64)?.i64()?.iter().map(|v| v.map_or(serde_json::Value::Null, |x| x.into())).collect(),
            d if d.is_float() => c.cast(&DataType::Float64)?.f64()?.iter().map(|v| v.and_then(serde_json::Number::from_f64).map_or(serde_json::Value::Null, serde_json::Value::Number)).collect(),
            d => return Err(anyhow!("column '{name}' is {d}, which has no JSON form here (expected strings, booleans or numbers)")),
        };
        for (row, v) in rows.iter_mut().zip(values) {
            row.insert(name.clone(), v);
        }
    }
    Ok(serde_json::Value::Array(rows.into_iter().map(serde_json::Value::Object).collect()))
}

/// Writes `df` as parquet, atomically.
pub fn write_parquet(df: &DataFrame, path: &std::path::Path) -> Result<()> {
    crate::io::write_atomic(path, |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        let mut df = df.clone();
        ParquetWriter::new(&mut f).finish(&mut df)?;
        Ok(())
    })
}

/// Reads a parquet file written by [`write_parquet`].
pub fn read_parquet(path: &std::path::Path) -> Result<DataFrame> {
    let f = std::fs::File::open(path).map_err(|e| anyhow!("{}: cannot open ({e})", path.display()))?;
    ParquetReader::new(f).finish().map_err(|e| anyhow!("{}: not a readable parquet file ({e})", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn by_spec_matches_rows_by_place_and_refuses_duplicates() {
        use super::*;
        let (a, b): (QuantSpec, QuantSpec) = ("rtn:bits=4".parse().unwrap(), "nf4".parse().unwrap());
        let mut t = Tidy::new("m");
        // b has no row at layer 0 and lists its layers in reverse: a positional zip would put
        // b's layer-2 value beside a's layer 0
        for (l, v) in [(0, 1.0), (1, 2.0), (2, 3.0)] {
            t.push(Row::new(&a, "jsd", v).layer(l).label("component", "resid"));
            t.push(Row::new(&a, "jsd", 100.0 + v).layer(l).label("component", "attn"));
        }
        for (l, v) in [(2, 30.0), (1, 20.0)] {
            t.push(Row::new(&b, "jsd", v).layer(l).label("component", "resid"));
        }
        t.push(Row::new(&b, "other", 9.0).layer(0).label("component", "resid"));
        let df = t.by_spec("jsd", &[("component", "resid")]).unwrap();
        assert_eq!(df.get_column_names().iter().map(|c| c.as_str()).collect::<Vec<_>>(), ["layer", "rtn:bits=4", "nf4"]);
        let col = |n: &str| {
            let c = df.column(n).unwrap().f64().unwrap().clone();
            (0..c.len()).map(|i| c.get(i)).collect::<Vec<_>>()
        };
        assert_eq!(col("rtn:bits=4"), [Some(1.0), Some(2.0), Some(3.0)]);
        assert_eq!(col("nf4"), [None, Some(20.0), Some(30.0)]);
        // without the label filter each layer has two rows of a: an error, not a silent pick
        let e = t.by_spec("jsd", &[]).unwrap_err().to_string();
        assert!(e.contains("rtn:bits=4") && e.contains("layer 0") && e.contains("mean_over_seeds"), "{e}");
        assert!(t.by_spec("nope", &[]).unwrap_err().to_string().contains("nope"));
    }

    #[test]
    fn json_rows_keep_types_and_nulls() {
        let df = df!("spec" => ["none", "rtn:bits=4"], "layer" => [Some(3i32), None], "value" => [0.25f64, f64::NAN], "ok" => [true, false]).unwrap();
        let v = super::to_json_rows(&df).unwrap();
        assert_eq!(v, serde_json::json!([
            { "spec": "none", "layer": 3, "value": 0.25, "ok": true },
            { "spec": "rtn:bits=4", "layer": null, "value": null, "ok": false },
        ]));
    }

    #[test]
    fn scalar_reads_the_model_level_row_and_labels_come_in_row_order() {
        let q: QuantSpec = "rtn:bits=4".parse().unwrap();
        let t = Tidy {
            model: "m".into(),
            rows: vec![
                // a per-layer row of the same metric first: scalar must not take it
                Row::new(&q, "logit_diff", 9.0).layer(3).label("category", "code"),
                Row::new(&q, "logit_diff", 1.5).label("category", "all"),
                Row::new(&q, "logit_diff", 7.0).layer(0).head(1).label("category", "code"),
                Row::new(&q, "n", 2.0).label("category", 4usize),
            ],
        };
        assert_eq!(t.scalar("rtn:bits=4", "logit_diff"), Some(1.5));
        assert_eq!(t.scalar("rtn:bits=3", "logit_diff"), None);
        assert_eq!(t.label_values("category"), ["code", "all"], "an integer label is not a string value");
        assert_eq!(t.rows[0].label_str("category"), Some("code"));
        assert_eq!(t.rows[3].label_str("category"), None);
    }

    use super::*;

    #[test]
    fn per_head_and_per_layer_pick_the_rows_they_name() {
        let rtn: QuantSpec = "rtn:bits=4".parse().unwrap();
        let none = QuantSpec::None;
        let mut t = Tidy::new("m");
        // rows out of order, another spec, another metric, a layer-level row among head rows
        t.push(Row::new(&rtn, "js", 0.5).layer(1).head(0));
        t.push(Row::new(&rtn, "js", 0.2).layer(0).head(1));
        t.push(Row::new(&none, "js", 9.0).layer(0).head(0));
        t.push(Row::new(&rtn, "prev", 7.0).layer(0).head(0));
        t.push(Row::new(&rtn, "js", 3.0).layer(0));
        let grid = t.per_head("rtn:bits=4", "js", 2, 2);
        assert!(grid[0].is_nan() && grid[3].is_nan(), "{grid:?}");
        assert_eq!((grid[1], grid[2]), (0.2, 0.5), "layer * n_heads + head");
        // per layer: in layer order, only rows with the labels asked for, never head rows
        let mut t = Tidy::new("m");
        t.push(Row::new(&rtn, "rel_l2", 0.3).layer(2).label("component", "resid_post"));
        t.push(Row::new(&rtn, "rel_l2", 0.1).layer(0).label("component", "resid_post"));
        t.push(Row::new(&rtn, "rel_l2", 5.0).layer(1).label("component", "attn_out"));
        t.push(Row::new(&rtn, "rel_l2", 6.0).layer(1).head(0).label("component", "resid_post"));
        assert_eq!(t.per_layer("rtn:bits=4", "rel_l2", &[("component", "resid_post")]), [0.1, 0.3]);
        assert_eq!(t.per_layer("rtn:bits=4", "rel_l2", &[]), [0.1, 5.0, 0.3]);
        assert_eq!(crate::metrics::argmax(&[0.1, f64::NAN, 0.7, 0.2]), 2, "NaN never wins");
    }

    #[test]
    fn frame_has_only_used_columns_and_labels_fill_with_nulls() {
        let none = QuantSpec::None;
        let rtn: QuantSpec = "rtn:bits=4".parse().unwrap();
        let mut t = Tidy::new("m");
        t.push(Row::new(&none, "cosine", 1.0).layer(0).label("component", "resid_pre"));
        t.push(Row::new(&rtn, "cosine", 0.5).layer(1).label("k", 3usize).ci(0.4, 0.6));
        let df = t.to_frame().unwrap();
        let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["model", "method", "spec", "bits", "layer", "component", "k", "metric", "value", "ci_low", "ci_high"]);
        assert_eq!(str_values(&df, "spec").unwrap(), ["none", "rtn:bits=4"]);
        assert_eq!(f64_values(&df, "bits").unwrap(), [32.0, 4.0]);
        assert!(f64_values(&df, "k").unwrap()[0].is_nan());
        assert_eq!(filter_eq(&df, "method", "rtn").unwrap().height(), 1);
        assert_eq!(distinct_str(&df, "metric").unwrap(), ["cosine"]);
    }

    #[test]
    fn mean_over_seeds_merges_rows_that_differ_only_in_seed() {
        let rtn: QuantSpec = "rtn:bits=4".parse().unwrap();
        let mut t = Tidy::new("m");
        for (s, v) in [(0, 1.0), (1, 2.0), (2, 3.0)] {
            t.push(Row::new(&rtn, "score", v).head(1).seed(s));
        }
        t.push(Row::new(&rtn, "score", 7.0).head(2).seed(0));
        let m = t.mean_over_seeds();
        assert_eq!(m.rows.len(), 2);
        assert_eq!(m.rows[0].value, 2.0);
        assert_eq!(m.rows[0].n, Some(3));
        // sd 1, n 3: half width t(0.975, 2) / sqrt(3) = 4.303 / 1.732
        let (lo, hi) = m.rows[0].ci.unwrap();
        assert!((hi - 2.0 - 4.302653 / 3f64.sqrt()).abs() < 1e-3 && (2.0 - lo - (hi - 2.0)).abs() < 1e-12);
        assert_eq!(m.rows[1].ci, None);
        // a NaN seed is dropped from the mean, the CI and n
        let mut t = Tidy::new("m");
        for (s, v) in [(0, 1.0), (1, f64::NAN), (2, 3.0)] {
            t.push(Row::new(&rtn, "auc", v).seed(s));
        }
        let m = t.mean_over_seeds();
        assert_eq!((m.rows[0].value, m.rows[0].n), (2.0, Some(2)));
        // sd √2, n 2: half width t(0.975, 1) · √2 / √2 = 12.706
        let (lo, hi) = m.rows[0].ci.unwrap();
        assert!((hi - 2.0 - 12.706).abs() < 1e-9 && (2.0 - lo - 12.706).abs() < 1e-9, "{lo} {hi}");
    }

    #[test]
    fn parquet_round_trip() {
        let dir = std::env::temp_dir().join(format!("qi-tidy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut t = Tidy::new("m");
        t.push(Row::new(&QuantSpec::None, "x", 1.5).seed(3));
        let df = t.to_frame().unwrap();
        let p = dir.join("t.parquet");
        write_parquet(&df, &p).unwrap();
        assert!(read_parquet(&p).unwrap().equals_missing(&df));
        let mut t2 = Tidy::new("m");
        t2.push(Row::new(&"rtn:bits=4".parse().unwrap(), "y", 2.0).layer(1).label("rule", "sigma").label("k", 3usize).ci(1.0, 3.0).n(4).seed(0));
        t2.push(Row::new(&QuantSpec::None, "y", f64::NAN).head(2));
        let back = Tidy::from_frame(&t2.to_frame().unwrap()).unwrap();
        assert_eq!(format!("{:?}", back.rows), format!("{:?}", t2.rows));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
