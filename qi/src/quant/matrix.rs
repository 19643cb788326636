//! One dispatch for the methods that need at most a Hessian or an outlier-column list.
use super::gptq::{gptq_quantize, GptqOptions};
use super::spec::QuantSpec;
use super::{bf16_round_trip, bnb4_quantize, fp16_round_trip, ggml_quantize, llm_int8_quantize, magnitude_prune, rtn_quantize, Bnb4Type, Matrix};
use crate::QiError;
use anyhow::{Context, Result};
use candle_core::Tensor;

/// Quantizes one weight matrix `w` `[out, in]` by `spec` and returns the dequantized f32 matrix.
///
/// - `name` names the tensor/layer in errors.
/// - `hessian`: required by GPTQ (`[in, in]`, e.g. from [`HessianAccumulator`](super::HessianAccumulator)).
/// - `outlier_cols`: LLM.int8's outlier input columns (none given = no outliers).
/// - AWQ and W8A8 change activations too and are model-level: they give an error naming their
///   model-level entry point instead.
pub fn quantize_weight(
    w: &Tensor,
    spec: &QuantSpec,
    name: &str,
    hessian: Option<&Tensor>,
    outlier_cols: Option<&[usize]>,
) -> Result<Tensor> {
    let out = match spec {
        QuantSpec::None => Matrix::read(w, name)?.into_tensor(),
        QuantSpec::Fp16 => fp16_round_trip(w),
        QuantSpec::Bf16 => bf16_round_trip(w),
        QuantSpec::Rtn(r) => rtn_quantize(w, r.bits, r.granularity, r.sym).map(|o| o.weight),
        QuantSpec::Gptq(g) => {
            let h = hessian.ok_or_else(|| {
                QiError::invalid("hessian", "None", format!("GPTQ ({spec}) of '{name}' needs the layer's Hessian from calibration inputs"))
            })?;
            gptq_quantize(w, h, &GptqOptions::from(g), name).map(|o| o.weight)
        }
        QuantSpec::Nf4(b) => bnb4_quantize(w, Bnb4Type::Nf4, b.block, b.double_quant).map(|o| o.weight),
        QuantSpec::Fp4(b) => bnb4_quantize(w, Bnb4Type::Fp4, b.block, b.double_quant).map(|o| o.weight),
        QuantSpec::Int8(_) => llm_int8_quantize(w, outlier_cols.unwrap_or(&[])).map(|o| o.weight),
        QuantSpec::Ggml(g) => ggml_quantize(w, *g, name),
        QuantSpec::Prune(p) => magnitude_prune(w, p.sparsity).map(|o| o.weight),
        QuantSpec::Awq(_) | QuantSpec::W8a8 | QuantSpec::Twin(_) => {
            return Err(QiError::invalid(
                "quantization method",
                spec,
                "needs the model-level entry point (it rescales or quantizes activations, not only this matrix)",
            )
            .into())
        }
    };
    out.with_context(|| format!("quantizing '{name}' with {spec}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn quant_matrix_dispatch_all_methods() {
        let v: Vec<f32> = (0..8 * 256).map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0).collect();
        let w = Tensor::from_vec(v, (8, 256), &Device::Cpu).unwrap();
        let eye = Tensor::eye(256, candle_core::DType::F32, &Device::Cpu).unwrap();
        for s in super::super::spec::METHODS {
            let spec: QuantSpec = match s {
                "rtn" | "gptq" | "awq" => format!("{s}:bits=4").parse().unwrap(),
                "prune" => "prune:sparsity=0.5".parse().unwrap(),
                "twin" => "twin:m.gguf".parse().unwrap(),
                _ => s.parse().unwrap(),
            };
            let r = quantize_weight(&w, &spec, "blk.0.w", Some(&eye), Some(&[3]));
            match s {
                "awq" | "w8a8" | "twin" => assert!(r.unwrap_err().to_string().contains("model-level"), "{s}"),
                _ => {
                    let q = r.unwrap_or_else(|e| panic!("{s}: {e:#}"));
                    assert_eq!(q.dims(), &[8, 256], "{s}");
                }
            }
        }
        let spec: QuantSpec = "gptq:bits=4".parse().unwrap();
        let e = quantize_weight(&w, &spec, "blk.0.w", None, None).unwrap_err().to_string();
        assert!(e.contains("Hessian") && e.contains("blk.0.w"), "{e}");
    }

    #[test]
    fn quant_matrix_bad_inputs_are_errors() {
        let specs = ["none", "fp16", "bf16", "rtn:bits=4", "gptq:bits=4", "nf4", "fp4", "int8", "q8_0", "prune:sparsity=0.5"];
        let mut v = vec![0.01f32; 4 * 32];
        v[37] = f32::NAN;
        let nan = Tensor::from_vec(v.clone(), (4, 32), &Device::Cpu).unwrap();
        v[37] = f32::INFINITY;
        let inf = Tensor::from_vec(v, (4, 32), &Device::Cpu).unwrap();
        let cube = Tensor::zeros((2, 4, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        let vec1 = Tensor::zeros(32, candle_core::DType::F32, &Device::Cpu).unwrap();
        let eye = Tensor::eye(32, candle_core::DType::F32, &Device::Cpu).unwrap();
        for s in specs {
            let spec: QuantSpec = s.parse().unwrap();
            for (what, w, needle) in [("nan", &nan, "[1, 5]"), ("inf", &inf, "[1, 5]"), ("3-D", &cube, "2-D"), ("1-D", &vec1, "2-D")] {
                let e = quantize_weight(w, &spec, "blk.2.ffn", Some(&eye), None);
                let msg = format!("{:#}", e.expect_err(&format!("{s} on {what} must fail")));
                assert!(msg.contains(needle) && msg.contains("blk.2.ffn"), "{s} {what}: {msg}");
            }
        }
        let spec: QuantSpec = "rtn:bits=4,group=24".parse().unwrap();
        let w = Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        let msg = format!("{:#}", quantize_weight(&w, &spec, "x", None, None).unwrap_err());
        assert!(msg.contains("in_features = 32"), "{msg}");
        let x = Tensor::from_slice(&[1.0f32, f32::NAN], (1, 2), &Device::Cpu).unwrap();
        assert!(crate::quant::quantize_activations_per_token_int8(&x).is_err());
    }
}
