//! PLACEHOLDER — replaced by the tokenizer module from the wip-tok branch.
use anyhow::Result;
use candle_core::quantized::gguf_file::Value;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        Ok(Tokenizer { inner: tokenizers::Tokenizer::from_file(path).map_err(|e| anyhow::anyhow!("{e}"))? })
    }
    pub fn from_vocab_merges(_v: &Path, _m: &Path) -> Result<Self> {
        anyhow::bail!("todo")
    }
    pub fn from_gguf_metadata(_md: &HashMap<String, Value>) -> Result<Self> {
        anyhow::bail!("todo")
    }
    pub fn encode(&self, text: &str, _add_bos: bool) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(|e| anyhow::anyhow!("{e}"))?.get_ids().to_vec())
    }
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| anyhow::anyhow!("{e}"))
    }
    pub fn special_ids(&self) -> Vec<u32> {
        vec![]
    }
    pub fn bos_id(&self) -> Option<u32> {
        None
    }
}
