#!/usr/bin/env python3
"""AWQ reference fixture for qi's quant::awq tests (developer-only; needs torch + transformers).

A small PyTorch implementation of llm-awq's steps (mit-han-lab/llm-awq `pre_quant.run_awq`,
`auto_scale.auto_scale_block` / `apply_scale`, `auto_clip.auto_clip_block` / `apply_clip`, then
`quantizer.pseudo_quantize_tensor` on every linear), written from that logic for this project,
run on two tiny Llama models with fixed calibration windows:

  llama  data/fixtures/llama (grouped-query attention: the v→o group is skipped)
  mha    data/fixtures/awq/mha, made here (multi-head attention: v→o applies; tied embeddings;
         norm weights spread and two loud channels, so the scales are not flat)

For each it writes data/fixtures/awq/<name>.safetensors:
  windows                 [20, 55] i64  calibration tokens (seeded)
  l{i}.scales.{ln1,v,ln2,up}  the searched scales of each group, by the op they fold into
  l{i}.losses.{...}       [20]   the loss of each ratio of that group's grid
  l{i}.clip.{v,o,gate,up,down}  [rows, groups] clip thresholds
  <HF name>               the AWQ model's norms and (dequantized) linear weights
Settings: 4 bits, asymmetric, group 32, all 1100 calibration tokens (the clip search samples
every 2nd: 550). Float32 throughout, torch.set_num_threads(1).

Usage: /work/pyenv/bin/python scripts/awq_reference.py
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "fixtures")
BITS, GROUP, N_GRID = 4, 32, 20
N_WINDOWS, WINDOW = 20, 55


def pseudo_quantize(w):
    """llm-awq's grid: per group of GROUP columns, its own [min, max], zero point clamped."""
    shape = w.shape
    w = w.reshape(-1, GROUP)
    mx, mn = w.amax(dim=1, keepdim=True), w.amin(dim=1, keepdim=True)
    max_int = 2**BITS - 1
    s = (mx - mn).clamp(min=1e-5) / max_int
    z = (-torch.round(mn / s)).clamp(0, max_int)
    return ((torch.clamp(torch.round(w / s) + z, 0, max_int) - z) * s).reshape(shape)


def search(module, linears, x, org, run):
    """Grid over ratio: scales from mean |x|, loss of `run(module)` against `org`."""
    x_mean = x.abs().view(-1, x.shape[-1]).mean(0)
    saved = [l.weight.data.clone() for l in linears]
    best, best_s, losses = float("inf"), None, []
    for i in range(N_GRID):
        s = x_mean.pow(i / N_GRID).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        for l in linears:
            l.weight.data = pseudo_quantize(l.weight.data * s.view(1, -1)) / s.view(1, -1)
        loss = (org - run(module)).float().pow(2).mean().item()
        losses.append(loss)
        if loss < best:
            best, best_s = loss, s.clone()
        for l, w in zip(linears, saved):
            l.weight.data = w.clone()
    return best_s, torch.tensor(losses, dtype=torch.float64)


def clip(w, x):
    """auto_clip_layer: best max |w| per row and group, [rows, groups]."""
    x = x.view(-1, x.shape[-1])
    x = x.reshape(1, x.shape[0], -1, GROUP)[:, 0 :: max(1, x.shape[0] // 512)]
    w = w.reshape(w.shape[0], 1, -1, GROUP)
    org_max = w.abs().amax(dim=-1, keepdim=True)
    best_max, min_err = org_max.clone(), torch.ones_like(org_max) * 1e9
    org = (x * w).sum(dim=-1)
    for i in range(int(0.5 * N_GRID)):
        m = org_max * (1 - i / N_GRID)
        q = pseudo_quantize(torch.clamp(w, -m, m))
        err = ((x * q).sum(dim=-1) - org).pow(2).mean(dim=1).view(min_err.shape)
        better = err < min_err
        min_err[better], best_max[better] = err[better], m[better]
    return best_max.squeeze(1).squeeze(-1)


@torch.no_grad()
def run_awq(model, windows):
    layers = model.model.layers
    feats, attn_call = {}, {}

    def keep_input(name):
        def hook(m, inp, out):
            feats[name] = inp[0].detach().clone()
        return hook

    def keep_call(i):
        def hook(m, args, kwargs):
            attn_call[i] = (args, kwargs)
        return hook

    handles = []
    for i, layer in enumerate(layers):
        for n, m in layer.named_modules():
            if isinstance(m, torch.nn.Linear):
                handles.append(m.register_forward_hook(keep_input(f"{i}.{n}")))
        handles.append(layer.self_attn.register_forward_pre_hook(keep_call(i), with_kwargs=True))
    model(torch.tensor(windows), use_cache=False)  # every block's inputs are the full-precision model's
    for h in handles:
        h.remove()

    out = {}
    for i, layer in enumerate(layers):
        at, mlp = layer.self_attn, layer.mlp
        f = lambda n: feats[f"{i}.{n}"]
        args, kwargs = attn_call[i]

        def attention(m, x=f("self_attn.q_proj")):
            if args:
                return m(x, *args[1:], **kwargs)[0]
            return m(**{**kwargs, "hidden_states": x})[0]

        groups = []  # (fold name, prev op, linears, scales)
        s, l = search(at, [at.q_proj, at.k_proj, at.v_proj], f("self_attn.q_proj"), attention(at), attention)
        groups.append(("ln1", layer.input_layernorm, [at.q_proj, at.k_proj, at.v_proj], s, l, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]))
        if at.v_proj.weight.shape == at.o_proj.weight.shape:
            x = f("self_attn.o_proj")
            s, l = search(at.o_proj, [at.o_proj], x, at.o_proj(x), lambda m: m(x))
            groups.append(("v", at.v_proj, [at.o_proj], s, l, ["self_attn.o_proj"]))
        x = f("mlp.gate_proj")
        s, l = search(mlp, [mlp.gate_proj, mlp.up_proj], x, mlp(x), lambda m: m(x))
        groups.append(("ln2", layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], s, l, ["mlp.gate_proj", "mlp.up_proj"]))
        xd = f("mlp.down_proj")
        s, l = search(mlp.down_proj, [mlp.down_proj], xd, mlp.down_proj(xd), lambda m: m(xd))
        groups.append(("up", mlp.up_proj, [mlp.down_proj], s, l, ["mlp.down_proj"]))

        # fold, in group order; the inputs move to the scaled basis for the clip search
        for name, prev, lins, s, l, lin_names in groups:
            if isinstance(prev, torch.nn.Linear):
                prev.weight.div_(s.view(-1, 1))
            else:
                prev.weight.div_(s)
            for lin in lins:
                lin.weight.mul_(s.view(1, -1))
            for n in lin_names:
                feats[f"{i}.{n}"] = feats[f"{i}.{n}"] / s.view(1, -1)
            out[f"l{i}.scales.{name}"] = s.clone()
            out[f"l{i}.losses.{name}"] = l
        for n, m in layer.named_modules():
            if isinstance(m, torch.nn.Linear) and not any(k in n for k in ["q_", "k_"]):
                mv = clip(m.weight.data, f(n))
                out[f"l{i}.clip.{n.split('.')[-1].replace('_proj', '')}"] = mv.clone()
                rows = m.weight.shape[0]
                m.weight.data = torch.clamp(m.weight.data.reshape(rows, -1, GROUP), -mv.unsqueeze(-1), mv.unsqueeze(-1)).reshape(rows, -1)
        for n, m in layer.named_modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.data = pseudo_quantize(m.weight.data)
    for k, v in model.state_dict().items():
        if k.startswith("model.layers."):
            out[k] = v.clone()
    return out


def make_mha(path):
    cfg = json.load(open(os.path.join(ROOT, "llama", "config.json")))
    cfg.update(num_key_value_heads=4, intermediate_size=128, tie_word_embeddings=True)
    cfg.pop("transformers_version", None)
    torch.manual_seed(1805)
    model = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in [layer.input_layernorm, layer.post_attention_layernorm]:
                norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape))
                norm.weight[[3, 17]] *= 8.0
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    return model


def main():
    torch.set_num_threads(1)
    out_dir = os.path.join(ROOT, "awq")
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(18)
    windows = torch.randint(0, 320, (N_WINDOWS, WINDOW), generator=g)
    for name in ["llama", "mha"]:
        if name == "mha":
            model = make_mha(os.path.join(out_dir, "mha"))
        else:
            model = LlamaForCausalLM.from_pretrained(os.path.join(ROOT, "llama"), attn_implementation="eager").eval()
        model.config._attn_implementation = "eager"
        res = run_awq(model, windows.tolist())
        res["windows"] = windows.clone()
        res = {k: v.contiguous() for k, v in res.items()}
        save_file(res, os.path.join(out_dir, f"{name}.safetensors"))
        ratios = {k: int(v.argmin()) / N_GRID for k, v in res.items() if ".losses." in k}
        print(name, "ratios", ratios)


if __name__ == "__main__":
    main()
