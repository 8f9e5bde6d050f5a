#!/usr/bin/env bash
# Make sure a Docker daemon answers. On a Debian machine where we are root: install
# Debian's docker.io (and debootstrap, for the offline image build; chromium, for the
# report's browser test) when missing, and start dockerd without any network plumbing:
# sandboxes never get a network.
set -u
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  need=""
  command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
  command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
  command -v chromium >/dev/null 2>&1 || need="$need chromium"
  if [ -n "$need" ]; then
    echo "[docker-up] installing from Debian:$need" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null \
      || { echo "[docker-up] apt-get install$need failed" >&2; exit 1; }
  fi
fi
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v dockerd >/dev/null 2>&1; then
  if ! docker info >/dev/null 2>&1; then
    echo "[docker-up] starting dockerd --bridge=none --iptables=false --ip-forward=false --ip-masq=false" >&2
    setsid nohup dockerd --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
      >/var/log/contextrl-dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done
    echo "[docker-up] dockerd did not come up; see /var/log/contextrl-dockerd.log" >&2
    tail -n 20 /var/log/contextrl-dockerd.log >&2 || true
    exit 1
  fi
  exit 0
fi
cat >&2 <<'MSG'
[docker-up] No Docker daemon answers, and this is not a Debian machine where we are root.
  Start Docker (e.g. `sudo systemctl start docker`, or Docker Desktop), or run with the
  local sandbox (no isolation): `contextrl demo --sandbox local`.
  Docker tests are skipped without a daemon (and fail under CI=true).
MSG
[ "${CI:-}" = "true" ] && exit 1
exit 0
