//! Downloads from the Hugging Face Hub through hf-hub, honouring its cache (`HF_HOME`) and offline
//! mode (`HF_HUB_OFFLINE=1`: only files already in the cache are used).
use anyhow::{anyhow, bail, Context, Result};
use hf_hub::{Repo, RepoType};
use std::path::{Path, PathBuf};

fn offline() -> bool {
    matches!(std::env::var("HF_HUB_OFFLINE").as_deref(), Ok("1") | Ok("true") | Ok("TRUE") | Ok("yes"))
}

/// A function that fetches one file of `repo`: from hf-hub's cache only when offline, else
/// through the Hub client (which uses the cache first).
fn fetcher(repo: Repo) -> Result<Box<dyn Fn(&str) -> Result<PathBuf>>> {
    Ok(if offline() {
        let cache = hf_hub::Cache::from_env().repo(repo);
        Box::new(move |f: &str| cache.get(f).ok_or_else(|| anyhow!("'{f}' is not in the local Hugging Face cache (HF_HUB_OFFLINE is set)")))
    } else {
        let api = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true).build().context("cannot set up the Hugging Face Hub client")?;
        let r = api.repo(repo);
        Box::new(move |f: &str| r.get(f).map_err(|e| anyhow!("{e}")))
    })
}

/// One file of the Hub dataset `id` (e.g. `Salesforce/wikitext`), downloaded into hf-hub's cache
/// or found there; the local path.
pub fn dataset_file(id: &str, file: &str) -> Result<PathBuf> {
    let fetch = fetcher(Repo::new(id.to_string(), RepoType::Dataset))?;
    fetch(file).with_context(|| format!("Hub dataset '{id}': cannot get {file}"))
}

/// Fetches config, weights and tokenizer files of `id` and returns the snapshot directory that
/// holds them (hf-hub keeps all files of one revision side by side).
pub fn download(id: &str, revision: Option<&str>) -> Result<PathBuf> {
    let repo = match revision {
        Some(r) => Repo::with_revision(id.to_string(), RepoType::Model, r.to_string()),
        None => Repo::new(id.to_string(), RepoType::Model),
    };
    let fetch = fetcher(repo)?;
    let config = fetch("config.json").with_context(|| format!("Hub model '{id}': cannot get config.json"))?;
    let dir = config.parent().map(Path::to_path_buf).ok_or_else(|| anyhow!("odd cache path {}", config.display()))?;
    if fetch("model.safetensors").is_err() {
        let index = fetch("model.safetensors.index.json")
            .with_context(|| format!("Hub model '{id}': neither model.safetensors nor model.safetensors.index.json could be fetched"))?;
        for s in super::shard_names(&index)? {
            fetch(&s).with_context(|| format!("Hub model '{id}': cannot get shard {s}"))?;
        }
    }
    if fetch("tokenizer.json").is_err() && (fetch("vocab.json").is_err() || fetch("merges.txt").is_err()) {
        eprintln!("note: Hub model '{id}' has no tokenizer.json or vocab.json+merges.txt; text input will not be available");
    }
    if !dir.join("config.json").exists() {
        bail!("Hub download of '{id}' did not produce {}", dir.join("config.json").display());
    }
    Ok(dir)
}
