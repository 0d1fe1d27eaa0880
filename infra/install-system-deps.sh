#!/usr/bin/env bash
# Installs what cinestream's local stack needs from Debian when it is missing:
# Java 17 (Kafka, Spark), Maven (resolves the Kafka and Spark-Kafka jars), PostgreSQL server,
# Chromium (the browser tests), npm (the Data Docs' assets).
# Idempotent; needs root (or sudo) only when something is actually missing.
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
# Headless browser for the dashboard's browser test (driven by Playwright's Python package).
[ -x /usr/bin/chromium ] || missing+=(chromium)
# npm fetches the Data Docs' scripts and styles at install time (infra/docs-assets/fetch.sh).
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -eq 0 ]; then
  echo "system dependencies present: java, mvn, postgresql, chromium, npm"
  exit 0
fi

echo "installing from Debian: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "error: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The Debian package starts a cluster on 5432 where an init system runs; cinestream runs its own.
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters -h 2>/dev/null | awk '$4=="online"{print $1, $2}' | while read -r ver name; do
    $SUDO pg_ctlcluster "$ver" "$name" stop || true
  done
fi
