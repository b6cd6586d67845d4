#!/usr/bin/env bash
# tools/fuzz.sh: fuzz the file readers (IDX, safetensors checkpoints), the
# op API and the nn layer (each target fuzz/fuzz_*.c) with libFuzzer under
# AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   tools/fuzz.sh [SECONDS]   run each target of fuzz/ for SECONDS, as many
#                             at once as there are cores (default 3600;
#                             with CI=true: 60, every target at once)
#
# Sets up $BUILD (default build-fuzz: CC=clang, -Dfuzz=true, sanitizers,
# buildtype $FUZZ_BUILDTYPE: default debugoptimized, with CI=true debug)
# the first time, builds it, then runs each target on its committed seeds
# (fuzz/corpus/<name>/, only read; <name> is the target's without
# "fuzz_") and its working corpus $BUILD/corpus/<name>/, which keeps what
# the fuzzer found between runs.
# A crash, sanitizer report, leak, hang (over 25 s) or failed check stops
# that target; the input is saved as $BUILD/crashes/<target>-<kind>-<sha1>
# and the report printed. Replay one with `$BUILD/fuzz/<target> FILE`.
# Exits 1 if any target failed. Environment: BUILD, FUZZ_ARGS (more
# libFuzzer flags, e.g. "-jobs=2 -workers=2"), FUZZ_JOBS (targets at once;
# default the number of cores, 1 for one after the other).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build-fuzz}
if [ -n "${1:-}" ]; then
  SECONDS_EACH=$1
elif [ "${CI:-}" = true ]; then
  SECONDS_EACH=60
else
  SECONDS_EACH=3600
fi
case $SECONDS_EACH in
'' | *[!0-9]*)
  echo "usage: tools/fuzz.sh [SECONDS]" >&2
  exit 2
  ;;
esac

missing=()
for p in clang libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fuzz.sh: installing ${missing[*]}"
  sudo=
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null ||
    exit 1
fi

# b_lundef=false: with clang's sanitizers the shared libraries leave the
# runtime's symbols to the executable. Only the library, tools and fuzz/
# are built (no tests, examples or benchmarks). CI's run is short and
# starts from a clean clone, so it builds unoptimised (-O0, the GEMM
# aside, which every build compiles at -O2): the build takes about a third
# of the time, the targets run about half as many inputs a second
# (docs/testing.md, "Fuzzing").
buildtype=${FUZZ_BUILDTYPE:-debugoptimized}
[ "${CI:-}" = true ] && buildtype=${FUZZ_BUILDTYPE:-debug}
if [ ! -f "$BUILD/build.ninja" ]; then
  CC=clang meson setup "$BUILD" -Dfuzz=true -Dwerror=true -Db_sanitize=address,undefined \
    -Db_lundef=false -Dtests=false -Dexamples=false -Dbench=false \
    -Dbuildtype="$buildtype" >/dev/null || exit 1
fi
ninja -C "$BUILD" >/dev/null || {
  ninja -C "$BUILD"
  exit 1
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
mkdir -p "$BUILD/crashes"
# The targets run at once, as many as there are cores (FUZZ_JOBS, default
# nproc; 1: one after the other; with CI=true every target, so that CI's
# run is one round whatever the number of targets), each for SECONDS_EACH
# of wall time, so a run takes SECONDS_EACH per round, not per target.
if [ "${CI:-}" = true ]; then
  jobs=${FUZZ_JOBS:-$(find fuzz -maxdepth 1 -name 'fuzz_*.c' | wc -l)}
else
  jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
fi
case $jobs in
'' | *[!0-9]* | 0) jobs=1 ;;
esac

# run_target TARGET: fuzzes it, leaving its exit status in $BUILD/TARGET.status
run_target() {
  local target=$1 reader=${1#fuzz_}
  local work=$BUILD/corpus/$reader log=$BUILD/$1.log
  rm -f "$BUILD/$target.status"
  mkdir -p "$work"
  # shellcheck disable=SC2086
  "$BUILD/fuzz/$target" "$work" "fuzz/corpus/$reader" -max_total_time="$SECONDS_EACH" \
    -timeout=25 -max_len=8192 -print_final_stats=1 -artifact_prefix="$BUILD/crashes/$target-" \
    ${FUZZ_ARGS:-} >"$log" 2>&1
  echo $? >"$BUILD/$target.status"
}

targets=()
for src in fuzz/fuzz_*.c; do targets+=("$(basename "$src" .c)"); done
for ((i = 0; i < ${#targets[@]}; i += jobs)); do
  for target in "${targets[@]:i:jobs}"; do run_target "$target" & done
  wait
done

rc=0
for target in "${targets[@]}"; do
  log=$BUILD/$target.log
  status=$(cat "$BUILD/$target.status" 2>/dev/null || echo 1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    echo "fuzz $target: ${SECONDS_EACH} s, ${runs:-?} inputs, $cov: no crash"
  else
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    echo "fuzz $target: FAILED (exit $status) after ${runs:-?} inputs; full log $log"
    grep -E -A30 "^==[0-9]+==ERROR|runtime error:|check failed:|ERROR: libFuzzer" "$log" | head -40
    echo "fuzz $target: crashing input ${crash:-(none written)}; replay: $BUILD/fuzz/$target ${crash:-FILE}"
    rc=1
  fi
done
exit $rc
