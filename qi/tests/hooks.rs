//! Padding, caching, interventions and gradients on the tiny fixtures.
mod common;
use candle_core::{DType, IndexOp, Tensor};
use common::*;
use qi::hooks::{interventions, names};
use qi::{load_model, Batch, HookFilter, Hooks, Padding, QiError};

// gemma3: the 12-token row is longer than its sliding window (8), so padding meets the window mask.
const ARCHS: [&str; 5] = ["gpt2", "neox", "neox-sequential", "llama", "gemma3"];

fn rows() -> Vec<Vec<u32>> {
    vec![(1..=12).collect(), (40..47).collect(), vec![7, 300, 9]]
}

#[test]
fn left_and_right_padding_match_unpadded_sequences() {
    for arch in ARCHS {
        let model = load_model(fixture(arch).to_str().unwrap()).unwrap();
        let rows = rows();
        let singles: Vec<(Tensor, Tensor)> = rows
            .iter()
            .map(|r| {
                let (l, c) = model.run_with_cache(&Batch::from_ids(r).unwrap(), "*hook_resid_post").unwrap();
                (l.get(0).unwrap(), c.get(&names::resid_post(1)).unwrap().get(0).unwrap())
            })
            .collect();
        for padding in [Padding::Left, Padding::Right] {
            let batch = Batch::from_rows(&rows, padding, 0).unwrap();
            let (logits, cache) = model.run_with_cache(&batch, "*hook_resid_post,*hook_pattern").unwrap();
            let len = batch.seq_len();
            let mask = cache.mask().to_vec2::<u8>().unwrap();
            for (i, r) in rows.iter().enumerate() {
                let off = if padding == Padding::Left { len - r.len() } else { 0 };
                assert_eq!(mask[i].iter().filter(|&&m| m == 1).count(), r.len());
                let got = logits.get(i).unwrap().narrow(0, off, r.len()).unwrap();
                let d = max_abs_diff(&got, &singles[i].0);
                assert!(d < 1e-4, "{arch} {padding:?} row {i}: logits differ by {d}");
                let got = cache.get(&names::resid_post(1)).unwrap().get(i).unwrap().narrow(0, off, r.len()).unwrap();
                let d = max_abs_diff(&got, &singles[i].1);
                assert!(d < 1e-4, "{arch} {padding:?} row {i}: resid_post differs by {d}");
                // no real query attends to a padding key
                let pat = cache.get(&names::pattern(0)).unwrap().get(i).unwrap();
                for (k, &m) in mask[i].iter().enumerate() {
                    if m == 0 {
                        let col = pat.i((.., off.max(1)..off + r.len(), k)).unwrap();
                        if col.elem_count() > 0 {
                            let mx = col.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                            assert_eq!(mx, 0.0, "{arch}: real query attends to padding key {k}");
                        }
                    }
                }
            }
            let finite = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite());
            assert!(finite, "{arch} {padding:?}: non-finite logits at padding positions");
        }
    }
}

#[test]
fn cache_holds_only_what_the_filter_asks_for() {
    let model = load_model(fixture("llama").to_str().unwrap()).unwrap();
    let batch = Batch::from_ids(&[1, 2, 3, 4]).unwrap();
    let (_, cache) = model.run_with_cache(&batch, "blocks.1.attn.hook_pattern").unwrap();
    assert_eq!(cache.names().collect::<Vec<_>>(), vec!["blocks.1.attn.hook_pattern"]);
    assert_eq!(cache.get("blocks.1.attn.hook_pattern").unwrap().dims(), &[1, 4, 4, 4]);
    let (_, all) = model.run_with_cache(&batch, HookFilter::all()).unwrap();
    assert_eq!(all.len(), model.hook_names().len());
    // documented shapes
    assert_eq!(all.get("blocks.0.attn.hook_q").unwrap().dims(), &[1, 4, 4, 16]);
    assert_eq!(all.get("blocks.0.attn.hook_k").unwrap().dims(), &[1, 4, 2, 16]);
    assert_eq!(all.get("blocks.0.attn.hook_z").unwrap().dims(), &[1, 4, 4, 16]);
    assert_eq!(all.get("blocks.0.mlp.hook_post").unwrap().dims(), &[1, 4, 160]);
    let stacked = all.stack("*hook_resid_post").unwrap();
    assert_eq!(stacked.dims(), &[2, 1, 4, 64]);
    // stopping early gives the same early activations
    let early = model.run_with_cache_until(&batch, "blocks.0.hook_resid_post", 0).unwrap();
    let d = max_abs_diff(early.get("blocks.0.hook_resid_post").unwrap(), all.get("blocks.0.hook_resid_post").unwrap());
    assert_eq!(d, 0.0);
}

#[test]
fn unknown_hook_names_are_errors_naming_the_hook() {
    let model = load_model(fixture("gpt2").to_str().unwrap()).unwrap();
    let batch = Batch::from_ids(&[1, 2, 3]).unwrap();
    for bad in ["blocks.0.hook_resid_psot", "blocks.9.hook_resid_post", "blocks.0.attn.hook_rot_q", "blocks.0.hook_resid_mid_"] {
        let err = model.run_with_cache(&batch, bad).unwrap_err();
        match err.downcast_ref::<QiError>() {
            Some(QiError::UnknownHook { name, .. }) => assert_eq!(name, bad),
            _ => panic!("expected UnknownHook for {bad}, got {err:#}"),
        }
    }
    let mut hooks = Hooks::new();
    hooks.add("hook_nonsense", |_, _| Ok(None));
    let e = format!("{:#}", model.run_with_hooks(&batch, &mut hooks).unwrap_err());
    assert!(e.contains("hook_nonsense"), "{e}");
}

#[test]
fn out_of_vocabulary_tokens_are_named() {
    let model = load_model(fixture("neox").to_str().unwrap()).unwrap();
    let err = model.forward(&Batch::from_rows(&[vec![1, 2], vec![3, 320]], Padding::Right, 0).unwrap()).unwrap_err();
    match err.downcast_ref::<QiError>() {
        Some(QiError::TokenOutOfVocab { id: 320, batch: 1, pos: 1, vocab: 320 }) => {}
        _ => panic!("unexpected error {err:#}"),
    }
    let long: Vec<u32> = vec![1; 65];
    let err = model.forward(&Batch::from_ids(&long).unwrap()).unwrap_err().to_string();
    assert!(err.contains("context"), "{err}");
}

#[test]
fn zero_ablating_a_head_zeroes_its_z_and_changes_the_output() {
    let model = load_model(fixture("llama").to_str().unwrap()).unwrap();
    let batch = Batch::from_ids(&[5, 6, 7, 8, 9]).unwrap();
    let clean = model.forward(&batch).unwrap();
    let mut hooks = Hooks::new();
    hooks.add(names::z(1), interventions::zero_heads(vec![2]));
    let (abl, cache) = model.run_with_hooks_and_cache(&batch, &mut hooks, names::z(1)).unwrap();
    let z = cache.get(&names::z(1)).unwrap();
    let head2 = z.i((.., .., 2, ..)).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    let head1 = z.i((.., .., 1, ..)).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(head2, 0.0);
    assert!(head1 > 0.0);
    assert!(max_abs_diff(&clean, &abl) > 1e-3);
    // bad head index
    let mut hooks = Hooks::new();
    hooks.add(names::z(0), interventions::zero_heads(vec![4]));
    let err = model.run_with_hooks(&batch, &mut hooks).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("head"), "{err}");
}

#[test]
fn mean_ablation_and_patching_behave() {
    let model = load_model(fixture("gpt2").to_str().unwrap()).unwrap();
    let a = Batch::from_ids(&[10, 11, 12, 13]).unwrap();
    let b = Batch::from_ids(&[20, 21, 22, 23]).unwrap();
    let (logits_b, cache_b) = model.run_with_cache(&b, "*").unwrap();
    // Patching every layer's resid_post of b into a run on a reproduces b's logits.
    let mut hooks = Hooks::new();
    hooks.add(names::resid_post(1), interventions::patch(cache_b.get(&names::resid_post(1)).unwrap().clone()));
    let patched = model.run_with_hooks(&a, &mut hooks).unwrap();
    assert!(max_abs_diff(&patched, &logits_b) < 1e-5);
    // Patching all heads' z equals patching z entirely.
    let zb = cache_b.get(&names::z(0)).unwrap().clone();
    let mut h1 = Hooks::new();
    h1.add(names::z(0), interventions::patch_heads(vec![0, 1, 2, 3], zb.clone()));
    let mut h2 = Hooks::new();
    h2.add(names::z(0), interventions::patch(zb));
    assert!(max_abs_diff(&model.run_with_hooks(&a, &mut h1).unwrap(), &model.run_with_hooks(&a, &mut h2).unwrap()) < 1e-6);
    // Mean ablation writes the mean into the chosen head only.
    let (_, ca) = model.run_with_cache(&a, names::z(0)).unwrap();
    let mean = interventions::masked_mean(ca.get(&names::z(0)).unwrap(), ca.mask()).unwrap();
    let mut h3 = Hooks::new();
    h3.add(names::z(0), interventions::mean_heads(vec![3], mean.clone()));
    let (_, c3) = model.run_with_hooks_and_cache(&a, &mut h3, names::z(0)).unwrap();
    let z3 = c3.get(&names::z(0)).unwrap();
    let want = mean.i((0, 0, 3, ..)).unwrap().unsqueeze(0).unwrap().repeat((4, 1)).unwrap();
    assert!(max_abs_diff(&z3.i((0, .., 3, ..)).unwrap(), &want) < 1e-6);
    assert_eq!(max_abs_diff(&z3.i((0, .., 0, ..)).unwrap(), &ca.get(&names::z(0)).unwrap().i((0, .., 0, ..)).unwrap()), 0.0);
    // Adding a vector to resid_pre shifts resid_pre by exactly that vector.
    let v = Tensor::ones(64, DType::F32, &candle_core::Device::Cpu).unwrap();
    let mut h4 = Hooks::new();
    h4.add(names::resid_pre(1), interventions::add_vector(v, 0.5));
    let (_, c4) = model.run_with_hooks_and_cache(&a, &mut h4, names::resid_pre(1)).unwrap();
    let (_, c0) = model.run_with_cache(&a, names::resid_pre(1)).unwrap();
    let diff = (c4.get(&names::resid_pre(1)).unwrap() - c0.get(&names::resid_pre(1)).unwrap()).unwrap();
    let mn = diff.flatten_all().unwrap().min(0).unwrap().to_scalar::<f32>().unwrap();
    let mx = diff.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!((mn - 0.5).abs() < 1e-5 && (mx - 0.5).abs() < 1e-5);
}

/// d(logit of a target)/d(resid_post of layer 0) from candle autograd matches a central finite
/// difference along a random direction, for every architecture (covers softmax, norms, rotary).
#[test]
fn gradients_at_hooks_match_finite_differences() {
    for arch in ["gpt2", "neox", "llama"] {
        let model = load_model(fixture(arch).to_str().unwrap()).unwrap();
        let batch = Batch::from_ids(&[3, 14, 15, 92, 65]).unwrap();
        let metric = |logits: &Tensor| -> anyhow::Result<Tensor> { Ok(logits.i((0, 4, 17))?) };
        let hook = names::resid_post(0);
        let (value, grads) = model.gradients_at(&batch, &[hook.as_str()], metric).unwrap();
        let (act, grad) = &grads[&hook];
        assert_eq!(act.dims(), &[1, 5, 64]);
        let dir = Tensor::randn(0f32, 1f32, act.dims(), &candle_core::Device::Cpu).unwrap();
        let analytic = (grad * &dir).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let eps = 1e-2;
        let eval = |sign: f64| -> f64 {
            let mut hooks = Hooks::new();
            let shifted = (act + (&dir * (sign * eps)).unwrap()).unwrap();
            hooks.add(hook.as_str(), interventions::patch(shifted));
            model.run_with_hooks(&batch, &mut hooks).unwrap().i((0, 4, 17)).unwrap().to_scalar::<f32>().unwrap() as f64
        };
        let numeric = (eval(1.0) - eval(-1.0)) / (2.0 * eps);
        let base = model.forward(&batch).unwrap().i((0, 4, 17)).unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((base - value).abs() < 1e-5);
        assert!((analytic - numeric).abs() < 2e-2 * numeric.abs().max(1.0), "{arch}: autograd {analytic} vs finite difference {numeric}");
    }
}

/// Gradients at several hook points at once are each the full derivative: the gradient at layer 0's
/// residual stream still flows through layer 1 when layer 1 is hooked too (a hook that replaced
/// the activation by a detached variable would give zero there).
#[test]
fn gradients_at_several_hooks_equal_each_alone() {
    let model = load_model(fixture("llama").to_str().unwrap()).unwrap();
    let batch = Batch::from_ids(&[3, 14, 15, 92, 65]).unwrap();
    let metric = |logits: &Tensor| -> anyhow::Result<Tensor> { Ok(logits.i((0, 4, 17))?) };
    let (h0, h1, a1) = (names::resid_post(0), names::resid_post(1), names::attn_out(1));
    let (_, both) = model.gradients_at(&batch, &[h0.as_str(), a1.as_str(), h1.as_str()], metric).unwrap();
    for h in [&h0, &a1, &h1] {
        let (_, alone) = model.gradients_at(&batch, &[h.as_str()], metric).unwrap();
        let (a, g) = (&alone[h.as_str()], &both[h.as_str()]);
        // (with an earlier hook, later blocks run candle's composed ops instead of the fused kernels)
        assert!(max_abs_diff(&a.0, &g.0) < 1e-4, "{h}: activation");
        let scale = a.1.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(scale > 0.0 && max_abs_diff(&a.1, &g.1) <= 1e-5 * scale, "{h}: gradient with other hooks differs");
    }
}

/// Gradient entry points run on a copy whose tensors have new ids (notebook cells each carry
/// their own copy of candle's id counter): same storage, same numbers, different identities.
#[test]
fn fresh_tensor_ids_share_storage_and_give_the_same_logits() {
    let model = load_model(fixture("llama").to_str().unwrap()).unwrap();
    let fresh = model.with_fresh_tensor_ids().unwrap();
    assert_ne!(fresh.embed.id(), model.embed.id());
    assert_ne!(fresh.unembed.weight_t().id(), model.unembed.weight_t().id());
    assert_ne!(fresh.blocks[1].ln2.weight.id(), model.blocks[1].ln2.weight.id());
    for (a, b) in fresh.blocks.iter().zip(&model.blocks) {
        for (la, lb) in a.linears().iter().zip(b.linears()) {
            assert_ne!(la.weight_t().id(), lb.weight_t().id(), "{}", lb.name);
        }
    }
    let batch = Batch::from_ids(&[3, 14, 15, 92, 65]).unwrap();
    let d = max_abs_diff(&fresh.forward(&batch).unwrap(), &model.forward(&batch).unwrap());
    assert_eq!(d, 0.0);
}

/// Gemma 3's autograd path (composed ops: (1 + w) norms, QK-norm, per-layer sliding-window masks,
/// two rotary tables) gives the fused forward's value and finite-difference gradients on a row
/// longer than the window; fresh tensor ids cover its extra norms and the local rotary table.
#[test]
fn gemma3_gradients_match_finite_differences_past_the_window() {
    let model = load_model(fixture("gemma3").to_str().unwrap()).unwrap();
    let fresh = model.with_fresh_tensor_ids().unwrap();
    for (a, b) in fresh.blocks.iter().zip(&model.blocks) {
        assert_eq!(a.norms().len(), 6);
        for (na, nb) in a.norms().iter().zip(b.norms()) {
            assert_ne!(na.weight.id(), nb.weight.id(), "{}", nb.name);
        }
    }
    let ids: Vec<u32> = (0..14).map(|i| (i * 37 + 5) % 320).collect();
    let batch = Batch::from_ids(&ids).unwrap();
    assert_eq!(max_abs_diff(&fresh.forward(&batch).unwrap(), &model.forward(&batch).unwrap()), 0.0);
    let metric = |logits: &Tensor| -> anyhow::Result<Tensor> { Ok(logits.i((0, 13, 17))?) };
    let hook = names::resid_post(0);
    let (value, grads) = model.gradients_at(&batch, &[hook.as_str()], metric).unwrap();
    let (act, grad) = &grads[&hook];
    let base = model.forward(&batch).unwrap().i((0, 13, 17)).unwrap().to_scalar::<f32>().unwrap() as f64;
    assert!((base - value).abs() < 1e-5, "autograd path {value} vs fused {base}");
    let dir = Tensor::randn(0f32, 1f32, act.dims(), &candle_core::Device::Cpu).unwrap();
    let analytic = (grad * &dir).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    let eps = 1e-2;
    let eval = |sign: f64| -> f64 {
        let mut hooks = Hooks::new();
        hooks.add(hook.as_str(), interventions::patch((act + (&dir * (sign * eps)).unwrap()).unwrap()));
        model.run_with_hooks(&batch, &mut hooks).unwrap().i((0, 13, 17)).unwrap().to_scalar::<f32>().unwrap() as f64
    };
    let numeric = (eval(1.0) - eval(-1.0)) / (2.0 * eps);
    assert!((analytic - numeric).abs() < 2e-2 * numeric.abs().max(1.0), "autograd {analytic} vs finite difference {numeric}");
}
