//! Reading Hugging Face `config.json` values with errors that name the file and key.
use anyhow::{anyhow, Result};
use serde_json::Value;
use std::path::Path;

pub struct HfConfig<'a> {
    pub json: &'a Value,
    pub path: &'a Path,
}

impl<'a> HfConfig<'a> {
    pub fn new(json: &'a Value, path: &'a Path) -> Self {
        HfConfig { json, path }
    }

    fn lookup(&self, key: &str) -> Option<&'a Value> {
        // `a.b` reads a nested key (transformers 5 keeps rope settings in `rope_parameters`).
        let mut v = self.json;
        for part in key.split('.') {
            v = v.get(part)?;
        }
        (!v.is_null()).then_some(v)
    }

    /// First present key among `keys`, as usize.
    pub fn usize(&self, keys: &[&str]) -> Result<usize> {
        self.opt_usize(keys)?.ok_or_else(|| anyhow!("{}: missing '{}' (expected a positive integer)", self.path.display(), keys.join("' or '")))
    }

    pub fn opt_usize(&self, keys: &[&str]) -> Result<Option<usize>> {
        for k in keys {
            if let Some(v) = self.lookup(k) {
                return v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| anyhow!("{}: '{k}' must be a non-negative integer, got {v}", self.path.display()));
            }
        }
        Ok(None)
    }

    pub fn opt_f64(&self, keys: &[&str]) -> Result<Option<f64>> {
        for k in keys {
            if let Some(v) = self.lookup(k) {
                return v.as_f64().map(Some).ok_or_else(|| anyhow!("{}: '{k}' must be a number, got {v}", self.path.display()));
            }
        }
        Ok(None)
    }

    pub fn opt_bool(&self, keys: &[&str]) -> Result<Option<bool>> {
        for k in keys {
            if let Some(v) = self.lookup(k) {
                return v.as_bool().map(Some).ok_or_else(|| anyhow!("{}: '{k}' must be true or false, got {v}", self.path.display()));
            }
        }
        Ok(None)
    }

    pub fn opt_str(&self, keys: &[&str]) -> Result<Option<&'a str>> {
        for k in keys {
            if let Some(v) = self.lookup(k) {
                return v.as_str().map(Some).ok_or_else(|| anyhow!("{}: '{k}' must be a string, got {v}", self.path.display()));
            }
        }
        Ok(None)
    }

    /// A token id that may be given as a number or a list (first element).
    pub fn opt_token_id(&self, key: &str) -> Option<u32> {
        match self.lookup(key)? {
            Value::Number(n) => n.as_u64().map(|x| x as u32),
            Value::Array(a) => a.first()?.as_u64().map(|x| x as u32),
            _ => None,
        }
    }

    /// Checks that heads divide the model width, naming the keys.
    pub fn check_heads(&self, d_model: usize, n_heads: usize, n_kv: usize) -> Result<()> {
        if n_heads == 0 || n_kv == 0 || n_heads % n_kv != 0 {
            return Err(anyhow!("{}: {n_heads} attention heads cannot share {n_kv} key/value heads (heads must be a positive multiple of KV heads)", self.path.display()));
        }
        if d_model % n_heads != 0 && self.opt_usize(&["head_dim"]).ok().flatten().is_none() {
            return Err(anyhow!("{}: hidden size {d_model} is not divisible by {n_heads} heads", self.path.display()));
        }
        Ok(())
    }
}
