//! Where the real data and weights live on development and CI machines.
//!
//! `QI_SHARED` names the folder (`./dev` sets it to `../shared` beside the repository). Tests that
//! need it call [`shared_path`] and skip with a printed reason when it returns `None`. A user's
//! own copies of the datasets go in `QI_DATA` ([`data_file`]), searched first.
use std::path::PathBuf;

/// The shared data folder (`QI_SHARED`), if set and present. qi never derives it from where its
/// source lives: outside this repository datasets come from the Hub instead ([`crate::data`]).
/// `./dev` sets it to `../shared` beside the repository.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("QI_SHARED").filter(|d| !d.is_empty())?);
    dir.is_dir().then_some(dir)
}

/// A dataset file by its path relative to a data folder: the user's own folder (`QI_DATA`) first,
/// then the shared folder (`QI_SHARED`); `None` when neither has it. Both folders use the shared
/// folder's layout (e.g. `wikitext-2/wiki.test.raw`).
pub fn data_file(relative: &str) -> Option<PathBuf> {
    [env_dir("QI_DATA"), shared_dir()].into_iter().flatten().map(|d| d.join(relative)).find(|p| p.exists())
}

fn env_dir(k: &str) -> Option<PathBuf> {
    std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// qi's folder in the user's cache: `$XDG_CACHE_HOME/qi`, else `~/.cache/qi` (else `.cache/qi`
/// in the working directory, where there is no home).
pub fn user_cache_dir() -> PathBuf {
    env_dir("XDG_CACHE_HOME").map(|d| d.join("qi")).or_else(|| env_dir("HOME").map(|d| d.join(".cache").join("qi"))).unwrap_or_else(|| PathBuf::from(".cache/qi"))
}

/// The folder `./dev models` assembles the larger reference models into: `QI_MODELS`, else
/// `models/` in [`user_cache_dir`].
pub fn models_dir() -> PathBuf {
    env_dir("QI_MODELS").unwrap_or_else(|| user_cache_dir().join("models"))
}

/// A model file in [`models_dir`], if it is there; prints why not otherwise (tests skip on None).
pub fn model_path(file: &str) -> Option<PathBuf> {
    let p = models_dir().join(file);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skipping: {} not found (run ./dev models to fetch it)", p.display());
        None
    }
}

/// A file inside the shared folder, if the folder and the file exist. Prints why not otherwise,
/// so a skipped test says what it skipped.
pub fn shared_path(relative: &str) -> Option<PathBuf> {
    match shared_dir() {
        None => {
            eprintln!("skipping: shared data folder not found (set QI_SHARED; ./dev sets it to ../shared)");
            None
        }
        Some(dir) => {
            let p = dir.join(relative);
            if p.exists() {
                Some(p)
            } else {
                eprintln!("skipping: {} not found", p.display());
                None
            }
        }
    }
}

/// Default SmolLM2 GGUF path inside the shared folder.
pub const SMOLLM2_GGUF: &str = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
/// WikiText-2 raw test split inside the shared folder.
pub const WIKITEXT2_TEST: &str = "data/wikitext-2-raw/wiki.test.raw";
/// C4 validation sample inside the shared folder.
pub const C4_VALIDATION: &str = "data/c4/c4_validation_2k.parquet";
