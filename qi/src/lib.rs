//! qi — does quantization kill interpretability?
//!
//! Hooked transformer forward passes (GPT-2, GPT-NeoX/Pythia, Llama family) on candle with
//! TransformerLens-style hook names, an activation cache and interventions; quantizers applied to
//! the same raw weights; analyses of what quantization does to circuits and features.
pub mod analysis;
pub mod batch;
pub mod blas;
pub mod compact;
pub mod data;
pub mod device;
pub mod display;
pub mod error;
pub mod export;
pub mod figures;
pub mod fused;
pub mod hash;
pub mod hooks;
pub mod integrity;
pub mod io;
pub mod loader;
pub mod metrics;
pub mod models;
pub mod notebook;
pub mod ops;
pub mod perplexity;
pub mod progress;
pub mod quant;
pub mod quantize;
pub mod report;
pub mod rng;
pub mod sae;
pub mod shared;
pub mod size_axis;
pub mod study;
#[cfg(test)]
mod testing;
pub mod tokenizer;
pub mod twin_cache;

// Notebooks need only `:dep qi`: tensors, DataFrames and figures come from qi's own dependencies,
// so values carry across cells and versions always match.
pub use candle_core;
pub use plotly;
pub use polars;
pub use serde_json;

pub use batch::{Batch, Padding};
pub use figures::{save_figure, FigurePaths};
pub use error::QiError;
pub use hooks::{ActivationCache, HookFilter, Hooks};
pub use loader::{load_model, ModelSource};
pub use models::{HookedTransformer, ModelConfig};
pub use tokenizer::Tokenizer;
