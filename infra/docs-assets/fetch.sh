#!/usr/bin/env bash
# The scripts and styles the Great Expectations Data Docs pages load from public CDNs, fetched
# once from the npm registry at install time (`make install`), so that the reports work on a
# machine or cluster without internet access. cinestream.quality rewrites each page's CDN links
# to these files (copied under the Data Docs' static/vendor/).
#
# Usage: infra/docs-assets/fetch.sh DEST   (idempotent: skips packages already there)
set -euo pipefail
dest="${1:?usage: fetch.sh DEST}"
mkdir -p "$dest"
command -v npm >/dev/null || { echo "npm is missing: infra/install-system-deps.sh installs it" >&2; exit 1; }

# name@version as the Data Docs pages reference them (vega, vega-lite and vega-embed are
# referenced by major version only: pinned here to the newest of that major).
packages=(
  jquery@3.7.1
  popper.js@1.12.9
  bootstrap@4.3.1
  bootstrap-table@1.19.1
  bootstrap-datepicker@1.9.0
  @fortawesome/fontawesome-free@6.6.0
  @forevolve/bootstrap-dark@1.1.0
  vega@5.33.1
  vega-lite@5.23.0
  vega-embed@6.29.0
)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for spec in "${packages[@]}"; do
  name="${spec%@*}"
  target="$dest/$spec"
  [ -d "$target" ] && continue
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
  tarball="$(ls "$tmp"/*.tgz)"
  mkdir -p "$target.partial"
  tar -xzf "$tarball" -C "$target.partial" --strip-components=1
  rm -f "$tarball"
  mv "$target.partial" "$target"
  echo "data docs asset: $spec -> $target"
done
