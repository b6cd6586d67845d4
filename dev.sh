#!/usr/bin/env bash
# dev.sh: the two Quick-start commands of the README.
#
#   ./dev.sh [-j N] demo [flags]   install what the demo needs, build only
#                                  the demo, train it (flags go to mnist_mlp)
#   ./dev.sh [-j N] test           install what is missing, build, run the
#                                  whole test suite
#
# Supported: Debian 12 (bookworm) and newer (meson >= 1.0). Packages are
# installed with apt-get, through sudo when not root; without sudo the exact
# apt-get line to run as root is printed.
#
# Environment: BUILD (build directory, default "build"), MESON_ARGS (extra
# arguments for the first `meson setup` of that directory), NINJA_ARGS
# (extra arguments for ninja, e.g. "-j 1"; -j N on the command line adds
# to it), TEST_ARGS (extra arguments for `meson test`, e.g. "--no-suite
# install").
set -uo pipefail
cd "$(dirname "$0")" || exit 1
BUILD=${BUILD:-build}
MESON_ARGS=${MESON_ARGS:-}
NINJA_ARGS=${NINJA_ARGS:-}
TEST_ARGS=${TEST_ARGS:-}
# what the library and the demo need; the test suite adds the rest
DEMO_PKGS=(gcc meson ninja-build pkg-config uthash-dev libopenblas-dev zlib1g-dev)
TEST_PKGS=("${DEMO_PKGS[@]}" libcriterion-dev python3 graphviz doxygen libopenmpi-dev openmpi-bin
           wamerican qemu-user)

install_missing() {
  local missing=() p sudo=
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
      echo "dev.sh: missing packages; as root, run:" >&2
      echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
      return 1
    fi
    sudo=sudo
  fi
  echo "dev.sh: installing ${missing[*]}"
  $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

# build [TARGET...]: sets up $BUILD once, then builds the targets (all when
# none). A directory set up before Criterion was installed is set up again,
# so the test suite gets built.
build() {
  if [ ! -f "$BUILD/build.ninja" ]; then
    # shellcheck disable=SC2086
    meson setup "$BUILD" $MESON_ARGS || return 1
  elif [ $# -eq 0 ] && ! grep -q '"criterion"' "$BUILD/meson-info/intro-dependencies.json" 2>/dev/null; then
    meson setup --reconfigure "$BUILD" >/dev/null || return 1
  fi
  # shellcheck disable=SC2086
  ninja -C "$BUILD" $NINJA_ARGS "$@"
}

while [ $# -gt 0 ]; do
  case "$1" in
  -j) [ $# -ge 2 ] || { echo "dev.sh: -j needs a number" >&2; exit 2; }
    NINJA_ARGS="$NINJA_ARGS -j $2"; shift 2 ;;
  -j*) NINJA_ARGS="$NINJA_ARGS $1"; shift ;;
  *) break ;;
  esac
done

case "${1:-}" in
demo)
  install_missing "${DEMO_PKGS[@]}" && build examples/mnist_mlp || exit 1
  shift
  exec "$BUILD/examples/mnist_mlp" "$@"
  ;;
test)
  install_missing "${TEST_PKGS[@]}" && build || exit 1
  # shellcheck disable=SC2086
  meson test -C "$BUILD" --print-errorlogs $TEST_ARGS
  rc=$?
  python3 tools/test_summary.py "$BUILD" || rc=1
  exit $rc
  ;;
*)
  echo "usage: ./dev.sh [-j N] demo [mnist_mlp flags] | ./dev.sh [-j N] test" >&2
  exit 2
  ;;
esac
