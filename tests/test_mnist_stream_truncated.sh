#!/bin/sh
# examples/mnist_stream refuses a truncated IDX file before training: exit
# status 1 and a message naming the file, for a raw file shorter than its
# header announces and for a gzip'd one cut short. Run by meson (suite 'nn'):
#   sh tests/test_mnist_stream_truncated.sh MNIST_STREAM DATA_DIR
set -u
EXE=$1
DATA=$2
command -v gzip >/dev/null || { echo "gzip not found: skipped"; exit 77; }
TMP=${TMPDIR:-/tmp}/test_mnist_stream_truncated.$$
mkdir -p "$TMP/raw" "$TMP/gz" || exit 1
trap 'rm -rf "$TMP"' EXIT
fails=0

# expect DIR TEXT: mnist_stream --data DIR exits 1 with TEXT on stderr
expect() {
  out=$("$EXE" --data "$1" --epochs 1 2>&1 >/dev/null)
  rc=$?
  if [ $rc -eq 1 ] && echo "$out" | grep -qF "$2"; then
    echo "ok: $out"
  else
    echo "FAIL: --data $1 exited $rc with: $out (wanted: $2)"
    fails=$((fails + 1))
  fi
}

# raw: the images cut after 100000 bytes (of 7840016), the labels whole
gzip -dc "$DATA/mnist10k-images-idx3-ubyte.gz" | head -c 100000 >"$TMP/raw/train-images-idx3-ubyte"
gzip -dc "$DATA/mnist10k-labels-idx1-ubyte.gz" >"$TMP/raw/train-labels-idx1-ubyte"
expect "$TMP/raw" "mnist_stream: $TMP/raw/train-images-idx3-ubyte: truncated: 100000 bytes, its header announces 10000 records (7840016 bytes)"

# gzip'd: the images' .gz cut in the middle
head -c 50000 "$DATA/mnist10k-images-idx3-ubyte.gz" >"$TMP/gz/train-images-idx3-ubyte.gz"
cp "$DATA/mnist10k-labels-idx1-ubyte.gz" "$TMP/gz/train-labels-idx1-ubyte.gz"
expect "$TMP/gz" "mnist_stream: cannot inflate $TMP/gz/train-images-idx3-ubyte.gz: unexpected end of file"

# a header alone is shorter than 16 bytes
head -c 10 "$TMP/raw/train-labels-idx1-ubyte" >"$TMP/raw/train-images-idx3-ubyte"
expect "$TMP/raw" "mnist_stream: $TMP/raw/train-images-idx3-ubyte: truncated: 10 bytes, shorter than an IDX header"

test $fails -eq 0
