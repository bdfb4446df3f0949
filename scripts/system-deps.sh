#!/usr/bin/env bash
# Installs what the native stack needs from the system's packages, only when missing:
# a Java 17+ runtime, Maven, and PostgreSQL's server binaries (without a system cluster);
# and, for the saga board's browser test, Chromium with its WebDriver. That test skips
# (saying why) without them, so a failed Chromium install only warns.
#
#   scripts/system-deps.sh                    the stack's packages and the browser (make test)
#   scripts/system-deps.sh --without-browser  the stack's packages only (make demo)
set -euo pipefail

browser=1
for arg in "$@"; do
  case "$arg" in
    --without-browser) browser=0 ;;
    *) echo "usage: $0 [--without-browser]" >&2; exit 2 ;;
  esac
done

need=()
java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local v; v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [ "${v:-0}" -ge 17 ]
}
java_ok || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
if [ -z "${SAGA_PG_BIN:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql-15)
fi
optional=()
if [ "$browser" -eq 1 ]; then
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || optional+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || optional+=(chromium-driver)
fi
[ ${#need[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0

warn_optional() {
  echo "warning: could not install ${optional[*]}; the saga board's browser test will be skipped" >&2
}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    [ ${#need[@]} -eq 0 ] && { warn_optional; exit 0; }
    echo "need root (or sudo) to install: ${need[*]}" >&2
    exit 1
  fi
  SUDO=sudo
fi
echo "installing system packages: ${need[*]} ${optional[*]}"
if [ ${#need[@]} -eq 0 ]; then
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq || { warn_optional; exit 0; }
else
  # The stack runs its own PostgreSQL in .stack/: keep the package from creating and starting a system cluster.
  $SUDO mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/saga.conf >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ${#optional[@]} -gt 0 ]; then
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null || warn_optional
fi
