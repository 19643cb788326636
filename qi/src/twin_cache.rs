//! Quantized twins cached on disk, so analyses and study cells do not re-quantize (GPTQ on
//! SmolLM2 takes minutes). A twin is stored as an HF directory ([`crate::export::save_hf_dir`]:
//! dequantized weights, the report, activation quantization) under
//! `<cache>/<model-slug>-<key>/<spec-slug>-<key>`, where the keys hash everything the result
//! depends on: the content of the source's files (sampled, see [`file_fingerprint`]; not their
//! paths or times, which change when a shared folder is re-created), the spec and the options.
//! The cache root is `QI_CACHE`, else `<repo>/target/qi-cache`. Writes are atomic, so an
//! interrupted quantization leaves nothing behind.
use crate::export::save_hf_dir;
use crate::quant::QuantSpec;
use crate::quantize::{quantize_model, QuantReport, QuantizeOptions};
use crate::HookedTransformer;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The cache root: `QI_CACHE`, else `<repo>/target/qi-cache`.
pub fn cache_root() -> PathBuf {
    match std::env::var_os("QI_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => crate::figures::repo_dir().join("target").join("qi-cache"),
    }
}

pub use crate::hash::stable_hash;
use crate::hash::{fnv1a, FNV_OFFSET};

/// A content fingerprint of a file: its size and a hash of sampled bytes (the first and last MiB
/// and 16 evenly spaced 64 KiB pieces). Content-based, so a copy, a move or a re-extracted file
/// with new times keeps its twins; a few MiB are read, whatever the file's size.
pub fn file_fingerprint(path: &Path) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    const MIB: u64 = 1 << 20;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut ranges = vec![(0, MIB.min(len)), (len.saturating_sub(MIB), len)];
    ranges.extend((1..=16).map(|i| (len * i / 17, (len * i / 17 + 64 * 1024).min(len))));
    let mut h = FNV_OFFSET;
    let mut buf = Vec::new();
    for (a, b) in ranges {
        f.seek(SeekFrom::Start(a))?;
        buf.resize((b - a) as usize, 0);
        f.read_exact(&mut buf)?;
        h = fnv1a(h, buf.iter().copied());
    }
    Ok(format!("{len}:{h:016x}"))
}

/// A filesystem-safe short name: alphanumerics, `-`, `_`, `.` kept, everything else `_`.
pub fn slug(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    let s = s.trim_matches('_').to_string();
    if s.len() > 60 {
        s[s.len() - 60..].to_string()
    } else {
        s
    }
}

/// Identifies a model's weights: the content fingerprints of its files ([`file_fingerprint`];
/// the source string for a model without files) and the original quantization it was loaded with.
pub fn model_key(model: &HookedTransformer) -> String {
    let mut parts: Vec<String> = model.source.quantization.iter().cloned().collect();
    if model.source.files.is_empty() {
        parts.push(model.source.source.clone());
    }
    for f in &model.source.files {
        // an unreadable file still gets a key (its path); loading it will report the error
        parts.push(file_fingerprint(Path::new(f)).unwrap_or_else(|_| f.clone()));
    }
    stable_hash(&parts.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Version of the on-disk twin layout; bump when what [`save_hf_dir`] writes changes meaning.
pub const TWIN_FORMAT_VERSION: u32 = 1;

/// The directory a twin of `model` under `spec` and `opts` is cached in. The key holds the
/// method's algorithm version ([`QuantSpec::algorithm_version`]) and [`TWIN_FORMAT_VERSION`], so
/// a changed quantizer never reuses a twin made before the change.
pub fn twin_dir(root: &Path, model: &HookedTransformer, spec: &QuantSpec, opts: &QuantizeOptions) -> Result<PathBuf> {
    twin_dir_versioned(root, model, spec, opts, &format!("{}-format{TWIN_FORMAT_VERSION}", spec.algorithm_version()))
}

fn twin_dir_versioned(root: &Path, model: &HookedTransformer, spec: &QuantSpec, opts: &QuantizeOptions, versions: &str) -> Result<PathBuf> {
    let stem = Path::new(&model.source.source).file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| model.source.source.clone());
    let spec_s = spec.to_string();
    let opts_s = serde_json::to_string(opts)?;
    let key = stable_hash(&[&spec_s, &opts_s, versions]);
    Ok(root.join(format!("{}-{}", slug(&stem), &model_key(model)[..8])).join(format!("{}-{}", slug(&spec_s), &key[..8])))
}

/// Where a twin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwinOrigin {
    /// Quantized in this call (and stored, when caching).
    Quantized,
    /// Read from the cache.
    Cached(PathBuf),
}

/// Quantizes `model` by `spec`, or loads the twin cached by an earlier call with the same model,
/// spec and options. `root = None` disables the cache. Options with explicit calibration windows
/// are never cached (their tokens are not part of the key). The report is `None` for twins read
/// from a cache written without one.
pub fn quantize_cached(
    model: &HookedTransformer,
    spec: &QuantSpec,
    opts: &QuantizeOptions,
    root: Option<&Path>,
) -> Result<(HookedTransformer, Option<QuantReport>, TwinOrigin)> {
    let cacheable = !matches!(spec, QuantSpec::None) && opts.calibration.is_none();
    let dir = match root {
        Some(r) if cacheable => Some(twin_dir(r, model, spec, opts)?),
        _ => None,
    };
    if let Some(dir) = &dir {
        if dir.join("config.json").is_file() {
            let mut twin = crate::load_model(&dir.display().to_string()).with_context(|| format!("reading the cached twin {}", dir.display()))?;
            // the twin reports the reference's source, so names and keys stay those of the model
            let report = read_report(dir);
            twin.tokenizer = model.tokenizer.clone();
            twin.source.source = model.source.source.clone();
            twin.source.tensor_types = model.source.tensor_types.clone();
            twin.source.quantization = Some(spec.to_string());
            return Ok((twin, report, TwinOrigin::Cached(dir.clone())));
        }
    }
    let (twin, report) = quantize_model(model, spec, opts)?;
    if let Some(dir) = &dir {
        // another process may have stored the same twin meanwhile: then keep theirs
        if let Err(e) = save_hf_dir(&twin, dir, Some(&report)) {
            if !dir.join("config.json").is_file() {
                return Err(e.context(format!("caching the quantized twin in {}", dir.display())));
            }
        }
    }
    Ok((twin, Some(report), TwinOrigin::Quantized))
}

/// The twins of `model` under each spec (through the cache when `root` is given), reporting each
/// on stderr. Specs must be distinct (they label the results).
pub fn twins(model: &HookedTransformer, specs: &[QuantSpec], opts: &QuantizeOptions, root: Option<&Path>) -> Result<Vec<(QuantSpec, HookedTransformer)>> {
    let mut out: Vec<(QuantSpec, HookedTransformer)> = Vec::new();
    for spec in specs {
        if out.iter().any(|(s, _)| s == spec) {
            return Err(crate::QiError::invalid("quantization spec", spec, "given twice").into());
        }
        let t = std::time::Instant::now();
        let (twin, report, origin) = quantize_cached(model, spec, opts, root).with_context(|| format!("quantizing with {spec}"))?;
        match origin {
            TwinOrigin::Cached(d) => eprintln!("{spec}: cached twin {} ({:.1} s)", d.display(), t.elapsed().as_secs_f64()),
            TwinOrigin::Quantized => eprintln!(
                "{spec}: quantized in {:.1} s ({:.2} bits/weight)",
                t.elapsed().as_secs_f64(),
                report.map(|r| r.bits_per_weight).unwrap_or(f64::NAN)
            ),
        }
        out.push((spec.clone(), twin));
    }
    Ok(out)
}

fn read_report(dir: &Path) -> Option<QuantReport> {
    let text = std::fs::read_to_string(dir.join("qi_quantization.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(v.get("report")?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_slug_are_stable() {
        assert_eq!(stable_hash(&["a", "b"]), stable_hash(&["a", "b"]));
        assert_ne!(stable_hash(&["ab", ""]), stable_hash(&["a", "b"]));
        assert_eq!(stable_hash(&[]), "cbf29ce484222325");
        assert_eq!(slug("gptq:bits=4,group=64"), "gptq_bits_4_group_64");
    }

    #[test]
    fn fingerprints_follow_content_not_path_or_time() {
        let dir = std::env::temp_dir().join(format!("qi-fingerprint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
        let (a, b, c) = (dir.join("a.bin"), dir.join("b.bin"), dir.join("c.bin"));
        std::fs::write(&a, &bytes).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(&b, &bytes).unwrap();
        assert_eq!(file_fingerprint(&a).unwrap(), file_fingerprint(&b).unwrap());
        let mut changed = bytes.clone();
        changed[10] ^= 1;
        std::fs::write(&c, &changed).unwrap();
        assert_ne!(file_fingerprint(&a).unwrap(), file_fingerprint(&c).unwrap());
        std::fs::write(&c, &bytes[..100]).unwrap();
        assert!(file_fingerprint(&c).unwrap().starts_with("100:"));
        std::fs::write(&c, b"").unwrap();
        assert!(file_fingerprint(&c).unwrap().starts_with("0:"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn second_call_reads_the_cache_and_gives_the_same_weights() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/llama");
        let m = crate::load_model(dir.to_str().unwrap()).unwrap();
        let root = std::env::temp_dir().join(format!("qi-twin-cache-{}", std::process::id()));
        let spec: QuantSpec = "rtn:bits=4".parse().unwrap();
        let opts = QuantizeOptions::default();
        let (a, ra, oa) = quantize_cached(&m, &spec, &opts, Some(&root)).unwrap();
        let (b, rb, ob) = quantize_cached(&m, &spec, &opts, Some(&root)).unwrap();
        assert_eq!(oa, TwinOrigin::Quantized);
        assert!(matches!(ob, TwinOrigin::Cached(_)));
        assert_eq!(ra.unwrap().bits_per_weight, rb.unwrap().bits_per_weight);
        let wa: Vec<f32> = a.blocks[0].linears_labeled()[0].1.weight().flatten_all().unwrap().to_vec1().unwrap();
        let wb: Vec<f32> = b.blocks[0].linears_labeled()[0].1.weight().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(wa, wb);
        assert_eq!(b.source.quantization.as_deref(), Some("rtn:bits=4"));
        // other options, other entry
        let other = QuantizeOptions { mlp: false, ..Default::default() };
        assert_ne!(twin_dir(&root, &m, &spec, &opts).unwrap(), twin_dir(&root, &m, &spec, &other).unwrap());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_twin_from_an_older_algorithm_version_is_not_reused() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/llama");
        let m = crate::load_model(dir.to_str().unwrap()).unwrap();
        let root = std::env::temp_dir().join(format!("qi-twin-versions-{}", std::process::id()));
        let spec: QuantSpec = "rtn:bits=4".parse().unwrap();
        let opts = QuantizeOptions::default();
        // a twin stored under another version (here: an 8-bit twin, so reusing it would show)
        let old = twin_dir_versioned(&root, &m, &spec, &opts, "rtn-v0-format1").unwrap();
        let (stale, _) = quantize_model(&m, &"rtn:bits=8".parse().unwrap(), &opts).unwrap();
        save_hf_dir(&stale, &old, None).unwrap();
        assert_ne!(old, twin_dir(&root, &m, &spec, &opts).unwrap());
        let (fresh, _, origin) = quantize_cached(&m, &spec, &opts, Some(&root)).unwrap();
        assert_eq!(origin, TwinOrigin::Quantized, "the old-version twin must not be read");
        let (want, _) = quantize_model(&m, &spec, &opts).unwrap();
        let w = |t: &HookedTransformer| -> Vec<f32> { t.blocks[0].linears()[0].weight().flatten_all().unwrap().to_vec1().unwrap() };
        assert_eq!(w(&fresh), w(&want));
        assert_ne!(w(&fresh), w(&stale));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn versions_name_the_method_and_calibration_data() {
        let v = |s: &str| s.parse::<QuantSpec>().unwrap().algorithm_version();
        assert_eq!(v("rtn:bits=4"), "rtn-v1");
        assert_eq!(v("gptq:bits=4"), format!("gptq-v2-data{}", crate::quant::spec::CALIBRATION_DATA_VERSION));
        assert!(v("awq:bits=4").starts_with("awq-v") && v("awq:bits=4").contains("-data"));
        assert!(!v("nf4").contains("-data"));
    }
}
