#!/bin/sh
# Installs the libraries into a temporary prefix (a build of its own with
# tests, examples and benchmarks off), then builds the README's example
# with pkg-config exactly as the README says for a custom prefix and runs
# it; also the same with nn. Reported as TAP. Run by meson (suite
# 'install'): sh tests/test_install.sh MESON SOURCE_ROOT CC [CC_ARGS...]
# (the compiler as meson runs it: "ccache cc" when meson found ccache)
set -u

MESON=$1
SRC=$2
shift 2
CC=$* # split again where it is run
TMP=${TMPDIR:-/tmp}/test_install.$$
mkdir -p "$TMP" || exit 1
trap 'rm -rf "$TMP"' EXIT
PREFIX=$TMP/prefix

n=0
fails=0
ok() { # ok CONDITION-STATUS DESCRIPTION
  n=$((n + 1))
  if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi
}

echo "1..10"

# no sanitizer or werror settings of the enclosing build: a user's build
"$MESON" setup "$TMP/build" "$SRC" --prefix="$PREFIX" --buildtype=debug -Dtests=false \
  -Dexamples=false -Dbench=false >"$TMP/setup.log" 2>&1 &&
  ninja -C "$TMP/build" >"$TMP/build.log" 2>&1 &&
  "$MESON" install -C "$TMP/build" >"$TMP/install.log" 2>&1
rc=$?
ok $rc "meson install into a temporary prefix"
[ $rc -eq 0 ] || { tail -20 "$TMP"/*.log | sed 's/^/# /'; exit 1; }

# lib/ or the multiarch lib/<triplet>/, as meson chose
PCDIR=$(dirname "$(find "$PREFIX" -name autodiff.pc | head -1)")
export PKG_CONFIG_PATH="$PCDIR"
LIBDIR=$(pkg-config --variable=libdir autodiff)
[ -f "$PREFIX/include/autodiff/ad.h" ] && [ -f "$PREFIX/include/autodiff/ad_ext.h" ] &&
  [ -f "$PREFIX/include/autodiff/nn.h" ] && [ -f "$PREFIX/include/autodiff/nn_io.h" ]
ok $? "the four headers are in include/autodiff"

flags=$(pkg-config --cflags autodiff | sed "s/ *$//")
[ "$flags" = "-I$PREFIX/include" ]
ok $? "pkg-config --cflags autodiff is -I\${includedir} only ($flags)"

# the README's example, as the README's block has it
awk '/^## A 20-line example/ {on = 1} on && /^```c$/ {getline; b = 1} b && /^```$/ {exit} b {print}' \
  "$SRC/README.md" >"$TMP/example.c"
lines=$(wc -l <"$TMP/example.c")
[ "$lines" -ge 10 ] && [ "$lines" -le 20 ] &&
  # shellcheck disable=SC2046,SC2086
  $CC -o "$TMP/example" "$TMP/example.c" $(pkg-config --cflags --libs autodiff) \
    -Wl,-rpath,"$LIBDIR" >"$TMP/cc.log" 2>&1 &&
  "$TMP/example" >"$TMP/run.log" 2>&1 && grep -q "dL/dw" "$TMP/run.log"
r=$?
ok $r "the README's example ($lines lines, at most 20) builds with pkg-config and an rpath, and runs"
[ $r -eq 0 ] || sed 's/^/# /' "$TMP/cc.log" "$TMP/run.log"

cat >"$TMP/nn_example.c" <<'C'
#include <autodiff/nn.h>
#include <autodiff/nn_io.h>
#include <stdio.h>
int main(void) {
  ad_ctx *ctx = ad_ctx_new();
  nn_model *m = nn_sequential_new(ctx);
  int ok = m != NULL;
  nn_model_free(m);
  ad_ctx_free(ctx);
  puts(ok ? "nn ok" : "nn failed");
  return !ok;
}
C
# shellcheck disable=SC2046,SC2086
$CC -o "$TMP/nn_example" "$TMP/nn_example.c" $(pkg-config --cflags --libs nn) \
  -Wl,-rpath,"$LIBDIR" >"$TMP/cc2.log" 2>&1 && "$TMP/nn_example" | grep -q "nn ok"
r=$?
ok $r "a program using nn.h and nn_io.h builds with pkg-config nn and runs"
[ $r -eq 0 ] || sed 's/^/# /' "$TMP/cc2.log"

[ -x "$PREFIX/bin/ad-gradcheck" ]
ok $? "ad-gradcheck is installed in bin/"

# a user's op library (examples/swish_op.c) against the installed headers,
# checked by the installed tool (LD_LIBRARY_PATH: a custom prefix)
# shellcheck disable=SC2046,SC2086
$CC -shared -fPIC -o "$TMP/libswish.so" -I"$SRC/examples" "$SRC/examples/swish_op.c" \
  $(pkg-config --cflags --libs autodiff) >"$TMP/cc3.log" 2>&1 &&
  LD_LIBRARY_PATH="$LIBDIR" "$PREFIX/bin/ad-gradcheck" --load "$TMP/libswish.so" >"$TMP/gc.log" 2>&1 &&
  [ "$(tail -n 1 "$TMP/gc.log")" = "1 passed, 0 failed" ]
r=$?
ok $r "a plugin built with pkg-config passes the installed ad-gradcheck --load"
[ $r -eq 0 ] || sed 's/^/# /' "$TMP/cc3.log" "$TMP/gc.log"

# the shared libraries export the installed headers' functions and nothing
# else (an internal symbol exported becomes part of the ABI)
: >"$TMP/leaked"
for lib in "$LIBDIR"/lib*.so; do
  nm -D --defined-only "$lib" | awk '{print $3}' | while read -r sym; do
    grep -qwF -- "$sym" "$PREFIX"/include/autodiff/*.h || echo "$(basename "$lib"): $sym"
  done >>"$TMP/leaked"
done
[ ! -s "$TMP/leaked" ] && [ -n "$(nm -D --defined-only "$LIBDIR/libautodiff.so")" ]
r=$?
ok $r "the shared libraries export only what the installed headers declare"
[ $r -eq 0 ] || sed 's/^/# /' "$TMP/leaked"

! grep -rq "openblas" "$LIBDIR/pkgconfig"
ok $? "the pkg-config files name no OpenBLAS"

# a parent project that takes nn as a meson subproject and asks for the
# static libraries (README, "As a meson subproject")
mkdir -p "$TMP/parent/subprojects" && ln -s "$SRC" "$TMP/parent/subprojects/autodiff" &&
  cp "$TMP/nn_example.c" "$TMP/parent/p.c" &&
  cat >"$TMP/parent/meson.build" <<'M'
project('parent', 'c')
nn = dependency('nn', fallback: 'autodiff',
                default_options: ['tests=false', 'examples=false', 'bench=false',
                                  'default_library=static'])
executable('p', 'p.c', dependencies: nn)
M
"$MESON" setup "$TMP/parent/build" "$TMP/parent" --buildtype=debug --force-fallback-for=nn >"$TMP/psetup.log" 2>&1 &&
  ninja -C "$TMP/parent/build" p >"$TMP/pbuild.log" 2>&1 &&
  ! readelf -d "$TMP/parent/build/p" | grep -E "NEEDED.*lib(autodiff|nn)" &&
  "$TMP/parent/build/p" | grep -q "nn ok"
r=$?
ok $r "a parent project links nn statically as a subproject (default_library=static) and runs"
[ $r -eq 0 ] || tail -n 20 "$TMP/psetup.log" "$TMP/pbuild.log" | sed 's/^/# /'
[ $fails -eq 0 ]
