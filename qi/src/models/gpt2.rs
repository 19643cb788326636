//! GPT-2: learned positions, pre-LayerNorm, fused `c_attn` in HF's Conv1D `[in, out]` layout,
//! `gelu_new`, unembedding tied to the token embedding.
use super::hf_config::HfConfig;
use super::{load_linear, load_norm, Activation, Architecture, Attention, Block, Linear, Mlp, ModelConfig, Positional, QkvProj};
use super::Checkpoint;
use anyhow::Result;
use serde_json::{json, Value};

pub fn config_from_hf(c: &HfConfig) -> Result<ModelConfig> {
    let d_model = c.usize(&["n_embd", "hidden_size"])?;
    let n_heads = c.usize(&["n_head", "num_attention_heads"])?;
    c.check_heads(d_model, n_heads, n_heads)?;
    Ok(ModelConfig {
        architecture: Architecture::Gpt2,
        n_layers: c.usize(&["n_layer", "num_hidden_layers"])?,
        d_model,
        n_heads,
        n_kv_heads: n_heads,
        d_head: d_model / n_heads,
        d_mlp: c.opt_usize(&["n_inner"])?.unwrap_or(4 * d_model),
        d_vocab: c.usize(&["vocab_size"])?,
        n_ctx: c.usize(&["n_positions", "n_ctx", "max_position_embeddings"])?,
        norm_eps: c.opt_f64(&["layer_norm_epsilon"])?.unwrap_or(1e-5),
        positional: Positional::Learned,
        parallel_residual: false,
        activation: Activation::from_hf(c.opt_str(&["activation_function"])?.unwrap_or("gelu_new"))?,
        gated_mlp: false,
        tied_embeddings: true,
        bos_token_id: c.opt_token_id("bos_token_id"),
        eos_token_id: c.opt_token_id("eos_token_id"),
        extras: Default::default(),
    })
}

pub fn config_to_hf(cfg: &ModelConfig) -> Value {
    json!({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "n_embd": cfg.d_model, "n_layer": cfg.n_layers, "n_head": cfg.n_heads, "n_inner": cfg.d_mlp,
        "vocab_size": cfg.d_vocab, "n_positions": cfg.n_ctx, "layer_norm_epsilon": cfg.norm_eps,
        "activation_function": match cfg.activation { Activation::GeluErf => "gelu", Activation::Relu => "relu", _ => "gelu_new" },
        "tie_word_embeddings": true, "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
    })
}

/// Embedding, position embedding, blocks, final norm and unembedding from a GPT-2 checkpoint.
/// Accepts both `transformer.`-prefixed names (GPT2LMHeadModel) and bare ones (the original Hub files).
pub fn build(cfg: &ModelConfig, ck: &Checkpoint) -> Result<super::Parts> {
    let p = if ck.contains("transformer.wte.weight") { "transformer." } else { "" };
    let (d, m) = (cfg.d_model, cfg.d_mlp);
    let wte = format!("{p}wte.weight");
    let embed = ck.tensor(&wte, &[cfg.d_vocab, d])?;
    let wpe = format!("{p}wpe.weight");
    let pos = ck.tensor(&wpe, &[cfg.n_ctx, d])?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let h = format!("{p}h.{l}");
        blocks.push(Block {
            ln1: load_norm(ck, &format!("{h}.ln_1"), d, cfg.norm_eps, true)?,
            attn: Attention {
                qkv: QkvProj::FusedContiguous(load_linear(ck, &format!("{h}.attn.c_attn"), 3 * d, d, true, true)?),
                out: load_linear(ck, &format!("{h}.attn.c_proj"), d, d, true, true)?,
                q_norm: None,
                k_norm: None,
            },
            ln2: load_norm(ck, &format!("{h}.ln_2"), d, cfg.norm_eps, true)?,
            mlp: Mlp::Standard {
                fc_in: load_linear(ck, &format!("{h}.mlp.c_fc"), m, d, true, true)?,
                fc_out: load_linear(ck, &format!("{h}.mlp.c_proj"), d, m, true, true)?,
            },
            post_attn_norm: None,
            post_mlp_norm: None,
        });
    }
    let ln_final = load_norm(ck, &format!("{p}ln_f"), d, cfg.norm_eps, true)?;
    let unembed = Linear::new(wte.clone(), embed.clone(), None, false)?;
    Ok(super::Parts { embed: (wte, embed), pos_embed: Some((wpe, pos)), blocks, ln_final, unembed })
}
