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
pub fn mean_f64(x: &Tensor) -> Result<f64> {
    x.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()
}
