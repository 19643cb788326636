//! Hook points, activation caches and interventions, named as in TransformerLens.
//!
//! | hook name | shape |
//! |---|---|
//! | `hook_embed` | [batch, pos, d_model] token embeddings |
//! | `hook_pos_embed` | [batch, pos, d_model] learned positional embeddings (GPT-2 only) |
//! | `blocks.{l}.hook_resid_pre` | [batch, pos, d_model] residual stream entering block l |
//! | `blocks.{l}.ln1.hook_normalized` | [batch, pos, d_model] input of attention after the norm |
//! | `blocks.{l}.attn.hook_q` | [batch, pos, n_heads, d_head] queries (before rotary) |
//! | `blocks.{l}.attn.hook_k` | [batch, pos, n_kv_heads, d_head] keys (before rotary) |
//! | `blocks.{l}.attn.hook_v` | [batch, pos, n_kv_heads, d_head] values |
//! | `blocks.{l}.attn.hook_rot_q` | [batch, pos, n_heads, d_head] queries after rotary (rotary models) |
//! | `blocks.{l}.attn.hook_rot_k` | [batch, pos, n_kv_heads, d_head] keys after rotary (rotary models) |
//! | `blocks.{l}.attn.hook_attn_scores` | [batch, n_heads, query_pos, key_pos] scaled scores, masked entries = -inf |
//! | `blocks.{l}.attn.hook_pattern` | [batch, n_heads, query_pos, key_pos] attention probabilities |
//! | `blocks.{l}.attn.hook_z` | [batch, pos, n_heads, d_head] per-head weighted values (input of W_O) |
//! | `blocks.{l}.hook_attn_out` | [batch, pos, d_model] attention output |
//! | `blocks.{l}.hook_resid_mid` | [batch, pos, d_model] resid_pre + attn_out (not in parallel-residual models) |
//! | `blocks.{l}.ln2.hook_normalized` | [batch, pos, d_model] input of the MLP after the norm |
//! | `blocks.{l}.mlp.hook_pre` | [batch, pos, d_mlp] MLP pre-activation (the gate's, in gated MLPs) |
//! | `blocks.{l}.mlp.hook_pre_linear` | [batch, pos, d_mlp] the up projection (gated MLPs only) |
//! | `blocks.{l}.mlp.hook_post` | [batch, pos, d_mlp] MLP hidden activation (input of W_out) |
//! | `blocks.{l}.hook_mlp_out` | [batch, pos, d_model] MLP output |
//! | `blocks.{l}.hook_resid_post` | [batch, pos, d_model] residual stream leaving block l |
//! | `ln_final.hook_normalized` | [batch, pos, d_model] final-norm output (input of the unembedding) |
//!
//! Gemma 3 (as TransformerLens' Gemma 2): `hook_embed` is the embedding already scaled by
//! sqrt(d_model); `ln1` / `ln2` are the pre-attention / pre-MLP norms; `hook_q` / `hook_k` are the
//! projections before QK-norm, `hook_rot_q` / `hook_rot_k` after QK-norm and rotary;
//! `hook_attn_out` / `hook_mlp_out` are the outputs of the post-attention / post-MLP norms, so
//! `resid_mid = resid_pre + attn_out` and `resid_post = resid_mid + mlp_out` hold as everywhere.
//! On sliding-window layers, keys `window` or more positions behind the query are masked (-inf).
//!
//! Padding: query rows of padding positions attend only to themselves (so every row is a proper
//! distribution) and padding keys get zero attention from real queries. The cache carries the
//! batch's mask so analyses can drop padding positions.
use crate::QiError;
use anyhow::{anyhow, Result};
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;

/// Hook-name builders, so callers do not hand-format strings.
pub mod names {
    pub const EMBED: &str = "hook_embed";
    pub const POS_EMBED: &str = "hook_pos_embed";
    pub const LN_FINAL: &str = "ln_final.hook_normalized";
    pub fn resid_pre(l: usize) -> String { format!("blocks.{l}.hook_resid_pre") }
    pub fn resid_mid(l: usize) -> String { format!("blocks.{l}.hook_resid_mid") }
    pub fn resid_post(l: usize) -> String { format!("blocks.{l}.hook_resid_post") }
    pub fn attn_out(l: usize) -> String { format!("blocks.{l}.hook_attn_out") }
    pub fn mlp_out(l: usize) -> String { format!("blocks.{l}.hook_mlp_out") }
    pub fn ln1(l: usize) -> String { format!("blocks.{l}.ln1.hook_normalized") }
    pub fn ln2(l: usize) -> String { format!("blocks.{l}.ln2.hook_normalized") }
    pub fn q(l: usize) -> String { format!("blocks.{l}.attn.hook_q") }
    pub fn k(l: usize) -> String { format!("blocks.{l}.attn.hook_k") }
    pub fn v(l: usize) -> String { format!("blocks.{l}.attn.hook_v") }
    pub fn rot_q(l: usize) -> String { format!("blocks.{l}.attn.hook_rot_q") }
    pub fn rot_k(l: usize) -> String { format!("blocks.{l}.attn.hook_rot_k") }
    pub fn attn_scores(l: usize) -> String { format!("blocks.{l}.attn.hook_attn_scores") }
    pub fn pattern(l: usize) -> String { format!("blocks.{l}.attn.hook_pattern") }
    pub fn z(l: usize) -> String { format!("blocks.{l}.attn.hook_z") }
    pub fn mlp_pre(l: usize) -> String { format!("blocks.{l}.mlp.hook_pre") }
    pub fn mlp_pre_linear(l: usize) -> String { format!("blocks.{l}.mlp.hook_pre_linear") }
    pub fn mlp_post(l: usize) -> String { format!("blocks.{l}.mlp.hook_post") }
}

/// Which axis of a hooked tensor indexes attention heads, if any.
pub fn head_axis(name: &str) -> Option<usize> {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    match leaf {
        "hook_q" | "hook_k" | "hook_v" | "hook_z" | "hook_rot_q" | "hook_rot_k" => Some(2),
        "hook_attn_scores" | "hook_pattern" => Some(1),
        _ => None,
    }
}

/// The layer a hook name belongs to (`blocks.{l}.…`), if any.
pub fn hook_layer(name: &str) -> Option<usize> {
    name.strip_prefix("blocks.")?.split('.').next()?.parse().ok()
}

/// A set of hook-name patterns. `*` matches any run of characters, so
/// `blocks.*.attn.hook_pattern` selects every layer's pattern and `*resid_post` every residual.
/// A filter can be written as a comma-separated string: `"blocks.3.hook_resid_post,*hook_pattern"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFilter {
    patterns: Vec<String>,
}

impl HookFilter {
    /// Every hook point.
    pub fn all() -> Self {
        HookFilter { patterns: vec!["*".into()] }
    }
    /// No hook point.
    pub fn none() -> Self {
        HookFilter { patterns: vec![] }
    }
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        HookFilter { patterns: patterns.iter().map(|p| p.as_ref().trim().to_string()).filter(|p| !p.is_empty()).collect() }
    }
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| glob_match(p, name))
    }
    /// Checks that each pattern matches at least one of `valid` names; the error names the first
    /// pattern that matches nothing and suggests close names.
    pub fn validate(&self, valid: &[String]) -> Result<()> {
        for p in &self.patterns {
            if !valid.iter().any(|n| glob_match(p, n)) {
                return Err(QiError::UnknownHook { name: p.clone(), hint: suggest(p, valid) }.into());
            }
        }
        Ok(())
    }
}

impl From<&str> for HookFilter {
    fn from(s: &str) -> Self {
        HookFilter::new(&s.split(',').collect::<Vec<_>>())
    }
}
impl From<String> for HookFilter {
    fn from(s: String) -> Self {
        HookFilter::from(s.as_str())
    }
}
impl From<&String> for HookFilter {
    fn from(s: &String) -> Self {
        HookFilter::from(s.as_str())
    }
}
impl<S: AsRef<str>> From<&[S]> for HookFilter {
    fn from(s: &[S]) -> Self {
        HookFilter::new(s)
    }
}
impl<S: AsRef<str>, const N: usize> From<[S; N]> for HookFilter {
    fn from(s: [S; N]) -> Self {
        HookFilter::new(&s)
    }
}
impl<S: AsRef<str>> From<Vec<S>> for HookFilter {
    fn from(s: Vec<S>) -> Self {
        HookFilter::new(&s)
    }
}

/// `*` wildcard match (no other metacharacters).
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn suggest(pattern: &str, valid: &[String]) -> String {
    let leaf = pattern.rsplit('.').next().unwrap_or(pattern).trim_matches('*');
    let mut close: Vec<&String> = valid.iter().filter(|n| !leaf.is_empty() && n.contains(leaf)).take(4).collect();
    if close.is_empty() {
        close = valid.iter().filter(|n| n.starts_with("blocks.0.") || !n.starts_with("blocks.")).take(24).collect();
    }
    let layers = valid.iter().filter_map(|n| hook_layer(n)).max().map(|m| m + 1).unwrap_or(0);
    format!(
        "the model has {layers} layers; valid names include: {}",
        close.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    )
}

/// A hook function: sees the hook name and the activation; returns `Some(t)` to replace the
/// activation with `t` (same shape), `None` to leave it.
pub type HookFn<'a> = Box<dyn FnMut(&str, &Tensor) -> Result<Option<Tensor>> + 'a>;

/// Hook functions to run during a forward pass, each on the hook points its filter selects, in the
/// order they were added.
#[derive(Default)]
pub struct Hooks<'a> {
    entries: Vec<(HookFilter, HookFn<'a>)>,
}

impl<'a> Hooks<'a> {
    pub fn new() -> Self {
        Hooks { entries: Vec::new() }
    }
    /// Adds a hook on every point `filter` selects.
    pub fn add(&mut self, filter: impl Into<HookFilter>, f: impl FnMut(&str, &Tensor) -> Result<Option<Tensor>> + 'a) -> &mut Self {
        self.entries.push((filter.into(), Box::new(f)));
        self
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub(crate) fn filters(&self) -> impl Iterator<Item = &HookFilter> {
        self.entries.iter().map(|(f, _)| f)
    }
    pub(crate) fn run(&mut self, name: &str, x: Tensor) -> Result<Tensor> {
        let mut x = x;
        for (filter, f) in self.entries.iter_mut() {
            if filter.matches(name) {
                if let Some(new) = f(name, &x)? {
                    if new.dims() != x.dims() {
                        return Err(anyhow!(
                            "hook on '{name}' returned shape {:?}, expected {:?}",
                            new.dims(),
                            x.dims()
                        ));
                    }
                    x = new.to_dtype(x.dtype())?;
                }
            }
        }
        Ok(x)
    }
}

/// Activations recorded during a forward pass, by hook name, with the batch's padding mask.
#[derive(Debug, Clone)]
pub struct ActivationCache {
    tensors: BTreeMap<String, Tensor>,
    mask: Tensor,
}

impl ActivationCache {
    pub(crate) fn new(mask: Tensor) -> Self {
        ActivationCache { tensors: BTreeMap::new(), mask }
    }
    pub(crate) fn insert(&mut self, name: &str, t: &Tensor) {
        self.tensors.insert(name.to_string(), t.clone());
    }
    /// The activation at `name`; the error lists what was cached.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| {
            let have: Vec<&str> = self.tensors.keys().map(String::as_str).take(12).collect();
            QiError::UnknownHook {
                name: name.to_string(),
                hint: format!("not in this cache; cached: {}{}", have.join(", "), if self.tensors.len() > 12 { ", …" } else { "" }),
            }
            .into()
        })
    }
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
    /// `[batch, pos]` u8, 1 = real token, 0 = padding.
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }
    pub fn into_map(self) -> BTreeMap<String, Tensor> {
        self.tensors
    }
    /// Stacks the matching activations (in layer order) along a new leading axis.
    pub fn stack(&self, filter: impl Into<HookFilter>) -> Result<Tensor> {
        let filter = filter.into();
        let mut picked: Vec<(Option<usize>, &String, &Tensor)> =
            self.tensors.iter().filter(|(k, _)| filter.matches(k)).map(|(k, v)| (hook_layer(k), k, v)).collect();
        if picked.is_empty() {
            return Err(anyhow!("no cached activation matches {:?}", filter.patterns()));
        }
        picked.sort_by_key(|(l, k, _)| (*l, (*k).clone()));
        let ts: Vec<&Tensor> = picked.iter().map(|(_, _, t)| *t).collect();
        Ok(Tensor::stack(&ts, 0)?)
    }
}

/// Ready-made interventions for [`Hooks::add`].
pub mod interventions {
    use super::*;

    fn head_mask(x: &Tensor, axis: usize, heads: &[usize], name: &str) -> Result<Tensor> {
        let n = x.dim(axis)?;
        if let Some(&h) = heads.iter().find(|&&h| h >= n) {
            return Err(QiError::invalid("head", h, format!("'{name}' has {n} heads (0..{})", n - 1)).into());
        }
        let mut keep = vec![1f32; n];
        for &h in heads {
            keep[h] = 0.0;
        }
        let mut shape = vec![1usize; x.rank()];
        shape[axis] = n;
        Ok(Tensor::from_vec(keep, shape, x.device())?.to_dtype(x.dtype())?)
    }

    fn axis_of(name: &str) -> Result<usize> {
        head_axis(name).ok_or_else(|| anyhow!("'{name}' has no head axis; head interventions need hook_q/k/v/z/rot_q/rot_k/attn_scores/pattern"))
    }

    /// Zero the given heads (e.g. on `blocks.{l}.attn.hook_z`).
    pub fn zero_heads(heads: Vec<usize>) -> impl FnMut(&str, &Tensor) -> Result<Option<Tensor>> {
        move |name, x| {
            let keep = head_mask(x, axis_of(name)?, &heads, name)?;
            Ok(Some(x.broadcast_mul(&keep)?))
        }
    }

    /// Replace the given heads by `mean`, which broadcasts against the activation: e.g. the mean of
    /// `hook_z` over batch and positions, shape [1, 1, n_heads, d_head].
    pub fn mean_heads(heads: Vec<usize>, mean: Tensor) -> impl FnMut(&str, &Tensor) -> Result<Option<Tensor>> {
        move |name, x| {
            let keep = head_mask(x, axis_of(name)?, &heads, name)?;
            let drop = (1.0 - &keep)?;
            Ok(Some((x.broadcast_mul(&keep)? + mean.to_dtype(x.dtype())?.broadcast_mul(&drop)?.broadcast_as(x.shape())?)?))
        }
    }

    /// Replace the whole activation by `source` (e.g. the same hook from another run's cache).
    pub fn patch(source: Tensor) -> impl FnMut(&str, &Tensor) -> Result<Option<Tensor>> {
        move |name, x| {
            if source.dims() != x.dims() {
                return Err(anyhow!("patch for '{name}' has shape {:?}, activation is {:?}", source.dims(), x.dims()));
            }
            Ok(Some(source.clone()))
        }
    }

    /// Replace only the given heads by the corresponding heads of `source`.
    pub fn patch_heads(heads: Vec<usize>, source: Tensor) -> impl FnMut(&str, &Tensor) -> Result<Option<Tensor>> {
        move |name, x| {
            if source.dims() != x.dims() {
                return Err(anyhow!("patch for '{name}' has shape {:?}, activation is {:?}", source.dims(), x.dims()));
            }
            let keep = head_mask(x, axis_of(name)?, &heads, name)?;
            let take = (1.0 - &keep)?;
            Ok(Some((x.broadcast_mul(&keep)? + source.broadcast_mul(&take)?)?))
        }
    }

    /// Add `scale · vector` to every position (vector broadcasts over the trailing axes, e.g. a
    /// [d_model] steering vector on `hook_resid_pre`).
    pub fn add_vector(vector: Tensor, scale: f64) -> impl FnMut(&str, &Tensor) -> Result<Option<Tensor>> {
        move |_, x| Ok(Some(x.broadcast_add(&(vector.to_dtype(x.dtype())? * scale)?)?))
    }

    /// Mean of an activation over batch and positions counting only real tokens: for
    /// [batch, pos, …] activations and a [batch, pos] mask, returns [1, 1, …].
    pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let m = mask.to_dtype(DType::F32)?;
        let mut shape = m.dims().to_vec();
        shape.extend(std::iter::repeat_n(1, x.rank() - 2));
        let m = m.reshape(shape)?;
        let total = m.sum_all()?.to_scalar::<f32>()?.max(1.0);
        Ok((x.to_dtype(DType::F32)?.broadcast_mul(&m)?.sum_keepdim(0)?.sum_keepdim(1)? / total as f64)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_shell_star() {
        assert!(glob_match("blocks.*.attn.hook_pattern", "blocks.12.attn.hook_pattern"));
        assert!(glob_match("*hook_resid_post", "blocks.0.hook_resid_post"));
        assert!(!glob_match("blocks.1.*", "blocks.10.hook_z"));
        assert!(glob_match("blocks.1*", "blocks.10.hook_z"));
        assert!(glob_match("*", "hook_embed"));
        assert!(!glob_match("hook_embed", "hook_pos_embed"));
    }

    #[test]
    fn layer_and_head_axis() {
        assert_eq!(hook_layer("blocks.7.attn.hook_z"), Some(7));
        assert_eq!(hook_layer("hook_embed"), None);
        assert_eq!(head_axis("blocks.0.attn.hook_pattern"), Some(1));
        assert_eq!(head_axis("blocks.0.attn.hook_z"), Some(2));
        assert_eq!(head_axis("blocks.0.hook_resid_pre"), None);
    }

    #[test]
    fn unknown_pattern_is_named() {
        let valid = vec!["hook_embed".to_string(), "blocks.0.hook_resid_post".to_string()];
        let err = HookFilter::from("blocks.0.hook_resid_psot").validate(&valid).unwrap_err();
        let qe = err.downcast_ref::<QiError>().unwrap();
        assert!(matches!(qe, QiError::UnknownHook { name, .. } if name == "blocks.0.hook_resid_psot"));
    }
}
