//! Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`): the Llama decoder (`llama.rs` reads the config and the
//! tensors) with biases on the q, k and v projections (not on o_proj or the MLP), usually
//! rope theta 1e6 and tied embeddings. Sliding-window attention exists in the config but is off
//! in every released checkpoint; qi runs full causal attention and refuses configs that enable it.
use super::hf_config::HfConfig;
use super::{llama, Architecture, ModelConfig};
use super::Checkpoint;
use anyhow::{bail, Result};
use serde_json::Value;

pub fn config_from_hf(c: &HfConfig) -> Result<ModelConfig> {
    // `max_window_layers` and `sliding_window` only matter when sliding windows are on.
    if c.opt_bool(&["use_sliding_window"])?.unwrap_or(false) {
        bail!(
            "{}: 'use_sliding_window' = true is not supported (qi implements full causal attention only; set it to false)",
            c.path.display()
        );
    }
    if let Some(types) = c.json.get("layer_types").and_then(Value::as_array) {
        if let Some((i, t)) = types.iter().enumerate().find(|(_, t)| t.as_str() != Some("full_attention")) {
            bail!("{}: 'layer_types'[{i}] = {t} is not supported (only \"full_attention\")", c.path.display());
        }
    }
    if c.opt_bool(&["mlp_bias"])?.unwrap_or(false) {
        bail!("{}: 'mlp_bias' = true is not supported for qwen2 models", c.path.display());
    }
    llama::decoder_config(c, Architecture::Qwen2)
}

pub fn config_to_hf(cfg: &ModelConfig) -> Value {
    let mut v = llama::decoder_config_to_hf(cfg, "qwen2", "Qwen2ForCausalLM");
    v["use_sliding_window"] = Value::Bool(false);
    v
}

pub fn build(cfg: &ModelConfig, ck: &Checkpoint) -> Result<super::Parts> {
    llama::build_decoder(cfg, ck, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn base() -> Value {
        json!({
            "model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 160, "vocab_size": 320, "max_position_embeddings": 64,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true,
            "use_sliding_window": false, "sliding_window": 4096, "max_window_layers": 1,
            "layer_types": ["full_attention", "full_attention"]
        })
    }

    #[test]
    fn reads_a_qwen2_config_and_writes_it_back() {
        let j = base();
        let cfg = config_from_hf(&HfConfig::new(&j, Path::new("config.json"))).unwrap();
        assert_eq!(cfg.architecture, Architecture::Qwen2);
        assert_eq!((cfg.n_heads, cfg.n_kv_heads, cfg.d_head), (4, 2, 16));
        assert_eq!(cfg.positional, super::super::Positional::Rotary { dim: 16, theta: 1e6 });
        assert!(cfg.tied_embeddings);
        let out = config_to_hf(&cfg);
        assert_eq!(out["model_type"], "qwen2");
        assert_eq!(out["architectures"][0], "Qwen2ForCausalLM");
        assert_eq!(out["use_sliding_window"], false);
        assert_eq!(config_from_hf(&HfConfig::new(&out, Path::new("x"))).unwrap(), cfg);
    }

    #[test]
    fn sliding_windows_are_refused_by_key() {
        let mut j = base();
        j["use_sliding_window"] = json!(true);
        let e = config_from_hf(&HfConfig::new(&j, Path::new("dir/config.json"))).unwrap_err().to_string();
        assert!(e.contains("dir/config.json") && e.contains("use_sliding_window"), "{e}");
        let mut j = base();
        j["layer_types"] = json!(["full_attention", "sliding_attention"]);
        let e = config_from_hf(&HfConfig::new(&j, Path::new("config.json"))).unwrap_err().to_string();
        assert!(e.contains("'layer_types'[1]") && e.contains("sliding_attention"), "{e}");
    }
}
