//! Matrix-level quantizers: pure functions on one weight matrix.
//!
//! Conventions shared by every function here:
//! - A linear weight is a candle [`Tensor`] of shape `[out_features, in_features]` (PyTorch
//!   `nn.Linear` layout). Inputs of any float dtype are accepted and read as f32; the result is
//!   always the **dequantized** f32 matrix of the same shape ("fake quantization") on the input's
//!   device, plus whatever statistics the method has (scales, loss, ...).
//! - Bad parameters, non-2-D tensors and NaN/inf values are errors (never panics); the messages name
//!   the parameter or tensor and what was expected. Parameter errors are
//!   [`QiError::InvalidArgument`](crate::QiError) inside the `anyhow::Error`.
//!
//! Modules:
//! - [`spec`]: [`QuantSpec`], the one compact string form `METHOD[:key=value,...]` of every method.
//! - [`grid`]: the uniform min–max grid of the GPTQ reference's `quant.py` (shared by RTN and GPTQ).
//! - [`rtn`]: round-to-nearest, per tensor / row / group.
//! - [`gptq`]: GPTQ (`fasterquant` of IST-DASLab/gptq) and its Hessian accumulator.
//! - [`awq`]: AWQ as llm-awq runs it (scale search, fold, clip search, its own grid); block level,
//!   driven by [`quantize_model`](crate::quantize::quantize_model).
//! - [`nf4`]: bitsandbytes NF4 / FP4 with optional double quantization of the absmax values.
//! - [`int8`]: LLM.int8 weight side and per-token int8 activations (W8A8).
//! - [`ggml`]: GGML/llama.cpp block types through candle's quantized tensors.
//! - [`cast`]: fp16 / bf16 round trips.
//! - [`prune`]: unstructured magnitude pruning.
//! - [`matrix`]: [`quantize_weight`], one dispatch for everything that needs at most a Hessian or
//!   an outlier-column list.
pub mod cast;
pub mod ggml;
pub mod gptq;
pub mod grid;
pub mod int8;
pub mod matrix;
pub mod nf4;
pub mod prune;
pub mod report;
pub mod rtn;
pub mod spec;
#[cfg(test)]
pub(crate) mod testutil;

pub use cast::{bf16_round_trip, fp16_round_trip};
pub use ggml::{ggml_quantize, GgmlKind, GgmlSpec, GgmlStorage};
pub use gptq::{gptq_quantize, gptq_quantize_accumulated, GptqOptions, GptqOutput, HessianAccumulator};
pub use grid::{GridParams, Real, UniformGrid};
pub use int8::{llm_int8_quantize, ActQuant, int8_rowwise_quantize, quantize_activations_per_token_int8, Int8Output};
pub use matrix::quantize_weight;
pub use nf4::{
    bnb4_quantize, create_dynamic_map, dynamic_map_from_formula, dynamic_dequantize_blockwise, dynamic_quantize_blockwise, Bnb4Output,
    Bnb4Type, FP4_DEQUANT, NF4_CODE,
};
pub use prune::{magnitude_prune, PruneOutput};
pub use rtn::{rtn_quantize, RtnOutput};
pub use spec::{AwqSpec, Bnb4Spec, CalibData, GptqSpec, Granularity, Int8Spec, PruneSpec, QuantSpec, RtnSpec};

use crate::QiError;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};

/// A weight matrix read into row-major f32, with its shape and device.
pub(crate) struct Matrix {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
    pub device: Device,
}

impl Matrix {
    /// Reads a 2-D tensor of any float dtype as f32, rejecting other ranks, empty matrices and
    /// non-finite values. `what` names the tensor in errors.
    pub fn read(t: &Tensor, what: &str) -> Result<Self> {
        let (rows, cols) = match t.dims() {
            [r, c] => (*r, *c),
            d => {
                return Err(QiError::invalid(what, format!("shape {d:?}"), "expected a 2-D matrix [out_features, in_features]").into())
            }
        };
        if rows == 0 || cols == 0 {
            return Err(QiError::invalid(what, format!("shape [{rows}, {cols}]"), "expected a non-empty matrix").into());
        }
        if !t.dtype().is_float() {
            return Err(QiError::invalid(what, format!("dtype {:?}", t.dtype()), "expected a float tensor").into());
        }
        let data = t
            .to_dtype(DType::F32)
            .and_then(|x| x.flatten_all())
            .and_then(|x| x.to_vec1::<f32>())
            .with_context(|| format!("reading {what} as f32"))?;
        check_finite(&data, cols, what)?;
        Ok(Matrix { data, rows, cols, device: t.device().clone() })
    }

    /// The matrix as an f32 tensor on the original device.
    pub fn into_tensor(self) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.data, (self.rows, self.cols), &self.device)?)
    }

    pub fn tensor_like(&self, data: Vec<f32>) -> Result<Tensor> {
        Ok(Tensor::from_vec(data, (self.rows, self.cols), &self.device)?)
    }
}

/// Errors on the first NaN/inf, naming its [row, col] position.
pub(crate) fn check_finite(data: &[f32], cols: usize, what: &str) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(QiError::invalid(
            what,
            data[i],
            format!("non-finite value at [{}, {}]; weights and Hessians must be finite", i / cols, i % cols),
        )
        .into());
    }
    Ok(())
}

/// Checks `bits` is in the supported 2..=8 range.
pub(crate) fn check_bits(bits: u8) -> Result<()> {
    if !(2..=8).contains(&bits) {
        return Err(QiError::invalid("bits", bits, "expected an integer bit width in 2..=8").into());
    }
    Ok(())
}
