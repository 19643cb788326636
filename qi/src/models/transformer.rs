//! The hooked forward pass shared by every family.
use super::{Activation, Block, Linear, Mlp, ModelConfig, Norm, Positional, QkvProj, SourceInfo};
use crate::batch::Batch;
use crate::fused;
use crate::hooks::{names, ActivationCache, HookFilter, Hooks};
use crate::tokenizer::Tokenizer;
use crate::QiError;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A transformer language model with TransformerLens-style hook points (see [`crate::hooks`]).
#[derive(Debug, Clone)]
pub struct HookedTransformer {
    pub cfg: ModelConfig,
    /// Token embedding `[d_vocab, d_model]` and its HF name.
    pub embed: Tensor,
    pub embed_name: String,
    /// Learned position embedding `[n_ctx, d_model]` and its HF name (GPT-2).
    pub pos_embed: Option<(String, Tensor)>,
    pub blocks: Vec<Block>,
    pub ln_final: Norm,
    /// Unembedding `[d_vocab, d_model]`; for tied models its weight is the embedding tensor.
    pub unembed: Linear,
    pub tokenizer: Option<Tokenizer>,
    pub source: SourceInfo,
    /// cos/sin tables `[n_ctx, rot_dim / 2]` for rotary models.
    rope: Option<(Tensor, Tensor)>,
    /// The same for sliding-window layers with their own rotary base (Gemma 3).
    rope_local: Option<(Tensor, Tensor)>,
}

/// What every block's attention needs for one batch: the additive mask and rotary rows of the
/// global layers, and of the sliding-window layers when the model has them.
struct AttnInputs {
    mask: Tensor,
    rope: Option<(Tensor, Tensor)>,
    local: Option<(Tensor, Option<(Tensor, Tensor)>)>,
}

impl AttnInputs {
    fn for_layer(&self, cfg: &ModelConfig, l: usize) -> (&Tensor, Option<&(Tensor, Tensor)>) {
        match &self.local {
            Some((mask, rope)) if cfg.extras.is_sliding(l) => (mask, rope.as_ref().or(self.rope.as_ref())),
            _ => (&self.mask, self.rope.as_ref()),
        }
    }
}

/// Receives every hook point: runs the user's hooks, then records what the cache filter selects.
struct Sink<'h, 'a> {
    hooks: Option<&'h mut Hooks<'a>>,
    cache: Option<(&'h HookFilter, ActivationCache)>,
}

impl Sink<'_, '_> {
    /// Whether a hook or the cache asks for this point (else its value need not exist).
    fn wants(&self, name: &str) -> bool {
        self.hooks.as_deref().is_some_and(|h| h.filters().any(|f| f.matches(name))) || self.cache.as_ref().is_some_and(|(f, _)| f.matches(name))
    }

    fn point(&mut self, name: &str, x: Tensor) -> Result<Tensor> {
        let x = match self.hooks.as_deref_mut() {
            Some(h) => h.run(name, x)?,
            None => x,
        };
        if let Some((filter, cache)) = self.cache.as_mut() {
            if filter.matches(name) {
                cache.insert(name, &x);
            }
        }
        Ok(x)
    }
}

impl HookedTransformer {
    /// Assembles a model from its parts (used by the family builders and by quantizers).
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        cfg: ModelConfig,
        embed: (String, Tensor),
        pos_embed: Option<(String, Tensor)>,
        blocks: Vec<Block>,
        ln_final: Norm,
        unembed: Linear,
        tokenizer: Option<Tokenizer>,
        source: SourceInfo,
    ) -> Result<Self> {
        let (rope, rope_local) = match cfg.positional {
            Positional::Rotary { dim, theta } => (
                Some(rope_tables(cfg.n_ctx, dim, theta, embed.1.device())?),
                cfg.extras.local_rope_theta.map(|t| rope_tables(cfg.n_ctx, dim, t, embed.1.device())).transpose()?,
            ),
            Positional::Learned => (None, None),
        };
        Ok(HookedTransformer { cfg, embed: embed.1, embed_name: embed.0, pos_embed, blocks, ln_final, unembed, tokenizer, source, rope, rope_local })
    }

    /// Every hook point name of this model, in forward order.
    pub fn hook_names(&self) -> Vec<String> {
        self.cfg.hook_names()
    }

    /// Logits `[batch, pos, d_vocab]`.
    pub fn forward(&self, batch: &Batch) -> Result<Tensor> {
        Ok(self.run(batch, None, None, None)?.0.expect("full forward returns logits"))
    }

    /// Logits and the activations selected by `filter` (e.g. `"blocks.*.attn.hook_pattern"`).
    pub fn run_with_cache(&self, batch: &Batch, filter: impl Into<HookFilter>) -> Result<(Tensor, ActivationCache)> {
        let filter = filter.into();
        let (logits, cache) = self.run(batch, None, Some(&filter), None)?;
        Ok((logits.expect("full forward returns logits"), cache.expect("cache requested")))
    }

    /// Activations selected by `filter`, stopping after block `stop_after_layer` (no logits):
    /// cheaper when only early layers are needed (e.g. collecting SAE training data).
    pub fn run_with_cache_until(&self, batch: &Batch, filter: impl Into<HookFilter>, stop_after_layer: usize) -> Result<ActivationCache> {
        let filter = filter.into();
        if stop_after_layer >= self.cfg.n_layers {
            return Err(QiError::invalid("layer", stop_after_layer, format!("model has {} layers", self.cfg.n_layers)).into());
        }
        Ok(self.run(batch, None, Some(&filter), Some(stop_after_layer))?.1.expect("cache requested"))
    }

    /// Logits with the given hooks applied (reading or replacing activations).
    pub fn run_with_hooks(&self, batch: &Batch, hooks: &mut Hooks) -> Result<Tensor> {
        Ok(self.run(batch, Some(hooks), None, None)?.0.expect("full forward returns logits"))
    }

    /// Both: hooks applied, then the (possibly modified) activations selected by `filter` cached.
    pub fn run_with_hooks_and_cache(&self, batch: &Batch, hooks: &mut Hooks, filter: impl Into<HookFilter>) -> Result<(Tensor, ActivationCache)> {
        let filter = filter.into();
        let (logits, cache) = self.run(batch, Some(hooks), Some(&filter), None)?;
        Ok((logits.expect("full forward returns logits"), cache.expect("cache requested")))
    }

    /// This model with every tensor under a new identity, sharing storage (no copy). candle's
    /// autograd keys gradients by tensor id, drawn from a counter that is a `static`; evcxr links
    /// a copy of each dependency into every notebook cell, so a model loaded in one cell and
    /// differentiated in another can meet ids its weights already hold (seen as a shape mismatch
    /// inside `backward`, or worse, a silently mixed gradient). Ids drawn by the code that runs
    /// the backward pass cannot repeat within that pass.
    pub fn with_fresh_tensor_ids(&self) -> Result<Self> {
        use super::fresh_id;
        Ok(HookedTransformer {
            embed: fresh_id(&self.embed)?,
            pos_embed: self.pos_embed.as_ref().map(|(n, t)| Ok::<_, candle_core::Error>((n.clone(), fresh_id(t)?))).transpose()?,
            blocks: self.blocks.iter().map(|b| b.with_fresh_ids()).collect::<candle_core::Result<_>>()?,
            ln_final: self.ln_final.with_fresh_ids()?,
            unembed: self.unembed.with_fresh_ids()?,
            rope: self.rope.as_ref().map(|(c, s)| Ok::<_, candle_core::Error>((fresh_id(c)?, fresh_id(s)?))).transpose()?,
            rope_local: self.rope_local.as_ref().map(|(c, s)| Ok::<_, candle_core::Error>((fresh_id(c)?, fresh_id(s)?))).transpose()?,
            ..self.clone()
        })
    }

    /// Points this model's token embedding, position embedding and unembedding at `other`'s tensors
    /// where they hold the same bits ([`crate::ops::same_bits`]), so that the memory is held once (a twin read
    /// from the cache carries its own copy of the reference's unquantized embeddings: 1.9 GB for
    /// the 1.5B Qwen's embedding and unembedding). Values are unchanged; returns how many of the
    /// three were shared.
    pub fn share_identical_embeddings(&mut self, other: &HookedTransformer) -> Result<usize> {
        use crate::ops::same_bits;
        let mut shared = 0;
        if same_bits(&self.embed, &other.embed)? {
            self.embed = other.embed.clone();
            shared += 1;
        }
        if let (Some((_, mine)), Some((_, theirs))) = (self.pos_embed.as_mut(), other.pos_embed.as_ref()) {
            if same_bits(mine, theirs)? {
                *mine = theirs.clone();
                shared += 1;
            }
        }
        let (u, v) = (&self.unembed, &other.unembed);
        let same_bias = match (&u.bias, &v.bias) {
            (None, None) => true,
            (Some(a), Some(b)) => same_bits(a, b)?,
            _ => false,
        };
        if u.name == v.name && u.act_quant.is_none() && v.act_quant.is_none() && same_bias && same_bits(&u.weight_t, &v.weight_t)? {
            self.unembed = v.clone();
            shared += 1;
        }
        Ok(shared)
    }

    /// Gradient of a scalar `metric(logits)` with respect to the activations at `hook_names`.
    /// Returns the metric value and, per hook, (activation, d metric / d activation).
    pub fn gradients_at(
        &self,
        batch: &Batch,
        hook_names: &[&str],
        metric: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(f64, BTreeMap<String, (Tensor, Tensor)>)> {
        let model = self.with_fresh_tensor_ids()?;
        // Each hook point adds a zero variable (x + 0): its gradient is d metric / dx along every
        // path, including those through later hook points. Replacing x by a detached variable
        // instead would cut the paths from earlier hook points through later ones.
        let vars: RefCell<BTreeMap<String, (Tensor, Var)>> = RefCell::new(BTreeMap::new());
        let names: Vec<String> = hook_names.iter().map(|s| s.to_string()).collect();
        let logits = {
            let mut hooks = Hooks::new();
            hooks.add(names.clone(), |name, x| {
                let v = Var::zeros(x.dims(), x.dtype(), x.device())?;
                let t = (x + v.as_tensor())?;
                vars.borrow_mut().insert(name.to_string(), (x.detach(), v));
                Ok(Some(t))
            });
            model.run_with_hooks(batch, &mut hooks)?
        };
        let m = metric(&logits)?;
        if m.elem_count() != 1 {
            bail!("metric must be a scalar, got shape {:?}", m.dims());
        }
        let value = m.to_dtype(DType::F64)?.flatten_all()?.get(0)?.to_scalar::<f64>()?;
        let grads = m.backward()?;
        let mut out = BTreeMap::new();
        for (name, (x, v)) in vars.into_inner() {
            let g = match grads.get(v.as_tensor()) {
                Some(g) => g.clone(),
                None => v.as_tensor().zeros_like()?,
            };
            out.insert(name, (x, g));
        }
        Ok((value, out))
    }

    /// A pad id for batching: the tokenizer's pad, else EOS, else 0 (padding never enters a metric).
    pub fn pad_id(&self) -> u32 {
        self.tokenizer.as_ref().and_then(|t| t.pad_id()).or(self.cfg.eos_token_id).unwrap_or(0)
    }

    /// The tokenizer, or an error saying the model was loaded without one.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| anyhow!("model '{}' has no tokenizer (pass token ids instead of text)", self.source.source))
    }

    /// Token ids of `text`, optionally with the model's BOS token first.
    pub fn to_tokens(&self, text: &str, prepend_bos: bool) -> Result<Vec<u32>> {
        let tok = self.tokenizer()?;
        let mut ids = tok.encode(text, false)?;
        if prepend_bos {
            let bos = tok.bos_id().or(self.cfg.bos_token_id).ok_or_else(|| anyhow!("model has no BOS token"))?;
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// Greedy continuation of `ids` by `n_new` tokens (recomputes the full prefix each step).
    pub fn generate_greedy(&self, ids: &[u32], n_new: usize) -> Result<Vec<u32>> {
        let mut ids = ids.to_vec();
        for _ in 0..n_new {
            let logits = self.forward(&Batch::from_ids(&ids)?)?;
            let last = logits.get(0)?.get(ids.len() - 1)?;
            ids.push(last.argmax(D::Minus1)?.to_scalar::<u32>()?);
        }
        Ok(ids)
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn n_params(&self) -> usize {
        let mut n = self.embed.elem_count() + self.pos_embed.as_ref().map_or(0, |p| p.1.elem_count());
        for b in &self.blocks {
            for l in b.linears() {
                n += l.weight_t().elem_count() + l.bias.as_ref().map_or(0, |b| b.elem_count());
            }
            for norm in b.norms() {
                n += norm.weight.elem_count() + norm.bias.as_ref().map_or(0, |b| b.elem_count());
            }
        }
        n += self.ln_final.weight.elem_count() + self.ln_final.bias.as_ref().map_or(0, |b| b.elem_count());
        if !self.cfg.tied_embeddings {
            n += self.unembed.weight_t().elem_count();
        }
        n + self.unembed.bias.as_ref().map_or(0, |b| b.elem_count())
    }

    /// Parameters outside the token/position embeddings and an untied unembedding: the size axis
    /// of scaling studies (a 262k-token vocabulary is half of Gemma 3 270M's parameters).
    pub fn n_params_non_embedding(&self) -> usize {
        let mut emb = self.embed.elem_count() + self.pos_embed.as_ref().map_or(0, |p| p.1.elem_count());
        if !self.cfg.tied_embeddings {
            emb += self.unembed.weight_t().elem_count();
        }
        self.n_params() - emb
    }

    /// Errors, naming the first mismatch, unless `other` can be compared position by position with
    /// this model: same architecture, vocabulary (size, and the same ids for a probe text when both
    /// have tokenizers), layer count, heads and widths, and the same shape of every block linear.
    /// `label` names `other` in the error.
    pub fn check_comparable(&self, other: &HookedTransformer, label: &str) -> Result<()> {
        let (a, b) = (&self.cfg, &other.cfg);
        let fields: [(&str, String, String); 8] = [
            ("architecture", a.architecture.name().to_string(), b.architecture.name().to_string()),
            ("d_vocab", a.d_vocab.to_string(), b.d_vocab.to_string()),
            ("n_layers", a.n_layers.to_string(), b.n_layers.to_string()),
            ("n_heads", a.n_heads.to_string(), b.n_heads.to_string()),
            ("n_kv_heads", a.n_kv_heads.to_string(), b.n_kv_heads.to_string()),
            ("d_model", a.d_model.to_string(), b.d_model.to_string()),
            ("d_head", a.d_head.to_string(), b.d_head.to_string()),
            ("d_mlp", a.d_mlp.to_string(), b.d_mlp.to_string()),
        ];
        let not_comparable = |why: String| -> anyhow::Error { QiError::invalid("model pair", label, format!("models are not comparable: {why}")).into() };
        for (what, x, y) in fields {
            if x != y {
                return Err(not_comparable(format!("{what} is {x} in the reference but {y} in '{label}'")));
            }
        }
        for (r, t) in self.linears().into_iter().zip(other.linears()) {
            let (rs, ts) = ((r.out_features(), r.in_features()), (t.out_features(), t.in_features()));
            if rs != ts {
                return Err(not_comparable(format!("'{}' is {rs:?} in the reference but '{}' is {ts:?} in '{label}'", r.name, t.name)));
            }
        }
        if let (Some(x), Some(y)) = (&self.tokenizer, &other.tokenizer) {
            const PROBE: &str = "The quick brown fox, 1234 — naïve café 数学 def f(x): return x";
            let (ix, iy) = (x.encode(PROBE, false)?, y.encode(PROBE, false)?);
            if ix != iy {
                return Err(not_comparable(format!("the vocabularies differ: the probe text \"{PROBE}\" is {ix:?} in the reference but {iy:?} in '{label}'")));
            }
        }
        Ok(())
    }

    /// All block linear layers, in forward order.
    pub fn linears(&self) -> Vec<&Linear> {
        self.blocks.iter().flat_map(|b| b.linears()).collect()
    }

    fn check_tokens(&self, batch: &Batch) -> Result<()> {
        let rows = batch.rows()?;
        let vocab = self.cfg.d_vocab;
        for (bi, row) in rows.iter().enumerate() {
            if let Some((pos, &id)) = row.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
                return Err(QiError::TokenOutOfVocab { id, batch: bi, pos, vocab }.into());
            }
        }
        let longest = match &batch.mask {
            None => batch.seq_len(),
            Some(m) => m.to_dtype(DType::U32)?.sum(1)?.max(0)?.to_scalar::<u32>()? as usize,
        };
        if longest > self.cfg.n_ctx {
            return Err(QiError::invalid("sequence length", longest, format!("the model's context is {} tokens", self.cfg.n_ctx)).into());
        }
        Ok(())
    }

    /// The forward pass. Returns logits unless stopped early, and the cache if a filter was given.
    fn run(
        &self,
        batch: &Batch,
        hooks: Option<&mut Hooks>,
        cache_filter: Option<&HookFilter>,
        stop_after_layer: Option<usize>,
    ) -> Result<(Option<Tensor>, Option<ActivationCache>)> {
        let valid = self.hook_names();
        if let Some(f) = cache_filter {
            f.validate(&valid)?;
        }
        if let Some(h) = hooks.as_deref() {
            for f in h.filters() {
                f.validate(&valid)?;
            }
        }
        self.check_tokens(batch)?;
        let cfg = &self.cfg;
        let (b, p) = batch.tokens.dims2()?;
        let mut sink = Sink { hooks, cache: cache_filter.map(|f| Ok::<_, anyhow::Error>((f, ActivationCache::new(batch.valid_mask()?)))).transpose()? };

        let mut x = self.scaled_embedding(batch)?;
        x = sink.point(names::EMBED, x)?;
        if let Some((_, w_pos)) = &self.pos_embed {
            let pe = w_pos.index_select(&self.clamped_positions(batch)?, 0)?.reshape((b, p, cfg.d_model))?;
            x = (x + sink.point(names::POS_EMBED, pe)?)?;
        }
        let inputs = self.attention_inputs(batch)?;

        let last = stop_after_layer.unwrap_or(cfg.n_layers - 1);
        for (l, block) in self.blocks.iter().enumerate().take(last + 1) {
            let (mask, rope) = inputs.for_layer(cfg, l);
            x = self.block_forward(l, block, x, mask, rope, &mut sink).with_context(|| format!("block {l}"))?;
        }
        let logits = if stop_after_layer.is_none() {
            let normed = sink.point(names::LN_FINAL, self.ln_final.forward(&x)?)?;
            Some(self.unembed.forward(&normed)?)
        } else {
            None
        };
        Ok((logits, sink.cache.map(|(_, c)| c)))
    }

    /// The additive attention masks and the rotary cos/sin rows for a batch's positions.
    fn attention_inputs(&self, batch: &Batch) -> Result<AttnInputs> {
        let (b, p) = batch.tokens.dims2()?;
        let mask = attention_mask(batch)?;
        let rows = |table: &Option<(Tensor, Tensor)>| -> Result<Option<(Tensor, Tensor)>> {
            let Some((cos, sin)) = table else { return Ok(None) };
            let positions = self.clamped_positions(batch)?;
            let half = cos.dim(1)?;
            Ok(Some((cos.index_select(&positions, 0)?.reshape((b, p, half))?, sin.index_select(&positions, 0)?.reshape((b, p, half))?)))
        };
        let local = match self.cfg.extras.sliding_window {
            Some(w) if self.cfg.extras.sliding_layers.iter().any(|&s| s) => Some((sliding_window_mask(&mask, p, w)?, rows(&self.rope_local)?)),
            _ => None,
        };
        Ok(AttnInputs { rope: rows(&self.rope)?, mask, local })
    }

    /// Token embeddings of a batch, times the family's embedding scale if it has one.
    fn scaled_embedding(&self, batch: &Batch) -> Result<Tensor> {
        let (b, p) = batch.tokens.dims2()?;
        let x = self.embed.index_select(&batch.tokens.flatten_all()?, 0)?.reshape((b, p, self.cfg.d_model))?;
        Ok(match self.cfg.extras.embed_scale {
            Some(s) => (x * s as f64)?,
            None => x,
        })
    }

    /// Runs block `l` alone on its input `resid_pre` `[batch, pos, d_model]` for the tokens of
    /// `batch` (which supplies the mask and positions), with optional hooks on that block's hook
    /// points. Layer-by-layer calibration (GPTQ, AWQ) uses this.
    pub fn run_block(&self, l: usize, resid_pre: &Tensor, batch: &Batch, hooks: Option<&mut Hooks>) -> Result<Tensor> {
        let block = self.blocks.get(l).ok_or_else(|| QiError::invalid("layer", l, format!("model has {} layers", self.cfg.n_layers)))?;
        if let Some(h) = hooks.as_deref() {
            let valid = self.hook_names();
            for f in h.filters() {
                f.validate(&valid)?;
            }
        }
        let inputs = self.attention_inputs(batch)?;
        let (mask, rope) = inputs.for_layer(&self.cfg, l);
        let mut sink = Sink { hooks, cache: None };
        self.block_forward(l, block, resid_pre.clone(), mask, rope, &mut sink)
    }

    /// The MLP of `block` (block `l` of this model, or a modified copy of it) on its normed input
    /// `x`, as the forward computes it, without hooks.
    pub fn run_mlp(&self, l: usize, block: &Block, x: &Tensor) -> Result<Tensor> {
        self.mlp(l, block, x, &mut Sink { hooks: None, cache: None })
    }

    /// Logits computed from block `layer` on, given that block's input `resid_pre`, with optional
    /// hooks on the blocks it runs: patching or ablating at layer l need not recompute blocks 0..l.
    pub fn logits_from_layer(&self, layer: usize, resid_pre: &Tensor, batch: &Batch, mut hooks: Option<&mut Hooks>) -> Result<Tensor> {
        let mut x = resid_pre.clone();
        for l in layer..self.cfg.n_layers {
            x = self.run_block(l, &x, batch, hooks.as_deref_mut())?;
        }
        Ok(self.unembed.forward(&self.ln_final.forward(&x)?)?)
    }

    /// The block-0 input (`hook_resid_pre` of layer 0) for a batch: (scaled) embeddings plus
    /// learned positions.
    pub fn embed_tokens(&self, batch: &Batch) -> Result<Tensor> {
        self.check_tokens(batch)?;
        let (b, p) = batch.tokens.dims2()?;
        let x = self.scaled_embedding(batch)?;
        Ok(match &self.pos_embed {
            Some((_, w_pos)) => (x + w_pos.index_select(&self.clamped_positions(batch)?, 0)?.reshape((b, p, self.cfg.d_model))?)?,
            None => x,
        })
    }

    /// Flattened position ids, clamped into the context (padding positions may point past it).
    fn clamped_positions(&self, batch: &Batch) -> Result<Tensor> {
        Ok(batch.positions()?.clamp(0u32, (self.cfg.n_ctx - 1) as u32)?.flatten_all()?)
    }

    fn block_forward(&self, l: usize, block: &Block, x: Tensor, mask: &Tensor, rope: Option<&(Tensor, Tensor)>, sink: &mut Sink) -> Result<Tensor> {
        let resid_pre = sink.point(&names::resid_pre(l), x)?;
        let normed = sink.point(&names::ln1(l), block.ln1.forward(&resid_pre)?)?;
        let attn_out = self.attention(l, block, &normed, mask, rope, sink)?;
        // Sandwich norms (Gemma) belong to the sublayer: attn_out / mlp_out are what enters the
        // residual stream, so resid_mid = resid_pre + attn_out still holds (TransformerLens' Gemma 2).
        let attn_out = match &block.post_attn_norm {
            Some(n) => n.forward(&attn_out)?,
            None => attn_out,
        };
        let attn_out = sink.point(&names::attn_out(l), attn_out)?;
        let (mlp_in_resid, base) = if self.cfg.parallel_residual {
            (resid_pre.clone(), (resid_pre + &attn_out)?)
        } else {
            let mid = sink.point(&names::resid_mid(l), (resid_pre + &attn_out)?)?;
            (mid.clone(), mid)
        };
        let normed2 = sink.point(&names::ln2(l), block.ln2.forward(&mlp_in_resid)?)?;
        let mlp_out = self.mlp(l, block, &normed2, sink)?;
        let mlp_out = match &block.post_mlp_norm {
            Some(n) => n.forward(&mlp_out)?,
            None => mlp_out,
        };
        let mlp_out = sink.point(&names::mlp_out(l), mlp_out)?;
        sink.point(&names::resid_post(l), (base + mlp_out)?)
    }

    fn attention(&self, l: usize, block: &Block, x: &Tensor, mask: &Tensor, rope: Option<&(Tensor, Tensor)>, sink: &mut Sink) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, p, _) = x.dims3()?;
        let (nh, nkv, dh) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let (q, k, v) = match &block.attn.qkv {
            QkvProj::FusedContiguous(lin) => {
                let y = lin.forward(x)?;
                (y.narrow(2, 0, nh * dh)?, y.narrow(2, nh * dh, nkv * dh)?, y.narrow(2, (nh + nkv) * dh, nkv * dh)?)
            }
            QkvProj::FusedPerHead(lin) => {
                let y = lin.forward(x)?.reshape((b, p, nh, 3 * dh))?;
                (y.narrow(3, 0, dh)?, y.narrow(3, dh, dh)?, y.narrow(3, 2 * dh, dh)?)
            }
            QkvProj::Separate { q, k, v } => (q.forward(x)?, k.forward(x)?, v.forward(x)?),
        };
        // Token-major throughout, [b, pos, heads, d_head]: the layout of the hooks, of the
        // projections' output and of the output projection's input, so nothing is transposed.
        let q = sink.point(&names::q(l), q.reshape((b, p, nh, dh))?)?;
        let k = sink.point(&names::k(l), k.reshape((b, p, nkv, dh))?)?;
        let v = sink.point(&names::v(l), v.reshape((b, p, nkv, dh))?)?;
        // QK-norm (Gemma 3) acts on each head after hook_q / hook_k, as in TransformerLens.
        let q = match &block.attn.q_norm {
            Some(n) => n.forward(&q)?,
            None => q,
        };
        let k = match &block.attn.k_norm {
            Some(n) => n.forward(&k)?,
            None => k,
        };
        let (q, k) = match (rope, cfg.positional) {
            (Some((cos, sin)), Positional::Rotary { dim, .. }) => (
                sink.point(&names::rot_q(l), apply_rotary(&q, cos, sin, dim)?)?,
                sink.point(&names::rot_k(l), apply_rotary(&k, cos, sin, dim)?)?,
            ),
            _ => (q, k),
        };
        // `s**-0.5` as transformers computes Gemma's scaling; the plain form for everyone else.
        let scale = match cfg.extras.query_pre_attn_scalar {
            Some(s) => s.powf(-0.5),
            None => 1.0 / (dh as f64).sqrt(),
        };
        let scores_name = names::attn_scores(l);
        let pattern = if !fused::fusable(&[&q, &k]) {
            // Autograd (or not f32 on the CPU): composed candle ops. Grouped-query attention
            // without copying K: queries of the heads sharing one KV head are stacked along the
            // position axis.
            let rep = nh / nkv;
            let qg = q.transpose(1, 2)?.contiguous()?.reshape((b, nkv, rep * p, dh))?;
            let kt = k.transpose(1, 2)?.contiguous()?.t()?;
            let scores = (qg.matmul(&kt)? * scale)?.reshape((b, nh, p, p))?;
            let scores = sink.point(&scores_name, scores.broadcast_add(mask)?)?;
            crate::ops::softmax_last(&scores)?
        } else if sink.wants(&scores_name) {
            let scores = sink.point(&scores_name, fused::attention_scores(&q, &k, mask, scale)?)?;
            if fused::fusable(&[&scores]) { fused::softmax_rows(&scores)? } else { crate::ops::softmax_last(&scores)? }
        } else {
            fused::attention_pattern(&q, &k, mask, scale)?
        };
        let pattern = sink.point(&names::pattern(l), pattern)?;
        let z = if fused::fusable(&[&pattern, &v]) {
            fused::attention_mix(&pattern, &v)?
        } else {
            let rep = nh / nkv;
            let vh = v.transpose(1, 2)?.contiguous()?;
            pattern.reshape((b, nkv, rep * p, p))?.matmul(&vh)?.reshape((b, nh, p, dh))?.transpose(1, 2)?
        };
        let z = sink.point(&names::z(l), z)?;
        Ok(block.attn.out.forward(&z.reshape((b, p, nh * dh))?)?)
    }

    fn mlp(&self, l: usize, block: &Block, x: &Tensor, sink: &mut Sink) -> Result<Tensor> {
        let act = self.cfg.activation;
        let post = match &block.mlp {
            Mlp::Standard { fc_in, .. } => {
                let pre = sink.point(&names::mlp_pre(l), fc_in.forward(x)?)?;
                act.apply(&pre)?
            }
            Mlp::Gated { gate, up, .. } => {
                let pre = sink.point(&names::mlp_pre(l), gate.forward(x)?)?;
                let lin = sink.point(&names::mlp_pre_linear(l), up.forward(x)?)?;
                if act == Activation::Silu && fused::fusable(&[&pre, &lin]) {
                    fused::silu_mul(&pre, &lin)?
                } else {
                    (act.apply(&pre)? * lin)?
                }
            }
        };
        let post = sink.point(&names::mlp_post(l), post)?;
        let out = match &block.mlp {
            Mlp::Standard { fc_out, .. } => fc_out,
            Mlp::Gated { down, .. } => down,
        };
        Ok(out.forward(&post)?)
    }
}

/// Rotary on the first `dim` features of each head; the rest pass through.
fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor, dim: usize) -> Result<Tensor> {
    let dh = x.dim(D::Minus1)?;
    if dim == dh {
        return Ok(crate::ops::rope(x, cos, sin)?);
    }
    let rot = crate::ops::rope(&x.narrow(D::Minus1, 0, dim)?.contiguous()?, cos, sin)?;
    Ok(Tensor::cat(&[&rot, &x.narrow(D::Minus1, dim, dh - dim)?], D::Minus1)?)
}

/// cos/sin tables `[n_ctx, dim / 2]`, computed in f32 as Hugging Face does.
fn rope_tables(n_ctx: usize, dim: usize, theta: f64, dev: &Device) -> Result<(Tensor, Tensor)> {
    if dim == 0 || dim % 2 != 0 {
        bail!("rotary dimension must be even and positive, got {dim}");
    }
    let inv: Vec<f32> = (0..dim / 2).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / dim as f32)).collect();
    let mut cos = Vec::with_capacity(n_ctx * dim / 2);
    let mut sin = Vec::with_capacity(n_ctx * dim / 2);
    for pos in 0..n_ctx {
        for f in &inv {
            let a = pos as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    Ok((Tensor::from_vec(cos, (n_ctx, dim / 2), dev)?, Tensor::from_vec(sin, (n_ctx, dim / 2), dev)?))
}

/// `mask` with keys at or beyond `window` positions behind the query also masked: query q sees
/// key k only if `q - window < k` (as transformers' sliding-window mask and TransformerLens' local
/// attention). Positions are indices in the batch row; padding is masked by `mask` already.
fn sliding_window_mask(mask: &Tensor, p: usize, window: usize) -> Result<Tensor> {
    let band: Vec<f32> = (0..p * p).map(|i| if i / p >= i % p + window { f32::NEG_INFINITY } else { 0.0 }).collect();
    Ok(mask.broadcast_add(&Tensor::from_vec(band, (1, 1, p, p), mask.device())?)?)
}

/// Additive mask `[b or 1, 1, pos, pos]`: 0 where a query may attend, -inf elsewhere. Real queries
/// see real keys at or before them; padding queries see only themselves.
fn attention_mask(batch: &Batch) -> Result<Tensor> {
    let (b, p) = batch.tokens.dims2()?;
    let ninf = f32::NEG_INFINITY;
    let dev = batch.tokens.device();
    match &batch.mask {
        None => {
            let m: Vec<f32> = (0..p * p).map(|i| if i % p <= i / p { 0.0 } else { ninf }).collect();
            Ok(Tensor::from_vec(m, (1, 1, p, p), dev)?)
        }
        Some(mask) => {
            let mask = mask.to_vec2::<u8>()?;
            let mut m = vec![ninf; b * p * p];
            for (bi, row) in mask.iter().enumerate() {
                for qi in 0..p {
                    let base = (bi * p + qi) * p;
                    if row[qi] == 0 {
                        m[base + qi] = 0.0;
                        continue;
                    }
                    for ki in 0..=qi {
                        if row[ki] != 0 {
                            m[base + ki] = 0.0;
                        }
                    }
                }
            }
            Ok(Tensor::from_vec(m, (b, 1, p, p), dev)?)
        }
    }
}
