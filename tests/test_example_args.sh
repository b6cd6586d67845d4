#!/bin/sh
# The examples' command lines, reported as TAP: a value that is not a
# number of the flag's kind (empty, blank-led, trailing text, out of the
# variable's or the flag's range, a negative seed, a non-finite real) is a
# usage error: exit status 2 and a usage line on stderr, before the
# example does any work. Run by meson (suite 'nn'):
#   sh tests/test_example_args.sh EXAMPLES_BUILD_DIR
set -u
DIR=$1
TMP=${TMPDIR:-/tmp}/test_example_args.$$
mkdir -p "$TMP" || exit 1
trap 'rm -rf "$TMP"' EXIT
n=0
fails=0

# bad EXAMPLE ARGS...: expects exit 2 and "usage" on stderr
bad() {
  exe=$1
  shift
  n=$((n + 1))
  "$DIR/$exe" "$@" >"$TMP/out" 2>"$TMP/err"
  rc=$?
  if [ $rc -eq 2 ] && grep -q 'usage' "$TMP/err"; then
    echo "ok $n - $exe $* is a usage error"
  else
    echo "not ok $n - $exe $* exited $rc: $(head -c 200 "$TMP/err")"
    fails=$((fails + 1))
  fi
}

echo "1..36"
bad mnist_mlp --epochs ""
bad mnist_mlp --epochs 4294967297
bad mnist_mlp --seed -1
bad mnist_mlp --lr inf
bad mnist_cnn --threads 4294967297
bad mnist_cnn --batch " 8"
bad attention --steps 99999999999999999999
bad attention --len ""
bad adding --lr nan
bad adding --seed " -3"
bad adding --cells ""
bad adding --cells ,
bad adding --cells lstm,gru,rnn,lstm,gru,rnn,lstm,gru,rnn
bad char_rnn --samples 4294967296
bad char_rnn --clip 1e999
bad seq_digits --hidden 99999999999999999999
bad seq_digits --epochs 1.5
bad xor --epochs 10abc
bad xor --lr 2x
bad xor --seed -1
bad descent --steps 0
bad descent --steps 4294967297
bad descent --seed -1
bad exploding --lr inf
bad optimizers --steps 9
bad overfitting --train 9000
bad learning_rate --range-steps 2x
bad vanishing_rnn --len 99999999999999999999
bad vanishing_rnn --lr nan
bad mnist_mlp --lr 0x10
bad mnist_stream --workers -1
bad mnist_stream --samples 0
bad mnist_stream --prefetch ""

# rows STEPS: exploding's table lists each step once, ending at STEPS (exit
# status 1 is the demo's own verdict: too few steps for the loss to blow up)
rows() {
  n=$((n + 1))
  "$DIR/exploding" --steps "$1" --out "$TMP" >"$TMP/out" 2>"$TMP/err"
  rc=$?
  steps=$(awk '$1 ~ /^[0-9]+$/ {print $1}' "$TMP/out")
  if [ $rc -le 1 ] && [ "$(echo "$steps" | tail -n 1)" = "$1" ] &&
    [ "$(echo "$steps" | sort -n | uniq -d)" = "" ]; then
    echo "ok $n - exploding --steps $1 prints each step once"
  else
    echo "not ok $n - exploding --steps $1 exited $rc, steps: $(echo $steps)"
    fails=$((fails + 1))
  fi
}
rows 5
rows 9

# char_rnn's word list: a line longer than its 255-byte buffer is no word
# (it was read as two or more)
n=$((n + 1))
i=0
: >"$TMP/words"
while [ $i -lt 25 ]; do
  echo "w${i}abc" >>"$TMP/words"
  [ $i -eq 5 ] && printf '%0300d\n' 0 | tr 0 x >>"$TMP/words"
  i=$((i + 1))
done
"$DIR/char_rnn" --words "$TMP/words" --epochs 1 --samples 1 >"$TMP/out" 2>"$TMP/err"
if [ $? -eq 0 ] && grep -q '^char_rnn: 25 words from' "$TMP/out"; then
  echo "ok $n - char_rnn skips a word-list line longer than its buffer"
else
  echo "not ok $n - char_rnn: $(grep words "$TMP/out" | head -n 1) $(head -c 200 "$TMP/err")"
  fails=$((fails + 1))
fi

[ $fails -eq 0 ]
