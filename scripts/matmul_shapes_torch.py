#!/usr/bin/env python3
"""Torch peer of `cargo run --example matmul_shapes`: matmul time at SmolLM2's forward shapes
(batch 8 x 128 = 1024 rows; q/o, k/v, gate/up, down per block x 30 blocks, and the unembedding)
with torch (MKL) and numpy (OpenBLAS), 2 threads. Prints per-shape times and the per-forward total
(torch: the faster of `a @ b` and `torch.nn.functional.linear`). Developer tool; needs torch.
"""
import time
import numpy as np, torch
torch.set_num_threads(2)
shapes = {"q/o":(1024,576,576),"k/v":(1024,576,192),"gate/up":(1024,576,1536),"down":(1024,1536,576),"lm_head":(1024,576,49152)}
counts = {"q/o":60,"k/v":60,"gate/up":60,"down":30,"lm_head":1}
def bench(f, reps):
    f(); t=time.perf_counter()
    for _ in range(reps): f()
    return (time.perf_counter()-t)/reps
tot_t=tot_n=0
for k,(m,kk,n) in shapes.items():
    a=torch.randn(m,kk); b=torch.randn(kk,n); bt=torch.randn(n,kk)
    an=a.numpy(); bn=b.numpy()
    reps = 3 if k=="lm_head" else 20
    tt=bench(lambda: a@b, reps); tl=bench(lambda: torch.nn.functional.linear(a,bt), reps); tn=bench(lambda: an@bn, reps)
    gf=2*m*kk*n/1e9
    print(f"{k:8s} torch {tt*1e3:7.2f} ms ({gf/tt:5.0f} GF/s) linear {tl*1e3:7.2f} numpy {tn*1e3:7.2f} ms ({gf/tn:5.0f} GF/s)")
    tot_t+=counts[k]*min(tt,tl); tot_n+=counts[k]*tn
print(f"per-forward matmul total: torch {tot_t:.3f} s numpy {tot_n:.3f} s")
