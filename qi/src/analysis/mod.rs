//! Analyses: what quantization does to a mechanism, for a reference model and its quantized twins
//! on identical tokens.
//!
//! Every analysis has the same shape: a function taking a [`Comparison`] (the reference model and
//! its twins, labelled by QuantSpec), the inputs and a serde options struct with defaults and a
//! seed, returning a [`Tidy`] table (→ polars DataFrame, see [`tidy`]); and figure builders that
//! take that DataFrame. Padding positions never enter a metric.
pub mod perplexity;
pub mod calibration;
pub mod features;
pub mod prune_overlap;
pub mod sae_compare;
pub mod neurons;
pub mod salient;
pub mod activations;
pub mod attention;
pub mod ioi;
pub mod logit_lens;
pub mod ablation;
pub mod attribution;
pub mod induction;
pub mod patching;
pub mod plots;
pub mod tidy;

pub use tidy::{Label, Row, Tidy};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::quant::QuantSpec;
use crate::{HookedTransformer, QiError};
use anyhow::Result;

/// A quantized twin of the reference model.
#[derive(Clone, Copy)]
pub struct Twin<'a> {
    pub spec: &'a QuantSpec,
    pub model: &'a HookedTransformer,
}

/// The reference model and its quantized twins, checked to be comparable (same architecture,
/// shapes and vocabulary).
#[derive(Clone)]
pub struct Comparison<'a> {
    /// Name used in the `model` column (e.g. `SmolLM2-135M-Instruct`).
    pub name: String,
    pub reference: &'a HookedTransformer,
    pub twins: Vec<Twin<'a>>,
    /// Whether [`Comparison::all`] lists the reference. A study clears it for the twin cells of
    /// [`Analysis::PER_MODEL`] analyses, whose reference rows come from the reference cell.
    pub reference_rows: bool,
    /// Where an analysis may keep what it computed on the reference for the next comparison with
    /// the same reference and options (a study's twin cells each compare against it). Only set
    /// by a caller that never changes the reference while the memo lives.
    pub reference_memo: Option<&'a ReferenceMemo>,
}

/// Results computed on one reference model, by key (the analysis and its options, seed
/// included): a study keeps one per loaded reference so that its twin cells do not recompute the
/// reference's side of a comparison.
#[derive(Default)]
pub struct ReferenceMemo {
    entries: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<dyn std::any::Any + Send + Sync>>>,
}

impl ReferenceMemo {
    /// The value stored under `key`, or `compute()`'s, stored (an error is not stored).
    pub fn get_or_compute<T: Clone + Send + Sync + 'static>(&self, key: &str, compute: impl FnOnce() -> Result<T>) -> Result<T> {
        if let Some(v) = self.entries.lock().unwrap_or_else(|p| p.into_inner()).get(key).and_then(|v| v.downcast_ref::<T>()) {
            return Ok(v.clone());
        }
        let v = compute()?;
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), std::sync::Arc::new(v.clone()));
        Ok(v)
    }

    /// How many results are stored.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> Comparison<'a> {
    /// Errors name the twin and the first field that differs.
    pub fn new(name: impl Into<String>, reference: &'a HookedTransformer, twins: &'a [(QuantSpec, HookedTransformer)]) -> Result<Self> {
        for (spec, m) in twins {
            reference.check_comparable(m, &spec.to_string())?;
        }
        Ok(Comparison { name: name.into(), reference, twins: twins.iter().map(|(spec, model)| Twin { spec, model }).collect(), reference_rows: true, reference_memo: None })
    }

    /// The reference first (spec `none`, unless `reference_rows` is off), then each twin.
    pub fn all(&self) -> Vec<Twin<'a>> {
        let mut v = if self.reference_rows { vec![Twin { spec: &REFERENCE, model: self.reference }] } else { vec![] };
        v.extend(self.twins.iter().copied());
        v
    }

    pub fn n_layers(&self) -> usize {
        self.reference.cfg.n_layers
    }
    pub fn n_heads(&self) -> usize {
        self.reference.cfg.n_heads
    }

    /// Errors unless `layer` (and `head`, when given) exist in the model.
    pub fn check_layer_head(&self, layer: usize, head: Option<usize>) -> Result<()> {
        let cfg = &self.reference.cfg;
        if layer >= cfg.n_layers {
            return Err(QiError::invalid("layer", layer, format!("the model has {} layers (0..{})", cfg.n_layers, cfg.n_layers - 1)).into());
        }
        if let Some(h) = head {
            if h >= cfg.n_heads {
                return Err(QiError::invalid("head", h, format!("the model has {} heads per layer (0..{})", cfg.n_heads, cfg.n_heads - 1)).into());
            }
        }
        Ok(())
    }
}

/// The spec of the reference rows.
pub static REFERENCE: QuantSpec = QuantSpec::None;

pub use crate::batch::{batches, valid_indices, valid_rows};

/// A pad id for batching ([`HookedTransformer::pad_id`]).
pub fn pad_id(model: &HookedTransformer) -> u32 {
    model.pad_id()
}

pub use crate::data::{special_ids, text_windows, training_windows};

/// An analysis reachable by name from the CLI (`qi analyze NAME`) and from study files: options
/// as serde JSON with defaults, inputs built from the options (data source, sizes, `seed`).
pub trait Analysis {
    /// CLI / study name, e.g. `induction`.
    const NAME: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// Options; must have a `seed` field (set per seed by multi-seed runs).
    type Options: Serialize + DeserializeOwned + Default + Clone;
    /// One line per option: `key: meaning`, for `--help`.
    fn options_doc() -> &'static str;
    /// True when each model's rows depend only on that model and the inputs (never on the
    /// reference's outputs), and the analysis runs every model through [`Comparison::all`]: then a
    /// study's twin cell need not run the reference again.
    const PER_MODEL: bool = false;
    /// Runs the analysis with inputs built from `opts`.
    fn run(cmp: &Comparison, opts: &Self::Options) -> Result<Tidy>;
}

/// A type-erased [`Analysis`] (see [`registry`]).
pub struct Entry {
    pub name: &'static str,
    pub about: &'static str,
    pub options_doc: &'static str,
    /// [`Analysis::PER_MODEL`].
    pub per_model: bool,
    /// The default options as JSON.
    pub defaults: fn() -> serde_json::Value,
    /// Checks options given as JSON without running (so callers fail before loading models).
    pub check: fn(&serde_json::Value) -> Result<()>,
    /// Runs with options given as JSON (missing keys take defaults; unknown keys are errors).
    pub run: fn(&Comparison, &serde_json::Value) -> Result<Tidy>,
}

impl Entry {
    pub fn of<A: Analysis>() -> Entry {
        Entry {
            name: A::NAME,
            about: A::ABOUT,
            options_doc: A::options_doc(),
            per_model: A::PER_MODEL,
            defaults: || serde_json::to_value(A::Options::default()).expect("options serialize"),
            check: |v| options_from_json::<A::Options>(A::NAME, v).map(|_| ()),
            run: |cmp, v| {
                let opts: A::Options = options_from_json::<A::Options>(A::NAME, v)?;
                A::run(cmp, &opts)
            },
        }
    }
}

/// A layer list as a JSON array, one number, or text `"0,7,15"` (what `--set layers=0,7,15`
/// gives); every analysis option that lists layers deserializes through it.
pub(crate) fn layer_list<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<usize>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum L {
        List(Vec<usize>),
        One(usize),
        Text(String),
    }
    match <L as serde::Deserialize>::deserialize(d)? {
        L::List(v) => Ok(v),
        L::One(l) => Ok(vec![l]),
        L::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.parse::<usize>().map_err(|_| serde::de::Error::custom(format!("layers: '{t}' is not a layer index (expected e.g. \"0,7,15\")"))))
            .collect(),
    }
}

/// Options from JSON: missing keys take the defaults, unknown keys are an error naming the
/// analysis and the valid keys.
pub fn options_from_json<O: Serialize + DeserializeOwned + Default>(analysis: &str, v: &serde_json::Value) -> Result<O> {
    let mut merged = serde_json::to_value(O::default())?;
    let (Some(m), Some(given)) = (merged.as_object_mut(), v.as_object()) else {
        return Err(QiError::invalid(format!("{analysis} options"), v, "expected a JSON object").into());
    };
    for (k, val) in given {
        if !m.contains_key(k) {
            let valid: Vec<&String> = m.keys().collect();
            return Err(QiError::invalid(format!("{analysis} option"), k, format!("unknown option; valid options: {valid:?}")).into());
        }
        m.insert(k.clone(), val.clone());
    }
    serde_json::from_value(merged).map_err(|e| QiError::invalid(format!("{analysis} options"), v, e.to_string()).into())
}

/// Every analysis, in the order of the issue list.
pub fn registry() -> Vec<Entry> {
    vec![
        Entry::of::<perplexity::Perplexity>(),
        Entry::of::<features::Features>(),
        Entry::of::<prune_overlap::PruneOverlap>(),
        Entry::of::<sae_compare::SaeCompare>(),
        Entry::of::<neurons::Neurons>(),
        Entry::of::<salient::SalientNeurons>(),
        Entry::of::<calibration::Calibration>(),
        Entry::of::<activations::ActivationSimilarity>(),
        Entry::of::<attention::AttentionPatterns>(),
        Entry::of::<logit_lens::LogitLens>(),
        Entry::of::<ioi::Ioi>(),
        Entry::of::<induction::Induction>(),
        Entry::of::<ablation::HeadAblation>(),
        Entry::of::<patching::Patching>(),
        Entry::of::<attribution::Attribution>(),
    ]
}

/// The registry entry called `name`; the error lists the valid names.
pub fn find(name: &str) -> Result<Entry> {
    let all = registry();
    let names: Vec<&str> = all.iter().map(|e| e.name).collect();
    let names = names.join(", ");
    // `logit_lens` finds `logit-lens`: shells and TOML keys make either spelling natural
    let wanted = name.replace('_', "-");
    all.into_iter().find(|e| e.name == wanted).ok_or_else(|| QiError::invalid("analysis", name, format!("valid analyses: {names}")).into())
}

/// Runs `entry` once per seed (each overrides the options' `seed`) and concatenates the rows,
/// each tagged with its seed.
pub fn run_seeds(entry: &Entry, cmp: &Comparison, options: &serde_json::Value, seeds: &[u64]) -> Result<Tidy> {
    let mut all = Tidy::new(cmp.name.clone());
    for &s in seeds {
        let mut o = options.clone();
        if let Some(m) = o.as_object_mut() {
            m.insert("seed".into(), serde_json::json!(s));
        }
        let mut t = (entry.run)(cmp, &o)?;
        for r in &mut t.rows {
            r.seed = Some(s);
        }
        all.extend(t);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_memo_computes_once_per_key_and_keeps_no_error() {
        let memo = ReferenceMemo::default();
        let calls = std::cell::Cell::new(0);
        let f = |v: u32| {
            calls.set(calls.get() + 1);
            Ok(v)
        };
        assert_eq!(memo.get_or_compute("a", || f(1)).unwrap(), 1);
        assert_eq!(memo.get_or_compute("a", || f(2)).unwrap(), 1, "the stored value, not a new one");
        assert_eq!(memo.get_or_compute("b", || f(3)).unwrap(), 3);
        assert_eq!((calls.get(), memo.len()), (2, 2));
        assert!(memo.get_or_compute::<u32>("c", || anyhow::bail!("no")).is_err());
        assert_eq!(memo.get_or_compute("c", || f(4)).unwrap(), 4, "a failed computation is not stored");
    }

    #[test]
    fn layer_list_from_text_or_array() {
        let o: super::salient::SalientOptions = options_from_json("salient-neurons", &serde_json::json!({"layers": "0, 7,15"})).unwrap();
        assert_eq!(o.layers, vec![0, 7, 15]);
        let o: super::salient::SalientOptions = options_from_json("salient-neurons", &serde_json::json!({"layers": [2, 3]})).unwrap();
        assert_eq!(o.layers, vec![2, 3]);
        let o: super::salient::SalientOptions = options_from_json("salient-neurons", &serde_json::json!({"layers": 4})).unwrap();
        assert_eq!(o.layers, vec![4]);
        let e = options_from_json::<super::salient::SalientOptions>("salient-neurons", &serde_json::json!({"layers": "1,x"})).unwrap_err();
        assert!(format!("{e:#}").contains("layers"), "{e:#}");
        // the same for every analysis that lists layers
        let o: super::activations::ActivationOptions = options_from_json("activations", &serde_json::json!({"layers": "3,5"})).unwrap();
        assert_eq!(o.layers, vec![3, 5]);
        let o: super::patching::PatchingOptions = options_from_json("patching", &serde_json::json!({"candidate_layers": "16,17"})).unwrap();
        assert_eq!(o.candidate_layers, vec![16, 17]);
    }

    #[test]
    fn valid_rows_drop_padding() {
        use candle_core::Tensor;
        let dev = candle_core::Device::Cpu;
        let x = Tensor::arange(0f32, 12.0, &dev).unwrap().reshape((2, 3, 2)).unwrap();
        let mask = Tensor::new(&[[1u8, 1, 0], [1, 0, 0]], &dev).unwrap();
        let r = valid_rows(&x, &mask).unwrap();
        assert_eq!(r.to_vec2::<f32>().unwrap(), vec![vec![0., 1.], vec![2., 3.], vec![6., 7.]]);
    }

    #[derive(serde::Serialize, serde::Deserialize, Default, Clone, Debug)]
    #[serde(default)]
    struct Opts {
        n: usize,
        seed: u64,
    }

    #[test]
    fn options_merge_defaults_and_reject_unknown_keys() {
        let o: Opts = options_from_json("x", &serde_json::json!({"n": 3})).unwrap();
        assert_eq!((o.n, o.seed), (3, 0));
        let e = options_from_json::<Opts>("x", &serde_json::json!({"m": 3})).unwrap_err().to_string();
        assert!(e.contains("'m'") && e.contains("\"n\""), "{e}");
        assert!(options_from_json::<Opts>("x", &serde_json::json!({"n": "three"})).is_err());
    }
}
