//! Model-level quantization on the tiny fixtures: every method runs on GPT-2, NeoX, Llama and Qwen2, the
//! reference is never mutated, reports are complete, GPTQ beats RTN end to end, bad input errors.
mod common;
use common::*;
use qi::quant::QuantSpec;
use qi::quantize::{quantize_model, QuantizeOptions};
use qi::{load_model, Batch, HookedTransformer};

const ARCHS: [&str; 4] = ["gpt2", "neox", "llama", "qwen2"];

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
            // every matrix changes, by less than its own norm
            assert!(report.matrices.iter().all(|m| m.rel_error > 0.0 && m.rel_error < 1.0), "{arch} {s}: {:?}", report.matrices.iter().map(|m| m.rel_error).collect::<Vec<_>>());
            assert_eq!(q.hook_names(), model.hook_names());
            assert_eq!(q.source.quantization.as_deref(), Some(spec.to_string().as_str()));
            let after = q.forward(&b).unwrap();
            assert!(max_abs_diff(&before, &after) > 0.0, "{arch} {s}: quantization changed nothing");
            assert_eq!(max_abs_diff(&before, &model.forward(&b).unwrap()), 0.0, "{arch} {s}: reference was mutated");
            let df = report.table().unwrap();
            assert_eq!(df.height(), n_linears);
            assert!(report.bits_per_weight > 0.0 && report.model_bytes > 0.0);
            // the estimate without quantizing (what `qi perplexity --json` reports) is the report's
            let est = qi::quantize::model_bits_per_weight(&model, &spec);
            assert!((est - report.bits_per_weight).abs() < 1e-9, "{arch} {s}: estimate {est} vs report {}", report.bits_per_weight);
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
fn gptq_counts_each_calibration_sequence_as_one_sample() {
    // The reference's H = 2/N · Σ XᵀX takes N = calibration sequences. A [b, t, in] input adds b
    // samples, the same H as b single-sequence inputs.
    let mut rng = qi::rng::Rng::new(4);
    let v: Vec<f32> = (0..2 * 5 * 3).map(|_| rng.normal() as f32).collect();
    let x = candle_core::Tensor::from_vec(v, (2, 5, 3), &candle_core::Device::Cpu).unwrap();
    let mut batched = qi::quant::HessianAccumulator::new(3);
    batched.add_batch(&x).unwrap();
    let mut single = qi::quant::HessianAccumulator::new(3);
    for i in 0..2 {
        single.add_batch(&x.get(i).unwrap()).unwrap();
    }
    assert_eq!((batched.nsamples(), single.nsamples()), (2, 2));
    assert!(max_abs_diff(&batched.hessian().unwrap(), &single.hessian().unwrap()) < 1e-5);
    // So the reported loss does not depend on how sequences are batched. Counting a batch of 4 as
    // one sample makes H, and with it the loss, 4× larger (the weights are unchanged: GPTQ's
    // updates are invariant to scaling H).
    let model = load_model(fixture("llama").to_str().unwrap()).unwrap();
    let run = |batch| {
        let o = QuantizeOptions { calibration: Some(windows(8, 16, 11)), calibration_batch: batch, ..Default::default() };
        let (q, r) = quantize_model(&model, &"gptq:bits=4".parse().unwrap(), &o).unwrap();
        (q, r.matrices.iter().map(|m| m.gptq_loss.unwrap()).collect::<Vec<f64>>())
    };
    let ((q1, one), (q4, four)) = (run(1), run(4));
    for (i, (a, b)) in one.iter().zip(&four).enumerate() {
        assert!((a - b).abs() <= 1e-3 * a, "matrix {i}: loss {a} with one sequence per batch, {b} with four");
    }
    let b = Batch::from_ids(&[1, 2, 3, 4, 5]).unwrap();
    assert!(max_abs_diff(&q1.forward(&b).unwrap(), &q4.forward(&b).unwrap()) < 1e-4);
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
    // each error names the offending key or method, its value, and what is valid
    for (bad, want) in [
        ("rtn:bits=9", &["invalid bits '9'", "2..=8"][..]),
        ("rtn:bits=1", &["invalid bits '1'", "2..=8"]),
        ("rtn:bitz=4", &["invalid option key 'bitz'", "valid keys: bits"]),
        ("magic", &["invalid quantization method 'magic'", "rtn", "gptq"]),
        ("prune:sparsity=1.5", &["invalid sparsity '1.5'", "[0, 1)"]),
    ] {
        let e = bad.parse::<QuantSpec>().unwrap_err().to_string();
        assert!(want.iter().all(|w| e.contains(w)), "{bad}: {e}");
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
        let e = qi::export::save_hf_dir(&q, &dir, None).unwrap_err().to_string();
        assert!(e.contains(&dir.display().to_string()) && e.contains("not empty"), "{e}");
    }
}

#[test]
fn gemma3_quantizes_with_every_calibrated_method_and_twins_round_trip_exactly() {
    let model = load_model(fixture("gemma3").to_str().unwrap()).unwrap();
    let b = Batch::from_rows(&windows(2, 20, 3), qi::Padding::Right, 0).unwrap();
    let before = model.forward(&b).unwrap();
    for s in ["rtn:bits=4,group=32", "gptq:bits=4,group=32", "awq:bits=4,group=32", "nf4", "q4_k:fallback=true"] {
        let spec: QuantSpec = s.parse().unwrap();
        let (q, report) = quantize_model(&model, &spec, &opts_with_calibration()).unwrap_or_else(|e| panic!("{s}: {e:#}"));
        assert_eq!(report.matrices.len(), 4 * 7, "{s}");
        assert_eq!(max_abs_diff(&before, &model.forward(&b).unwrap()), 0.0, "{s}: reference was mutated");
        let kl = kl_to_reference(&model, &q);
        assert!(kl > 0.0 && kl < 0.5, "{s}: KL to the reference {kl}");
        // norms (q/k and sandwich norms included) are not quantized; AWQ folds its scales into
        // the two pre-norms (ln1, ln2) and nothing else
        for (bq, br) in q.blocks.iter().zip(&model.blocks) {
            assert_eq!(bq.norms().len(), 6);
            for (nq, nr) in bq.norms().iter().zip(br.norms()) {
                let folded = s.starts_with("awq") && (nq.name == br.ln1.name || nq.name == br.ln2.name);
                assert_eq!(max_abs_diff(&nq.weight, &nr.weight) > 0.0, folded, "{s}: {}", nq.name);
            }
        }
        let dir = temp_dir(&format!("export-gemma3-{}", s.split(':').next().unwrap()));
        std::fs::remove_dir(&dir).unwrap();
        qi::export::save_hf_dir(&q, &dir, Some(&report)).unwrap();
        let back = load_model(dir.to_str().unwrap()).unwrap();
        assert_eq!(back.cfg, q.cfg, "{s}: config changed through the HF directory");
        assert_eq!(max_abs_diff(&q.forward(&b).unwrap(), &back.forward(&b).unwrap()), 0.0, "{s}: reloaded twin differs");
        assert_eq!(back.n_params(), model.n_params());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn gemma3_awq_folds_into_unit_offset_norms() {
    // Gemma's norms scale by (1 + w): folding 1/s as w / s (the plain-norm rule) would change the
    // function before any quantization. At 8 bits quantization error is tiny, so a wrong fold
    // shows as an AWQ twin far from the reference while RTN's is close.
    let model = load_model(fixture("gemma3").to_str().unwrap()).unwrap();
    let o = QuantizeOptions { calibration: Some(windows(16, 48, 5)), ..Default::default() };
    let (rtn, _) = quantize_model(&model, &"rtn:bits=8,group=32".parse().unwrap(), &o).unwrap();
    let (awq, _) = quantize_model(&model, &"awq:bits=8,group=32".parse().unwrap(), &o).unwrap();
    let (kr, ka) = (kl_to_reference(&model, &rtn), kl_to_reference(&model, &awq));
    assert!(ka < 3.0 * kr, "AWQ KL {ka} vs RTN KL {kr}");
}

#[test]
fn gemma3_gptq_beats_rtn_end_to_end_at_3_bits() {
    let model = load_model(fixture("gemma3").to_str().unwrap()).unwrap();
    let o = QuantizeOptions { calibration: Some(windows(16, 48, 5)), ..Default::default() };
    let (rtn, _) = quantize_model(&model, &"rtn:bits=3".parse().unwrap(), &o).unwrap();
    let (gptq, _) = quantize_model(&model, &"gptq:bits=3".parse().unwrap(), &o).unwrap();
    let (kr, kg) = (kl_to_reference(&model, &rtn), kl_to_reference(&model, &gptq));
    assert!(kg < kr, "GPTQ KL {kg} should be below RTN KL {kr}");
}
#[test]
fn quantized_qwen2_twin_reloads_bit_exactly_from_the_twin_cache() {
    use qi::twin_cache::{quantize_cached, TwinOrigin};
    // From the GGUF, so the exported config.json is written from GGUF-derived settings.
    let model = load_model(fixture("qwen2").join("model.gguf").to_str().unwrap()).unwrap();
    let root = temp_dir("qwen2-twins");
    let spec: QuantSpec = "rtn:bits=4".parse().unwrap();
    let opts = QuantizeOptions::default();
    let (q, _, first) = quantize_cached(&model, &spec, &opts, Some(&root)).unwrap();
    let (back, _, second) = quantize_cached(&model, &spec, &opts, Some(&root)).unwrap();
    assert_eq!(first, TwinOrigin::Quantized);
    let TwinOrigin::Cached(dir) = second else { panic!("second call did not read the cache") };
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!((cfg["model_type"].as_str(), cfg["architectures"][0].as_str()), (Some("qwen2"), Some("Qwen2ForCausalLM")));
    assert_eq!(back.cfg, q.cfg);
    let (a, b) = (qi::models::hf_state_dict(&q).unwrap(), qi::models::hf_state_dict(&back).unwrap());
    let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, b.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>());
    assert!(names.contains(&"model.layers.1.self_attn.v_proj.bias") && !names.contains(&"lm_head.weight"), "{names:?}");
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        let bits = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        assert_eq!(x.dims(), y.dims(), "{n}");
        assert!(bits(x) == bits(y), "{n} differs after the round trip");
    }
    // the 4-bit twin really differs from the reference, and the reloaded twin computes the same
    let batch = Batch::from_ids(&[3, 1, 4, 1, 5, 9, 2, 6]).unwrap();
    assert_eq!(max_abs_diff(&q.forward(&batch).unwrap(), &back.forward(&batch).unwrap()), 0.0);
    assert!(max_abs_diff(&q.forward(&batch).unwrap(), &model.forward(&batch).unwrap()) > 1e-3);
    std::fs::remove_dir_all(&root).unwrap();
}
