//! Gemma 3 (text): Llama-like blocks with
//! - token embeddings scaled by `sqrt(d_model)` (in f32, as transformers in float32 and llama.cpp);
//! - RMSNorms whose scale is `1 + w` (the checkpoint stores `w`), computed as
//!   `x * rsqrt(mean(x²) + eps) * (1 + w)`;
//! - "sandwich" norms: `input_layernorm` → attention → `post_attention_layernorm` → residual,
//!   `pre_feedforward_layernorm` → MLP → `post_feedforward_layernorm` → residual;
//! - QK-norm: an RMSNorm over each query / key head before rotary;
//! - GeGLU MLP with tanh GELU (`gelu_pytorch_tanh`);
//! - `head_dim` from the config (not `d_model / heads`), scores scaled by `query_pre_attn_scalar^-0.5`;
//! - local (sliding-window) and global layers, each kind with its own rotary base;
//! - tied embeddings.
//!
//! Hooks follow TransformerLens' Gemma convention: `hook_attn_out` / `hook_mlp_out` are the outputs
//! of the post norms (what enters the residual stream), `ln1` / `ln2` are the pre norms, `hook_q` /
//! `hook_k` are the projections before QK-norm and `hook_rot_q` / `hook_rot_k` are after QK-norm
//! and rotary.
//!
//! `model_type` `gemma3_text` (Gemma3ForCausalLM) is read directly; `gemma3`
//! (Gemma3ForConditionalGeneration) through its `text_config`, with the language model's weights
//! under `model.language_model.` or `language_model.model.`. Missing keys take transformers'
//! Gemma3TextConfig defaults.
use super::hf_config::HfConfig;
use super::{load_linear, Activation, Architecture, Attention, Block, Extras, Linear, Mlp, ModelConfig, Norm, Positional, QkvProj};
use super::Checkpoint;
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

/// transformers' Gemma3TextConfig defaults for keys a config may omit.
const DEFAULT_GLOBAL_THETA: f64 = 1_000_000.0;
const DEFAULT_LOCAL_THETA: f64 = 10_000.0;
const DEFAULT_PATTERN: usize = 6;

pub fn config_from_hf(c: &HfConfig) -> Result<ModelConfig> {
    // The multimodal wrapper keeps the language model's settings in `text_config`.
    if c.json.get("model_type").and_then(Value::as_str) == Some("gemma3") {
        let text = c.json.get("text_config").filter(|v| v.is_object()).ok_or_else(|| {
            anyhow!("{}: model_type 'gemma3' needs a 'text_config' object (the language model's settings)", c.path.display())
        })?;
        return text_config(&HfConfig::new(text, c.path), "text_config.");
    }
    text_config(c, "")
}

/// Parses a Gemma3TextConfig; `key_prefix` is only for error messages.
fn text_config(c: &HfConfig, key_prefix: &str) -> Result<ModelConfig> {
    let path = c.path.display();
    let d_model = c.usize(&["hidden_size"])?;
    let n_layers = c.usize(&["num_hidden_layers"])?;
    let n_heads = c.opt_usize(&["num_attention_heads"])?.unwrap_or(8);
    let n_kv = c.opt_usize(&["num_key_value_heads"])?.unwrap_or(4);
    let d_head = c.opt_usize(&["head_dim"])?.unwrap_or(256);
    if n_heads == 0 || n_kv == 0 || n_heads % n_kv != 0 || d_head == 0 {
        bail!("{path}: {n_heads} attention heads, {n_kv} key/value heads and head_dim {d_head} do not form a valid attention (heads must be a positive multiple of KV heads)");
    }
    for key in ["final_logit_softcapping", "attn_logit_softcapping"] {
        if let Some(v) = c.opt_f64(&[key])? {
            bail!("{path}: '{key_prefix}{key}' = {v} is set, but logit soft-capping is not supported (Gemma 3 checkpoints leave it null)");
        }
    }
    if c.opt_bool(&["use_bidirectional_attention"])?.unwrap_or(false) {
        bail!("{path}: '{key_prefix}use_bidirectional_attention' = true (EmbeddingGemma) is not supported; only causal language models are");
    }
    if c.opt_bool(&["attention_bias"])?.unwrap_or(false) {
        bail!("{path}: '{key_prefix}attention_bias' = true is not supported for gemma3 models");
    }
    // Rotary settings: transformers 5 writes `rope_parameters.{full_attention,sliding_attention}`,
    // older configs `rope_theta`, `rope_local_base_freq` and `rope_scaling`.
    for key in ["rope_parameters.full_attention.rope_type", "rope_parameters.sliding_attention.rope_type", "rope_scaling.rope_type", "rope_scaling.type"] {
        if let Some(t) = c.opt_str(&[key])? {
            if t != "default" {
                bail!("{path}: '{key_prefix}{key}' = '{t}': rope scaling is not supported (only unscaled rotary embeddings)");
            }
        }
    }
    let theta = c.opt_f64(&["rope_parameters.full_attention.rope_theta", "rope_theta"])?.unwrap_or(DEFAULT_GLOBAL_THETA);
    let local_theta = c.opt_f64(&["rope_parameters.sliding_attention.rope_theta", "rope_local_base_freq"])?.unwrap_or(DEFAULT_LOCAL_THETA);
    let sliding_layers = layer_types(c, n_layers, key_prefix)?;
    let window = c.opt_usize(&["sliding_window"])?.unwrap_or(4096);
    if window == 0 {
        bail!("{path}: '{key_prefix}sliding_window' must be at least 1");
    }
    let scalar = c.opt_f64(&["query_pre_attn_scalar"])?.unwrap_or(256.0);
    if scalar.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        bail!("{path}: '{key_prefix}query_pre_attn_scalar' must be positive, got {scalar}");
    }
    Ok(ModelConfig {
        architecture: Architecture::Gemma3,
        n_layers,
        d_model,
        n_heads,
        n_kv_heads: n_kv,
        d_head,
        d_mlp: c.usize(&["intermediate_size"])?,
        d_vocab: c.opt_usize(&["vocab_size"])?.unwrap_or(262_208),
        n_ctx: c.opt_usize(&["max_position_embeddings"])?.unwrap_or(131_072),
        norm_eps: c.opt_f64(&["rms_norm_eps"])?.unwrap_or(1e-6),
        positional: Positional::Rotary { dim: d_head, theta },
        parallel_residual: false,
        activation: Activation::from_hf(c.opt_str(&["hidden_activation", "hidden_act"])?.unwrap_or("gelu_pytorch_tanh"))?,
        gated_mlp: true,
        tied_embeddings: c.opt_bool(&["tie_word_embeddings"])?.unwrap_or(true),
        bos_token_id: c.opt_token_id("bos_token_id").or(Some(2)),
        eos_token_id: c.opt_token_id("eos_token_id").or(Some(1)),
        extras: Extras {
            embed_scale: Some((d_model as f64).sqrt() as f32),
            query_pre_attn_scalar: Some(scalar),
            sliding_window: Some(window),
            sliding_layers,
            local_rope_theta: Some(local_theta),
        },
    })
}

/// Per layer, whether it is a sliding-window layer: `layer_types` if given, else every
/// `sliding_window_pattern`-th layer (1-based) is global, as transformers derives it.
fn layer_types(c: &HfConfig, n_layers: usize, key_prefix: &str) -> Result<Vec<bool>> {
    let path = c.path.display();
    if let Some(v) = c.json.get("layer_types").filter(|v| !v.is_null()) {
        let list = v.as_array().ok_or_else(|| anyhow!("{path}: '{key_prefix}layer_types' must be a list, got {v}"))?;
        if list.len() != n_layers {
            bail!("{path}: '{key_prefix}layer_types' has {} entries for {n_layers} layers", list.len());
        }
        return list
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(anyhow!("{path}: '{key_prefix}layer_types[{i}]' = {t}; expected \"sliding_attention\" or \"full_attention\"")),
            })
            .collect();
    }
    let pattern = c.opt_usize(&["sliding_window_pattern"])?.unwrap_or(DEFAULT_PATTERN);
    if pattern == 0 {
        bail!("{path}: '{key_prefix}sliding_window_pattern' must be at least 1");
    }
    Ok(pattern_layers(n_layers, pattern))
}

/// Layer i is sliding unless `(i + 1) % pattern == 0` (transformers; llama.cpp's `set_swa_pattern`).
pub(crate) fn pattern_layers(n_layers: usize, pattern: usize) -> Vec<bool> {
    (0..n_layers).map(|i| (i + 1) % pattern != 0).collect()
}

pub fn config_to_hf(cfg: &ModelConfig) -> Value {
    let theta = match cfg.positional {
        Positional::Rotary { theta, .. } => theta,
        Positional::Learned => DEFAULT_GLOBAL_THETA,
    };
    let e = &cfg.extras;
    let layer_types: Vec<&str> =
        (0..cfg.n_layers).map(|l| if e.sliding_layers.get(l).copied().unwrap_or(false) { "sliding_attention" } else { "full_attention" }).collect();
    json!({
        "model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"],
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.d_head, "intermediate_size": cfg.d_mlp,
        "vocab_size": cfg.d_vocab, "max_position_embeddings": cfg.n_ctx, "rms_norm_eps": cfg.norm_eps,
        "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": cfg.tied_embeddings,
        "query_pre_attn_scalar": e.query_pre_attn_scalar.unwrap_or(cfg.d_head as f64),
        "sliding_window": e.sliding_window, "layer_types": layer_types,
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": e.local_rope_theta.unwrap_or(DEFAULT_LOCAL_THETA)},
        },
        "final_logit_softcapping": null, "attn_logit_softcapping": null, "attention_bias": false,
        "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
    })
}

/// A Gemma RMSNorm (`1 + w`) of width `d` at `{prefix}.weight`.
fn load_gemma_norm(ck: &Checkpoint, prefix: &str, d: usize, eps: f64) -> Result<Norm> {
    let weight = ck.tensor(&format!("{prefix}.weight"), &[d])?;
    Ok(Norm { name: prefix.to_string(), weight, bias: None, eps, unit_offset: true })
}

pub fn build(cfg: &ModelConfig, ck: &Checkpoint) -> Result<super::Parts> {
    let (d, m, eps) = (cfg.d_model, cfg.d_mlp, cfg.norm_eps);
    let (qd, kvd) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
    // Gemma3ForCausalLM: `model.`; Gemma3ForConditionalGeneration: the language model's prefix.
    let p = ["model.", "model.language_model.", "language_model.model."]
        .into_iter()
        .find(|p| ck.contains(&format!("{p}embed_tokens.weight")))
        .unwrap_or("model.");
    let wte = format!("{p}embed_tokens.weight");
    let embed = ck.tensor(&wte, &[cfg.d_vocab, d])?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let h = format!("{p}layers.{l}");
        let lin = |name: &str, out: usize, inp: usize| load_linear(ck, &format!("{h}.{name}"), out, inp, false, false);
        let norm = |name: &str, width: usize| load_gemma_norm(ck, &format!("{h}.{name}"), width, eps);
        blocks.push(Block {
            ln1: norm("input_layernorm", d)?,
            attn: Attention {
                qkv: QkvProj::Separate { q: lin("self_attn.q_proj", qd, d)?, k: lin("self_attn.k_proj", kvd, d)?, v: lin("self_attn.v_proj", kvd, d)? },
                out: lin("self_attn.o_proj", d, qd)?,
                q_norm: Some(norm("self_attn.q_norm", cfg.d_head)?),
                k_norm: Some(norm("self_attn.k_norm", cfg.d_head)?),
            },
            ln2: norm("pre_feedforward_layernorm", d)?,
            mlp: Mlp::Gated { gate: lin("mlp.gate_proj", m, d)?, up: lin("mlp.up_proj", m, d)?, down: lin("mlp.down_proj", d, m)? },
            post_attn_norm: Some(norm("post_attention_layernorm", d)?),
            post_mlp_norm: Some(norm("post_feedforward_layernorm", d)?),
        });
    }
    let ln_final = load_gemma_norm(ck, &format!("{p}norm"), d, eps)?;
    let unembed = if cfg.tied_embeddings {
        Linear::new(wte.clone(), embed.clone(), None, false)?
    } else {
        let head = if p == "language_model.model." { "language_model.lm_head" } else { "lm_head" };
        load_linear(ck, head, cfg.d_vocab, d, false, false)?
    };
    Ok(super::Parts { embed: (wte, embed), pos_embed: None, blocks, ln_final, unembed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(v: Value) -> Result<ModelConfig> {
        config_from_hf(&HfConfig::new(&v, Path::new("config.json")))
    }

    fn base() -> Value {
        json!({"model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 7, "intermediate_size": 96,
               "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 320})
    }

    #[test]
    fn pattern_makes_every_sixth_layer_global() {
        // transformers: `(i + 1) % 6 != 0` is sliding; llama.cpp: `il % 6 < 5`. Layers 5 and 11 are global.
        let v = pattern_layers(12, 6);
        let global: Vec<usize> = v.iter().enumerate().filter(|(_, s)| !**s).map(|(i, _)| i).collect();
        assert_eq!(global, vec![5, 11]);
        assert!(pattern_layers(3, 1).iter().all(|s| !s), "pattern 1 means every layer is global");
    }

    #[test]
    fn defaults_and_legacy_keys() {
        let cfg = parse(base()).unwrap();
        assert_eq!(cfg.d_head, 32, "head_dim comes from the config, not d_model / heads");
        assert_eq!(cfg.extras.sliding_layers, vec![true, true, true, true, true, false, true]);
        assert_eq!(cfg.extras.query_pre_attn_scalar, Some(256.0));
        assert_eq!(cfg.positional, Positional::Rotary { dim: 32, theta: 1e6 });
        assert_eq!(cfg.extras.local_rope_theta, Some(1e4));
        assert!(cfg.tied_embeddings);
        assert_eq!(cfg.extras.embed_scale, Some(8.0));
        let mut v = base();
        v["rope_theta"] = json!(5e5);
        v["rope_local_base_freq"] = json!(2e4);
        v["sliding_window_pattern"] = json!(2);
        let cfg = parse(v).unwrap();
        assert_eq!(cfg.positional, Positional::Rotary { dim: 32, theta: 5e5 });
        assert_eq!(cfg.extras.local_rope_theta, Some(2e4));
        assert_eq!(cfg.extras.sliding_layers, vec![true, false, true, false, true, false, true]);
    }

    #[test]
    fn reads_text_config_of_the_multimodal_wrapper() {
        let v = json!({"model_type": "gemma3", "text_config": base()});
        assert_eq!(parse(v).unwrap().d_mlp, 96);
        let e = parse(json!({"model_type": "gemma3"})).unwrap_err().to_string();
        assert!(e.contains("text_config"), "{e}");
    }

    #[test]
    fn rejects_what_it_cannot_compute() {
        for (key, val, needle) in [
            ("final_logit_softcapping", json!(30.0), "final_logit_softcapping"),
            ("attn_logit_softcapping", json!(50.0), "attn_logit_softcapping"),
            ("rope_scaling", json!({"rope_type": "linear", "factor": 8.0}), "rope scaling"),
            ("use_bidirectional_attention", json!(true), "bidirectional"),
            ("layer_types", json!(["sliding_attention"]), "1 entries for 7 layers"),
        ] {
            let mut v = base();
            v[key] = val;
            let e = parse(v).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("config.json"), "{key}: {e}");
        }
    }

    #[test]
    fn hf_config_round_trips() {
        let mut v = base();
        v["query_pre_attn_scalar"] = json!(24);
        v["sliding_window"] = json!(8);
        v["rope_parameters"] = json!({"full_attention": {"rope_type": "default", "rope_theta": 1e5}, "sliding_attention": {"rope_type": "default", "rope_theta": 5e3}});
        let cfg = parse(v).unwrap();
        let back = parse(config_to_hf(&cfg)).unwrap();
        assert_eq!(back, cfg);
    }
}
