#!/usr/bin/env bash
# Benchmarks on every reference model, one JSON line per model (and twin) into data/results/, which
# docs/performance.md renders with `qi report`:
#   twins  `qi bench-twins`: RTN-4, GPTQ-4 and NF4 twins as the twin cache stores them (compact)
#          against the same twins in f32, each load timed in alternating rounds with the reference
#          GGUF's own load → bench_twins.jsonl (report kind `twins`). Twins missing from the cache
#          are quantized first (GPTQ-4 of the 0.5B model: about 20 min).
#   sizes  `qi bench-forward`: load, then a forward of 8 × 128 random tokens caching every
#          hook_resid_post and hook_pattern (median of RUNS after a warm-up), each model in its own
#          process so that its peak RSS is its own → bench_sizes.jsonl (report kind `costs`).
#
#   scripts/bench_models.sh QI_BINARY twins|sizes [MODEL_NAME …]  (default: every model `dev models` lists)
#   twins: ROUNDS (default 5); SPECS (default "rtn:bits=4 gptq:bits=4,seqlen=512 nf4"); SPECS_LARGE
#   for qwen2.5-coder-1.5b (default "rtn:bits=4 nf4": its GPTQ-4 alone takes about 40 min here).
#   sizes: RUNS (default 5).
set -euo pipefail
QI="$1"; KIND="$2"; shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "$KIND" in
  twins|sizes) ;;
  *) echo "bench_models.sh: unknown kind '$KIND' (expected twins or sizes)" >&2; exit 2 ;;
esac
OUT="$ROOT/data/results/bench_$KIND.jsonl"
TMP="$OUT.tmp-$$"
trap 'rm -f "$TMP"' EXIT
: > "$TMP"
bash "$ROOT/scripts/models.sh" | while IFS=$'\t' read -r name path; do
  if [ "$#" -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$name"; then continue; fi
  if [ "$KIND" = twins ]; then
    specs="${SPECS:-rtn:bits=4 gptq:bits=4,seqlen=512 nf4}"
    [ "$name" = qwen2.5-coder-1.5b ] && specs="${SPECS_LARGE:-rtn:bits=4 nf4}"
    args=(bench-twins --model "$path" --rounds "${ROUNDS:-5}"); for s in $specs; do args+=(--quant "$s"); done
  else
    args=(bench-forward --model "$path" --runs "${RUNS:-5}")
  fi
  echo "${args[*]}" >&2
  # the line's model is the file name, so the committed results do not carry this machine's paths
  "$QI" "${args[@]}" | python3 -c '
import json, os, sys
for line in sys.stdin:
    d = json.loads(line); d["model"] = os.path.basename(d["model"]); print(json.dumps(d, sort_keys=True))' >> "$TMP"
done
mv "$TMP" "$OUT"
echo "wrote $OUT" >&2
