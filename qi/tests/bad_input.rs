//! Bad input gets an error naming the file, tensor or parameter — never a panic.
mod common;
use candle_core::{Device, Tensor};
use common::*;
use qi::{load_model, QiError};
use std::path::Path;

fn copy_dir(src: &Path, dst: &Path) {
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

fn err_of(src: &Path) -> anyhow::Error {
    match load_model(src.to_str().unwrap()) {
        Ok(_) => panic!("{} loaded but should not", src.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_files_are_named() {
    let e = format!("{:#}", err_of(&fixture("does-not-exist.gguf")));
    assert!(e.contains("does-not-exist.gguf") && e.contains("no such file"), "{e}");
    let dir = temp_dir("noconfig");
    std::fs::copy(fixture("gpt2/model.safetensors"), dir.join("model.safetensors")).unwrap();
    let e = format!("{:#}", err_of(&dir));
    assert!(e.contains("config.json"), "{e}");
    let dir = temp_dir("noweights");
    std::fs::copy(fixture("gpt2/config.json"), dir.join("config.json")).unwrap();
    let e = format!("{:#}", err_of(&dir));
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn truncated_or_corrupt_safetensors_is_named() {
    let dir = temp_dir("trunc-st");
    copy_dir(&fixture("gpt2"), &dir);
    let f = dir.join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = format!("{:#}", err_of(&dir));
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors"), "{e}");
    std::fs::write(&f, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let e = format!("{:#}", err_of(&dir));
    assert!(e.contains("model.safetensors"), "{e}");
    // data past what the header describes, and a header length beyond the file
    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(&f, &longer).unwrap();
    let e = format!("{:#}", err_of(&dir));
    assert!(e.contains("model.safetensors") && e.contains(&format!("has {}", bytes.len() - header_end(&bytes) + 1)), "{e}");
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    std::fs::write(&f, &huge).unwrap();
    let e = format!("{:#}", err_of(&dir));
    assert!(e.contains("model.safetensors") && e.contains(&format!("header length {}", bytes.len())), "{e}");
}

/// Where a safetensors file's data section starts.
fn header_end(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

#[test]
fn a_sharded_checkpoint_loads_as_the_single_file_does() {
    // the fixture's tensors split over two shards listed in model.safetensors.index.json
    let dir = temp_dir("sharded");
    copy_dir(&fixture("gpt2"), &dir);
    let all = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (part, file) in [(a, "model-00001-of-00002.safetensors"), (b, "model-00002-of-00002.safetensors")] {
        let shard: std::collections::HashMap<String, Tensor> = part.iter().map(|n| ((*n).clone(), all[*n].clone())).collect();
        candle_core::safetensors::save(&shard, dir.join(file)).unwrap();
        for n in part {
            map.insert((*n).clone(), file.into());
        }
    }
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::json!({ "weight_map": map }).to_string()).unwrap();
    let single = load_model(fixture("gpt2").to_str().unwrap()).unwrap();
    let sharded = load_model(dir.to_str().unwrap()).unwrap();
    let ids = qi::batch::Batch::from_ids(&[1, 5, 9, 2]).unwrap();
    let (x, y) = (single.forward(&ids).unwrap(), sharded.forward(&ids).unwrap());
    let d: f32 = (x - y).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
    assert_eq!(d, 0.0);
    assert_eq!(sharded.source.tensor_types.len(), all.len());
}

#[test]
fn truncated_or_corrupt_gguf_is_named() {
    let dir = temp_dir("trunc-gguf");
    let f = dir.join("m.gguf");
    let bytes = std::fs::read(fixture("llama/model.gguf")).unwrap();
    for cut in [bytes.len() - 1000, 2000, 10] {
        std::fs::write(&f, &bytes[..cut]).unwrap();
        let e = format!("{:#}", err_of(&f));
        assert!(e.contains("m.gguf"), "cut at {cut}: {e}");
    }
    std::fs::write(&f, b"GGML this is not gguf at all").unwrap();
    let e = format!("{:#}", err_of(&f));
    assert!(e.contains("m.gguf") && e.contains("not a valid GGUF"), "{e}");
}

#[test]
fn config_that_does_not_match_the_tensors_names_the_tensor() {
    let dir = temp_dir("shape");
    copy_dir(&fixture("llama"), &dir);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap().replace("\"intermediate_size\": 160", "\"intermediate_size\": 161");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let e = err_of(&dir);
    match e.downcast_ref::<QiError>() {
        Some(QiError::ShapeMismatch { tensor, found, expected, .. }) => {
            assert_eq!(tensor, "model.layers.0.mlp.gate_proj.weight");
            assert_eq!(found, &vec![160, 64]);
            assert_eq!(expected, &vec![161, 64]);
        }
        _ => panic!("expected a shape mismatch, got {e:#}"),
    }
}

#[test]
fn missing_tensor_is_named() {
    let dir = temp_dir("missing");
    copy_dir(&fixture("neox"), &dir);
    let mut tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    tensors.remove("gpt_neox.layers.1.mlp.dense_4h_to_h.bias");
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let e = err_of(&dir);
    match e.downcast_ref::<QiError>() {
        Some(QiError::MissingTensor { tensor, file }) => {
            assert_eq!(tensor, "gpt_neox.layers.1.mlp.dense_4h_to_h.bias");
            assert!(file.ends_with("model.safetensors"));
        }
        _ => panic!("expected a missing tensor, got {e:#}"),
    }
}

#[test]
fn non_finite_weights_are_named() {
    let dir = temp_dir("nan");
    copy_dir(&fixture("gpt2"), &dir);
    let mut tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let name = tensors.keys().find(|k| k.ends_with("h.1.mlp.c_fc.weight")).unwrap().clone();
    let t = &tensors[&name];
    let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[5] = f32::NAN;
    tensors.insert(name.clone(), Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let e = format!("{:#}", err_of(&dir));
    assert!(e.contains(&name) && e.contains("non-finite"), "{e}");
}

#[test]
fn unsupported_architecture_and_bad_config_are_named() {
    let dir = temp_dir("arch");
    copy_dir(&fixture("gpt2"), &dir);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap().replace("\"model_type\": \"gpt2\"", "\"model_type\": \"bert\"");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let e = err_of(&dir);
    match e.downcast_ref::<QiError>() {
        Some(QiError::UnsupportedArchitecture { arch, supported }) => {
            assert_eq!(arch, "bert");
            assert!(supported.contains("llama"));
        }
        _ => panic!("expected unsupported architecture, got {e:#}"),
    }
    std::fs::write(dir.join("config.json"), "{ \"model_type\": \"gpt2\", \"n_embd\": \"wide\" }").unwrap();
    let e = format!("{:#}", err_of(&dir));
    assert!(e.contains("config.json") && e.contains("n_embd"), "{e}");
    std::fs::write(dir.join("config.json"), "{ broken").unwrap();
    let e = format!("{:#}", err_of(&dir));
    assert!(e.contains("config.json") && e.contains("not valid JSON"), "{e}");
}

#[test]
fn gemma3_gguf_whose_metadata_disagrees_with_its_tensors_is_named() {
    use candle_core::quantized::{gguf_file, QTensor};
    let src = fixture("gemma3").join("model.gguf");
    let mut f = std::fs::File::open(&src).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let tensors: Vec<(String, QTensor)> = content.tensor_infos.keys().map(|n| (n.clone(), content.tensor(&mut f, n, &Device::Cpu).unwrap())).collect();
    let dir = temp_dir("gemma3-bad-gguf");
    for (key, value, tensor) in [
        ("gemma3.feed_forward_length", gguf_file::Value::U32(96), "blk.0.ffn_up.weight"),
        ("gemma3.attention.key_length", gguf_file::Value::U32(16), "blk.0.attn_q.weight"),
    ] {
        let mut md = content.metadata.clone();
        md.insert(key.to_string(), value);
        let out = dir.join("bad.gguf");
        let mut w = std::fs::File::create(&out).unwrap();
        let md_refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut w, &md_refs, &t_refs).unwrap();
        drop(w);
        let e = format!("{:#}", err_of(&out));
        assert!(e.contains("bad.gguf") && e.contains(&format!("'{tensor}'")) && e.contains(&format!("'{key}'")) && e.contains("metadata implies"), "{key}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
/// The fixture GGUF `src` rewritten to `dst` with metadata `key` set to `value` (tensors kept).
fn patched_gguf(src: &Path, dst: &Path, key: &str, value: candle_core::quantized::gguf_file::Value) {
    use candle_core::quantized::gguf_file;
    let mut f = std::fs::File::open(src).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut md = content.metadata.clone();
    assert!(md.contains_key(key), "{key} not in {}", src.display());
    md.insert(key.to_string(), value);
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort_by_key(|n| content.tensor_infos[*n].offset);
    let tensors: Vec<(String, candle_core::quantized::QTensor)> = names.iter().map(|n| (n.to_string(), content.tensor(&mut f, n, &Device::Cpu).unwrap())).collect();
    let md_refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &candle_core::quantized::QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = std::fs::File::create(dst).unwrap();
    gguf_file::write(&mut out, &md_refs, &t_refs).unwrap();
}

#[test]
fn unknown_gguf_architecture_lists_the_supported_ones() {
    use candle_core::quantized::gguf_file::Value;
    let dir = temp_dir("gguf-arch");
    let f = dir.join("m.gguf");
    patched_gguf(&fixture("llama/model.gguf"), &f, "general.architecture", Value::String("mamba".into()));
    let e = err_of(&f);
    let msg = format!("{e:#}");
    assert!(msg.contains("m.gguf") && msg.contains("general.architecture"), "{msg}");
    match e.downcast_ref::<QiError>() {
        Some(QiError::UnsupportedArchitecture { arch, supported }) => {
            assert_eq!(arch, "mamba");
            for a in ["gpt2", "gpt_neox", "llama", "qwen2"] {
                assert!(supported.contains(a), "{supported}");
            }
        }
        _ => panic!("expected unsupported architecture, got {msg}"),
    }
}

#[test]
fn gguf_metadata_that_disagrees_with_the_tensors_names_key_and_tensor() {
    use candle_core::quantized::gguf_file::Value;
    let dir = temp_dir("gguf-meta");
    let f = dir.join("m.gguf");
    // (fixture, key, value, what the message must name). The llama fixture has 4 heads / 2 KV
    // heads of size 16 (`llama.rope.dimension_count`), d_model 64, d_mlp 160, 2 blocks.
    let cases = [
        ("llama", "llama.attention.head_count", Value::U32(8), ["'llama.attention.head_count' = 8", "'blk.0.attn_q.weight'"]),
        ("llama", "llama.attention.head_count_kv", Value::U32(1), ["'llama.attention.head_count_kv' = 1", "'blk.0.attn_k.weight'"]),
        ("llama", "llama.feed_forward_length", Value::U32(161), ["'llama.feed_forward_length' = 161", "'blk.0.ffn_up.weight'"]),
        ("llama", "llama.block_count", Value::U32(1), ["'llama.block_count'", "'blk.1."]),
        ("llama", "llama.embedding_length", Value::U32(96), ["'llama.embedding_length' = 96", "'blk.0.attn_q.weight'"]),
        // Qwen2 GGUFs carry no head-size key: it is d_model / head_count (64 / 2 = 32 here), so
        // fewer heads show up as too few rows in k (2 KV heads × 32 ≠ 32).
        ("qwen2", "qwen2.attention.head_count_kv", Value::U32(1), ["'qwen2.attention.head_count_kv' = 1", "'blk.0.attn_k.weight'"]),
        ("qwen2", "qwen2.attention.head_count", Value::U32(2), ["'qwen2.attention.head_count' 2", "'blk.0.attn_k.weight'"]),
    ];
    for (fx, key, value, wants) in cases {
        patched_gguf(&fixture(&format!("{fx}/model.gguf")), &f, key, value);
        let e = format!("{:#}", err_of(&f));
        assert!(e.contains("m.gguf"), "{key}: {e}");
        for w in wants {
            assert!(e.contains(w), "{key}: expected {w:?} in: {e}");
        }
    }
}

#[test]
fn gguf_truncated_in_the_data_or_the_header_names_the_file() {
    let dir = temp_dir("gguf-cut");
    let f = dir.join("m.gguf");
    let bytes = std::fs::read(fixture("llama/model.gguf")).unwrap();
    // output.weight (320 × 64 f32) is the last tensor in the file
    std::fs::write(&f, &bytes[..bytes.len() - 1000]).unwrap();
    let e = format!("{:#}", err_of(&f));
    assert!(e.contains("m.gguf") && e.contains("truncated") && e.contains("'output.weight'"), "{e}");
    // in the tokenizer metadata
    std::fs::write(&f, &bytes[..2000]).unwrap();
    let e = format!("{:#}", err_of(&f));
    assert!(e.contains("m.gguf") && e.contains("not a valid GGUF file (truncated or corrupt header"), "{e}");
    // the qwen2 fixture cut just after its header: every tensor is missing
    let bytes = std::fs::read(fixture("qwen2/model.gguf")).unwrap();
    let header = {
        let mut r = std::io::Cursor::new(&bytes);
        candle_core::quantized::gguf_file::Content::read(&mut r).unwrap().tensor_data_offset as usize
    };
    std::fs::write(&f, &bytes[..header + 10]).unwrap();
    let e = format!("{:#}", err_of(&f));
    assert!(e.contains("m.gguf") && e.contains("truncated") && e.contains("token_embd.weight"), "{e}");
}

#[test]
fn a_twin_that_is_not_the_references_shape_or_vocabulary_is_refused_naming_what_differs() {
    let fixture = |name: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures").join(name);
    let reference = qi::load_model(fixture("llama/model.gguf").to_str().unwrap()).unwrap();
    let err = |twin: &qi::HookedTransformer, case: &str| -> String {
        let twins = vec![("rtn:bits=4".parse::<qi::quant::QuantSpec>().unwrap(), twin.clone())];
        format!("{:#}", qi::analysis::Comparison::new("m", &reference, &twins).err().unwrap_or_else(|| panic!("{case}: accepted")))
    };
    // the same model is comparable
    let same = vec![("rtn:bits=4".parse::<qi::quant::QuantSpec>().unwrap(), reference.clone())];
    assert!(qi::analysis::Comparison::new("m", &reference, &same).is_ok());
    // another vocabulary size
    let mut t = reference.clone();
    t.cfg.d_vocab += 1;
    let e = err(&t, "d_vocab");
    assert!(e.contains("d_vocab is") && e.contains("rtn:bits=4"), "{e}");
    // one projection of another shape, everything else equal
    let mut t = reference.clone();
    {
        let lin = t.blocks[1].linears_mut().remove(0);
        let (out, inp) = (lin.out_features(), lin.in_features());
        *lin = qi::models::Linear::new(lin.name.clone(), candle_core::Tensor::zeros((out + 2, inp), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(), None, false).unwrap();
    }
    let e = err(&t, "shape");
    assert!(e.contains("blocks.1") || e.contains("layers.1"), "names the projection: {e}");
    assert!(e.contains(&format!("{}", reference.blocks[1].linears()[0].out_features() + 2)), "{e}");
    // same shapes, another tokenizer (a word-level vocabulary): the ids of a probe text differ
    let dir = std::env::temp_dir().join(format!("qi-bad-input-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tok = dir.join("tokenizer.json");
    std::fs::write(&tok, r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0,"The":1},"unk_token":"[UNK]"}}"#).unwrap();
    assert!(reference.tokenizer.is_some(), "the fixture GGUF carries a tokenizer");
    let mut t = reference.clone();
    t.tokenizer = Some(qi::Tokenizer::from_file(&tok).unwrap());
    let e = err(&t, "tokenizer");
    assert!(e.contains("vocabularies differ") && e.contains("rtn:bits=4"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
