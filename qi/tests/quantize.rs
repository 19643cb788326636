//! Model-level quantization on the tiny fixtures: every method runs on GPT-2, NeoX and Llama, the
//! reference is never mutated, reports are complete, GPTQ beats RTN end to end, bad input errors.
mod common;
use common::*;
use qi::quant::QuantSpec;
use qi::quantize::{quantize_model, QuantizeOptions};
use qi::{load_model, Batch, HookedTransformer};

const ARCHS: [&str; 3] = ["gpt2", "neox", "llama"];

fn windows(n: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = qi::rng::Rng::new(seed);
    (0..n).map(|_| rng.tokens(len, 320, &[])).collect()
}

fn opts_with_calibration() -> QuantizeOptions {
    QuantizeOptions { calibration: Some(windows(8, 32, 1)), calibration_batch: 4, ..Default::default() }
}

fn kl_to_reference(reference: &HookedTransformer, q: &HookedTransformer) -> f64 {
    let b = Batch::from_rows(&windows(4, 32, 99), qi::Padding::Right, 0).unwrap();
    let kl = qi::metrics::kl_from_logits(&reference.forward(&b).unwrap(), &q.forward(&b).unwrap()).unwrap();
    kl.mean_all().unwrap().to_scalar::<f32>().unwrap() as f64
}

#[test]
fn every_method_runs_on_every_architecture_without_touching_the_reference() {
    let specs = [
        "fp16", "bf16", "rtn:bits=8", "rtn:bits=4", "rtn:bits=3,group=32", "rtn:bits=4,granularity=tensor,sym=true", "gptq:bits=4",
        "gptq:bits=3,group=32,act_order=true", "gptq:bits=4,true_sequential=true,static_groups=true,group=32,act_order=true", "awq:bits=4,group=32",
        "nf4", "fp4", "nf4:double_quant=true", "int8", "q8_0", "q4_0", "q5_1", "q4_k:fallback=true", "w8a8", "prune:sparsity=0.5",
    ];
    for arch in ARCHS {
        let model = load_model(fixture(arch).to_str().unwrap()).unwrap();
        let b = Batch::from_ids(&[1, 2, 3, 4, 5]).unwrap();
        let before = model.forward(&b).unwrap();
        let n_linears = model.linears().len();
        for s in specs {
            let spec: QuantSpec = s.parse().unwrap();
            let (q, report) = quantize_model(&model, &spec, &opts_with_calibration()).unwrap_or_else(|e| panic!("{arch} {s}: {e:#}"));
            assert_eq!(report.matrices.len(), n_linears, "{arch} {s}");
            assert!(report.matrices.iter().all(|m| m.rel_error.is_finite()), "{arch} {s}");
            assert_eq!(q.hook_names(), model.hook_names());
            assert_eq!(q.source.quantization.as_deref(), Some(spec.to_string().as_str()));
            let after = q.forward(&b).unwrap();
            assert!(max_abs_diff(&before, &after) > 0.0, "{arch} {s}: quantization changed nothing");
            assert_eq!(max_abs_diff(&before, &model.forward(&b).unwrap()), 0.0, "{arch} {s}: reference was mutated");
            let df = report.table().unwrap();
            assert_eq!(df.height(), n_linears);
            assert!(report.bits_per_weight > 0.0 && report.model_bytes > 0.0);
        }
    }
}

#[test]
fn more_bits_means_less_error_and_none_is_identity() {
    let model = load_model(fixture("llama").to_str().unwrap()).unwrap();
    let o = QuantizeOptions::default();
    let err = |s: &str| {
        let (_, r) = quantize_model(&model, &s.parse().unwrap(), &o).unwrap();
        r.matrices.iter().map(|m| m.rel_error).sum::<f64>()
    };
    let (e8, e4, e3, e2) = (err("rtn:bits=8"), err("rtn:bits=4"), err("rtn:bits=3"), err("rtn:bits=2"));
    assert!(e8 < e4 && e4 < e3 && e3 < e2, "{e8} {e4} {e3} {e2}");
    let (q, r) = quantize_model(&model, &QuantSpec::None, &o).unwrap();
    assert!(r.matrices.is_empty());
    let b = Batch::from_ids(&[9, 8, 7]).unwrap();
    assert_eq!(max_abs_diff(&q.forward(&b).unwrap(), &model.forward(&b).unwrap()), 0.0);
}

#[test]
fn gptq_beats_rtn_end_to_end_at_3_bits() {
    for arch in ARCHS {
        let model = load_model(fixture(arch).to_str().unwrap()).unwrap();
        let o = QuantizeOptions { calibration: Some(windows(16, 48, 5)), ..Default::default() };
        let (rtn, _) = quantize_model(&model, &"rtn:bits=3".parse().unwrap(), &o).unwrap();
        let (gptq, report) = quantize_model(&model, &"gptq:bits=3".parse().unwrap(), &o).unwrap();
        assert!(report.calibration_tokens == 16 * 48);
        assert!(report.matrices.iter().all(|m| m.gptq_loss.is_some()));
        let (kr, kg) = (kl_to_reference(&model, &rtn), kl_to_reference(&model, &gptq));
        assert!(kg < kr, "{arch}: GPTQ KL {kg} should be below RTN KL {kr}");
    }
}

#[test]
fn embeddings_are_quantized_only_when_asked() {
    let model = load_model(fixture("llama-tied").to_str().unwrap()).unwrap();
    let o = QuantizeOptions { embeddings: true, unembedding: true, ..Default::default() };
    let (q, r) = quantize_model(&model, &"rtn:bits=4".parse().unwrap(), &o).unwrap();
    assert!(r.matrices.iter().any(|m| m.role == "embed"));
    assert!(max_abs_diff(&q.embed, &model.embed) > 0.0);
    // tied: the unembedding follows the embedding
    assert_eq!(max_abs_diff(&q.unembed.weight(), &q.embed), 0.0);
    let (q2, _) = quantize_model(&model, &"rtn:bits=4".parse().unwrap(), &QuantizeOptions::default()).unwrap();
    assert_eq!(max_abs_diff(&q2.embed, &model.embed), 0.0);
}

#[test]
fn bad_quantization_input_is_named() {
    let model = load_model(fixture("llama").to_str().unwrap()).unwrap();
    for bad in ["rtn:bits=9", "rtn:bits=1", "rtn:bitz=4", "magic", "prune:sparsity=1.5"] {
        let e = bad.parse::<QuantSpec>().unwrap_err().to_string();
        assert!(!e.is_empty(), "{bad}");
    }
    // group 48 does not divide 64 input features
    let e = format!("{:#}", quantize_model(&model, &"rtn:bits=4,group=48".parse().unwrap(), &QuantizeOptions::default()).unwrap_err());
    assert!(e.contains("model.layers.0.self_attn.q_proj.weight") && e.contains("48"), "{e}");
    // Q4_K needs rows of 256
    let e = format!("{:#}", quantize_model(&model, &"q4_k".parse().unwrap(), &QuantizeOptions::default()).unwrap_err());
    assert!(e.contains("model.layers.0.self_attn.q_proj.weight") && e.contains("256"), "{e}");
    // calibrated method on a model without a tokenizer and no explicit windows
    let e = format!("{:#}", quantize_model(&model, &"gptq:bits=4".parse().unwrap(), &QuantizeOptions::default()).unwrap_err());
    assert!(e.contains("tokenizer"), "{e}");
}

#[test]
fn k_quant_fallback_stores_narrow_rows_as_llama_cpp_does() {
    // The fixture's 64-wide rows hold no 256-block: with fallback=true every matrix is Q5_0, as
    // llama.cpp's quantizer would store it, and the twin equals the plain Q5_0 twin.
    let model = load_model(fixture("llama").to_str().unwrap()).unwrap();
    let (q, report) = quantize_model(&model, &"q4_k:fallback=true".parse().unwrap(), &QuantizeOptions::default()).unwrap();
    assert!(report.matrices.iter().all(|m| m.format == "q5_0" && m.bits_per_weight == 5.5), "{:?}", report.matrices[0]);
    let (q5, report5) = quantize_model(&model, &"q5_0".parse().unwrap(), &QuantizeOptions::default()).unwrap();
    assert!(report5.matrices.iter().all(|m| m.format == "q5_0"));
    let b = Batch::from_ids(&[1, 2, 3, 4, 5]).unwrap();
    assert_eq!(max_abs_diff(&q.forward(&b).unwrap(), &q5.forward(&b).unwrap()), 0.0);
    let df = report.table().unwrap();
    assert!(df.column("format").is_ok());
}

#[test]
fn quantized_models_round_trip_through_an_hf_directory() {
    for (arch, spec) in [("gpt2", "rtn:bits=4"), ("neox", "w8a8"), ("llama", "int8"), ("llama-tied", "nf4"), ("llama", "awq:bits=4,group=32")] {
        let model = load_model(fixture(arch).to_str().unwrap()).unwrap();
        let (q, report) = quantize_model(&model, &spec.parse().unwrap(), &opts_with_calibration()).unwrap();
        let dir = temp_dir(&format!("export-{arch}"));
        std::fs::remove_dir(&dir).unwrap();
        qi::export::save_hf_dir(&q, &dir, Some(&report)).unwrap();
        let back = load_model(dir.to_str().unwrap()).unwrap();
        assert_eq!(back.source.quantization.as_deref(), Some(spec));
        let b = Batch::from_ids(&[3, 1, 4, 1, 5, 9, 2, 6]).unwrap();
        let d = max_abs_diff(&q.forward(&b).unwrap(), &back.forward(&b).unwrap());
        assert!(d < 1e-5, "{arch} {spec}: reloaded model differs by {d}");
        // writing into a non-empty directory is refused
        assert!(qi::export::save_hf_dir(&q, &dir, None).is_err());
    }
}

