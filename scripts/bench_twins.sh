#!/usr/bin/env bash
# Twin storage and load benchmark on every reference model: RTN-4, GPTQ-4 and NF4 twins as the
# twin cache stores them (compact) against the same twins in f32, each load timed in alternating
# rounds with the reference GGUF's own load. Writes data/results/bench_twins.jsonl (one
# `qi bench-twins` line per model and spec), which docs/performance.md renders with `qi report`.
#
#   scripts/bench_twins.sh QI_BINARY [MODEL_NAME …]     (default: every model `dev models` lists)
#   ROUNDS (default 5); SPECS (default "rtn:bits=4 gptq:bits=4,seqlen=512 nf4"); SPECS_LARGE for
#   qwen2.5-coder-1.5b (default "rtn:bits=4 nf4": its GPTQ-4 alone takes about 40 min here).
# Twins missing from the cache are quantized first (GPTQ-4 of the 0.5B model: about 20 min).
set -euo pipefail
QI="$1"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${ROUNDS:-5}"
SPECS="${SPECS:-rtn:bits=4 gptq:bits=4,seqlen=512 nf4}"
SPECS_LARGE="${SPECS_LARGE:-rtn:bits=4 nf4}"
OUT="$ROOT/data/results/bench_twins.jsonl"
TMP="$OUT.tmp-$$"
trap 'rm -f "$TMP"' EXIT
: > "$TMP"
bash "$ROOT/scripts/models.sh" | while IFS=$'\t' read -r name path; do
  if [ "$#" -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$name"; then continue; fi
  specs="$SPECS"; [ "$name" = qwen2.5-coder-1.5b ] && specs="$SPECS_LARGE"
  args=(); for s in $specs; do args+=(--quant "$s"); done
  echo "bench-twins: $name ($specs)" >&2
  # the line's model is the file name, so the committed results do not carry this machine's paths
  "$QI" bench-twins --model "$path" --rounds "$ROUNDS" "${args[@]}" | python3 -c '
import json, os, sys
for line in sys.stdin:
    d = json.loads(line); d["model"] = os.path.basename(d["model"]); print(json.dumps(d, sort_keys=True))' >> "$TMP"
done
mv "$TMP" "$OUT"
echo "wrote $OUT" >&2
