//! Mutated inputs to every parser qi reads from users or disk (GGUF, safetensors with its config,
//! quantization specs, study files): each must give `Ok` or a clean error, never a panic. Seeded
//! and bounded (a few seconds), so CI runs it every time; a panic found here becomes a named case
//! in the `regressions` list of the test that found it.
mod common;
use common::{fixture, temp_dir};
use qi::rng::Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Runs `f`, failing the test with `what` when it panics.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(prev);
    if let Err(e) = r {
        let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
        panic!("{what}: panicked: {msg}");
    }
}

/// One mutation of `bytes`: flip bytes, overwrite a little-endian integer with an extreme value,
/// truncate, or duplicate a slice; mostly within the first `hot` bytes (headers and metadata).
fn mutate(bytes: &[u8], hot: usize, rng: &mut Rng) -> (Vec<u8>, String) {
    let mut b = bytes.to_vec();
    let n = b.len();
    let pos = |rng: &mut Rng| if rng.below(4) > 0 { rng.below(hot.min(n) as u64) as usize } else { rng.below(n as u64) as usize };
    match rng.below(5) {
        0 => {
            let k = 1 + rng.below(4);
            for _ in 0..k {
                let p = pos(rng);
                b[p] ^= 1 << rng.below(8);
            }
            (b, format!("{k} flipped bits"))
        }
        1 => {
            let p = pos(rng).min(n.saturating_sub(8));
            let v: u64 = [0, 1, u32::MAX as u64, u64::MAX, 1 << 40, 0x7fff_ffff_ffff_ffff][rng.below(6) as usize];
            b[p..p + 8].copy_from_slice(&v.to_le_bytes());
            (b, format!("u64 {v} at {p}"))
        }
        2 => {
            let p = pos(rng);
            b.truncate(p);
            (b, format!("truncated to {p}"))
        }
        3 => {
            let p = pos(rng).min(n.saturating_sub(4));
            b[p..p + 4].copy_from_slice(&(rng.next_u64() as u32).to_le_bytes());
            (b, format!("u32 noise at {p}"))
        }
        _ => {
            let (a, l) = (pos(rng), 1 + rng.below(64) as usize);
            let piece: Vec<u8> = b[a..(a + l).min(n)].to_vec();
            let at = pos(rng);
            b.splice(at..at, piece);
            (b, format!("{l} bytes from {a} inserted at {at}"))
        }
    }
}

#[test]
fn mutated_gguf_files_give_errors_not_panics() {
    let dir = temp_dir("fuzz-gguf");
    let original = std::fs::read(fixture("llama").join("model.gguf")).unwrap();
    let mut rng = Rng::new(20261205);
    let path = dir.join("m.gguf");
    let (mut ok, mut err) = (0, 0);
    // mutation 287 of this seed (u32 noise in a tensor's dimensions) found an overflow in the
    // tensor size computation; the stream is deterministic, so it stays a regression case
    for i in 0..1000 {
        let (b, what) = mutate(&original, 8192, &mut rng);
        std::fs::write(&path, &b).unwrap();
        no_panic(&format!("GGUF mutation {i} ({what})"), || match qi::load_model(path.to_str().unwrap()) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        });
    }
    // most mutations of the header must be refused, not loaded as something else
    assert!(err > 500, "only {err} of 1000 mutated GGUF files were refused ({ok} loaded)");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mutated_safetensors_and_configs_give_errors_not_panics() {
    let dir = temp_dir("fuzz-st");
    let src = fixture("llama");
    let weights = std::fs::read(src.join("model.safetensors")).unwrap();
    let config = std::fs::read(src.join("config.json")).unwrap();
    let header = 8 + u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let mut rng = Rng::new(7);
    let mut err = 0;
    for i in 0..200 {
        let (w, c, what) = if i % 4 == 3 {
            let (c, what) = mutate(&config, config.len(), &mut rng);
            (weights.clone(), c, format!("config.json: {what}"))
        } else {
            let (w, what) = mutate(&weights, header, &mut rng);
            (w, config.clone(), format!("model.safetensors: {what}"))
        };
        std::fs::write(dir.join("model.safetensors"), &w).unwrap();
        std::fs::write(dir.join("config.json"), &c).unwrap();
        no_panic(&format!("safetensors mutation {i} ({what})"), || {
            if qi::load_model(dir.to_str().unwrap()).is_err() {
                err += 1
            }
        });
    }
    assert!(err > 60, "only {err} of 200 mutated HF directories were refused");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mutated_specs_and_study_files_give_errors_not_panics() {
    let specs = ["rtn:bits=4,group=64,sym=true", "gptq:bits=4,group=128,act_order=true,samples=64,seqlen=512", "awq:bits=4,group=64", "nf4:block=64,double_quant=true", "q4_k:fallback=true", "int8:threshold=6", "prune:sparsity=0.5", "w8a8"];
    let alphabet: Vec<char> = ":=,;.-_ 0123456789abcdefghijklmnopqrstuvwxyzé\u{0}\u{ffff}".chars().collect();
    let mut rng = Rng::new(3);
    let regressions = ["rtn:bits=", "rtn:bits=99999999999999999999", "gptq:group=0", "nf4:block=0", "prune:sparsity=nan", "q4_0:", ":", "", "rtn:bits=4,bits=4"];
    for s in regressions {
        no_panic(&format!("spec {s:?}"), || s.parse::<qi::quant::QuantSpec>().is_err());
    }
    for _ in 0..3000 {
        let mut s: Vec<char> = specs[rng.below(specs.len() as u64) as usize].chars().collect();
        for _ in 0..1 + rng.below(3) {
            let p = rng.below(s.len() as u64 + 1) as usize;
            match rng.below(3) {
                0 if p < s.len() => {
                    s.remove(p);
                }
                1 if p < s.len() => s[p] = alphabet[rng.below(alphabet.len() as u64) as usize],
                _ => s.insert(p, alphabet[rng.below(alphabet.len() as u64) as usize]),
            }
        }
        let s: String = s.into_iter().collect();
        no_panic(&format!("spec {s:?}"), || {
            let _ = s.parse::<qi::quant::QuantSpec>();
        });
    }
    let study = format!(
        "name = \"x\"\nseeds = [3, 5]\nbits = [8, 4]\nquantizers = [\"rtn\", \"gptq:samples=4,seqlen=16\", \"nf4\"]\nmodels = [\"{}\", {{ source = \"./m\", name = \"m\" }}]\n[data]\nseqlen = 16\n[[analyses]]\nname = \"perplexity\"\nseeds = 1\noptions = {{ text = \"random\", max_windows = 2 }}\n[[analyses]]\nname = \"induction\"\nid = \"ind\"\n",
        fixture("llama").display()
    );
    let toml_alphabet: Vec<char> = "[]{}=,\"'.-_ 0123456789abcdefghijklmnopqrstuvwxyz\n#".chars().collect();
    let (mut parsed, mut refused) = (0, 0);
    for i in 0..1500 {
        let mut s: Vec<char> = study.chars().collect();
        for _ in 0..1 + rng.below(3) {
            let p = rng.below(s.len() as u64) as usize;
            match rng.below(3) {
                0 => {
                    s.remove(p);
                }
                1 => s[p] = toml_alphabet[rng.below(toml_alphabet.len() as u64) as usize],
                _ => s.insert(p, toml_alphabet[rng.below(toml_alphabet.len() as u64) as usize]),
            }
        }
        let s: String = s.into_iter().collect();
        let Ok(v) = toml::from_str::<serde_json::Value>(&s) else { continue };
        no_panic(&format!("study mutation {i}:\n{s}"), || match qi::study::Study::from_value(&v, Path::new("fuzz.toml")) {
            Ok(st) => {
                parsed += 1;
                let _ = st.cells();
            }
            Err(_) => refused += 1,
        });
    }
    assert!(parsed > 100 && refused > 100, "parsed {parsed}, refused {refused}: the mutations should land on both sides");
}
