//! Writing result files atomically: write to a temporary file beside the target, then rename, so a
//! crash or Ctrl-C never leaves a half-written result.
use anyhow::{Context, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Calls `write` with a temporary path in the target's directory, then renames it to `path`.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    let name = path.file_name().with_context(|| format!("{}: not a file path", path.display()))?.to_string_lossy().to_string();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = write(&tmp).and_then(|_| std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display())));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes named tensors as a safetensors file, atomically.
pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    write_atomic(path, |tmp| candle_core::safetensors::save(tensors, tmp).with_context(|| format!("cannot write {}", path.display())))
}

/// Writes text, atomically.
pub fn save_text(text: &str, path: &Path) -> Result<()> {
    write_atomic(path, |tmp| std::fs::write(tmp, text).with_context(|| format!("cannot write {}", path.display())))
}
