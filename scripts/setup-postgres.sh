#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries are present for tests/test_search_distributed.py, which
# starts its own throwaway server on 127.0.0.1 (as the postgres user) and stops it afterwards.
# Debian's postgresql-15 puts initdb and pg_ctl in /usr/lib/postgresql/15/bin, off PATH.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "[postgres] server binaries: $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -n 1)"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[postgres] installing postgresql-15 (server binaries only; no service is started)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
  # the Debian package may start a cluster of its own: the test does not use it
  (command -v pg_ctlcluster >/dev/null && pg_ctlcluster 15 main stop) >/dev/null 2>&1 || true
else
  echo "[postgres] no server binaries and no root apt-get: the distributed-search test will skip, saying why"
fi
