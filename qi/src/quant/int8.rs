//! LLM.int8 (bitsandbytes `Linear8bitLt`) weight side, and dynamic per-token int8 activations for
//! W8A8.
//!
//! Vector-wise int8 as bitsandbytes' `int8_vectorwise_quant` / `int8_vectorwise_dequant`:
//! per row `absmax = max |w|`, `q = round(w · (127 / absmax))` (round half to even), dequantized
//! as `q · absmax · 7.874015718698502e-3` (bitsandbytes multiplies by its f32 literal for 1/127),
//! all in f32. A row of zeros stays zero.
use super::Matrix;
use crate::QiError;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use candle_core::{DType, Device, Tensor};

/// bitsandbytes' f32 literal for 1/127.
const INV_127: f32 = 7.874_015_718_698_502e-3;

/// Result of [`llm_int8_quantize`] / [`int8_rowwise_quantize`].
#[derive(Debug, Clone)]
pub struct Int8Output {
    /// Dequantized weight `[out, in]`, f32.
    pub weight: Tensor,
    /// Per-row absmax (`SCB`), `[out]`.
    pub row_absmax: Tensor,
}

/// Row-wise int8 in place; entries of the columns marked in `keep` take the value from `f16`
/// (the f16 round trip of the original matrix) instead.
fn rowwise_in_place(data: &mut [f32], cols: usize, keep: &[bool], f16: Option<&[f32]>) -> Vec<f32> {
    let mut stats = Vec::with_capacity(data.len() / cols);
    for (r, row) in data.chunks_mut(cols).enumerate() {
        let absmax = row.iter().fold(0f32, |a, &v| a.max(v.abs()));
        stats.push(absmax);
        let s = 127.0f32 / absmax;
        for (j, v) in row.iter_mut().enumerate() {
            match f16 {
                Some(h) if keep[j] => *v = h[r * cols + j],
                _ if absmax == 0.0 => {}
                _ => *v = (*v * s).round_ties_even() * absmax * INV_127,
            }
        }
    }
    stats
}

/// Vector-wise (per output row) absmax int8 of `w` `[out, in]` without outliers (the weight side
/// of W8A8, and of LLM.int8 when no outlier columns are given).
pub fn int8_rowwise_quantize(w: &Tensor) -> Result<Int8Output> {
    llm_int8_quantize(w, &[])
}

/// LLM.int8 weight side: vector-wise absmax int8 of `w` `[out, in]`, except that the input-feature
/// columns in `outlier_cols` (found by the model-level code from calibration activations with the
/// threshold, 6.0 by default) are kept in f16, as in the mixed-precision decomposition of the
/// paper and bitsandbytes' `has_fp16_weights=True` path. As bitsandbytes, the per-row absmax is
/// taken over **all** columns, outliers included (the int8 part of outlier columns is unused).
///
/// Note: bitsandbytes' inference path with int8-stored weights (`has_fp16_weights=False`, what
/// `load_in_8bit` gives) multiplies the outlier activations with the *int8-dequantized* weight
/// columns instead; that is [`int8_rowwise_quantize`] on the weight side.
pub fn llm_int8_quantize(w: &Tensor, outlier_cols: &[usize]) -> Result<Int8Output> {
    let mut m = Matrix::read(w, "weight")?;
    let mut keep = vec![false; m.cols];
    for &c in outlier_cols {
        if c >= m.cols {
            return Err(QiError::invalid("outlier column", c, format!("out of range for in_features = {}", m.cols)).into());
        }
        keep[c] = true;
    }
    let f16 = if outlier_cols.is_empty() {
        None
    } else {
        let t = Tensor::from_slice(&m.data, (m.rows, m.cols), &Device::Cpu)?;
        Some(t.to_dtype(DType::F16)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let stats = rowwise_in_place(&mut m.data, m.cols, &keep, f16.as_deref());
    let rows = m.rows;
    let device = m.device.clone();
    Ok(Int8Output { weight: m.into_tensor()?, row_absmax: Tensor::from_vec(stats, rows, &device)? })
}

/// Dynamic per-token (per row) absmax int8 of activations `x` `[n, d]`, dequantized (W8A8's
/// activation side): `round(x · 127/absmax) · absmax/127` per row, as [`int8_rowwise_quantize`].
pub fn quantize_activations_per_token_int8(x: &Tensor) -> Result<Tensor> {
    let mut m = Matrix::read(x, "activations")?;
    rowwise_in_place(&mut m.data, m.cols, &[], None);
    m.into_tensor()
}

/// Activation-side fake quantization at a linear layer's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ActQuant {
    /// Dynamic per-token symmetric int8 (absmax / 127 per row).
    PerTokenInt8,
    /// LLM.int8: the listed input columns (outlier features) stay in f16; the rest is per-token int8.
    Int8Outliers { outliers: Vec<usize> },
}

impl ActQuant {
    /// Applies the fake quantization to `x` `[rows, in]`.
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let q = |t: &Tensor| quantize_activations_per_token_int8(t).map_err(candle_core::Error::wrap);
        match self {
            ActQuant::PerTokenInt8 => q(x),
            ActQuant::Int8Outliers { outliers } => {
                if outliers.is_empty() {
                    return q(x);
                }
                let d = x.dim(1)?;
                let mut keep = vec![1f32; d];
                for &c in outliers {
                    if c < d {
                        keep[c] = 0.0;
                    }
                }
                let keep = Tensor::from_vec(keep, (1, d), x.device())?;
                let regular = q(&x.broadcast_mul(&keep)?)?;
                let outlier = x.broadcast_mul(&(1.0 - &keep)?)?.to_dtype(candle_core::DType::F16)?.to_dtype(x.dtype())?;
                regular + outlier
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quant_int8_rowwise_known_values() {
        // row absmax 1.27: scale 127/1.27 = 100; 0.005 -> 0.5 -> 0 (half even), 0.015 -> 1.5 -> 2
        let w = Tensor::from_slice(&[1.27f32, -0.635, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0], (2, 4), &Device::Cpu).unwrap();
        let o = int8_rowwise_quantize(&w).unwrap();
        let r = o.weight.to_vec2::<f32>().unwrap();
        let d = |q: f32| q * 1.27f32 * INV_127;
        assert_eq!(r[0], vec![d(127.0), d((-0.635f32 * (127.0 / 1.27)).round_ties_even()), 0.0, d(30.0)]);
        assert!((r[0][1] + 0.635).abs() < 0.01);
        assert_eq!(r[1], vec![0.0; 4]);
        assert_eq!(o.row_absmax.to_vec1::<f32>().unwrap(), vec![1.27, 0.0]);
    }

    #[test]
    fn quant_int8_outlier_columns_kept_in_f16() {
        let w = Tensor::from_slice(&[0.1f32, 8.0, 0.333, -0.2, 3.0, 0.7], (2, 3), &Device::Cpu).unwrap();
        let o = llm_int8_quantize(&w, &[1]).unwrap();
        let r = o.weight.to_vec2::<f32>().unwrap();
        assert_eq!(r[0][1], 8.0);
        assert_eq!(r[1][1], 3.0);
        // row 0 absmax includes the outlier column: 0.1 -> round(0.1*127/8) = round(1.5875) = 2
        assert_eq!(r[0][0], 2.0 * 8.0 * INV_127);
        assert!(llm_int8_quantize(&w, &[3]).unwrap_err().to_string().contains("in_features = 3"));
        let x = quantize_activations_per_token_int8(&w).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(x[0][1], 127.0 * 8.0 * INV_127);
    }
}
