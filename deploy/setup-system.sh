#!/usr/bin/env bash
# Installs the Debian packages Tongban needs where they are missing: Node.js + npm (for the
# pouchdb-server document store), Mosquitto, Redis, Python venv support. Says what it does.
set -euo pipefail

need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need+=(redis-server)
command -v python3.11 >/dev/null 2>&1 || command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
for extra in "$@"; do
  case "$extra" in
    chromium)
      command -v chromium >/dev/null 2>&1 || need+=(chromium)
      # Chinese pages in screenshots need a CJK font.
      dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need+=(fonts-noto-cjk) ;;
    wrk) command -v wrk >/dev/null 2>&1 || need+=(wrk) ;;
  esac
done

if [ ${#need[@]} -eq 0 ]; then
  echo "[setup] system packages present (node, npm, mosquitto, redis-server)"
  exit 0
fi
echo "[setup] installing Debian packages: ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "[setup] error: need root to install ${need[*]} — install them yourself (apt-get install ${need[*]}) and run again" >&2
    exit 1
  fi
else SUDO=""; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || { echo "[setup] error: apt-get update failed (no package mirror reachable?)" >&2; exit 1; }
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
  || { echo "[setup] error: apt-get install ${need[*]} failed" >&2; exit 1; }
# Debian's packaged services would start on standard ports; Tongban starts its own on loopback.
echo "[setup] installed ${need[*]}"
