#!/bin/sh
# Run by `meson install`: refreshes the dynamic linker's cache so programs
# find the newly installed shared libraries at once (Debian runs no
# ldconfig of its own for /usr/local). Skipped for a staged install
# (DESTDIR), when not root, and where there is no ldconfig; the README says
# what to do then (an rpath, or LD_LIBRARY_PATH).
[ -n "${DESTDIR:-}" ] && exit 0
[ "$(id -u)" -eq 0 ] || exit 0
for l in ldconfig /sbin/ldconfig /usr/sbin/ldconfig; do
  if command -v "$l" >/dev/null 2>&1; then
    exec "$l"
  fi
done
exit 0
