//! Numerical building blocks shared by every architecture.
//!
//! candle's fused CPU kernels (softmax, layer/RMS norm, rotary) have no backward pass. When a
//! tensor takes part in autograd (`track_op()`), we fall back to the composed formulas, which
//! candle can differentiate; otherwise we take the fast path. Both compute the same function.
use candle_core::{DType, Result, Tensor, D};

/// Softmax over the last dimension.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

/// Log-softmax over the last dimension (always differentiable; used for losses).
pub fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::log_softmax(x, D::Minus1)
}

/// LayerNorm over the last dimension.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::layer_norm_slow(x, w, b, eps as f32)
    } else {
        candle_nn::ops::layer_norm(&x.contiguous()?, w, b, eps as f32)
    }
}

/// RMSNorm over the last dimension (Llama: x / sqrt(mean(x²) + eps) · w).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::rms_norm_slow(x, w, eps as f32)
    } else {
        candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)
    }
}

/// Rotary embedding in the "rotate half" convention used by HF Llama and GPT-NeoX, token-major.
/// `x`: [batch, pos, heads, rot_dim]; `cos`/`sin`: [batch, pos, rot_dim / 2].
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        let half = x.dim(D::Minus1)? / 2;
        let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(2)?;
        let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(2)?;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    } else {
        candle_nn::rotary_emb::rope_thd(&x.contiguous()?, cos, sin)
    }
}

/// Mean over all elements as f64 (for scalar metrics).
/// Whether `a` and `b` are equal element by element (same shape and dtype; NaN never equals, −0
/// equals +0), compared a block of rows at a time so that no full-size temporary is made.
pub fn bitwise_equal(a: &Tensor, b: &Tensor) -> Result<bool> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Ok(false);
    }
    if a.elem_count() == 0 {
        return Ok(true);
    }
    let (a, b) = (a.flatten_to(0)?, b.flatten_to(0)?); // a scalar becomes one row
    let rows = a.dim(0)?;
    let step = (rows / 64).max(1);
    let mut i = 0;
    while i < rows {
        let n = step.min(rows - i);
        if a.narrow(0, i, n)?.eq(&b.narrow(0, i, n)?)?.flatten_all()?.min(0)?.to_scalar::<u8>()? == 0 {
            return Ok(false);
        }
        i += n;
    }
    Ok(true)
}

pub fn mean_f64(x: &Tensor) -> Result<f64> {
    x.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bitwise_equal_checks_every_block_of_rows() {
        // 130 rows: blocks of 2, the last one short; a difference in the very last element must count
        let v: Vec<f32> = (0..130 * 3).map(|i| i as f32 * 0.5).collect();
        let a = Tensor::from_vec(v.clone(), (130, 3), &Device::Cpu).unwrap();
        assert!(bitwise_equal(&a, &a.copy().unwrap()).unwrap());
        let mut w = v.clone();
        *w.last_mut().unwrap() += 1.0;
        assert!(!bitwise_equal(&a, &Tensor::from_vec(w, (130, 3), &Device::Cpu).unwrap()).unwrap());
        assert!(!bitwise_equal(&a, &a.reshape((3, 130)).unwrap()).unwrap(), "same values, other shape");
        let nan = Tensor::new(&[f32::NAN], &Device::Cpu).unwrap();
        assert!(!bitwise_equal(&nan, &nan).unwrap());
        let s = Tensor::new(2f32, &Device::Cpu).unwrap();
        assert!(bitwise_equal(&s, &s.copy().unwrap()).unwrap() && !bitwise_equal(&s, &Tensor::new(3f32, &Device::Cpu).unwrap()).unwrap());
    }
}
