//! Model families and the one hooked forward pass they share.
//!
//! Each family file (`gpt2.rs`, `neox.rs`, `llama.rs`, `qwen2.rs`, `gemma3.rs`) reads its config and maps its checkpoint's
//! tensors onto the common [`HookedTransformer`] parts; `transformer.rs` runs the forward pass with
//! hook points. Linear weights are kept in PyTorch `nn.Linear` layout `[out, in]` under their
//! Hugging Face parameter names, so quantizers see exactly the raw matrices a HF checkpoint holds.
pub(crate) mod checkpoint;
pub use checkpoint::Checkpoint;
pub use crate::quant::ActQuant;
pub mod gemma3;
pub mod gpt2;
pub mod hf_config;
pub mod llama;
pub mod neox;
pub mod qwen2;
mod transformer;

pub use transformer::HookedTransformer;

use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// Supported architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    Gpt2,
    GptNeox,
    Llama,
    Qwen2,
    Gemma3,
}

impl Architecture {
    pub const SUPPORTED: &'static str =
        "gpt2, gpt_neox (Pythia), llama (Llama, SmolLM2, TinyLlama), qwen2 (Qwen2, Qwen2.5), gemma3_text / gemma3 (Gemma 3 text)";

    /// From a HF `model_type` or a GGUF `general.architecture`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "gpt2" => Ok(Architecture::Gpt2),
            "gpt_neox" | "gptneox" => Ok(Architecture::GptNeox),
            "llama" => Ok(Architecture::Llama),
            // `gemma3` is the GGUF name and the HF multimodal wrapper (whose `text_config` is read).
            "gemma3_text" | "gemma3" => Ok(Architecture::Gemma3),
            "qwen2" => Ok(Architecture::Qwen2),
            other => Err(crate::QiError::UnsupportedArchitecture { arch: other.to_string(), supported: Self::SUPPORTED.into() }.into()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Architecture::Gpt2 => "gpt2",
            Architecture::GptNeox => "gpt_neox",
            Architecture::Llama => "llama",
            Architecture::Gemma3 => "gemma3_text",
            Architecture::Qwen2 => "qwen2",
        }
    }
}

/// The MLP nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// tanh approximation (GPT-2's `gelu_new`).
    GeluTanh,
    /// exact erf GELU (NeoX's `gelu`).
    GeluErf,
    /// SiLU (Llama's gated MLP).
    Silu,
    Relu,
}

impl Activation {
    pub fn from_hf(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_tanh" => Activation::GeluTanh,
            "gelu" => Activation::GeluErf,
            "silu" | "swish" => Activation::Silu,
            "relu" => Activation::Relu,
            other => return Err(crate::QiError::invalid("activation function", other, "supported: gelu_new, gelu, silu, relu").into()),
        })
    }

    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::GeluTanh => x.gelu(),
            Activation::GeluErf => x.gelu_erf(),
            Activation::Silu => x.silu(),
            Activation::Relu => x.relu(),
        }
    }
}

/// How positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positional {
    /// Learned absolute position embeddings added to the token embeddings.
    Learned,
    /// Rotary embeddings on the first `dim` features of each query/key head.
    Rotary { dim: usize, theta: f64 },
}

/// Architecture-neutral hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub d_vocab: usize,
    pub n_ctx: usize,
    pub norm_eps: f64,
    pub positional: Positional,
    pub parallel_residual: bool,
    pub activation: Activation,
    pub gated_mlp: bool,
    pub tied_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Settings only some families use (Gemma 3); the default is a plain transformer.
    #[serde(default)]
    pub extras: Extras,
}

/// Architecture settings beyond the GPT-2 / NeoX / Llama core. All default to "off".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Extras {
    /// Token embeddings are multiplied by this before block 0 (Gemma: sqrt(d_model)).
    pub embed_scale: Option<f32>,
    /// Attention scores are `q·k * query_pre_attn_scalar^-0.5` (default: `d_head`, i.e. the usual
    /// `1/sqrt(d_head)`; Gemma sets it in its config).
    pub query_pre_attn_scalar: Option<f64>,
    /// Sliding-window attention: on the layers flagged in `sliding_layers`, query q sees key k
    /// only if `q - window < k <= q`.
    pub sliding_window: Option<usize>,
    /// Per layer, whether it is a sliding-window (local) layer. Empty = every layer is global.
    pub sliding_layers: Vec<bool>,
    /// Rotary base of the sliding-window layers (Gemma 3: `rope_local_base_freq`); the global
    /// layers use [`Positional::Rotary`]'s `theta`.
    pub local_rope_theta: Option<f64>,
}

impl Extras {
    /// Whether layer `l` uses the sliding window.
    pub fn is_sliding(&self, l: usize) -> bool {
        self.sliding_window.is_some() && self.sliding_layers.get(l).copied().unwrap_or(false)
    }
}

impl ModelConfig {
    /// Every hook point name this model has, in forward order.
    pub fn hook_names(&self) -> Vec<String> {
        use crate::hooks::names as n;
        let mut v = vec![n::EMBED.to_string()];
        if self.positional == Positional::Learned {
            v.push(n::POS_EMBED.into());
        }
        let rotary = matches!(self.positional, Positional::Rotary { .. });
        for l in 0..self.n_layers {
            v.extend([n::resid_pre(l), n::ln1(l), n::q(l), n::k(l), n::v(l)]);
            if rotary {
                v.extend([n::rot_q(l), n::rot_k(l)]);
            }
            v.extend([n::attn_scores(l), n::pattern(l), n::z(l), n::attn_out(l)]);
            if !self.parallel_residual {
                v.push(n::resid_mid(l));
            }
            v.extend([n::ln2(l), n::mlp_pre(l)]);
            if self.gated_mlp {
                v.push(n::mlp_pre_linear(l));
            }
            v.extend([n::mlp_post(l), n::mlp_out(l), n::resid_post(l)]);
        }
        v.push(n::LN_FINAL.into());
        v
    }
}

/// A linear layer `y = x Wᵀ + b`, named by its HF parameter name. `W` is presented in `[out, in]`
/// layout ([`Linear::weight`]) but stored transposed and contiguous, `[in, out]`, because candle's
/// CPU matmul is ~35% faster with a row-major right-hand side than with a transposed view.
#[derive(Debug, Clone)]
pub struct Linear {
    /// HF name of the weight, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// `Wᵀ`, `[in, out]`, contiguous.
    weight_t: Tensor,
    pub bias: Option<Tensor>,
    /// The checkpoint stores this weight as `[in, out]` (GPT-2's Conv1D); used when writing back.
    pub transposed_in_checkpoint: bool,
    /// Fake quantization of this layer's input (W8A8, LLM.int8); None = f32 input.
    pub act_quant: Option<ActQuant>,
}

/// The same tensor (shared storage, no copy) under a new identity: see
/// [`HookedTransformer::with_fresh_tensor_ids`].
pub(crate) fn fresh_id(t: &Tensor) -> candle_core::Result<Tensor> {
    t.reshape(t.shape())
}

impl Linear {
    /// This layer with fresh tensor ids ([`HookedTransformer::with_fresh_tensor_ids`]).
    pub(crate) fn with_fresh_ids(&self) -> candle_core::Result<Self> {
        Ok(Linear { weight_t: fresh_id(&self.weight_t)?, bias: self.bias.as_ref().map(fresh_id).transpose()?, ..self.clone() })
    }

    /// A linear layer from its `[out, in]` weight, without activation quantization.
    pub fn new(name: impl Into<String>, weight: Tensor, bias: Option<Tensor>, transposed_in_checkpoint: bool) -> candle_core::Result<Self> {
        Ok(Linear { name: name.into(), weight_t: weight.t()?.contiguous()?, bias, transposed_in_checkpoint, act_quant: None })
    }

    /// The weight `[out, in]` (a transposed view of the stored `[in, out]` tensor).
    pub fn weight(&self) -> Tensor {
        self.weight_t.t().expect("a 2-D weight transposes")
    }

    /// The stored `[in, out]` transpose of the weight.
    pub fn weight_t(&self) -> &Tensor {
        &self.weight_t
    }

    /// Replaces the weight (given `[out, in]`, same shape as before).
    pub fn set_weight(&mut self, weight: &Tensor) -> candle_core::Result<()> {
        let t = weight.t()?.contiguous()?;
        if t.dims() != self.weight_t.dims() {
            candle_core::bail!("new weight for '{}' has shape {:?}, expected {:?}", self.name, weight.dims(), self.weight().dims());
        }
        // quantizers compute on the host; the layer stays on its device
        self.weight_t = t.to_device(self.weight_t.device())?;
        Ok(())
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let d_in = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, d_in))?;
        let x2 = match &self.act_quant {
            Some(q) => q.apply(&x2)?,
            None => x2,
        };
        let y = crate::fused::mm(&x2, &self.weight_t)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        *out.last_mut().unwrap() = y.dim(1)?;
        y.reshape(out)
    }
    pub fn out_features(&self) -> usize {
        self.weight_t.dims()[1]
    }
    pub fn in_features(&self) -> usize {
        self.weight_t.dims()[0]
    }
}

/// The hook whose activation is a linear layer's input, by role (`hook_z` is `[b, p, heads,
/// d_head]`, flattened to `[b, p, heads·d_head]` as the input of `o`).
pub fn linear_input_hook(role: &str, layer: usize) -> String {
    use crate::hooks::names;
    match role {
        "qkv" | "q" | "k" | "v" => names::ln1(layer),
        "o" => names::z(layer),
        "fc_in" | "gate" | "up" => names::ln2(layer),
        _ => names::mlp_post(layer),
    }
}

/// Whether a role is part of attention (else the MLP).
pub fn is_attention_role(role: &str) -> bool {
    matches!(role, "qkv" | "q" | "k" | "v" | "o")
}

/// LayerNorm (weight, bias) or RMSNorm (weight only).
#[derive(Debug, Clone)]
pub struct Norm {
    /// HF name prefix, e.g. `transformer.h.0.ln_1`.
    pub name: String,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub eps: f64,
    /// The RMSNorm scale is `1 + weight` (Gemma stores the offset from one), not `weight`.
    pub unit_offset: bool,
}

impl Norm {
    pub(crate) fn with_fresh_ids(&self) -> candle_core::Result<Self> {
        Ok(Norm { weight: fresh_id(&self.weight)?, bias: self.bias.as_ref().map(fresh_id).transpose()?, ..self.clone() })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.bias {
            Some(b) => crate::ops::layer_norm(x, &self.weight, b, self.eps),
            None if self.unit_offset => crate::ops::rms_norm(x, &(&self.weight + 1.0)?, self.eps),
            None => crate::ops::rms_norm(x, &self.weight, self.eps),
        }
    }
}

/// How the query/key/value projections are stored.
#[derive(Debug, Clone)]
pub enum QkvProj {
    /// One matrix producing `[q | k | v]` (GPT-2's `c_attn`).
    FusedContiguous(Linear),
    /// One matrix producing, per head, `[q_h | k_h | v_h]` (GPT-NeoX's `query_key_value`).
    FusedPerHead(Linear),
    /// Separate projections (Llama).
    Separate { q: Linear, k: Linear, v: Linear },
}

#[derive(Debug, Clone)]
pub struct Attention {
    pub qkv: QkvProj,
    pub out: Linear,
    /// RMSNorms over each query / key head (`[d_head]` weights), applied before rotary (Gemma 3).
    pub q_norm: Option<Norm>,
    pub k_norm: Option<Norm>,
}

/// The MLP: `out(act(in(x)))` or, gated, `down(act(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub enum Mlp {
    Standard { fc_in: Linear, fc_out: Linear },
    Gated { gate: Linear, up: Linear, down: Linear },
}

#[derive(Debug, Clone)]
pub struct Block {
    pub ln1: Norm,
    pub attn: Attention,
    pub ln2: Norm,
    pub mlp: Mlp,
    /// Norms on the attention / MLP outputs before they join the residual stream (Gemma's
    /// "sandwich" norms); `hook_attn_out` / `hook_mlp_out` are their outputs.
    pub post_attn_norm: Option<Norm>,
    pub post_mlp_norm: Option<Norm>,
}

impl Block {
    pub(crate) fn with_fresh_ids(&self) -> candle_core::Result<Self> {
        let mut block = self.clone();
        for linear in block.linears_mut() {
            *linear = linear.with_fresh_ids()?;
        }
        for norm in block.norms_mut() {
            *norm = norm.with_fresh_ids()?;
        }
        Ok(block)
    }

    /// Every norm of the block: ln1, ln2, then those only some families have (q/k norms, post norms).
    pub fn norms(&self) -> Vec<&Norm> {
        let mut v = vec![&self.ln1, &self.ln2];
        v.extend([&self.attn.q_norm, &self.attn.k_norm, &self.post_attn_norm, &self.post_mlp_norm].into_iter().flatten());
        v
    }

    /// [`Block::norms`], mutable.
    pub fn norms_mut(&mut self) -> Vec<&mut Norm> {
        let mut v = vec![&mut self.ln1, &mut self.ln2];
        v.extend([&mut self.attn.q_norm, &mut self.attn.k_norm, &mut self.post_attn_norm, &mut self.post_mlp_norm].into_iter().flatten());
        v
    }

    /// The block's linear layers in forward order.
    pub fn linears(&self) -> Vec<&Linear> {
        let mut v = match &self.attn.qkv {
            QkvProj::FusedContiguous(l) | QkvProj::FusedPerHead(l) => vec![l],
            QkvProj::Separate { q, k, v } => vec![q, k, v],
        };
        v.push(&self.attn.out);
        match &self.mlp {
            Mlp::Standard { fc_in, fc_out } => v.extend([fc_in, fc_out]),
            Mlp::Gated { gate, up, down } => v.extend([gate, up, down]),
        }
        v
    }

    /// The block's linear layers with their role: `qkv` (fused), `q`, `k`, `v`, `o`, `fc_in`,
    /// `fc_out`, `gate`, `up`, `down`.
    pub fn linears_labeled(&self) -> Vec<(&'static str, &Linear)> {
        let roles: &[&str] = match (&self.attn.qkv, &self.mlp) {
            (QkvProj::Separate { .. }, Mlp::Gated { .. }) => &["q", "k", "v", "o", "gate", "up", "down"],
            (QkvProj::Separate { .. }, Mlp::Standard { .. }) => &["q", "k", "v", "o", "fc_in", "fc_out"],
            (_, Mlp::Gated { .. }) => &["qkv", "o", "gate", "up", "down"],
            (_, Mlp::Standard { .. }) => &["qkv", "o", "fc_in", "fc_out"],
        };
        roles.iter().copied().zip(self.linears()).collect()
    }

    /// [`Block::linears_labeled`], mutable.
    pub fn linears_labeled_mut(&mut self) -> Vec<(&'static str, &mut Linear)> {
        let roles: Vec<&'static str> = self.linears_labeled().into_iter().map(|(r, _)| r).collect();
        roles.into_iter().zip(self.linears_mut()).collect()
    }

    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v: Vec<&mut Linear> = match &mut self.attn.qkv {
            QkvProj::FusedContiguous(l) | QkvProj::FusedPerHead(l) => vec![l],
            QkvProj::Separate { q, k, v } => vec![q, k, v],
        };
        v.push(&mut self.attn.out);
        match &mut self.mlp {
            Mlp::Standard { fc_in, fc_out } => v.extend([fc_in, fc_out]),
            Mlp::Gated { gate, up, down } => v.extend([gate, up, down]),
        }
        v
    }
}

/// Where a model came from, for reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceInfo {
    /// What the user passed (Hub id or path).
    pub source: String,
    /// Files the weights were read from.
    pub files: Vec<String>,
    /// Storage type of each tensor in the source file, by HF tensor name (e.g. `Q4_1`, `F32`, `BF16`).
    pub tensor_types: std::collections::BTreeMap<String, String>,
    /// The quantization applied by qi after loading, if any (a QuantSpec string).
    pub quantization: Option<String>,
}

impl SourceInfo {
    /// Counts of source storage types, e.g. `{"Q4_1": 210, "F32": 61}`.
    pub fn type_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for t in self.tensor_types.values() {
            *m.entry(t.clone()).or_insert(0) += 1;
        }
        m
    }
}

/// Reads `{prefix}.weight` `[out, in]` (and `{prefix}.bias` `[out]` when `bias`).
/// `conv1d`: the checkpoint stores the weight as `[in, out]` (GPT-2), transposed here.
pub(crate) fn load_linear(ck: &Checkpoint, prefix: &str, out: usize, inp: usize, bias: bool, conv1d: bool) -> Result<Linear> {
    let name = format!("{prefix}.weight");
    let weight = if conv1d { ck.tensor(&name, &[inp, out])?.t()? } else { ck.tensor(&name, &[out, inp])? };
    let bias = if bias { Some(ck.tensor(&format!("{prefix}.bias"), &[out])?) } else { None };
    Ok(Linear::new(name, weight, bias, conv1d)?)
}

/// Reads `{prefix}.weight` (and `.bias` for LayerNorm) of width `d`.
pub(crate) fn load_norm(ck: &Checkpoint, prefix: &str, d: usize, eps: f64, bias: bool) -> Result<Norm> {
    let weight = ck.tensor(&format!("{prefix}.weight"), &[d])?;
    let bias = if bias { Some(ck.tensor(&format!("{prefix}.bias"), &[d])?) } else { None };
    Ok(Norm { name: prefix.to_string(), weight, bias, eps, unit_offset: false })
}

/// Tensors of a model in its checkpoint's own names and layouts (what `save_pretrained` would
/// write), for exporting quantized models as HF directories.
pub fn hf_state_dict(model: &HookedTransformer) -> Result<Vec<(String, Tensor)>> {
    let mut out = vec![(model.embed_name.clone(), model.embed.clone())];
    if let Some((n, t)) = &model.pos_embed {
        out.push((n.clone(), t.clone()));
    }
    let push_norm = |out: &mut Vec<(String, Tensor)>, n: &Norm| {
        out.push((format!("{}.weight", n.name), n.weight.clone()));
        if let Some(b) = &n.bias {
            out.push((format!("{}.bias", n.name), b.clone()));
        }
    };
    let push_linear = |out: &mut Vec<(String, Tensor)>, l: &Linear| -> Result<()> {
        // a transposed view, not a copy: the writer makes each tensor contiguous as it writes it,
        // so a twin is never held twice while being saved
        let w = if l.transposed_in_checkpoint { l.weight_t().clone() } else { l.weight() };
        out.push((l.name.clone(), w));
        if let Some(b) = &l.bias {
            out.push((format!("{}.bias", l.name.trim_end_matches(".weight")), b.clone()));
        }
        Ok(())
    };
    for b in &model.blocks {
        for n in b.norms() {
            push_norm(&mut out, n);
        }
        for l in b.linears() {
            push_linear(&mut out, l)?;
        }
    }
    push_norm(&mut out, &model.ln_final);
    if !model.cfg.tied_embeddings {
        push_linear(&mut out, &model.unembed)?;
    }
    Ok(out)
}

/// What a family builder reads from a checkpoint.
pub struct Parts {
    pub embed: (String, Tensor),
    pub pos_embed: Option<(String, Tensor)>,
    pub blocks: Vec<Block>,
    pub ln_final: Norm,
    pub unembed: Linear,
}

/// Parses a HF config for `arch`.
pub fn config_from_hf(arch: Architecture, c: &hf_config::HfConfig) -> Result<ModelConfig> {
    match arch {
        Architecture::Gpt2 => gpt2::config_from_hf(c),
        Architecture::GptNeox => neox::config_from_hf(c),
        Architecture::Llama => llama::config_from_hf(c),
        Architecture::Gemma3 => gemma3::config_from_hf(c),
        Architecture::Qwen2 => qwen2::config_from_hf(c),
    }
}

/// The HF `config.json` that describes `cfg` (for exported models).
pub fn config_to_hf(cfg: &ModelConfig) -> serde_json::Value {
    match cfg.architecture {
        Architecture::Gpt2 => gpt2::config_to_hf(cfg),
        Architecture::GptNeox => neox::config_to_hf(cfg),
        Architecture::Llama => llama::config_to_hf(cfg),
        Architecture::Gemma3 => gemma3::config_to_hf(cfg),
        Architecture::Qwen2 => qwen2::config_to_hf(cfg),
    }
}

/// Builds the model parts for `cfg` from a checkpoint.
pub fn build_parts(cfg: &ModelConfig, ck: &Checkpoint) -> Result<Parts> {
    match cfg.architecture {
        Architecture::Gpt2 => gpt2::build(cfg, ck),
        Architecture::GptNeox => neox::build(cfg, ck),
        Architecture::Llama => llama::build(cfg, ck),
        Architecture::Gemma3 => gemma3::build(cfg, ck),
        Architecture::Qwen2 => qwen2::build(cfg, ck),
    }
}
