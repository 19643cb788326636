//! qi — does quantization kill interpretability?
//!
//! Hooked transformer forward passes (GPT-2, GPT-NeoX/Pythia, Llama family) on candle with
//! TransformerLens-style hook names, an activation cache and interventions; quantizers applied to
//! the same raw weights; analyses of what quantization does to circuits and features.
pub mod error;
pub mod quant;
pub mod shared;

pub use error::QiError;
