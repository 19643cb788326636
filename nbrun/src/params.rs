//! Typed notebook parameters.
//!
//! The cell tagged `parameters` declares defaults as typed Rust bindings,
//! `let NAME: TYPE = VALUE;` (the value may span lines). An override `-p NAME=TEXT` replaces VALUE
//! with a Rust literal of the declared TYPE, so the kernel sees the same types as with the
//! defaults (an untyped `let n = 3;` injected papermill-style would be inferred as i32).
use anyhow::{bail, Result};
use std::fmt;
use std::ops::Range;

/// The Rust types a parameter may be set to from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    Int(&'static str),
    Float(&'static str),
    Bool,
    /// `String`
    String,
    /// `&str` / `&'static str`
    Str,
    Vec(Box<Ty>),
    Option(Box<Ty>),
}

const INTS: [&str; 10] = ["usize", "u8", "u16", "u32", "u64", "isize", "i8", "i16", "i32", "i64"];
pub const SUPPORTED: &str = "usize, u8…u64, isize, i8…i64, f32, f64, bool, String, &str, Vec<T>, Option<T>";

impl Ty {
    /// Parses a type as written in the declaration; `None` if it is not settable from text.
    pub fn parse(src: &str) -> Option<Ty> {
        let s: String = src.chars().filter(|c| !c.is_whitespace()).collect();
        let s = s.strip_prefix("std::string::").unwrap_or(&s).to_string();
        if let Some(i) = INTS.iter().find(|t| **t == s) {
            return Some(Ty::Int(i));
        }
        match s.as_str() {
            "f32" => return Some(Ty::Float("f32")),
            "f64" => return Some(Ty::Float("f64")),
            "bool" => return Some(Ty::Bool),
            "String" => return Some(Ty::String),
            "&str" | "&'staticstr" => return Some(Ty::Str),
            _ => {}
        }
        let generic = |prefix: &str| s.strip_prefix(prefix).and_then(|r| r.strip_suffix('>')).map(str::to_string);
        if let Some(inner) = generic("Vec<").or_else(|| generic("std::vec::Vec<")) {
            let inner = Ty::parse(&inner)?;
            if matches!(inner, Ty::Vec(_) | Ty::Option(_)) {
                return None; // a comma list cannot express nesting
            }
            return Some(Ty::Vec(Box::new(inner)));
        }
        if let Some(inner) = generic("Option<").or_else(|| generic("std::option::Option<")) {
            let inner = Ty::parse(&inner)?;
            if matches!(inner, Ty::Option(_)) {
                return None;
            }
            return Some(Ty::Option(Box::new(inner)));
        }
        None
    }

    /// Turns the command-line text into a Rust expression of this type.
    pub fn literal(&self, raw: &str) -> std::result::Result<String, String> {
        match self {
            Ty::Int(t) => {
                let s = raw.trim().replace('_', "");
                let v: i128 = s.parse().map_err(|_| format!("`{raw}` is not an integer"))?;
                let (lo, hi): (i128, i128) = match *t {
                    "u8" => (0, u8::MAX as i128),
                    "u16" => (0, u16::MAX as i128),
                    "u32" => (0, u32::MAX as i128),
                    "u64" => (0, u64::MAX as i128),
                    "usize" => (0, usize::MAX as i128),
                    "i8" => (i8::MIN as i128, i8::MAX as i128),
                    "i16" => (i16::MIN as i128, i16::MAX as i128),
                    "i32" => (i32::MIN as i128, i32::MAX as i128),
                    "i64" => (i64::MIN as i128, i64::MAX as i128),
                    _ => (isize::MIN as i128, isize::MAX as i128),
                };
                if v < lo || v > hi {
                    return Err(format!("{v} is out of range for {t} ({lo}..={hi})"));
                }
                Ok(v.to_string())
            }
            Ty::Float(t) => {
                let s = raw.trim().replace('_', "");
                let v: f64 = s.parse().map_err(|_| format!("`{raw}` is not a number"))?;
                if v.is_nan() {
                    return Ok(format!("{t}::NAN"));
                }
                if v.is_infinite() {
                    return Ok(format!("{t}::{}", if v > 0.0 { "INFINITY" } else { "NEG_INFINITY" }));
                }
                if *t == "f32" && v.abs() > f32::MAX as f64 {
                    return Err(format!("{v} is out of range for f32"));
                }
                Ok(format!("{v:?}")) // Debug always keeps a `.` or exponent: `3.0`, `1e-5`
            }
            Ty::Bool => match raw.trim() {
                "true" => Ok("true".into()),
                "false" => Ok("false".into()),
                _ => Err(format!("`{raw}` is not a bool (true or false)")),
            },
            Ty::String => Ok(format!("String::from({raw:?})")),
            Ty::Str => Ok(format!("{raw:?}")),
            Ty::Vec(inner) => {
                if raw.trim().is_empty() {
                    return Ok("vec![]".into());
                }
                let items: std::result::Result<Vec<String>, String> = raw.split(',').map(|x| {
                    let x = if matches!(**inner, Ty::String | Ty::Str) { x.trim() } else { x };
                    inner.literal(x)
                }).collect();
                Ok(format!("vec![{}]", items?.join(", ")))
            }
            Ty::Option(inner) => {
                if raw == "None" || raw == "none" {
                    Ok("None".into())
                } else {
                    Ok(format!("Some({})", inner.literal(raw)?))
                }
            }
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Int(t) | Ty::Float(t) => write!(f, "{t}"),
            Ty::Bool => write!(f, "bool"),
            Ty::String => write!(f, "String"),
            Ty::Str => write!(f, "&str"),
            Ty::Vec(t) => write!(f, "Vec<{t}>"),
            Ty::Option(t) => write!(f, "Option<{t}>"),
        }
    }
}

/// One `let` binding found in a parameters cell.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    /// The type as written, if annotated.
    pub ty_src: Option<String>,
    /// Byte range of the value expression in the cell source (between `=` and `;`).
    pub value: Range<usize>,
    /// 1-based line of the `let` within the cell.
    pub line: usize,
}

impl Param {
    pub fn ty(&self) -> Option<Ty> {
        self.ty_src.as_deref().and_then(Ty::parse)
    }
}

/// Finds every top-level `let NAME[: TYPE] = VALUE;` in a parameters cell.
pub fn scan(src: &str) -> Vec<Param> {
    let mut out = Vec::new();
    let mut line_start = 0;
    let mut line_no = 1;
    let mut skip_until = 0; // byte offset: inside a value already scanned
    while line_start < src.len() {
        let line_end = src[line_start..].find('\n').map_or(src.len(), |i| line_start + i);
        if line_start >= skip_until {
            if let Some(p) = parse_let(src, line_start, line_end, line_no) {
                skip_until = p.value.end;
                out.push(p);
            }
        }
        line_start = line_end + 1;
        line_no += 1;
    }
    out
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch == '_' || ch.is_alphabetic()) && c.all(|ch| ch == '_' || ch.is_alphanumeric())
}

fn parse_let(src: &str, start: usize, end: usize, line: usize) -> Option<Param> {
    let text = &src[start..end];
    let trimmed = text.trim_start();
    let rest = trimmed.strip_prefix("let")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim_start();
    let rest = rest.strip_prefix("mut ").map(str::trim_start).unwrap_or(rest);
    let eq = rest.find('=')?;
    let head = &rest[..eq];
    if rest[eq..].starts_with("==") {
        return None;
    }
    let (name, ty_src) = match head.find(':') {
        Some(c) => (head[..c].trim(), Some(head[c + 1..].trim().to_string())),
        None => (head.trim(), None),
    };
    if !is_ident(name) {
        return None;
    }
    let value_start = start + (text.len() - trimmed.len()) + (trimmed.len() - rest.len()) + eq + 1;
    let value_end = find_statement_end(src, value_start)?;
    Some(Param { name: name.to_string(), ty_src, value: value_start..value_end, line })
}

/// Offset of the `;` ending the statement that starts at `from`: the first `;` outside string and
/// char literals, comments and brackets.
fn find_statement_end(src: &str, from: usize) -> Option<usize> {
    let b = src.as_bytes();
    let mut i = from;
    let mut depth = 0i32;
    while i < b.len() {
        match b[i] {
            b'"' => i = skip_string(b, i + 1)?,
            b'r' if (i == 0 || !is_ident_byte(b[i - 1])) && matches!(b.get(i + 1), Some(b'"') | Some(b'#')) => {
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
                let pos = b[j + 1..].windows(close.len()).position(|w| w == close.as_slice())?;
                i = j + 1 + pos + close.len();
            }
            b'\'' => {
                // char literal ('a', '\n', '\u{1F600}') or a lifetime/label ('static)
                if b.get(i + 1) == Some(&b'\\') {
                    let close = src[i + 2..].find('\'')?;
                    i = i + 2 + close + 1;
                } else {
                    let ch_len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    if b.get(i + 1 + ch_len) == Some(&b'\'') {
                        i += 2 + ch_len;
                    } else {
                        i += 1;
                    }
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => i = src[i..].find('\n').map_or(b.len(), |n| i + n),
            b'/' if b.get(i + 1) == Some(&b'*') => i = src[i + 2..].find("*/").map(|n| i + 2 + n + 2)?,
            b'(' | b'[' | b'{' => {
                depth += 1;
                i += 1;
            }
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
                i += 1;
            }
            b';' if depth == 0 => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn is_ident_byte(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// A `-p NAME=VALUE` from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub name: String,
    pub raw: String,
}

impl std::str::FromStr for Override {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (name, raw) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected NAME=VALUE"))?;
        let name = name.trim();
        if !is_ident(name) {
            return Err(format!("`{name}` is not a parameter name"));
        }
        Ok(Override { name: name.to_string(), raw: raw.to_string() })
    }
}

/// Rewrites the values of the overridden parameters in a parameters cell. Every override must name
/// a typed, settable parameter of this cell and its value must parse as that type. Returns the new
/// source.
pub fn rewrite(src: &str, overrides: &[Override]) -> Result<String> {
    let params = scan(src);
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    for o in overrides {
        let Some(p) = params.iter().find(|p| p.name == o.name) else {
            let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
            bail!("unknown parameter `{}` (this notebook's parameters: {})", o.name, if names.is_empty() { "none".into() } else { names.join(", ") });
        };
        let Some(ty_src) = &p.ty_src else {
            bail!("parameter `{}` (line {} of the parameters cell) has no type annotation; declare it as `let {}: TYPE = …;` so -p can keep its type", p.name, p.line, p.name);
        };
        let Some(ty) = p.ty() else {
            bail!("parameter `{}` has type `{ty_src}`, which cannot be set from the command line (supported: {SUPPORTED})", p.name);
        };
        let lit = ty.literal(&o.raw).map_err(|e| anyhow::anyhow!("-p {}={}: {e} (`{}` is declared `{ty_src}`)", o.name, o.raw, o.name))?;
        edits.retain(|(r, _)| *r != p.value); // the last -p for a name wins
        edits.push((p.value.clone(), format!(" {lit}")));
    }
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = src.to_string();
    for (r, text) in edits {
        out.replace_range(r, &text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ov(s: &str) -> Override {
        s.parse().unwrap()
    }

    const CELL: &str = r#"// defaults
let model: Option<String> = None; // None = SmolLM2 from ../shared
let prompt: String = "The cat; sat".to_string();
let seed: u64 = 0;
let n_rep: usize = 2;
let temp: f64 = 1.5;
let ratio: f32 = 0.25;
let verbose: bool = false;
let layers: Vec<usize> = vec![0, 1];
let tags: Vec<String> = vec![];
let label: &str = "x";
let offset: i64 = -3;
let map: std::collections::HashMap<u32, u32> = Default::default();
let untyped = 3;
let long: String = qi_path()
    .map(|p| { let s = p; s.to_string() })
    .unwrap_or_default();
"#;

    #[test]
    fn scans_typed_and_untyped_lets() {
        let ps = scan(CELL);
        let names: Vec<&str> = ps.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["model", "prompt", "seed", "n_rep", "temp", "ratio", "verbose", "layers", "tags", "label", "offset", "map", "untyped", "long"]);
        let prompt = &ps[1];
        assert_eq!(&CELL[prompt.value.clone()], r#" "The cat; sat".to_string()"#);
        let long = ps.last().unwrap();
        assert!(CELL[long.value.clone()].ends_with(".unwrap_or_default()"));
        assert_eq!(ps[12].ty_src, None);
    }

    #[test]
    fn rewrites_keep_types() {
        let out = rewrite(
            CELL,
            &[
                ov("model=../shared/m.gguf"),
                ov("prompt=He said \"hi\"; then left"),
                ov("seed=42"),
                ov("n_rep=1_000"),
                ov("temp=3"),
                ov("ratio=1e-3"),
                ov("verbose=true"),
                ov("layers=3, 4,5"),
                ov("tags=a, b"),
                ov("label=y"),
                ov("offset=-7"),
                ov("long=z"),
            ],
        )
        .unwrap();
        assert!(out.contains(r#"let model: Option<String> = Some(String::from("../shared/m.gguf")); // None = SmolLM2"#), "{out}");
        assert!(out.contains(r#"let prompt: String = String::from("He said \"hi\"; then left");"#), "{out}");
        assert!(out.contains("let seed: u64 = 42;"));
        assert!(out.contains("let n_rep: usize = 1000;"));
        assert!(out.contains("let temp: f64 = 3.0;"));
        assert!(out.contains("let ratio: f32 = 0.001;"));
        assert!(out.contains("let verbose: bool = true;"));
        assert!(out.contains("let layers: Vec<usize> = vec![3, 4, 5];"));
        assert!(out.contains(r#"let tags: Vec<String> = vec![String::from("a"), String::from("b")];"#));
        assert!(out.contains(r#"let label: &str = "y";"#));
        assert!(out.contains("let offset: i64 = -7;"));
        assert!(out.contains(r#"let long: String = String::from("z");"#), "{out}");
        assert!(out.contains("let untyped = 3;"));
        assert!(!out.contains("qi_path"));
        // untouched lines stay byte-identical
        assert!(out.starts_with("// defaults\n"));
    }

    #[test]
    fn option_none_and_empty_vec() {
        let out = rewrite(CELL, &[ov("model=None"), ov("layers=")]).unwrap();
        assert!(out.contains("let model: Option<String> = None;"));
        assert!(out.contains("let layers: Vec<usize> = vec![];"));
        let src = "let k: Option<usize> = Some(3);\n";
        assert_eq!(rewrite(src, &[ov("k=5")]).unwrap(), "let k: Option<usize> = Some(5);\n");
        assert!(rewrite(src, &[ov("k=five")]).is_err());
    }

    #[test]
    fn type_errors_are_clear() {
        let e = rewrite(CELL, &[ov("n_rep=-1")]).unwrap_err().to_string();
        assert!(e.contains("out of range for usize") && e.contains("n_rep"), "{e}");
        let e = rewrite(CELL, &[ov("seed=abc")]).unwrap_err().to_string();
        assert!(e.contains("`abc` is not an integer") && e.contains("declared `u64`"), "{e}");
        let e = rewrite(CELL, &[ov("temp=hot")]).unwrap_err().to_string();
        assert!(e.contains("not a number"), "{e}");
        let e = rewrite(CELL, &[ov("verbose=yes")]).unwrap_err().to_string();
        assert!(e.contains("not a bool"), "{e}");
        let e = rewrite(CELL, &[ov("layers=1,x")]).unwrap_err().to_string();
        assert!(e.contains("`x` is not an integer"), "{e}");
        let e = rewrite(CELL, &[ov("map=1")]).unwrap_err().to_string();
        assert!(e.contains("cannot be set from the command line"), "{e}");
        let e = rewrite(CELL, &[ov("untyped=4")]).unwrap_err().to_string();
        assert!(e.contains("no type annotation"), "{e}");
        let e = rewrite("let x: u8 = 1;", &[ov("x=256")]).unwrap_err().to_string();
        assert!(e.contains("out of range for u8"), "{e}");
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = rewrite(CELL, &[ov("n_reps=3")]).unwrap_err().to_string();
        assert!(e.contains("unknown parameter `n_reps`") && e.contains("n_rep"), "{e}");
        assert!("noequals".parse::<Override>().is_err());
        assert!("2x=3".parse::<Override>().is_err());
        assert_eq!("a=b=c".parse::<Override>().unwrap(), Override { name: "a".into(), raw: "b=c".into() });
    }

    #[test]
    fn types_parse() {
        assert_eq!(Ty::parse("Vec< f64 >"), Some(Ty::Vec(Box::new(Ty::Float("f64")))));
        assert_eq!(Ty::parse("&'static str"), Some(Ty::Str));
        assert_eq!(Ty::parse("Option<Vec<u32>>"), Some(Ty::Option(Box::new(Ty::Vec(Box::new(Ty::Int("u32")))))));
        assert_eq!(Ty::parse("Vec<Vec<u32>>"), None);
        assert_eq!(Ty::parse("PathBuf"), None);
        assert_eq!(Ty::Float("f64").literal("inf").unwrap(), "f64::INFINITY");
    }

    #[test]
    fn tricky_values_scan() {
        let src = "let url: &str = \"http://x;y\"; // c\nlet c: char = ';';\nlet r: &str = r#\"a\";b\"#;\nlet z: u32 = { 1; 2 };\n";
        let ps = scan(src);
        assert_eq!(ps.len(), 4);
        assert_eq!(&src[ps[0].value.clone()], " \"http://x;y\"");
        assert_eq!(&src[ps[1].value.clone()], " ';'");
        assert_eq!(&src[ps[2].value.clone()], " r#\"a\";b\"#");
        assert_eq!(&src[ps[3].value.clone()], " { 1; 2 }");
    }
}
