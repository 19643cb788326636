//! Llama family (Llama-2, TinyLlama, SmolLM2): RMSNorm, SwiGLU MLP, rotary with the config's
//! theta on whole heads, grouped-query attention, tied or untied unembedding.
//!
//! The config reader and builder here also serve Qwen2 (`qwen2.rs`), which is this decoder with
//! biases on the q/k/v projections.
use super::hf_config::HfConfig;
use super::{load_linear, load_norm, Activation, Architecture, Attention, Block, Linear, Mlp, ModelConfig, Positional, QkvProj};
use super::Checkpoint;
use anyhow::{bail, Result};
use serde_json::{json, Value};

pub fn config_from_hf(c: &HfConfig) -> Result<ModelConfig> {
    if c.opt_bool(&["attention_bias"])?.unwrap_or(false) || c.opt_bool(&["mlp_bias"])?.unwrap_or(false) {
        bail!("{}: attention_bias/mlp_bias = true is not supported for llama models", c.path.display());
    }
    decoder_config(c, Architecture::Llama)
}

/// The hyper-parameters every Llama-shaped config spells the same way, for `arch`.
pub(crate) fn decoder_config(c: &HfConfig, architecture: Architecture) -> Result<ModelConfig> {
    let d_model = c.usize(&["hidden_size"])?;
    let n_heads = c.usize(&["num_attention_heads"])?;
    let n_kv = c.opt_usize(&["num_key_value_heads"])?.unwrap_or(n_heads);
    c.check_heads(d_model, n_heads, n_kv)?;
    let d_head = c.opt_usize(&["head_dim"])?.unwrap_or(d_model / n_heads);
    let theta = c.opt_f64(&["rope_theta", "rope_parameters.rope_theta"])?.unwrap_or(10000.0);
    let scaling = c.opt_str(&["rope_scaling.rope_type", "rope_scaling.type", "rope_parameters.rope_type"])?.unwrap_or("default");
    if scaling != "default" {
        bail!("{}: rope scaling '{scaling}' is not supported (only unscaled rotary embeddings)", c.path.display());
    }
    Ok(ModelConfig {
        architecture,
        n_layers: c.usize(&["num_hidden_layers"])?,
        d_model,
        n_heads,
        n_kv_heads: n_kv,
        d_head,
        d_mlp: c.usize(&["intermediate_size"])?,
        d_vocab: c.usize(&["vocab_size"])?,
        n_ctx: c.usize(&["max_position_embeddings"])?,
        norm_eps: c.opt_f64(&["rms_norm_eps"])?.unwrap_or(1e-6),
        positional: Positional::Rotary { dim: d_head, theta },
        parallel_residual: false,
        activation: Activation::from_hf(c.opt_str(&["hidden_act"])?.unwrap_or("silu"))?,
        gated_mlp: true,
        tied_embeddings: c.opt_bool(&["tie_word_embeddings"])?.unwrap_or(false),
        bos_token_id: c.opt_token_id("bos_token_id"),
        eos_token_id: c.opt_token_id("eos_token_id"),
        extras: Default::default(),
    })
}

pub fn config_to_hf(cfg: &ModelConfig) -> Value {
    decoder_config_to_hf(cfg, "llama", "LlamaForCausalLM")
}

/// The keys [`decoder_config`] reads, under the given `model_type` and class name.
pub(crate) fn decoder_config_to_hf(cfg: &ModelConfig, model_type: &str, class: &str) -> Value {
    let theta = match cfg.positional {
        Positional::Rotary { theta, .. } => theta,
        Positional::Learned => 10000.0,
    };
    json!({
        "model_type": model_type, "architectures": [class],
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.d_head, "intermediate_size": cfg.d_mlp,
        "vocab_size": cfg.d_vocab, "max_position_embeddings": cfg.n_ctx, "rms_norm_eps": cfg.norm_eps,
        "rope_theta": theta, "hidden_act": "silu", "tie_word_embeddings": cfg.tied_embeddings,
        "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
    })
}

pub fn build(cfg: &ModelConfig, ck: &Checkpoint) -> Result<super::Parts> {
    build_decoder(cfg, ck, false)
}

/// Reads a Llama-layout checkpoint; `qkv_bias`: q/k/v projections have biases (Qwen2; o_proj
/// and the MLP never do).
pub(crate) fn build_decoder(cfg: &ModelConfig, ck: &Checkpoint, qkv_bias: bool) -> Result<super::Parts> {
    let (d, m) = (cfg.d_model, cfg.d_mlp);
    let (qd, kvd) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
    let wte = "model.embed_tokens.weight".to_string();
    let embed = ck.tensor(&wte, &[cfg.d_vocab, d])?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let h = format!("model.layers.{l}");
        let lin = |name: &str, out: usize, inp: usize, bias: bool| load_linear(ck, &format!("{h}.{name}"), out, inp, bias, false);
        blocks.push(Block {
            ln1: load_norm(ck, &format!("{h}.input_layernorm"), d, cfg.norm_eps, false)?,
            attn: Attention {
                qkv: QkvProj::Separate {
                    q: lin("self_attn.q_proj", qd, d, qkv_bias)?,
                    k: lin("self_attn.k_proj", kvd, d, qkv_bias)?,
                    v: lin("self_attn.v_proj", kvd, d, qkv_bias)?,
                },
                out: lin("self_attn.o_proj", d, qd, false)?,
                q_norm: None,
                k_norm: None,
            },
            ln2: load_norm(ck, &format!("{h}.post_attention_layernorm"), d, cfg.norm_eps, false)?,
            mlp: Mlp::Gated { gate: lin("mlp.gate_proj", m, d, false)?, up: lin("mlp.up_proj", m, d, false)?, down: lin("mlp.down_proj", d, m, false)? },
            post_attn_norm: None,
            post_mlp_norm: None,
        });
    }
    let ln_final = load_norm(ck, "model.norm", d, cfg.norm_eps, false)?;
    let unembed = if cfg.tied_embeddings {
        Linear::new(wte.clone(), embed.clone(), None, false)?
    } else {
        load_linear(ck, "lm_head", cfg.d_vocab, d, false, false)?
    };
    Ok(super::Parts { embed: (wte, embed), pos_embed: None, blocks, ln_final, unembed })
}
