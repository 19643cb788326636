//! Named tensors from a checkpoint, converted to f32 and checked against the shapes a config implies.
use crate::QiError;
use anyhow::{Context, Result};
use candle_core::{safetensors::Load, DType, Device, Tensor};
use safetensors::tensor::{Metadata, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One safetensors file, read a tensor at a time. Not memory-mapped: the pages of a mapped file
/// count as resident while it is open, so a 6 GB twin would briefly need 12 GB to load.
pub(crate) struct StFile {
    path: PathBuf,
    file: std::sync::Mutex<std::fs::File>,
    /// Where the data section starts (after the 8-byte length and the JSON header).
    data_start: u64,
    meta: Metadata,
}

impl StFile {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let corrupt = |why: String| anyhow::anyhow!("{}: not a valid safetensors file (truncated or corrupt header/data: {why})", path.display());
        let mut file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let len = file.metadata().with_context(|| format!("{}: cannot stat", path.display()))?.len();
        let mut n = [0u8; 8];
        file.read_exact(&mut n).map_err(|_| corrupt(format!("{len} bytes, no header length")))?;
        let n = u64::from_le_bytes(n);
        // the format's own limit on the header (100 MB)
        if n > 100_000_000 || 8 + n > len {
            return Err(corrupt(format!("header length {n} in a file of {len} bytes")));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header).map_err(|e| corrupt(format!("reading the header: {e}")))?;
        // deserializing checks every tensor's offsets against its dtype and shape
        let meta: Metadata = serde_json::from_slice(&header).map_err(|e| corrupt(format!("header: {e}")))?;
        let data_start = 8 + n;
        if data_start + meta.data_len() as u64 != len {
            return Err(corrupt(format!("the header describes {} data bytes, the file has {}", meta.data_len(), len - data_start)));
        }
        Ok(StFile { path: path.to_path_buf(), file: std::sync::Mutex::new(file), data_start, meta })
    }

    /// The header's `__metadata__` entries.
    pub(crate) fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.meta.metadata().as_ref()
    }

    /// Dtype and shape of tensor `name`, without reading it.
    pub(crate) fn info(&self, name: &str) -> Option<(safetensors::Dtype, &[usize])> {
        self.meta.info(name).map(|i| (i.dtype, i.shape.as_slice()))
    }

    /// The bytes of tensor `name` (read now, one tensor's worth of memory).
    pub(crate) fn bytes(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(info) = self.meta.info(name) else { return Ok(None) };
        let (start, end) = info.data_offsets;
        let mut bytes = vec![0u8; end - start];
        let mut f = self.file.lock().expect("safetensors file lock");
        f.seek(SeekFrom::Start(self.data_start + start as u64))?;
        f.read_exact(&mut bytes).with_context(|| format!("{}: cannot read tensor '{name}'", self.path.display()))?;
        Ok(Some(bytes))
    }

    fn load(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(info) = self.meta.info(name) else { return Ok(None) };
        let Some(bytes) = self.bytes(name)? else { return Ok(None) };
        let view = TensorView::new(info.dtype, info.shape.clone(), &bytes).with_context(|| format!("{}: tensor '{name}'", self.path.display()))?;
        Ok(Some(view.load(&Device::Cpu).with_context(|| format!("{}: cannot read tensor '{name}'", self.path.display()))?))
    }
}

enum Store {
    Safetensors(Vec<StFile>),
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
    /// One or more safetensors files (the shards of one checkpoint); each tensor is read when
    /// asked for.
    pub fn from_safetensors(files: &[PathBuf], display: &Path) -> Result<Self> {
        for f in files {
            if !f.is_file() {
                anyhow::bail!("{}: weights file not found", f.display());
            }
        }
        let st: Vec<StFile> = files.iter().map(|f| StFile::open(f)).collect::<Result<_>>()?;
        let tensor_types = st.iter().flat_map(|f| f.meta.tensors().into_iter().map(|(n, v)| (n, format!("{:?}", v.dtype).to_uppercase()))).collect();
        Ok(Checkpoint { path: display.to_path_buf(), store: Store::Safetensors(st), tensor_types })
    }

    /// Tensors already in memory (e.g. dequantized from GGUF), with their source types.
    pub fn from_map(path: &Path, tensors: HashMap<String, Tensor>, tensor_types: BTreeMap<String, String>) -> Self {
        Checkpoint { path: path.to_path_buf(), store: Store::Map(std::sync::Mutex::new(tensors)), tensor_types }
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.store {
            Store::Safetensors(st) => st.iter().any(|f| f.meta.info(name).is_some()),
            Store::Map(m) => m.lock().expect("checkpoint map lock").contains_key(name),
        }
    }

    /// The tensor `name` as f32, which must have exactly `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = match &self.store {
            Store::Safetensors(st) => {
                let mut found = None;
                for f in st {
                    if let Some(t) = f.load(name)? {
                        found = Some(t);
                        break;
                    }
                }
                found.ok_or_else(|| self.missing(name))?
            }
            Store::Map(m) => m.lock().expect("checkpoint map lock").remove(name).ok_or_else(|| self.missing(name))?,
        };
        if t.dims() != shape {
            return Err(QiError::ShapeMismatch { file: self.path.clone(), tensor: name.to_string(), found: t.dims().to_vec(), expected: shape.to_vec() }.into());
        }
        let t = t.to_dtype(DType::F32)?;
        if let Some(i) = crate::ops::first_non_finite(&t)? {
            anyhow::bail!("{}: tensor '{name}' has a non-finite value at flat index {i}", self.path.display());
        }
        // every weight goes through here: the one place a model is put on the chosen device
        Ok(t.to_device(&crate::device::device()?)?)
    }

    /// The first of `names` that exists.
    pub fn first_present<'a>(&self, names: &[&'a str]) -> Option<&'a str> {
        names.iter().copied().find(|n| self.contains(n))
    }

    fn missing(&self, name: &str) -> anyhow::Error {
        QiError::MissingTensor { file: self.path.clone(), tensor: name.to_string() }.into()
    }
}
