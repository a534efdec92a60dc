#!/usr/bin/env bash
# Builds the fuzz targets once and runs each for a fixed time, one after the other.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS: how long each target runs (default 60). 0 runs each target once over its seeds
# and its saved crashes (fuzz/artifacts-found/TARGET), to check that they pass.
# TARGET: any of the targets (default: all); `cargo fuzz list --fuzz-dir fuzz` names them.
#
# Each target starts from its checked-in seeds (fuzz/seeds/TARGET) and its corpus
# (fuzz/corpus/TARGET, grown by earlier runs, not checked in), with a dictionary where one
# helps (fuzz/dict). It prints, per target, the executions and whether it crashed; a crash's
# input is in fuzz/artifacts/TARGET/ and the full output in fuzz/logs/TARGET.log. The exit
# status is 1 if any target crashed.
#
# Environment:
#   FUZZ_TOOLCHAIN  a rustup toolchain to build with (`nightly`). By default the stable
#                   toolchain builds, with RUSTC_BOOTSTRAP=1 for the `-Z` flags that
#                   `cargo fuzz` passes (sanitizer coverage), so no nightly is needed.
#   FUZZ_SANITIZER  `none` (default: Weave is safe Rust, and a sanitizer slows every
#                   input down) or `address`.
#   CARGO_BUILD_JOBS  cargo's build jobs, as for any cargo command.
#   WEAVE_FUZZ_FLOAT_WIDENING=1  compare numbers as floats (see fuzz/src/lib.rs): only on a
#                   tree without the fix of issue 13's item 11, where the JSON loaders
#                   otherwise crash at once on an integer that loses digits.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
case $seconds in
  '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

cargo=(cargo)
if [[ -n ${FUZZ_TOOLCHAIN:-} ]]; then
  cargo=(cargo "+$FUZZ_TOOLCHAIN")
else
  export RUSTC_BOOTSTRAP=1
fi
sanitizer=${FUZZ_SANITIZER:-none}
build=(fuzz build --fuzz-dir fuzz -s "$sanitizer" --codegen-units 16)
run=(fuzz run --fuzz-dir fuzz -s "$sanitizer" --codegen-units 16)

if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  mapfile -t targets < <("${cargo[@]}" fuzz list --fuzz-dir fuzz)
fi

echo "== building ${targets[*]} (sanitizer: $sanitizer)"
"${cargo[@]}" "${build[@]}"

# The dictionary of a target, if it has one.
dict_of() {
  case $1 in
    pipeline) echo fuzz/dict/pipeline.dict ;;
    load_csv) echo fuzz/dict/csv.dict ;;
    load_jsonl | load_json) echo fuzz/dict/json.dict ;;
    cache_entry) echo fuzz/dict/cache_entry.dict ;;
  esac
}

mkdir -p fuzz/logs
failed=()
summary=()
for t in "${targets[@]}"; do
  log=fuzz/logs/$t.log
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "fuzz/seeds/$t"
  # libFuzzer writes new inputs into the first folder only: the seeds stay as checked in.
  dirs=("fuzz/corpus/$t" "fuzz/seeds/$t")
  opts=(-print_final_stats=1 -rss_limit_mb=2048 -timeout=60 "-artifact_prefix=fuzz/artifacts/$t/")
  if [[ $seconds == 0 ]]; then
    dirs=("fuzz/seeds/$t")
    [[ -d fuzz/artifacts-found/$t ]] && dirs+=("fuzz/artifacts-found/$t")
    opts+=(-runs=0)
  else
    opts+=("-max_total_time=$seconds")
  fi
  dict=$(dict_of "$t")
  [[ -n $dict ]] && opts+=("-dict=$dict")
  # The files a target writes go to a folder of its own, removed afterwards; in memory
  # (/dev/shm) where there is one, since every input is written to a file and read back.
  base=${TMPDIR:-/tmp}
  [[ -z ${TMPDIR:-} && -d /dev/shm && -w /dev/shm ]] && base=/dev/shm
  scratch=$(mktemp -d "$base/weave-fuzz-$t.XXXXXX")
  echo "== $t: ${seconds}s"
  status=0
  TMPDIR=$scratch "${cargo[@]}" "${run[@]}" "$t" "${dirs[@]}" -- "${opts[@]}" >"$log" 2>&1 || status=$?
  rm -rf "$scratch"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  if [[ $status == 0 ]]; then
    line="$t: ${execs:-?} executions, no crash"
  else
    failed+=("$t")
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    line="$t: ${execs:-?} executions, CRASHED (exit $status${artifact:+; input: $artifact}; see $log)"
  fi
  echo "$line"
  summary+=("$line")
done

echo
echo "== summary (${seconds}s each)"
printf '%s\n' "${summary[@]}"
[[ ${#failed[@]} == 0 ]]
