//! Compact twins: every method's twin, on every architecture, stored by its codec and read back
//! bit for bit (weights and logits), with what it shares with the reference left out of the file.
mod common;
use common::{fixture, temp_dir};
use qi::quantize::{quantize_model, QuantizeOptions};
use qi::quant::QuantSpec;
use qi::HookedTransformer;

fn opts() -> QuantizeOptions {
    let mut rng = qi::rng::Rng::new(3);
    let windows = (0..8).map(|_| (0..32).map(|_| (rng.next_u64() % 300) as u32 + 3).collect()).collect();
    QuantizeOptions { calibration: Some(windows), calibration_batch: 4, ..Default::default() }
}

fn bits(t: &candle_core::Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// Saves `q` compactly into a twin-like directory and loads it back.
fn round_trip(q: &HookedTransformer, report: &qi::quantize::QuantReport, reference: &HookedTransformer, spec: &QuantSpec, tag: &str) -> (HookedTransformer, qi::compact::Summary) {
    let dir = temp_dir(&format!("compact-{tag}"));
    let d = dir.join("twin");
    // the description files as the cache writes them (the report restores activation quantization)
    qi::export::save_hf_dir(q, &d, Some(report)).unwrap();
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    let summary = qi::compact::save(q, reference, spec, &d.join(qi::compact::FILE)).unwrap();
    let back = qi::loader::load_compact_dir(&d, reference).unwrap_or_else(|e| panic!("{tag}: {e:#}"));
    std::fs::remove_dir_all(&dir).unwrap();
    (back, summary)
}

#[test]
fn every_twin_reads_back_bit_for_bit_through_its_codec() {
    // (architecture, spec, codec of the quantized linears)
    let cases = [
        ("llama", "rtn:bits=4", Some("affine")),
        ("llama", "rtn:bits=3,group=32,sym=true", Some("affine")),
        ("llama", "gptq:bits=4", Some("affine")),
        ("llama", "gptq:bits=4,group=32,act_order=true,static_groups=true", Some("affine")),
        ("llama", "gptq:bits=3,group=32,act_order=true", None),
        ("llama", "awq:bits=4,group=32", Some("affine")),
        ("llama", "nf4", Some("codebook")),
        ("llama", "fp4:double_quant=true", Some("codebook")),
        ("llama", "q4_0", Some("ggml")),
        ("llama", "q8_0", Some("ggml")),
        ("llama", "int8", None),
        ("llama", "w8a8", None),
        ("llama", "fp16", Some("plain")),
        ("llama", "prune:sparsity=0.5", Some("plain")),
        ("llama-tied", "nf4", Some("codebook")),
        ("gpt2", "rtn:bits=4,group=32", Some("affine")),
        ("gpt2", "nf4", Some("codebook")),
        ("neox", "gptq:bits=4", Some("affine")),
        ("gemma3", "q4_k:fallback=true", None),
        ("gemma3", "awq:bits=4,group=32", Some("affine")),
    ];
    for (arch, s, codec) in cases {
        let m = qi::load_model(fixture(arch).to_str().unwrap()).unwrap();
        let spec: QuantSpec = s.parse().unwrap();
        let (q, report) = quantize_model(&m, &spec, &opts()).unwrap_or_else(|e| panic!("{arch} {s}: {e:#}"));
        let (back, summary) = round_trip(&q, &report, &m, &spec, &format!("{arch}-{}", qi::twin_cache::slug(s)));
        let want = qi::models::hf_state_dict(&q).unwrap();
        let got: std::collections::HashMap<_, _> = qi::models::hf_state_dict(&back).unwrap().into_iter().collect();
        assert_eq!(got.len(), want.len(), "{arch} {s}");
        for (name, t) in &want {
            assert!(bits(&got[name]) == bits(t), "{arch} {s}: {name} differs");
        }
        let batch = qi::Batch::from_ids(&[1u32, 5, 9, 2, 7]).unwrap();
        assert!(bits(&back.forward(&batch).unwrap()) == bits(&q.forward(&batch).unwrap()), "{arch} {s}: the logits differ");
        if let Some(c) = codec {
            assert_eq!(summary.tensors.get(c).copied().unwrap_or(0), report.matrices.len(), "{arch} {s}: {summary:?}");
            assert_eq!(summary.exceptions, 0, "{arch} {s}");
        }
        // the embeddings are unquantized: the file names them and the loaded twin holds the reference's
        assert!(summary.tensors["reference"] >= 1, "{arch} {s}: {summary:?}");
        assert_eq!(back.embed.id(), m.embed.id(), "{arch} {s}: the embedding is the reference's tensor");
    }
}

#[test]
fn a_compact_file_names_what_is_wrong_with_it() {
    let m = qi::load_model(fixture("llama").to_str().unwrap()).unwrap();
    let spec: QuantSpec = "rtn:bits=4".parse().unwrap();
    let (q, _) = quantize_model(&m, &spec, &QuantizeOptions::default()).unwrap();
    let dir = temp_dir("compact-bad");
    let f = dir.join(qi::compact::FILE);
    qi::compact::save(&q, &m, &spec, &f).unwrap();
    // a plain safetensors file (no layout), a missing array, another layout version
    candle_core::safetensors::save(&std::collections::HashMap::from([("x".to_string(), m.embed.clone())]), &f).unwrap();
    let e = format!("{:#}", qi::compact::load(&f, &m).unwrap_err());
    assert!(e.contains(qi::compact::FILE) && e.contains("not a compact qi twin"), "{e}");
    qi::compact::save(&q, &m, &spec, &f).unwrap();
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, replace_once(&bytes, b"version\\\":1", b"version\\\":9")).unwrap();
    let e = format!("{:#}", qi::compact::load(&f, &m).unwrap_err());
    assert!(e.contains("version 9"), "{e}");
    std::fs::write(&f, replace_once(&bytes, b"#scales", b"#scalez")).unwrap();
    let e = format!("{:#}", qi::compact::load(&f, &m).unwrap_err());
    assert!(e.contains("#scales' is missing"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `bytes` with the first `from` replaced by `to` (same length, so the header stays valid).
fn replace_once(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).expect("pattern present");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}
