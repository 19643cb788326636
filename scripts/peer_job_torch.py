#!/usr/bin/env python3
"""PyTorch peer of qi's whole study job (developer-only; never a CI dependency).

The original study's job on one model, in the PyTorch way: load the reference from its GGUF
through transformers (dequantized to float32, eager attention), quantize it with RTN-4 (per row,
asymmetric: IST-DASLab/gptq's `--nearest`) and GPTQ-4 (per row, the reference's sequential loop:
the inputs of each decoder layer captured on the calibration windows, one Hessian per linear from
forward hooks, `fasterquant` from scripts/gptq_reference.py on every linear of the layer, then the
layer re-run with its quantized weights to give the next layer's inputs), then for the reference
and both twins the induction scores (per-head stripe score and the induction loss, every seed) and
the perplexity of the WikiText-2 windows. Every token comes from `qi inputs` (the same calibration
windows, perplexity windows and induction sequences qi's study uses), so both sides do the same
work on the same data.

  qi inputs --model MODEL --out inputs.json
  python scripts/peer_job_torch.py --model MODEL --inputs inputs.json --threads 2

Prints one JSON line: wall time per stage and in total (imports and load included), the
perplexities and the mean stripe score of the strongest reference induction head per model, so a
caller can check that the two sides computed the same thing. `scripts/bench_job.sh` runs it
alternately with `qi study run` on studies/peer_job.toml.

Needs torch, transformers, gguf and accelerate.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    ap = argparse.ArgumentParser(description="PyTorch peer of qi's study job")
    ap.add_argument("--model", type=Path, required=True, help="GGUF file")
    ap.add_argument("--inputs", type=Path, required=True, help="the JSON of `qi inputs`")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    # sequences per forward pass, as qi's defaults: calibration 8, induction 10, perplexity 4
    ap.add_argument("--calib-batch", type=int, default=8)
    ap.add_argument("--induction-batch", type=int, default=10)
    ap.add_argument("--ppl-batch", type=int, default=4)
    args = ap.parse_args()

    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from gptq_reference import fake_quant, gptq, grid_params

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    stages: dict[str, float] = {"imports": time.perf_counter() - T0}

    def stage(name, t):
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - t

    inputs = json.loads(args.inputs.read_text())
    for key in ("calibration", "perplexity", "induction"):
        if key not in inputs:
            print(f"peer_job_torch: {args.inputs}: no '{key}' group (run `qi inputs` with its defaults)", file=sys.stderr)
            return 2

    t = time.perf_counter()
    path = args.model.resolve()
    reference = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager").eval()
    stage("load", t)
    # each twin starts as a copy of the loaded reference, as a torch user would make it (loading
    # the GGUF again would dequantize it again)
    load = lambda: copy.deepcopy(reference)  # noqa: E731

    def linears(model):
        for layer in model.model.layers:
            for name, mod in layer.named_modules():
                if isinstance(mod, torch.nn.Linear):
                    yield layer, name, mod

    # RTN: one min-max grid per row, asymmetric
    t = time.perf_counter()
    rtn = load()
    for _, _, lin in linears(rtn):
        scale, zero, maxq = grid_params(lin.weight.data, args.bits, False)
        lin.weight.data = fake_quant(lin.weight.data, scale, zero, maxq)
    stage("rtn", t)

    # GPTQ: the reference's sequential loop over decoder layers
    t = time.perf_counter()
    gq = load()
    calib = torch.tensor(inputs["calibration"]["rows"])
    layers = gq.model.layers
    captured: list[tuple[torch.Tensor, dict]] = []

    class Catcher(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.attention_type = getattr(inner, "attention_type", None)

        def forward(self, hidden, *a, **kw):
            captured.append((hidden, kw))
            raise ValueError  # stop after layer 0's inputs

    first = layers[0]
    layers[0] = Catcher(first)
    for b in range(0, len(calib), args.calib_batch):
        try:
            gq(input_ids=calib[b:b + args.calib_batch], use_cache=False)
        except ValueError:
            pass
    layers[0] = first

    def run_layer(layer, hidden, kw):
        out = layer(hidden, **kw)
        return out[0] if isinstance(out, tuple) else out

    hidden = [h for h, _ in captured]
    kwargs = [kw for _, kw in captured]
    for layer in layers:
        lins = [(n, m) for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]
        hs = {n: torch.zeros(m.in_features, m.in_features) for n, m in lins}
        counts = {n: 0 for n, _ in lins}

        def hook(name):
            def add(_, inp, __):
                # GPTQ.add_batch: each sequence one sample of H = 2/N Σ XᵀX, as a running mean
                x = inp[0].detach()
                tmp = x.shape[0]
                x = x.reshape(-1, x.shape[-1]).t().float()
                n = counts[name]
                hs[name] *= n / (n + tmp)
                counts[name] = n + tmp
                x = math.sqrt(2 / counts[name]) * x
                hs[name] += x.matmul(x.t())
            return add

        handles = [m.register_forward_hook(hook(n)) for n, m in lins]
        for h, kw in zip(hidden, kwargs):
            run_layer(layer, h, kw)
        for hd in handles:
            hd.remove()
        for n, m in lins:
            q, _ = gptq(m.weight.data, hs[n], args.bits)
            m.weight.data = q
        hidden = [run_layer(layer, h, kw) for h, kw in zip(hidden, kwargs)]
    stage("gptq", t)

    models = {"none": reference, f"rtn:bits={args.bits}": rtn, f"gptq:bits={args.bits}": gq}

    # induction: per-head stripe score (attention from r's repeat to the token after its first
    # occurrence) and the loss on the repeated half, every seed
    ind = inputs["induction"]
    half, offset = ind["seq_len"], ind["offset"]
    best_head = {}
    t = time.perf_counter()
    for name, model in models.items():
        stripes, losses = [], []
        for rows in ind["seeds"].values():
            ids = torch.tensor(rows)
            for b in range(0, len(ids), args.induction_batch):
                x = ids[b:b + args.induction_batch]
                out = model(input_ids=x, output_attentions=True, use_cache=False)
                att = torch.stack(out.attentions, 1)  # [b, layer, head, q, k]
                q = torch.arange(offset + half, offset + 2 * half)
                stripes.append(att[:, :, :, q, q - half + 1].mean(-1).sum(0))
                logp = torch.log_softmax(out.logits[:, offset + half:-1], -1)
                tgt = x[:, offset + half + 1:]
                losses.append(-logp.gather(-1, tgt.unsqueeze(-1)).sum().item() / tgt.numel() * len(x))
        n = sum(len(r) for r in ind["seeds"].values())
        score = torch.stack(stripes).sum(0) / n
        best_head[name] = {"score": score, "loss": sum(losses) / n}
    stage("induction", t)
    ref_layer, ref_head = divmod(int(torch.argmax(best_head["none"]["score"])), best_head["none"]["score"].shape[1])

    t = time.perf_counter()
    ppl = {}
    windows = torch.tensor(inputs["perplexity"]["rows"])
    for name, model in models.items():
        nll = []
        for b in range(0, len(windows), args.ppl_batch):
            x = windows[b:b + args.ppl_batch]
            logp = torch.log_softmax(model(input_ids=x, use_cache=False).logits[:, :-1], -1)
            nll.extend((-logp.gather(-1, x[:, 1:].unsqueeze(-1)).squeeze(-1).mean(1)).tolist())
        ppl[name] = math.exp(sum(nll) / len(nll))
    stage("perplexity", t)

    print(json.dumps({
        "impl": "torch",
        "model": str(args.model),
        "total_s": round(time.perf_counter() - T0, 3),
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "threads": torch.get_num_threads(),
        "calibration_tokens": int(calib.numel()),
        "perplexity": {k: round(v, 4) for k, v in ppl.items()},
        "induction_loss": {k: round(v["loss"], 4) for k, v in best_head.items()},
        "strongest_reference_head": f"L{ref_layer}H{ref_head}",
        "its_stripe_score": {k: round(float(v["score"][ref_layer, ref_head]), 4) for k, v in best_head.items()},
    }, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
