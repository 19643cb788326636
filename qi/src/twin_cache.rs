//! Quantized twins cached on disk, so analyses and study cells do not re-quantize (GPTQ on
//! SmolLM2 takes minutes). A twin is stored as a directory with the files of an HF model but its
//! weights in compact form ([`crate::compact`]: codes and scales, only what differs from the
//! reference; config.json, the tokenizer, the report and activation quantization beside them) under
//! `<cache>/<model-slug>-<key>/<spec-slug>-<key>`, where the keys hash everything the result
//! depends on: the content of the source's files (sampled, see [`file_fingerprint`]; not their
//! paths or times, which change when a shared folder is re-created), the spec and the options.
//! The cache root is `QI_CACHE`, else `~/.cache/qi/twins` ([`cache_root`]).
//!
//! Nothing in the cache is used unchecked: each entry holds a manifest ([`crate::integrity`]) with
//! the full key it was made for and every file's size and XXH3-128, checked on every read; an
//! entry that does not match (a flipped bit, a truncated or missing file, another key, no
//! manifest) is reported on stderr, removed and quantized again. An entry is written into a hidden
//! staging folder and renamed into place, and a lock file beside it keeps two processes from
//! quantizing the same twin at once (the second waits and reads the first one's entry).
use crate::quant::QuantSpec;
use crate::quantize::{quantize_model, QuantReport, QuantizeOptions};
use crate::HookedTransformer;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The cache root: `QI_CACHE`, else `twins/` in the user's cache folder
/// (`$XDG_CACHE_HOME/qi`, else `~/.cache/qi`).
pub fn cache_root() -> PathBuf {
    match std::env::var_os("QI_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => crate::shared::user_cache_dir().join("twins"),
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

/// Version of the on-disk twin layout; bump when what [`store`] writes changes meaning.
pub const TWIN_FORMAT_VERSION: u32 = 2;

/// The directory a twin of `model` under `spec` and `opts` is cached in. The key holds the
/// method's algorithm version ([`QuantSpec::algorithm_version`]) and [`TWIN_FORMAT_VERSION`], so
/// a changed quantizer never reuses a twin made before the change.
pub fn twin_dir(root: &Path, model: &HookedTransformer, spec: &QuantSpec, opts: &QuantizeOptions) -> Result<PathBuf> {
    twin_dir_versioned(root, model, spec, opts, &versions(spec)?)
}

/// The versions part of a twin's key. A calibrated method's weights also depend on the matmul
/// library: the last bits of its Hessians or Gram matrices move near-tie rounding decisions
/// (GPTQ-4 of SmolLM2: perplexity 65.31 on gemm, 66.89 on OpenBLAS), so such a twin is keyed by
/// [`crate::blas::matmul_tag`] and never reused under another backend. gemm adds nothing, so
/// twins made before OpenBLAS was supported keep their keys.
fn versions(spec: &QuantSpec) -> Result<String> {
    Ok(versions_for(spec, &crate::blas::matmul_tag()?))
}

fn versions_for(spec: &QuantSpec, matmul: &str) -> String {
    let v = format!("{}-format{TWIN_FORMAT_VERSION}", spec.algorithm_version());
    if spec.needs_calibration() && matmul != "gemm" {
        format!("{v}-matmul-{matmul}")
    } else {
        v
    }
}

fn twin_dir_versioned(root: &Path, model: &HookedTransformer, spec: &QuantSpec, opts: &QuantizeOptions, versions: &str) -> Result<PathBuf> {
    let (model_part, key) = twin_key(model, spec, opts, versions)?;
    Ok(root.join(model_part).join(format!("{}-{}", slug(&spec.to_string()), &stable_hash(&[&key])[..8])))
}

/// The model folder's name and the full key a twin is made for (recorded in its manifest).
fn twin_key(model: &HookedTransformer, spec: &QuantSpec, opts: &QuantizeOptions, versions: &str) -> Result<(String, String)> {
    let stem = Path::new(&model.source.source).file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| model.source.source.clone());
    let mk = model_key(model);
    let model_part = format!("{}-{}", slug(&stem), &mk[..8]);
    let key = format!("model {mk} | spec {spec} | options {} | versions {versions}", serde_json::to_string(opts)?);
    Ok((model_part, key))
}

/// The key recorded in a twin's manifest: what the twin is made from and by.
pub fn twin_manifest_key(model: &HookedTransformer, spec: &QuantSpec, opts: &QuantizeOptions) -> Result<String> {
    Ok(twin_key(model, spec, opts, &versions(spec)?)?.1)
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
    // an external twin is read from its own file: nothing to cache
    let cacheable = !matches!(spec, QuantSpec::None | QuantSpec::Twin(_)) && opts.calibration.is_none();
    let dir = match root {
        Some(r) if cacheable => Some(twin_dir(r, model, spec, opts)?),
        _ => None,
    };
    let Some(dir) = dir else {
        let (twin, report) = quantize_model(model, spec, opts)?;
        return Ok((twin, Some(report), TwinOrigin::Quantized));
    };
    let key = twin_manifest_key(model, spec, opts)?;
    // One process per entry at a time: a second one waits, then reads what the first stored.
    let _lock = crate::integrity::lock(&lock_path(&dir));
    let mut can_store = true;
    if dir.exists() {
        match read_verified(&dir, &key, model, spec) {
            Ok(found) => return Ok(found),
            Err(why) => {
                eprintln!("qi: the cached twin {} cannot be trusted ({why}); quantizing it again", dir.display());
                if let Err(e) = crate::integrity::remove(&dir) {
                    eprintln!("qi: {e:#}; the new twin will not be cached");
                    can_store = false;
                }
            }
        }
    }
    let (twin, report) = quantize_model(model, spec, opts)?;
    if can_store {
        if let Err(e) = store(&twin, model, spec, &report, &dir, &key) {
            // a cache that cannot be written (read-only, full) costs time, not correctness
            eprintln!("qi: could not cache the twin in {}: {e:#} (set QI_CACHE to a writable folder to keep twins between runs)", dir.display());
        }
    }
    Ok((twin, Some(report), TwinOrigin::Quantized))
}

/// The lock file of a twin directory (beside it, so removing the entry keeps the lock).
pub fn lock_path(dir: &Path) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    dir.with_file_name(format!(".{name}.lock"))
}

/// Loads the twin in `dir` after checking every file against the manifest and the manifest's key
/// against `key`; the reason it cannot be used otherwise.
fn read_verified(dir: &Path, key: &str, model: &HookedTransformer, spec: &QuantSpec) -> std::result::Result<(HookedTransformer, Option<QuantReport>, TwinOrigin), String> {
    let problems = crate::integrity::check_dir(dir, Some(key));
    if !problems.is_empty() {
        return Err(crate::integrity::describe(&problems));
    }
    let mut twin = crate::loader::load_compact_dir(dir, model).map_err(|e| format!("loading it failed: {e:#}"))?;
    // the twin reports the reference's source, so names and keys stay those of the model
    twin.tokenizer = model.tokenizer.clone();
    twin.source.source = model.source.source.clone();
    twin.source.tensor_types = model.source.tensor_types.clone();
    twin.source.quantization = Some(spec.to_string());
    // the unquantized embeddings equal the reference's: hold them once
    twin.share_identical_embeddings(model).map_err(|e| format!("comparing its embeddings with the reference's failed: {e:#}"))?;
    Ok((twin, read_report(dir), TwinOrigin::Cached(dir.to_path_buf())))
}

/// Writes the twin (compact, see [`crate::compact`]) and its manifest into a staging folder, then
/// renames it into place: a reader never sees an entry without its manifest, and an interrupted
/// write leaves only a hidden folder.
fn store(twin: &HookedTransformer, reference: &HookedTransformer, spec: &QuantSpec, report: &QuantReport, dir: &Path, key: &str) -> Result<()> {
    let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let staging = dir.with_file_name(format!(".{name}.staging-{}", std::process::id()));
    // under the entry's lock nobody else is writing it: what a killed writer left can go
    if let Some(parent) = dir.parent() {
        for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&format!(".{name}.staging-")) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let result = std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))
        .and_then(|_| crate::export::write_description(twin, &staging, Some(report)))
        .and_then(|_| crate::compact::save(twin, reference, spec, &staging.join(crate::compact::FILE)).map(|_| ()))
        .and_then(|_| crate::integrity::write_manifest(&staging, key).map(|_| ()))
        .and_then(|_| std::fs::rename(&staging, dir).with_context(|| format!("cannot move {} to {}", staging.display(), dir.display())));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
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
        log_origin(spec, &origin, report.as_ref(), t);
        out.push((spec.clone(), twin));
    }
    Ok(out)
}

/// The status line ([`crate::progress::note`]) of a twin just made or read: `SPEC: cached twin DIR (T s)`, or `SPEC: quantized
/// in T s (B bits/weight)` (`loaded` for an external twin).
pub fn log_origin(spec: &QuantSpec, origin: &TwinOrigin, report: Option<&QuantReport>, since: std::time::Instant) {
    let secs = since.elapsed().as_secs_f64();
    match origin {
        TwinOrigin::Cached(d) => crate::progress::note(&format!("{spec}: cached twin {} ({secs:.1} s)", d.display())),
        TwinOrigin::Quantized => crate::progress::note(&format!(
            "{spec}: {} in {secs:.1} s ({:.2} bits/weight)",
            if matches!(spec, QuantSpec::Twin(_)) { "loaded" } else { "quantized" },
            report.map(|r| r.bits_per_weight).unwrap_or(f64::NAN)
        )),
    }
}

/// One entry of the cache, as [`verify`] found it.
#[derive(Debug)]
pub struct EntryCheck {
    pub dir: PathBuf,
    /// Bytes on disk.
    pub bytes: u64,
    /// Empty when the entry is sound.
    pub problems: Vec<crate::integrity::Problem>,
}

/// Checks every twin under `root` against its manifest (its files; the key is checked when the
/// entry is used, since that needs the model). Hidden leftovers of interrupted writes
/// (`.*.staging-*`, `.*.tmp-*`) are listed as problems too.
pub fn verify(root: &Path) -> Result<Vec<EntryCheck>> {
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    for m in sorted_entries(root)? {
        if !m.is_dir() {
            continue;
        }
        for d in sorted_entries(&m)? {
            let name = d.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            if name.ends_with(".lock") {
                continue;
            }
            let bytes = dir_bytes(&d);
            let problems = if name.starts_with('.') {
                vec![crate::integrity::Problem::Unrecorded(format!("{}: left by an interrupted write", d.display()))]
            } else {
                crate::integrity::check_dir(&d, None)
            };
            out.push(EntryCheck { dir: d, bytes, problems });
        }
    }
    Ok(out)
}

/// Removes every entry under `root` (or only those [`verify`] finds damaged); returns the entries
/// removed and the bytes freed.
pub fn clear(root: &Path, only_damaged: bool) -> Result<(usize, u64)> {
    let (mut n, mut bytes) = (0, 0);
    for e in verify(root)? {
        if only_damaged && e.problems.is_empty() {
            continue;
        }
        crate::integrity::remove(&e.dir)?;
        n += 1;
        bytes += e.bytes;
    }
    if !only_damaged && root.exists() {
        // lock files and emptied model folders
        for m in sorted_entries(root)? {
            crate::integrity::remove(&m)?;
        }
    }
    Ok((n, bytes))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
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
        crate::export::save_hf_dir(&stale, &old, None).unwrap();
        assert_ne!(old, twin_dir(&root, &m, &spec, &opts).unwrap());
        let (fresh, _, origin) = quantize_cached(&m, &spec, &opts, Some(&root)).unwrap();
        assert_eq!(origin, TwinOrigin::Quantized, "the old-version twin must not be read");
        let (want, _) = quantize_model(&m, &spec, &opts).unwrap();
        let w = |t: &HookedTransformer| -> Vec<f32> { t.blocks[0].linears()[0].weight().flatten_all().unwrap().to_vec1().unwrap() };
        assert_eq!(w(&fresh), w(&want));
        assert_ne!(w(&fresh), w(&stale));
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn first_weights(t: &HookedTransformer) -> Vec<f32> {
        t.blocks[0].linears()[0].weight().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn a_cached_twin_holds_the_references_embeddings_once() {
        let m = crate::load_model(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/llama").to_str().unwrap()).unwrap();
        let root = std::env::temp_dir().join(format!("qi-twin-share-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let spec: QuantSpec = "rtn:bits=4".parse().unwrap();
        for unembedding in [false, true] {
            let opts = QuantizeOptions { unembedding, ..Default::default() };
            let (fresh, _, o) = quantize_cached(&m, &spec, &opts, Some(&root)).unwrap();
            assert_eq!(o, TwinOrigin::Quantized);
            let (cached, _, o) = quantize_cached(&m, &spec, &opts, Some(&root)).unwrap();
            assert!(matches!(o, TwinOrigin::Cached(_)));
            assert_eq!(cached.embed.id(), m.embed.id(), "the unquantized embedding is the reference's tensor");
            // a quantized unembedding differs from the reference's and stays the twin's own
            assert_eq!(cached.unembed.weight_t().id() == m.unembed.weight_t().id(), !unembedding, "unembedding {unembedding}");
            let batch = crate::batch::Batch::from_ids(&[1u32, 5, 9, 2]).unwrap();
            let logits = |t: &HookedTransformer| -> Vec<f32> { t.forward(&batch).unwrap().flatten_all().unwrap().to_vec1().unwrap() };
            assert_eq!(logits(&cached), logits(&fresh), "sharing changes no value");
            assert_eq!(first_weights(&cached), first_weights(&fresh));
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_damaged_or_foreign_entry_is_rebuilt_never_used() {
        let m = crate::load_model(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/llama").to_str().unwrap()).unwrap();
        let root = std::env::temp_dir().join(format!("qi-twin-damage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let spec: QuantSpec = "rtn:bits=4".parse().unwrap();
        let opts = QuantizeOptions::default();
        let want = first_weights(&quantize_model(&m, &spec, &opts).unwrap().0);
        let dir = twin_dir(&root, &m, &spec, &opts).unwrap();
        let fresh = || {
            let (t, _, o) = quantize_cached(&m, &spec, &opts, Some(&root)).unwrap();
            assert_eq!(first_weights(&t), want);
            o
        };
        assert_eq!(fresh(), TwinOrigin::Quantized);
        assert_eq!(fresh(), TwinOrigin::Cached(dir.clone()));
        let st = dir.join(crate::compact::FILE);
        let damage: [(&str, Box<dyn Fn()>); 5] = [
            // the data region overwritten, header intact: loads fine, wrong numbers
            ("overwritten weights", Box::new(|| {
                let mut b = std::fs::read(&st).unwrap();
                let n = b.len();
                b[n - 4096..].fill(0x7f);
                std::fs::write(&st, b).unwrap();
            })),
            ("one flipped bit", Box::new(|| {
                let mut b = std::fs::read(&st).unwrap();
                let n = b.len();
                b[n / 2] ^= 0x10;
                std::fs::write(&st, b).unwrap();
            })),
            ("truncated config.json", Box::new(|| std::fs::write(dir.join("config.json"), b"{").unwrap())),
            ("no manifest", Box::new(|| std::fs::remove_file(dir.join(crate::integrity::MANIFEST)).unwrap())),
            // a sound entry made for another spec, put where this one belongs
            ("another key", Box::new(|| {
                let other: QuantSpec = "rtn:bits=8".parse().unwrap();
                let (t, r) = quantize_model(&m, &other, &opts).unwrap();
                std::fs::remove_dir_all(&dir).unwrap();
                store(&t, &m, &other, &r, &dir, &twin_manifest_key(&m, &other, &opts).unwrap()).unwrap();
            })),
        ];
        for (what, hurt) in damage.iter() {
            hurt();
            assert!(!crate::integrity::check_dir(&dir, Some(&twin_manifest_key(&m, &spec, &opts).unwrap())).is_empty(), "{what}: not detected");
            assert_eq!(fresh(), TwinOrigin::Quantized, "{what}: the damaged entry was used");
            assert_eq!(fresh(), TwinOrigin::Cached(dir.clone()), "{what}: the rebuilt entry is not trusted");
        }
        let checks = verify(&root).unwrap();
        assert_eq!(checks.len(), 1);
        assert!(checks[0].problems.is_empty() && checks[0].bytes > 1000);
        // verify sees damage without needing the model; clear removes only what is damaged
        std::fs::write(&st, b"").unwrap();
        assert_eq!(verify(&root).unwrap()[0].problems.len(), 1);
        assert_eq!(clear(&root, true).unwrap().0, 1);
        assert!(!dir.exists());
        fresh();
        assert_eq!(clear(&root, false).unwrap().0, 1);
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_cache_that_cannot_be_written_costs_time_not_the_result() {
        let m = crate::load_model(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/llama").to_str().unwrap()).unwrap();
        // a file where the cache folder should be: nothing can be created below it (chmod would
        // not stop root, who runs CI)
        let root = std::env::temp_dir().join(format!("qi-twin-unwritable-{}", std::process::id()));
        std::fs::write(&root, b"not a folder").unwrap();
        let spec: QuantSpec = "rtn:bits=4".parse().unwrap();
        let (t, _, o) = quantize_cached(&m, &spec, &QuantizeOptions::default(), Some(&root)).unwrap();
        assert_eq!(o, TwinOrigin::Quantized);
        assert_eq!(first_weights(&t), first_weights(&quantize_model(&m, &spec, &QuantizeOptions::default()).unwrap().0));
        assert_eq!(std::fs::read(&root).unwrap(), b"not a folder");
        std::fs::remove_file(&root).unwrap();
    }

    #[test]
    fn calibrated_twins_are_keyed_by_the_matmul_backend() {
        let gptq: QuantSpec = "gptq:bits=4".parse().unwrap();
        let rtn: QuantSpec = "rtn:bits=4".parse().unwrap();
        let plain = |s: &QuantSpec| format!("{}-format{TWIN_FORMAT_VERSION}", s.algorithm_version());
        // gemm keeps the keys twins had before; OpenBLAS (per build and thread count) gets its own
        assert_eq!(versions_for(&gptq, "gemm"), plain(&gptq));
        assert_eq!(versions_for(&gptq, "openblas-1a2b3c4d-t2"), format!("{}-matmul-openblas-1a2b3c4d-t2", plain(&gptq)));
        assert_ne!(versions_for(&gptq, "openblas-1a2b3c4d-t2"), versions_for(&gptq, "openblas-1a2b3c4d-t1"));
        // a method without calibration matmuls makes the same twin on either backend
        assert_eq!(versions_for(&rtn, "openblas-1a2b3c4d-t2"), plain(&rtn));
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
