#!/usr/bin/env bash
# Debian packages the test suite drives for real: dnsmasq stands in for kube-dns, NSD is the authoritative server
# of the differential tests (ldnsutils signs its zone), iproute2 makes the node and pod network namespaces,
# iptables/nftables/conntrack check the node rules and simulate kube-proxy, dig/kdig/dnsperf are real clients,
# musl-tools builds a musl getaddrinfo client, promtool (prometheus) unit-tests the alert rules, openssl verifies
# certificate chains. Extra package names may be given as arguments (`make bench` adds the peers).
# Needs root; without it, say what is missing and leave the machine alone.
#
# Nothing is started: several of these packages ship a daemon (dnsmasq, nsd, unbound, prometheus, kresd) that
# Debian would start at install. The tests start their own on loopback, and stopping a service afterwards would
# also stop one the user already ran, so the install runs under a policy-rc.d that forbids every start.
set -euo pipefail
packages=(dnsmasq dnsperf iproute2 iptables nftables conntrack bind9-dnsutils knot-dnsutils nsd ldnsutils musl-tools
          prometheus openssl procps util-linux libc-bin)
[ "$#" -gt 0 ] && packages+=("$@")
# Debian splits venv support out of python3; `make` needs it to create .venv.
python3 -c "import ensurepip, venv" 2>/dev/null || packages+=(python3-venv)
# Node.js drives the c-ares resolver in the real-client tests (the machine may have its own node already).
command -v node >/dev/null || packages+=(nodejs)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "not root: skipping system packages (${missing[*]}); tests that need them will skip with the reason" >&2
  exit 0
fi

# invoke-rc.d and deb-systemd-invoke ask /usr/sbin/policy-rc.d before starting anything; exit 101 means "no".
policy=/usr/sbin/policy-rc.d
saved=""
if [ -e "$policy" ]; then
  saved=$(mktemp)
  cp -p "$policy" "$saved"
fi
restore_policy() {
  if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
}
trap restore_policy EXIT
printf '#!/bin/sh\n# localdns tools/install-system.sh: install packages without starting their daemons\nexit 101\n' >"$policy"
chmod 755 "$policy"

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]} (no daemon started)"
