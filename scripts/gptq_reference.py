#!/usr/bin/env python3
"""GPTQ reference fixture for qi's quant::gptq tests (developer-only; needs torch + safetensors).

A small, self-contained PyTorch re-implementation of the reference algorithm of IST-DASLab/gptq
(`quant.py` Quantizer.find_params/quantize with mse=False, `gptq.py` GPTQ.add_batch/fasterquant),
written from that logic for this project. It writes data/fixtures/gptq/gptq_reference.safetensors:

  W            [64, 192]  f32  seeded weights
  X            [16, 32, 192] f32  correlated calibration inputs (X = Z @ A, column 5 dead = 0)
  H            [192, 192] f32  Hessian by the reference's running add_batch, one sample at a time
  rtn_4bit_row [64, 192]  f32  RTN (per-row asym, 4 bit) in float32: must match qi bit for bit
  q_<config>   [64, 192]  f32  GPTQ output computed in float64 (the algorithm run on W, H as f64)
  loss_<config> [1]       f64  sum(Losses) of that run
The float32 run of each config is compared with the float64 one and the number of entries that
differ is printed (informational; float32 runs can differ from each other by rounding flips).

Usage: /work/venv/py/bin/python scripts/gptq_reference.py [--out PATH]
"""
import argparse
import math
import os

import torch
from safetensors.torch import save_file

CONFIGS = {
    # name: (bits, groupsize, sym, act_order, static_groups, blocksize, percdamp)
    "4bit_row_asym": (4, -1, False, False, False, 128, 0.01),
    "3bit_g64_asym": (3, 64, False, False, False, 128, 0.01),
    "4bit_act_order": (4, -1, False, True, False, 128, 0.01),
    "4bit_act_order_static_g64": (4, 64, False, True, True, 128, 0.01),
    "4bit_sym_g32": (4, 32, True, False, False, 128, 0.01),
    "3bit_g32_block48_damp0.1": (3, 32, False, False, False, 48, 0.1),
}


def grid_params(x, bits, sym):
    """Per-row scale/zero of the 2-D x (Quantizer.find_params, perchannel, mse=False)."""
    maxq = 2**bits - 1
    zeros = torch.zeros(x.shape[0], dtype=x.dtype)
    lo = torch.minimum(x.min(dim=1).values, zeros)
    hi = torch.maximum(x.max(dim=1).values, zeros)
    if sym:
        hi = torch.maximum(lo.abs(), hi)
        neg = lo < 0
        lo = torch.where(neg, -hi, lo)
    both0 = (lo == 0) & (hi == 0)
    lo = torch.where(both0, torch.full_like(lo, -1), lo)
    hi = torch.where(both0, torch.full_like(hi, 1), hi)
    scale = (hi - lo) / maxq
    if sym:
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        zero = torch.round(-lo / scale)
    return scale.unsqueeze(1), zero.unsqueeze(1), maxq


def fake_quant(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


def hessian(inputs):
    """Running update of GPTQ.add_batch, each [1, t, c] input one sample, in float32."""
    cols = inputs.shape[-1]
    h = torch.zeros(cols, cols)
    n = 0
    for x in inputs:
        x = x.unsqueeze(0)
        tmp = x.shape[0]
        x = x.reshape(-1, cols).t()
        h *= n / (n + tmp)
        n += tmp
        x = math.sqrt(2 / n) * x.float()
        h += x.matmul(x.t())
    return h


def gptq(w, h, bits, groupsize=-1, sym=False, act_order=False, static_groups=False, blocksize=128, percdamp=0.01):
    """fasterquant on copies of w [rows, cols] and h [cols, cols] in their dtype. Returns (Q, loss)."""
    w = w.clone()
    h = h.clone()
    rows, cols = w.shape
    scale, zero, maxq = grid_params(w, bits, sym)

    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0

    groups = []
    if static_groups:
        for c0 in range(0, cols, groupsize):
            groups.append(grid_params(w[:, c0:c0 + groupsize], bits, sym)[:2])

    if act_order:
        perm = torch.argsort(torch.diag(h), descending=True, stable=True)
        w = w[:, perm]
        h = h[perm][:, perm]
        invperm = torch.argsort(perm)

    losses = torch.zeros_like(w)
    q_all = torch.zeros_like(w)

    damp = percdamp * torch.mean(torch.diag(h))
    idx = torch.arange(cols)
    h[idx, idx] += damp
    hinv = torch.linalg.cholesky(h)
    hinv = torch.cholesky_inverse(hinv)
    hinv = torch.linalg.cholesky(hinv, upper=True)

    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        loss1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if groupsize != -1:
                if static_groups:
                    g = perm[col].item() if act_order else col
                    scale, zero = groups[g // groupsize]
                elif col % groupsize == 0:
                    # the full W, not the block copy W1: as the reference
                    scale, zero, _ = grid_params(w[:, col:col + groupsize], bits, sym)
            x = w1[:, i]
            d = hinv1[i, i]
            qx = fake_quant(x.unsqueeze(1), scale, zero, maxq).flatten()
            q1[:, i] = qx
            loss1[:, i] = (x - qx) ** 2 / d**2
            e = (x - qx) / d
            w1[:, i:] -= e.unsqueeze(1).matmul(hinv1[i, i:].unsqueeze(0))
            err1[:, i] = e
        q_all[:, i1:i2] = q1
        losses[:, i1:i2] = loss1 / 2
        w[:, i2:] -= err1.matmul(hinv[i1:i2, i2:])

    if act_order:
        q_all = q_all[:, invperm]
    return q_all, torch.sum(losses).item()


def make_inputs(seed=0, rows=64, cols=192, samples=16, tokens=32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.05
    w[:, 7] *= 6.0  # a column of larger weights
    z = torch.randn(samples, tokens, cols, generator=g)
    mix = torch.randn(cols, cols, generator=g) / math.sqrt(cols)
    colscale = torch.exp(torch.randn(cols, generator=g) * 0.7)
    x = (z @ mix + 0.3 * z) * colscale
    x[:, :, 5] = 0.0  # a dead input feature
    return w.float(), x.float()


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "fixtures", "gptq", "gptq_reference.safetensors"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    w, x = make_inputs()
    h = hessian(x)
    out = {"W": w, "X": x, "H": h}
    s, z, m = grid_params(w, 4, False)
    out["rtn_4bit_row"] = fake_quant(w, s, z, m)
    for name, (bits, gs, sym, act, static, bs, damp) in CONFIGS.items():
        q64, loss64 = gptq(w.double(), h.double(), bits, gs, sym, act, static, bs, damp)
        q32, loss32 = gptq(w, h, bits, gs, sym, act, static, bs, damp)
        out[f"q_{name}"] = q64.float()
        out[f"loss_{name}"] = torch.tensor([loss64], dtype=torch.float64)
        flips = (q64.float() - q32).abs().gt(1e-5).sum().item()
        print(f"{name:28s} loss(f64) {loss64:.6f}  loss(f32) {loss32:.6f}  entries differing f32 vs f64: {flips}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, args.out)
    print("wrote", os.path.normpath(args.out))


if __name__ == "__main__":
    main()
