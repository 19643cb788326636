//! Hugging Face parity: logits, every hidden state and every attention pattern of tiny random
//! GPT-2, GPT-NeoX (parallel and sequential residual), Llama (GQA, MQA + tied), Qwen2 (GQA, q/k/v
//! biases, tied) and Gemma 3 (sliding window, QK-norm, sandwich norms) models must match
//! `transformers` dumps (data/fixtures, made by scripts/make_fixtures.py) to 1e-4. Real Gemma 3 and
//! Qwen2.5-Coder GGUFs (when fetched by ./dev models) are checked against transformers reading the
//! same files.
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

// --- Gemma 3 (text) ---------------------------------------------------------------------------
// data/fixtures/gemma3: 4 layers (sliding, full, sliding, sliding), window 8 on 20-token rows,
// query_pre_attn_scalar 24 != head_dim 32, QK-norm, sandwich norms, (1 + w) norms, embeddings
// scaled by sqrt(64), rotary base 1e5 (global) / 5e3 (local), tied, GQA 4 / 2.

#[test]
fn gemma3_sliding_window_qk_norm_sandwich_norms_match_transformers() {
    check("gemma3", None, "reference.safetensors");
}

#[test]
fn gemma3_gguf_with_shifted_norms_and_q8_0_matches_transformers() {
    // GGUF norms are stored as 1 + w, q/k unpermuted; scores scaled by 1/sqrt(key_length).
    check("gemma3", Some("model.gguf"), "reference_gguf.safetensors");
    let model = load_model(fixture("gemma3").join("model.gguf").to_str().unwrap()).unwrap();
    assert_eq!(model.source.tensor_types["model.layers.2.mlp.down_proj.weight"], "Q8_0");
    assert_eq!(model.cfg.extras.sliding_layers, vec![true, false, true, true]);
    assert_eq!(model.cfg.extras.local_rope_theta, Some(5000.0));
}

#[test]
fn gemma3_residual_decomposition_and_hooks() {
    let model = load_model(fixture("gemma3").to_str().unwrap()).unwrap();
    let r = load_reference(&fixture("gemma3").join("reference.safetensors"));
    let batch = Batch::from_rows(&ids_of(&r["input_ids"]), qi::Padding::Right, 0).unwrap();
    let (_, cache) = model.run_with_cache(&batch, "*").unwrap();
    // every hook the other rotary, gated families have, and no others
    let llama = load_model(fixture("llama").to_str().unwrap()).unwrap();
    let strip = |v: Vec<String>| v.into_iter().filter(|n| !n.starts_with("blocks.") || n.starts_with("blocks.0.")).collect::<Vec<_>>();
    assert_eq!(strip(model.hook_names()), strip(llama.hook_names()));
    // attn_out / mlp_out are the post-norm outputs: the residual stream is their sum
    let l = 1;
    let g = |n: String| cache.get(&n).unwrap().clone();
    let mid = (g(names::resid_pre(l)) + g(names::attn_out(l))).unwrap();
    assert!(max_abs_diff(&mid, &g(names::resid_mid(l))) < 1e-5);
    let post = (g(names::resid_mid(l)) + g(names::mlp_out(l))).unwrap();
    assert!(max_abs_diff(&post, &g(names::resid_post(l))) < 1e-5);
    // post-norm output: RMS (1 + w) per position, not the raw o_proj output
    let b = &model.blocks[l];
    let z = g(names::z(l));
    let (bs, p, h, dh) = z.dims4().unwrap();
    let raw = b.attn.out.forward(&z.reshape((bs, p, h * dh)).unwrap()).unwrap();
    assert!(max_abs_diff(&b.post_attn_norm.as_ref().unwrap().forward(&raw).unwrap(), &g(names::attn_out(l))) < 1e-5);
    assert!(max_abs_diff(&raw, &g(names::attn_out(l))) > 0.1);
    // hook_q is the projection before QK-norm; hook_rot_q is after QK-norm and rotary
    let ln1 = g(names::ln1(l));
    let qi::models::QkvProj::Separate { q, .. } = &b.attn.qkv else { panic!("gemma3 has separate q/k/v") };
    let q = q.forward(&ln1).unwrap();
    assert!(max_abs_diff(&q.reshape(g(names::q(l)).shape()).unwrap(), &g(names::q(l))) < 1e-5);
    // hook_embed is the scaled embedding and is block 0's input
    let e = model.embed.index_select(&batch.tokens.flatten_all().unwrap(), 0).unwrap().reshape((bs, p, 64)).unwrap();
    assert!(max_abs_diff(&(e * 8.0).unwrap(), &g(names::EMBED.to_string())) < 1e-5);
    assert_eq!(max_abs_diff(&g(names::EMBED.to_string()), &g(names::resid_pre(0))), 0.0);
    // sliding layer 0: query 19 gives exactly zero weight to keys 0..=11, positive weight to 12..=19
    let pat = g(names::pattern(0)).get(0).unwrap().get(0).unwrap().get(19).unwrap().to_vec1::<f32>().unwrap();
    assert!(pat[..12].iter().all(|&x| x == 0.0) && pat[12..].iter().all(|&x| x > 0.0), "{pat:?}");
    let pat = g(names::pattern(1)).get(0).unwrap().get(0).unwrap().get(19).unwrap().to_vec1::<f32>().unwrap();
    assert!(pat.iter().all(|&x| x > 0.0), "global layer 1 sees every key: {pat:?}");
}

/// The Gemma 3 270M GGUF (Q4_K_M, fetched at set-up time, see shared/notes/more-models.md).
fn gemma3_270m() -> Option<std::path::PathBuf> {
    qi::shared::model_path("gemma-3-270m-q4_k_m.gguf")
}

#[test]
fn gemma3_270m_gguf_matches_transformers_on_wikitext() {
    let Some(gguf) = gemma3_270m() else { return };
    let model = load_model(gguf.to_str().unwrap()).unwrap();
    assert_eq!((model.cfg.n_layers, model.cfg.d_head, model.cfg.extras.sliding_window), (18, 256, Some(512)));
    let r = load_reference(&fixture("gemma3-270m").join("reference.safetensors"));
    let ids = ids_of(&r["input_ids"]);
    let p = ids[0].len();
    assert!(p > 512, "the prefix must be longer than the sliding window");
    let batch = Batch::from_rows(&ids, qi::Padding::Right, 0).unwrap();
    let hidden = [0usize, 1, 9, 18];
    let filter: Vec<String> = hidden.iter().map(|&i| if i < 18 { names::resid_pre(i) } else { names::LN_FINAL.to_string() }).chain([names::pattern(0), names::pattern(5)]).collect();
    let (logits, cache) = model.run_with_cache(&batch, filter).unwrap();
    let last = logits.get(0).unwrap().narrow(0, p - 8, 8).unwrap();
    // Both sides dequantize the same Q4_K/Q5_0/Q6_K/Q8_0 blocks to f32, so only f32 rounding over
    // 18 layers separates them: measured 3e-5 on logits of magnitude ~30 and 4e-7 .. 2e-6 relative
    // on hidden states (the residual stream reaches ~6e3); the bounds leave 3-5x headroom.
    let every16 = last.index_select(&candle_core::Tensor::arange_step(0u32, 262144, 16, &candle_core::Device::Cpu).unwrap(), 1).unwrap();
    let d = max_abs_diff(&every16, &r["last_logits_every16"]);
    assert!(d <= 1e-4, "logits differ by {d}");
    let top = last.gather(&r["last_top_ids"].to_dtype(candle_core::DType::U32).unwrap(), 1).unwrap();
    let d = max_abs_diff(&top, &r["last_top_logits"]);
    assert!(d <= 1e-4, "top-10 logits differ by {d}");
    let argmax = last.argmax(1).unwrap().to_vec1::<u32>().unwrap();
    let want: Vec<u32> = ids_of(&r["last_top_ids"]).iter().map(|row| row[0]).collect();
    assert_eq!(argmax, want, "top-1 tokens differ");
    for i in hidden {
        let name = if i < 18 { names::resid_pre(i) } else { names::LN_FINAL.to_string() };
        let got = cache.get(&name).unwrap().get(0).unwrap().narrow(0, p - 8, 8).unwrap();
        let want = &r[&format!("hidden_states.{i}")];
        let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
        let d = max_abs_diff(&got, want);
        assert!(d <= 1e-5 * scale, "hidden state {i} differs by {d} (scale {scale})");
    }
    for l in [0usize, 5] {
        let got = cache.get(&names::pattern(l)).unwrap().get(0).unwrap().narrow(1, p - 8, 8).unwrap();
        let d = max_abs_diff(&got, &r[&format!("attentions.{l}")]);
        assert!(d <= TOL, "pattern {l} differs by {d}");
    }
    // layer 0 slides (the patterns above match transformers' over all keys): the last query gives
    // no weight to keys 512 or more positions back, while global layer 5 does
    let row = |l: usize| cache.get(&names::pattern(l)).unwrap().get(0).unwrap().get(0).unwrap().get(p - 1).unwrap().to_vec1::<f32>().unwrap();
    assert!(row(0)[..p - 512].iter().all(|&x| x == 0.0));
    assert!(row(5)[..p - 512].iter().any(|&x| x > 0.0));
}

#[test]
fn gemma3_multimodal_wrapper_reads_text_config_and_language_model_weights() {
    // Gemma3ForConditionalGeneration layout: settings in `text_config`, weights under
    // `model.language_model.` (transformers 5) — same model, same logits.
    let src = fixture("gemma3");
    let dir = std::env::temp_dir().join(format!("qi-test-gemma3-wrapper-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let cfg = serde_json::json!({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"], "text_config": text});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let tensors = candle_core::safetensors::load(src.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let renamed: std::collections::HashMap<String, candle_core::Tensor> =
        tensors.into_iter().map(|(k, v)| (k.replacen("model.", "model.language_model.", 1), v)).collect();
    candle_core::safetensors::save(&renamed, dir.join("model.safetensors")).unwrap();
    let model = load_model(dir.to_str().unwrap()).unwrap();
    let r = load_reference(&src.join("reference.safetensors"));
    let batch = Batch::from_rows(&ids_of(&r["input_ids"]), qi::Padding::Right, 0).unwrap();
    let d = max_abs_diff(&model.forward(&batch).unwrap(), &r["logits"]);
    assert!(d <= TOL, "logits differ by {d}");
    assert_eq!(model.embed_name, "model.language_model.embed_tokens.weight");
    let _ = std::fs::remove_dir_all(&dir);
}
#[test]
fn qwen2_gqa_qkv_bias_tied_matches_transformers() {
    check("qwen2", None, "reference.safetensors");
    // The q/k/v biases matter in this fixture: without them the logits move far beyond TOL.
    let mut model = load_model(fixture("qwen2").to_str().unwrap()).unwrap();
    assert!(model.cfg.tied_embeddings && model.cfg.n_kv_heads == 2);
    let r = load_reference(&fixture("qwen2").join("reference.safetensors"));
    let batch = Batch::from_rows(&ids_of(&r["input_ids"]), qi::Padding::Right, 0).unwrap();
    for block in model.blocks.iter_mut() {
        for (role, lin) in block.linears_labeled_mut() {
            assert_eq!(lin.bias.is_some(), ["q", "k", "v"].contains(&role), "{role}");
            lin.bias = None;
        }
    }
    let d = max_abs_diff(&model.forward(&batch).unwrap(), &r["logits"]);
    assert!(d > 100.0 * TOL, "dropping the biases changed the logits by only {d}");
}

#[test]
fn qwen2_gguf_with_unpermuted_qk_biases_and_q8_0_matches_transformers() {
    check("qwen2", Some("model.gguf"), "reference_gguf.safetensors");
    let model = load_model(fixture("qwen2").join("model.gguf").to_str().unwrap()).unwrap();
    assert_eq!(model.cfg.architecture, qi::models::Architecture::Qwen2);
    assert_eq!(model.source.tensor_types["model.layers.1.mlp.down_proj.weight"], "Q8_0");
    assert_eq!(model.source.tensor_types["model.layers.0.self_attn.k_proj.bias"], "F32");
}

/// A real model in the `./dev models` folder, or None (printed) if absent.
fn cached_model(file: &str) -> Option<std::path::PathBuf> {
    qi::shared::model_path(file)
}

/// A Qwen2.5-Coder GGUF against transformers reading the same file (dequantized to f32, eager):
/// logits on a WikiText-2 prefix and per-head induction stripe scores on `[BOS] r r`.
fn qwen_coder_matches_transformers(size: &str, logit_tol: f32, score_tol: f64) {
    use qi::analysis::induction::{head_scores, LossInputs, RepeatedTokens};
    let Some(path) = cached_model(&format!("qwen2.5-coder-{size}-instruct-q4_k_m.gguf")) else { return };
    let model = load_model(path.to_str().unwrap()).unwrap();
    let r = load_reference(&fixture(&format!("qwen2.5-coder-{size}")).join("reference.safetensors"));
    let ids = ids_of(&r["input_ids"]);
    let logits = model.forward(&Batch::from_rows(&ids, qi::Padding::Right, 0).unwrap()).unwrap().get(0).unwrap();
    let positions = ids_of(&r["logit_positions"].unsqueeze(0).unwrap())[0].clone();
    let top_ids = ids_of(&r["top_ids"]);
    let slice = r["logits_slice"].dim(1).unwrap();
    let mut worst = 0f32;
    for (i, &p) in positions.iter().enumerate() {
        let at = logits.get(p as usize).unwrap();
        let mut d = max_abs_diff(&at.narrow(0, 0, slice).unwrap(), &r["logits_slice"].get(i).unwrap());
        let idx = candle_core::Tensor::new(top_ids[i].as_slice(), at.device()).unwrap();
        d = d.max(max_abs_diff(&at.index_select(&idx, 0).unwrap(), &r["top_logits"].get(i).unwrap()));
        let lse = at.exp().unwrap().sum_all().unwrap().log().unwrap();
        d = d.max(max_abs_diff(&lse, &r["logsumexp"].get(i).unwrap()));
        let argmax = at.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        assert_eq!(argmax, top_ids[i][0], "{size}: top token at position {p} differs");
        worst = worst.max(d);
    }
    eprintln!("qwen2.5-coder-{size}: max |Δlogit| {worst:.2e} over positions {positions:?}");
    assert!(worst <= logit_tol, "{size}: logits differ by {worst}");

    let ind = ids_of(&r["induction_ids"]);
    let set = RepeatedTokens { half: (ind[0].len() - 1) / 2, rows: ind, offset: 1 };
    let inputs = LossInputs::induction(&model, &set, 1).unwrap();
    let got = head_scores(&model, &set, &inputs, false, false).unwrap().stripe;
    let want = r["induction_scores"].to_vec2::<f32>().unwrap();
    let mut worst = 0f64;
    for (l, row) in want.iter().enumerate() {
        for (h, &w) in row.iter().enumerate() {
            worst = worst.max((got[l][h] - w as f64).abs());
        }
    }
    let strong = want.iter().flatten().filter(|&&w| w > 0.4).count();
    eprintln!("qwen2.5-coder-{size}: max |Δ stripe score| {worst:.2e} over {} heads ({strong} above 0.4)", want.len() * want[0].len());
    assert!(strong >= 5, "{size}: the reference has only {strong} strong induction heads");
    assert!(worst <= score_tol, "{size}: induction stripe scores differ by {worst}");
}

#[test]
fn qwen25_coder_05b_matches_transformers() {
    qwen_coder_matches_transformers("0.5b", 5e-4, 1e-5);
}

#[test]
fn qwen25_coder_15b_matches_transformers() {
    qwen_coder_matches_transformers("1.5b", 5e-4, 1e-5);
}
