#!/bin/sh
# test_update_vectorized.sh OBJDUMP LIB: the optimizers' update loops of
# nn/kernels/update.c (LIB: libnn, built by GCC) are vectorized in their
# AVX2 and AVX-512 clones. GCC leaves a loop scalar when a choice in it is
# control flow (a || in an expression, a test of an option per element):
# Adamax then took 13 ns per element where Adam takes 0.3, and no test of
# results can see it (the bits are the same). Each loop function present
# in LIB must hold at least 8 instructions on YMM or ZMM registers (a
# scalar loop holds none, or a few from setting up); one that GCC inlined
# into its caller is not there to check. TAP.
objdump=$1
lib=$2
"$objdump" -d --no-show-raw-insn "$lib" | awk '
  /^[0-9a-f]+ <[^>]*>:$/ {
    name = $2; gsub(/[<>:]/, "", name); sub(/\..*$/, "", name)
    if (name ~ /^(sgd|adagrad|rmsprop|adamax|adadelta|asgd|rprop)(_max)?_(float|double)_avx2$/ ||
        name ~ /^(sgd|adagrad|rmsprop|adamax|adadelta|asgd|rprop)(_max)?_float_avx512$/) {
      if (!(name in vec)) { order[++n] = name; vec[name] = 0 }
      cur = name
    } else cur = ""
    next
  }
  cur != "" && /[yz]mm[0-9]/ { vec[cur]++ }
  END {
    if (n == 0) { print "1..0 # SKIP no update loop functions found (inlined, or symbols stripped)"; exit }
    print "1.." n
    for (i = 1; i <= n; i++) {
      f = order[i]
      if (vec[f] >= 8) print "ok " i " - " f ": " vec[f] " vector instructions"
      else print "not ok " i " - " f ": " vec[f] " vector instructions: the loop is not vectorized"
    }
  }'
