#!/usr/bin/env bash
# `make docker-test`: the image built and run for real, with podman, as a teacher would use it
# (docs/docker.md, "One container"): build it, start it with a password on a free port, wait
# for its health check, load the page, submit a digits comparison through the container's own
# CLI, wait for it, check that the store and the checkpoints are on the volumes and belong to the
# non-root user, stop the container within its grace period (a run in the middle of training),
# start it again and find every run still there, the interrupted one resumed and completed.
#
# Skipped, saying why, when this is not root or podman can be neither found nor installed.
# `docker/test.sh --install-only` (make docker-deps) only installs podman when it is missing.
# Anything else that goes wrong (no network to PyPI or the Debian mirror included) fails.
# Podman's storage keeps the base image and the build's layers: a second run skips debootstrap,
# and after a change to the code only the last layers are built again.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

say() { echo "docker-test: $*"; }
# podman logs an error at each start of a container with a health check when there is no
# systemd to schedule it ("unable to get systemd connection"); the test runs it itself.
podman() { command podman "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }
fail() { echo "docker-test: FAILED: $*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
  say "skipped: not root (podman is run rootful here, and installed with apt when missing)"
  exit 0
fi
if ! type -P podman >/dev/null; then  # the path: `command -v` would find the function above
  if ! command -v apt-get >/dev/null 2>&1; then
    say "skipped: podman is missing and there is no apt-get to install it"
    exit 0
  fi
  say "installing podman (apt)"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      podman buildah runc debootstrap; } >/tmp/docker-test-apt.log 2>&1 \
    || { tail -n 20 /tmp/docker-test-apt.log; fail "apt-get could not install podman"; }
fi
command -v debootstrap >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
[ "${1:-}" = --install-only ] && exit 0

# runc (crun refuses this kind of machine's cgroup layout) and limits root can set here.
export CONTAINERS_CONF=$REPO/docker/containers.conf
BASE=${BASE_IMAGE:-localhost/debian:bookworm-slim}
IMAGE=localhost/gce-lab:latest
NAME=gce-lab-test-$$
DATA=gce-data-test-$$
STORE=gce-store-test-$$
PASSWORD="test-$RANDOM-$RANDOM"
GROUP=docker-test
started=$SECONDS

cleanup() {
  podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  podman volume rm -f "$DATA" "$STORE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# 1. The base image (debootstrap once, then kept), then the image.
BASE_IMAGE=$BASE bash docker/base-image.sh
# pip inside the build trusts the host's CA bundle (this machine's HTTPS may go through a proxy
# with its own CA): mounted read-only for the build only, never copied into the image.
ca_args=()
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  if [ -f "$bundle" ]; then
    ca_args=(-v "$bundle:/tmp/host-ca.crt:ro" --build-arg CA_BUNDLE=/tmp/host-ca.crt)
    break
  fi
done
say "building $IMAGE (nice; the requirements' layers come from the cache unless they changed)"
t0=$SECONDS
# --format docker keeps the HEALTHCHECK (podman's default OCI format drops it).
nice -n 10 podman build --format docker --build-arg "BASE=$BASE" "${ca_args[@]}" \
    -t "$IMAGE" . >/tmp/docker-test-build.log 2>&1 \
  || { tail -n 40 /tmp/docker-test-build.log; fail "podman build failed (full log: /tmp/docker-test-build.log)"; }
say "built in $((SECONDS - t0)) s, $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}')"
[ "$(podman image inspect --format '{{.Config.User}}' "$IMAGE")" = lab ] || fail "the image does not run as lab"
podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" | grep -q _stcore/health \
  || fail "the image has no HEALTHCHECK"

# 2. Without a password the container refuses to start, with one line saying why.
if out=$(podman run --rm "$IMAGE" 2>&1); then fail "the container started without GCE_LAB_PASSWORD"; fi
echo "$out" | grep -q GCE_LAB_PASSWORD || fail "no GCE_LAB_PASSWORD message: $out"

# 3. The offline classroom's data volume, filled from a folder as docs/docker.md says: a tiny
# Fashion-MNIST in its real format (tests/fake_datasets.py), trained on below without a download.
SEED=$(mktemp -d /tmp/docker-test-seed.XXXXXX)
trap 'cleanup; rm -rf "$SEED"' EXIT
PY=.venv/bin/python; [ -x "$PY" ] || PY=python3
"$PY" -c "import sys, pathlib; from tests.fake_datasets import write_fashion_mnist; write_fashion_mnist(pathlib.Path(sys.argv[1]), n_train=80, n_test=20)" "$SEED" \
  || fail "could not write the fake Fashion-MNIST (needs numpy: make test's .venv)"
chmod -R a+rX "$SEED"
podman run --rm -v "$DATA:/data" -v "$SEED:/seed:ro" "$IMAGE" cp -r /seed/. /data/
[ -f "$(podman volume inspect --format '{{.Mountpoint}}' "$DATA")/FashionMNIST/raw/train-images-idx3-ubyte" ] \
  || fail "the data volume was not filled"

# 4. Started as docs/docker.md says, on a free port of this host's loopback.
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
podman run -d --name "$NAME" --stop-timeout 40 -e GCE_LAB_PASSWORD="$PASSWORD" \
    -p "127.0.0.1:$PORT:8501" -v "$DATA:/data" -v "$STORE:/home/lab/.gce_lab" "$IMAGE" >/dev/null

wait_healthy() {  # no systemd here: podman runs the health check when asked
  local t0=$SECONDS
  until podman healthcheck run "$NAME" >/dev/null 2>&1; do
    [ "$(podman inspect --format '{{.State.Running}}' "$NAME")" = true ] \
      || { podman logs "$NAME" | tail -n 30; fail "the container stopped"; }
    [ $((SECONDS - t0)) -lt 180 ] || { podman logs "$NAME" | tail -n 30; fail "not healthy after 180 s"; }
    sleep 1
  done
  say "healthy $((SECONDS - t0)) s after the start"
}
wait_healthy

page=$(python3 -c "import urllib.request, sys; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())" \
  "http://127.0.0.1:$PORT/") || fail "the page did not load"
echo "$page" | grep -q '<div id="root">' || fail "the page is not the lab's Streamlit page"
say "page served on 127.0.0.1:$PORT"

lab() { podman exec "$NAME" python -m jobs "$@"; }
run_id() { echo "$1" | sed -n 's/^queued run \([0-9a-f]*\):.*/\1/p' | grep . || fail "no run id in: $1"; }
WAIT=$(cat docker/wait.py)
wait_for() {  # TIMEOUT_S CONDITION RUN_ID...: one process in the container polls the store
  podman exec "$NAME" python -c "$WAIT" "$@" || { lab list --group "$GROUP"; fail "waiting for $2"; }
}

# 5. A digits comparison through the container's own CLI, trained by its worker as lab.
out=$(lab submit --dataset digits --losses cce,lq --noise uniform --noise-rate 0.4 \
        --epochs 3 --train-subset 400 --group "$GROUP")
echo "$out"
read -r -a RUNS <<<"$(echo "$out" | sed -n 's/^queued [0-9]* runs in group [^:]*: //p')"
[ "${#RUNS[@]}" = 2 ] || fail "expected 2 run ids from submit, got: $out"
out=$(lab submit --dataset fashion_mnist --no-download --loss lq --epochs 1 --group "$GROUP")
RUNS+=("$(run_id "$out")")
wait_for 900 completed "${RUNS[@]}"
lab list --group "$GROUP"

# 6. The store and the checkpoints: on the volumes, written by lab (uid 1000).
store=$(podman volume inspect --format '{{.Mountpoint}}' "$STORE")
[ -f "$store/gce_lab.db" ] || fail "no database in the store volume ($store)"
for id in "${RUNS[@]}"; do
  [ -s "$store/runs/$id/checkpoint.pt" ] || fail "no checkpoint of run $id in the store volume"
done
bad=$(find "$store" "$(podman volume inspect --format '{{.Mountpoint}}' "$DATA")" ! -uid 1000 -print)
[ -z "$bad" ] || fail "not lab's (uid 1000): $bad"
say "store and checkpoints on the volumes, owned by uid 1000: $(find "$store" -type f | wc -l) files"

# 7. A long run in the middle of training, then `podman stop`: SIGTERM, the worker checkpoints
# and queues it again, the launcher exits 0 well within the 40 s grace period.
out=$(lab submit --dataset digits --loss lq --noise uniform --noise-rate 0.4 --train-subset 400 \
        --epochs 1000 --group "$GROUP")
LONG=$(run_id "$out")
at_stop=$(wait_for 300 'running>1' "$LONG" | cut -d: -f3)
t0=$(date +%s.%N)
podman stop "$NAME" >/dev/null
took=$(python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$t0")
code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || { podman logs "$NAME" | tail -n 20; fail "exit code $code after podman stop (137: killed at the end of the grace period)"; }
python3 -c "import sys; sys.exit(float(sys.argv[1]) >= 40)" "$took" || fail "podman stop took $took s"
[ -s "$store/runs/$LONG/checkpoint.pt" ] || fail "no checkpoint of the stopped run $LONG"
say "stopped in $took s with run $LONG mid-training, exit code 0"

# 8. Started again: the runs are still there; the stopped one is started again and goes on from
# its checkpoint (its stored epochs never go back), then is cancelled.
podman start "$NAME" >/dev/null
wait_healthy
listing=$(lab list --group "$GROUP" --limit 1000)
for id in "${RUNS[@]}"; do
  echo "$listing" | grep -q -E "^$id +completed " || fail "run $id is not completed after the restart"
done
now=$(wait_for 300 "resumed>$at_stop" "$LONG")
say "run $LONG went on after the restart: at least epoch $at_stop at the stop, now $now (id:status:epochs:attempts)"
lab cancel "$LONG" >/dev/null
wait_for 300 cancelled "$LONG" >/dev/null
lab list --group "$GROUP"
say "passed in $((SECONDS - started)) s"
