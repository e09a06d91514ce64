#!/usr/bin/env bash
# Debian packages the whole test suite needs (see the Makefile's `system-deps`): install what is
# missing when apt-get is there and we run as root; otherwise say in one line what to install.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v jq >/dev/null 2>&1 || need+=(jq)
# postgresql: the PostgreSQL store tests start a throwaway cluster with its initdb/pg_ctl.
command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
  || need+=(postgresql)
# libjemalloc2: training processes allocate with jemalloc where it is installed
# (src/tunelab/allocator.py); its tests need it.
libs=$({ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null || true)
[[ $libs == *libjemalloc.so* ]] || need+=(libjemalloc2)
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  echo "Installing the Debian packages the tests need: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  apt-get install -y -qq "${need[@]}" >/dev/null
  exit 0
fi
echo "The test suite needs these system packages: ${need[*]} — install them" \
  "(e.g. 'sudo apt-get install ${need[*]}') and run 'make test' again." >&2
exit 1
