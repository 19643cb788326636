//! Writing a model (typically a quantized twin) as a Hugging Face directory that
//! [`crate::load_model`] reads back: config.json, model.safetensors (dequantized f32 weights in the
//! checkpoint's own names and layouts), tokenizer.json + tokenizer_config.json, and
//! qi_quantization.json (the spec, the report and any activation quantization).
use crate::models::{config_to_hf, hf_state_dict};
use crate::quantize::QuantReport;
use crate::HookedTransformer;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// Writes `model` to `dir` (which must not exist or be empty). The directory appears complete or
/// not at all: files are written into a temporary sibling that is renamed at the end.
pub fn save_hf_dir(model: &HookedTransformer, dir: &Path, report: Option<&QuantReport>) -> Result<()> {
    ensure_empty_output_dir(dir)?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let name = dir.file_name().ok_or_else(|| anyhow!("{}: not a directory path", dir.display()))?.to_string_lossy().to_string();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = write_files(model, &tmp, report).and_then(|_| {
        if dir.exists() {
            std::fs::remove_dir(dir).with_context(|| format!("cannot replace empty directory {}", dir.display()))?;
        }
        std::fs::rename(&tmp, dir).with_context(|| format!("cannot move {} to {}", tmp.display(), dir.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Errors unless `dir` is absent or an empty directory (callers check before long work).
pub fn ensure_empty_output_dir(dir: &Path) -> Result<()> {
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{}: output directory exists and is not empty", dir.display());
    }
    Ok(())
}

/// Writes the HF files of `model` into the existing directory `dir` (no staging: callers that
/// need atomicity stage the directory themselves, as [`save_hf_dir`] and the twin cache do).
pub(crate) fn write_files(model: &HookedTransformer, dir: &Path, report: Option<&QuantReport>) -> Result<()> {
    // views of the model's tensors: safetensors' writer copies one tensor at a time
    let tensors: HashMap<String, candle_core::Tensor> = hf_state_dict(model)?.into_iter().collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).context("writing model.safetensors")?;
    if let Some(tok) = &model.tokenizer {
        tok.inner().save(dir.join("tokenizer.json"), false).map_err(|e| anyhow!("writing tokenizer.json: {e}"))?;
        let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i));
        let tc = serde_json::json!({ "bos_token": name(tok.bos_id()), "eos_token": name(tok.eos_id()), "pad_token": name(tok.pad_id()) });
        std::fs::write(dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&tc)?)?;
    }
    write_description(model, dir, report)
}

/// config.json and qi_quantization.json: what [`write_files`] writes besides the weights and the
/// tokenizer (a cached twin stores its weights in compact form and takes the reference's
/// tokenizer).
pub(crate) fn write_description(model: &HookedTransformer, dir: &Path, report: Option<&QuantReport>) -> Result<()> {
    let cfg = config_to_hf(&model.cfg);
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
    let note = serde_json::json!({
        "spec": model.source.quantization,
        "quantized_from": model.source.source,
        "report": report,
    });
    std::fs::write(dir.join("qi_quantization.json"), serde_json::to_string_pretty(&note)?)?;
    Ok(())
}
