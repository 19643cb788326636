//! Integrity of what qi writes and later trusts: cached twins and study cells carry a content hash
//! (XXH3-128) and size of each file, recorded when written and checked before the file is used.
//! A twin directory holds a manifest ([`MANIFEST`]) with the key it was made for and its files'
//! digests; a study cell's sidecar holds its parquet file's digest. Anything that does not match
//! is reported (which file, expected against found) and rebuilt by the caller, never used.
//!
//! Cost: one read of each file. Checking a 6.2 GB entry (the size of a 1.5B model's f32 twin) took
//! 2.8–3.1 s with 15 MB of memory on the 2-core development machine (page cache warm, another job
//! running), about a tenth of loading that twin.
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The manifest file of a directory entry (a cached twin).
pub const MANIFEST: &str = "qi_manifest.json";
/// Version of the manifest's layout.
pub const MANIFEST_FORMAT: u32 = 1;

/// Size and content hash of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub bytes: u64,
    /// XXH3-128 of the content, 32 hex digits.
    pub xxh3: String,
}

impl std::fmt::Display for FileDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, xxh3 {}", self.bytes, self.xxh3)
    }
}

/// The digest of the file at `path` (read once, in 4 MiB pieces).
pub fn digest(path: &Path) -> Result<FileDigest> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileDigest { bytes, xxh3: format!("{:032x}", h.digest128()) })
}

/// What a directory entry was made for and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// What the entry was made for (for a twin: the model's key, the spec, the options and the
    /// algorithm and layout versions).
    pub key: String,
    /// File name → digest, for every file of the directory but the manifest.
    pub files: BTreeMap<String, FileDigest>,
}

/// Hashes every file of `dir` (flat: entries are not nested) and writes the manifest, atomically.
pub fn write_manifest(dir: &Path, key: &str) -> Result<Manifest> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let p = e?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if name == MANIFEST || !p.is_file() {
            continue;
        }
        files.insert(name, digest(&p)?);
    }
    let m = Manifest { format: MANIFEST_FORMAT, key: key.to_string(), files };
    crate::io::save_text(&serde_json::to_string_pretty(&m)?, &dir.join(MANIFEST))?;
    Ok(m)
}

/// One thing found wrong with a file or entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No manifest (or sidecar digest): written by an older qi, or the write never finished.
    Unrecorded(String),
    /// The manifest or sidecar does not parse.
    Unreadable(String, String),
    /// Made for another key.
    WrongKey { expected: String, found: String },
    /// A file the record lists is gone.
    Missing(String),
    /// A file's size or content differs from the record.
    Changed { file: String, expected: FileDigest, found: FileDigest },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unrecorded(p) => write!(f, "{p}: no content hash recorded"),
            Problem::Unreadable(p, e) => write!(f, "{p}: unreadable ({e})"),
            Problem::WrongKey { expected, found } => write!(f, "made for '{found}', expected '{expected}'"),
            Problem::Missing(p) => write!(f, "{p}: missing"),
            Problem::Changed { file, expected, found } => write!(f, "{file}: expected {expected}, found {found}"),
        }
    }
}

/// Checks `path` against its recorded digest.
pub fn check_file(path: &Path, expected: &FileDigest) -> Option<Problem> {
    let name = path.display().to_string();
    if !path.is_file() {
        return Some(Problem::Missing(name));
    }
    match digest(path) {
        Ok(found) if &found == expected => None,
        Ok(found) => Some(Problem::Changed { file: name, expected: expected.clone(), found }),
        Err(e) => Some(Problem::Unreadable(name, format!("{e:#}"))),
    }
}

/// Reads the manifest of `dir`.
pub fn read_manifest(dir: &Path) -> std::result::Result<Manifest, Problem> {
    let p = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&p).map_err(|_| Problem::Unrecorded(dir.display().to_string()))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| Problem::Unreadable(p.display().to_string(), e.to_string()))?;
    if m.format != MANIFEST_FORMAT {
        return Err(Problem::Unreadable(p.display().to_string(), format!("manifest format {}, expected {MANIFEST_FORMAT}", m.format)));
    }
    Ok(m)
}

/// Checks the directory entry `dir` against its manifest, and the manifest's key against `key`
/// (`None`: any key). Empty when the entry can be trusted.
pub fn check_dir(dir: &Path, key: Option<&str>) -> Vec<Problem> {
    let m = match read_manifest(dir) {
        Ok(m) => m,
        Err(p) => return vec![p],
    };
    let mut problems = Vec::new();
    if let Some(k) = key {
        if m.key != k {
            problems.push(Problem::WrongKey { expected: k.to_string(), found: m.key.clone() });
        }
    }
    problems.extend(m.files.iter().filter_map(|(name, d)| check_file(&dir.join(name), d)));
    problems
}

/// The problems as one line each, for messages.
pub fn describe(problems: &[Problem]) -> String {
    problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
}

/// An exclusive advisory lock on `path` (created if absent), held until dropped; `None` with a
/// warning when the lock file cannot be created (a read-only cache: nothing will be written).
/// Waits for another process holding it, saying so on stderr.
pub fn lock(path: &Path) -> Option<std::fs::File> {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let f = match std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("qi: cannot create the lock file {} ({e}); going on without it", path.display());
            return None;
        }
    };
    match f.try_lock() {
        Ok(()) => Some(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!("qi: waiting for another process that holds {}", path.display());
            f.lock().ok().map(|_| f)
        }
        Err(std::fs::TryLockError::Error(e)) => {
            eprintln!("qi: cannot lock {} ({e}); going on without the lock", path.display());
            None
        }
    }
}

/// Removes a damaged entry (a directory or a file), with the error spelled out.
pub fn remove(path: &Path) -> Result<()> {
    let r = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!("cannot remove {} ({e})", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        crate::testing::scratch(&format!("integrity-{name}"))
    }

    #[test]
    fn digest_is_xxh3_128_of_the_content() {
        let d = scratch("digest");
        let p = d.join("a.bin");
        std::fs::write(&p, b"hello").unwrap();
        // XXH3-128 of "hello" as the reference implementation gives it (python-xxhash xxh3_128_hexdigest)
        assert_eq!(digest(&p).unwrap(), FileDigest { bytes: 5, xxh3: "b5e9c1ad071b3e7fc779cfaa5e523818".into() });
        // larger than one read buffer: the streamed hash equals the one-shot hash
        let big: Vec<u8> = (0..(9u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        std::fs::write(&p, &big).unwrap();
        assert_eq!(digest(&p).unwrap().xxh3, format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&big)));
    }

    #[test]
    fn a_flipped_bit_a_truncation_or_another_key_is_found() {
        let d = scratch("dir");
        std::fs::write(d.join("w.bin"), vec![7u8; 100_000]).unwrap();
        std::fs::write(d.join("c.json"), b"{}").unwrap();
        write_manifest(&d, "key-a").unwrap();
        assert_eq!(check_dir(&d, Some("key-a")), vec![]);
        assert!(matches!(&check_dir(&d, Some("key-b"))[..], [Problem::WrongKey { .. }]));
        // flip one bit in the middle, size unchanged
        let mut w = std::fs::read(d.join("w.bin")).unwrap();
        w[50_000] ^= 1;
        std::fs::write(d.join("w.bin"), &w).unwrap();
        match &check_dir(&d, None)[..] {
            [Problem::Changed { file, expected, found }] => {
                assert!(file.ends_with("w.bin"));
                assert_eq!((expected.bytes, found.bytes), (100_000, 100_000));
                assert_ne!(expected.xxh3, found.xxh3);
            }
            other => panic!("{other:?}"),
        }
        w[50_000] ^= 1;
        std::fs::write(d.join("w.bin"), &w[..99_999]).unwrap();
        assert!(matches!(&check_dir(&d, None)[..], [Problem::Changed { found: FileDigest { bytes: 99_999, .. }, .. }]));
        std::fs::remove_file(d.join("w.bin")).unwrap();
        assert!(matches!(&check_dir(&d, None)[..], [Problem::Missing(_)]));
        std::fs::remove_file(d.join(MANIFEST)).unwrap();
        assert!(matches!(&check_dir(&d, None)[..], [Problem::Unrecorded(_)]));
        std::fs::write(d.join(MANIFEST), b"{not json").unwrap();
        assert!(matches!(&check_dir(&d, None)[..], [Problem::Unreadable(..)]));
    }
}
