//! Helpers for the crate's unit tests.

/// A fresh, empty scratch folder for one test: `name` and the process id keep concurrent tests
/// and test runs apart; whatever an earlier run left there is removed first.
pub(crate) fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("qi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The tiny Llama fixture (`data/fixtures/llama`) and its RTN-4 twin, as analyses' tests compare
/// them.
pub(crate) fn llama_and_rtn4_twin() -> (crate::HookedTransformer, Vec<(crate::quant::QuantSpec, crate::HookedTransformer)>) {
    let m = crate::load_model(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/fixtures/llama")).unwrap();
    let spec: crate::quant::QuantSpec = "rtn:bits=4".parse().unwrap();
    let twin = crate::quantize::quantize_model(&m, &spec, &Default::default()).unwrap().0;
    (m, vec![(spec, twin)])
}
