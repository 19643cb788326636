//! What quantizing a model did, matrix by matrix: the report [`crate::quantize::quantize_model`]
//! returns and an exported twin carries (`qi_quantization.json`), readable without the quantizer.
use super::ActQuant;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Reconstruction error of one matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixReport {
    pub layer: Option<usize>,
    /// `q`, `k`, `v`, `qkv`, `o`, `fc_in`, `fc_out`, `gate`, `up`, `down`, `embed`, `unembed`.
    pub role: String,
    /// HF parameter name.
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    /// ‖W − Ŵ‖_F / ‖W‖_F.
    pub rel_error: f64,
    pub max_abs_error: f64,
    /// Storage estimate in bits per weight, scales and zero points included.
    pub bits_per_weight: f64,
    /// The storage format this matrix got: for GGML specs the block type actually used (a
    /// k-quant's fallback for rows it cannot hold: `q5_0`, `f16`, …), otherwise the method name.
    #[serde(default)]
    pub format: String,
    /// GPTQ's accumulated loss Σ (w − q)² / d² (the reference's `Losses`), when applicable.
    pub gptq_loss: Option<f64>,
}

/// What quantization did to a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantReport {
    pub spec: String,
    pub matrices: Vec<MatrixReport>,
    /// Calibration tokens used (0 for data-free methods).
    pub calibration_tokens: usize,
    pub seconds: f64,
    /// Parameters in quantized matrices / in the whole model.
    pub quantized_params: usize,
    pub total_params: usize,
    /// Mean bits per weight over the quantized matrices.
    pub bits_per_weight: f64,
    /// Estimated model size: quantized matrices at their bits, everything else f32.
    pub model_bytes: f64,
    /// Activation quantization per linear (W8A8, LLM.int8), by HF weight name.
    pub activation_quant: BTreeMap<String, ActQuant>,
}

impl QuantReport {
    /// One row per matrix: method, layer, role, name, rows, cols, rel_error, max_abs_error,
    /// bits_per_weight, format, gptq_loss.
    pub fn table(&self) -> Result<polars::prelude::DataFrame> {
        use polars::prelude::*;
        let m = &self.matrices;
        let df = DataFrame::new_infer_height(vec![
            Column::new("method".into(), vec![self.spec.clone(); m.len()]),
            Column::new("layer".into(), m.iter().map(|r| r.layer.map(|l| l as i64)).collect::<Vec<_>>()),
            Column::new("role".into(), m.iter().map(|r| r.role.clone()).collect::<Vec<_>>()),
            Column::new("name".into(), m.iter().map(|r| r.name.clone()).collect::<Vec<_>>()),
            Column::new("rows".into(), m.iter().map(|r| r.rows as u64).collect::<Vec<_>>()),
            Column::new("cols".into(), m.iter().map(|r| r.cols as u64).collect::<Vec<_>>()),
            Column::new("rel_error".into(), m.iter().map(|r| r.rel_error).collect::<Vec<_>>()),
            Column::new("max_abs_error".into(), m.iter().map(|r| r.max_abs_error).collect::<Vec<_>>()),
            Column::new("bits_per_weight".into(), m.iter().map(|r| r.bits_per_weight).collect::<Vec<_>>()),
            Column::new("format".into(), m.iter().map(|r| r.format.clone()).collect::<Vec<_>>()),
            Column::new("gptq_loss".into(), m.iter().map(|r| r.gptq_loss).collect::<Vec<_>>()),
        ])?;
        Ok(df)
    }
}
