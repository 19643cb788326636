//! Sparse autoencoders (SAEs) trained in candle on a model's activations at one hook.
//!
//! Variants (all share a pre-encoder bias `b_dec` and unit-norm decoder rows):
//! - `relu`: `f = ReLU((x − b_dec) W_enc + b_enc)`, loss ‖x − x̂‖² + `l1`·Σ f.
//! - `topk`: the `k` largest pre-activations kept (then ReLU), loss ‖x − x̂‖² (Gao et al. 2024).
//! - `gated` (Rajamanoharan et al. 2024): a gate path `π_gate = (x − b_dec) W_gate + b_gate`
//!   decides *which* features fire (Heaviside), a magnitude path sharing the encoder directions
//!   through a per-feature rescaling `W_mag = W_gate · exp(r_mag)` decides *how much*:
//!   `f = 1[π_gate > 0] ⊙ ReLU((x − b_dec) W_mag + b_mag)`. The L1 penalty acts on ReLU(π_gate)
//!   only, and an auxiliary reconstruction of ReLU(π_gate) through the frozen (detached) decoder
//!   gives the gate path a reconstruction signal (the Heaviside has no gradient).
//!
//! Shapes: `W_enc [d_in, d_hidden]`, `W_dec [d_hidden, d_in]` (row i = feature i's direction,
//! kept at unit norm: the gradient component parallel to each row is removed before the Adam step
//! and rows are renormalised after it). Inputs are rescaled by `input_scale` (fixed from the first
//! training batch so that E‖x‖² = d_in) so that `l1` means the same thing at every hook;
//! reconstructions are returned in the original units.
//!
//! Training data ([`ActivationStream`]): activations at the hook for text windows (C4 by default),
//! collected `buffer_windows` at a time, shuffled, consumed, then refilled from fresh windows — so
//! memory stays bounded. Padding, the first position of each window (the attention sink, whose
//! norm is an outlier) and BOS tokens never enter training or evaluation.
use crate::batch::{batches, valid_indices, Batch};
use crate::rng::Rng;
use crate::{HookedTransformer, Hooks, QiError};
use anyhow::{Context, Result};
use candle_core::{DType, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The SAE-training settings of the analyses that train their own SAEs (`features`,
/// `prune-overlap`, `sae-compare`). Flattened into their options, so the keys stay `variant`,
/// `expansion`, `k`, `l1`, `train_steps`, `train_batch`, `train_windows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SaeTraining {
    pub variant: Variant,
    pub expansion: usize,
    pub k: usize,
    pub l1: f64,
    pub train_steps: usize,
    pub train_batch: usize,
    pub train_windows: usize,
}

impl Default for SaeTraining {
    fn default() -> Self {
        SaeTraining { variant: Variant::Topk, expansion: 8, k: 32, l1: 1.0, train_steps: 300, train_batch: 256, train_windows: 32 }
    }
}

impl SaeTraining {
    /// One training run at `hook` on windows of `source` × `seq_len`; warm-up is a tenth of the
    /// steps. `c4` and `wikitext2` train on their SAE-training split, disjoint from the
    /// evaluation text ([`crate::data::training_windows`]).
    pub fn train_options(&self, hook: &str, source: &str, seq_len: usize, forward_batch: usize, seed: u64) -> TrainOptions {
        TrainOptions {
            variant: self.variant,
            expansion: self.expansion,
            k: self.k,
            l1: self.l1,
            steps: self.train_steps,
            batch_size: self.train_batch,
            warmup_steps: (self.train_steps / 10).max(1),
            hook: hook.to_string(),
            source: source.to_string(),
            seq_len,
            buffer_windows: self.train_windows,
            forward_batch,
            seed: seed.wrapping_add(1),
            ..Default::default()
        }
    }
}

/// The SAE architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Relu,
    Topk,
    Gated,
}

impl std::str::FromStr for Variant {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "relu" => Ok(Variant::Relu),
            "topk" => Ok(Variant::Topk),
            "gated" => Ok(Variant::Gated),
            _ => Err(QiError::invalid("SAE variant", s, "expected relu, topk or gated").into()),
        }
    }
}

/// What an SAE is (saved beside its weights as `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeConfig {
    pub variant: Variant,
    /// Width of the hooked activation.
    pub d_in: usize,
    /// Number of features.
    pub d_hidden: usize,
    /// Sparsity coefficient (relu, gated).
    pub l1: f64,
    /// Active features per token (topk).
    pub k: usize,
    /// Inputs are multiplied by this before encoding (set from the training data).
    pub input_scale: f64,
    /// The hook the SAE was trained on (informational; checked by [`ActivationStream`]).
    pub hook: String,
}

impl SaeConfig {
    /// Checks sizes and ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.d_in == 0 || self.d_hidden == 0 {
            return Err(QiError::invalid("SAE d_in/d_hidden", format!("{}/{}", self.d_in, self.d_hidden), "must be positive").into());
        }
        if self.variant == Variant::Topk && (self.k == 0 || self.k > self.d_hidden) {
            return Err(QiError::invalid("k", self.k, format!("TopK needs 1 ≤ k ≤ d_hidden ({})", self.d_hidden)).into());
        }
        if !(self.l1 >= 0.0 && self.l1.is_finite()) {
            return Err(QiError::invalid("l1", self.l1, "must be a finite number ≥ 0").into());
        }
        if !(self.input_scale > 0.0 && self.input_scale.is_finite()) {
            return Err(QiError::invalid("input_scale", self.input_scale, "must be positive").into());
        }
        Ok(())
    }
}

/// Training options (`qi sae train --set key=value`); every random choice follows `seed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainOptions {
    pub variant: Variant,
    /// Number of features; 0 = `expansion` × d_in.
    pub d_hidden: usize,
    pub expansion: usize,
    pub l1: f64,
    pub k: usize,
    /// Peak learning rate (Adam), reached after `warmup_steps` of linear warm-up, then cosine
    /// decay to `min_lr_frac` × peak at the last step.
    pub lr: f64,
    pub warmup_steps: usize,
    pub min_lr_frac: f64,
    /// Tokens per optimisation step.
    pub batch_size: usize,
    pub steps: usize,
    pub seed: u64,
    /// Every this many steps, features that did not fire since the last check are re-initialised
    /// towards badly reconstructed inputs (0 = never).
    pub resample_every: usize,
    /// Hook to train on; empty = `blocks.{n_layers/2}.hook_resid_post`.
    pub hook: String,
    /// `c4`, `wikitext2` (their SAE-training splits), `random` or a text file (see
    /// `analysis::training_windows`).
    pub source: String,
    pub seq_len: usize,
    /// Windows per activation buffer (refilled with fresh windows when used up).
    pub buffer_windows: usize,
    /// Rows per model forward pass while collecting activations.
    pub forward_batch: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            variant: Variant::Topk,
            d_hidden: 0,
            expansion: 8,
            l1: 1.0,
            k: 32,
            lr: 1e-3,
            warmup_steps: 50,
            min_lr_frac: 0.1,
            batch_size: 512,
            steps: 400,
            seed: 0,
            resample_every: 0,
            hook: String::new(),
            source: "c4".into(),
            seq_len: 128,
            buffer_windows: 64,
            forward_batch: 8,
        }
    }
}

impl TrainOptions {
    /// One line per option, for `--help`.
    pub fn doc() -> &'static str {
        "variant: relu | topk | gated\n\
         d_hidden: number of features (0 = expansion × d_in)\n\
         expansion: features per input dimension when d_hidden = 0\n\
         l1: sparsity coefficient (relu, gated)\n\
         k: active features per token (topk)\n\
         lr: peak Adam learning rate\n\
         warmup_steps: linear warm-up steps\n\
         min_lr_frac: final learning rate as a fraction of the peak (cosine decay), in [0, 1]\n\
         batch_size: tokens per step\n\
         steps: optimisation steps\n\
         seed: initialisation, data windows and shuffling\n\
         resample_every: re-initialise features dead for this many steps (0 = never)\n\
         hook: hook name (default blocks.{n_layers/2}.hook_resid_post)\n\
         source: c4 | wikitext2 | random | path to a text file\n\
         seq_len: tokens per window\n\
         buffer_windows: windows per shuffled activation buffer\n\
         forward_batch: windows per forward pass while collecting"
    }

    /// Checks ranges; errors name the option.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.min_lr_frac) {
            return Err(QiError::invalid("min_lr_frac", self.min_lr_frac, "must be in [0, 1]").into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(QiError::invalid("lr", self.lr, "must be positive").into());
        }
        for (name, v) in [("batch_size", self.batch_size), ("steps", self.steps), ("buffer_windows", self.buffer_windows), ("forward_batch", self.forward_batch)] {
            if v == 0 {
                return Err(QiError::invalid(name, v, "must be at least 1").into());
            }
        }
        if self.d_hidden == 0 && self.expansion == 0 {
            return Err(QiError::invalid("expansion", 0, "must be at least 1 when d_hidden is 0").into());
        }
        Ok(())
    }

    /// The hook to train on for `model`, checked to exist.
    pub fn hook_for(&self, model: &HookedTransformer) -> Result<String> {
        let hook = if self.hook.is_empty() { crate::hooks::names::resid_post(model.cfg.n_layers / 2) } else { self.hook.clone() };
        check_hook(model, &hook)?;
        Ok(hook)
    }

    /// Learning rate at `step` (0-based): linear warm-up, then cosine decay.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let rest = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = ((step - self.warmup_steps) as f64 / rest).min(1.0);
        let floor = self.lr * self.min_lr_frac;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// Errors unless `hook` is one of the model's hook points (the error suggests close names).
pub fn check_hook(model: &HookedTransformer, hook: &str) -> Result<()> {
    crate::HookFilter::new(&[hook]).validate(&model.hook_names())?;
    if hook.contains('*') {
        return Err(QiError::invalid("hook", hook, "expected one hook name, not a pattern").into());
    }
    Ok(())
}

/// A sparse autoencoder (see the module docs).
pub struct Sae {
    pub cfg: SaeConfig,
    w_enc: Var,
    b_enc: Var,
    w_dec: Var,
    b_dec: Var,
    /// Gated only: per-feature log rescaling of the magnitude path and its bias.
    r_mag: Option<Var>,
    b_mag: Option<Var>,
}

impl std::fmt::Debug for Sae {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sae").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// One training step's loss parts (scaled units, mean over the batch).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StepLoss {
    pub total: f64,
    pub reconstruction: f64,
    pub sparsity: f64,
    pub auxiliary: f64,
    pub l0: f64,
}

struct Forward {
    features: Tensor,
    recon: Tensor,
    sparsity: Option<Tensor>,
    auxiliary: Option<Tensor>,
}

fn normal(shape: (usize, usize), rng: &mut Rng) -> Result<Tensor> {
    let v: Vec<f32> = (0..shape.0 * shape.1).map(|_| rng.normal() as f32).collect();
    Ok(Tensor::from_vec(v, shape, &crate::device::device()?)?)
}

fn unit_rows(w: &Tensor) -> Result<Tensor> {
    let n = w.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
    Ok(w.broadcast_div(&n)?)
}

impl Sae {
    /// A freshly initialised SAE: random unit decoder rows, encoder = decoder transpose, zero
    /// biases (`b_dec` is set from data by [`train`]).
    pub fn new(cfg: SaeConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let mut rng = Rng::new(seed);
        let w_dec = unit_rows(&normal((cfg.d_hidden, cfg.d_in), &mut rng)?)?;
        let w_enc = w_dec.t()?.contiguous()?;
        let dev = crate::device::device()?;
        let zeros = |n: usize| Var::zeros(n, DType::F32, &dev);
        let gated = cfg.variant == Variant::Gated;
        Ok(Sae {
            w_enc: Var::from_tensor(&w_enc)?,
            b_enc: zeros(cfg.d_hidden)?,
            w_dec: Var::from_tensor(&w_dec)?,
            b_dec: zeros(cfg.d_in)?,
            r_mag: if gated { Some(zeros(cfg.d_hidden)?) } else { None },
            b_mag: if gated { Some(zeros(cfg.d_hidden)?) } else { None },
            cfg,
        })
    }

    fn vars(&self) -> Vec<Var> {
        let mut v = vec![self.w_enc.clone(), self.b_enc.clone(), self.w_dec.clone(), self.b_dec.clone()];
        v.extend(self.r_mag.clone());
        v.extend(self.b_mag.clone());
        v
    }

    /// Decoder directions `[d_hidden, d_in]` (unit rows).
    pub fn decoder(&self) -> Tensor {
        self.w_dec.as_tensor().clone()
    }

    /// Encoder `[d_in, d_hidden]` (the gate encoder for gated SAEs).
    pub fn encoder(&self) -> Tensor {
        self.w_enc.as_tensor().clone()
    }

    fn check_width(&self, x: &Tensor) -> Result<()> {
        let w = x.dims().last().copied().unwrap_or(0);
        if x.rank() != 2 || w != self.cfg.d_in {
            return Err(QiError::invalid(
                "SAE input",
                format!("{:?}", x.dims()),
                format!("this SAE reads [tokens, {}] activations (d_in {}, trained on '{}'); the activation has width {w}", self.cfg.d_in, self.cfg.d_in, self.cfg.hook),
            )
            .into());
        }
        Ok(())
    }

    /// Forward pass on scaled inputs `[n, d_in]`.
    fn forward_scaled(&self, xs: &Tensor, with_losses: bool) -> Result<Forward> {
        let centred = xs.broadcast_sub(self.b_dec.as_tensor())?;
        let pre = centred.matmul(self.w_enc.as_tensor())?.broadcast_add(self.b_enc.as_tensor())?;
        let decode = |f: &Tensor| -> Result<Tensor> { Ok(f.matmul(self.w_dec.as_tensor())?.broadcast_add(self.b_dec.as_tensor())?) };
        let (features, sparsity, auxiliary) = match self.cfg.variant {
            Variant::Relu => {
                let f = pre.relu()?;
                let s = if with_losses { Some((f.sum(1)?.mean(0)? * self.cfg.l1)?) } else { None };
                (f, s, None)
            }
            Variant::Topk => {
                let mask = topk_mask(&pre, self.cfg.k)?;
                ((pre.relu()? * mask)?, None, None)
            }
            Variant::Gated => {
                let (r_mag, b_mag) = (self.r_mag.as_ref().expect("gated"), self.b_mag.as_ref().expect("gated"));
                // the Heaviside gate carries no gradient: a detached 0/1 mask
                let gate = pre.gt(0f64)?.to_dtype(DType::F32)?.detach();
                let magnitude = pre.broadcast_sub(self.b_enc.as_tensor())?.broadcast_mul(&r_mag.as_tensor().exp()?)?.broadcast_add(b_mag.as_tensor())?.relu()?;
                let f = (gate * magnitude)?;
                if with_losses {
                    let gate_act = pre.relu()?;
                    let s = (gate_act.sum(1)?.mean(0)? * self.cfg.l1)?;
                    let frozen = gate_act.matmul(&self.w_dec.as_tensor().detach())?.broadcast_add(&self.b_dec.as_tensor().detach())?;
                    let aux = (xs - frozen)?.sqr()?.sum(1)?.mean(0)?;
                    (f, Some(s), Some(aux))
                } else {
                    (f, None, None)
                }
            }
        };
        let recon = decode(&features)?;
        Ok(Forward { features, recon, sparsity, auxiliary })
    }

    /// Feature activations `[n, d_hidden]` of activations `[n, d_in]` (original units).
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        self.check_width(x)?;
        Ok(self.forward_scaled(&(x.to_dtype(DType::F32)? * self.cfg.input_scale)?, false)?.features)
    }

    /// Reconstruction `[n, d_in]` of activations `[n, d_in]`, in the original units.
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        self.check_width(x)?;
        let fw = self.forward_scaled(&(x.to_dtype(DType::F32)? * self.cfg.input_scale)?, false)?;
        Ok((fw.recon / self.cfg.input_scale)?)
    }

    /// Features and reconstruction together (one forward).
    pub fn encode_and_reconstruct(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check_width(x)?;
        let fw = self.forward_scaled(&(x.to_dtype(DType::F32)? * self.cfg.input_scale)?, false)?;
        Ok((fw.features, (fw.recon / self.cfg.input_scale)?))
    }

    /// Writes `sae.safetensors` and `config.json` into `dir` (each atomically).
    pub fn save(&self, dir: &Path, train: Option<&TrainOptions>) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut t: HashMap<String, Tensor> = HashMap::new();
        for (name, v) in [("W_enc", &self.w_enc), ("b_enc", &self.b_enc), ("W_dec", &self.w_dec), ("b_dec", &self.b_dec)] {
            t.insert(name.into(), v.as_tensor().clone());
        }
        if let (Some(r), Some(b)) = (&self.r_mag, &self.b_mag) {
            t.insert("r_mag".into(), r.as_tensor().clone());
            t.insert("b_mag".into(), b.as_tensor().clone());
        }
        crate::io::save_safetensors(&t, &dir.join("sae.safetensors"))?;
        let json = serde_json::json!({ "sae": self.cfg, "trained_with": train });
        crate::io::save_text(&serde_json::to_string_pretty(&json)?, &dir.join("config.json"))
    }

    /// Loads an SAE written by [`Sae::save`].
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| QiError::invalid("SAE directory", dir.display(), format!("cannot read config.json ({e})")))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", cfg_path.display()))?;
        let cfg: SaeConfig = serde_json::from_value(v["sae"].clone()).with_context(|| format!("{}: bad 'sae' config", cfg_path.display()))?;
        cfg.validate()?;
        let t = candle_core::safetensors::load(dir.join("sae.safetensors"), &crate::device::device()?).with_context(|| format!("{}: cannot read sae.safetensors", dir.display()))?;
        let get = |name: &str, shape: &[usize]| -> Result<Var> {
            let x = t.get(name).ok_or_else(|| QiError::MissingTensor { file: dir.join("sae.safetensors"), tensor: name.into() })?;
            if x.dims() != shape {
                return Err(QiError::ShapeMismatch { file: dir.join("sae.safetensors"), tensor: name.into(), found: x.dims().to_vec(), expected: shape.to_vec() }.into());
            }
            Ok(Var::from_tensor(&x.to_dtype(DType::F32)?)?)
        };
        let (d, h) = (cfg.d_in, cfg.d_hidden);
        let gated = cfg.variant == Variant::Gated;
        Ok(Sae {
            w_enc: get("W_enc", &[d, h])?,
            b_enc: get("b_enc", &[h])?,
            w_dec: get("W_dec", &[h, d])?,
            b_dec: get("b_dec", &[d])?,
            r_mag: if gated { Some(get("r_mag", &[h])?) } else { None },
            b_mag: if gated { Some(get("b_mag", &[h])?) } else { None },
            cfg,
        })
    }

    /// Norms of the decoder rows (1 after every training step).
    pub fn decoder_norms(&self) -> Result<Vec<f32>> {
        Ok(self.w_dec.as_tensor().sqr()?.sum(1)?.sqrt()?.to_vec1()?)
    }
}

/// `[n, h]` 0/1 mask of each row's `k` largest entries (ties broken by index), exact count `k`.
pub fn topk_mask(pre: &Tensor, k: usize) -> Result<Tensor> {
    let (n, h) = pre.dims2()?;
    let v: Vec<f32> = pre.detach().flatten_all()?.to_vec1()?;
    let mut mask = vec![0f32; n * h];
    let mut idx: Vec<usize> = Vec::with_capacity(h);
    for r in 0..n {
        let row = &v[r * h..(r + 1) * h];
        idx.clear();
        idx.extend(0..h);
        if k < h {
            idx.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        }
        for &i in &idx[..k.min(h)] {
            mask[r * h + i] = 1.0;
        }
    }
    Ok(Tensor::from_vec(mask, (n, h), pre.device())?)
}

/// What happened during training.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainLog {
    pub losses: Vec<StepLoss>,
    pub resampled: usize,
    pub tokens: usize,
    pub seconds: f64,
}

/// Trains an SAE of architecture `cfg` (its `input_scale` is replaced by one fitted on the first
/// batch) on batches `[batch_size, d_in]` from `next_batch`.
pub fn train(mut cfg: SaeConfig, opts: &TrainOptions, mut next_batch: impl FnMut() -> Result<Tensor>) -> Result<(Sae, TrainLog)> {
    opts.validate()?;
    let start = std::time::Instant::now();
    let first = next_batch()?.to_dtype(DType::F32)?;
    let mean_sq = first.sqr()?.sum(1)?.mean(0)?.to_scalar::<f32>()? as f64;
    if !(mean_sq > 0.0 && mean_sq.is_finite()) {
        return Err(QiError::invalid("training activations", mean_sq, "mean squared norm must be positive and finite").into());
    }
    // an f32 value, so the JSON round trip of the config reproduces the same f32 multiplier
    cfg.input_scale = (cfg.d_in as f64 / mean_sq).sqrt() as f32 as f64;
    let sae = Sae::new(cfg, opts.seed)?;
    let xs0 = (&first * sae.cfg.input_scale)?;
    sae.b_dec.set(&xs0.mean(0)?)?;
    let mut opt = AdamW::new(sae.vars(), ParamsAdamW { lr: opts.lr_at(0), weight_decay: 0.0, ..Default::default() })?;
    let mut log = TrainLog::default();
    let mut fired = vec![0u64; sae.cfg.d_hidden];
    let mut rng = Rng::new(opts.seed ^ 0x5AE);
    let bar = crate::progress::bar(opts.steps as u64, "training SAE");
    let mut batch = Some(first);
    for step in 0..opts.steps {
        let x = match batch.take() {
            Some(b) => b,
            None => next_batch()?.to_dtype(DType::F32)?,
        };
        sae.check_width(&x)?;
        let xs = (x * sae.cfg.input_scale)?;
        let fw = sae.forward_scaled(&xs, true)?;
        let rec = (&xs - &fw.recon)?.sqr()?.sum(1)?.mean(0)?;
        let mut total = rec.clone();
        for part in [&fw.sparsity, &fw.auxiliary].into_iter().flatten() {
            total = (total + part)?;
        }
        let mut grads = total.backward()?;
        // keep the decoder rows on the unit sphere: drop the radial part of their gradient …
        if let Some(g) = grads.remove(sae.w_dec.as_tensor()) {
            let w = sae.w_dec.as_tensor();
            let radial = (g.mul(w)?.sum_keepdim(1)?).broadcast_mul(w)?;
            grads.insert(sae.w_dec.as_tensor(), (g - radial)?);
        }
        opt.set_learning_rate(opts.lr_at(step));
        opt.step(&grads)?;
        // … and renormalise after the step
        sae.w_dec.set(&unit_rows(sae.w_dec.as_tensor())?)?;

        let active = fw.features.gt(0f64)?.to_dtype(DType::F32)?;
        let counts: Vec<f32> = active.sum(0)?.to_vec1()?;
        for (c, n) in fired.iter_mut().zip(&counts) {
            *c += *n as u64;
        }
        let scalar = |t: &Option<Tensor>| -> Result<f64> { Ok(match t { Some(t) => t.to_scalar::<f32>()? as f64, None => 0.0 }) };
        log.losses.push(StepLoss {
            total: total.to_scalar::<f32>()? as f64,
            reconstruction: rec.to_scalar::<f32>()? as f64,
            sparsity: scalar(&fw.sparsity)?,
            auxiliary: scalar(&fw.auxiliary)?,
            l0: counts.iter().map(|&c| c as f64).sum::<f64>() / xs.dim(0)? as f64,
        });
        log.tokens += xs.dim(0)?;
        if opts.resample_every > 0 && (step + 1) % opts.resample_every == 0 && step + 1 < opts.steps {
            log.resampled += resample_dead(&sae, &fired, &xs, &fw.recon, &mut rng)?;
            fired.iter_mut().for_each(|c| *c = 0);
        }
        bar.inc(1);
        if step % 10 == 0 {
            bar.set_message(format!("loss {:.3}", log.losses[step].total));
        }
    }
    bar.finish_and_clear();
    log.seconds = start.elapsed().as_secs_f64();
    Ok((sae, log))
}

/// Re-initialises features that never fired: each gets the direction of a badly reconstructed
/// input of the batch (sampled ∝ squared error), encoder column = that direction scaled to 0.2 ×
/// the mean alive encoder norm, encoder bias 0. Returns how many were resampled.
fn resample_dead(sae: &Sae, fired: &[u64], xs: &Tensor, recon: &Tensor, rng: &mut Rng) -> Result<usize> {
    let dead: Vec<usize> = (0..fired.len()).filter(|&i| fired[i] == 0).collect();
    if dead.is_empty() {
        return Ok(0);
    }
    let err: Vec<f32> = (xs - recon)?.sqr()?.sum(1)?.to_vec1()?;
    let total: f64 = err.iter().map(|&e| e as f64).sum();
    if total <= 0.0 {
        return Ok(0);
    }
    let centred: Vec<Vec<f32>> = xs.broadcast_sub(sae.b_dec.as_tensor())?.to_vec2()?;
    let mut w_dec: Vec<Vec<f32>> = sae.w_dec.as_tensor().to_vec2()?;
    let mut w_enc: Vec<Vec<f32>> = sae.w_enc.as_tensor().t()?.contiguous()?.to_vec2()?;
    let mut b_enc: Vec<f32> = sae.b_enc.as_tensor().to_vec1()?;
    let alive: Vec<usize> = (0..fired.len()).filter(|&i| fired[i] > 0).collect();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let alive_norm = if alive.is_empty() { 1.0 } else { alive.iter().map(|&i| norm(&w_enc[i])).sum::<f32>() / alive.len() as f32 };
    for &f in &dead {
        let mut u = rng.uniform() * total;
        let mut pick = err.len() - 1;
        for (i, &e) in err.iter().enumerate() {
            u -= e as f64;
            if u <= 0.0 {
                pick = i;
                break;
            }
        }
        let d = &centred[pick];
        let n = norm(d).max(1e-12);
        w_dec[f] = d.iter().map(|x| x / n).collect();
        w_enc[f] = d.iter().map(|x| x / n * 0.2 * alive_norm).collect();
        b_enc[f] = 0.0;
    }
    let dev = sae.w_dec.device().clone();
    let (h, d) = (w_dec.len(), w_dec[0].len());
    sae.w_dec.set(&Tensor::from_vec(w_dec.concat(), (h, d), &dev)?)?;
    sae.w_enc.set(&Tensor::from_vec(w_enc.concat(), (h, d), &dev)?.t()?.contiguous()?)?;
    sae.b_enc.set(&Tensor::from_vec(b_enc, h, &dev)?)?;
    Ok(dead.len())
}

/// `[b, p]` f32 mask of the positions that enter SAE training and metrics: real tokens, not the
/// first position of a row (the attention sink) and not BOS.
pub fn token_mask(model: &HookedTransformer, batch: &Batch) -> Result<Tensor> {
    let valid = batch.valid_mask()?.to_dtype(DType::F32)?;
    let (b, p) = valid.dims2()?;
    let not_first = Tensor::from_vec((0..b * p).map(|i| if i % p == 0 { 0f32 } else { 1.0 }).collect::<Vec<_>>(), (b, p), valid.device())?;
    let mut m = (valid * not_first)?;
    if let Some(bos) = model.cfg.bos_token_id {
        let not_bos = batch.tokens.ne(bos as f64)?.to_dtype(DType::F32)?;
        m = (m * not_bos)?;
    }
    Ok(m)
}

/// Activations `[n_tokens, width]` at `hook` for `rows` (positions of [`token_mask`] only).
pub fn hook_activations(model: &HookedTransformer, hook: &str, rows: &[Vec<u32>], forward_batch: usize) -> Result<Tensor> {
    check_hook(model, hook)?;
    let mut parts = Vec::new();
    for b in batches(rows, forward_batch, model.pad_id())? {
        let cache = match crate::hooks::hook_layer(hook) {
            Some(l) => model.run_with_cache_until(&b, hook, l)?,
            None => model.run_with_cache(&b, hook)?.1,
        };
        let x = cache.get(hook)?;
        let (bs, p) = (x.dim(0)?, x.dim(1)?);
        let x = x.to_dtype(DType::F32)?.reshape((bs * p, ()))?;
        let idx = valid_indices(&token_mask(model, &b)?)?;
        if !idx.is_empty() {
            let idx = Tensor::from_vec(idx.clone(), idx.len(), x.device())?;
            parts.push(x.index_select(&idx, 0)?);
        }
    }
    if parts.is_empty() {
        return Err(QiError::invalid("tokens", 0, "no usable positions (windows need at least 2 tokens)").into());
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Shuffled training batches of activations at one hook, refilled from fresh text windows.
pub struct ActivationStream<'a> {
    model: &'a HookedTransformer,
    pub hook: String,
    opts: TrainOptions,
    buffer: Option<Tensor>,
    order: Vec<u32>,
    cursor: usize,
    refills: u64,
    rng: Rng,
}

impl<'a> ActivationStream<'a> {
    pub fn new(model: &'a HookedTransformer, opts: &TrainOptions) -> Result<Self> {
        opts.validate()?;
        let hook = opts.hook_for(model)?;
        Ok(ActivationStream { model, hook, opts: opts.clone(), buffer: None, order: vec![], cursor: 0, refills: 0, rng: Rng::new(opts.seed ^ 0xB0F) })
    }

    /// Width of the hooked activation (collects the first buffer).
    pub fn width(&mut self) -> Result<usize> {
        if self.buffer.is_none() {
            self.refill()?;
        }
        Ok(self.buffer.as_ref().expect("filled").dim(1)?)
    }

    fn refill(&mut self) -> Result<()> {
        let o = &self.opts;
        // a different window draw per refill; for consecutive sources the windows repeat
        let seed = o.seed.wrapping_add(self.refills.wrapping_mul(0x9E37_79B9));
        let rows = crate::data::training_windows(self.model, &o.source, o.buffer_windows, o.seq_len, seed)?;
        let x = hook_activations(self.model, &self.hook, &rows, o.forward_batch)?;
        let n = x.dim(0)?;
        if n < o.batch_size {
            return Err(QiError::invalid(
                "batch_size",
                o.batch_size,
                format!("a buffer of {} windows × {} tokens gives only {n} usable tokens; raise buffer_windows or seq_len, or lower batch_size", o.buffer_windows, o.seq_len),
            )
            .into());
        }
        self.order = (0..n as u32).collect();
        self.rng.shuffle(&mut self.order);
        self.buffer = Some(x);
        self.cursor = 0;
        self.refills += 1;
        Ok(())
    }

    /// The next `[batch_size, width]` batch.
    pub fn next_batch(&mut self) -> Result<Tensor> {
        let bs = self.opts.batch_size;
        if self.buffer.is_none() || self.cursor + bs > self.order.len() {
            self.refill()?;
        }
        let buffer = self.buffer.as_ref().expect("filled");
        let idx = Tensor::from_vec(self.order[self.cursor..self.cursor + bs].to_vec(), bs, buffer.device())?;
        self.cursor += bs;
        Ok(buffer.index_select(&idx, 0)?)
    }
}

/// The SAE config `opts` asks for, at a hook of width `d_in`.
pub fn config_for(opts: &TrainOptions, hook: &str, d_in: usize) -> SaeConfig {
    SaeConfig {
        variant: opts.variant,
        d_in,
        d_hidden: if opts.d_hidden > 0 { opts.d_hidden } else { opts.expansion * d_in },
        l1: opts.l1,
        k: opts.k,
        input_scale: 1.0,
        hook: hook.to_string(),
    }
}

/// Trains an SAE on `model`'s activations at `opts.hook` (see [`ActivationStream`]).
pub fn train_on_model(model: &HookedTransformer, opts: &TrainOptions) -> Result<(Sae, TrainLog)> {
    let mut stream = ActivationStream::new(model, opts)?;
    let cfg = config_for(opts, &stream.hook.clone(), stream.width()?);
    cfg.validate()?;
    train(cfg, opts, || stream.next_batch())
}

/// Quality of an SAE on a model's activations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SaeReport {
    /// Mean squared error per activation entry (original units).
    pub mse: f64,
    /// 1 − Σ‖x − x̂‖² / Σ‖x − mean x‖².
    pub fraction_variance_explained: f64,
    /// Mean number of active features per token.
    pub mean_l0: f64,
    /// Fraction of features that never fire on the evaluation tokens.
    pub dead_fraction: f64,
    /// Mean next-token loss (nats) of the model, and with the SAE reconstruction spliced in at
    /// the hook (on the positions of [`token_mask`]).
    pub loss_clean: f64,
    pub loss_spliced: f64,
    pub delta_loss: f64,
    pub n_tokens: usize,
}

/// Reconstruction statistics of `x` `[n, d_in]`: (sum squared error, total variance sum, active
/// count per feature, total active).
fn recon_stats(sae: &Sae, x: &Tensor) -> Result<(f64, f64, Vec<f64>)> {
    let (f, xh) = sae.encode_and_reconstruct(x)?;
    let sse = (x - &xh)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    let centred = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    let sst = centred.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    let counts: Vec<f32> = f.gt(0f64)?.to_dtype(DType::F32)?.sum(0)?.to_vec1()?;
    Ok((sse, sst, counts.into_iter().map(f64::from).collect()))
}

/// Evaluates `sae` on `rows` of `model` (see [`SaeReport`]).
pub fn evaluate(sae: &Sae, model: &HookedTransformer, hook: &str, rows: &[Vec<u32>], forward_batch: usize) -> Result<SaeReport> {
    check_hook(model, hook)?;
    let x = hook_activations(model, hook, rows, forward_batch)?;
    if x.dim(1)? != sae.cfg.d_in {
        return Err(QiError::invalid("SAE d_in", sae.cfg.d_in, format!("hook '{hook}' has width {}", x.dim(1)?)).into());
    }
    let n = x.dim(0)?;
    let (sse, sst, counts) = recon_stats(sae, &x)?;
    let (mut clean, mut spliced, mut weight) = (0f64, 0f64, 0f64);
    for b in batches(rows, forward_batch.max(1), model.pad_id())? {
        let m = token_mask(model, &b)?;
        let nt_mask = crate::metrics::next_token_mask(&b.valid_mask()?)?;
        let logits = model.forward(&b)?;
        let mut hooks = Hooks::new();
        hooks.add(hook, |_, act: &Tensor| {
            let (bs, p, d) = act.dims3()?;
            let xh = sae.reconstruct(&act.reshape((bs * p, d))?)?.reshape((bs, p, d))?;
            let keep = m.unsqueeze(2)?;
            Ok(Some((act.to_dtype(DType::F32)?.broadcast_mul(&(1.0 - &keep)?)? + xh.broadcast_mul(&keep)?)?))
        });
        let logits_s = model.run_with_hooks(&b, &mut hooks)?;
        let nll = |l: &Tensor| -> Result<f64> { Ok((crate::metrics::next_token_nll(l, &b.tokens)? * &nt_mask)?.sum_all()?.to_scalar::<f32>()? as f64) };
        clean += nll(&logits)?;
        spliced += nll(&logits_s)?;
        weight += nt_mask.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let (loss_clean, loss_spliced) = (clean / weight.max(1.0), spliced / weight.max(1.0));
    Ok(SaeReport {
        mse: sse / (n * sae.cfg.d_in) as f64,
        fraction_variance_explained: 1.0 - sse / sst.max(1e-30),
        mean_l0: counts.iter().sum::<f64>() / n as f64,
        dead_fraction: counts.iter().filter(|&&c| c == 0.0).count() as f64 / counts.len() as f64,
        loss_clean,
        loss_spliced,
        delta_loss: loss_spliced - loss_clean,
        n_tokens: n,
    })
}

/// Fraction of variance explained and mean L0 of `sae` on activations `x` `[n, d_in]` directly
/// (no model): for tests and quick checks.
pub fn reconstruction_quality(sae: &Sae, x: &Tensor) -> Result<(f64, f64)> {
    let (sse, sst, counts) = recon_stats(sae, x)?;
    Ok((1.0 - sse / sst.max(1e-30), counts.iter().sum::<f64>() / x.dim(0)? as f64))
}

/// Mean over tokens of the largest feature activation — a cheap sanity number.
pub fn mean_max_activation(f: &Tensor) -> Result<f64> {
    Ok(f.max(D::Minus1)?.mean_all()?.to_scalar::<f32>()? as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_mask_keeps_exactly_k() {
        let pre = Tensor::new(&[[0.5f32, 3.0, -1.0, 2.0], [1.0, 1.0, 1.0, 0.0]], &candle_core::Device::Cpu).unwrap();
        let m = topk_mask(&pre, 2).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m[0], vec![0., 1., 0., 1.]);
        assert_eq!(m[1], vec![1., 1., 0., 0.]); // ties broken by index
    }

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let o = TrainOptions { lr: 1.0, warmup_steps: 4, steps: 14, min_lr_frac: 0.1, ..Default::default() };
        assert!((o.lr_at(0) - 0.25).abs() < 1e-12 && (o.lr_at(3) - 1.0).abs() < 1e-12);
        assert!((o.lr_at(4) - 1.0).abs() < 1e-12);
        // halfway through the decay: floor + (1 − floor)/2 = 0.55
        assert!((o.lr_at(9) - 0.55).abs() < 1e-12);
        assert!((o.lr_at(14) - 0.1).abs() < 1e-12);
    }
}
