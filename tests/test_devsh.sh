#!/bin/sh
# The README's dev.sh without root and without sudo, and its argument
# handling, reported as TAP. dev.sh runs with a PATH of stand-ins: an `id`
# that says uid 1000, a `dpkg-query` that knows no package, and no sudo; it
# must stop before building and print the exact apt-get line for root;
# given a sudo, it must use it.
# Run by meson (suite 'autodiff'): sh tests/test_devsh.sh DEV_SH
set -u

DEV=$1
TMP=${TMPDIR:-/tmp}/test_devsh.$$
mkdir -p "$TMP/bin" || exit 1
trap 'rm -rf "$TMP"' EXIT
for t in bash dirname grep; do ln -s "$(command -v $t)" "$TMP/bin/$t" || exit 1; done
printf '#!%s\necho 1000\n' "$(command -v sh)" >"$TMP/bin/id"
printf '#!%s\nexit 1\n' "$(command -v sh)" >"$TMP/bin/dpkg-query"
chmod +x "$TMP/bin/id" "$TMP/bin/dpkg-query"

n=0
fails=0
ok() { # ok CONDITION-STATUS DESCRIPTION
  n=$((n + 1))
  if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi
}
run() { # run ARGS...: dev.sh with the stand-ins; stdout, stderr, status in $rc
  env PATH="$TMP/bin" bash "$DEV" "$@" >"$TMP/out" 2>"$TMP/err"
  rc=$?
}

echo "1..6"

run demo
[ $rc -eq 1 ]
ok $? "demo without root or sudo fails before building"
grep -qx '  apt-get update && apt-get install -y gcc meson ninja-build pkg-config uthash-dev libopenblas-dev zlib1g-dev' "$TMP/err"
ok $? "demo prints the apt-get line of the demo's packages only"

run -j 1 test
[ $rc -eq 1 ] && grep -q 'install -y .*libcriterion-dev python3 graphviz doxygen libopenmpi-dev openmpi-bin wamerican qemu-user$' "$TMP/err"
ok $? "-j 1 test asks for the test suite's packages too"

run -j
[ $rc -eq 2 ] && grep -q -- '-j needs a number' "$TMP/err"
ok $? "-j without a number exits 2"

run frobnicate
[ $rc -eq 2 ] && grep -q '^usage: ./dev.sh \[-j N\] demo' "$TMP/err"
ok $? "an unknown command prints the usage and exits 2"

printf '#!%s\necho "$*" >>"%s/sudo.log"\nexit 1\n' "$(command -v sh)" "$TMP" >"$TMP/bin/sudo"
chmod +x "$TMP/bin/sudo"
run demo
[ $rc -eq 1 ] && grep -qx 'apt-get update -qq' "$TMP/sudo.log"
ok $? "with sudo on the PATH, demo runs apt-get through it"

[ $fails -eq 0 ]
