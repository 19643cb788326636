//! Reading, checking, stripping and writing .ipynb files (nbformat 4) as plain JSON.
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Notebook {
    pub path: PathBuf,
    pub json: Value,
}

impl Notebook {
    /// Reads and validates the structure this runner relies on; errors name the file.
    pub fn load(path: &Path) -> Result<Notebook> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Notebook::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Notebook> {
        let bad = |why: String| anyhow!("{}: not a valid notebook: {why}", path.display());
        let json: Value = serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let obj = json.as_object().ok_or_else(|| bad("the top level is not a JSON object".into()))?;
        match obj.get("nbformat").and_then(Value::as_u64) {
            Some(4) => {}
            Some(v) => return Err(bad(format!("nbformat {v} (only version 4 is supported)"))),
            None => return Err(bad("no \"nbformat\" field".into())),
        }
        let cells = obj.get("cells").and_then(Value::as_array).ok_or_else(|| bad("no \"cells\" array".into()))?;
        for (i, c) in cells.iter().enumerate() {
            let kind = c.get("cell_type").and_then(Value::as_str).ok_or_else(|| bad(format!("cell {i} has no \"cell_type\"")))?;
            match c.get("source") {
                Some(Value::String(_)) => {}
                Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
                _ => return Err(bad(format!("cell {i} has no \"source\" text"))),
            }
            if kind == "code" && !c.get("outputs").is_none_or(Value::is_array) {
                return Err(bad(format!("cell {i}: \"outputs\" is not an array")));
            }
        }
        Ok(Notebook { path: path.to_path_buf(), json })
    }

    pub fn cells(&self) -> &Vec<Value> {
        self.json["cells"].as_array().expect("validated")
    }

    pub fn cells_mut(&mut self) -> &mut Vec<Value> {
        self.json["cells"].as_array_mut().expect("validated")
    }

    pub fn name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()
    }

    pub fn kernel_name(&self) -> Option<String> {
        self.json.pointer("/metadata/kernelspec/name").and_then(Value::as_str).map(str::to_string)
    }

    /// Index of the cell tagged `parameters`; more than one is an error.
    pub fn parameters_cell(&self) -> Result<Option<usize>> {
        let tagged: Vec<usize> = self
            .cells()
            .iter()
            .enumerate()
            .filter(|(_, c)| c.pointer("/metadata/tags").and_then(Value::as_array).is_some_and(|t| t.iter().any(|x| x == "parameters")))
            .map(|(i, _)| i)
            .collect();
        match tagged.as_slice() {
            [] => Ok(None),
            [i] => {
                if self.cells()[*i]["cell_type"] != "code" {
                    bail!("{}: the cell tagged `parameters` (cell {i}) is not a code cell", self.path.display());
                }
                Ok(Some(*i))
            }
            many => bail!("{}: {} cells are tagged `parameters` ({many:?}); tag exactly one", self.path.display(), many.len()),
        }
    }

    /// Names of the parameters declared in the parameters cell (empty without one).
    pub fn parameter_names(&self) -> Result<Vec<String>> {
        Ok(match self.parameters_cell()? {
            None => vec![],
            Some(i) => crate::params::scan(&source(&self.cells()[i])).into_iter().map(|p| p.name).collect(),
        })
    }

    /// Code cells with outputs or execution counts: (cell index, what is wrong, first line).
    pub fn unstripped(&self) -> Vec<(usize, String, String)> {
        let mut out = vec![];
        for (i, c) in self.cells().iter().enumerate() {
            if c["cell_type"] != "code" {
                continue;
            }
            let mut why = vec![];
            if c.get("outputs").and_then(Value::as_array).is_some_and(|o| !o.is_empty()) {
                why.push("outputs");
            }
            if c.get("execution_count").is_some_and(|e| !e.is_null()) {
                why.push("an execution count");
            }
            if c.pointer("/metadata/execution").is_some() || c.pointer("/metadata/qi_nb").is_some() {
                why.push("execution timings");
            }
            if !why.is_empty() {
                out.push((i, why.join(", "), first_line(&source(c))));
            }
        }
        out
    }

    /// Removes outputs, execution counts and run metadata. Returns whether anything changed.
    pub fn strip(&mut self) -> bool {
        let before = self.json.clone();
        for c in self.cells_mut() {
            if c["cell_type"] == "code" {
                c["outputs"] = Value::Array(vec![]);
                c["execution_count"] = Value::Null;
            }
            if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("execution");
                m.remove("qi_nb");
            }
        }
        if let Some(m) = self.json.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("qi_nb");
        }
        self.json != before
    }

    /// Serializes as nbformat does (sorted keys, one-space indent, UTF-8, trailing newline), so a
    /// stripped notebook diffs cleanly against one saved by Jupyter.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        write_json(&self.json, 0, &mut s);
        s.push('\n');
        s
    }

    /// Writes atomically (temporary file beside the target, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_text().as_bytes())
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().with_context(|| format!("{}: not a file path", path.display()))?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}

/// The source text of a cell (nbformat allows a string or a list of lines).
pub fn source(cell: &Value) -> String {
    match &cell["source"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

/// Stores source text as a list of lines, the way nbformat writes it.
pub fn set_source(cell: &mut Value, text: &str) {
    let lines: Vec<Value> = text.split_inclusive('\n').map(|l| Value::String(l.to_string())).collect();
    cell["source"] = Value::Array(lines);
}

/// The first line worth showing in a progress line: not blank, and not a comment unless the
/// cell has nothing else.
pub fn first_line(src: &str) -> String {
    let mut lines = src.lines().map(str::trim).filter(|l| !l.is_empty());
    let telling = |l: &&str| !l.is_empty() && !l.starts_with("//") && l.chars().any(char::is_alphanumeric);
    let l = src.lines().map(str::trim).find(telling).or_else(|| lines.next()).unwrap_or("");
    if l.chars().count() > 60 {
        format!("{}…", l.chars().take(59).collect::<String>())
    } else {
        l.to_string()
    }
}

fn write_json(v: &Value, indent: usize, out: &mut String) {
    let pad = |n: usize, out: &mut String| out.extend(std::iter::repeat_n(' ', n));
    match v {
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Array(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                pad(indent + 1, out);
                write_json(x, indent + 1, out);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            pad(indent, out);
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("{\n");
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.iter().enumerate() {
                pad(indent + 1, out);
                out.push_str(&serde_json::to_string(k).expect("string"));
                out.push_str(": ");
                write_json(&m[*k], indent + 1, out);
                out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
            }
            pad(indent, out);
            out.push('}');
        }
        other => out.push_str(&serde_json::to_string(other).expect("scalar")),
    }
}

/// `*.ipynb` files: the file itself, or those directly inside a folder, sorted by name.
pub fn collect(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        bail!("{}: no such notebook or folder", path.display());
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ipynb") && p.is_file())
        .collect();
    v.sort();
    if v.is_empty() {
        bail!("{}: no .ipynb files in this folder", path.display());
    }
    Ok(v)
}

/// A fresh object for notebook or cell metadata.
pub fn metadata_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = Value::Object(Map::new());
    }
    v["metadata"].as_object_mut().expect("object")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NB: &str = r##"{
 "cells": [
  {
   "cell_type": "markdown",
   "id": "a",
   "metadata": {},
   "source": ["# Title\n", "text"]
  },
  {
   "cell_type": "code",
   "execution_count": 3,
   "id": "b",
   "metadata": {"tags": ["parameters"], "execution": {"shell.execute_reply": "x"}},
   "outputs": [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}],
   "source": ["let n: usize = 3;\n", "let s: String = \"é\".into();"]
  }
 ],
 "metadata": {"kernelspec": {"name": "rust", "display_name": "Rust", "language": "rust"}},
 "nbformat": 4,
 "nbformat_minor": 5
}"##;

    #[test]
    fn strip_and_check() {
        let mut nb = Notebook::parse(Path::new("t.ipynb"), NB).unwrap();
        let bad = nb.unstripped();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 1);
        assert!(bad[0].1.contains("outputs") && bad[0].1.contains("execution count"), "{:?}", bad);
        assert_eq!(bad[0].2, "let n: usize = 3;");
        assert!(nb.strip());
        assert!(nb.unstripped().is_empty());
        assert!(!nb.strip(), "stripping twice changes nothing");
        let text = nb.to_text();
        assert!(text.contains("\"outputs\": [],\n   \"source\": [\n    \"let n: usize = 3;\\n\","), "{text}");
        assert!(text.contains("é"), "UTF-8 kept as is, like nbformat");
        assert!(text.contains("\"tags\": [\n     \"parameters\"\n    ]"), "{text}");
        // round trip is stable
        let again = Notebook::parse(Path::new("t.ipynb"), &text).unwrap();
        assert_eq!(again.to_text(), text);
        assert_eq!(nb.parameters_cell().unwrap(), Some(1));
        assert_eq!(nb.parameter_names().unwrap(), ["n", "s"]);
        assert_eq!(nb.kernel_name().as_deref(), Some("rust"));
    }

    #[test]
    fn malformed_notebooks_name_the_file() {
        let e = Notebook::parse(Path::new("dir/broken.ipynb"), "{\"cells\": [").unwrap_err().to_string();
        assert!(e.starts_with("dir/broken.ipynb: not a valid notebook: invalid JSON"), "{e}");
        let e = Notebook::parse(Path::new("x.ipynb"), r#"{"cells": [], "nbformat": 3}"#).unwrap_err().to_string();
        assert!(e.contains("x.ipynb") && e.contains("nbformat 3"), "{e}");
        let e = Notebook::parse(Path::new("x.ipynb"), r#"{"nbformat": 4}"#).unwrap_err().to_string();
        assert!(e.contains("no \"cells\" array"), "{e}");
        let e = Notebook::parse(Path::new("x.ipynb"), r#"{"nbformat": 4, "cells": [{"cell_type": "code"}]}"#).unwrap_err().to_string();
        assert!(e.contains("cell 0 has no \"source\""), "{e}");
        let e = Notebook::parse(Path::new("x.ipynb"), "[1]").unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
    }

    #[test]
    fn two_parameters_cells_are_an_error() {
        let two = NB.replace(r#""metadata": {},"#, r#""metadata": {"tags": ["parameters"]},"#);
        let nb = Notebook::parse(Path::new("t.ipynb"), &two).unwrap();
        assert!(nb.parameters_cell().is_err());
    }

    #[test]
    fn source_lines_round_trip() {
        let mut c = serde_json::json!({"cell_type": "code", "source": "a\nb\n"});
        assert_eq!(source(&c), "a\nb\n");
        set_source(&mut c, "x\ny");
        assert_eq!(c["source"], serde_json::json!(["x\n", "y"]));
        assert_eq!(first_line("\n  let a = 1;\nfoo"), "let a = 1;");
        assert_eq!(first_line("// note\n/// doc\nfn f() {}"), "fn f() {}");
        assert_eq!(first_line("// only a comment"), "// only a comment");
        assert_eq!(first_line("{\n    let a = 1;\n}"), "let a = 1;");
    }
}
