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
        ("gemma3.feed_forward_length", gguf_file::Value::U32(96), "model.layers.0.mlp.gate_proj.weight"),
        ("gemma3.attention.key_length", gguf_file::Value::U32(16), "model.layers.0.self_attn.q_proj.weight"),
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
        assert!(e.contains("bad.gguf") && e.contains(tensor) && e.contains("config implies"), "{key}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
