#!/usr/bin/env bash
# Makes the base image localhost/debian:bookworm-slim without a registry: debootstrap's minbase
# variant of bookworm from the Debian mirror apt already uses on this machine, imported into
# podman. The official debian:bookworm-slim is made the same way (debootstrap, then slimmed),
# so the Dockerfile builds FROM the same Debian it would pull. Kept once made: a second call
# only checks that it exists.
set -euo pipefail
IMAGE=${BASE_IMAGE:-localhost/debian:bookworm-slim}
if podman image exists "$IMAGE"; then
  echo "base image $IMAGE: already made"
  exit 0
fi
# The mirror of the first bookworm "main" source apt has (deb822 .sources or one-line .list).
mirror=$(grep -h -E '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
           /etc/apt/sources.list.d/*.list 2>/dev/null \
         | grep -v -E 'security|updates' | grep -o -E 'https?://[^ ]+/debian/?' | head -n1 || true)
mirror=${DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}
root=$(mktemp -d /var/tmp/gce-lab-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base image $IMAGE: debootstrap --variant=minbase bookworm from $mirror"
start=$SECONDS
nice debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -n 20 "$root.log"; echo "debootstrap failed (is $mirror reachable?)" >&2; exit 1; }
rm -f "$root.log"
# As the official slim image: the bookworm security updates, no apt lists or caches, no docs.
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian*}/debian-security bookworm-security main
SOURCES
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
tar --numeric-owner -C "$root" -c . | podman import --change 'CMD ["bash"]' - "$IMAGE" >/dev/null
echo "base image $IMAGE: made in $((SECONDS - start)) s"
