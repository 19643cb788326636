//! `qi bench-twins`: a cached twin in its compact form against the same twin stored as f32, on
//! disk and at load, with the reference model's own load as the yardstick.
use anyhow::{Context, Result};
use qi::quant::QuantSpec;
use qi::quantize::QuantizeOptions;
use qi::twin_cache::{quantize_cached, TwinOrigin};
use std::path::Path;
use std::time::Instant;

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

/// For each spec: the twin from the cache (made first if missing), an f32 copy in a scratch
/// directory with a manifest like the cache's, then `rounds` rounds each loading, in turn, the
/// reference, the compact twin (manifest check, decode, embeddings shared) and the f32 twin
/// (manifest check, load, embeddings shared). One JSON line per spec with the medians.
pub fn bench_twins(src: &str, specs: &[String], rounds: usize, scratch: &Path) -> Result<()> {
    let reference = qi::load_model(src)?;
    let root = qi::twin_cache::cache_root();
    let opts = QuantizeOptions::default();
    for s in specs {
        let spec: QuantSpec = s.parse().with_context(|| format!("--quant '{s}'"))?;
        let (twin, report, _) = quantize_cached(&reference, &spec, &opts, Some(&root))?;
        let report = report.with_context(|| format!("{spec}: the cached twin has no report"))?;
        let dir = qi::twin_cache::twin_dir(&root, &reference, &spec, &opts)?;
        let f32_dir = scratch.join(format!("qi-bench-twins-{}-{}", std::process::id(), qi::twin_cache::slug(s)));
        let _ = std::fs::remove_dir_all(&f32_dir);
        qi::export::save_hf_dir(&twin, &f32_dir, Some(&report))?;
        drop(twin);
        let key = "bench";
        qi::integrity::write_manifest(&f32_dir, key)?;
        let (mut t_ref, mut t_compact, mut t_f32) = (vec![], vec![], vec![]);
        for _ in 0..rounds.max(1) {
            let t = Instant::now();
            drop(std::hint::black_box(qi::load_model(src)?));
            t_ref.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let (tw, _, origin) = quantize_cached(&reference, &spec, &opts, Some(&root))?;
            anyhow::ensure!(matches!(origin, TwinOrigin::Cached(_)), "{spec}: the twin was not read from the cache");
            drop(std::hint::black_box(tw));
            t_compact.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let problems = qi::integrity::check_dir(&f32_dir, Some(key));
            anyhow::ensure!(problems.is_empty(), "{}: {}", f32_dir.display(), qi::integrity::describe(&problems));
            let mut tw = qi::load_model(&f32_dir.display().to_string())?;
            tw.share_identical_embeddings(&reference)?;
            drop(std::hint::black_box(tw));
            t_f32.push(t.elapsed().as_secs_f64());
        }
        let weights = std::fs::metadata(dir.join(qi::compact::FILE))?.len();
        let bits = weights as f64 * 8.0 / report.quantized_params as f64;
        let (r, c, f) = (qi::metrics::median(&t_ref), qi::metrics::median(&t_compact), qi::metrics::median(&t_f32));
        let v = serde_json::json!({
            "model": src, "spec": spec.to_string(), "rounds": rounds.max(1),
            "method_bits_per_weight": report.bits_per_weight, "quantized_params": report.quantized_params,
            "compact_weights_bytes": weights, "compact_dir_bytes": dir_bytes(&dir), "f32_dir_bytes": dir_bytes(&f32_dir),
            "compact_bits_per_quantized_weight": bits, "compact_to_method_bits": bits / report.bits_per_weight,
            "load_reference_s": r, "load_compact_s": c, "load_f32_s": f,
            "compact_to_reference_load": c / r, "compact_to_f32_load": c / f,
        });
        println!("{v}");
        std::fs::remove_dir_all(&f32_dir).with_context(|| format!("cannot remove {}", f32_dir.display()))?;
    }
    Ok(())
}
