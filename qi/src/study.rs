//! Studies: a resumable, shardable grid of models × quantizers × seeds × analyses, each cell an
//! independent job whose tidy rows are written atomically as one parquet file.
//!
//! **Spec file** (`.toml` or `.json`, by extension; every key is checked up front, errors name the
//! file, the key and the valid values):
//!
//! ```toml
//! name = "default"                       # required
//! seeds = 3                              # a count (seeds 0..3) or a list [0, 7]; default 1
//! bits = [8, 4, 3]                       # bit widths for quantizers that leave `bits` open
//! quantizers = ["rtn", "gptq:samples=64,seqlen=512", "nf4", "rtn:bits=4,group=64",
//!   { spec = "gptq:samples=16,seqlen=512", models = ["SmolLM2-135M"] }]   # only these models
//! models = [
//!   "gpt2",                              # Hub id
//!   { source = "shared:models/x/x.gguf", name = "SmolLM2-135M" },
//! ]
//! [data]                                 # options shared by every analysis that has them
//! seqlen = 128
//! [[analyses]]
//! name = "perplexity"                    # a registry name (qi::analysis::registry)
//! options = { text = "wikitext2", max_windows = 8 }
//! seeds = 1                              # optional: overrides the study's seeds
//! [[analyses]]
//! name = "induction"                     # `analyses = ["perplexity", "induction"]` also works
//! id = "induction_long"                  # optional, default = name; needed to run one analysis twice
//! models = ["SmolLM2-135M"]              # optional: only these models (display names)
//! ```
//!
//! - **quantizers**: QuantSpec strings. One without `bits` of a method that takes bits (`rtn`,
//!   `gptq`, `awq`) is expanded over `bits` (`rtn` × [8, 4] → `rtn:bits=8`, `rtn:bits=4`); specs
//!   with explicit `bits` and methods without bits (`nf4`, `q4_0`, `fp16`) stay as written. `none`
//!   is not listed: reference cells are always part of the grid. A `{ spec, models }` table
//!   limits a quantizer (each of its bit widths) to those models (display names).
//! - **models**: `shared:REL` is `REL` inside the shared folder (`QI_SHARED`, else `../shared`);
//!   `models:FILE` is `FILE` in the models folder that `./dev models` fills ([`crate::shared::models_dir`]);
//!   paths starting with `/`, `./` or `../` are local (relative ones against the spec file's
//!   folder); anything else goes to [`crate::load_model`] as written (a Hub id, `id@revision`).
//!   The display name (the `model` column) defaults to the file stem or the Hub id.
//! - **seeds** set the analyses' `seed` option (their inputs); they do not change the quantizers
//!   (a calibration seed belongs in the spec: `gptq:seed=1`), so each twin is quantized once.
//! - **data** keys go to every analysis whose options have that key (e.g. `seqlen`, `batch_size`);
//!   a key no analysis has is an error; an analysis' own `options` win.
//!
//! **Cells.** One cell = (model, spec, analysis, seed); its key (model name and source, canonical
//! spec, analysis id and name, the full options with defaults filled in, seed) is hashed into the
//! file name `MODEL__SPEC__ANALYSIS__sSEED__HASH.parquet`, so changing an option makes new cells
//! and never reuses stale ones. Reference rows come from dedicated reference cells (spec `none`,
//! the analysis run on the reference alone); a twin cell runs the analysis on the reference and
//! that twin (comparative metrics need both) and keeps only the twin's rows — for analyses whose
//! rows are per model (`Analysis::PER_MODEL`: perplexity, calibration) it runs the twin alone.
//! Beside each parquet file, a JSON sidecar ([`CellRecord`]) holds the cell's key, timing and the
//! parquet file's size and XXH3-128 ([`crate::integrity`]); it is written last, so it is the
//! completion marker. A cell is done when its sidecar names its key and its parquet file matches
//! the recorded digest ([`Cell::state`]): a re-run skips it; a damaged cell (truncated, a flipped
//! bit, a missing or foreign sidecar) is reported and run again; a crash or Ctrl-C leaves at most
//! a hidden `.NAME.tmp-PID` file, which is ignored.
//!
//! **Shards.** The unit of sharding is the (model, quantizer) group, so each twin is quantized or
//! loaded by one shard only; `--shard i/n` takes the groups at positions i-1, i-1+n, … of the
//! grid's order (models in file order, reference first, then quantizers in expansion order).
//!
//! **Collected frame** ([`collect`]): the tidy columns of [`crate::analysis::tidy`] plus
//! `analysis` (the analysis id) after `model`: `model`, `analysis`, `method`, `spec`, `bits`,
//! `layer`, `head`, the analyses' extra labels, `metric`, `value`, `ci_low`, `ci_high`, `n`, `seed`
//! — columns an analysis does not use are null in its rows. Pivot on `metric` (and `layer`/`head`)
//! with `spec` or `bits` as columns.
use crate::analysis::{self, tidy, Comparison, Tidy};
use crate::quant::QuantSpec;
use crate::quantize::QuantizeOptions;
use crate::twin_cache::{slug, stable_hash};
use crate::QiError;
use anyhow::{anyhow, bail, Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A model of the study.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyModel {
    /// The `model` column.
    pub name: String,
    /// As written in the spec file (part of the cell key, so results stay valid when the shared
    /// folder moves).
    pub source: String,
    /// What [`crate::load_model`] gets: a resolved path or the Hub id.
    pub resolved: String,
}

/// An analysis column of the study.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyAnalysis {
    /// The `analysis` column and file-name part (default: the registry name).
    pub id: String,
    /// Registry name.
    pub name: String,
    /// Complete options (defaults, then `data`, then the analysis' own), without `seed`.
    pub options: Value,
    pub seeds: Vec<u64>,
    /// Only these models (display names); `None` = every model of the study.
    pub models: Option<Vec<String>>,
}

/// A checked study.
#[derive(Debug, Clone)]
pub struct Study {
    pub name: String,
    pub file: PathBuf,
    pub models: Vec<StudyModel>,
    /// Expanded quantizer specs (without the reference).
    pub specs: Vec<QuantSpec>,
    /// Per spec (aligned with `specs`): only these models (display names); `None` = every model.
    pub spec_models: Vec<Option<Vec<String>>>,
    pub analyses: Vec<StudyAnalysis>,
}

/// One job of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub model: usize,
    pub spec: QuantSpec,
    pub analysis: usize,
    pub seed: u64,
    /// Index of the (model, spec) group in grid order (the sharding unit).
    pub group: usize,
    /// The canonical key string.
    pub key: String,
    /// `MODEL__SPEC__ANALYSIS__sSEED__HASH` (the parquet and sidecar file stem).
    pub stem: String,
}

impl Cell {
    pub fn parquet(&self, results: &Path) -> PathBuf {
        results.join(format!("{}.parquet", self.stem))
    }
    pub fn sidecar(&self, results: &Path) -> PathBuf {
        results.join(format!("{}.json", self.stem))
    }
    /// Done when the sidecar names this cell's key and the parquet file matches its digest.
    pub fn is_done(&self, results: &Path) -> bool {
        self.state(results) == CellState::Done
    }
    /// What is on disk for this cell.
    pub fn state(&self, results: &Path) -> CellState {
        let (parquet, sidecar) = (self.parquet(results), self.sidecar(results));
        if !parquet.exists() && !sidecar.exists() {
            return CellState::Missing;
        }
        match check_cell(&parquet, &sidecar) {
            Ok(rec) if rec.key == self.key => CellState::Done,
            Ok(rec) => CellState::Damaged(format!("{}: made for key '{}', expected '{}'", sidecar.display(), rec.key, self.key)),
            Err(why) => CellState::Damaged(why),
        }
    }
}

/// The version of the text an analysis with these options reads, where it reads one whose
/// preparation has changed since results were first cached: WikiText-2 (rows as the Hugging Face
/// dataset has them) and C4 (the calibration / SAE / evaluation split).
fn data_version(options: &Value) -> Option<String> {
    let text = options.get("text").and_then(Value::as_str)?;
    if text == "wikitext2" {
        Some(format!("wikitext2-v{}", crate::data::WIKITEXT2_TEXT_VERSION))
    } else if text.starts_with("c4") {
        Some(format!("c4-split-v{}", crate::quant::spec::CALIBRATION_DATA_VERSION))
    } else {
        None
    }
}

/// A cell's files, as [`Cell::state`] finds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellState {
    Missing,
    Done,
    /// Present but not to be trusted: why.
    Damaged(String),
}

/// Checks a result file against its sidecar: the sidecar must parse and record a digest, and the
/// parquet file must match it. Returns the record, or what is wrong (naming the file).
pub fn check_cell(parquet: &Path, sidecar: &Path) -> std::result::Result<CellRecord, String> {
    let text = std::fs::read_to_string(sidecar).map_err(|e| format!("{}: no readable sidecar ({e})", sidecar.display()))?;
    let rec: CellRecord = serde_json::from_str(&text).map_err(|e| format!("{}: unreadable sidecar ({e})", sidecar.display()))?;
    let Some(d) = &rec.parquet else {
        return Err(format!("{}: no content hash recorded (written before qi checked results; `qi study verify --adopt` records one)", sidecar.display()));
    };
    match crate::integrity::check_file(parquet, d) {
        None => Ok(rec),
        Some(p) => Err(p.to_string()),
    }
}

/// `--shard i/n`: 1-based index `i` of `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 1, count: 1 }
    }
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || QiError::invalid("shard", s, "expected i/n with 1 <= i <= n, e.g. 2/8");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (i, n): (usize, usize) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if n == 0 || i == 0 || i > n {
            return Err(bad().into());
        }
        Ok(Shard { index: i, count: n })
    }
}

impl Shard {
    /// Whether this shard runs the cells of `group` (round-robin over the grid's groups).
    pub fn takes(&self, group: usize) -> bool {
        group % self.count == self.index - 1
    }
}

const TOP_KEYS: [&str; 7] = ["name", "models", "quantizers", "bits", "seeds", "analyses", "data"];

impl Study {
    /// Reads and checks a spec file (`.toml` or `.json`).
    pub fn load(path: &Path) -> Result<Study> {
        Study::load_selected(path, &[])
    }

    /// [`Study::load`] keeping only the analyses whose id is in `only` (all when empty); the others
    /// are not checked, so a study can run the columns that exist before an analysis is merged.
    /// Cell keys do not depend on the other analyses: results are the files of the full study.
    pub fn load_selected(path: &Path, only: &[String]) -> Result<Study> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{}: cannot read study file ({e})", path.display()))?;
        let value: Value = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => toml::from_str(&text).map_err(|e| anyhow!("{}: not valid TOML: {e}", path.display()))?,
            Some("json") => serde_json::from_str(&text).map_err(|e| anyhow!("{}: not valid JSON: {e}", path.display()))?,
            _ => return Err(QiError::invalid("study file", path.display(), "expected a .toml or .json file").into()),
        };
        Study::from_value_selected(&value, path, only)
    }

    /// Checks a parsed spec; `file` names it in errors and anchors relative model paths.
    pub fn from_value(v: &Value, file: &Path) -> Result<Study> {
        Study::from_value_selected(v, file, &[])
    }

    fn from_value_selected(v: &Value, file: &Path, only: &[String]) -> Result<Study> {
        let f = file.display().to_string();
        let err = |key: &str, value: &dyn std::fmt::Display, reason: String| -> anyhow::Error { QiError::invalid(format!("{f}: `{key}`"), value, reason).into() };
        let top = v.as_object().ok_or_else(|| err("(top level)", &"", "expected a table of keys".into()))?;
        for k in top.keys() {
            if !TOP_KEYS.contains(&k.as_str()) {
                return Err(err(k, &k, format!("unknown key; valid keys: {}", TOP_KEYS.join(", "))));
            }
        }
        let name = match top.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            other => return Err(err("name", &show(other), "expected a non-empty string (the study's name)".into())),
        };
        let seeds = match top.get("seeds") {
            None => vec![0],
            Some(s) => parse_seeds(s).map_err(|r| err("seeds", s, r))?,
        };
        let models = parse_models(top.get("models"), file, &err)?;
        let model_names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        let (specs, spec_models): (Vec<QuantSpec>, Vec<Option<Vec<String>>>) = parse_quantizers(top.get("quantizers"), top.get("bits"), &model_names, &err)?.into_iter().unzip();
        let analyses = parse_analyses(top.get("analyses"), top.get("data"), &seeds, &model_names, only, &err)?;
        Ok(Study { name, file: file.to_path_buf(), models, specs, spec_models, analyses })
    }

    /// The reference, then the expanded specs: the order of a model's groups.
    pub fn all_specs(&self) -> Vec<QuantSpec> {
        std::iter::once(QuantSpec::None).chain(self.specs.iter().cloned()).collect()
    }

    /// Every cell, in grid order: model, spec (reference first), analysis, seed.
    pub fn cells(&self) -> Vec<Cell> {
        let mut out = Vec::new();
        let specs = self.all_specs();
        for (mi, m) in self.models.iter().enumerate() {
            for (si, spec) in specs.iter().enumerate() {
                let group = mi * specs.len() + si;
                if si > 0 && self.spec_models.get(si - 1).and_then(Option::as_ref).is_some_and(|only| !only.contains(&m.name)) {
                    continue;
                }
                for (ai, a) in self.analyses.iter().enumerate() {
                    if a.models.as_ref().is_some_and(|only| !only.contains(&m.name)) {
                        continue;
                    }
                    for &seed in &a.seeds {
                        let mut key = format!(
                            "model={}|source={}|spec={spec}|analysis={}|name={}|seed={seed}|options={}",
                            m.name, m.source, a.id, a.name, a.options
                        );
                        // what else the result depends on: the quantizer's algorithm version and
                        // the version of the text read (appended only where they are not the
                        // first, so cells made before versions existed keep their keys)
                        let algo = spec.algorithm_version();
                        if !algo.ends_with("-v1") {
                            key.push_str(&format!("|algo={algo}"));
                        }
                        if let Some(v) = data_version(&a.options) {
                            key.push_str(&format!("|data={v}"));
                        }
                        let hash = &stable_hash(&[&key])[..8];
                        let stem = format!("{}__{}__{}__s{seed}__{hash}", slug(&m.name), slug(&spec.to_string()), slug(&a.id));
                        out.push(Cell { model: mi, spec: spec.clone(), analysis: ai, seed, group, key, stem });
                    }
                }
            }
        }
        out
    }

    /// The cells of one shard.
    pub fn shard_cells(&self, shard: Shard) -> Vec<Cell> {
        self.cells().into_iter().filter(|c| shard.takes(c.group)).collect()
    }
}

fn show(v: Option<&Value>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "(missing)".into())
}

type ErrFn<'a> = dyn Fn(&str, &dyn std::fmt::Display, String) -> anyhow::Error + 'a;

/// A seed count (seeds 0..n) or a non-empty list of distinct seeds.
fn parse_seeds(v: &Value) -> std::result::Result<Vec<u64>, String> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(n) if n >= 1 => Ok((0..n).collect()),
            _ => Err("expected a seed count >= 1 or a list of seeds".into()),
        },
        Value::Array(a) if !a.is_empty() => {
            let mut out: Vec<u64> = Vec::new();
            for x in a {
                let s = x.as_u64().ok_or_else(|| format!("seed {x} is not a non-negative integer"))?;
                if out.contains(&s) {
                    return Err(format!("seed {s} is listed twice"));
                }
                out.push(s);
            }
            Ok(out)
        }
        _ => Err("expected a seed count >= 1 or a non-empty list of seeds".into()),
    }
}

fn parse_models(v: Option<&Value>, file: &Path, err: &ErrFn) -> Result<Vec<StudyModel>> {
    let list = match v {
        Some(Value::Array(a)) if !a.is_empty() => a,
        other => return Err(err("models", &show(other), "expected a non-empty list of model sources (Hub ids, `shared:…` or paths) or {source, name} tables".into())),
    };
    let mut out: Vec<StudyModel> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let key = format!("models[{i}]");
        let (source, name) = match m {
            Value::String(s) => (s.trim().to_string(), None),
            Value::Object(t) => {
                if let Some(k) = t.keys().find(|k| !["source", "name"].contains(&k.as_str())) {
                    return Err(err(&format!("{key}.{k}"), k, "unknown key; valid keys: source, name".into()));
                }
                let source = t.get("source").and_then(Value::as_str).ok_or_else(|| err(&format!("{key}.source"), &show(t.get("source")), "expected a string".into()))?;
                let name = match t.get("name") {
                    None => None,
                    Some(Value::String(n)) if !n.trim().is_empty() => Some(n.trim().to_string()),
                    Some(other) => return Err(err(&format!("{key}.name"), other, "expected a non-empty string".into())),
                };
                (source.trim().to_string(), name)
            }
            other => return Err(err(&key, other, "expected a model source string or a {source, name} table".into())),
        };
        if source.is_empty() {
            return Err(err(&key, &"\"\"", "empty model source".into()));
        }
        let resolved = resolve_source(&source, file);
        let name = name.unwrap_or_else(|| default_name(&source));
        if let Some(prev) = out.iter().position(|o| o.name == name) {
            return Err(err(&key, &name, format!("model name already used by models[{prev}]; give one a distinct `name`")));
        }
        out.push(StudyModel { name, source, resolved });
    }
    Ok(out)
}

/// `shared:REL` → the shared folder; relative local paths → against the spec file's folder.
fn resolve_source(source: &str, file: &Path) -> String {
    if let Some(rel) = source.strip_prefix("shared:") {
        let dir = crate::shared::shared_dir().unwrap_or_else(|| match std::env::var_os("QI_SHARED") {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from("../shared"),
        });
        return dir.join(rel.trim_start_matches('/')).display().to_string();
    }
    if let Some(rel) = source.strip_prefix("models:") {
        return crate::shared::models_dir().join(rel.trim_start_matches('/')).display().to_string();
    }
    if source.starts_with("./") || source.starts_with("../") {
        let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        return base.join(source).display().to_string();
    }
    source.to_string()
}

/// The file stem (directory name) of a path, or the Hub id as written.
fn default_name(source: &str) -> String {
    crate::loader::display_name(source.strip_prefix("shared:").or_else(|| source.strip_prefix("models:")).unwrap_or(source))
}

/// Whether a local source (`shared:`, `/`, `./`, `../`) exists; Hub ids are not checked.
fn is_local(source: &str) -> bool {
    source.starts_with("shared:") || source.starts_with("models:") || source.starts_with('/') || source.starts_with("./") || source.starts_with("../")
}

/// A `models` list of a quantizer or analysis table: names of the study's models.
fn parse_model_filter(v: Option<&Value>, key: &str, model_names: &[&str], err: &ErrFn) -> Result<Option<Vec<String>>> {
    match v {
        None => Ok(None),
        Some(Value::Array(a)) if !a.is_empty() => {
            let mut names = Vec::new();
            for v in a {
                match v.as_str().map(str::trim) {
                    Some(n) if model_names.contains(&n) => names.push(n.to_string()),
                    _ => return Err(err(&format!("{key}.models"), v, format!("not a model of the study; its models: {}", model_names.join(", ")))),
                }
            }
            Ok(Some(names))
        }
        Some(other) => Err(err(&format!("{key}.models"), other, "expected a non-empty list of the study's model names".into())),
    }
}

fn parse_quantizers(v: Option<&Value>, bits: Option<&Value>, model_names: &[&str], err: &ErrFn) -> Result<Vec<(QuantSpec, Option<Vec<String>>)>> {
    let list = match v {
        Some(Value::Array(a)) if !a.is_empty() => a,
        other => return Err(err("quantizers", &show(other), "expected a non-empty list of QuantSpec strings or {spec, models} tables, e.g. [\"rtn\", \"gptq:samples=64\", \"nf4\"]".into())),
    };
    let grid: Vec<u8> = match bits {
        None => Vec::new(),
        Some(Value::Array(a)) if !a.is_empty() => {
            let mut out: Vec<u8> = Vec::new();
            for (i, b) in a.iter().enumerate() {
                let x = b.as_u64().filter(|x| (2..=8).contains(x)).ok_or_else(|| err(&format!("bits[{i}]"), b, "expected an integer bit width in 2..=8".into()))? as u8;
                if out.contains(&x) {
                    return Err(err(&format!("bits[{i}]"), b, "listed twice".into()));
                }
                out.push(x);
            }
            out
        }
        Some(other) => return Err(err("bits", other, "expected a non-empty list of bit widths, e.g. [8, 4, 3]".into())),
    };
    let mut out: Vec<(QuantSpec, String, Option<Vec<String>>)> = Vec::new();
    let mut grid_used = false;
    for (i, q) in list.iter().enumerate() {
        let key = format!("quantizers[{i}]");
        let (s, only) = match q {
            Value::Object(t) => {
                if let Some(k) = t.keys().find(|k| !["spec", "models"].contains(&k.as_str())) {
                    return Err(err(&format!("{key}.{k}"), k, "unknown key; valid keys: spec, models".into()));
                }
                let spec = t.get("spec").and_then(Value::as_str).map(str::trim).ok_or_else(|| err(&format!("{key}.spec"), &show(t.get("spec")), "expected a QuantSpec string".into()))?;
                (spec, parse_model_filter(t.get("models"), &key, model_names, err)?)
            }
            _ => (q.as_str().map(str::trim).ok_or_else(|| err(&key, q, "expected a QuantSpec string or a {spec, models} table".into()))?, None),
        };
        let (method, rest) = match s.split_once(':') {
            Some((m, r)) => (m.trim(), r.trim()),
            None => (s, ""),
        };
        let has_bits = rest.split(',').any(|kv| kv.split('=').next().map(str::trim) == Some("bits"));
        let with_bits = |b: u8| if rest.is_empty() { format!("{method}:bits={b}") } else { format!("{method}:bits={b},{rest}") };
        let expanded: Vec<(QuantSpec, String)> = if has_bits {
            vec![(s.parse().map_err(|e: anyhow::Error| err(&key, &s, format!("{e:#}")))?, format!("{key} '{s}'"))]
        } else if let Ok(spec) = s.parse::<QuantSpec>() {
            vec![(spec, format!("{key} '{s}'"))]
        } else if with_bits(4).parse::<QuantSpec>().is_ok() {
            // a method that takes bits, left to the grid
            if grid.is_empty() {
                return Err(err(&key, &s, format!("{method} needs bits: give `bits = [8, 4, 3]` or write {method}:bits=4")));
            }
            grid_used = true;
            grid.iter()
                .map(|&b| {
                    let t = with_bits(b);
                    t.parse::<QuantSpec>().map(|spec| (spec, format!("{key} '{s}' with bits={b}"))).map_err(|e| err("bits", &b, format!("{method} does not take bits={b}: {e:#}")))
                })
                .collect::<Result<_>>()?
        } else {
            let e = s.parse::<QuantSpec>().unwrap_err();
            return Err(err(&key, &s, format!("{e:#}")));
        };
        for (spec, origin) in expanded {
            if spec == QuantSpec::None {
                return Err(err(&key, &s, "the reference (none) is always part of the grid; remove it from quantizers".into()));
            }
            if let Some((_, first, _)) = out.iter().find(|(o, _, _)| *o == spec) {
                return Err(err(&key, &s, format!("duplicate cell: {origin} gives {spec}, as {first} does")));
            }
            out.push((spec, origin, only.clone()));
        }
    }
    if !grid.is_empty() && !grid_used {
        return Err(err("bits", &show(bits), "no quantizer leaves bits open (e.g. \"rtn\" or \"gptq:samples=64\"); remove `bits` or such a quantizer".into()));
    }
    Ok(out.into_iter().map(|(s, _, only)| (s, only)).collect())
}

fn parse_analyses(v: Option<&Value>, data: Option<&Value>, seeds: &[u64], model_names: &[&str], only: &[String], err: &ErrFn) -> Result<Vec<StudyAnalysis>> {
    let list = match v {
        Some(Value::Array(a)) if !a.is_empty() => a,
        other => return Err(err("analyses", &show(other), "expected a non-empty list of analysis names or [[analyses]] tables with name, id, options, seeds".into())),
    };
    let data = match data {
        None => serde_json::Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => return Err(err("data", other, "expected a table of options shared by the analyses".into())),
    };
    if data.contains_key("seed") {
        return Err(err("data.seed", &data["seed"], "seeds are set by the top-level `seeds`".into()));
    }
    let valid: Vec<&str> = analysis::registry().iter().map(|e| e.name).collect();
    let mut out: Vec<StudyAnalysis> = Vec::new();
    let mut data_used = vec![false; data.len()];
    for (i, a) in list.iter().enumerate() {
        let key = format!("analyses[{i}]");
        let empty = serde_json::Map::new();
        let (name, table) = match a {
            Value::String(s) => (s.trim().to_string(), &empty),
            Value::Object(t) => {
                if let Some(k) = t.keys().find(|k| !["name", "id", "options", "seeds", "models"].contains(&k.as_str())) {
                    return Err(err(&format!("{key}.{k}"), k, "unknown key; valid keys: name, id, options, seeds, models".into()));
                }
                let n = t.get("name").and_then(Value::as_str).ok_or_else(|| err(&format!("{key}.name"), &show(t.get("name")), format!("expected an analysis name; valid analyses: {}", valid.join(", "))))?;
                (n.trim().to_string(), t)
            }
            other => return Err(err(&key, other, "expected an analysis name or a table with name, id, options, seeds".into())),
        };
        let raw_id = table.get("id").and_then(Value::as_str).map(|s| s.trim().to_string()).unwrap_or_else(|| name.clone());
        if !only.is_empty() && !only.contains(&raw_id) {
            continue;
        }
        let entry = analysis::find(&name).map_err(|_| err(&format!("{key}.name"), &name, format!("unknown analysis; valid analyses: {}", valid.join(", "))))?;
        let id = match table.get("id") {
            None => name.clone(),
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(other) => return Err(err(&format!("{key}.id"), other, "expected a non-empty string".into())),
        };
        if let Some(prev) = out.iter().position(|o| o.id == id) {
            return Err(err(&key, &id, format!("duplicate cells: analyses[{prev}] has the same id; give one a distinct `id`")));
        }
        let mut options = (entry.defaults)();
        let obj = options.as_object_mut().ok_or_else(|| anyhow!("analysis {name}: default options are not a table"))?;
        for (j, (k, val)) in data.iter().enumerate() {
            if obj.contains_key(k) {
                obj.insert(k.clone(), val.clone());
                data_used[j] = true;
            }
        }
        match table.get("options") {
            None => {}
            Some(Value::Object(given)) => {
                for (k, val) in given {
                    if k == "seed" {
                        return Err(err(&format!("{key}.options.seed"), val, "seeds are set by `seeds` (top level or per analysis)".into()));
                    }
                    if !obj.contains_key(k) {
                        let keys: Vec<&String> = obj.keys().filter(|k| *k != "seed").collect();
                        return Err(err(&format!("{key}.options.{k}"), k, format!("{name} has no such option; valid options: {keys:?}")));
                    }
                    obj.insert(k.clone(), val.clone());
                }
            }
            Some(other) => return Err(err(&format!("{key}.options"), other, "expected a table of options".into())),
        }
        (entry.check)(&options).map_err(|e| err(&format!("{key}.options"), &name, format!("{e:#}")))?;
        options.as_object_mut().expect("checked").remove("seed");
        let seeds = match table.get("seeds") {
            None => seeds.to_vec(),
            Some(s) => parse_seeds(s).map_err(|r| err(&format!("{key}.seeds"), s, r))?,
        };
        let models = parse_model_filter(table.get("models"), &key, model_names, err)?;
        out.push(StudyAnalysis { id, name, options, seeds, models });
    }
    if !only.is_empty() && out.is_empty() {
        return Err(err("analyses", &only.join(", "), "none of the selected analyses is in the study".into()));
    }
    if let Some((k, _)) = data.iter().zip(&data_used).filter(|_| only.is_empty()).find(|(_, used)| !**used).map(|(kv, u)| (kv.0, u)) {
        return Err(err(&format!("data.{k}"), k, "no analysis of the study has this option".into()));
    }
    Ok(out)
}

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub results: PathBuf,
    pub shard: Shard,
    /// Quantized-twin cache (None: quantize in memory).
    pub cache: Option<PathBuf>,
    pub quantize: QuantizeOptions,
}

/// Timing of one finished cell (its JSON sidecar). Loading the reference and the twin happens once
/// per process and model / twin: it is charged to the first cell that used them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CellRecord {
    pub key: String,
    pub file: String,
    pub model: String,
    pub spec: String,
    pub analysis: String,
    pub seed: u64,
    pub rows: usize,
    pub reference_load_s: f64,
    /// Loading the cached twin or quantizing it (see `twin_origin`).
    pub twin_s: f64,
    /// `reference`, `cached` or `quantized`.
    pub twin_origin: String,
    pub analysis_s: f64,
    /// Peak resident memory (kB) while the twin was loaded or quantized (and cached), charged like
    /// `twin_s` to the first cell that used it; `None` where the kernel has no per-phase peak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin_peak_rss_kb: Option<u64>,
    /// Peak resident memory (kB) during this cell's analysis, with the reference and twin held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_kb: Option<u64>,
    /// Bits per weight of the twin's quantized matrices as its quantization report gives them
    /// (group scales, act-order indices and GGML fallbacks included; 32 for the reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_weight: Option<f64>,
    /// Size and XXH3-128 of the parquet file, checked before the cell is trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<crate::integrity::FileDigest>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub ran: Vec<CellRecord>,
    pub skipped: usize,
    pub failed: Vec<(String, String)>,
    pub seconds: f64,
    /// Peak resident memory of the process (VmHWM), kB.
    pub peak_rss_kb: Option<u64>,
}

/// Peak resident memory of this process in kB (`VmHWM` in /proc/self/status), where available.
pub fn peak_rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Starts a new peak for [`peak_rss_kb`] at the current resident size (Linux: writing 5 to
/// /proc/self/clear_refs), so that each phase of a run reports its own peak. False where the
/// kernel does not allow it; the peak then stays the process's.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Runs the unfinished cells of `opts.shard`: per model the reference is loaded once, per
/// (model, spec) the twin is loaded (or quantized) once and dropped before the next. A failing
/// cell is reported and the run goes on; the caller decides the exit status from `failed`.
pub fn run(study: &Study, opts: &RunOptions) -> Result<RunSummary> {
    run_cells(study, opts, &|_| true)
}

/// [`run`] restricted to the cells of the shard that `select` accepts (the CLI's --model, --quant
/// and --analysis filters).
pub fn run_cells(study: &Study, opts: &RunOptions, select: &dyn Fn(&Cell) -> bool) -> Result<RunSummary> {
    let t0 = Instant::now();
    let mine: Vec<Cell> = study.shard_cells(opts.shard).into_iter().filter(|c| select(c)).collect();
    let mut pending: Vec<&Cell> = Vec::new();
    for c in &mine {
        match c.state(&opts.results) {
            CellState::Done => {}
            CellState::Missing => pending.push(c),
            CellState::Damaged(why) => {
                eprintln!("qi: result cell {} cannot be trusted ({why}); running it again", c.stem);
                pending.push(c);
            }
        }
    }
    let mut summary = RunSummary { skipped: mine.len() - pending.len(), ..Default::default() };
    // fail before any work on a missing local model
    for mi in pending.iter().map(|c| c.model).collect::<std::collections::BTreeSet<_>>() {
        let m = &study.models[mi];
        if is_local(&m.source) && !Path::new(&m.resolved).exists() {
            return Err(QiError::invalid(format!("{}: model", study.file.display()), &m.source, format!("{} does not exist", m.resolved)).into());
        }
    }
    std::fs::create_dir_all(&opts.results).with_context(|| format!("cannot create the results directory {}", opts.results.display()))?;
    let overall = crate::progress::bar(pending.len() as u64, "study");
    let mut run_peak: Option<u64> = None;
    let mut i = 0;
    while i < pending.len() {
        let mi = pending[i].model;
        let model_end = i + pending[i..].iter().take_while(|c| c.model == mi).count();
        let m = &study.models[mi];
        let t = Instant::now();
        let reference = match crate::load_model(&m.resolved) {
            Ok(r) => r,
            Err(e) => {
                for c in &pending[i..model_end] {
                    summary.failed.push((c.stem.clone(), format!("loading {}: {e:#}", m.resolved)));
                }
                overall.inc((model_end - i) as u64);
                i = model_end;
                continue;
            }
        };
        let mut reference_load_s = t.elapsed().as_secs_f64();
        // the reference is never changed while its cells run
        let memo = crate::analysis::ReferenceMemo::default();
        while i < model_end {
            let g = pending[i].group;
            let group_end = i + pending[i..model_end].iter().take_while(|c| c.group == g).count();
            let spec = pending[i].spec.clone();
            let t = Instant::now();
            run_peak = run_peak.max(peak_rss_kb());
            let per_phase = reset_peak_rss();
            let twin = if spec == QuantSpec::None {
                Ok((Vec::new(), "reference", 32.0))
            } else {
                crate::twin_cache::quantize_cached(&reference, &spec, &opts.quantize, opts.cache.as_deref()).map(|(twin, report, origin)| {
                    let o = match origin {
                        crate::twin_cache::TwinOrigin::Cached(_) => "cached",
                        crate::twin_cache::TwinOrigin::Quantized => "quantized",
                    };
                    let bits = crate::quantize::twin_bits_per_weight(&reference, &spec, report.as_ref());
                    (vec![(spec.clone(), twin)], o, bits)
                })
            };
            let mut twin_s = t.elapsed().as_secs_f64();
            let mut twin_peak = peak_rss_kb().filter(|_| per_phase);
            let (twins, origin, bits_per_weight) = match twin {
                Ok(x) => x,
                Err(e) => {
                    for c in &pending[i..group_end] {
                        summary.failed.push((c.stem.clone(), format!("quantizing with {spec}: {e:#}")));
                    }
                    overall.inc((group_end - i) as u64);
                    i = group_end;
                    continue;
                }
            };
            for cell in &pending[i..group_end] {
                let a = &study.analyses[cell.analysis];
                let job = crate::progress::bar(1, &format!("{} {} {} s{}", m.name, cell.spec, a.id, cell.seed));
                let mut rec = CellRecord {
                    key: cell.key.clone(),
                    file: cell.parquet(&opts.results).file_name().unwrap_or_default().to_string_lossy().to_string(),
                    model: m.name.clone(),
                    spec: cell.spec.to_string(),
                    analysis: a.id.clone(),
                    seed: cell.seed,
                    rows: 0,
                    reference_load_s,
                    twin_s,
                    twin_origin: origin.to_string(),
                    analysis_s: 0.0,
                    twin_peak_rss_kb: twin_peak,
                    peak_rss_kb: None,
                    bits_per_weight: Some(bits_per_weight),
                    parquet: None,
                };
                run_peak = run_peak.max(peak_rss_kb());
                let per_phase = reset_peak_rss();
                match run_cell(study, cell, &reference, &memo, &twins, &opts.results, &mut rec, per_phase) {
                    Ok(()) => {
                        (reference_load_s, twin_s, twin_peak) = (0.0, 0.0, None);
                        summary.ran.push(rec);
                    }
                    Err(e) => summary.failed.push((cell.stem.clone(), format!("{e:#}"))),
                }
                job.finish_and_clear();
                overall.inc(1);
            }
            drop(twins); // one twin in memory at a time
            i = group_end;
        }
    }
    overall.finish_and_clear();
    summary.seconds = t0.elapsed().as_secs_f64();
    // the phases reset the kernel's peak: the run's is the largest of theirs
    summary.peak_rss_kb = run_peak.max(peak_rss_kb());
    Ok(summary)
}

/// Runs one cell, fills in `rec` and writes it as the sidecar, then (atomically) the parquet file.
#[allow(clippy::too_many_arguments)]
fn run_cell(study: &Study, cell: &Cell, reference: &crate::HookedTransformer, memo: &crate::analysis::ReferenceMemo, twins: &[(QuantSpec, crate::HookedTransformer)], results: &Path, rec: &mut CellRecord, per_phase: bool) -> Result<()> {
    let m = &study.models[cell.model];
    let a = &study.analyses[cell.analysis];
    let entry = analysis::find(&a.name)?;
    let mut cmp = Comparison::new(m.name.clone(), reference, twins)?;
    // the reference rows are the reference cell's (same inputs, same seed): a per-model analysis
    // need not compute them again
    cmp.reference_rows = cell.spec == QuantSpec::None || !entry.per_model;
    cmp.reference_memo = Some(memo);
    let t = Instant::now();
    let mut tidy: Tidy = analysis::run_seeds(&entry, &cmp, &a.options, &[cell.seed]).with_context(|| format!("{} on {} ({}, seed {})", a.id, m.name, cell.spec, cell.seed))?;
    rec.analysis_s = t.elapsed().as_secs_f64();
    rec.peak_rss_kb = peak_rss_kb().filter(|_| per_phase);
    if cell.spec != QuantSpec::None {
        tidy.rows.retain(|r| r.spec != "none");
    }
    let mut df = tidy.to_frame()?;
    df.insert_column(1, Column::new("analysis".into(), vec![a.id.clone(); df.height()]))?;
    rec.rows = df.height();
    // the parquet file first, the sidecar with its digest last: the sidecar marks completion
    let _ = std::fs::remove_file(cell.sidecar(results));
    tidy::write_parquet(&df, &cell.parquet(results))?;
    rec.parquet = Some(crate::integrity::digest(&cell.parquet(results))?);
    crate::io::save_text(&serde_json::to_string_pretty(rec)?, &cell.sidecar(results))
}

/// The finished cells' parquet files in `results` (hidden temporary files are not results).
pub fn result_files(results: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(results).map_err(|e| anyhow!("{}: cannot read the results directory ({e})", results.display()))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet") && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    Ok(files)
}

/// The result files of `results` split into those that check out against their sidecars
/// ([`check_cell`]) and those that do not, each with what is wrong.
pub fn checked_result_files(results: &Path) -> Result<(Vec<PathBuf>, Vec<(PathBuf, String)>)> {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for p in result_files(results)? {
        match check_cell(&p, &p.with_extension("json")) {
            Ok(_) => good.push(p),
            Err(why) => bad.push((p, why)),
        }
    }
    Ok((good, bad))
}

/// Every result file of `results` in one frame (file-name order; columns missing in a file are
/// null in its rows; see the module docs for the columns). Each file is checked against its
/// sidecar first; any that does not check out is an error naming it ([`collect_lenient`] skips
/// them instead).
pub fn collect(results: &Path) -> Result<DataFrame> {
    let (df, bad) = collect_lenient(results)?;
    if !bad.is_empty() {
        let list: Vec<String> = bad.iter().map(|(_, why)| why.clone()).collect();
        bail!("{} result cell(s) in {} cannot be trusted (re-run the study to redo them): {}", bad.len(), results.display(), list.join("; "));
    }
    Ok(df)
}

/// The finished cells of `study` in `results`, in one frame (as [`collect`]): only files that belong
/// to a cell of the study under its current key, so results made under an older key (another
/// quantizer or data version) never mix in. A damaged cell is an error naming it; cells not run
/// yet are absent.
pub fn collect_study(study: &Study, results: &Path) -> Result<DataFrame> {
    let mut frames = Vec::new();
    let mut bad = Vec::new();
    for c in study.cells() {
        match c.state(results) {
            CellState::Done => frames.push(tidy::read_parquet(&c.parquet(results))?),
            CellState::Missing => {}
            CellState::Damaged(why) => bad.push(why),
        }
    }
    if !bad.is_empty() {
        bail!("{} result cell(s) of study {} in {} cannot be trusted (re-run the study to redo them): {}", bad.len(), study.name, results.display(), bad.join("; "));
    }
    if frames.is_empty() {
        return Err(QiError::invalid("results directory", results.display(), format!("holds no finished cell of study {}", study.name)).into());
    }
    concat_diagonal(&frames)
}

/// Result files in `results` that belong to no cell of `study` (made under an older key, or by
/// another study); [`collect`] would include them, [`collect_study`] does not.
pub fn orphans(study: &Study, results: &Path) -> Result<Vec<PathBuf>> {
    let mine: std::collections::HashSet<PathBuf> = study.cells().iter().map(|c| c.parquet(results)).collect();
    Ok(result_files(results)?.into_iter().filter(|p| !mine.contains(p)).collect())
}

/// [`collect`] over the cells that check out, and the ones left out with what is wrong with each.
pub fn collect_lenient(results: &Path) -> Result<(DataFrame, Vec<(PathBuf, String)>)> {
    let (files, mut bad) = checked_result_files(results)?;
    let mut frames = Vec::new();
    for p in files {
        match tidy::read_parquet(&p) {
            Ok(df) => frames.push(df),
            Err(e) => bad.push((p.clone(), format!("{}: {e:#}", p.display()))),
        }
    }
    if frames.is_empty() {
        return Err(QiError::invalid("results directory", results.display(), format!("holds no finished cells that check out (*.parquet with their sidecars; {} left out)", bad.len())).into());
    }
    Ok((concat_diagonal(&frames)?, bad))
}

/// Records a digest for cells written before qi recorded them: a cell is adopted only when its
/// sidecar parses, its parquet file reads and holds the number of rows the sidecar records.
/// Returns (adopted, refused with why); cells that already have a digest are left alone.
pub fn adopt_unrecorded(results: &Path) -> Result<(usize, Vec<(PathBuf, String)>)> {
    let (mut n, mut refused) = (0, Vec::new());
    for p in result_files(results)? {
        let side = p.with_extension("json");
        let Ok(text) = std::fs::read_to_string(&side) else {
            refused.push((p, format!("{}: no sidecar", side.display())));
            continue;
        };
        let mut rec: CellRecord = match serde_json::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                refused.push((p, format!("{}: unreadable sidecar ({e})", side.display())));
                continue;
            }
        };
        if rec.parquet.is_some() {
            continue;
        }
        match tidy::read_parquet(&p) {
            Ok(df) if df.height() == rec.rows => {
                rec.parquet = Some(crate::integrity::digest(&p)?);
                crate::io::save_text(&serde_json::to_string_pretty(&rec)?, &side)?;
                n += 1;
            }
            Ok(df) => refused.push((p.clone(), format!("{}: {} rows, the sidecar records {}", p.display(), df.height(), rec.rows))),
            Err(e) => refused.push((p.clone(), format!("{}: {e:#}", p.display()))),
        }
    }
    Ok((n, refused))
}

/// Concatenates frames whose columns differ: the union of columns in tidy order (leading ids,
/// extra labels in first-use order, then metric … seed), missing ones null; a column with
/// different types in different frames becomes Float64 when all are numeric, else String.
pub fn concat_diagonal(frames: &[DataFrame]) -> Result<DataFrame> {
    const LEADING: [&str; 7] = ["model", "analysis", "method", "spec", "bits", "layer", "head"];
    const TRAILING: [&str; 6] = ["metric", "value", "ci_low", "ci_high", "n", "seed"];
    let mut names: Vec<String> = Vec::new();
    let mut types: Vec<DataType> = Vec::new();
    for df in frames {
        for c in df.columns() {
            let (n, t) = (c.name().to_string(), c.dtype().clone());
            match names.iter().position(|x| *x == n) {
                None => {
                    names.push(n);
                    types.push(t);
                }
                Some(k) if types[k] != t => {
                    types[k] = if types[k].is_primitive_numeric() && t.is_primitive_numeric() { DataType::Float64 } else { DataType::String };
                }
                _ => {}
            }
        }
    }
    let rank = |n: &str| match (LEADING.iter().position(|x| *x == n), TRAILING.iter().position(|x| *x == n)) {
        (Some(p), _) => p,
        (None, Some(p)) => 1000 + p,
        _ => 500,
    };
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by_key(|&k| (rank(&names[k]), k));
    let mut out: Option<DataFrame> = None;
    for df in frames {
        let cols: Vec<Column> = order
            .iter()
            .map(|&k| match tidy::column(&df, &names[k]) {
                Ok(c) if *c.dtype() == types[k] => Ok(c.clone()),
                Ok(c) => Ok(c.cast(&types[k])?),
                Err(_) => Ok(Column::full_null(names[k].as_str().into(), df.height(), &types[k])),
            })
            .collect::<Result<_>>()?;
        let df = DataFrame::new_infer_height(cols)?;
        match &mut out {
            None => out = Some(df),
            Some(o) => {
                o.vstack_mut(&df)?;
            }
        }
    }
    let mut out = out.ok_or_else(|| anyhow!("no frames to concatenate"))?;
    out.align_chunks_par();
    Ok(out)
}

/// Collects `results` into `out` (parquet, written atomically); returns the frame.
pub fn collect_to(results: &Path, out: &Path) -> Result<DataFrame> {
    let df = collect(results)?;
    tidy::write_parquet(&df, out)?;
    Ok(df)
}
/// One summary column against model size, as a tidy frame for [`crate::analysis::plots::lines`]:
/// `params` (the summary's size column), `spec`, `value` = column `metric`, and `ci_low`/`ci_high`
/// from `{metric}_ci` when the summary has it, clamped to `range` (a survival share cannot leave
/// [0, 1], whatever a t-interval over few seeds says). Rows without a size or a value are left out;
/// the reference (`none`) is left out unless `with_reference`.
pub fn against_size(summary: &DataFrame, metric: &str, range: Option<(f64, f64)>, with_reference: bool) -> Result<DataFrame> {
    let (specs, params, values) = (tidy::str_values(summary, "spec")?, tidy::f64_values(summary, "params")?, tidy::f64_values(summary, metric)?);
    let ci = match tidy::column(summary, &format!("{metric}_ci")) {
        Ok(_) => Some(tidy::f64_values(summary, &format!("{metric}_ci"))?),
        Err(_) => None,
    };
    let clamp = |x: f64| range.map_or(x, |(lo, hi)| x.clamp(lo, hi));
    let keep: Vec<usize> = (0..specs.len()).filter(|&i| params[i].is_finite() && values[i].is_finite() && (with_reference || specs[i] != "none")).collect();
    let mut cols = vec![
        Column::new("params".into(), keep.iter().map(|&i| params[i]).collect::<Vec<_>>()),
        Column::new("spec".into(), keep.iter().map(|&i| specs[i].clone()).collect::<Vec<_>>()),
        Column::new("value".into(), keep.iter().map(|&i| values[i]).collect::<Vec<_>>()),
    ];
    if let Some(ci) = ci {
        let half = |i: usize| if ci[i].is_finite() { ci[i] } else { 0.0 };
        cols.push(Column::new("ci_low".into(), keep.iter().map(|&i| clamp(values[i] - half(i))).collect::<Vec<_>>()));
        cols.push(Column::new("ci_high".into(), keep.iter().map(|&i| clamp(values[i] + half(i))).collect::<Vec<_>>()));
    }
    Ok(DataFrame::new_infer_height(cols)?)
}

/// The summary in the original study's shape, one row per (model, spec): `model`, `params`
/// (from `params`, by model name; null when absent), `method`, `spec`, `bits`, `perplexity`,
/// `survival` (induction heads detected by the stripe score ≥ threshold in the reference that stay
/// detected in the twin), `survival_sigma` (mean + 2σ rule), `survival_original` (the original
/// study's rule), `score_r` (Pearson r of all heads' stripe scores, reference vs twin),
/// `feature_survival` (share of the SAE's active features in the `survived` category, from the
/// `features` analysis), `attention_jsd` (Jensen–Shannon divergence of the twin's attention
/// patterns from the reference's, mean over heads, from the `attention` analysis), `lens_kl`
/// (KL of the reference's logit-lens distribution to the twin's, mean over layers, all prompts,
/// from the `logit-lens` analysis), the 95% t-CI half-widths over seeds `*_ci` (each seed's
/// mean over heads or layers is one sample) and the number of seeds `n_seeds`, and
/// `perplexity_ratio` (perplexity over the same model's reference perplexity).
/// Built from a collected frame ([`collect`]) with the `perplexity`, `induction` and
/// (optionally) `features`, `attention` and `logit-lens` analyses; a metric that is missing is null.
pub fn summary(df: &DataFrame, params: &std::collections::BTreeMap<String, usize>) -> Result<DataFrame> {
    use std::collections::BTreeMap;
    let col = |c: &str| -> Result<Vec<String>> {
        if tidy::column(df, c).is_ok() {
            tidy::str_values(df, c)
        } else {
            Ok(vec![String::new(); df.height()])
        }
    };
    let (models, specs, metrics, scores, rules) = (col("model")?, col("spec")?, col("metric")?, col("score")?, col("rule")?);
    let categories = col("category")?;
    let methods = col("method")?;
    let bits = tidy::f64_values(df, "bits")?;
    let values = tidy::f64_values(df, "value")?;
    let seeds = if tidy::column(df, "seed").is_ok() { tidy::f64_values(df, "seed")? } else { vec![f64::NAN; df.height()] };
    // (model, spec) → metric name → seed → values (heads or layers of one seed are averaged
    // first, so a seed is one sample of the CI)
    type BySeed = BTreeMap<u64, Vec<f64>>;
    let mut groups: Vec<((String, String), (String, f64, BTreeMap<&str, BySeed>))> = Vec::new();
    for i in 0..df.height() {
        let key = match (metrics[i].as_str(), scores[i].as_str(), rules[i].as_str()) {
            ("perplexity", _, _) => "perplexity",
            ("survival", "stripe", "threshold") => "survival",
            ("survival", "stripe", "sigma") => "survival_sigma",
            ("survival", "stripe", "original") => "survival_original",
            ("pearson_r", "stripe", _) => "score_r",
            ("share", _, _) if categories[i] == "survived" => "feature_survival",
            ("js_divergence", _, _) => "attention_jsd",
            ("kl_ref_quant", _, _) if categories[i] == "all" => "lens_kl",
            _ => continue,
        };
        let k = (models[i].clone(), specs[i].clone());
        let pos = match groups.iter().position(|g| g.0 == k) {
            Some(p) => p,
            None => {
                groups.push((k, (methods[i].clone(), bits[i], BTreeMap::new())));
                groups.len() - 1
            }
        };
        // a row without a seed is its own sample
        let seed = if seeds[i].is_finite() { seeds[i] as u64 } else { u64::MAX - i as u64 };
        groups[pos].1 .2.entry(key).or_default().entry(seed).or_default().push(values[i]);
    }
    // one value per seed: the mean of that seed's finite values
    let mut groups: Vec<((String, String), (String, f64, BTreeMap<&str, Vec<f64>>))> = groups
        .into_iter()
        .map(|(k, (method, bits, by_metric))| {
            let per_seed = by_metric
                .into_iter()
                .map(|(m, by_seed)| {
                    let v: Vec<f64> = by_seed
                        .into_values()
                        .map(|v| v.into_iter().filter(|x| x.is_finite()).collect::<Vec<f64>>())
                        .map(|v| if v.is_empty() { f64::NAN } else { crate::metrics::mean(&v) })
                        .collect();
                    (m, v)
                })
                .collect();
            (k, (method, bits, per_seed))
        })
        .collect();
    // per model: the reference first, then by method and decreasing bits
    groups.sort_by(|a, b| {
        (&a.0 .0, a.0 .1 != "none", &a.1 .0).cmp(&(&b.0 .0, b.0 .1 != "none", &b.1 .0)).then(b.1 .1.total_cmp(&a.1 .1)).then(a.0 .1.cmp(&b.0 .1))
    });
    let names = ["perplexity", "survival", "survival_sigma", "survival_original", "score_r", "feature_survival", "attention_jsd", "lens_kl"];
    let mut cols: Vec<Column> = vec![
        Column::new("model".into(), groups.iter().map(|g| g.0 .0.clone()).collect::<Vec<_>>()),
        Column::new("params".into(), groups.iter().map(|g| params.get(&g.0 .0).map(|&p| p as u64)).collect::<Vec<_>>()),
        Column::new("method".into(), groups.iter().map(|g| g.1 .0.clone()).collect::<Vec<_>>()),
        Column::new("spec".into(), groups.iter().map(|g| g.0 .1.clone()).collect::<Vec<_>>()),
        Column::new("bits".into(), groups.iter().map(|g| g.1 .1).collect::<Vec<_>>()),
    ];
    for name in names {
        let vals = |g: &BTreeMap<&str, Vec<f64>>| g.get(name).map(|v| v.iter().copied().filter(|x| x.is_finite()).collect::<Vec<f64>>());
        cols.push(Column::new(name.into(), groups.iter().map(|g| vals(&g.1 .2).filter(|v| !v.is_empty()).map(|v| crate::metrics::mean(&v))).collect::<Vec<_>>()));
        if name != "perplexity" {
            cols.push(Column::new(
                format!("{name}_ci").into(),
                groups.iter().map(|g| vals(&g.1 .2).filter(|v| v.len() > 1).map(|v| crate::metrics::t_ci95_half_width(&v))).collect::<Vec<_>>(),
            ));
        }
    }
    cols.push(Column::new("n_seeds".into(), groups.iter().map(|g| g.1 .2.get("survival").map(|v| v.len() as u64)).collect::<Vec<_>>()));
    // perplexity relative to the same model's reference: comparable across model sizes
    let ppl = |g: &(_, (_, _, BTreeMap<&str, Vec<f64>>))| g.1 .2.get("perplexity").and_then(|v| v.first().copied());
    let ratio: Vec<Option<f64>> = groups
        .iter()
        .map(|g| {
            let reference = groups.iter().find(|r| r.0 .0 == g.0 .0 && r.0 .1 == "none").and_then(ppl);
            Some(ppl(g)? / reference?)
        })
        .collect();
    cols.push(Column::new("perplexity_ratio".into(), ratio));
    Ok(DataFrame::new_infer_height(cols)?)
}

