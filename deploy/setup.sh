#!/usr/bin/env bash
# Installs everything nrtrec needs on a fresh Debian/Ubuntu machine: system packages that are
# missing (Python 3.11, Java 17, Maven, redis-server, chromium, prometheus) and the Python environment in .venv.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
need=()
command -v python3.11 >/dev/null || need+=(python3.11 python3.11-venv python3.11-dev)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v redis-server >/dev/null || need+=(redis-server)
command -v g++ >/dev/null || need+=(g++)   # hnswlib builds from source
# The homepage's browser test: Debian's chromium and its driver (selenium drives them).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
# Monitoring: `nrtrec up` runs Prometheus, scraping every service.
command -v prometheus >/dev/null || need+=(prometheus)
if ((${#need[@]})); then
  echo "setup: installing system packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Debian starts a system-wide redis on 6379 when it installs the package; nrtrec runs its own.
for unit in redis-server prometheus; do  # and a system-wide Prometheus on 9090, likewise
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$unit" 2>/dev/null; then
    systemctl stop "$unit" || true
  fi
done

stamp="$VENV/.nrtrec-installed"
if [ ! -x "$VENV/bin/python" ]; then
  python3.11 -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ deploy/requirements-nodeps.txt -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev,train]'
  "$VENV/bin/python" -m pip install -q --no-deps -r deploy/requirements-nodeps.txt
  touch "$stamp"
fi
echo "setup: done ($("$VENV/bin/python" --version), $(java -version 2>&1 | head -1))"
