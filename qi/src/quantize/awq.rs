//! AWQ (activation-aware weight quantization) as llm-awq (mit-han-lab/llm-awq, `pre_quant.py`,
//! `auto_scale.py`, `auto_clip.py`, `quantizer.py`) runs it, block by block:
//!
//! 1. **Inputs.** Every block is calibrated on the full-precision model's activations (block `l`'s
//!    input is the reference's block `l-1` output), over all calibration tokens.
//! 2. **Scale search, per input group** (a group is the linears sharing one input, with the op
//!    before them that can absorb a per-channel scale):
//!    - q, k, v (or fused qkv) after the attention norm, judged on the attention output;
//!    - o after v, only when v's and o's weights have the same shape (multi-head attention; with
//!      grouped-query attention llm-awq skips it, and with a fused qkv projection this does too);
//!    - gate and up (or `fc_in`) after the MLP norm, judged on the MLP output;
//!    - down after up (gated MLPs only), judged on down's output. A plain MLP's `fc_out` follows a
//!      non-linearity that cannot absorb a scale (llm-awq adds a `ScaledActivation` op there), so
//!      it is not scaled: the twin stays a plain model.
//!
//!    For ratio r = i / 20, i = 0..20: s = max(mean|x|^r, 1e-4) per input channel, divided by
//!    √(max s · min s); the group's weights become `Q(W·diag(s))·diag(s)⁻¹` and the loss is the
//!    mean squared difference of the judged module's output from the full-precision one (the rest
//!    of the module full precision). The first r with the smallest loss wins. Every group of a block
//!    is searched on the unmodified block.
//! 3. **Fold.** The preceding norm's weight (and bias) is divided by s, or the preceding linear's
//!    output rows (and bias), and the group's input columns are multiplied by s: the block computes
//!    the same function, and the twin is a model one could deploy (modified norms, plain quantized
//!    linears). Hooked activations after a folded op (`ln1`/`ln2` outputs, `v` with multi-head
//!    attention, `mlp_pre_linear` and `mlp_post` of gated MLPs) are in the scaled basis.
//! 4. **Clip search** on the scaled weights and scaled inputs (every linear but q and k, whose
//!    product llm-awq does not model): for each output row and group, the max |w| shrunk by
//!    1 − i/20, i = 0..10, clamp to ±that, quantize; the error is the mean over 512 sampled tokens
//!    (every ⌊n/512⌋-th) of the squared difference of that group's partial output; the first best
//!    shrink wins and the weights are clamped to it.
//! 5. **Quantize** every linear with llm-awq's grid ([`AwqGrid`]).
use crate::hooks::names;
use crate::models::{linear_input_hook, Block, Linear, Mlp, QkvProj};
use crate::{Batch, HookedTransformer, Hooks};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Tensor, D};
use std::cell::RefCell;
use std::collections::HashMap;

/// Points of the scale grid (ratios 0, 1/20, …, 19/20).
pub const SCALE_GRID: usize = 20;
/// Points of the clip grid and the largest shrink tried (1 − i/20 for i < 10).
pub const CLIP_GRID: usize = 20;
pub const CLIP_MAX_SHRINK: f64 = 0.5;
/// Tokens the clip search samples.
pub const CLIP_TOKENS: usize = 512;

/// llm-awq's weight grid (`pseudo_quantize_tensor`), per group of `group` consecutive input
/// columns of each row (`None`: the whole row). Unlike GPTQ's grid the range is the group's own
/// [min, max] (not widened to contain 0) and the zero point is clamped into the codes:
/// ```text
/// asym: scale = max(max − min, 1e-5) / (2^b − 1);  zero = clamp(−round(min / scale), 0, 2^b − 1)
///       q(w)  = (clamp(round(w / scale) + zero, 0, 2^b − 1) − zero) · scale
/// sym:  scale = max(max |w|, 1e-5) / (2^(b−1) − 1);  q(w) = clamp(round(w / scale), −2^(b−1), 2^(b−1) − 1) · scale
/// ```
/// `round` is round-half-to-even (`torch.round`), all in f32 in that order. (llm-awq's symmetric
/// branch is unreachable there; this is what it evidently means.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwqGrid {
    pub bits: u8,
    pub group: Option<usize>,
    pub sym: bool,
}

impl AwqGrid {
    /// The group size for rows of `cols` columns, checked.
    fn group_for(&self, cols: usize) -> Result<usize> {
        let g = self.group.unwrap_or(cols);
        crate::quant::rtn::check_group(g, cols)?;
        Ok(g)
    }

    /// Fake-quantizes `w` `[rows, cols]` (f32); `name` labels errors.
    pub fn quantize(&self, w: &Tensor, name: &str) -> Result<Tensor> {
        self.quantize_scaled(w, None, name)
    }

    /// `Q(W·diag(s))·diag(s)⁻¹` for `w` `[rows, cols]` and per-column scales `s` (`None`: `Q(W)`),
    /// with the arithmetic of multiplying, quantizing and dividing tensor by tensor (one f32
    /// product, the grid, one f32 quotient per weight), rows in parallel: the scale search calls
    /// it for every ratio of the grid.
    pub fn quantize_scaled(&self, w: &Tensor, s: Option<&[f32]>, name: &str) -> Result<Tensor> {
        use rayon::prelude::*;
        crate::quant::check_bits(self.bits)?;
        let (rows, cols) = w.dims2().with_context(|| format!("AWQ: '{name}' must be a 2-D weight"))?;
        let g = self.group_for(cols)?;
        if let Some(s) = s.filter(|s| s.len() != cols) {
            bail!("AWQ: {} scales for '{name}', which has {cols} columns", s.len());
        }
        let mut data = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if let Some(s) = s {
            data.par_chunks_mut(cols).for_each(|row| row.iter_mut().zip(s).for_each(|(v, k)| *v *= k));
        }
        if let Some(bad) = data.iter().find(|v| !v.is_finite()) {
            bail!("AWQ: '{name}' has a non-finite value {bad}");
        }
        data.par_chunks_mut(cols).for_each(|row| {
            row.chunks_mut(g).for_each(|c| self.quantize_group(c));
            if let Some(s) = s {
                row.iter_mut().zip(s).for_each(|(v, k)| *v /= k);
            }
        });
        Ok(Tensor::from_vec(data, (rows, cols), w.device())?)
    }

    fn quantize_group(&self, c: &mut [f32]) {
        if self.sym {
            let max_int = ((1u32 << (self.bits - 1)) - 1) as f32;
            let min_int = -((1u32 << (self.bits - 1)) as f32);
            let amax = c.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-5);
            let scale = amax / max_int;
            for v in c.iter_mut() {
                *v = round_even(*v / scale).clamp(min_int, max_int) * scale;
            }
        } else {
            let max_int = ((1u32 << self.bits) - 1) as f32;
            let max = c.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let min = c.iter().fold(f32::INFINITY, |m, &v| m.min(v));
            let scale = (max - min).max(1e-5) / max_int;
            let zero = (-round_even(min / scale)).clamp(0.0, max_int);
            for v in c.iter_mut() {
                *v = ((round_even(*v / scale) + zero).clamp(0.0, max_int) - zero) * scale;
            }
        }
    }
}

/// Round half to even (`torch.round`) without a libm call, so that the grid's loops vectorize:
/// adding and subtracting 1.5·2²³ rounds in the FPU's default mode, exactly for |x| < 2²². Larger
/// values are returned unrounded; every caller clamps them to the grid's ends, where rounding
/// does not matter.
#[inline(always)]
fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let r = (x + MAGIC) - MAGIC;
    if x.abs() < 4_194_304.0 {
        r
    } else {
        x
    }
}

/// The candidate scales of one ratio: `max(x_mean^ratio, 1e-4)`, divided by √(max · min).
pub fn ratio_scales(x_mean: &[f32], ratio: f64) -> Vec<f32> {
    let r = ratio as f32;
    let s: Vec<f32> = x_mean.iter().map(|&x| x.powf(r).max(1e-4)).collect();
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = s.iter().copied().fold(f32::INFINITY, f32::min);
    let norm = (max * min).sqrt();
    s.into_iter().map(|v| v / norm).collect()
}

/// Result of [`search_scales`].
#[derive(Debug, Clone)]
pub struct ScaleSearch {
    /// The winning per-input-channel scales.
    pub scales: Vec<f32>,
    pub ratio: f64,
    /// The loss of every ratio of the grid.
    pub losses: Vec<f64>,
}

/// The scale grid search of one group: for each ratio, `loss` receives the group's candidate
/// weights `Q(W·diag(s))·diag(s)⁻¹` (in `weights` order) and returns the judged module's error.
pub fn search_scales(
    weights: &[(&str, Tensor)],
    x_mean: &[f32],
    grid: &AwqGrid,
    loss: &mut dyn FnMut(&[Tensor]) -> Result<f64>,
) -> Result<ScaleSearch> {
    let mut losses = Vec::with_capacity(SCALE_GRID);
    let mut best: Option<(f64, usize, Vec<f32>)> = None;
    for i in 0..SCALE_GRID {
        let ratio = i as f64 / SCALE_GRID as f64;
        let s = ratio_scales(x_mean, ratio);
        let candidates = weights.iter().map(|(name, w)| grid.quantize_scaled(w, Some(&s), name)).collect::<Result<Vec<_>>>()?;
        let l = loss(&candidates)?;
        losses.push(l);
        if best.as_ref().is_none_or(|(b, _, _)| l < *b) {
            best = Some((l, i, s));
        }
    }
    let names: Vec<&str> = weights.iter().map(|(n, _)| *n).collect();
    let (_, i, scales) = best.filter(|(b, _, _)| b.is_finite()).ok_or_else(|| anyhow!("AWQ scale search for {names:?}: no finite loss ({losses:?})"))?;
    Ok(ScaleSearch { scales, ratio: i as f64 / SCALE_GRID as f64, losses })
}

/// llm-awq's clip search for one (scaled) weight `[rows, cols]` on its (scaled) inputs
/// `[tokens, cols]`: the best max |w| per row and group, `[rows, groups]`.
pub fn search_clip(w: &Tensor, x: &Tensor, grid: &AwqGrid, name: &str) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let (n, xc) = x.dims2()?;
    if xc != cols || n == 0 {
        bail!("AWQ clip of '{name}': inputs are {:?}, expected [tokens > 0, {cols}]", x.dims());
    }
    let g = grid.group_for(cols)?;
    let ng = cols / g;
    let step = (n / CLIP_TOKENS).max(1);
    let idx: Vec<u32> = (0..n).step_by(step).map(|i| i as u32).collect();
    let t = idx.len();
    let xs = x.index_select(&Tensor::from_vec(idx, t, x.device())?, 0)?;
    // A row-group's error, the mean over tokens of (x_g·(q_g − w_g))², is dᵀH_g d / t with the
    // group's Gram matrix H_g = X_gᵀX_g [g, g] (llm-awq takes it from the partial outputs: the same
    // number, at g/t of the cost per shrink, without [groups, tokens, rows] temporaries).
    let xs = xs.reshape((t, ng, g))?.transpose(0, 1)?.contiguous()?; // [groups, tokens, g]
    let gram = xs.transpose(1, 2)?.contiguous()?.matmul(&xs)?; // [groups, g, g]
    let err_of = |q: &Tensor| -> Result<Vec<f32>> {
        let d = (q - w)?.reshape((rows, ng, g))?.transpose(0, 1)?.contiguous()?; // [groups, rows, g]
        let e = (d.matmul(&gram)? * &d)?.sum(2)?; // [groups, rows]
        Ok((e / t as f64)?.t()?.flatten_all()?.to_vec1::<f32>()?)
    };
    let wg = w.reshape((rows, ng, g))?;
    let org_max = wg.abs()?.max_keepdim(D::Minus1)?; // [rows, ng, 1]
    let mut best_max = org_max.flatten_all()?.to_vec1::<f32>()?;
    let mut best_err = vec![1e9f32; rows * ng];
    for i in 0..(CLIP_MAX_SHRINK * CLIP_GRID as f64) as usize {
        let f = (1.0 - i as f64 / CLIP_GRID as f64) as f32;
        let max = (&org_max * f as f64)?;
        let cur = wg.broadcast_maximum(&max.neg()?)?.broadcast_minimum(&max)?;
        let err = err_of(&grid.quantize(&cur.reshape((rows, cols))?, name)?)?;
        let maxv = max.flatten_all()?.to_vec1::<f32>()?;
        for k in 0..rows * ng {
            if err[k] < best_err[k] {
                best_err[k] = err[k];
                best_max[k] = maxv[k];
            }
        }
    }
    Ok(Tensor::from_vec(best_max, (rows, ng), w.device())?)
}

/// `w` `[rows, cols]` clamped to ±`max_val` `[rows, groups]` per group.
pub fn apply_clip(w: &Tensor, max_val: &Tensor) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let ng = max_val.dim(1)?;
    let m = max_val.unsqueeze(2)?;
    Ok(w.reshape((rows, ng, cols / ng))?.broadcast_maximum(&m.neg()?)?.broadcast_minimum(&m)?.reshape((rows, cols))?)
}

/// The op a group's scale is folded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// The attention norm (`ln1`).
    Ln1,
    /// The output rows of `v`.
    V,
    /// The MLP norm (`ln2`).
    Ln2,
    /// The output rows of `up`.
    Up,
}

/// One group's scales.
#[derive(Debug, Clone)]
pub struct GroupScales {
    pub fold: Fold,
    pub roles: Vec<&'static str>,
    pub search: ScaleSearch,
}

/// What AWQ did to one block.
#[derive(Debug, Clone)]
pub struct BlockAwq {
    pub groups: Vec<GroupScales>,
    /// Clip thresholds `[rows, groups]` by role.
    pub clips: Vec<(&'static str, Tensor)>,
    /// Each quantized linear's weight as the reference's input basis sees it (the stored weight
    /// with the folds undone), by role: what the matrix report compares with the original.
    pub effective: Vec<(&'static str, Tensor)>,
    /// The reference block's outputs (the next block's inputs).
    pub outputs: Vec<Tensor>,
}

fn linear<'a>(block: &'a Block, role: &str) -> Result<&'a Linear> {
    block.linears_labeled().into_iter().find(|(r, _)| *r == role).map(|(_, l)| l).ok_or_else(|| anyhow!("block has no linear '{role}'"))
}

fn linear_mut<'a>(block: &'a mut Block, role: &str) -> Result<&'a mut Linear> {
    block.linears_labeled_mut().into_iter().find(|(r, _)| *r == role).map(|(_, l)| l).ok_or_else(|| anyhow!("block has no linear '{role}'"))
}

/// The block's attention output (`hook_attn_out`) for `x`: the block is stopped there, as
/// llm-awq runs the attention module alone.
fn attention_output(m: &HookedTransformer, l: usize, x: &Tensor, b: &Batch) -> Result<Tensor> {
    let out = RefCell::new(None);
    let name = names::attn_out(l);
    let r = {
        let mut hooks = Hooks::new();
        hooks.add(name.clone(), |_, t| {
            *out.borrow_mut() = Some(t.clone());
            Err(anyhow!("AWQ: attention output reached"))
        });
        m.run_block(l, x, b, Some(&mut hooks))
    };
    match out.into_inner() {
        Some(t) => Ok(t),
        None => Err(r.err().unwrap_or_else(|| anyhow!("block {l} did not reach {name}"))),
    }
}

/// Σ (a − b)² in f64.
fn sq_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok(crate::fused::sq_diff_sum(a, b)?)
}

fn mean_abs(x: &Tensor) -> Result<Vec<f32>> {
    Ok(x.abs()?.mean(0)?.to_vec1::<f32>()?)
}

/// `s` as a `[1, n]` row on `dev`.
fn row(s: &[f32], dev: &candle_core::Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(s, (1, s.len()), dev)?)
}

/// Runs AWQ on block `l`: searches the scales on `model` (the full-precision reference) with the
/// block inputs `inputs` (one per batch of `batches`), and writes the folded norms and the clipped,
/// quantized linears selected by `select(role)` into `twin`, whose block `l` must still be the
/// reference's.
pub fn awq_block(
    model: &HookedTransformer,
    twin: &mut HookedTransformer,
    l: usize,
    batches: &[Batch],
    inputs: &[Tensor],
    grid: &AwqGrid,
    select: &dyn Fn(&str) -> bool,
) -> Result<BlockAwq> {
    let block = model.blocks.get(l).ok_or_else(|| anyhow!("AWQ: model has no block {l}"))?;
    let roles: Vec<&'static str> = block.linears_labeled().into_iter().map(|(r, _)| r).filter(|r| select(r)).collect();
    // the reference block's linear inputs over all tokens, its attention outputs and outputs
    let mut wanted: Vec<String> = roles.iter().map(|r| linear_input_hook(r, l)).collect();
    wanted.sort();
    wanted.dedup();
    let attn_name = names::attn_out(l);
    let mut feats: HashMap<String, Vec<Tensor>> = HashMap::new();
    let mut attn_ref = Vec::with_capacity(batches.len());
    let mut outputs = Vec::with_capacity(batches.len());
    for (b, x) in batches.iter().zip(inputs) {
        let seen: RefCell<Vec<(String, Tensor)>> = RefCell::new(Vec::new());
        let mut all = wanted.clone();
        all.push(attn_name.clone());
        let y = {
            let mut hooks = Hooks::new();
            hooks.add(all, |name, t| {
                let d = t.dims();
                let feats: usize = d[2..].iter().product();
                seen.borrow_mut().push((name.to_string(), t.reshape((d[0] * d[1], feats))?));
                Ok(None)
            });
            model.run_block(l, x, b, Some(&mut hooks))?
        };
        outputs.push(y);
        for (name, t) in seen.into_inner() {
            if name == attn_name {
                attn_ref.push(t);
            } else {
                feats.entry(name).or_default().push(t);
            }
        }
    }
    let mut feats: HashMap<String, Tensor> = feats.into_iter().map(|(k, v)| Ok((k, Tensor::cat(&v, 0)?))).collect::<Result<_>>()?;
    let feat = |f: &HashMap<String, Tensor>, role: &str| -> Result<Tensor> {
        f.get(&linear_input_hook(role, l)).cloned().ok_or_else(|| anyhow!("AWQ: no calibration inputs reached '{}'", linear_input_hook(role, l)))
    };
    let weights = |rs: &[&'static str]| -> Result<Vec<(&str, Tensor)>> { rs.iter().map(|r| Ok((linear(block, r)?.name.as_str(), linear(block, r)?.weight()))).collect() };
    let mut groups: Vec<GroupScales> = Vec::new();

    // q/k/v after the attention norm, judged on the attention output
    let qkv: Vec<&'static str> = roles.iter().copied().filter(|r| matches!(*r, "q" | "k" | "v" | "qkv")).collect();
    if !qkv.is_empty() {
        let x_mean = mean_abs(&feat(&feats, qkv[0])?)?;
        let mut probe = model.clone();
        let tokens: usize = attn_ref.iter().map(|t| t.elem_count()).sum();
        let search = search_scales(&weights(&qkv)?, &x_mean, grid, &mut |cand| {
            for (r, w) in qkv.iter().zip(cand) {
                linear_mut(&mut probe.blocks[l], r)?.set_weight(w)?;
            }
            let mut err = 0.0;
            for ((b, x), y) in batches.iter().zip(inputs).zip(&attn_ref) {
                err += sq_err(&attention_output(&probe, l, x, b)?.reshape(y.shape())?, y)?;
            }
            Ok(err / tokens as f64)
        })?;
        groups.push(GroupScales { fold: Fold::Ln1, roles: qkv, search });
    }
    // o after v, where v's rows map one to one onto o's columns
    if let QkvProj::Separate { v, .. } = &block.attn.qkv {
        if select("o") && v.weight().dims() == block.attn.out.weight().dims() {
            let x = feat(&feats, "o")?;
            let search = one_linear_search(&block.attn.out, &x, grid)?;
            groups.push(GroupScales { fold: Fold::V, roles: vec!["o"], search });
        }
    }
    // gate/up after the MLP norm, judged on the MLP output
    let mlp_in: Vec<&'static str> = roles.iter().copied().filter(|r| matches!(*r, "gate" | "up" | "fc_in")).collect();
    if !mlp_in.is_empty() {
        let x = feat(&feats, mlp_in[0])?;
        let reference = model.run_mlp(l, block, &x)?;
        let mut probe = block.clone();
        let search = search_scales(&weights(&mlp_in)?, &mean_abs(&x)?, grid, &mut |cand| {
            for (r, w) in mlp_in.iter().zip(cand) {
                linear_mut(&mut probe, r)?.set_weight(w)?;
            }
            Ok(sq_err(&model.run_mlp(l, &probe, &x)?, &reference)? / reference.elem_count() as f64)
        })?;
        groups.push(GroupScales { fold: Fold::Ln2, roles: mlp_in, search });
    }
    // down after up, judged on down's output
    if let Mlp::Gated { down, .. } = &block.mlp {
        if select("down") {
            let x = feat(&feats, "down")?;
            let search = one_linear_search(down, &x, grid)?;
            groups.push(GroupScales { fold: Fold::Up, roles: vec!["down"], search });
        }
    }

    // fold: the previous op absorbs 1/s, the group's input columns s (as llm-awq, in group order)
    let tb = twin.blocks.get_mut(l).ok_or_else(|| anyhow!("AWQ: twin has no block {l}"))?;
    let mut col_scale: HashMap<&str, Vec<f32>> = HashMap::new();
    let mut row_scale: HashMap<&str, Vec<f32>> = HashMap::new();
    for g in &groups {
        let s = &g.search.scales;
        let dev = tb.ln1.weight.device().clone();
        let sr = row(s, &dev)?;
        let sv = Tensor::from_slice(s, s.len(), &dev)?;
        match g.fold {
            Fold::Ln1 | Fold::Ln2 => {
                let norm = if g.fold == Fold::Ln1 { &mut tb.ln1 } else { &mut tb.ln2 };
                // a (1 + w) norm (Gemma) scales by 1 + w: the folded weight is (1 + w) / s − 1
                norm.weight = if norm.unit_offset { ((&norm.weight + 1.0)?.broadcast_div(&sv)? - 1.0)? } else { norm.weight.broadcast_div(&sv)? };
                norm.bias = norm.bias.as_ref().map(|b| b.broadcast_div(&sv)).transpose()?;
            }
            Fold::V | Fold::Up => {
                let prev = if g.fold == Fold::V { "v" } else { "up" };
                let lin = linear_mut(tb, prev)?;
                let w = lin.weight().broadcast_div(&sv.unsqueeze(1)?)?;
                lin.set_weight(&w)?;
                lin.bias = lin.bias.as_ref().map(|b| b.broadcast_div(&sv)).transpose()?;
                row_scale.insert(prev, s.clone());
            }
        }
        for r in &g.roles {
            let lin = linear_mut(tb, r)?;
            let w = lin.weight().broadcast_mul(&sr)?;
            lin.set_weight(&w)?;
            col_scale.insert(r, s.clone());
        }
        // the group's inputs in the scaled basis, for the clip search
        let hook = linear_input_hook(g.roles[0], l);
        if let Some(x) = feats.get_mut(&hook) {
            *x = x.broadcast_div(&sr)?;
        }
    }

    // clip (not q, k) and quantize
    let mut clips = Vec::new();
    let mut effective = Vec::new();
    for r in &roles {
        let lin = linear_mut(tb, r)?;
        let mut w = lin.weight();
        if !matches!(*r, "q" | "k") {
            let max_val = search_clip(&w, &feat(&feats, r)?, grid, &lin.name)?;
            w = apply_clip(&w, &max_val)?;
            clips.push((*r, max_val));
        }
        let q = grid.quantize(&w, &lin.name)?;
        lin.set_weight(&q)?;
        let mut eff = q;
        if let Some(s) = row_scale.get(r) {
            eff = eff.broadcast_mul(&row(s, eff.device())?.t()?)?;
        }
        if let Some(s) = col_scale.get(r) {
            eff = eff.broadcast_div(&row(s, eff.device())?)?;
        }
        effective.push((*r, eff));
    }
    Ok(BlockAwq { groups, clips, effective, outputs })
}

/// The scale search of a group of one linear judged on its own output, on inputs `x` `[tokens, in]`.
/// The loss, the mean over tokens and outputs of `((Ŵ − W) x)²`, is computed from the inputs' Gram
/// matrix `H = XᵀX` as `Σ_rows (ŵ − w)ᵀ H (ŵ − w) / (tokens · out)`: the same number as from the
/// outputs, at `in / tokens` of the cost per ratio once `H` is made.
fn one_linear_search(lin: &Linear, x: &Tensor, grid: &AwqGrid) -> Result<ScaleSearch> {
    let w = lin.weight();
    let gram = crate::fused::mm(&x.t()?, x)?;
    let n = (x.dim(0)? * w.dim(0)?) as f64;
    search_scales(&[(lin.name.as_str(), w.clone())], &mean_abs(x)?, grid, &mut |cand| {
        let d = (&cand[0] - &w)?;
        Ok((crate::fused::mm(&d, &gram)? * &d)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? / n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(rows: usize, cols: usize, v: Vec<f32>) -> Tensor {
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    #[test]
    fn asym_grid_uses_the_groups_own_range_and_clamps_the_zero_point() {
        // group [0.2, 0.5, 0.8, 1.7]: 2 bits, scale = 1.5/3 = 0.5, zero = clamp(-round(0.4)) = 0
        // (GPTQ's grid would widen the range to [0, 1.7]); levels round(w/0.5) = 0, 1, 2, 3 (3.4)
        let g = AwqGrid { bits: 2, group: Some(4), sym: false };
        let q = g.quantize(&t(1, 4, vec![0.2, 0.5, 0.8, 1.7]), "w").unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(q[0], vec![0.0, 0.5, 1.0, 1.5]);
        // group [-1, -0.5, 0, 2]: scale = 1, zero = 1; 2 → level 3 → 2; -0.5 → round half even → 0 → 0
        let q = g.quantize(&t(1, 4, vec![-1.0, -0.5, 0.0, 2.0]), "w").unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(q[0], vec![-1.0, 0.0, 0.0, 2.0]);
    }

    #[test]
    fn sym_grid_and_groups_are_independent() {
        let g = AwqGrid { bits: 3, group: Some(2), sym: true };
        // group 1: amax 3 → scale 1, levels -3..3 (min_int -4); group 2: amax 0.3 → scale 0.1
        let q = g.quantize(&t(1, 4, vec![3.0, -2.4, 0.3, 0.14]), "w").unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(q[0][..2], [3.0, -2.0]);
        assert!((q[0][2] - 0.3).abs() < 1e-7 && (q[0][3] - 0.1).abs() < 1e-7, "{:?}", q[0]);
        assert!(g.quantize(&t(1, 3, vec![1.0, 2.0, 3.0]), "w").is_err(), "group must divide the row");
        assert!(AwqGrid { bits: 4, group: None, sym: false }.quantize(&t(1, 2, vec![f32::NAN, 1.0]), "lin.weight").unwrap_err().to_string().contains("lin.weight"));
    }

    #[test]
    fn round_even_is_round_half_to_even() {
        // halves go to the even neighbour (x.round() would send 2.5 to 3 and -0.5 to -1); values
        // at and past 2²² keep their value
        for (x, want) in [(2.5f32, 2.0f32), (3.5, 4.0), (-0.5, -0.0), (-1.5, -2.0), (0.49999997, 0.0), (7.4999995, 7.0), (-6.5, -6.0), (4194303.5, 4194304.0), (4194304.5, 4194304.5), (1e9, 1e9)] {
            assert_eq!(round_even(x), want, "{x}");
        }
        let mut rng = crate::rng::Rng::new(11);
        for _ in 0..100_000 {
            let x = (rng.normal() * 40.0) as f32;
            assert_eq!(round_even(x), x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn ratio_scales_are_normalised_and_ratio_zero_is_one() {
        let s = ratio_scales(&[4.0, 1.0, 0.25], 0.0);
        assert_eq!(s, vec![1.0, 1.0, 1.0]);
        // r = 0.5: [2, 1, 0.5], √(2·0.5) = 1
        assert_eq!(ratio_scales(&[4.0, 1.0, 0.25], 0.5), vec![2.0, 1.0, 0.5]);
        // a dead channel is floored at 1e-4 before normalising: [1, 1e-4] / 1e-2
        let s = ratio_scales(&[1.0, 0.0], 0.5);
        assert!((s[0] - 100.0).abs() < 1e-3 && (s[1] - 0.01).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn one_linear_loss_is_the_mean_squared_output_error() {
        // 40 tokens × 8 inputs, 3 outputs: every ratio's loss must be mean((X Ŵᵀ − X Wᵀ)²) over
        // all 120 outputs (dividing by the tokens alone would be 3× larger, dropping X would differ)
        let mut rng = crate::rng::Rng::new(5);
        let x: Vec<f32> = (0..40 * 8).map(|i| rng.normal() as f32 * if i % 8 == 2 { 4.0 } else { 1.0 }).collect();
        let w: Vec<f32> = (0..24).map(|_| rng.normal() as f32).collect();
        let grid = AwqGrid { bits: 3, group: Some(4), sym: false };
        let lin = Linear::new("w", t(3, 8, w.clone()), None, false).unwrap();
        let xt = t(40, 8, x.clone());
        let got = one_linear_search(&lin, &xt, &grid).unwrap();
        let x_mean = mean_abs(&xt).unwrap();
        for (i, &l) in got.losses.iter().enumerate() {
            let s = ratio_scales(&x_mean, i as f64 / SCALE_GRID as f64);
            let ws: Vec<f32> = w.iter().enumerate().map(|(k, v)| v * s[k % 8]).collect();
            let q = grid.quantize(&t(3, 8, ws), "w").unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut direct = 0f64;
            for tk in 0..40 {
                for r in 0..3 {
                    let e: f64 = (0..8).map(|k| x[tk * 8 + k] as f64 * (q[r * 8 + k] / s[k] - w[r * 8 + k]) as f64).sum();
                    direct += e * e;
                }
            }
            direct /= 120.0;
            assert!((l - direct).abs() <= 1e-4 * direct, "ratio {i}: {l} vs {direct}");
        }
        assert!(got.losses.iter().any(|&l| (l - got.losses[0]).abs() > 1e-3 * got.losses[0]), "the ratios must differ for the test to see them");
    }

    #[test]
    fn clip_search_matches_a_direct_evaluation_on_sampled_tokens() {
        // 3 rows × 2 groups of 4, 1100 tokens: every 2nd token is used (550). The direct loop
        // evaluates each shrink of each row-group on exactly those tokens.
        let mut rng = crate::rng::Rng::new(3);
        let mut w: Vec<f32> = (0..24).map(|_| rng.normal() as f32).collect();
        w[5] = 6.0; // an outlier, so that some group prefers a clipped range
        let x: Vec<f32> = (0..1100 * 8).map(|i| rng.normal() as f32 * if i % 8 == 5 { 0.05 } else { 1.0 }).collect();
        let grid = AwqGrid { bits: 3, group: Some(4), sym: false };
        let got = search_clip(&t(3, 8, w.clone()), &t(1100, 8, x.clone()), &grid, "w").unwrap().to_vec2::<f32>().unwrap();
        let mut shrunk = 0;
        for r in 0..3 {
            for g in 0..2 {
                let wg = &w[r * 8 + g * 4..r * 8 + g * 4 + 4];
                let m0 = wg.iter().fold(0f32, |m, v| m.max(v.abs()));
                let mut best = (f64::INFINITY, 0f32);
                for i in 0..10 {
                    let m = m0 * (1.0 - i as f64 / 20.0) as f32;
                    let mut c: Vec<f32> = wg.iter().map(|v| v.clamp(-m, m)).collect();
                    grid.quantize_group(&mut c);
                    let err: f64 = (0..1100).step_by(2).map(|tk| (0..4).map(|k| x[tk * 8 + g * 4 + k] as f64 * (c[k] - wg[k]) as f64).sum::<f64>().powi(2)).sum::<f64>() / 550.0;
                    if err < best.0 {
                        best = (err, m);
                    }
                }
                assert_eq!(got[r][g], best.1, "row {r} group {g}");
                shrunk += (best.1 < m0) as usize;
            }
        }
        assert!(shrunk > 0, "no group was clipped: the test would not see a wrong shrink");
        let c = apply_clip(&t(1, 4, vec![0.9, -0.9, 0.1, 0.3]), &Tensor::from_vec(vec![0.5f32, 0.2], (1, 2), &Device::Cpu).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(c[0], vec![0.5, -0.5, 0.1, 0.2]);
    }
}
