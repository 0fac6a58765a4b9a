#!/usr/bin/env bash
# Machine packages the test suite needs beyond Python: PostgreSQL's server binaries, PgBouncer
# (the transaction-pooler tests start a real one), and
# Chromium for the browser tests (they are skipped without it).
# Installs them with apt when missing and running as root; otherwise says what is missing.
set -euo pipefail

need=()
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
  if [ -z "${TEST_DATABASE_URL:-}" ]; then need+=(postgresql); fi
fi
if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then need+=(pgbouncer); fi
optional=()
if [ ! -x /usr/bin/chromium ]; then optional+=(chromium); fi
if [ "${#need[@]}" -eq 0 ] && [ "${#optional[@]}" -eq 0 ]; then exit 0; fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing: ${need[*]} ${optional[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" "${optional[@]}" >/dev/null
else
  if [ "${#optional[@]}" -gt 0 ]; then
    echo "note: no /usr/bin/chromium, so the browser tests will be skipped (apt-get install chromium)" >&2
  fi
  if [ "${#need[@]}" -gt 0 ]; then
    echo "missing system packages: ${need[*]} (install them, or set TEST_DATABASE_URL)" >&2
    exit 1
  fi
fi
