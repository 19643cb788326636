//! Hugging Face parity: logits, every hidden state and every attention pattern of tiny random
//! GPT-2, GPT-NeoX (parallel and sequential residual) and Llama (GQA, MQA + tied) models must
//! match `transformers` dumps (data/fixtures, made by scripts/make_fixtures.py) to 1e-4.
mod common;
use common::*;
use qi::hooks::names;
use qi::{load_model, Batch};

const TOL: f32 = 1e-4;

fn check(dir: &str, model_file: Option<&str>, reference: &str) {
    let path = fixture(dir);
    let src = match model_file {
        Some(f) => path.join(f),
        None => path.clone(),
    };
    let model = load_model(src.to_str().unwrap()).unwrap();
    let r = load_reference(&path.join(reference));
    let batch = Batch::from_rows(&ids_of(&r["input_ids"]), qi::Padding::Right, 0).unwrap();
    let (logits, cache) = model.run_with_cache(&batch, "*hook_resid_pre,*hook_pattern,ln_final.hook_normalized").unwrap();
    let d = max_abs_diff(&logits, &r["logits"]);
    assert!(d <= TOL, "{dir}: logits differ by {d}");
    let n = model.cfg.n_layers;
    for i in 0..=n {
        let name = if i < n { names::resid_pre(i) } else { names::LN_FINAL.to_string() };
        let d = max_abs_diff(cache.get(&name).unwrap(), &r[&format!("hidden_states.{i}")]);
        assert!(d <= TOL, "{dir}: hidden state {i} ({name}) differs by {d}");
    }
    for l in 0..n {
        let d = max_abs_diff(cache.get(&names::pattern(l)).unwrap(), &r[&format!("attentions.{l}")]);
        assert!(d <= TOL, "{dir}: attention pattern {l} differs by {d}");
    }
}

#[test]
fn gpt2_matches_transformers() {
    check("gpt2", None, "reference.safetensors");
}

#[test]
fn neox_parallel_residual_matches_transformers() {
    check("neox", None, "reference.safetensors");
}

#[test]
fn neox_sequential_residual_matches_transformers() {
    check("neox-sequential", None, "reference.safetensors");
}

#[test]
fn llama_gqa_matches_transformers() {
    check("llama", None, "reference.safetensors");
}

#[test]
fn llama_mqa_tied_matches_transformers() {
    check("llama-tied", None, "reference.safetensors");
}

#[test]
fn llama_gguf_with_permuted_qk_and_q8_0_matches_transformers() {
    check("llama", Some("model.gguf"), "reference_gguf.safetensors");
}

#[test]
fn gguf_records_source_quant_types() {
    let model = load_model(fixture("llama").join("model.gguf").to_str().unwrap()).unwrap();
    let types = &model.source.tensor_types;
    assert_eq!(types["model.layers.1.mlp.down_proj.weight"], "Q8_0");
    assert_eq!(types["model.layers.0.mlp.down_proj.weight"], "F32");
}

#[test]
fn smollm2_matches_transformers_and_knows_paris() {
    let Some(gguf) = qi::shared::shared_path(qi::shared::SMOLLM2_GGUF) else { return };
    let model = load_model(gguf.to_str().unwrap()).unwrap();
    let r = load_reference(&fixture("smollm2").join("reference.safetensors"));
    let ids = model.to_tokens("The capital of France is", false).unwrap();
    assert_eq!(vec![ids.clone()], ids_of(&r["input_ids"]), "tokenizer differs from transformers");
    let batch = Batch::from_ids(&ids).unwrap();
    let (logits, cache) = model.run_with_cache(&batch, "*hook_resid_pre,blocks.0.attn.hook_pattern,blocks.20.attn.hook_pattern,ln_final.hook_normalized").unwrap();
    let last = logits.get(0).unwrap().get(ids.len() - 1).unwrap();
    let finite = last.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite());
    assert!(finite, "non-finite logits");
    // A 30-layer model in f32 accumulates more rounding than the tiny fixtures: 1e-3 on logits of
    // magnitude ~20, 1e-4 relative on the hidden states.
    let d = max_abs_diff(&last, &r["last_logits"]);
    assert!(d <= 1e-3, "last logits differ by {d}");
    for i in [0usize, 1, 15, 29, 30] {
        let name = if i < 30 { names::resid_pre(i) } else { names::LN_FINAL.to_string() };
        let got = cache.get(&name).unwrap();
        let want = &r[&format!("hidden_states.{i}")];
        let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
        let d = max_abs_diff(got, want);
        assert!(d <= 1e-4 * scale.max(10.0), "hidden state {i} differs by {d} (scale {scale})");
    }
    for l in [0usize, 20] {
        let d = max_abs_diff(cache.get(&names::pattern(l)).unwrap(), &r[&format!("attentions.{l}")]);
        assert!(d <= TOL, "pattern {l} differs by {d}");
    }
    let out = model.generate_greedy(&ids, 3).unwrap();
    let text = model.tokenizer().unwrap().decode(&out[ids.len()..], true).unwrap();
    assert!(text.contains(" Paris"), "greedy continuation was {text:?}");
}
