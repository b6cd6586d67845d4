#!/bin/sh
# test_isa_clones.sh PROBE QEMU: runs tests/isa_probe.c's PROBE on this CPU
# and under QEMU (qemu-x86_64, user mode) emulating a CPU without AVX-512
# (Haswell) and one without AVX2 (Nehalem), so that the other instruction
# sets' clones of the row loops run, and compares their lines (TAP). QEMU
# empty, or a CPU other than x86-64: skipped, with the reason.
#
# glibc picks its own exp, log, sin, pow and the like by the CPU too, FMA
# variants or SSE2 ones, which may differ in the last bit of a double: the
# engine's float64 ops call them. So the run compared with the Nehalem one
# (no FMA) is this CPU's with glibc told to take its SSE2 variants
# (GLIBC_TUNABLES, which GCC's own choice of clones does not read).
probe=$1
qemu=$2
if [ "$(uname -m)" != x86_64 ]; then
  echo "1..0 # SKIP the clones are x86-64's (this is $(uname -m))"
  exit 0
fi
if [ -z "$qemu" ]; then
  echo "1..0 # SKIP qemu-x86_64 not found (apt-get install qemu-user): only this CPU's clones ran"
  exit 0
fi
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
if ! "$probe" --list >"$dir/native" 2>"$dir/native.err"; then
  sed 's/^/# /' "$dir/native.err"
  echo "Bail out! the probe failed on this CPU"
  exit 1
fi
if ! GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2,-FMA "$probe" >"$dir/nofma.body" 2>"$dir/nofma.err"; then
  sed 's/^/# /' "$dir/nofma.err"
  echo "Bail out! the probe failed on this CPU with glibc's SSE2 variants"
  exit 1
fi
here=$(head -n 1 "$dir/native" | sed 's/^# //')
tail -n +2 "$dir/native" >"$dir/native.body"
echo "1..2"
case "$here" in
*avx512f*) ;;
*) echo "# this CPU has no AVX-512: its AVX-512 clones do not run here, and the AVX2 ones are compared with themselves" ;;
esac
n=0
for cpu in Haswell-v4 Nehalem-v2; do
  n=$((n + 1))
  ref=native
  [ "$cpu" = Nehalem-v2 ] && ref=nofma
  # OpenBLAS detects the emulated core: an OPENBLAS_CORETYPE inherited
  # from the caller names this machine's, whose kernels may be missing
  if ! (unset OPENBLAS_CORETYPE; "$qemu" -cpu "$cpu" "$probe" --list) >"$dir/$cpu" 2>"$dir/$cpu.err"; then
    # qemu warns of CPU features its translator lacks (TSX and the like)
    grep -v "TCG doesn't support" "$dir/$cpu.err" | sed 's/^/# /'
    echo "not ok $n - the probe failed under qemu -cpu $cpu"
    continue
  fi
  there=$(head -n 1 "$dir/$cpu" | sed 's/^# //')
  tail -n +2 "$dir/$cpu" >"$dir/$cpu.body"
  # qemu before 7.2 has no AVX2 or FMA, and drops them from -cpu Haswell
  # with only a warning: the run would then be the baseline's
  case "$cpu:$there" in
  Haswell*:"cpu: avx2 fma;"* | Nehalem*:"cpu:;"*) ;;
  *)
    echo "ok $n # SKIP qemu did not emulate $cpu's instruction sets ($there; AVX2 needs qemu 7.2)"
    continue
    ;;
  esac
  also=
  [ $ref = nofma ] && also=", glibc's SSE2 variants"
  if cmp -s "$dir/$ref.body" "$dir/$cpu.body"; then
    echo "ok $n - $(wc -l <"$dir/$ref.body") results: the same bits under qemu -cpu $cpu ($there) as here ($here$also)"
  else
    diff "$dir/$ref.body" "$dir/$cpu.body" | grep '^[<>]' | head -n 40 | sed 's/^/# /'
    echo "not ok $n - results differ under qemu -cpu $cpu ($there) from this CPU's ($here$also)"
  fi
done
