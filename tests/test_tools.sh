#!/bin/sh
# Command-line behaviour of tools/ad-gradcheck and tools/gen_derivatives,
# reported as TAP. Run by meson (suite 'autodiff'):
#   sh tests/test_tools.sh AD_GRADCHECK GEN_DERIVATIVES DOCS_DERIVATIVES_MD BAD_PLUGIN_SO [PLUGIN_SO]
# BAD_PLUGIN_SO: tests/bad_plugin.c, which misbehaves as AD_BAD_PLUGIN says.
# PLUGIN_SO: examples/swish_op's plugin (absent with -Dexamples=false: those
# cases are skipped).
set -u

GC=$1
GEN=$2
DOC=$3
BAD=$4
PLUGIN=${5:-}
TMP=${TMPDIR:-/tmp}/test_tools.$$
mkdir -p "$TMP" || exit 1
trap 'rm -rf "$TMP"' EXIT

n=0
fails=0
ok() { # ok CONDITION-STATUS DESCRIPTION
  n=$((n + 1))
  if [ "$1" -eq 0 ]; then
    echo "ok $n - $2"
  else
    echo "not ok $n - $2"
    fails=$((fails + 1))
  fi
}

# run CMD...: stdout in $TMP/out, stderr in $TMP/err, status in $rc
run() {
  "$@" >"$TMP/out" 2>"$TMP/err"
  rc=$?
}

echo "1..34"

run "$GC" --help
ok $rc "--help exits 0"
grep -q '^usage: ad-gradcheck' "$TMP/out"
ok $? "--help prints the usage"

run "$GC" --op no_such_op
[ $rc -eq 2 ]
ok $? "an unknown op name exits 2"
grep -q "unknown op 'no_such_op'" "$TMP/err"
ok $? "an unknown op name is named on stderr"

run "$GC" --bogus
[ $rc -eq 2 ]
ok $? "an unknown argument exits 2"

run "$GC" --dtype f16
[ $rc -eq 2 ]
ok $? "a bad --dtype exits 2"

run "$GC" --seed x12
[ $rc -eq 2 ]
ok $? "a bad --seed exits 2"

run "$GC" --seed " -5" --op tanh
[ $rc -eq 2 ] && grep -q "'  *-5' is not a non-negative integer" "$TMP/err"
ok $? "a negative --seed after a space exits 2"

run "$GC" --seed 010 --op tanh --first-only --dtype f64
[ $rc -eq 0 ] && grep -q '^ad-gradcheck: seed 10,' "$TMP/out"
ok $? "--seed 010 is seed 10 (decimal)"

"$GC" --op tanh --first-only --dtype f64 >/dev/full 2>"$TMP/err"
[ $? -eq 2 ] && grep -q 'write error on standard output' "$TMP/err"
ok $? "a report that cannot be written exits 2, not 0"

run "$GC" --op tanh --seed 3
[ $rc -eq 0 ] && [ "$(tail -n 1 "$TMP/out")" = "1 passed, 0 failed" ]
ok $? "--op tanh passes and ends with '1 passed, 0 failed'"
grep '^tanh ' "$TMP/out" | grep -q 'f64/1 PASS.*f64/2 PASS.*f32/1 PASS.*f32/2 PASS'
ok $? "--op tanh reports both dtypes and both orders"

run "$GC" --op=matmul --dtype f32 --first-only
grep '^matmul ' "$TMP/out" | grep -q 'f32/1 PASS' &&
  ! grep -q 'f64/\|f32/2' "$TMP/out"
ok $? "--dtype f32 --first-only runs exactly one check"

run "$GC" --op mul --op=add --op mul --dtype f64 --first-only
[ $rc -eq 0 ] && [ "$(grep -c ' f64/1 PASS' "$TMP/out")" -eq 2 ] &&
  [ "$(sed -n 2p "$TMP/out" | cut -d' ' -f1)" = mul ] &&
  [ "$(sed -n 3p "$TMP/out" | cut -d' ' -f1)" = add ] &&
  [ "$(tail -n 1 "$TMP/out")" = "2 passed, 0 failed" ]
ok $? "--op is repeatable: each op once, in the order given"

run "$GC" --op mul --op no_such_op
[ $rc -eq 2 ] && grep -q "unknown op 'no_such_op'" "$TMP/err" && [ ! -s "$TMP/out" ]
ok $? "an unknown name among several --op exits 2 before checking any"

run "$GC" --op relu --dtype f32 --dtype f64 --dtype f32 --first-only
grep -q '^ad-gradcheck: .*dtypes f32 f64$' "$TMP/out" &&
  grep '^relu ' "$TMP/out" | grep -q 'f32/1 PASS.*f64/1 PASS'
ok $? "--dtype is repeatable: each dtype once, in the order given"
run "$GC" --op relu --dtype f64 --dtype f32 --dtype f32 --dtype f32 --first-only
grep -q '^ad-gradcheck: .*dtypes f64 f32$' "$TMP/out"
ok $? "a dtype given again after the other is still checked once (dtypes holds two)"

run "$GC" --op compare
[ $rc -eq 0 ] && grep -q '^compare .*skipped' "$TMP/out" &&
  [ "$(tail -n 1 "$TMP/out")" = "0 passed, 0 failed" ]
ok $? "an op without a backward is skipped, not failed"

run "$GC" --first-only
last=$(tail -n 1 "$TMP/out")
npass=$(grep -c ' f64/1 PASS' "$TMP/out")
[ $rc -eq 0 ] && [ "$last" = "$npass passed, 0 failed" ] && [ "$npass" -gt 40 ]
ok $? "every op passes first order and the summary counts ops ($last)"

# plugins: a user's shared library of ops, checked like the built-in ones
run "$GC" --help; cp "$TMP/out" "$TMP/help"
grep -q -- '--load PATH' "$TMP/help" && grep -q 'ad_plugin_register' "$TMP/help"
ok $? "--help documents --load and the entry point"

if [ -n "$PLUGIN" ]; then
  run "$GC" --load "$PLUGIN"
  [ $rc -eq 0 ] && [ "$(tail -n 1 "$TMP/out")" = "1 passed, 0 failed" ] &&
    grep '^swish ' "$TMP/out" | grep -q 'f64/1 PASS.*f64/2 PASS.*f32/1 PASS.*f32/2 PASS' &&
    ! grep -q '^tanh ' "$TMP/out"
  ok $? "--load checks the plugin's op (swish), both dtypes and orders, and only it"

  run "$GC" --load="$PLUGIN" --op tanh --first-only
  [ $rc -eq 0 ] && grep -q '^tanh ' "$TMP/out" && ! grep -q '^swish ' "$TMP/out"
  ok $? "--load with --op checks the named op"

  run "$GC" --load "$PLUGIN" --load "$PLUGIN"
  [ $rc -eq 2 ] && grep -q 'ad_plugin_register failed: .*swish' "$TMP/err"
  ok $? "loading the same plugin twice reports the registration error (exit 2)"
else
  for d in "--load checks the plugin's op" "--load with --op" "loading a plugin twice"; do
    n=$((n + 1))
    echo "ok $n - $d # SKIP no plugin (-Dexamples=false)"
  done
fi

# a failure is never reported without its reason (the plugin's message, or
# that it recorded none), nor a failed check without its sample's variant
AD_BAD_PLUGIN=silent run "$GC" --load "$BAD"
[ $rc -eq 2 ] && grep -q 'ad_plugin_register failed: bad argument: it recorded no message' "$TMP/err"
ok $? "a registration that fails without a message says so (exit 2)"

AD_BAD_PLUGIN=odd run "$GC" --load "$BAD"
[ $rc -eq 2 ] &&
  grep -q 'ad_plugin_register failed: it returned 12345, which is not an ad_status: it recorded no message' "$TMP/err"
ok $? "a registration that returns no ad_status names the value (exit 2)"

AD_BAD_PLUGIN=ignored run "$GC" --load "$BAD"
[ $rc -eq 2 ] &&
  grep -q 'registered no op: op_register: flagged: flags 0x42 has unknown bits 0x40' "$TMP/err"
ok $? "a plugin that registers nothing gives the error it ignored (exit 2)"

AD_BAD_PLUGIN=partial run "$GC" --load "$BAD" --first-only
[ $rc -eq 0 ] && grep -q 'warning: ad_plugin_register returned AD_OK but left an error recorded.*flagged' "$TMP/err" &&
  grep -q '^copy2 .*f64/1 PASS' "$TMP/out" && [ "$(tail -n 1 "$TMP/out")" = "1 passed, 0 failed" ]
ok $? "an op that failed to register is warned about; the others are checked"

AD_BAD_PLUGIN= run "$GC" --load "$BAD" --first-only --dtype f64
[ $rc -eq 1 ] &&
  grep '^wrong_on_2d ' "$TMP/out" | grep -q 'f64/1 FAIL .*(op_check: wrong_on_2d failed the first-order check in f64 in 1 of 2 variants; the worst: variant 1, input 0 \[2,3\], element [0-9]*: analytic'
ok $? "a failed check names the variant, the input's shape and the element (exit 1)"

run "$GC" --load "$TMP/no_such_plugin.so"
[ $rc -eq 2 ] && grep -q -- "--load $TMP/no_such_plugin.so: " "$TMP/err"
ok $? "a library that cannot be loaded exits 2 with dlopen's reason"

run "$GC" --load libz.so.1
[ $rc -eq 2 ] && grep -q 'does not export ad_plugin_register' "$TMP/err"
ok $? "a library without the entry point exits 2 and names it"

run "$GEN"
[ $rc -eq 0 ] && cmp -s "$TMP/out" "$DOC"
ok $? "gen_derivatives output equals docs/derivatives.md"
grep -q '^| `softmax_cross_entropy` | 2 |' "$TMP/out" && grep -q 'y = \\|x\\|' "$TMP/out"
ok $? "the table has every op, with '|' escaped"

run "$GEN" --check "$DOC"
ok $rc "gen_derivatives --check accepts the committed file"

sed 's/relu/RELU/' "$DOC" >"$TMP/stale.md"
run "$GEN" --check "$TMP/stale.md"
[ $rc -eq 1 ] && grep -q 'out of date' "$TMP/err"
ok $? "gen_derivatives --check rejects a stale file"

[ $fails -eq 0 ]
