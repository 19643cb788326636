#!/usr/bin/env bash
# WikiText-2 perplexity of one model under many quantizers (same windows for every row), as a
# JSON-lines file (rendered as a table by `qi report`). Usage:
#   scripts/perplexity_table.sh QI_BINARY OUT.jsonl [MODEL] [WINDOWS] [GPTQ_SAMPLES]
# Rows already in OUT.jsonl are skipped, so an interrupted run resumes.
set -uo pipefail
QI="$1"; OUT="$2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${3:-${QI_SHARED:-$ROOT/../shared}/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
WINDOWS="${4:-20}"
NS="${5:-64}"
SPECS=(
  none fp16 "rtn:bits=8" "rtn:bits=4" "rtn:bits=3" "rtn:bits=4,group=64" "rtn:bits=3,group=64"
  "gptq:bits=4,samples=$NS,seqlen=512" "gptq:bits=3,samples=$NS,seqlen=512" "gptq:bits=4,act_order=true,samples=$NS,seqlen=512"
  "gptq:bits=4,group=64,samples=$NS,seqlen=512" "gptq:bits=3,group=64,samples=$NS,seqlen=512"
  "gptq:bits=4,group=64,act_order=true,samples=$NS,seqlen=512" "gptq:bits=3,group=64,act_order=true,samples=$NS,seqlen=512"
  "awq:bits=4,group=64,samples=32,seqlen=512" nf4 q4_0 "q4_k:fallback=true" q8_0
)
if [ -n "${QI_SPECS:-}" ]; then read -r -a SPECS <<< "$QI_SPECS"; fi
mkdir -p "$(dirname "$OUT")"; touch "$OUT"
status=0
# Groups of 64: SmolLM2's width 576 is not a multiple of 128, and qi's RTN requires groups to
# divide the input dimension. Q4_K cannot hold 576-wide rows either: fallback=true stores those
# matrices as Q5_0, as llama.cpp's quantizer does, and the 1536-wide `down` rows as Q4_K.
for s in "${SPECS[@]}"; do
  if grep -qF "\"quant\":\"$s\"" "$OUT"; then echo "skip $s (done)"; continue; fi
  echo "== $s"
  if line=$("$QI" perplexity --model "$MODEL" --quant "$s" --seqlen 512 --windows "$WINDOWS" --json); then
    echo "$line" >> "$OUT"; echo "$line"
  else
    echo "FAILED: $s" >&2; status=1
  fi
done
# The Markdown table is rendered from OUT by `qi report` (a `<!-- qi:report perplexity OUT -->`
# block, as in the README), the one renderer of this file.
echo "rows in $OUT; render the table with: qi report FILE.md (block: perplexity $OUT)"
exit $status
