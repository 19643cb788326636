//! The Hub path, exercised offline: a model id resolves through hf-hub's cache layout
//! (`$HF_HOME/hub/models--ORG--NAME/{refs/main, snapshots/REV/…}`) with HF_HUB_OFFLINE=1.
//! (Its own test binary, because it sets process-wide environment variables.)
mod common;
use common::*;
use qi::{load_model, Batch};

#[test]
fn hub_ids_load_from_the_local_cache_in_offline_mode() {
    let home = temp_dir("hf-home");
    let repo = home.join("hub/models--qi-test--tiny-gpt2");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    let snap = repo.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snap).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("gpt2").join(f), snap.join(f)).unwrap();
    }
    // SAFETY: this test binary has a single test; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("HF_HOME", &home);
        std::env::set_var("HF_HUB_OFFLINE", "1");
    }
    let from_hub = load_model("qi-test/tiny-gpt2").unwrap();
    let local = load_model(fixture("gpt2").to_str().unwrap()).unwrap();
    assert_eq!(from_hub.source.source, "qi-test/tiny-gpt2");
    let b = Batch::from_ids(&[1, 2, 3]).unwrap();
    assert_eq!(max_abs_diff(&from_hub.forward(&b).unwrap(), &local.forward(&b).unwrap()), 0.0);
    let e = format!("{:#}", load_model("qi-test/not-cached").unwrap_err());
    assert!(e.contains("qi-test/not-cached") && e.contains("HF_HUB_OFFLINE"), "{e}");
}
