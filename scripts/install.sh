#!/usr/bin/env bash
# Set up everything clawback needs on a fresh machine: a virtualenv with the package and its dev tools,
# the real clients the test suite runs (tests/clients: Claude Code and the TypeScript SDK, from the npm
# registry), and the local PostgreSQL and Redis servers started when they are installed but stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# -c constraints.txt: the versions the last green CI ran (the file says how to refresh it)
.venv/bin/python -m pip install --quiet -c constraints.txt -e '.[dev]'

# The real clients of the end-to-end tests, pinned by tests/clients/package-lock.json (npm ci, skipped when the
# installed tree already matches the lock). Without npm or the registry the install goes on and those tests
# fail with a message that says why (tests/e2e/real_clients.py).
if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -qq nodejs npm >/dev/null 2>&1 || echo "install.sh: could not install node and npm with apt-get" >&2
fi
if command -v npm >/dev/null 2>&1; then
  if ! cmp -s tests/clients/package-lock.json tests/clients/node_modules/.clawback-installed-lock 2>/dev/null; then
    if (cd tests/clients && npm ci --no-audit --no-fund --loglevel=error); then
      cp tests/clients/package-lock.json tests/clients/node_modules/.clawback-installed-lock
    else
      echo "install.sh: npm ci in tests/clients failed (is the npm registry reachable?); the real-client tests will fail" >&2
    fi
  fi
else
  echo "install.sh: npm not found; the real-client tests (Claude Code, TypeScript SDK) will fail" >&2
fi

# Debian's Chromium for the dashboard's browser test (Playwright drives it at /usr/bin/chromium; Playwright's own
# browser download is never used). Installed only when missing, and only where apt-get and root are available.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# wrk drives the on-demand gateway benchmarks (benchmarks/gateway_bench.py, dispatch_overhead.py); not needed by CI.
if ! command -v wrk >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1; }; } \
    || echo "install.sh: could not install wrk with apt-get; the gateway benchmarks need it" >&2
fi

# Services used by the storage tests: start them if they are installed but not running.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
if command -v redis-server >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
