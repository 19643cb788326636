//! Compact storage of a quantized twin: each weight matrix as what the quantizer made of it, not
//! as f32. Three codecs cover the quantizers:
//! - **affine**: `v = f32(scale · n)` with an integer `n = offset + code` per row group of `group`
//!   input columns (RTN, GPTQ and AWQ grids, LLM.int8's row-wise int8): `bits`-bit codes, one
//!   scale (f32 when one reproduces the group, else f64) and one i16 offset per group;
//! - **codebook**: `v = f32(table[code] · absmax)` per block of the flattened matrix (NF4, FP4,
//!   with or without double quantization, whose dequantized absmax is what is stored);
//! - **ggml**: the GGML blocks themselves (candle's quantized tensors).
//!
//! Nothing is trusted to a model of the quantizer: every encoding is decoded and compared bit for
//! bit before it is accepted. A group no affine or codebook fit reproduces is kept verbatim (f32)
//! as an exception; a matrix with more than 1/32 of its groups so kept, or that no codec
//! reproduces, is stored plainly (f16 or bf16 when that is exact, else f32). Tensors the twin
//! shares bit for bit with the reference (unquantized embeddings, untouched norms) are not stored
//! at all: the file names them and [`load`] takes them from the reference, which the twin cache's
//! key pins by content.
//!
//! The file is a safetensors file ([`FILE`]) whose metadata entry `qi.compact` holds the layout
//! ([`Layout`]); each codec's arrays are tensors named `NAME#codes`, `NAME#scales`, … beside it.
use crate::quant::{Bnb4Type, GgmlKind, Granularity, QuantSpec};
use crate::HookedTransformer;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use crate::models::checkpoint::StFile;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The compact twin's weights file, inside a twin directory.
pub const FILE: &str = "twin.qi.safetensors";
const META_KEY: &str = "qi.compact";
/// Version of the layout below; a reader refuses any other.
pub const LAYOUT_VERSION: u32 = 1;
/// A matrix whose exceptions exceed this share of its groups is stored plainly instead.
const MAX_EXCEPTION_SHARE: f64 = 1.0 / 32.0;

/// How one tensor is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "codec", rename_all = "snake_case")]
pub enum Codec {
    /// Bit for bit the reference's tensor of the same name: not stored.
    Reference,
    /// Stored under its own name, in f32, or in f16/bf16 when that holds it exactly.
    Plain,
    /// `v = f32(scale[g] · (offset[g] + code))`, `g` = row group of `group` columns.
    Affine { rows: usize, cols: usize, group: usize, bits: u8, transposed: bool },
    /// `v = f32(table[code] · absmax[b])`, `b` = block of `block` values of the flattened matrix.
    Codebook { rows: usize, cols: usize, block: usize, bits: u8, transposed: bool },
    /// The blocks of a GGML type (`kind`, e.g. `q4_0`).
    Ggml { rows: usize, cols: usize, kind: String, transposed: bool },
}

impl Codec {
    /// A short name for summaries.
    pub fn label(&self) -> &'static str {
        match self {
            Codec::Reference => "reference",
            Codec::Plain => "plain",
            Codec::Affine { .. } => "affine",
            Codec::Codebook { .. } => "codebook",
            Codec::Ggml { .. } => "ggml",
        }
    }
}

/// The `qi.compact` metadata of a compact file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layout {
    pub version: u32,
    /// Every tensor of the twin's state dict, by its Hugging Face name.
    pub tensors: BTreeMap<String, Codec>,
}

/// The codecs worth trying for a quantization method, in order.
enum Hint {
    Affine(Option<usize>),
    Codebook(Vec<f32>, usize),
    Ggml(Vec<GgmlKind>),
    None,
}

fn hint(spec: &QuantSpec) -> Hint {
    match spec {
        QuantSpec::Rtn(r) => Hint::Affine(match r.granularity {
            Granularity::Group(g) => Some(g),
            Granularity::Row | Granularity::Tensor => None,
        }),
        QuantSpec::Gptq(g) => Hint::Affine(g.group),
        QuantSpec::Awq(a) => Hint::Affine(a.group),
        QuantSpec::Int8(_) | QuantSpec::W8a8 => Hint::Affine(None),
        QuantSpec::Nf4(b) => Hint::Codebook((0..16).map(|c| Bnb4Type::Nf4.decode(c)).collect(), b.block),
        QuantSpec::Fp4(b) => Hint::Codebook((0..16).map(|c| Bnb4Type::Fp4.decode(c)).collect(), b.block),
        QuantSpec::Ggml(g) => Hint::Ggml([Some(g.kind), g.kind.llama_cpp_fallback()].into_iter().flatten().collect()),
        _ => Hint::None,
    }
}

/// An encoded tensor: its codec and the arrays stored for it (name suffix, dtype, shape, bytes).
struct Encoded {
    codec: Codec,
    arrays: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
}

/// Bytes of `data` (little-endian on every platform qi builds for).
fn bytes_of<T: Copy>(data: &[T]) -> Vec<u8> {
    let n = std::mem::size_of_val(data);
    // SAFETY: plain numeric types, read as bytes
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, n) }.to_vec()
}

fn read_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Packs `bits`-bit codes LSB first.
fn pack(codes: &[u8], bits: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity((codes.len() * bits as usize).div_ceil(8));
    let (mut acc, mut n) = (0u32, 0u8);
    for &c in codes {
        acc |= (c as u32) << n;
        n += bits;
        while n >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            n -= 8;
        }
    }
    if n > 0 {
        out.push(acc as u8);
    }
    out
}

fn unpack(bytes: &[u8], bits: u8, count: usize) -> Result<Vec<u8>> {
    if bytes.len() != (count * bits as usize).div_ceil(8) {
        bail!("{} bytes of {bits}-bit codes for {count} values", bytes.len());
    }
    let mut out = vec![0u8; count];
    unpack_into(bytes, bits, &mut out);
    Ok(out)
}

/// Fills `out` with the first `out.len()` codes of `bytes` (which holds at least that many).
fn unpack_into(bytes: &[u8], bits: u8, out: &mut [u8]) {
    if bits == 4 {
        for (pair, &b) in out.chunks_mut(2).zip(bytes) {
            pair[0] = b & 0x0f;
            if let Some(hi) = pair.get_mut(1) {
                *hi = b >> 4;
            }
        }
        return;
    }
    let mask = (1u32 << bits) - 1;
    let (mut acc, mut n) = (0u32, 0u8);
    let mut it = bytes.iter();
    for o in out.iter_mut() {
        while n < bits {
            acc |= (*it.next().expect("enough bytes for the codes") as u32) << n;
            n += 8;
        }
        *o = (acc & mask) as u8;
        acc >>= bits;
        n -= bits;
    }
}

/// Calls `f(group index, its codes, its output)` for every group of `group` values, in parallel;
/// each group's codes are unpacked from its own bytes when groups start on byte boundaries.
fn for_each_group(packed: &[u8], bits: u8, group: usize, out: &mut [f32], f: impl Fn(usize, &[u8], &mut [f32]) + Sync) -> Result<()> {
    let n = out.len();
    if packed.len() != (n * bits as usize).div_ceil(8) {
        bail!("{} bytes of {bits}-bit codes for {n} values", packed.len());
    }
    if (group * bits as usize) % 8 == 0 {
        let per = group * bits as usize / 8;
        out.par_chunks_mut(group).enumerate().for_each_init(
            || vec![0u8; group],
            |codes, (g, o)| {
                unpack_into(&packed[g * per..(g + 1) * per], bits, codes);
                f(g, codes, o)
            },
        );
    } else {
        let codes = unpack(packed, bits, n)?;
        out.par_chunks_mut(group).zip(codes.par_chunks(group)).enumerate().for_each(|(g, (o, c))| f(g, c, o));
    }
    Ok(())
}

/// The interval of reals that round (to nearest) to the f32 `x`, ends included.
fn rounding_interval(x: f32) -> (f64, f64) {
    let (lo, hi) = (x.next_down() as f64, x.next_up() as f64);
    (0.5 * (lo + x as f64), 0.5 * (x as f64 + hi))
}

/// The affine decode of one value.
#[inline]
fn affine_value(scale: f64, n: i32) -> f32 {
    (scale * n as f64) as f32
}

/// A fit of one group: scale, smallest `n`, and each value's `n - offset`.
struct AffineFit {
    scale: f64,
    offset: i32,
    codes: Vec<u8>,
}

/// Finds `scale` and integers `n` with `f32(scale · n) == v` bit for bit for every value, the
/// `n` spanning at most `levels` consecutive integers. The smallest gap between distinct values
/// estimates the scale (groups hold adjacent levels); the rounding intervals of all values then
/// pin it, and an f32 inside them is preferred (RTN and AWQ compute in f32, GPTQ in f64).
fn fit_affine(v: &[f32], levels: u32) -> Option<AffineFit> {
    if v.iter().all(|x| x.to_bits() == 0) {
        return Some(AffineFit { scale: 0.0, offset: 0, codes: vec![0; v.len()] });
    }
    let mut d: Vec<f32> = v.to_vec();
    d.sort_by(f32::total_cmp);
    d.dedup_by(|a, b| a == b);
    let gap = d.windows(2).map(|w| w[1] as f64 - w[0] as f64).fold(f64::INFINITY, f64::min);
    let est = if gap.is_finite() { gap } else { d[0].abs() as f64 };
    if est <= 0.0 || !est.is_finite() {
        return None;
    }
    let mut n = Vec::with_capacity(v.len());
    for &x in v {
        let r = x as f64 / est;
        let k = r.round();
        if (r - k).abs() > 0.25 || k.abs() > 1e6 {
            return None;
        }
        n.push(k as i32);
    }
    let (lo_n, hi_n) = (*n.iter().min()?, *n.iter().max()?);
    if (hi_n - lo_n) as u32 >= levels {
        return None;
    }
    let (mut lo, mut hi) = (0f64, f64::INFINITY);
    for (&x, &k) in v.iter().zip(&n) {
        if k == 0 {
            continue;
        }
        let (a, b) = rounding_interval(x);
        let (a, b) = if k > 0 { (a / k as f64, b / k as f64) } else { (b / k as f64, a / k as f64) };
        lo = lo.max(a);
        hi = hi.min(b);
    }
    if lo > hi {
        return None;
    }
    let mid = if hi.is_finite() { 0.5 * (lo + hi) } else { est };
    let m32 = mid as f32;
    let candidates = [m32 as f64, m32.next_up() as f64, m32.next_down() as f64, mid, lo, hi];
    let scale = candidates.into_iter().find(|&s| s > 0.0 && v.iter().zip(&n).all(|(&x, &k)| affine_value(s, k).to_bits() == x.to_bits()))?;
    Some(AffineFit { scale, offset: lo_n, codes: n.iter().map(|&k| (k - lo_n) as u8).collect() })
}

/// Finds `absmax` with every value equal to `f32(table[c] · absmax)` for some code `c`.
fn fit_codebook(v: &[f32], table: &[f32]) -> Option<(f32, Vec<u8>)> {
    let tmax = table.iter().fold(0f32, |a, &t| a.max(t.abs()));
    let m = v.iter().fold(0f32, |a, &x| a.max(x.abs()));
    let a = m / tmax;
    'cand: for cand in [a, a.next_up(), a.next_down()] {
        let products: Vec<u32> = table.iter().map(|&t| (t * cand).to_bits()).collect();
        let mut codes = Vec::with_capacity(v.len());
        for &x in v {
            match products.iter().position(|&p| p == x.to_bits()) {
                Some(c) => codes.push(c as u8),
                None => continue 'cand,
            }
        }
        return Some((cand, codes));
    }
    None
}

fn bits_for(levels: usize) -> u8 {
    (usize::BITS - (levels.max(2) - 1).leading_zeros()) as u8
}

/// Groups of `w` (`group` values each) fitted in parallel; `None` when too many are exceptions.
fn fit_groups<F, T>(w: &[f32], group: usize, fit: F) -> Option<(Vec<Option<T>>, Vec<u32>)>
where
    F: Fn(&[f32]) -> Option<T> + Sync,
    T: Send,
{
    let fits: Vec<Option<T>> = w.par_chunks(group).map(&fit).collect();
    let exceptions: Vec<u32> = fits.iter().enumerate().filter(|(_, f)| f.is_none()).map(|(i, _)| i as u32).collect();
    if exceptions.len() as f64 > MAX_EXCEPTION_SHARE * fits.len() as f64 {
        return None;
    }
    Some((fits, exceptions))
}

fn exception_arrays(w: &[f32], group: usize, exceptions: &[u32]) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let vals: Vec<f32> = exceptions.iter().flat_map(|&g| w[g as usize * group..(g as usize + 1) * group].iter().copied()).collect();
    vec![
        ("exceptions".into(), Dtype::U32, vec![exceptions.len()], bytes_of(exceptions)),
        ("exception_values".into(), Dtype::F32, vec![vals.len()], bytes_of(&vals)),
    ]
}

fn encode_affine(w: &[f32], rows: usize, cols: usize, group: Option<usize>, transposed: bool) -> Option<Encoded> {
    let group = group.filter(|&g| g > 0 && cols % g == 0).unwrap_or(cols);
    let (fits, exceptions) = fit_groups(w, group, |v| fit_affine(v, 256))?;
    let span = fits.iter().flatten().flat_map(|f| f.codes.iter().copied().max()).max().unwrap_or(0) as usize + 1;
    let bits = bits_for(span);
    let all_f32 = fits.iter().flatten().all(|f| f.scale as f32 as f64 == f.scale);
    let mut codes = Vec::with_capacity(w.len());
    let (mut scales, mut offsets) = (Vec::with_capacity(fits.len()), Vec::with_capacity(fits.len()));
    for f in &fits {
        match f {
            Some(f) => {
                codes.extend_from_slice(&f.codes);
                scales.push(f.scale);
                offsets.push(i16::try_from(f.offset).ok()?);
            }
            None => {
                codes.extend(std::iter::repeat_n(0u8, group));
                scales.push(0.0);
                offsets.push(0);
            }
        }
    }
    let scales = if all_f32 {
        let s: Vec<f32> = scales.iter().map(|&s| s as f32).collect();
        ("scales".to_string(), Dtype::F32, vec![s.len()], bytes_of(&s))
    } else {
        ("scales".to_string(), Dtype::F64, vec![scales.len()], bytes_of(&scales))
    };
    let mut arrays = vec![
        ("codes".into(), Dtype::U8, vec![(w.len() * bits as usize).div_ceil(8)], pack(&codes, bits)),
        scales,
        ("offsets".into(), Dtype::I16, vec![offsets.len()], bytes_of(&offsets)),
    ];
    if !exceptions.is_empty() {
        arrays.extend(exception_arrays(w, group, &exceptions));
    }
    Some(Encoded { codec: Codec::Affine { rows, cols, group, bits, transposed }, arrays })
}

fn encode_codebook(w: &[f32], rows: usize, cols: usize, table: &[f32], block: usize, transposed: bool) -> Option<Encoded> {
    if block == 0 || w.len() % block != 0 {
        return None;
    }
    if table.is_empty() {
        return None;
    }
    let (fits, exceptions) = fit_groups(w, block, |v| fit_codebook(v, table))?;
    let bits = bits_for(table.len());
    // every code of the width indexes the stored table
    let mut table = table.to_vec();
    table.resize(1 << bits, table[table.len() - 1]);
    let mut codes = Vec::with_capacity(w.len());
    let mut absmax = Vec::with_capacity(fits.len());
    for f in &fits {
        match f {
            Some((a, c)) => {
                codes.extend_from_slice(c);
                absmax.push(*a);
            }
            None => {
                codes.extend(std::iter::repeat_n(0u8, block));
                absmax.push(0.0);
            }
        }
    }
    let mut arrays = vec![
        ("codes".into(), Dtype::U8, vec![(w.len() * bits as usize).div_ceil(8)], pack(&codes, bits)),
        ("table".into(), Dtype::F32, vec![table.len()], bytes_of(&table)),
        ("absmax".into(), Dtype::F32, vec![absmax.len()], bytes_of(&absmax)),
    ];
    if !exceptions.is_empty() {
        arrays.extend(exception_arrays(w, block, &exceptions));
    }
    Some(Encoded { codec: Codec::Codebook { rows, cols, block, bits, transposed }, arrays })
}

fn encode_ggml(t: &Tensor, w: &[f32], kind: GgmlKind, transposed: bool) -> Option<Encoded> {
    let (rows, cols) = t.dims2().ok()?;
    if cols % kind.block_size() != 0 {
        return None;
    }
    let q = candle_core::quantized::QTensor::quantize(t, kind.dtype()).ok()?;
    let back: Vec<f32> = q.dequantize(&Device::Cpu).ok()?.flatten_all().ok()?.to_vec1().ok()?;
    if back.iter().zip(w).any(|(a, b)| a.to_bits() != b.to_bits()) {
        return None;
    }
    let data = q.data().ok()?.to_vec();
    Some(Encoded { codec: Codec::Ggml { rows, cols, kind: kind.name().into(), transposed }, arrays: vec![("blocks".into(), Dtype::U8, vec![data.len()], data)] })
}

/// Stores `t` as is: in f16 or bf16 when that is exact, else in f32.
fn encode_plain(t: &Tensor, w: &[f32]) -> Result<Encoded> {
    for (dt, sd) in [(DType::F16, Dtype::F16), (DType::BF16, Dtype::BF16)] {
        let back: Vec<f32> = t.to_dtype(dt)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        if back.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()) {
            // candle's safetensors view gives the half-precision bytes
            let bytes = safetensors::View::data(&t.to_dtype(dt)?).to_vec();
            return Ok(Encoded { codec: Codec::Plain, arrays: vec![(String::new(), sd, t.dims().to_vec(), bytes)] });
        }
    }
    Ok(Encoded { codec: Codec::Plain, arrays: vec![(String::new(), Dtype::F32, t.dims().to_vec(), bytes_of(w))] })
}

/// Encodes one tensor of a twin quantized by `spec`. `t` is in the checkpoint's layout;
/// `transposed` says it is a linear's `[in, out]` (GPT-2's Conv1D), whose groups run along the
/// other axis.
fn encode(t: &Tensor, spec: &QuantSpec, transposed: bool) -> Result<Encoded> {
    let t = t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    let flat: Vec<f32> = t.flatten_all()?.to_vec1()?;
    if t.rank() != 2 {
        return encode_plain(&t, &flat);
    }
    let m = if transposed { t.t()?.contiguous()? } else { t.clone() };
    // the matrix in quantization order: the checkpoint's own values unless transposed
    let w: std::borrow::Cow<[f32]> = if transposed { m.flatten_all()?.to_vec1::<f32>()?.into() } else { flat.as_slice().into() };
    let (rows, cols) = m.dims2()?;
    let found = match hint(spec) {
        Hint::Affine(g) => encode_affine(&w, rows, cols, g, transposed),
        Hint::Codebook(table, block) => encode_codebook(&w, rows, cols, &table, block, transposed),
        Hint::Ggml(kinds) => kinds.into_iter().find_map(|k| encode_ggml(&m, &w, k, transposed)),
        Hint::None => None,
    };
    match found {
        Some(e) => Ok(e),
        None => encode_plain(&t, &flat),
    }
}

/// What [`save`] wrote: bytes of the file, and tensors and parameters per codec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub bytes: u64,
    pub tensors: BTreeMap<&'static str, usize>,
    pub params: BTreeMap<&'static str, usize>,
    /// Groups kept verbatim inside affine and codebook matrices.
    pub exceptions: usize,
}

/// Writes the compact form of `twin` (quantized from `reference` by `spec`) to `path`.
pub fn save(twin: &HookedTransformer, reference: &HookedTransformer, spec: &QuantSpec, path: &Path) -> Result<Summary> {
    let refs: HashMap<String, Tensor> = crate::models::hf_state_dict(reference)?.into_iter().collect();
    let transposed: std::collections::HashSet<String> =
        twin.blocks.iter().flat_map(|b| b.linears()).chain(std::iter::once(&twin.unembed)).filter(|l| l.transposed_in_checkpoint).map(|l| l.name.clone()).collect();
    let mut layout = Layout { version: LAYOUT_VERSION, tensors: BTreeMap::new() };
    let mut arrays: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut summary = Summary::default();
    for (name, t) in crate::models::hf_state_dict(twin)? {
        let e = match refs.get(&name) {
            Some(r) if crate::ops::same_bits(&t, r)? => Encoded { codec: Codec::Reference, arrays: vec![] },
            _ => encode(&t, spec, transposed.contains(&name)).with_context(|| format!("encoding '{name}'"))?,
        };
        *summary.tensors.entry(e.codec.label()).or_default() += 1;
        *summary.params.entry(e.codec.label()).or_default() += t.elem_count();
        for (suffix, dt, shape, bytes) in e.arrays {
            if suffix == "exceptions" {
                summary.exceptions += shape[0];
            }
            let key = if suffix.is_empty() { name.clone() } else { format!("{name}#{suffix}") };
            arrays.push((key, dt, shape, bytes));
        }
        layout.tensors.insert(name, e.codec);
    }
    let views: Vec<(String, TensorView)> = arrays
        .iter()
        .map(|(k, dt, shape, bytes)| Ok((k.clone(), TensorView::new(*dt, shape.clone(), bytes).map_err(|e| anyhow!("array '{k}': {e}"))?)))
        .collect::<Result<_>>()?;
    let meta = HashMap::from([(META_KEY.to_string(), serde_json::to_string(&layout)?)]);
    safetensors::serialize_to_file(views, Some(meta), path).map_err(|e| anyhow!("{}: cannot write: {e}", path.display()))?;
    summary.bytes = std::fs::metadata(path)?.len();
    Ok(summary)
}

/// One stored array of a compact file, checked against the length it must have; read from the
/// file when asked for, so loading holds one tensor's arrays at a time, not the whole file.
fn array(st: &StFile, path: &Path, key: &str, dtype: Dtype, len: usize) -> Result<Vec<u8>> {
    let (dt, shape) = st.info(key).ok_or_else(|| anyhow!("{}: array '{key}' is missing", path.display()))?;
    let n: usize = shape.iter().product();
    if dt != dtype || n != len {
        bail!("{}: array '{key}' is {dt:?} × {n}, expected {dtype:?} × {len}", path.display());
    }
    st.bytes(key)?.ok_or_else(|| anyhow!("{}: array '{key}' is missing", path.display()))
}

fn scales_of(st: &StFile, path: &Path, key: &str, len: usize) -> Result<Vec<f64>> {
    let (dt, _) = st.info(key).ok_or_else(|| anyhow!("{}: array '{key}' is missing", path.display()))?;
    match dt {
        Dtype::F32 => Ok(read_f32(&array(st, path, key, Dtype::F32, len)?).into_iter().map(f64::from).collect()),
        _ => Ok(array(st, path, key, Dtype::F64, len)?.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()),
    }
}

/// Puts the verbatim groups back.
fn apply_exceptions(st: &StFile, path: &Path, name: &str, out: &mut [f32], group: usize) -> Result<()> {
    let key = format!("{name}#exceptions");
    let Some((_, shape)) = st.info(&key) else { return Ok(()) };
    let n: usize = shape.iter().product();
    let idx: Vec<u32> = array(st, path, &key, Dtype::U32, n)?.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
    let vals = read_f32(&array(st, path, &format!("{name}#exception_values"), Dtype::F32, n * group)?);
    for (k, &g) in idx.iter().enumerate() {
        let at = g as usize * group;
        if at + group > out.len() {
            bail!("{}: exception group {g} of '{name}' is outside the matrix", path.display());
        }
        out[at..at + group].copy_from_slice(&vals[k * group..(k + 1) * group]);
    }
    Ok(())
}

fn decode(st: &StFile, path: &Path, name: &str, codec: &Codec, reference: &HashMap<String, Tensor>) -> Result<Tensor> {
    let matrix = |data: Vec<f32>, rows: usize, cols: usize, transposed: bool| -> Result<Tensor> {
        let t = Tensor::from_vec(data, (rows, cols), &Device::Cpu)?;
        Ok(if transposed { t.t()?.contiguous()? } else { t })
    };
    match codec {
        Codec::Reference => reference.get(name).cloned().ok_or_else(|| anyhow!("{}: '{name}' is the reference's, which has no such tensor", path.display())),
        Codec::Plain => {
            let (dtype, shape) = st.info(name).ok_or_else(|| anyhow!("{}: tensor '{name}' is missing", path.display()))?;
            let dt = match dtype {
                Dtype::F32 => DType::F32,
                Dtype::F16 => DType::F16,
                Dtype::BF16 => DType::BF16,
                d => bail!("{}: tensor '{name}' is {d:?}, expected F32, F16 or BF16", path.display()),
            };
            let shape = shape.to_vec();
            let bytes = st.bytes(name)?.ok_or_else(|| anyhow!("{}: tensor '{name}' is missing", path.display()))?;
            Ok(Tensor::from_raw_buffer(&bytes, dt, &shape, &Device::Cpu)?.to_dtype(DType::F32)?)
        }
        &Codec::Affine { rows, cols, group, bits, transposed } => {
            if group == 0 || cols % group != 0 || !(1..=8).contains(&bits) {
                bail!("{}: '{name}' has an invalid affine layout (group {group}, {bits} bits, {cols} columns)", path.display());
            }
            let (n, groups) = (rows * cols, rows * cols / group);
            let packed = array(st, path, &format!("{name}#codes"), Dtype::U8, (n * bits as usize).div_ceil(8))?;
            let scales = scales_of(st, path, &format!("{name}#scales"), groups)?;
            let offsets: Vec<i16> = array(st, path, &format!("{name}#offsets"), Dtype::I16, groups)?.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
            let mut out = vec![0f32; n];
            for_each_group(&packed, bits, group, &mut out, |g, c, o| {
                // the 2^bits values of this group, then one lookup per weight
                let mut levels = [0f32; 256];
                for (k, l) in levels.iter_mut().take(1 << bits).enumerate() {
                    *l = affine_value(scales[g], offsets[g] as i32 + k as i32);
                }
                for (o, &c) in o.iter_mut().zip(c) {
                    *o = levels[c as usize];
                }
            })?;
            apply_exceptions(st, path, name, &mut out, group)?;
            matrix(out, rows, cols, transposed)
        }
        &Codec::Codebook { rows, cols, block, bits, transposed } => {
            let n = rows * cols;
            if block == 0 || n % block != 0 || !(1..=8).contains(&bits) {
                bail!("{}: '{name}' has an invalid codebook layout (block {block}, {bits} bits)", path.display());
            }
            let packed = array(st, path, &format!("{name}#codes"), Dtype::U8, (n * bits as usize).div_ceil(8))?;
            let table = read_f32(&array(st, path, &format!("{name}#table"), Dtype::F32, 1 << bits)?);
            let absmax = read_f32(&array(st, path, &format!("{name}#absmax"), Dtype::F32, n / block)?);
            let mut out = vec![0f32; n];
            for_each_group(&packed, bits, block, &mut out, |b, c, o| {
                for (o, &c) in o.iter_mut().zip(c) {
                    *o = table[c as usize] * absmax[b];
                }
            })?;
            apply_exceptions(st, path, name, &mut out, block)?;
            matrix(out, rows, cols, transposed)
        }
        Codec::Ggml { rows, cols, kind, transposed } => {
            let k = GgmlKind::from_name(kind).ok_or_else(|| anyhow!("{}: '{name}' has unknown GGML type '{kind}'", path.display()))?;
            let key = format!("{name}#blocks");
            let want = rows * cols / k.block_size() * k.dtype().type_size();
            let q = candle_core::quantized::ggml_file::qtensor_from_ggml(k.dtype(), &array(st, path, &key, Dtype::U8, want)?, vec![*rows, *cols], &Device::Cpu)?;
            let t = q.dequantize(&Device::Cpu)?;
            Ok(if *transposed { t.t()?.contiguous()? } else { t })
        }
    }
}

/// Reads a compact file written by [`save`]: every tensor of the twin by its Hugging Face name
/// (those shared with `reference` are its own tensors), and each tensor's codec label.
pub fn load(path: &Path, reference: &HookedTransformer) -> Result<(HashMap<String, Tensor>, BTreeMap<String, String>)> {
    // header and offsets are checked on opening; arrays are read one tensor at a time
    let st = StFile::open(path)?;
    let text = st.metadata().and_then(|m| m.get(META_KEY)).ok_or_else(|| anyhow!("{}: no '{META_KEY}' layout; not a compact qi twin", path.display()))?;
    let layout: Layout = serde_json::from_str(text).with_context(|| format!("{}: the '{META_KEY}' layout is not valid", path.display()))?;
    if layout.version != LAYOUT_VERSION {
        bail!("{}: compact layout version {}, this qi reads version {LAYOUT_VERSION}", path.display(), layout.version);
    }
    let refs: HashMap<String, Tensor> = crate::models::hf_state_dict(reference)?.into_iter().collect();
    let mut tensors = HashMap::new();
    let mut types = BTreeMap::new();
    for (name, codec) in &layout.tensors {
        tensors.insert(name.clone(), decode(&st, path, name, codec, &refs)?);
        types.insert(name.clone(), codec.label().to_uppercase());
    }
    Ok((tensors, types))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_every_width() {
        for bits in 1..=8u8 {
            let codes: Vec<u8> = (0..1001u32).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8 & ((1u16 << bits) - 1) as u8).collect();
            let packed = pack(&codes, bits);
            assert_eq!(packed.len(), (1001 * bits as usize).div_ceil(8));
            assert_eq!(unpack(&packed, bits, 1001).unwrap(), codes, "{bits} bits");
        }
        assert!(unpack(&[0u8; 3], 4, 7).is_err(), "7 four-bit codes need 4 bytes");
    }

    #[test]
    fn affine_fit_reproduces_f32_and_f64_grids_and_rejects_what_is_off_grid() {
        // an f32 grid (RTN, AWQ): f32(s · n)
        let s = 0.0123f32;
        let n: Vec<i32> = (0..128).map(|i| (i * 7 % 16) - 8).collect();
        let v: Vec<f32> = n.iter().map(|&k| s * k as f32).collect();
        let f = fit_affine(&v, 16).unwrap();
        assert_eq!(f.scale, s as f64, "an f32 scale is found exactly");
        assert_eq!(f.offset, -8);
        let back: Vec<f32> = f.codes.iter().map(|&c| affine_value(f.scale, f.offset + c as i32)).collect();
        assert_eq!(back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        // an f64 grid (GPTQ): f32(f64 s · n), whose scale is not an f32
        let s = 0.012345678912345f64;
        let v: Vec<f32> = n.iter().map(|&k| (s * k as f64) as f32).collect();
        let f = fit_affine(&v, 16).unwrap();
        assert!(f.codes.iter().zip(&v).all(|(&c, x)| affine_value(f.scale, f.offset + c as i32).to_bits() == x.to_bits()));
        // more levels than allowed, one value off the grid, and a −0 (f32(s · 0) is +0)
        assert!(fit_affine(&v, 8).is_none());
        let mut off = v.clone();
        off[5] = off[5].next_up().next_up().next_up() * 1.001;
        assert!(fit_affine(&off, 16).is_none());
        let mut neg_zero = v.clone();
        let z = n.iter().position(|&k| k == 0).unwrap();
        neg_zero[z] = -0.0;
        assert!(fit_affine(&neg_zero, 16).is_none());
        assert_eq!(fit_affine(&[0.0; 8], 2).unwrap().scale, 0.0);
    }

    /// A weight matrix with a realistic spread (heavier tails than a uniform one).
    fn weights(rows: usize, cols: usize) -> Tensor {
        let mut rng = crate::rng::Rng::new(7);
        let v: Vec<f32> = (0..rows * cols).map(|_| (rng.normal() * 0.02) as f32).collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    fn stored_bytes(e: &Encoded) -> usize {
        e.arrays.iter().map(|a| a.3.len()).sum()
    }

    #[test]
    fn each_method_is_stored_by_its_codec_within_1_3_times_its_bits_and_decodes_exactly() {
        let (rows, cols) = (192, 768);
        let w = weights(rows, cols);
        let h = Tensor::eye(cols, DType::F32, &Device::Cpu).unwrap();
        let cases = [
            ("rtn:bits=4", "affine"),
            ("rtn:bits=4,group=128", "affine"),
            ("rtn:bits=3,group=64,sym=true", "affine"),
            ("rtn:bits=8", "affine"),
            ("gptq:bits=4", "affine"),
            ("gptq:bits=4,group=128", "affine"),
            ("nf4", "codebook"),
            ("nf4:double_quant=true", "codebook"),
            ("fp4", "codebook"),
            ("q4_0", "ggml"),
            ("q8_0", "ggml"),
            ("q5_1", "ggml"),
            ("fp16", "plain"),
        ];
        for (s, codec) in cases {
            let spec: QuantSpec = s.parse().unwrap();
            let q = crate::quant::quantize_weight(&w, &spec, "w", Some(&h), None).unwrap();
            let e = encode(&q, &spec, false).unwrap();
            assert_eq!(e.codec.label(), codec, "{s}");
            assert!(!e.arrays.iter().any(|a| a.0 == "exceptions"), "{s}: no group should need an exception");
            let bits = crate::quantize::bits_per_weight(&spec, rows, cols);
            let ratio = stored_bytes(&e) as f64 * 8.0 / (rows * cols) as f64 / bits;
            assert!(ratio <= 1.3, "{s}: {ratio:.3} × its {bits:.3} bits per weight");
            // decode through a real file
            let dir = std::env::temp_dir().join(format!("qi-compact-{}-{}", std::process::id(), crate::twin_cache::slug(s)));
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join("m.safetensors");
            let mut arrays: Vec<(String, TensorView)> = Vec::new();
            for (suffix, dt, shape, bytes) in &e.arrays {
                let key = if suffix.is_empty() { "w".to_string() } else { format!("w#{suffix}") };
                arrays.push((key, TensorView::new(*dt, shape.clone(), bytes).unwrap()));
            }
            safetensors::serialize_to_file(arrays, None, &file).unwrap();
            let st = StFile::open(&file).unwrap();
            let back = decode(&st, &file, "w", &e.codec, &HashMap::new()).unwrap();
            assert!(crate::ops::same_bits(&back, &q).unwrap(), "{s}: the decoded matrix differs");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn off_grid_groups_are_kept_verbatim_and_too_many_make_the_matrix_plain() {
        let (rows, cols) = (64, 256);
        let spec: QuantSpec = "rtn:bits=4,group=64".parse().unwrap();
        let q = crate::quant::quantize_weight(&weights(rows, cols), &spec, "w", None, None).unwrap();
        let mut v: Vec<f32> = q.flatten_all().unwrap().to_vec1().unwrap();
        // two groups (of 256) pushed off their grids: exceptions, decoded verbatim
        v[70] = 0.0123457;
        v[64 * 130 + 3] = 0.123456;
        let t = Tensor::from_vec(v.clone(), (rows, cols), &Device::Cpu).unwrap();
        let e = encode(&t, &spec, false).unwrap();
        assert_eq!(e.codec.label(), "affine");
        let exc = e.arrays.iter().find(|a| a.0 == "exceptions").unwrap();
        assert_eq!(read_u32(&exc.3), vec![1, 130]);
        // every fourth group off the grid is more than 1/32: plain f32
        for g in (0..rows * cols / 64).step_by(4) {
            v[g * 64] = 0.123456;
        }
        let t = Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap();
        let e = encode(&t, &spec, false).unwrap();
        assert_eq!((e.codec.label(), e.arrays[0].1), ("plain", Dtype::F32));
    }

    fn read_u32(b: &[u8]) -> Vec<u32> {
        b.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).collect()
    }

    #[test]
    fn codebook_fit_finds_the_block_absmax() {
        let table: Vec<f32> = (0..16).map(|c| Bnb4Type::Nf4.decode(c)).collect();
        let a = 0.0371f32;
        let codes: Vec<u8> = (0..64).map(|i| (i * 5 % 16) as u8).collect();
        let v: Vec<f32> = codes.iter().map(|&c| table[c as usize] * a).collect();
        let (got, c) = fit_codebook(&v, &table).unwrap();
        assert_eq!((got, c), (a, codes));
        let mut off = v.clone();
        off[3] *= 1.01;
        assert!(fit_codebook(&off, &table).is_none());
    }
}
