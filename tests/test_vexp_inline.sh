#!/bin/sh
# test_vexp_inline.sh NM LIB: the float32 exp, sigmoid, tanh and log of
# autodiff/vexp.h (exp_v, exp_v_lo, sig_v, tanh_v, log_v) and the row
# functions built on them (sigmoid_v, bce_v, bce_log32) are inlined into
# the row loops that call them, so LIB (libautodiff, built by GCC) holds no
# copy of them of its own. An out-of-line copy is compiled for the
# baseline only: the recurrent cells' AVX-512 and AVX2 clones then call it
# once per element, and it calls libm's fmaf per multiply-add (the LSTM of
# examples/adding ran 6x slower so). TAP.
nm=$1
lib=$2
echo "1..1"
syms=$("$nm" "$lib" | awk '$2 ~ /^[tT]$/ && $3 ~ /^(exp_v|exp_v_lo|sig_v|tanh_v|log_v|sigmoid_v|bce_v|bce_log32|exp_d|log1p_e_d|softplus_d|sigmoid_d|bcel_f64|bcel_sig64|sig_d|tanh_d|exp_taylor_d)($|\.)/ { print $3 }')
if [ -n "$syms" ]; then
  echo "not ok 1 - vexp.h functions compiled out of line in $lib: $(echo $syms)"
  exit 0
fi
echo "ok 1 - exp_v, exp_v_lo, sig_v, tanh_v, log_v, sigmoid_v, bce_v, bce_log32 and the float64 exp_d, log1p_e_d, softplus_d, sigmoid_d, sig_d, tanh_d, exp_taylor_d, bcel_f64 and bcel_sig64 are inlined into their callers"
