#!/usr/bin/env bash
# Installs the Debian packages the Docker tests need: docker.io (the tests start a private dockerd of their
# own), debootstrap (builds the stand-ins of registry images) and patchelf (makes the python-build-standalone
# stand-in relocatable). Idempotent; never starts a daemon.
set -euo pipefail

need=()
[ -x /usr/sbin/dockerd ] || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v patchelf >/dev/null 2>&1 || need+=(patchelf)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
[ ${#need[@]} -eq 0 ] && exit 0

# The package would start the system's Docker service where systemd runs: the tests want none.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${need[@]}"
