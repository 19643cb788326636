//! Shared helpers for integration tests (included with `mod common;`).
#![allow(dead_code)]
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures").join(name)
}

pub fn load_reference(path: &std::path::Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

pub fn ids_of(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap().into_iter().map(|r| r.into_iter().map(|x| x as u32).collect()).collect()
}

/// A fresh temporary directory under the target dir (removed by the caller if it cares).
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qi-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// SAE training small enough for the fixtures (seconds).
pub fn tiny_sae() -> qi::sae::SaeTraining {
    qi::sae::SaeTraining { expansion: 2, k: 8, train_steps: 30, train_batch: 64, train_windows: 8, ..Default::default() }
}
