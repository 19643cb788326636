//! Quantizing a whole model: one entry point for every [`QuantSpec`] method, applied to the raw
//! (unfolded) weights of the reference model, returning a new model of the same type whose
//! weights are the dequantized values (fake quantization, so every hook still works) and a report.
//! The reference model is never mutated.
//!
//! By default every linear weight in the blocks is quantized (attention q/k/v/o or fused qkv, and
//! the MLP); embeddings, unembedding, norms and biases stay f32. Each choice is configurable.
//!
//! Calibrated methods:
//! - **GPTQ** runs block by block: the calibration inputs of block `l` are the outputs of the
//!   already-quantized blocks `0..l` (as the reference implementation), each linear's Hessian
//!   H = 2/n Σ x xᵀ is accumulated from its inputs, and with `true_sequential` the sub-layers are
//!   quantized in order (qkv → o → up/gate → down) with inputs recomputed after each.
//! - **AWQ** follows llm-awq ([`awq`]): per input group (q/k/v, o after v with multi-head
//!   attention, gate/up, down after up) a per-channel scale s = mean|x|^r (normalised) is searched,
//!   r ∈ {0, 0.05, …, 0.95}, on the group's module output (attention, o, MLP, down) over all
//!   calibration tokens; 1/s is folded into the preceding norm or linear and s into the group's
//!   columns (the twin is a deployable model: its norms change, and the hooks right after a folded
//!   op are in the scaled basis); then llm-awq's clip search and its grouped min–max grid. The
//!   matrix report compares Q(W·diag(s))·diag(s)⁻¹ with W.
//! - **LLM.int8** finds outlier input features (|x| ≥ threshold on calibration activations) per
//!   linear; those columns stay f16 in weights and activations, the rest is int8.
//! - **W8A8** quantizes weights per row to int8 and every linear input per token to int8.
use crate::data::Corpus;
use crate::models::{is_attention_role, linear_input_hook, Linear};
use crate::quant::ActQuant;
use crate::quant::{self, CalibData, GptqOptions, HessianAccumulator, QuantSpec};
use crate::{Batch, HookedTransformer, Hooks};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;

/// Which weights to quantize, and calibration settings not carried by the spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct QuantizeOptions {
    /// Quantize attention projections.
    pub attention: bool,
    /// Quantize MLP projections.
    pub mlp: bool,
    /// Also quantize the token embedding (off by default, as GPTQ/AWQ do).
    pub embeddings: bool,
    /// Also quantize the unembedding (off by default; for tied models this is the embedding).
    pub unembedding: bool,
    /// Calibration windows per forward pass.
    pub calibration_batch: usize,
    /// LLM.int8 outlier search: windows and their length (C4, seed 0).
    pub int8_samples: usize,
    pub int8_seqlen: usize,
    /// Explicit calibration token windows; when set they replace the spec's data source, sample
    /// count and length (e.g. for models without a tokenizer, or for tests).
    #[serde(skip)]
    pub calibration: Option<Vec<Vec<u32>>>,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions { attention: true, mlp: true, embeddings: false, unembedding: false, calibration_batch: 8, int8_samples: 32, int8_seqlen: 512, calibration: None }
    }
}

pub mod awq;
pub use awq::{awq_block, AwqGrid, BlockAwq};
pub use crate::quant::report::{MatrixReport, QuantReport};

/// Storage estimate in bits per weight for a `[rows, cols]` matrix: the codes plus per-group
/// scales (f16) and zero points (at the code width), as packed formats store them.
pub fn bits_per_weight(spec: &QuantSpec, rows: usize, cols: usize) -> f64 {
    let grid = |bits: u8, sym: bool, per: f64| bits as f64 + (16.0 + if sym { 0.0 } else { bits as f64 }) / per;
    match spec {
        QuantSpec::None => 32.0,
        QuantSpec::Fp16 | QuantSpec::Bf16 => 16.0,
        QuantSpec::Rtn(r) => match r.granularity {
            quant::Granularity::Tensor => grid(r.bits, r.sym, (rows * cols) as f64),
            quant::Granularity::Row => grid(r.bits, r.sym, cols as f64),
            quant::Granularity::Group(g) => grid(r.bits, r.sym, g as f64),
        },
        QuantSpec::Gptq(g) => {
            let base = grid(g.bits, g.sym, g.group.unwrap_or(cols) as f64);
            // act-order with groups stores a group index per input column
            base + if g.act_order && g.group.is_some() { 32.0 / rows as f64 } else { 0.0 }
        }
        QuantSpec::Awq(a) => grid(a.bits, a.sym, a.group.unwrap_or(cols) as f64),
        QuantSpec::Nf4(b) | QuantSpec::Fp4(b) => {
            if b.double_quant {
                4.0 + 8.0 / b.block as f64 + 32.0 / (b.block as f64 * 256.0)
            } else {
                4.0 + 32.0 / b.block as f64
            }
        }
        QuantSpec::Int8(_) | QuantSpec::W8a8 => 8.0 + 32.0 / cols as f64,
        QuantSpec::Ggml(g) => ggml_storage(g, rows, cols).bits_per_weight() as f64,
        QuantSpec::Prune(p) => 32.0 * (1.0 - p.sparsity) + 1.0,
        // what the file stores, known only once it is loaded (see `external_twin`)
        QuantSpec::Twin(_) => f64::NAN,
    }
}

/// The mean bits per weight [`quantize_model`] would report for `model` under `spec` with the
/// default options (every block linear, embeddings left alone), without quantizing: the storage
/// estimate of each linear weighted by its parameter count.
pub fn model_bits_per_weight(model: &HookedTransformer, spec: &QuantSpec) -> f64 {
    let (mut bits, mut n) = (0.0, 0usize);
    for lin in model.linears() {
        let (rows, cols) = (lin.out_features(), lin.in_features());
        bits += bits_per_weight(spec, rows, cols) * (rows * cols) as f64;
        n += rows * cols;
    }
    if n == 0 || matches!(spec, QuantSpec::None) {
        32.0
    } else {
        bits / n as f64
    }
}

/// A twin's bits per weight: what its quantization report counts (an external twin's file types,
/// act-order indices, fallbacks), else the method's own estimate for the reference's shapes.
pub fn twin_bits_per_weight(reference: &HookedTransformer, spec: &QuantSpec, report: Option<&QuantReport>) -> f64 {
    report.map(|r| r.bits_per_weight).filter(|b| b.is_finite()).unwrap_or_else(|| model_bits_per_weight(reference, spec))
}

/// The storage format of a `[rows, cols]` matrix under `spec` (see [`MatrixReport::format`]).
pub fn storage_format(spec: &QuantSpec, rows: usize, cols: usize) -> String {
    match spec {
        QuantSpec::Ggml(g) => ggml_storage(g, rows, cols).name().to_string(),
        _ => spec.method_name().to_string(),
    }
}

/// A GGML matrix's storage for the report; a shape the type cannot hold (which quantizing already
/// rejected, naming the tensor) is reported as the nominal type.
fn ggml_storage(g: &quant::GgmlSpec, rows: usize, cols: usize) -> quant::GgmlStorage {
    g.storage_for(rows, cols, "").unwrap_or(quant::GgmlStorage::Ggml(g.kind))
}

fn corpus(d: CalibData) -> Corpus {
    match d {
        CalibData::C4 => Corpus::C4,
        CalibData::Wikitext2 => Corpus::Wikitext2,
    }
}

/// Quantizes `model` by `spec`. Returns the quantized twin and a report.
pub fn quantize_model(model: &HookedTransformer, spec: &QuantSpec, opts: &QuantizeOptions) -> Result<(HookedTransformer, QuantReport)> {
    if let QuantSpec::Twin(path) = spec {
        return external_twin(model, path, spec);
    }
    let start = std::time::Instant::now();
    let mut q = model.clone();
    q.source.quantization = Some(spec.to_string());
    let mut state = State::default();
    match spec {
        QuantSpec::None => {}
        QuantSpec::Gptq(g) => gptq_model(model, &mut q, spec, g, opts, &mut state)?,
        QuantSpec::Awq(a) => awq_model(model, &mut q, spec, a, opts, &mut state)?,
        QuantSpec::Int8(s) => {
            let windows = match &opts.calibration {
                Some(w) => w.clone(),
                None => crate::data::calibration_windows(model, Corpus::C4, opts.int8_samples, opts.int8_seqlen.min(model.cfg.n_ctx), 0)?,
            };
            state.calibration_tokens = windows.iter().map(Vec::len).sum();
            let outliers = outlier_columns(model, &windows, opts, s.threshold)?;
            for_each_selected(&mut q, opts, |l, role, lin| {
                let cols = outliers.get(&(l, role)).cloned().unwrap_or_default();
                let w = quant::llm_int8_quantize(&lin.weight(), &cols).with_context(|| format!("quantizing '{}'", lin.name))?.weight;
                lin.act_quant = Some(ActQuant::Int8Outliers { outliers: cols });
                state.record(Some(l), role, lin, w, spec, None)
            })?;
        }
        QuantSpec::W8a8 => for_each_selected(&mut q, opts, |l, role, lin| {
            let w = quant::int8_rowwise_quantize(&lin.weight()).with_context(|| format!("quantizing '{}'", lin.name))?.weight;
            lin.act_quant = Some(ActQuant::PerTokenInt8);
            state.record(Some(l), role, lin, w, spec, None)
        })?,
        _ => for_each_selected(&mut q, opts, |l, role, lin| {
            let w = quant::quantize_weight(&lin.weight(), spec, &lin.name, None, None)?;
            state.record(Some(l), role, lin, w, spec, None)
        })?,
    }
    if !matches!(spec, QuantSpec::None) {
        quantize_embeddings(&mut q, spec, opts, &mut state)?;
    }
    let report = state.into_report(spec, &q, start);
    Ok((q, report))
}

/// A model quantized outside qi (`twin:PATH`), loaded and checked against the reference: same
/// architecture, vocabulary and shapes, else an error naming the first mismatch. The report
/// gives each block linear's difference from the reference and the bits per weight of its
/// storage type in the file (a GGML type's rate; F16/BF16 16; F32 32).
fn external_twin(model: &HookedTransformer, path: &str, spec: &QuantSpec) -> Result<(HookedTransformer, QuantReport)> {
    let start = std::time::Instant::now();
    let mut twin = crate::load_model(path).with_context(|| format!("loading the twin '{path}'"))?;
    model.check_comparable(&twin, path)?;
    twin.source.quantization = Some(spec.to_string());
    let mut state = State::default();
    for (l, (rb, tb)) in model.blocks.iter().zip(&twin.blocks).enumerate() {
        for ((role, r), (_, t)) in rb.linears_labeled().into_iter().zip(tb.linears_labeled()) {
            state.report(Some(l), role, &t.name, &r.weight(), &t.weight(), spec, None)?;
            let stored = twin.source.tensor_types.get(&t.name).cloned().unwrap_or_else(|| "F32".into());
            let m = state.matrices.last_mut().expect("just recorded");
            m.bits_per_weight = storage_bits(&stored);
            m.format = stored.to_ascii_lowercase();
        }
    }
    let report = state.into_report(spec, &twin, start);
    Ok((twin, report))
}

/// Bits per weight of a source storage type name (`Q4_K`, `F16`, `F32`, ...); a name qi does not
/// know counts as 32 (it was read as floats).
fn storage_bits(t: &str) -> f64 {
    match t.to_ascii_lowercase().as_str() {
        "f16" | "bf16" => 16.0,
        other => quant::GgmlKind::from_name(other).map_or(32.0, |k| k.bits_per_weight() as f64),
    }
}

#[derive(Default)]
struct State {
    matrices: Vec<MatrixReport>,
    calibration_tokens: usize,
}

impl State {
    /// The report of `q` (the twin) from the matrices recorded: mean bits over the quantized
    /// matrices, size with everything else at f32, activation quantization per linear.
    fn into_report(self, spec: &QuantSpec, q: &HookedTransformer, start: std::time::Instant) -> QuantReport {
        // the twin has the reference's parameter count (an external one is checked to)
        let total_params = q.n_params();
        let quantized_params: usize = self.matrices.iter().map(|m| m.rows * m.cols).sum();
        let qbits: f64 = self.matrices.iter().map(|m| m.bits_per_weight * (m.rows * m.cols) as f64).sum();
        QuantReport {
            spec: spec.to_string(),
            bits_per_weight: if quantized_params > 0 { qbits / quantized_params as f64 } else { 32.0 },
            model_bytes: (qbits + 32.0 * (total_params.saturating_sub(quantized_params)) as f64) / 8.0,
            matrices: self.matrices,
            calibration_tokens: self.calibration_tokens,
            seconds: start.elapsed().as_secs_f64(),
            quantized_params,
            total_params,
            activation_quant: q.blocks.iter().flat_map(|b| b.linears()).filter_map(|l| l.act_quant.clone().map(|a| (l.name.clone(), a))).collect(),
        }
    }

    /// Stores `new` as the layer's weight and records its error against the old one.
    fn record(&mut self, layer: Option<usize>, role: &str, lin: &mut Linear, new: Tensor, spec: &QuantSpec, gptq_loss: Option<f64>) -> Result<()> {
        let name = lin.name.clone();
        self.report(layer, role, &name, &lin.weight(), &new, spec, gptq_loss)?;
        lin.set_weight(&new)?;
        Ok(())
    }

    /// Records the error of `new` against `old` for the matrix `name`.
    #[allow(clippy::too_many_arguments)]
    fn report(&mut self, layer: Option<usize>, role: &str, name: &str, old: &Tensor, new: &Tensor, spec: &QuantSpec, gptq_loss: Option<f64>) -> Result<()> {
        let (rows, cols) = old.dims2()?;
        let diff = (old - new)?;
        let num = diff.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?.sqrt();
        let den = old.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?.sqrt();
        let max_abs = diff.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? as f64;
        if !num.is_finite() {
            bail!("quantizing '{name}' with {spec} produced non-finite weights");
        }
        self.matrices.push(MatrixReport {
            layer,
            role: role.to_string(),
            name: name.to_string(),
            rows,
            cols,
            rel_error: if den > 0.0 { num / den } else { 0.0 },
            max_abs_error: max_abs,
            bits_per_weight: bits_per_weight(spec, rows, cols),
            format: storage_format(spec, rows, cols),
            gptq_loss,
        });
        Ok(())
    }
}

fn selected(opts: &QuantizeOptions, role: &str) -> bool {
    if is_attention_role(role) {
        opts.attention
    } else {
        opts.mlp
    }
}

/// Calls `f(layer, role, linear)` for every selected block linear, in forward order.
fn for_each_selected(q: &mut HookedTransformer, opts: &QuantizeOptions, mut f: impl FnMut(usize, &'static str, &mut Linear) -> Result<()>) -> Result<()> {
    for (l, block) in q.blocks.iter_mut().enumerate() {
        for (role, lin) in block.linears_labeled_mut() {
            if selected(opts, role) {
                f(l, role, lin)?;
            }
        }
    }
    Ok(())
}

/// Embedding / unembedding quantization (data-free methods only: they have no calibration inputs).
fn quantize_embeddings(q: &mut HookedTransformer, spec: &QuantSpec, opts: &QuantizeOptions, state: &mut State) -> Result<()> {
    if !opts.embeddings && !opts.unembedding {
        return Ok(());
    }
    // Embeddings have no calibration inputs: calibrated methods fall back to RTN at their bits.
    let grid = |g: Option<usize>| g.map_or(quant::Granularity::Row, quant::Granularity::Group);
    let s = match spec {
        QuantSpec::Gptq(g) => QuantSpec::Rtn(quant::RtnSpec { bits: g.bits, granularity: grid(g.group), sym: g.sym }),
        QuantSpec::Awq(a) => QuantSpec::Rtn(quant::RtnSpec { bits: a.bits, granularity: grid(a.group), sym: a.sym }),
        QuantSpec::Int8(_) | QuantSpec::W8a8 => QuantSpec::Rtn(quant::RtnSpec { bits: 8, granularity: quant::Granularity::Row, sym: true }),
        other => other.clone(),
    };
    if opts.embeddings {
        let mut lin = Linear::new(q.embed_name.clone(), q.embed.clone(), None, false)?;
        let w = quant::quantize_weight(&q.embed, &s, &lin.name, None, None)?;
        state.record(None, "embed", &mut lin, w.clone(), &s, None)?;
        q.embed = w.clone();
        if q.cfg.tied_embeddings {
            q.unembed.set_weight(&w)?;
        }
    }
    if opts.unembedding && !(q.cfg.tied_embeddings && opts.embeddings) {
        let w = quant::quantize_weight(&q.unembed.weight(), &s, &q.unembed.name, None, None)?;
        state.record(None, "unembed", &mut q.unembed, w, &s, None)?;
    }
    Ok(())
}

/// Calibration batches from the spec's data source (or the explicit windows in the options).
fn calibration_batches(model: &HookedTransformer, data: CalibData, samples: usize, seqlen: usize, seed: u64, opts: &QuantizeOptions) -> Result<Vec<Batch>> {
    let batch = opts.calibration_batch;
    if let Some(w) = &opts.calibration {
        if w.is_empty() {
            bail!("explicit calibration windows are empty");
        }
        return window_batches(w, batch);
    }
    let seqlen = seqlen.min(model.cfg.n_ctx);
    if samples == 0 {
        bail!("calibration needs at least one sample");
    }
    let windows = crate::data::calibration_windows(model, corpus(data), samples, seqlen, seed)
        .with_context(|| format!("drawing {samples} calibration windows of {seqlen} tokens from {}", data.name()))?;
    if windows.len() < samples {
        bail!("calibration set has {} windows, fewer than the {samples} asked for", windows.len());
    }
    window_batches(&windows, batch)
}

/// Equal-length token windows grouped into batches of `batch` rows.
fn window_batches(windows: &[Vec<u32>], batch: usize) -> Result<Vec<Batch>> {
    windows.chunks(batch.max(1)).map(|c| Batch::from_rows(c, crate::Padding::Right, 0)).collect()
}

/// Returned by the capturing hook once every wanted input has been seen: the rest of the block's
/// forward would only be computed to be thrown away (for the q/k/v inputs, nearly all of it).
#[derive(Debug)]
struct InputsSeen;

impl std::fmt::Display for InputsSeen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("every wanted block input was seen")
    }
}

impl std::error::Error for InputsSeen {}

/// Runs block `l` of `model` on each batch's input, calling `visit(hook, x [tokens, features],
/// batch)` for each requested linear-input hook (tokens = the batch's rows × positions, row-major).
/// Without hooks it returns the block outputs; with hooks each forward stops as soon as they have
/// all been seen, and nothing is returned.
fn visit_block_inputs(
    model: &HookedTransformer,
    l: usize,
    batches: &[Batch],
    inputs: &[Tensor],
    hooks_wanted: &[String],
    mut visit: impl FnMut(&str, &Tensor, &Batch) -> Result<()>,
) -> Result<Vec<Tensor>> {
    let mut outs = Vec::with_capacity(batches.len());
    // distinct hooks: the forward can stop once this many inputs were captured
    let wanted = hooks_wanted.iter().collect::<std::collections::HashSet<_>>().len();
    for (b, x) in batches.iter().zip(inputs) {
        let seen: RefCell<Vec<(String, Tensor)>> = RefCell::new(Vec::new());
        let mut hooks = Hooks::new();
        if !hooks_wanted.is_empty() {
            let seen = &seen;
            hooks.add(hooks_wanted.to_vec(), move |name, t| {
                let d = t.dims();
                let feats: usize = d[2..].iter().product();
                let mut seen = seen.borrow_mut();
                seen.push((name.to_string(), t.reshape((d[0] * d[1], feats))?));
                if seen.len() == wanted {
                    return Err(InputsSeen.into());
                }
                Ok(None)
            });
        }
        match model.run_block(l, x, b, Some(&mut hooks)) {
            Ok(out) if hooks_wanted.is_empty() => outs.push(out),
            Ok(_) => bail!("block {l}'s forward ended before reaching every hook of {hooks_wanted:?}"),
            Err(e) if e.downcast_ref::<InputsSeen>().is_some() => {}
            Err(e) => return Err(e),
        }
        drop(hooks);
        for (name, t) in seen.into_inner() {
            visit(&name, &t, b)?;
        }
    }
    Ok(outs)
}

fn gptq_model(model: &HookedTransformer, q: &mut HookedTransformer, spec: &QuantSpec, g: &quant::GptqSpec, opts: &QuantizeOptions, state: &mut State) -> Result<()> {
    let batches = calibration_batches(model, g.data, g.samples, g.seqlen, g.seed, opts)?;
    state.calibration_tokens = batches.iter().map(|b| b.batch_size() * b.seq_len()).sum();
    let mut inputs: Vec<Tensor> = batches.iter().map(|b| model.embed_tokens(b)).collect::<Result<_>>()?;
    let gopts = GptqOptions::from(g);
    let pb = crate::progress::bar(q.cfg.n_layers as u64, "gptq");
    for l in 0..q.cfg.n_layers {
        let roles: Vec<&'static str> = q.blocks[l].linears_labeled().into_iter().map(|(r, _)| r).filter(|r| selected(opts, r)).collect();
        // Sub-layer order: the reference's true-sequential groups, or everything at once.
        let groups: Vec<Vec<&'static str>> = if g.true_sequential {
            let order: [&[&str]; 4] = [&["qkv", "q", "k", "v"], &["o"], &["fc_in", "gate", "up"], &["fc_out", "down"]];
            order.iter().map(|grp| roles.iter().copied().filter(|r| grp.contains(r)).collect::<Vec<_>>()).filter(|v| !v.is_empty()).collect()
        } else {
            vec![roles.clone()]
        };
        for group in groups {
            let wanted: Vec<String> = {
                let mut v: Vec<String> = group.iter().map(|r| linear_input_hook(r, l)).collect();
                v.dedup();
                v
            };
            let mut acc: HashMap<String, HessianAccumulator> = HashMap::new();
            visit_block_inputs(q, l, &batches, &inputs, &wanted, |name, x, b| {
                let a = acc.entry(name.to_string()).or_insert_with(|| HessianAccumulator::new(x.dim(1).unwrap_or(0)));
                // Each calibration sequence is one sample of H = 2/N · Σ XᵀX, as in the reference
                // (which feeds one sequence per add_batch); a flat [b·t, in] would count as one.
                a.add_batch(&x.reshape((b.batch_size(), b.seq_len(), x.dim(1)?))?)
            })?;
            // Roles sharing an input (q/k/v, gate/up) share its Hessian; the last of them takes the
            // accumulator itself, so no copy of a large H outlives its use.
            let mut uses: HashMap<String, usize> = HashMap::new();
            for r in &group {
                *uses.entry(linear_input_hook(r, l)).or_default() += 1;
            }
            for (role, lin) in q.blocks[l].linears_labeled_mut() {
                if !group.contains(&role) {
                    continue;
                }
                let hook = linear_input_hook(role, l);
                let left = uses.get_mut(&hook).expect("every role of the group is counted");
                *left -= 1;
                let a = if *left == 0 { acc.remove(&hook) } else { acc.get(&hook).cloned() };
                let a = a.with_context(|| format!("no calibration inputs reached '{hook}'"))?;
                let out = quant::gptq_quantize_accumulated(&lin.weight(), a, &gopts, &lin.name)?;
                state.record(Some(l), role, lin, out.weight, spec, Some(out.loss))?;
            }
        }
        // Inputs of the next block come from this block with its weights quantized.
        inputs = visit_block_inputs(q, l, &batches, &inputs, &[], |_, _, _| Ok(()))?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(())
}

/// Per (layer, role): input columns whose calibration activations reach `threshold` in magnitude.
fn outlier_columns(model: &HookedTransformer, windows: &[Vec<u32>], opts: &QuantizeOptions, threshold: f64) -> Result<HashMap<(usize, &'static str), Vec<usize>>> {
    let mut col_max: HashMap<String, Vec<f32>> = HashMap::new();
    // one representative role per distinct linear input (q ~ k, v, qkv; up ~ gate, fc_in; down ~ fc_out)
    let names: Vec<String> = (0..model.cfg.n_layers).flat_map(|l| ["q", "o", "up", "down"].iter().map(move |r| linear_input_hook(r, l))).collect();
    for batch in window_batches(windows, opts.calibration_batch)? {
        let (_, cache) = model.run_with_cache(&batch, names.clone())?;
        for n in &names {
            let t = cache.get(n)?;
            let d = t.dims();
            let feats: usize = d[2..].iter().product();
            let m = t.reshape((d[0] * d[1], feats))?.abs()?.max(0)?.to_vec1::<f32>()?;
            let e = col_max.entry(n.clone()).or_insert_with(|| vec![0.0; feats]);
            for (a, b) in e.iter_mut().zip(m) {
                *a = a.max(b);
            }
        }
    }
    let mut out = HashMap::new();
    for (l, block) in model.blocks.iter().enumerate() {
        for (role, _) in block.linears_labeled() {
            let cols = col_max.get(&linear_input_hook(role, l)).map(|m| m.iter().enumerate().filter(|(_, &v)| v as f64 >= threshold).map(|(i, _)| i).collect()).unwrap_or_default();
            out.insert((l, role), cols);
        }
    }
    Ok(out)
}

fn awq_model(model: &HookedTransformer, q: &mut HookedTransformer, spec: &QuantSpec, a: &quant::AwqSpec, opts: &QuantizeOptions, state: &mut State) -> Result<()> {
    let batches = calibration_batches(model, a.data, a.samples, a.seqlen, a.seed, opts)?;
    state.calibration_tokens = batches.iter().map(|b| b.batch_size() * b.seq_len()).sum();
    let grid = AwqGrid { bits: a.bits, group: a.group, sym: a.sym };
    // AWQ (like llm-awq) calibrates every block on the full-precision model's activations.
    let mut inputs: Vec<Tensor> = batches.iter().map(|b| model.embed_tokens(b)).collect::<Result<_>>()?;
    let pb = crate::progress::bar(q.cfg.n_layers as u64, "awq");
    for l in 0..q.cfg.n_layers {
        let out = awq_block(model, q, l, &batches, &inputs, &grid, &|r| selected(opts, r)).with_context(|| format!("AWQ of block {l}"))?;
        for (role, effective) in &out.effective {
            let original = model.blocks[l].linears_labeled().into_iter().find(|(r, _)| r == role).map(|(_, lin)| lin).context("AWQ quantized a linear the model lacks")?;
            state.report(Some(l), role, &original.name, &original.weight(), effective, spec, None)?;
        }
        inputs = out.outputs;
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::names;

    #[test]
    fn block_inputs_stopped_early_are_those_of_a_full_forward() {
        let m = crate::load_model(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/fixtures/llama")).unwrap();
        let batch = Batch::from_rows(&[vec![1u32, 5, 9, 3, 7, 2], vec![4, 4, 8, 1, 0, 6]], crate::Padding::Right, 0).unwrap();
        let l = 1;
        let (_, cache) = m.run_with_cache(&batch, vec![names::resid_pre(l), names::resid_post(l), linear_input_hook("q", l), linear_input_hook("o", l), linear_input_hook("down", l)]).unwrap();
        let input = cache.get(&names::resid_pre(l)).unwrap().clone();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // q's and o's inputs: the forward ends after z, before the MLP; what was captured must be
        // what the full forward computes there, bit for bit
        let wanted = vec![linear_input_hook("q", l), linear_input_hook("o", l)];
        let mut seen = Vec::new();
        let outs = visit_block_inputs(&m, l, std::slice::from_ref(&batch), std::slice::from_ref(&input), &wanted, |name, x, _| {
            seen.push((name.to_string(), flat(x)));
            Ok(())
        })
        .unwrap();
        assert!(outs.is_empty());
        assert_eq!(seen.iter().map(|s| s.0.clone()).collect::<Vec<_>>(), wanted);
        for (name, x) in &seen {
            assert_eq!(x, &flat(cache.get(name).unwrap()), "{name}");
        }
        // the last linear's input, and without hooks the block's output
        let mut down = Vec::new();
        visit_block_inputs(&m, l, std::slice::from_ref(&batch), std::slice::from_ref(&input), &[linear_input_hook("down", l)], |_, x, _| {
            down = flat(x);
            Ok(())
        })
        .unwrap();
        assert_eq!(down, flat(cache.get(&linear_input_hook("down", l)).unwrap()));
        let outs = visit_block_inputs(&m, l, std::slice::from_ref(&batch), std::slice::from_ref(&input), &[], |_, _, _| Ok(())).unwrap();
        assert_eq!(flat(&outs[0]), flat(cache.get(&names::resid_post(l)).unwrap()));
    }
}
