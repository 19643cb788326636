//! Quantizers checked code for code against the reference implementations' own output on one
//! weight matrix with the hard cases (zero, constant and tied blocks, an outlier, tiny values,
//! rounding midpoints): GGML types against gguf-py's port of ggml-quants.c, NF4/FP4 (with and
//! without double quantization) and LLM.int8's vector-wise int8 against bitsandbytes on the CPU.
//! The fixtures are made by `scripts/make_quant_fixtures.py` (see data/fixtures/README.md).
mod common;
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use common::fixture;
use qi::quant::{bnb4_quantize, ggml_quantize, int8_rowwise_quantize, Bnb4Type, GgmlKind};
use std::collections::HashMap;

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("quant").join(name), &Device::Cpu).unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Positions where two f32 vectors differ bit for bit (-0 and +0 count as equal: both decode a
/// zero code times a scale).
fn differing(a: &[f32], b: &[f32]) -> Vec<usize> {
    assert_eq!(a.len(), b.len());
    (0..a.len()).filter(|&i| a[i] != b[i] || a[i].is_nan() != b[i].is_nan()).collect()
}

#[test]
fn ggml_types_match_gguf_py_byte_for_byte() {
    let f = load("ggml.safetensors");
    let w = &f["weight"];
    for kind in [GgmlKind::Q4_0, GgmlKind::Q4_1, GgmlKind::Q5_0, GgmlKind::Q5_1, GgmlKind::Q8_0] {
        let name = kind.name();
        // the stored blocks: scales, minima and packed codes, byte for byte
        let q = QTensor::quantize(w, kind.dtype()).unwrap();
        let ours = q.data().unwrap();
        let want = f[&format!("{name}.blocks")].to_vec1::<u8>().unwrap();
        assert_eq!(ours.len(), want.len(), "{name}: block bytes");
        let bad: Vec<usize> = (0..want.len()).filter(|&i| ours[i] != want[i]).collect();
        assert!(bad.is_empty(), "{name}: {} of {} block bytes differ, first at byte {}", bad.len(), want.len(), bad[0]);
        // and qi's quantizer (quantize + dequantize) gives the reference's dequantized weights
        let deq = f32s(&ggml_quantize(w, kind, "weight").unwrap());
        let bad = differing(&deq, &f32s(&f[&format!("{name}.dequant")]));
        assert!(bad.is_empty(), "{name}: {} dequantized values differ, first at {}", bad.len(), bad[0]);
    }
}

#[test]
fn nf4_fp4_match_bitsandbytes_with_and_without_double_quant() {
    let f = load("bnb.safetensors");
    let w = &f["weight"];
    for (ty, tname) in [(Bnb4Type::Nf4, "nf4"), (Bnb4Type::Fp4, "fp4")] {
        for dq in [false, true] {
            let key = format!("{tname}{}", if dq { "_dq" } else { "" });
            let out = bnb4_quantize(w, ty, 64, dq).unwrap();
            let codes = f[&format!("{key}.codes")].to_vec1::<u8>().unwrap();
            // FP4 has two zero codes: bitsandbytes' CUDA kernel (which qi follows) gives a negative
            // value that rounds to zero the sign bit (code 8, −0), its CPU backend code 0 (+0);
            // both decode to zero. Every other code must be the same.
            let same = |a: u8, b: u8| a == b || (ty == Bnb4Type::Fp4 && a & 0b0111 == 0 && b & 0b0111 == 0);
            let bad: Vec<usize> = (0..codes.len()).filter(|&i| !same(out.codes[i], codes[i])).collect();
            assert!(bad.is_empty(), "{key}: {} of {} codes differ, first at {} (qi {}, bitsandbytes {})", bad.len(), codes.len(), bad[0], out.codes[bad[0]], codes[bad[0]]);
            let bad = differing(&out.absmax, &f32s(&f[&format!("{key}.absmax")]));
            assert!(bad.is_empty(), "{key}: {} block absmax values differ, first block {}", bad.len(), bad[0]);
            let bad = differing(&f32s(&out.weight), &f32s(&f[&format!("{key}.dequant")]));
            assert!(bad.is_empty(), "{key}: {} dequantized values differ, first at {}", bad.len(), bad[0]);
        }
    }
}

#[test]
fn int8_vectorwise_matches_bitsandbytes() {
    let f = load("bnb.safetensors");
    let w = &f["weight"];
    let out = int8_rowwise_quantize(w).unwrap();
    assert!(differing(&f32s(&out.row_absmax), &f32s(&f["int8.absmax"])).is_empty(), "row absmax");
    let bad = differing(&f32s(&out.weight), &f32s(&f["int8.dequant"]));
    assert!(bad.is_empty(), "int8: {} dequantized values differ, first at {}", bad.len(), bad[0]);
    // the codes themselves: the reference's integers dequantized as bitsandbytes does,
    // (code · absmax) · f32(1/127), give qi's weights
    let codes = f["int8.codes"].to_dtype(DType::F32).unwrap();
    let want = f32s(&(codes.broadcast_mul(&f["int8.absmax"].unsqueeze(1).unwrap()).unwrap() * 7.874_015_718_698_502e-3f64).unwrap());
    assert!(differing(&f32s(&out.weight), &want).is_empty(), "int8 codes");
}
