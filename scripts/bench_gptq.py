#!/usr/bin/env python3
"""Times the PyTorch reference GPTQ (scripts/gptq_reference.py's re-implementation of
IST-DASLab/gptq fasterquant, float32 as the reference) on one 576x1536 layer on CPU with 2 threads.
The Rust counterpart is the ignored test `quant_gptq_bench` in qi/src/quant/gptq.rs:

  cargo test --target x86_64-unknown-linux-gnu -p qi quant_gptq_bench -- --ignored --nocapture

Usage: /work/venv/py/bin/python scripts/bench_gptq.py [--reps 3]
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gptq_reference import gptq, hessian  # noqa: E402

ROWS, COLS, SAMPLES, TOKENS = 576, 1536, 16, 256

CONFIGS = {
    "4bit per-row": dict(bits=4),
    "4bit g128 act_order": dict(bits=4, groupsize=128, act_order=True),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(ROWS, COLS, generator=g) * 0.02
    z = torch.randn(SAMPLES, TOKENS, COLS, generator=g)
    mix = torch.randn(COLS, COLS, generator=g) / math.sqrt(COLS)
    x = z @ mix + 0.3 * z
    h = hessian(x)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, W [{ROWS}, {COLS}], H from {SAMPLES}x{TOKENS} tokens")
    for name, kw in CONFIGS.items():
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            gptq(w, h, **kw)
            times.append(time.perf_counter() - t)
        print(f"{name:24s} min {min(times)*1000:.0f} ms  median {statistics.median(times)*1000:.0f} ms  (runs: {', '.join(f'{t*1000:.0f}' for t in times)})")


if __name__ == "__main__":
    main()
