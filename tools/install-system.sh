#!/usr/bin/env bash
# Debian packages the test suite drives for real: dnsmasq stands in for kube-dns, iproute2 makes the node and pod
# network namespaces, iptables/conntrack check the NOTRACK rules, dig and dnsperf are real clients, openssl verifies
# certificate chains. Needs root; without it, say what is missing and leave the machine alone.
set -euo pipefail
packages=(dnsmasq dnsperf iproute2 iptables conntrack bind9-dnsutils openssl procps util-linux libc-bin)
[ "$#" -gt 0 ] && packages+=("$@")
# Debian splits venv support out of python3; `make` needs it to create .venv.
python3 -c "import ensurepip, venv" 2>/dev/null || packages+=(python3-venv)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "not root: skipping system packages (${missing[*]}); tests that need them will skip with the reason" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian dnsmasq/unbound packages start system-wide daemons on install; the tests and benchmarks start their
# own on loopback, so stop the packaged ones (a no-op where no init system runs).
for svc in dnsmasq unbound kresd@1; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
echo "installed: ${missing[*]}"
