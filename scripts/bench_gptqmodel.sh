#!/usr/bin/env bash
# Whole-model GPTQ, qi against GPTQModel (the maintained GPTQ library, PyPI `gptqmodel`, on the
# CPU), on the same calibration tokens in the same run: they alternate for $ROUNDS rounds (default
# 2). qi's time is `qi quantize --cache --json`'s `seconds` (calibration forwards, Hessians, GPTQ, storing
# excluded), GPTQModel's its quantize() call; loading is timed by neither. Developer-only.
#   scripts/bench_gptqmodel.sh QI_BINARY [MODEL]     (default: SmolLM2 from the shared folder)
# Settings (both sides): $BITS bits (4), per row, asymmetric, damp 0.01, true-sequential,
# act-order when ACT_ORDER=1, $SAMPLES × $SEQLEN C4 calibration tokens (64 × 512) exported by
# `qi inputs`. $QI_TORCH_PYTHON: a python with torch, transformers, gguf, accelerate and gptqmodel;
# GPTQModel gets GPTQMODEL_CPU_WORKERS=$(nproc) and torch $(nproc) threads. Prints one JSON line per
# round (for the `peers` report kind; `grep '^{'` keeps them) and the summary.
set -euo pipefail
QI="$1"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export QI_SHARED="${QI_SHARED:-$ROOT/../shared}"
MODEL="${1:-$QI_SHARED/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
ROUNDS="${ROUNDS:-2}" BITS="${BITS:-4}" SAMPLES="${SAMPLES:-64}" SEQLEN="${SEQLEN:-512}" ACT_ORDER="${ACT_ORDER:-0}"
PY="${QI_TORCH_PYTHON:?set QI_TORCH_PYTHON to a python with torch, transformers, gguf, accelerate and gptqmodel}"
[ -f "$MODEL" ] || { echo "bench_gptqmodel.sh: $MODEL not found" >&2; exit 2; }
MODEL="$(realpath "$MODEL")"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/qi-bench-gptqmodel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# true_sequential=true: GPTQModel quantizes a block's q/k/v, o, gate/up and down in turn, each on
# inputs through the already-quantized ones (qi's default, like IST-DASLab/gptq's, is all at once)
spec="gptq:bits=$BITS,true_sequential=true,samples=$SAMPLES,seqlen=$SEQLEN"; peer_args=(--bits "$BITS")
if [ "$ACT_ORDER" = 1 ]; then spec="gptq:bits=$BITS,act_order=true,true_sequential=true,samples=$SAMPLES,seqlen=$SEQLEN"; peer_args+=(--act-order); fi
"$QI" inputs --model "$MODEL" --calib-samples "$SAMPLES" --calib-seqlen "$SEQLEN" --ppl-windows 0 --induction-seeds 0 --out "$WORK/inputs.json" 2>/dev/null
VERSION="$("$PY" -c 'from importlib.metadata import version; print(version("gptqmodel"))')"
lines=()
for r in $(seq 1 "$ROUNDS"); do
  q=$(QI_CACHE="$WORK/cache-$r" "$QI" quantize --model "$MODEL" --quant "$spec" --cache --json 2>"$WORK/qi-$r.log" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])') ||
    { echo "bench_gptqmodel.sh: qi failed, see below" >&2; tail -20 "$WORK/qi-$r.log" >&2; exit 1; }
  rm -rf "$WORK/cache-$r"
  # from the scratch folder: GPTQModel writes its logs/ folder into the working directory
  g=$(cd "$WORK" && GPTQMODEL_CPU_WORKERS="$(nproc)" "$PY" "$ROOT/scripts/gptqmodel_peer.py" --model "$MODEL" --inputs "$WORK/inputs.json" \
        --hf-dir "$WORK/hf" --threads "$(nproc)" "${peer_args[@]}" 2>"$WORK/peer-$r.log" | tail -1) ||
    { echo "bench_gptqmodel.sh: gptqmodel failed, see below" >&2; tail -20 "$WORK/peer-$r.log" >&2; exit 1; }
  gs=$(echo "$g" | python3 -c 'import json,sys; print(json.load(sys.stdin)["quantize_s"])')
  # one line per round for the `peers` report block (docs/performance.md)
  echo "{\"round\":$r,\"job\":\"GPTQ-4 of the whole model, $SAMPLES × $SEQLEN calibration tokens, true-sequential$([ "$ACT_ORDER" = 1 ] && echo ', act-order')\",\"model\":\"$MODEL\",\"peer\":\"GPTQModel $VERSION\",\"qi_s\":$q,\"peer_s\":$gs,\"spec\":\"$spec\",\"peer_detail\":$g}"
  lines+=("$q $gs")
done
python3 - "${lines[@]}" <<'PY'
import statistics, sys
pairs = [tuple(float(x) for x in s.split()) for s in sys.argv[1:]]
ratios = [q / g for q, g in pairs]
print(f"qi per round: {', '.join(f'{q:.0f}' for q, _ in pairs)} s; GPTQModel: {', '.join(f'{g:.0f}' for _, g in pairs)} s")
print(f"ratio qi/GPTQModel (median over rounds): {statistics.median(ratios):.2f}  (per round: {', '.join(f'{r:.2f}' for r in ratios)})")
PY
