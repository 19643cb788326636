//! GGUF files (llama.cpp): metadata → HF-style config, tensors dequantized to f32 under their HF
//! names (so one builder per family serves both formats), tokenizer from the metadata. The file's
//! original quantization type of each tensor is kept in [`SourceInfo::tensor_types`].
use super::Checkpoint;
use crate::models::{self, hf_config::HfConfig, Architecture, HookedTransformer, SourceInfo};
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Reads the header (metadata and tensor directory) of a GGUF file.
pub fn read_content(path: &Path) -> Result<(std::fs::File, Content)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot open GGUF file", path.display()))?;
    let content = Content::read(&mut f).map_err(|e| anyhow!("{}: not a valid GGUF file (truncated or corrupt header: {e})", path.display()))?;
    Ok((f, content))
}

fn md_u(md: &HashMap<String, Value>, key: &str) -> Option<u64> {
    md.get(key).and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)).or_else(|| v.to_i32().ok().map(|x| x as u64)))
}
fn md_f(md: &HashMap<String, Value>, key: &str) -> Option<f64> {
    md.get(key).and_then(|v| v.to_f32().ok().map(f64::from).or_else(|| v.to_f64().ok()))
}
fn md_req(md: &HashMap<String, Value>, key: &str, path: &Path) -> Result<u64> {
    md_u(md, key).ok_or_else(|| anyhow!("{}: GGUF metadata '{key}' is missing or not an integer", path.display()))
}

/// Loads a GGUF model; every tensor is dequantized to f32.
pub fn load(path: &Path) -> Result<HookedTransformer> {
    let (mut file, content) = read_content(path)?;
    let md = &content.metadata;
    let arch_name = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .ok_or_else(|| anyhow!("{}: GGUF metadata 'general.architecture' is missing", path.display()))?
        .clone();
    let arch = Architecture::from_name(&arch_name).with_context(|| format!("{}: GGUF metadata 'general.architecture'", path.display()))?;
    let a = arch_name.as_str();
    let emb_rows = content
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims()[0])
        .ok_or_else(|| anyhow!("{}: missing tensor 'token_embd.weight'", path.display()))?;
    let n_heads = md_req(md, &format!("{a}.attention.head_count"), path)? as usize;
    let n_kv = md_u(md, &format!("{a}.attention.head_count_kv")).map(|x| x as usize).unwrap_or(n_heads);
    let d_model = md_req(md, &format!("{a}.embedding_length"), path)? as usize;
    let dims = Dims::from_metadata(arch, a, md, path, n_heads, n_kv, d_model)?;
    check_against_metadata(&dims, &content, path)?;
    let tied = !content.tensor_infos.contains_key("output.weight");
    let common = json!({
        "vocab_size": md_u(md, &format!("{a}.vocab_size")).map(|x| x as usize).unwrap_or(emb_rows),
        "bos_token_id": md_u(md, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": md_u(md, "tokenizer.ggml.eos_token_id"),
    });
    let mut cfg_json = match arch {
        // Qwen2 is Llama with q/k/v biases; its GGUF metadata uses the same keys.
        Architecture::Llama | Architecture::Qwen2 => json!({
            "model_type": arch.name(),
            "hidden_size": d_model,
            "num_hidden_layers": dims.n_layers,
            "num_attention_heads": n_heads,
            "num_key_value_heads": n_kv,
            "head_dim": dims.d_head,
            "intermediate_size": dims.d_mlp,
            "max_position_embeddings": md_req(md, &format!("{a}.context_length"), path)?,
            "rms_norm_eps": md_f(md, &format!("{a}.attention.layer_norm_rms_epsilon")).unwrap_or(if arch == Architecture::Qwen2 { 1e-6 } else { 1e-5 }),
            "rope_theta": md_f(md, &format!("{a}.rope.freq_base")).unwrap_or(10000.0),
            "tie_word_embeddings": tied,
        }),
        Architecture::Gpt2 => json!({
            "model_type": "gpt2",
            "n_embd": d_model,
            "n_layer": dims.n_layers,
            "n_head": n_heads,
            "n_inner": dims.d_mlp,
            "n_positions": md_req(md, &format!("{a}.context_length"), path)?,
            "layer_norm_epsilon": md_f(md, &format!("{a}.attention.layer_norm_epsilon")).unwrap_or(1e-5),
        }),
        Architecture::Gemma3 => gemma3_config(md, a, d_model, n_heads, n_kv, tied, path)?,
        Architecture::GptNeox => {
            let d_head = d_model / n_heads.max(1);
            let rot = md_u(md, &format!("{a}.rope.dimension_count")).map(|x| x as usize).unwrap_or(d_head / 4);
            json!({
                "model_type": "gpt_neox",
                "hidden_size": d_model,
                "num_hidden_layers": dims.n_layers,
                "num_attention_heads": n_heads,
                "intermediate_size": dims.d_mlp,
                "max_position_embeddings": md_req(md, &format!("{a}.context_length"), path)?,
                "layer_norm_eps": md_f(md, &format!("{a}.attention.layer_norm_epsilon")).unwrap_or(1e-5),
                "rotary_pct": rot as f64 / d_head as f64,
                "rotary_emb_base": md_f(md, &format!("{a}.rope.freq_base")).unwrap_or(10000.0),
                "use_parallel_residual": md.get(&format!("{a}.use_parallel_residual")).and_then(|v| v.to_bool().ok()).unwrap_or(true),
                "tie_word_embeddings": tied,
            })
        }
    };
    cfg_json.as_object_mut().unwrap().extend(common.as_object().unwrap().clone());
    let cfg = models::config_from_hf(arch, &HfConfig::new(&cfg_json, path))?;

    let mut tensors = HashMap::new();
    let mut types = BTreeMap::new();
    let mut infos: Vec<_> = content.tensor_infos.iter().collect();
    infos.sort_by_key(|(_, info)| info.offset);
    let file_len = file.metadata().with_context(|| format!("{}: cannot stat the GGUF file", path.display()))?.len();
    for (name, info) in infos {
        let Some(hf) = hf_name(arch, name) else { continue };
        let end = tensor_bytes(info).and_then(|b| content.tensor_data_offset.checked_add(info.offset)?.checked_add(b as u64));
        let Some(end) = end else {
            anyhow::bail!("{}: tensor '{name}' declares shape {:?} at offset {}: more bytes than any file can hold", path.display(), info.shape.dims(), info.offset);
        };
        if end > file_len {
            anyhow::bail!("{}: file is truncated: tensor '{name}' ends at byte {end}, but the file has {file_len} bytes", path.display());
        }
        let qt = info.read(&mut file, content.tensor_data_offset, &Device::Cpu).map_err(|e| anyhow!("{}: cannot read tensor '{name}': {e}", path.display()))?;
        let mut t = qt.dequantize(&Device::Cpu).map_err(|e| anyhow!("{}: cannot dequantize tensor '{name}' ({:?}): {e}", path.display(), info.ggml_dtype))?;
        // Qwen2's converter keeps HF's rotate-half row order (llama.cpp runs it with NeoX-style rope).
        if arch == Architecture::Llama && (name.ends_with("attn_q.weight") || name.ends_with("attn_k.weight")) {
            let heads = if name.ends_with("attn_q.weight") { cfg.n_heads } else { cfg.n_kv_heads };
            t = unpermute_rotary_rows(&t, heads).with_context(|| format!("{}: tensor '{name}'", path.display()))?;
        }
        if arch == Architecture::Gpt2 && is_gpt2_conv1d(&hf) {
            t = t.t()?.contiguous()?;
        }
        // convert_hf_to_gguf.py stores Gemma 3's norm weights as 1 + w (llama.cpp multiplies by
        // them directly); qi keeps HF's w, as transformers' GGUF loader does. No q/k permutation:
        // llama.cpp runs Gemma's rotary in the rotate-half (NeoX) form.
        if arch == Architecture::Gemma3 && name.ends_with("norm.weight") {
            t = (t - 1.0)?;
        }
        types.insert(hf.clone(), format!("{:?}", info.ggml_dtype).to_uppercase());
        tensors.insert(hf, t);
    }
    let ck = Checkpoint::from_map(path, tensors, types.clone());
    let parts = models::build_parts(&cfg, &ck)?;
    let tokenizer = match md.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok()) {
        None => None,
        Some(kind) => match Tokenizer::from_gguf_metadata(md) {
            Ok(t) => Some(t),
            // A vocabulary kind qi cannot build (other than BPE "gpt2" and SentencePiece "llama") does not stop
            // the model from loading: its forward pass takes token ids, and text APIs say there is
            // no tokenizer. Broken metadata of a supported kind is still an error.
            Err(e) if !["gpt2", "llama"].contains(&kind.as_str()) => {
                eprintln!("warning: {}: tokenizer not loaded ({e:#}); pass token ids", path.display());
                None
            }
            Err(e) => return Err(e.context(format!("{}: cannot build the tokenizer from the GGUF metadata", path.display()))),
        },
    };
    let source = SourceInfo { source: path.display().to_string(), files: vec![path.display().to_string()], tensor_types: types, quantization: None };
    HookedTransformer::from_parts(cfg, parts.embed, parts.pos_embed, parts.blocks, parts.ln_final, parts.unembed, tokenizer, source)
}

/// HF-style config of a `gemma3` GGUF. llama.cpp's converter writes no layer pattern, local
/// rotary base or query scale; its loader assumes every 6th layer global, base 10000 on local
/// layers and `1/sqrt(key_length)` (`d_model / heads` for the 62-layer 27B), and no sliding
/// window at all when `attention.sliding_window` is absent. qi does the same, but reads
/// `attention.sliding_window_pattern` (a period or one bool per layer, true = sliding) and
/// `rope.freq_base_swa` when a file has them.
fn gemma3_config(md: &HashMap<String, Value>, a: &str, d_model: usize, n_heads: usize, n_kv: usize, tied: bool, path: &Path) -> Result<serde_json::Value> {
    let n_layers = md_req(md, &format!("{a}.block_count"), path)? as usize;
    let d_head = md_u(md, &format!("{a}.attention.key_length")).map(|x| x as usize).unwrap_or(d_model / n_heads.max(1));
    let window = md_u(md, &format!("{a}.attention.sliding_window")).filter(|&w| w > 0);
    let pattern_key = format!("{a}.attention.sliding_window_pattern");
    let sliding: Vec<bool> = match md.get(&pattern_key) {
        _ if window.is_none() => vec![false; n_layers],
        None => models::gemma3::pattern_layers(n_layers, 6),
        Some(Value::Array(v)) => {
            let flags: Option<Vec<bool>> = v.iter().map(|x| x.to_bool().ok()).collect();
            let flags = flags.ok_or_else(|| anyhow!("{}: GGUF metadata '{pattern_key}' must be an integer or a list of booleans", path.display()))?;
            if flags.len() != n_layers {
                anyhow::bail!("{}: GGUF metadata '{pattern_key}' has {} entries for {n_layers} layers ('{a}.block_count')", path.display(), flags.len());
            }
            flags
        }
        Some(_) => match md_u(md, &pattern_key) {
            Some(p) if p > 0 => models::gemma3::pattern_layers(n_layers, p as usize),
            _ => anyhow::bail!("{}: GGUF metadata '{pattern_key}' must be a positive integer or a list of booleans", path.display()),
        },
    };
    let scalar = if n_layers == 62 { (d_model / n_heads.max(1)) as f64 } else { d_head as f64 };
    Ok(json!({
        "model_type": "gemma3_text",
        "hidden_size": d_model,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": d_head,
        "intermediate_size": md_req(md, &format!("{a}.feed_forward_length"), path)?,
        "max_position_embeddings": md_req(md, &format!("{a}.context_length"), path)?,
        "rms_norm_eps": md_f(md, &format!("{a}.attention.layer_norm_rms_epsilon")).unwrap_or(1e-6),
        "rope_theta": md_f(md, &format!("{a}.rope.freq_base")).unwrap_or(10000.0),
        "rope_local_base_freq": md_f(md, &format!("{a}.rope.freq_base_swa")).unwrap_or(10000.0),
        "sliding_window": window.unwrap_or(1),
        "layer_types": sliding.iter().map(|&s| if s { "sliding_attention" } else { "full_attention" }).collect::<Vec<_>>(),
        "query_pre_attn_scalar": scalar,
        "final_logit_softcapping": md_f(md, &format!("{a}.final_logit_softcapping")),
        "attn_logit_softcapping": md_f(md, &format!("{a}.attn_logit_softcapping")),
        "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": tied,
    }))
}

/// Bytes a tensor occupies in the data section; `None` when the declared shape overflows (a
/// damaged header must be an error, not an overflow).
fn tensor_bytes(info: &candle_core::quantized::gguf_file::TensorInfo) -> Option<usize> {
    let t = info.ggml_dtype;
    let elems = info.shape.dims().iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    (elems / t.block_size()).checked_mul(t.type_size())
}

/// The sizes the metadata declares, with the key each comes from (for error messages).
struct Dims {
    arch: Architecture,
    n_layers: usize,
    d_model: usize,
    n_heads: usize,
    n_kv: usize,
    d_head: usize,
    d_mlp: usize,
    /// (key, value): where `d_head` came from, or None when it is `d_model / n_heads`.
    d_head_key: Option<(String, usize)>,
    a: String,
}

impl Dims {
    fn from_metadata(arch: Architecture, a: &str, md: &HashMap<String, Value>, path: &Path, n_heads: usize, n_kv: usize, d_model: usize) -> Result<Self> {
        if n_heads == 0 || n_kv == 0 {
            anyhow::bail!("{}: GGUF metadata '{a}.attention.head_count' / '{a}.attention.head_count_kv' must be positive", path.display());
        }
        // llama.cpp's head size is `key_length`, else `embedding_length / head_count`; rotary
        // models rotate `rope.dimension_count` dims, which qi supports only as whole heads, so
        // that key fixes the head size too when present.
        let d_head_key = if matches!(arch, Architecture::Llama | Architecture::Qwen2 | Architecture::Gemma3) {
            [format!("{a}.attention.key_length"), format!("{a}.rope.dimension_count")].into_iter().find_map(|k| md_u(md, &k).map(|v| (k, v as usize)))
        } else {
            None
        };
        let rot = md_u(md, &format!("{a}.rope.dimension_count"));
        if let (Some((k, d_head)), Some(rot)) = (&d_head_key, rot) {
            if rot as usize != *d_head {
                anyhow::bail!("{}: GGUF metadata '{a}.rope.dimension_count' = {rot} differs from '{k}' = {d_head} (partial rotary embeddings are not supported for {a})", path.display());
            }
        }
        Ok(Dims {
            arch,
            n_layers: md_req(md, &format!("{a}.block_count"), path)? as usize,
            d_model,
            n_heads,
            n_kv,
            d_head: d_head_key.as_ref().map(|(_, v)| *v).unwrap_or(d_model / n_heads),
            d_mlp: md_req(md, &format!("{a}.feed_forward_length"), path)? as usize,
            d_head_key,
            a: a.to_string(),
        })
    }
}

/// Checks every block tensor's shape against what the metadata declares before any data is read,
/// so a disagreement names both the metadata key and the tensor (the projections are checked
/// first: a wrong head count shows up at `attn_q`).
fn check_against_metadata(d: &Dims, content: &Content, path: &Path) -> Result<()> {
    let a = &d.a;
    let head = match &d.d_head_key {
        Some((k, v)) => format!("head size {v} ('{k}')"),
        None => format!("head size {} = '{a}.embedding_length' {} / '{a}.attention.head_count' {}", d.d_head, d.d_model, d.n_heads),
    };
    let q_rows = (d.n_heads * d.d_head, format!("'{a}.attention.head_count' = {} heads × {head}", d.n_heads));
    let kv_rows = (d.n_kv * d.d_head, format!("'{a}.attention.head_count_kv' = {} heads × {head}", d.n_kv));
    let width = (d.d_model, format!("'{a}.embedding_length' = {}", d.d_model));
    let mlp = (d.d_mlp, format!("'{a}.feed_forward_length' = {}", d.d_mlp));
    // (leaf, axis of the [out, in] shape, expected size and why), in checking order
    let mut rules: Vec<(&str, usize, (usize, String))> = match d.arch {
        Architecture::Llama | Architecture::Qwen2 | Architecture::Gemma3 => vec![
            ("attn_q.weight", 0, q_rows.clone()),
            ("attn_q.weight", 1, width.clone()),
            ("attn_q.bias", 0, q_rows.clone()),
            ("attn_k.weight", 0, kv_rows.clone()),
            ("attn_k.bias", 0, kv_rows.clone()),
            ("attn_v.weight", 0, kv_rows.clone()),
            ("attn_v.bias", 0, kv_rows),
            ("attn_output.weight", 0, width.clone()),
            ("attn_output.weight", 1, q_rows),
        ],
        Architecture::Gpt2 | Architecture::GptNeox => {
            vec![("attn_qkv.weight", 0, (3 * d.d_model, format!("3 × '{a}.embedding_length' = 3 × {}", d.d_model))), ("attn_qkv.weight", 1, width.clone())]
        }
    };
    rules.extend([
        ("ffn_up.weight", 0, mlp.clone()),
        ("ffn_up.weight", 1, width.clone()),
        ("ffn_gate.weight", 0, mlp.clone()),
        ("ffn_down.weight", 0, width.clone()),
        ("ffn_down.weight", 1, mlp),
        ("attn_norm.weight", 0, width.clone()),
    ]);
    for (leaf, axis, (want, why)) in &rules {
        for l in 0..d.n_layers {
            let name = format!("blk.{l}.{leaf}");
            let Some(info) = content.tensor_infos.get(&name) else { continue };
            let dims = info.shape.dims();
            if dims.get(*axis) != Some(want) {
                let side = if *axis == 0 { "rows (out)" } else { "columns (in)" };
                anyhow::bail!("{}: tensor '{name}' has shape {dims:?}, but the metadata implies {want} {side}: {why}", path.display());
            }
        }
    }
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let dims = content.tensor_infos[name].shape.dims();
        if name == "token_embd.weight" && dims.get(1) != Some(&d.d_model) {
            anyhow::bail!("{}: tensor '{name}' has shape {dims:?}, but the metadata implies {} columns: {}", path.display(), d.d_model, width.1);
        }
        let layer = name.strip_prefix("blk.").and_then(|r| r.split_once('.')).and_then(|(l, _)| l.parse::<usize>().ok());
        if layer.is_some_and(|l| l >= d.n_layers) {
            anyhow::bail!("{}: tensor '{name}' is beyond the {} blocks that '{a}.block_count' declares", path.display(), d.n_layers);
        }
    }
    Ok(())
}

/// llama.cpp stores Llama's q/k rows interleaved per head for its rotary kernel
/// (`reshape(h, 2, d/2, in).swapaxes(1, 2)` at conversion); this restores HF's order.
fn unpermute_rotary_rows(t: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    if heads == 0 || rows % (2 * heads) != 0 {
        anyhow::bail!("{rows} rows cannot be split into {heads} rotary heads");
    }
    Ok(t.reshape((heads, rows / heads / 2, 2, cols))?.transpose(1, 2)?.contiguous()?.reshape((rows, cols))?)
}

fn is_gpt2_conv1d(hf: &str) -> bool {
    hf.ends_with("c_attn.weight") || hf.ends_with("c_proj.weight") || hf.ends_with("c_fc.weight")
}

/// HF name of a GGUF tensor, or None for tensors qi does not use (e.g. `rope_freqs`).
fn hf_name(arch: Architecture, gguf: &str) -> Option<String> {
    let (prefix, layer_fmt, map): (&str, &str, &[(&str, &str)]) = match arch {
        Architecture::Llama | Architecture::Qwen2 => (
            "model.",
            "model.layers.{l}.",
            &[
                ("attn_norm.weight", "input_layernorm.weight"),
                ("attn_q.bias", "self_attn.q_proj.bias"),
                ("attn_k.bias", "self_attn.k_proj.bias"),
                ("attn_v.bias", "self_attn.v_proj.bias"),
                ("attn_q.weight", "self_attn.q_proj.weight"),
                ("attn_k.weight", "self_attn.k_proj.weight"),
                ("attn_v.weight", "self_attn.v_proj.weight"),
                ("attn_output.weight", "self_attn.o_proj.weight"),
                ("ffn_norm.weight", "post_attention_layernorm.weight"),
                ("ffn_gate.weight", "mlp.gate_proj.weight"),
                ("ffn_up.weight", "mlp.up_proj.weight"),
                ("ffn_down.weight", "mlp.down_proj.weight"),
            ],
        ),
        Architecture::Gpt2 => (
            "transformer.",
            "transformer.h.{l}.",
            &[
                ("attn_norm.weight", "ln_1.weight"),
                ("attn_norm.bias", "ln_1.bias"),
                ("attn_qkv.weight", "attn.c_attn.weight"),
                ("attn_qkv.bias", "attn.c_attn.bias"),
                ("attn_output.weight", "attn.c_proj.weight"),
                ("attn_output.bias", "attn.c_proj.bias"),
                ("ffn_norm.weight", "ln_2.weight"),
                ("ffn_norm.bias", "ln_2.bias"),
                ("ffn_up.weight", "mlp.c_fc.weight"),
                ("ffn_up.bias", "mlp.c_fc.bias"),
                ("ffn_down.weight", "mlp.c_proj.weight"),
                ("ffn_down.bias", "mlp.c_proj.bias"),
            ],
        ),
        Architecture::Gemma3 => (
            "model.",
            "model.layers.{l}.",
            &[
                ("attn_norm.weight", "input_layernorm.weight"),
                ("attn_q.weight", "self_attn.q_proj.weight"),
                ("attn_k.weight", "self_attn.k_proj.weight"),
                ("attn_v.weight", "self_attn.v_proj.weight"),
                ("attn_output.weight", "self_attn.o_proj.weight"),
                ("attn_q_norm.weight", "self_attn.q_norm.weight"),
                ("attn_k_norm.weight", "self_attn.k_norm.weight"),
                ("post_attention_norm.weight", "post_attention_layernorm.weight"),
                ("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
                ("ffn_gate.weight", "mlp.gate_proj.weight"),
                ("ffn_up.weight", "mlp.up_proj.weight"),
                ("ffn_down.weight", "mlp.down_proj.weight"),
                ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
            ],
        ),
        Architecture::GptNeox => (
            "gpt_neox.",
            "gpt_neox.layers.{l}.",
            &[
                ("attn_norm.weight", "input_layernorm.weight"),
                ("attn_norm.bias", "input_layernorm.bias"),
                ("attn_qkv.weight", "attention.query_key_value.weight"),
                ("attn_qkv.bias", "attention.query_key_value.bias"),
                ("attn_output.weight", "attention.dense.weight"),
                ("attn_output.bias", "attention.dense.bias"),
                ("ffn_norm.weight", "post_attention_layernorm.weight"),
                ("ffn_norm.bias", "post_attention_layernorm.bias"),
                ("ffn_up.weight", "mlp.dense_h_to_4h.weight"),
                ("ffn_up.bias", "mlp.dense_h_to_4h.bias"),
                ("ffn_down.weight", "mlp.dense_4h_to_h.weight"),
                ("ffn_down.bias", "mlp.dense_4h_to_h.bias"),
            ],
        ),
    };
    if let Some(rest) = gguf.strip_prefix("blk.") {
        let (l, leaf) = rest.split_once('.')?;
        let l: usize = l.parse().ok()?;
        let (_, hf) = map.iter().find(|(g, _)| *g == leaf)?;
        return Some(format!("{}{hf}", layer_fmt.replace("{l}", &l.to_string())));
    }
    let top = match (arch, gguf) {
        (Architecture::Llama | Architecture::Qwen2 | Architecture::Gemma3, "token_embd.weight") => "model.embed_tokens.weight".to_string(),
        (Architecture::Llama | Architecture::Qwen2 | Architecture::Gemma3, "output_norm.weight") => "model.norm.weight".to_string(),
        (Architecture::Llama | Architecture::Qwen2 | Architecture::Gemma3, "output.weight") => "lm_head.weight".to_string(),
        (Architecture::Gpt2, "token_embd.weight") => format!("{prefix}wte.weight"),
        (Architecture::Gpt2, "position_embd.weight") => format!("{prefix}wpe.weight"),
        (Architecture::Gpt2, "output_norm.weight") => format!("{prefix}ln_f.weight"),
        (Architecture::Gpt2, "output_norm.bias") => format!("{prefix}ln_f.bias"),
        (Architecture::Gpt2, "output.weight") => "lm_head.weight".to_string(),
        (Architecture::GptNeox, "token_embd.weight") => format!("{prefix}embed_in.weight"),
        (Architecture::GptNeox, "output_norm.weight") => format!("{prefix}final_layer_norm.weight"),
        (Architecture::GptNeox, "output_norm.bias") => format!("{prefix}final_layer_norm.bias"),
        (Architecture::GptNeox, "output.weight") => "embed_out.weight".to_string(),
        _ => return None,
    };
    Some(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // 2 heads of dim 4, 1 column: HF rows [a0 a1 | b0 b1] per head (halves a, b).
        let hf: Vec<f32> = (0..8).map(|x| x as f32).collect();
        // llama.cpp: reshape(h, 2, d/2).swapaxes(1, 2) → per head [a0 b0 a1 b1]
        let gguf: Vec<f32> = vec![0., 2., 1., 3., 4., 6., 5., 7.];
        let t = Tensor::from_vec(gguf, (8, 1), &Device::Cpu).unwrap();
        let back = unpermute_rotary_rows(&t, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(back, hf);
    }

    #[test]
    fn maps_names() {
        assert_eq!(hf_name(Architecture::Llama, "blk.3.ffn_down.weight").unwrap(), "model.layers.3.mlp.down_proj.weight");
        assert_eq!(hf_name(Architecture::Gpt2, "blk.0.attn_qkv.bias").unwrap(), "transformer.h.0.attn.c_attn.bias");
        assert!(hf_name(Architecture::Llama, "rope_freqs.weight").is_none());
        assert_eq!(hf_name(Architecture::Gemma3, "blk.2.ffn_norm.weight").unwrap(), "model.layers.2.pre_feedforward_layernorm.weight");
        assert_eq!(hf_name(Architecture::Gemma3, "blk.2.post_ffw_norm.weight").unwrap(), "model.layers.2.post_feedforward_layernorm.weight");
        assert_eq!(hf_name(Architecture::Gemma3, "blk.0.attn_k_norm.weight").unwrap(), "model.layers.0.self_attn.k_norm.weight");
        assert_eq!(hf_name(Architecture::Gemma3, "output_norm.weight").unwrap(), "model.norm.weight");
        assert_eq!(hf_name(Architecture::Qwen2, "blk.2.attn_k.bias").unwrap(), "model.layers.2.self_attn.k_proj.bias");
        assert_eq!(hf_name(Architecture::Qwen2, "output_norm.weight").unwrap(), "model.norm.weight");
    }
}
