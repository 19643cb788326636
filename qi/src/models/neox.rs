//! GPT-NeoX / Pythia: rotary on the first `rotary_pct` of each head (rotate-half convention),
//! parallel residual (attention and MLP both read the block input), exact GELU, fused
//! `query_key_value` laid out per head as `[q_h | k_h | v_h]`, untied `embed_out`.
use super::hf_config::HfConfig;
use super::{load_linear, load_norm, Activation, Architecture, Attention, Block, Linear, Mlp, ModelConfig, Positional, QkvProj};
use super::Checkpoint;
use anyhow::{bail, Result};
use serde_json::{json, Value};

pub fn config_from_hf(c: &HfConfig) -> Result<ModelConfig> {
    let d_model = c.usize(&["hidden_size"])?;
    let n_heads = c.usize(&["num_attention_heads"])?;
    c.check_heads(d_model, n_heads, n_heads)?;
    let d_head = d_model / n_heads;
    let pct = c.opt_f64(&["rotary_pct", "partial_rotary_factor", "rope_parameters.partial_rotary_factor"])?.unwrap_or(0.25);
    let theta = c.opt_f64(&["rotary_emb_base", "rope_theta", "rope_parameters.rope_theta"])?.unwrap_or(10000.0);
    if !(0.0..=1.0).contains(&pct) {
        bail!("{}: rotary_pct must be in [0, 1], got {pct}", c.path.display());
    }
    Ok(ModelConfig {
        architecture: Architecture::GptNeox,
        n_layers: c.usize(&["num_hidden_layers"])?,
        d_model,
        n_heads,
        n_kv_heads: n_heads,
        d_head,
        d_mlp: c.usize(&["intermediate_size"])?,
        d_vocab: c.usize(&["vocab_size"])?,
        n_ctx: c.usize(&["max_position_embeddings"])?,
        norm_eps: c.opt_f64(&["layer_norm_eps"])?.unwrap_or(1e-5),
        positional: Positional::Rotary { dim: (d_head as f64 * pct) as usize, theta },
        parallel_residual: c.opt_bool(&["use_parallel_residual"])?.unwrap_or(true),
        activation: Activation::from_hf(c.opt_str(&["hidden_act"])?.unwrap_or("gelu"))?,
        gated_mlp: false,
        tied_embeddings: c.opt_bool(&["tie_word_embeddings"])?.unwrap_or(false),
        bos_token_id: c.opt_token_id("bos_token_id"),
        eos_token_id: c.opt_token_id("eos_token_id"),
        extras: Default::default(),
    })
}

pub fn config_to_hf(cfg: &ModelConfig) -> Value {
    let (dim, theta) = match cfg.positional {
        super::Positional::Rotary { dim, theta } => (dim, theta),
        super::Positional::Learned => (0, 10000.0),
    };
    json!({
        "model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"],
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "intermediate_size": cfg.d_mlp, "vocab_size": cfg.d_vocab, "max_position_embeddings": cfg.n_ctx,
        "layer_norm_eps": cfg.norm_eps, "rotary_pct": dim as f64 / cfg.d_head as f64, "rotary_emb_base": theta,
        "use_parallel_residual": cfg.parallel_residual, "hidden_act": "gelu", "tie_word_embeddings": cfg.tied_embeddings,
        "attention_bias": true, "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
    })
}

pub fn build(cfg: &ModelConfig, ck: &Checkpoint) -> Result<super::Parts> {
    let (d, m) = (cfg.d_model, cfg.d_mlp);
    let wte = "gpt_neox.embed_in.weight".to_string();
    let embed = ck.tensor(&wte, &[cfg.d_vocab, d])?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let h = format!("gpt_neox.layers.{l}");
        blocks.push(Block {
            ln1: load_norm(ck, &format!("{h}.input_layernorm"), d, cfg.norm_eps, true)?,
            attn: Attention {
                qkv: QkvProj::FusedPerHead(load_linear(ck, &format!("{h}.attention.query_key_value"), 3 * d, d, true, false)?),
                out: load_linear(ck, &format!("{h}.attention.dense"), d, d, true, false)?,
                q_norm: None,
                k_norm: None,
            },
            ln2: load_norm(ck, &format!("{h}.post_attention_layernorm"), d, cfg.norm_eps, true)?,
            mlp: Mlp::Standard {
                fc_in: load_linear(ck, &format!("{h}.mlp.dense_h_to_4h"), m, d, true, false)?,
                fc_out: load_linear(ck, &format!("{h}.mlp.dense_4h_to_h"), d, m, true, false)?,
            },
            post_attn_norm: None,
            post_mlp_norm: None,
        });
    }
    let ln_final = load_norm(ck, "gpt_neox.final_layer_norm", d, cfg.norm_eps, true)?;
    let unembed = if cfg.tied_embeddings {
        Linear::new(wte.clone(), embed.clone(), None, false)?
    } else {
        load_linear(ck, "embed_out", cfg.d_vocab, d, false, false)?
    };
    Ok(super::Parts { embed: (wte, embed), pos_embed: None, blocks, ln_final, unembed })
}
