//! Named tensors from a checkpoint, converted to f32 and checked against the shapes a config implies.
use crate::QiError;
use anyhow::{Context, Result};
use candle_core::{safetensors::MmapedSafetensors, DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

enum Store {
    Safetensors(MmapedSafetensors),
    /// Each tensor is handed out once and dropped from the map then, so a model built from a
    /// dequantized GGUF never holds its weights twice (a 1.5B model is 6 GB in f32).
    Map(std::sync::Mutex<HashMap<String, Tensor>>),
}

/// The tensors of one model, under their Hugging Face names.
pub struct Checkpoint {
    /// The file (or directory, for sharded checkpoints) named in error messages.
    pub path: PathBuf,
    store: Store,
    /// Storage type of each tensor as found in the file (`F32`, `BF16`, `Q4_1`, …).
    pub tensor_types: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Memory-maps one or more safetensors files (the shards of one checkpoint).
    pub fn from_safetensors(files: &[PathBuf], display: &Path) -> Result<Self> {
        for f in files {
            if !f.is_file() {
                anyhow::bail!("{}: weights file not found", f.display());
            }
        }
        // SAFETY: the files are opened read-only; qi never writes to a checkpoint it has mapped.
        let st = unsafe { MmapedSafetensors::multi(files) }.with_context(|| {
            format!("{}: not a valid safetensors file (truncated or corrupt header/data)", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))
        })?;
        let tensor_types = st.tensors().into_iter().map(|(n, v)| (n, format!("{:?}", v.dtype()).to_uppercase())).collect();
        Ok(Checkpoint { path: display.to_path_buf(), store: Store::Safetensors(st), tensor_types })
    }

    /// Tensors already in memory (e.g. dequantized from GGUF), with their source types.
    pub fn from_map(path: &Path, tensors: HashMap<String, Tensor>, tensor_types: BTreeMap<String, String>) -> Self {
        Checkpoint { path: path.to_path_buf(), store: Store::Map(std::sync::Mutex::new(tensors)), tensor_types }
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.store {
            Store::Safetensors(st) => st.get(name).is_ok(),
            Store::Map(m) => m.lock().expect("checkpoint map lock").contains_key(name),
        }
    }

    /// The tensor `name` as f32, which must have exactly `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = match &self.store {
            Store::Safetensors(st) => {
                if st.get(name).is_err() {
                    return Err(self.missing(name));
                }
                st.load(name, &Device::Cpu).with_context(|| format!("{}: cannot read tensor '{name}'", self.path.display()))?
            }
            Store::Map(m) => m.lock().expect("checkpoint map lock").remove(name).ok_or_else(|| self.missing(name))?,
        };
        if t.dims() != shape {
            return Err(QiError::ShapeMismatch { file: self.path.clone(), tensor: name.to_string(), found: t.dims().to_vec(), expected: shape.to_vec() }.into());
        }
        let t = t.to_dtype(DType::F32)?;
        let bad = t.flatten_all()?.to_vec1::<f32>()?.iter().position(|v| !v.is_finite());
        if let Some(i) = bad {
            anyhow::bail!("{}: tensor '{name}' has a non-finite value at flat index {i}", self.path.display());
        }
        Ok(t)
    }

    /// The first of `names` that exists.
    pub fn first_present<'a>(&self, names: &[&'a str]) -> Option<&'a str> {
        names.iter().copied().find(|n| self.contains(n))
    }

    fn missing(&self, name: &str) -> anyhow::Error {
        QiError::MissingTensor { file: self.path.clone(), tensor: name.to_string() }.into()
    }
}
