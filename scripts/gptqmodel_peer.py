#!/usr/bin/env python3
"""GPTQModel's side of `scripts/bench_gptqmodel.sh` (developer-only; never a CI dependency).

Quantizes one model with GPTQModel (PyPI `gptqmodel`, the maintained GPTQ library; it runs on the
CPU) on the calibration windows `qi inputs` exports, so it sees exactly the tokens qi's
`gptq:samples=N,seqlen=L` draws. GPTQModel reads Hugging Face folders, not GGUF: the GGUF is
loaded once through transformers (dequantized to float32, as qi does) and saved as an HF folder
(`--hf-dir`, reused when present; not timed). The GPTQ settings are qi's defaults: per-row grid
(group_size -1), asymmetric, damp 0.01, true-sequential, and act-order only with --act-order.

  qi inputs --model MODEL --calib-samples 64 --calib-seqlen 512 --ppl-windows 0 --induction-seeds 0 --out in.json
  GPTQMODEL_CPU_WORKERS=2 python scripts/gptqmodel_peer.py --model MODEL --inputs in.json --hf-dir DIR

Prints one JSON line: `load_s` (GPTQModel.load), `quantize_s` (GPTQModel's quantize(), the GPTQ
work itself: calibration forwards, Hessians, the column loop, packing) and the settings.
Needs torch, transformers, gguf, accelerate and gptqmodel.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the reference GGUF")
    ap.add_argument("--inputs", type=Path, required=True, help="`qi inputs` JSON with a calibration group")
    ap.add_argument("--hf-dir", type=Path, required=True, help="HF folder made from the GGUF (created when absent)")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--act-order", action="store_true")
    ap.add_argument("--batch", type=int, default=1, help="calibration batch size (GPTQModel's default 1)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    inputs = json.loads(args.inputs.read_text())
    if "calibration" not in inputs:
        print(f"gptqmodel_peer: {args.inputs}: no 'calibration' group (run `qi inputs` with --calib-samples)", file=sys.stderr)
        return 2
    rows = inputs["calibration"]["rows"]
    if not (args.hf_dir / "config.json").exists():
        path = args.model.resolve()
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        # transformers refuses to save a model loaded from GGUF; the same weights in a plain model do
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        m = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        m.load_state_dict(loaded.state_dict())
        del loaded
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        tmp = args.hf_dir.with_name(args.hf_dir.name + ".partial")
        m.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(args.hf_dir)
        del m

    from gptqmodel import GPTQModel, QuantizeConfig

    # act_group_aware (GPTQModel's own ordering, on by default) off: the reference algorithm, as qi runs it
    cfg = QuantizeConfig(bits=args.bits, group_size=-1, sym=False, desc_act=args.act_order, act_group_aware=False,
                         damp_percent=0.01, true_sequential=True)
    t = time.perf_counter()
    model = GPTQModel.load(str(args.hf_dir), cfg, device="cpu", dtype=torch.float32)
    load_s = time.perf_counter() - t
    calibration = [{"input_ids": r, "attention_mask": [1] * len(r)} for r in rows]
    t = time.perf_counter()
    model.quantize(calibration, batch_size=args.batch)
    quantize_s = time.perf_counter() - t
    print(json.dumps({
        "load_s": load_s, "quantize_s": quantize_s, "bits": args.bits, "act_order": args.act_order,
        "samples": len(rows), "seqlen": len(rows[0]), "batch": args.batch, "threads": torch.get_num_threads(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
