//! Loading models by Hub id, local HF directory, single safetensors file or GGUF file.
pub mod gguf;
pub mod hub;

pub use crate::models::Checkpoint;

use crate::models::{self, hf_config::HfConfig, Architecture, HookedTransformer, SourceInfo};
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A Hugging Face Hub id (`gpt2`, `EleutherAI/pythia-70m`), optionally `@revision`.
    Hub { id: String, revision: Option<String> },
    /// A directory with config.json, safetensors weights and tokenizer files.
    HfDir(PathBuf),
    /// A single `.safetensors` file with config.json (and tokenizer files) beside it.
    Safetensors(PathBuf),
    /// A GGUF file (weights dequantized to f32, tokenizer from its metadata).
    Gguf(PathBuf),
}

impl ModelSource {
    /// Existing paths are local sources; anything else that looks like `owner/name` is a Hub id.
    pub fn parse(s: &str) -> Result<Self> {
        let p = Path::new(s);
        if p.is_dir() {
            return Ok(ModelSource::HfDir(p.to_path_buf()));
        }
        let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if p.is_file() {
            return match ext.as_deref() {
                Some("gguf") => Ok(ModelSource::Gguf(p.to_path_buf())),
                Some("safetensors") => Ok(ModelSource::Safetensors(p.to_path_buf())),
                _ => bail!("{s}: unsupported model file (expected a .gguf or .safetensors file, or an HF model directory)"),
            };
        }
        let looks_local = s.starts_with('.') || s.starts_with('/') || s.starts_with('~') || matches!(ext.as_deref(), Some("gguf" | "safetensors" | "json" | "bin"));
        let (id, revision) = match s.split_once('@') {
            Some((i, r)) => (i, Some(r.to_string())),
            None => (s, None),
        };
        let valid_id = !id.is_empty()
            && id.split('/').count() <= 2
            && id.split('/').all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        if looks_local || !valid_id {
            bail!("{s}: no such file or directory (and not a Hugging Face Hub id like 'gpt2' or 'EleutherAI/pythia-70m')");
        }
        Ok(ModelSource::Hub { id: id.to_string(), revision })
    }
}

/// A short display name for a model source: the file stem of a `.gguf`/`.safetensors` file, the
/// folder name of a local directory, a Hub id as given.
pub fn display_name(source: &str) -> String {
    let p = Path::new(source.trim_end_matches('/'));
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
    let local = p.exists() || source.starts_with('/') || source.starts_with('.') || source.starts_with('~');
    let name = if ["gguf", "safetensors"].contains(&ext) {
        p.file_stem()
    } else if local {
        p.file_name()
    } else {
        None
    };
    name.map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| source.to_string())
}

/// Loads a model from a Hub id or a local path (see [`ModelSource`]).
pub fn load_model(source: &str) -> Result<HookedTransformer> {
    let src = ModelSource::parse(source)?;
    let mut model = match &src {
        ModelSource::Gguf(p) => gguf::load(p)?,
        ModelSource::HfDir(d) => load_hf_dir(d, None)?,
        ModelSource::Safetensors(f) => {
            let dir = f.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
            load_hf_dir(&dir, Some(vec![f.clone()]))?
        }
        ModelSource::Hub { id, revision } => {
            let dir = hub::download(id, revision.as_deref())?;
            load_hf_dir(&dir, None).with_context(|| format!("loading Hub model '{id}' from {}", dir.display()))?
        }
    };
    model.source.source = source.to_string();
    Ok(model)
}

/// The architecture named by a HF config (`model_type`).
fn architecture_of(json: &serde_json::Value, path: &Path) -> Result<Architecture> {
    let mt = json.get("model_type").and_then(|v| v.as_str()).ok_or_else(|| anyhow!("{}: missing 'model_type'", path.display()))?;
    Architecture::from_name(mt)
}

/// Loads a HF-layout directory: config.json, weights (`files`, or model.safetensors, or the shards
/// listed in model.safetensors.index.json) and the tokenizer if present.
pub fn load_hf_dir(dir: &Path, files: Option<Vec<PathBuf>>) -> Result<HookedTransformer> {
    let cfg = read_config(dir)?;
    let (files, display) = match files {
        Some(f) => {
            let d = f[0].clone();
            (f, d)
        }
        None => weight_files(dir)?,
    };
    let ck = Checkpoint::from_safetensors(&files, &display)?;
    build_hf_dir(dir, cfg, &ck, &files)
}

/// A twin directory of the twin cache ([`crate::twin_cache`]): its description files and the
/// compact weights of [`crate::compact`], whose unstored tensors come from `reference`.
pub fn load_compact_dir(dir: &Path, reference: &HookedTransformer) -> Result<HookedTransformer> {
    let cfg = read_config(dir)?;
    let file = dir.join(crate::compact::FILE);
    let (tensors, types) = crate::compact::load(&file, reference)?;
    build_hf_dir(dir, cfg, &Checkpoint::from_map(&file, tensors, types), &[file])
}

/// The model config of a HF-layout directory's config.json.
fn read_config(dir: &Path) -> Result<crate::models::ModelConfig> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("{}: cannot read the model config", cfg_path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", cfg_path.display()))?;
    models::config_from_hf(architecture_of(&json, &cfg_path)?, &HfConfig::new(&json, &cfg_path))
}

/// The model of a HF-layout directory from its config and checkpoint.
fn build_hf_dir(dir: &Path, cfg: crate::models::ModelConfig, ck: &Checkpoint, files: &[PathBuf]) -> Result<HookedTransformer> {
    let parts = models::build_parts(&cfg, ck)?;
    let tokenizer = load_dir_tokenizer(dir)?;
    let note = QuantizationNote::read(dir)?;
    let source = SourceInfo {
        source: dir.display().to_string(),
        files: files.iter().map(|f| f.display().to_string()).collect(),
        tensor_types: ck.tensor_types.clone(),
        quantization: note.as_ref().and_then(|n| n.spec.clone()),
    };
    let mut model = HookedTransformer::from_parts(cfg, parts.embed, parts.pos_embed, parts.blocks, parts.ln_final, parts.unembed, tokenizer, source)?;
    // Activation quantization (W8A8, LLM.int8) is not in the weights; restore it from the note.
    if let Some(aq) = note.and_then(|n| n.report).map(|r| r.activation_quant) {
        for block in model.blocks.iter_mut() {
            for lin in block.linears_mut() {
                lin.act_quant = aq.get(&lin.name).cloned();
            }
        }
    }
    Ok(model)
}

/// `qi_quantization.json`, written by [`crate::export::save_hf_dir`] beside a quantized model.
#[derive(serde::Deserialize)]
struct QuantizationNote {
    spec: Option<String>,
    report: Option<crate::quant::report::QuantReport>,
}

impl QuantizationNote {
    fn read(dir: &Path) -> Result<Option<Self>> {
        let p = dir.join("qi_quantization.json");
        if !p.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
        Ok(Some(serde_json::from_str(&text).with_context(|| format!("{}: not a valid qi quantization note", p.display()))?))
    }
}

/// The shard file names listed in a `model.safetensors.index.json`, sorted and deduplicated.
pub(crate) fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).with_context(|| format!("{}: cannot read", index.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", index.display()))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| anyhow!("{}: missing 'weight_map' object", index.display()))?;
    let mut shards: Vec<String> = map.values().filter_map(|s| s.as_str().map(str::to_string)).collect();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

fn weight_files(dir: &Path) -> Result<(Vec<PathBuf>, PathBuf)> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok((vec![single.clone()], single));
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        return Ok((shard_names(&index)?.iter().map(|s| dir.join(s)).collect(), dir.to_path_buf()));
    }
    bail!(
        "{}: no model.safetensors or model.safetensors.index.json (PyTorch .bin checkpoints are not supported; convert them to safetensors)",
        dir.display()
    )
}

fn load_dir_tokenizer(dir: &Path) -> Result<Option<Tokenizer>> {
    let tj = dir.join("tokenizer.json");
    if tj.is_file() {
        return Ok(Some(Tokenizer::from_file(&tj)?));
    }
    let (v, m) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if v.is_file() && m.is_file() {
        return Ok(Some(Tokenizer::from_vocab_merges(&v, &m)?));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names() {
        assert_eq!(display_name("../shared/models/x/SmolLM2-135M-Instruct.Q4_1.gguf"), "SmolLM2-135M-Instruct.Q4_1");
        assert_eq!(display_name("./data/fixtures/llama/"), "llama");
        assert_eq!(display_name("EleutherAI/pythia-70m"), "EleutherAI/pythia-70m");
    }

    #[test]
    fn parses_sources() {
        assert_eq!(ModelSource::parse("gpt2").unwrap(), ModelSource::Hub { id: "gpt2".into(), revision: None });
        assert_eq!(
            ModelSource::parse("EleutherAI/pythia-70m@step1000").unwrap(),
            ModelSource::Hub { id: "EleutherAI/pythia-70m".into(), revision: Some("step1000".into()) }
        );
        let e = ModelSource::parse("./missing/model.gguf").unwrap_err().to_string();
        assert!(e.contains("no such file"), "{e}");
        let e = ModelSource::parse("a/b/c").unwrap_err().to_string();
        assert!(e.contains("no such file"), "{e}");
    }
}
