//! [`QuantSpec`]: which quantizer, with which options, in one compact string form used everywhere
//! (CLI, notebooks, study files): `METHOD[:key=value,...]`.
//!
//! | method | keys (default) | meaning |
//! | --- | --- | --- |
//! | `none` | — | the f32 reference, untouched |
//! | `fp16`, `bf16` | — | round trip through half precision |
//! | `rtn` | `bits` (required, 2–8), `granularity` (`row`; `tensor`\|`row`\|`group`), `group` (none; `group=G` implies `granularity=group`), `sym` (`false`) | round to nearest on the min–max grid. Default = the GPTQ reference's RTN baseline: asymmetric, per row |
//! | `gptq` | `bits` (required), `group` (none = per row, `-1` also means none), `act_order` (`false`), `static_groups` (`false`), `sym` (`false`), `damp` (`0.01`), `block` (`128`), `true_sequential` (`false`), `samples` (`128`), `seqlen` (`2048`, capped later by the model's context), `data` (`c4`), `seed` (`0`) | GPTQ; defaults are IST-DASLab/gptq's command line: `--groupsize -1`, `--sym` off, `--percdamp .01`, `--act-order` off, `--static-groups` off, `--true-sequential` off, `--nsamples 128`, `--seed 0`, blocksize 128 |
//! | `awq` | `bits` (required), `group` (`128`), `sym` (`false`), `samples` (`128`), `seqlen` (`512`), `data` (`c4`), `seed` (`0`) | AWQ (model level); defaults as llm-awq's usual run: `q_group_size 128`, zero point on, 128 samples of 512 tokens (llm-awq calibrates on pile-val; `c4` is our default source) |
//! | `nf4`, `fp4` | `block` (`64`; one of 32, 64, …, 4096), `double_quant` (`false`) | bitsandbytes 4-bit; defaults as `BitsAndBytesConfig` (blocksize 64, `bnb_4bit_use_double_quant=False`) |
//! | `int8` | `threshold` (`6`) | LLM.int8 (outlier threshold on activations, as bitsandbytes) |
//! | `q4_0` `q4_1` `q5_0` `q5_1` `q8_0` | — | GGML block types (blocks of 32 along the input) |
//! | `q2_k` `q3_k` `q4_k` `q5_k` `q6_k` | `fallback` (`false`) | GGML k-quants (super-blocks of 256); with `fallback=true` a tensor whose rows they cannot hold gets llama.cpp's substitute type (q4_k → q5_0, q5_k → q5_1, q6_k → q8_0), otherwise it is an error |
//! | `w8a8` | — | int8 per-row weights and dynamic per-token int8 activations |
//! | `prune` | `sparsity` (required, in [0, 1)) | unstructured magnitude pruning |
//! | `twin` | `twin:PATH` (everything after the colon is the path) | not a quantizer: a model quantized elsewhere (a llama.cpp GGUF, an HF directory another tool exported), loaded from PATH and compared with the reference as a qi twin is |
//!
//! Parsing trims whitespace around tokens, accepts keys in any order and `true`/`false` for flags;
//! unknown methods or keys, duplicate keys and out-of-range values are errors listing what is valid.
//! [`Display`](std::fmt::Display) prints the canonical form: method, then required keys, then the
//! non-default keys in the order of the table; it parses back to an equal value. Serde uses the
//! same string.
use crate::QiError;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Grid granularity for RTN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One grid for the whole matrix.
    Tensor,
    /// One grid per output row (the reference's `perchannel=True`).
    Row,
    /// One grid per row and per run of `g` consecutive input columns.
    Group(usize),
}

/// Calibration text source for the calibrated methods (resolved by the model-level code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CalibData {
    C4,
    Wikitext2,
}

impl CalibData {
    pub const ALL: [CalibData; 2] = [CalibData::C4, CalibData::Wikitext2];
    pub fn name(self) -> &'static str {
        match self {
            CalibData::C4 => "c4",
            CalibData::Wikitext2 => "wikitext2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtnSpec {
    pub bits: u8,
    pub granularity: Granularity,
    pub sym: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GptqSpec {
    pub bits: u8,
    /// `None` = per-row grid (the reference's `--groupsize -1`).
    pub group: Option<usize>,
    pub act_order: bool,
    pub static_groups: bool,
    pub sym: bool,
    /// `percdamp`: fraction of the mean Hessian diagonal added to the diagonal.
    pub damp: f64,
    /// Lazy-batch block size (`blocksize`).
    pub block: usize,
    pub true_sequential: bool,
    pub samples: usize,
    pub seqlen: usize,
    pub data: CalibData,
    pub seed: u64,
}

impl GptqSpec {
    pub fn new(bits: u8) -> Self {
        GptqSpec {
            bits,
            group: None,
            act_order: false,
            static_groups: false,
            sym: false,
            damp: 0.01,
            block: 128,
            true_sequential: false,
            samples: 128,
            seqlen: 2048,
            data: CalibData::C4,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AwqSpec {
    pub bits: u8,
    /// `None` = per-row grid.
    pub group: Option<usize>,
    pub sym: bool,
    pub samples: usize,
    pub seqlen: usize,
    pub data: CalibData,
    pub seed: u64,
}

impl AwqSpec {
    pub fn new(bits: u8) -> Self {
        AwqSpec { bits, group: Some(128), sym: false, samples: 128, seqlen: 512, data: CalibData::C4, seed: 0 }
    }
}

/// Options of bitsandbytes' 4-bit types (NF4, FP4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bnb4Spec {
    /// Absmax block size over the flattened tensor.
    pub block: usize,
    /// Quantize the absmax values too (`compress_statistics`, blocks of 256, 8-bit dynamic map).
    pub double_quant: bool,
}

impl Default for Bnb4Spec {
    fn default() -> Self {
        Bnb4Spec { block: 64, double_quant: false }
    }
}

/// Block sizes bitsandbytes accepts for 4-bit quantization.
pub const BNB4_BLOCKS: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Spec {
    /// Activation magnitude at or above which an input feature is an outlier column.
    pub threshold: f64,
}

impl Default for Int8Spec {
    fn default() -> Self {
        Int8Spec { threshold: 6.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PruneSpec {
    pub sparsity: f64,
}

pub use super::ggml::{GgmlKind, GgmlSpec};

/// A quantization method with its options. See the module docs for the string form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum QuantSpec {
    None,
    Fp16,
    Bf16,
    Rtn(RtnSpec),
    Gptq(GptqSpec),
    Awq(AwqSpec),
    Nf4(Bnb4Spec),
    Fp4(Bnb4Spec),
    Int8(Int8Spec),
    Ggml(GgmlSpec),
    W8a8,
    Prune(PruneSpec),
    /// A checkpoint quantized outside qi, by its path (see [`crate::quantize::quantize_model`]).
    Twin(String),
}

/// Every method name, in documentation order.
pub const METHODS: [&str; 22] = [
    "none", "fp16", "bf16", "rtn", "gptq", "awq", "nf4", "fp4", "int8", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0",
    "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "w8a8", "prune", "twin",
];

fn keys_of(method: &str) -> &'static [&'static str] {
    match method {
        "rtn" => &["bits", "granularity", "group", "sym"],
        "gptq" => &[
            "bits",
            "group",
            "act_order",
            "static_groups",
            "sym",
            "damp",
            "block",
            "true_sequential",
            "samples",
            "seqlen",
            "data",
            "seed",
        ],
        "awq" => &["bits", "group", "sym", "samples", "seqlen", "data", "seed"],
        "nf4" | "fp4" => &["block", "double_quant"],
        "int8" => &["threshold"],
        "prune" => &["sparsity"],
        k if GgmlKind::from_name(k).is_some_and(GgmlKind::is_k_quant) => &["fallback"],
        _ => &[],
    }
}

impl QuantSpec {
    /// The method's name as in the string form (`"gptq"`, `"q4_k"`, ...).
    pub fn method_name(&self) -> &'static str {
        match self {
            QuantSpec::None => "none",
            QuantSpec::Fp16 => "fp16",
            QuantSpec::Bf16 => "bf16",
            QuantSpec::Rtn(_) => "rtn",
            QuantSpec::Gptq(_) => "gptq",
            QuantSpec::Awq(_) => "awq",
            QuantSpec::Nf4(_) => "nf4",
            QuantSpec::Fp4(_) => "fp4",
            QuantSpec::Int8(_) => "int8",
            QuantSpec::Ggml(g) => g.kind.name(),
            QuantSpec::W8a8 => "w8a8",
            QuantSpec::Prune(_) => "prune",
            QuantSpec::Twin(_) => "twin",
        }
    }

    /// Nominal bits per weight for tables: f32 32, fp16/bf16 16, rtn/gptq/awq their `bits`, nf4/fp4
    /// 4, int8/w8a8 8, GGML types their storage rate including block scales (q4_0 4.5, q4_k 4.5,
    /// q6_k 6.5625, ...). `None` for pruning (storage depends on the sparse format) and for an
    /// external twin (its report has the storage types of its file).
    pub fn bits(&self) -> Option<f32> {
        match self {
            QuantSpec::None => Some(32.0),
            QuantSpec::Fp16 | QuantSpec::Bf16 => Some(16.0),
            QuantSpec::Rtn(s) => Some(s.bits as f32),
            QuantSpec::Gptq(s) => Some(s.bits as f32),
            QuantSpec::Awq(s) => Some(s.bits as f32),
            QuantSpec::Nf4(_) | QuantSpec::Fp4(_) => Some(4.0),
            QuantSpec::Int8(_) | QuantSpec::W8a8 => Some(8.0),
            QuantSpec::Ggml(g) => Some(g.kind.bits_per_weight()),
            QuantSpec::Prune(_) | QuantSpec::Twin(_) => None,
        }
    }

    /// A list of specs separated by `;` (commas belong to the specs), e.g.
    /// `"rtn:bits=4; gptq:bits=4,group=128"`; empty entries are skipped, duplicates are errors.
    pub fn parse_list(s: &str) -> Result<Vec<QuantSpec>> {
        let mut out: Vec<QuantSpec> = Vec::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let spec: QuantSpec = part.parse()?;
            if out.contains(&spec) {
                return Err(bad("quantization spec list", s, format!("'{spec}' appears twice")));
            }
            out.push(spec);
        }
        if out.is_empty() {
            return Err(bad("quantization spec list", s, "no spec given (separate specs with ';')"));
        }
        Ok(out)
    }

    /// Whether the method needs calibration data (GPTQ: Hessians; AWQ: activation scales;
    /// LLM.int8: outlier columns found from calibration activations).
    pub fn needs_calibration(&self) -> bool {
        matches!(self, QuantSpec::Gptq(_) | QuantSpec::Awq(_) | QuantSpec::Int8(_))
    }

    /// The version of this method's algorithm, part of every cached twin's key: bump it with any
    /// change that changes the weights a method produces, so twins made before the change are
    /// never reused. Calibrated methods also carry [`CALIBRATION_DATA_VERSION`].
    pub fn algorithm_version(&self) -> String {
        let v = match self {
            QuantSpec::None | QuantSpec::Fp16 | QuantSpec::Bf16 | QuantSpec::W8a8 => 1,
            QuantSpec::Rtn(_) => 1,
            QuantSpec::Gptq(_) => 2, // 2: the report's loss counts each sequence as a sample
            // 2: llm-awq's groups, folds, clip search and grid; 3: losses from Gram matrices and
            // the forward's own MLP (same choices up to float rounding, so near-ties may flip)
            QuantSpec::Awq(_) => 3,
            QuantSpec::Nf4(_) | QuantSpec::Fp4(_) => 1,
            QuantSpec::Int8(_) => 1,
            QuantSpec::Ggml(_) => 1,
            QuantSpec::Prune(_) => 1,
            // the file is the twin: its content is in the study cell's key through the path only
            QuantSpec::Twin(_) => 1,
        };
        if self.needs_calibration() {
            format!("{}-v{v}-data{CALIBRATION_DATA_VERSION}", self.method_name())
        } else {
            format!("{}-v{v}", self.method_name())
        }
    }
}

/// Version of the calibration text a calibrated method draws ([`crate::data::Split`]): 2 is the
/// calibration split, disjoint from SAE training and evaluation text (1 drew from all of C4).
pub const CALIBRATION_DATA_VERSION: u32 = 2;

fn bad(what: &str, value: impl ToString, reason: impl Into<String>) -> anyhow::Error {
    QiError::invalid(what, value, reason).into()
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(key, v, "expected true or false")),
    }
}

fn parse_usize(key: &str, v: &str, min: usize) -> Result<usize> {
    match v.parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(bad(key, v, format!("expected an integer >= {min}"))),
    }
}

fn parse_f64(key: &str, v: &str) -> Result<f64> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(bad(key, v, "expected a finite number")),
    }
}

fn parse_bits(v: &str) -> Result<u8> {
    match v.parse::<u8>() {
        Ok(b) if (2..=8).contains(&b) => Ok(b),
        _ => Err(bad("bits", v, "expected an integer bit width in 2..=8")),
    }
}

/// `group=G` with G >= 1, or `-1` for none (per-row).
fn parse_group(v: &str) -> Result<Option<usize>> {
    if v == "-1" {
        return Ok(None);
    }
    parse_usize("group", v, 1).map(Some).map_err(|_| bad("group", v, "expected a group size >= 1, or -1 for per-row"))
}

fn parse_data(v: &str) -> Result<CalibData> {
    CalibData::ALL.into_iter().find(|d| d.name() == v).ok_or_else(|| {
        bad("data", v, format!("unknown calibration data; valid: {}", CalibData::ALL.map(|d| d.name()).join(", ")))
    })
}

struct Opts<'a> {
    method: &'a str,
    map: BTreeMap<&'a str, &'a str>,
}

impl<'a> Opts<'a> {
    fn take(&mut self, key: &str) -> Option<&'a str> {
        self.map.remove(key)
    }
    fn required(&mut self, key: &str) -> Result<&'a str> {
        self.take(key).ok_or_else(|| bad(self.method, self.method, format!("missing required key '{key}' (e.g. {}:{key}=...)", self.method)))
    }
}

impl FromStr for QuantSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        // a path may hold ',' '=' and ':': everything after `twin:` is the path
        if let Some((m, path)) = s.split_once(':') {
            if m.trim().eq_ignore_ascii_case("twin") {
                let path = path.trim();
                if path.is_empty() {
                    return Err(bad("twin", s, "expected twin:PATH (a GGUF file or an HF directory of a quantized model)"));
                }
                return Ok(QuantSpec::Twin(path.to_string()));
            }
        }
        let (method, rest) = match s.split_once(':') {
            Some((m, r)) => (m.trim(), Some(r)),
            None => (s, None),
        };
        let method_lc = method.to_ascii_lowercase();
        let method: &str = match METHODS.iter().find(|m| **m == method_lc) {
            Some(m) => m,
            None => return Err(bad("quantization method", method, format!("valid methods: {}", METHODS.join(", ")))),
        };
        let valid = keys_of(method);
        let mut map = BTreeMap::new();
        if let Some(rest) = rest {
            for tok in rest.split(',') {
                let tok = tok.trim();
                if tok.is_empty() {
                    continue;
                }
                let Some((k, v)) = tok.split_once('=') else {
                    return Err(bad("option", tok, "expected key=value"));
                };
                let (k, v) = (k.trim(), v.trim());
                if !valid.contains(&k) {
                    let reason = if valid.is_empty() {
                        format!("method '{method}' takes no options")
                    } else {
                        format!("unknown key for '{method}'; valid keys: {}", valid.join(", "))
                    };
                    return Err(bad("option key", k, reason));
                }
                if map.insert(k, v).is_some() {
                    return Err(bad("option key", k, "given twice"));
                }
            }
        }
        let mut o = Opts { method, map };
        let spec = match method {
            "none" => QuantSpec::None,
            "fp16" => QuantSpec::Fp16,
            "bf16" => QuantSpec::Bf16,
            "w8a8" => QuantSpec::W8a8,
            "rtn" => {
                let bits = parse_bits(o.required("bits")?)?;
                let group = o.take("group").map(parse_group).transpose()?.flatten();
                let gran = o.take("granularity");
                let granularity = match (gran, group) {
                    (None | Some("group"), Some(g)) => Granularity::Group(g),
                    (Some("group"), None) => {
                        return Err(bad("granularity", "group", "granularity=group needs group=G"));
                    }
                    (None | Some("row"), None) => Granularity::Row,
                    (Some("tensor"), None) => Granularity::Tensor,
                    (Some(g @ ("row" | "tensor")), Some(_)) => {
                        return Err(bad("granularity", g, "conflicts with group=G (which implies granularity=group)"));
                    }
                    (Some(g), _) => return Err(bad("granularity", g, "valid: tensor, row, group")),
                };
                let sym = o.take("sym").map(|v| parse_bool("sym", v)).transpose()?.unwrap_or(false);
                QuantSpec::Rtn(RtnSpec { bits, granularity, sym })
            }
            "gptq" => {
                let mut g = GptqSpec::new(parse_bits(o.required("bits")?)?);
                if let Some(v) = o.take("group") {
                    g.group = parse_group(v)?;
                }
                for (k, slot) in [
                    ("act_order", &mut g.act_order),
                    ("static_groups", &mut g.static_groups),
                    ("sym", &mut g.sym),
                    ("true_sequential", &mut g.true_sequential),
                ] {
                    if let Some(v) = o.take(k) {
                        *slot = parse_bool(k, v)?;
                    }
                }
                if let Some(v) = o.take("damp") {
                    g.damp = parse_f64("damp", v)?;
                    if g.damp < 0.0 {
                        return Err(bad("damp", v, "expected a non-negative fraction of the mean Hessian diagonal"));
                    }
                }
                if let Some(v) = o.take("block") {
                    g.block = parse_usize("block", v, 1)?;
                }
                if let Some(v) = o.take("samples") {
                    g.samples = parse_usize("samples", v, 1)?;
                }
                if let Some(v) = o.take("seqlen") {
                    g.seqlen = parse_usize("seqlen", v, 1)?;
                }
                if let Some(v) = o.take("data") {
                    g.data = parse_data(v)?;
                }
                if let Some(v) = o.take("seed") {
                    g.seed = v.parse().map_err(|_| bad("seed", v, "expected a non-negative integer"))?;
                }
                if g.static_groups && g.group.is_none() {
                    return Err(bad("static_groups", "true", "static_groups needs group=G"));
                }
                QuantSpec::Gptq(g)
            }
            "awq" => {
                let mut a = AwqSpec::new(parse_bits(o.required("bits")?)?);
                if let Some(v) = o.take("group") {
                    a.group = parse_group(v)?;
                }
                if let Some(v) = o.take("sym") {
                    a.sym = parse_bool("sym", v)?;
                }
                if let Some(v) = o.take("samples") {
                    a.samples = parse_usize("samples", v, 1)?;
                }
                if let Some(v) = o.take("seqlen") {
                    a.seqlen = parse_usize("seqlen", v, 1)?;
                }
                if let Some(v) = o.take("data") {
                    a.data = parse_data(v)?;
                }
                if let Some(v) = o.take("seed") {
                    a.seed = v.parse().map_err(|_| bad("seed", v, "expected a non-negative integer"))?;
                }
                QuantSpec::Awq(a)
            }
            "nf4" | "fp4" => {
                let mut b = Bnb4Spec::default();
                if let Some(v) = o.take("block") {
                    b.block = parse_usize("block", v, 1)?;
                    if !BNB4_BLOCKS.contains(&b.block) {
                        return Err(bad("block", v, format!("bitsandbytes 4-bit block sizes: {BNB4_BLOCKS:?}")));
                    }
                }
                if let Some(v) = o.take("double_quant") {
                    b.double_quant = parse_bool("double_quant", v)?;
                }
                if method == "nf4" {
                    QuantSpec::Nf4(b)
                } else {
                    QuantSpec::Fp4(b)
                }
            }
            "int8" => {
                let mut i = Int8Spec::default();
                if let Some(v) = o.take("threshold") {
                    i.threshold = parse_f64("threshold", v)?;
                    if i.threshold <= 0.0 {
                        return Err(bad("threshold", v, "expected a positive activation magnitude"));
                    }
                }
                QuantSpec::Int8(i)
            }
            "prune" => {
                let v = o.required("sparsity")?;
                let sparsity = parse_f64("sparsity", v)?;
                if !(0.0..1.0).contains(&sparsity) {
                    return Err(bad("sparsity", v, "expected a fraction in [0, 1)"));
                }
                QuantSpec::Prune(PruneSpec { sparsity })
            }
            "twin" => return Err(bad("twin", s, "expected twin:PATH (a GGUF file or an HF directory of a quantized model)")),
            other => match GgmlKind::from_name(other) {
                Some(kind) => {
                    let fallback = o.take("fallback").map(|v| parse_bool("fallback", v)).transpose()?.unwrap_or(false);
                    QuantSpec::Ggml(GgmlSpec { kind, fallback })
                }
                None => bail!("internal: method '{other}' has no parser"),
            },
        };
        debug_assert!(o.map.is_empty(), "unconsumed keys {:?}", o.map);
        Ok(spec)
    }
}

impl fmt::Display for QuantSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kv: Vec<String> = Vec::new();
        let flag = |kv: &mut Vec<String>, k: &str, v: bool, default: bool| {
            if v != default {
                kv.push(format!("{k}={v}"));
            }
        };
        match self {
            QuantSpec::Rtn(r) => {
                kv.push(format!("bits={}", r.bits));
                match r.granularity {
                    Granularity::Row => {}
                    Granularity::Tensor => kv.push("granularity=tensor".into()),
                    Granularity::Group(g) => kv.push(format!("group={g}")),
                }
                flag(&mut kv, "sym", r.sym, false);
            }
            QuantSpec::Gptq(g) => {
                let d = GptqSpec::new(g.bits);
                kv.push(format!("bits={}", g.bits));
                if let Some(gs) = g.group {
                    kv.push(format!("group={gs}"));
                }
                flag(&mut kv, "act_order", g.act_order, d.act_order);
                flag(&mut kv, "static_groups", g.static_groups, d.static_groups);
                flag(&mut kv, "sym", g.sym, d.sym);
                if g.damp != d.damp {
                    kv.push(format!("damp={}", g.damp));
                }
                if g.block != d.block {
                    kv.push(format!("block={}", g.block));
                }
                flag(&mut kv, "true_sequential", g.true_sequential, d.true_sequential);
                if g.samples != d.samples {
                    kv.push(format!("samples={}", g.samples));
                }
                if g.seqlen != d.seqlen {
                    kv.push(format!("seqlen={}", g.seqlen));
                }
                if g.data != d.data {
                    kv.push(format!("data={}", g.data.name()));
                }
                if g.seed != d.seed {
                    kv.push(format!("seed={}", g.seed));
                }
            }
            QuantSpec::Awq(a) => {
                let d = AwqSpec::new(a.bits);
                kv.push(format!("bits={}", a.bits));
                if a.group != d.group {
                    match a.group {
                        Some(g) => kv.push(format!("group={g}")),
                        None => kv.push("group=-1".into()),
                    }
                }
                flag(&mut kv, "sym", a.sym, d.sym);
                if a.samples != d.samples {
                    kv.push(format!("samples={}", a.samples));
                }
                if a.seqlen != d.seqlen {
                    kv.push(format!("seqlen={}", a.seqlen));
                }
                if a.data != d.data {
                    kv.push(format!("data={}", a.data.name()));
                }
                if a.seed != d.seed {
                    kv.push(format!("seed={}", a.seed));
                }
            }
            QuantSpec::Nf4(b) | QuantSpec::Fp4(b) => {
                let d = Bnb4Spec::default();
                if b.block != d.block {
                    kv.push(format!("block={}", b.block));
                }
                flag(&mut kv, "double_quant", b.double_quant, d.double_quant);
            }
            QuantSpec::Int8(i) => {
                if i.threshold != Int8Spec::default().threshold {
                    kv.push(format!("threshold={}", i.threshold));
                }
            }
            QuantSpec::Prune(p) => kv.push(format!("sparsity={}", p.sparsity)),
            QuantSpec::Twin(path) => return write!(f, "twin:{path}"),
            QuantSpec::Ggml(g) => flag(&mut kv, "fallback", g.fallback, false),
            QuantSpec::None | QuantSpec::Fp16 | QuantSpec::Bf16 | QuantSpec::W8a8 => {}
        }
        f.write_str(self.method_name())?;
        if !kv.is_empty() {
            write!(f, ":{}", kv.join(","))?;
        }
        Ok(())
    }
}

impl TryFrom<String> for QuantSpec {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<QuantSpec> for String {
    fn from(s: QuantSpec) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_lists_split_on_semicolons() {
        let v = QuantSpec::parse_list(" rtn:bits=4 ; gptq:bits=3,group=64;").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].to_string(), "gptq:bits=3,group=64");
        assert!(QuantSpec::parse_list("rtn:bits=4;rtn:bits=4").unwrap_err().to_string().contains("twice"));
        assert!(QuantSpec::parse_list(" ; ").is_err());
    }

    fn p(s: &str) -> QuantSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn err(s: &str) -> String {
        s.parse::<QuantSpec>().unwrap_err().to_string()
    }

    #[test]
    fn quant_spec_examples_parse() {
        assert_eq!(p("none"), QuantSpec::None);
        assert_eq!(p("rtn:bits=4"), QuantSpec::Rtn(RtnSpec { bits: 4, granularity: Granularity::Row, sym: false }));
        assert_eq!(
            p("rtn:bits=3,group=128,sym=false"),
            QuantSpec::Rtn(RtnSpec { bits: 3, granularity: Granularity::Group(128), sym: false })
        );
        assert_eq!(
            p("rtn:bits=8,granularity=tensor"),
            QuantSpec::Rtn(RtnSpec { bits: 8, granularity: Granularity::Tensor, sym: false })
        );
        let g = p("gptq:bits=4,group=128,act_order=true,samples=128,seqlen=512,damp=0.01,static_groups=false,true_sequential=true,block=128,sym=false,data=c4,seed=0");
        let mut want = GptqSpec::new(4);
        want.group = Some(128);
        want.act_order = true;
        want.seqlen = 512;
        want.true_sequential = true;
        assert_eq!(g, QuantSpec::Gptq(want));
        assert_eq!(g.to_string(), "gptq:bits=4,group=128,act_order=true,true_sequential=true,seqlen=512");
        assert_eq!(p("nf4:block=64,double_quant=true").to_string(), "nf4:double_quant=true");
        assert_eq!(p("int8:threshold=6.0").to_string(), "int8");
        assert_eq!(p(" Q4_K ").to_string(), "q4_k");
        assert_eq!(p("q4_k:fallback=false").to_string(), "q4_k");
        assert_eq!(p("q4_k:fallback=true"), QuantSpec::Ggml(GgmlSpec { kind: GgmlKind::Q4K, fallback: true }));
        assert_eq!(p("q6_k:fallback=true").to_string(), "q6_k:fallback=true");
        assert_eq!(p("prune:sparsity=0.5").to_string(), "prune:sparsity=0.5");
        assert_eq!(p("awq:bits=4,group=128,samples=64,seqlen=512").to_string(), "awq:bits=4,samples=64");
        assert_eq!(p("awq:bits=4,group=-1").to_string(), "awq:bits=4,group=-1");
        assert_eq!(p("gptq:bits=4,group=-1").to_string(), "gptq:bits=4");
    }

    #[test]
    fn quant_spec_round_trip_all_methods() {
        let mut all: Vec<QuantSpec> = vec![QuantSpec::None, QuantSpec::Fp16, QuantSpec::Bf16, QuantSpec::W8a8];
        for bits in 2..=8u8 {
            for sym in [false, true] {
                for granularity in [Granularity::Tensor, Granularity::Row, Granularity::Group(32), Granularity::Group(128)] {
                    all.push(QuantSpec::Rtn(RtnSpec { bits, granularity, sym }));
                }
                for group in [None, Some(64)] {
                    for act_order in [false, true] {
                        let mut g = GptqSpec::new(bits);
                        g.group = group;
                        g.sym = sym;
                        g.act_order = act_order;
                        g.static_groups = group.is_some() && act_order;
                        g.damp = if act_order { 0.1 } else { 0.01 };
                        g.block = if sym { 64 } else { 128 };
                        g.true_sequential = sym;
                        g.samples = 32;
                        g.seqlen = if sym { 2048 } else { 256 };
                        g.data = if act_order { CalibData::Wikitext2 } else { CalibData::C4 };
                        g.seed = bits as u64;
                        all.push(QuantSpec::Gptq(g));
                    }
                    let mut a = AwqSpec::new(bits);
                    a.group = group;
                    a.sym = sym;
                    a.samples = 64;
                    a.data = CalibData::Wikitext2;
                    all.push(QuantSpec::Awq(a));
                }
            }
        }
        for block in BNB4_BLOCKS {
            for double_quant in [false, true] {
                all.push(QuantSpec::Nf4(Bnb4Spec { block, double_quant }));
                all.push(QuantSpec::Fp4(Bnb4Spec { block, double_quant }));
            }
        }
        for threshold in [6.0, 3.5, 0.1] {
            all.push(QuantSpec::Int8(Int8Spec { threshold }));
        }
        for k in GgmlKind::ALL {
            all.push(QuantSpec::Ggml(k.into()));
        }
        for sparsity in [0.0, 0.5, 0.9, 1.0 / 3.0] {
            all.push(QuantSpec::Prune(PruneSpec { sparsity }));
        }
        // paths keep their commas, equals signs and colons
        for path in ["m.gguf", "/tmp/a,b=c:d/model-q4_k_m.gguf", "./twins/gptq dir"] {
            all.push(QuantSpec::Twin(path.into()));
        }
        let mut methods = std::collections::BTreeSet::new();
        for s in &all {
            let text = s.to_string();
            let back: QuantSpec = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(&back, s, "{text}");
            // serde uses the same string
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            let back: QuantSpec = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, s);
            methods.insert(s.method_name());
        }
        assert_eq!(methods.len(), METHODS.len(), "every method is covered");
    }

    #[test]
    fn quant_spec_errors_list_valid_options() {
        let e = err("gtpq:bits=4");
        assert!(e.contains("gtpq") && e.contains("gptq") && e.contains("q6_k") && e.contains("prune"), "{e}");
        let e = err("rtn:bits=4,grop=128");
        assert!(e.contains("grop") && e.contains("bits, granularity, group, sym"), "{e}");
        let e = err("q4_0:bits=4");
        assert!(e.contains("takes no options"), "{e}");
        for b in ["1", "9", "0", "4.5", "x"] {
            let e = err(&format!("rtn:bits={b}"));
            assert!(e.contains("bits") && e.contains("2..=8"), "{e}");
        }
        assert!(err("gptq:group=128").contains("missing required key 'bits'"));
        assert!(err("prune:sparsity=1").contains("[0, 1)"));
        assert!(err("prune:sparsity=-0.1").contains("[0, 1)"));
        assert!(err("prune").contains("sparsity"));
        assert!(err("rtn:bits=4,granularity=row,group=32").contains("conflicts"));
        assert!(err("rtn:bits=4,granularity=group").contains("needs group"));
        assert!(err("rtn:bits=4,granularity=column").contains("tensor, row, group"));
        assert!(err("gptq:bits=4,static_groups=true").contains("needs group"));
        assert!(err("gptq:bits=4,data=pile").contains("c4, wikitext2"));
        assert!(err("nf4:block=100").contains("4096"));
        assert!(err("rtn:bits=4,bits=3").contains("twice"));
        assert!(err("rtn:bits=4,sym=yes").contains("true or false"));
        assert!(err("int8:threshold=-1").contains("positive"));
        // llama.cpp's fallback exists only for the k-quants
        assert!(err("q4_0:fallback=true").contains("takes no options"));
        assert!(err("q4_k:fallback=1").contains("true or false"));
        assert!(err("gptq:bits=4,damp=nan").contains("finite"));
    }

    #[test]
    fn quant_spec_accessors() {
        assert_eq!(p("fp16").bits(), Some(16.0));
        assert_eq!(p("none").bits(), Some(32.0));
        assert_eq!(p("nf4").bits(), Some(4.0));
        assert_eq!(p("q4_k").bits(), Some(4.5));
        assert_eq!(p("q4_0").bits(), Some(4.5));
        assert_eq!(p("q6_k").bits(), Some(6.5625));
        assert_eq!(p("gptq:bits=3").bits(), Some(3.0));
        assert_eq!(p("prune:sparsity=0.5").bits(), None);
        assert!(p("gptq:bits=3").needs_calibration());
        assert!(p("awq:bits=4").needs_calibration());
        assert!(p("int8").needs_calibration());
        assert!(!p("rtn:bits=4").needs_calibration());
        assert!(!p("w8a8").needs_calibration());
        assert_eq!(p("q5_k").method_name(), "q5_k");
    }
}
