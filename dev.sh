#!/usr/bin/env bash
# dev.sh: the two Quick-start commands of the README.
#
#   ./dev.sh demo   install what is missing, build, train the MNIST demo
#   ./dev.sh test   install what is missing, build, run the whole test suite
#
# Environment: BUILD (build directory, default "build"), MESON_ARGS (extra
# arguments for the first `meson setup` of that directory).
set -uo pipefail
cd "$(dirname "$0")" || exit 1
BUILD=${BUILD:-build}
MESON_ARGS=${MESON_ARGS:-}
PKGS=(gcc meson ninja-build pkg-config uthash-dev libopenblas-dev zlib1g-dev
      libcriterion-dev python3 graphviz)

install_missing() {
  local missing=() p sudo=
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "dev.sh: installing ${missing[*]}"
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

build() {
  if [ ! -f "$BUILD/build.ninja" ]; then
    # shellcheck disable=SC2086
    meson setup "$BUILD" $MESON_ARGS || return 1
  fi
  ninja -C "$BUILD"
}

case "${1:-}" in
demo)
  install_missing && build || exit 1
  shift
  exec "$BUILD/examples/mnist_mlp" "$@"
  ;;
test)
  install_missing && build || exit 1
  meson test -C "$BUILD" --print-errorlogs
  rc=$?
  python3 tools/test_summary.py "$BUILD" || rc=1
  exit $rc
  ;;
*)
  echo "usage: ./dev.sh demo [mnist_mlp flags] | ./dev.sh test" >&2
  exit 2
  ;;
esac
