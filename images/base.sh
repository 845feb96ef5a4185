#!/usr/bin/env bash
# The local base image for machines that reach Debian's and PyPI's package servers but no container registry:
# a minimal Debian bookworm (debootstrap) with Python 3.11, venv and CA certificates, the stand-in for both
# python:3.11-slim-bookworm (serving) and the CUDA runtime (components) in images/build.sh. Idempotent.
# The Debian mirror is the one apt uses on this machine (override: HJCAG_DEBIAN_MIRROR).
. "$(dirname "$0")/lib.sh"

[[ $HJCAG_BUILDER == buildah ]] || die "the local base is for buildah builds; with Docker, pull the upstream bases"
if image_exists "$LOCAL_BASE_IMAGE"; then say "local base $LOCAL_BASE_IMAGE exists"; exit 0; fi
need debootstrap debootstrap "it makes the local Debian base image"

mirror=${HJCAG_DEBIAN_MIRROR:-$( (grep -rhoE '^(URIs:|deb)[[:space:]]+https?://[^[:space:]]+/debian/?' \
    /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) | awk '{print $NF; exit}')}
mirror=${mirror:-http://deb.debian.org/debian}

start=$SECONDS
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/hjcag-debian.XXXXXX")
trap 'rm -rf "$dir"' EXIT
say "debootstrap bookworm from $mirror (about 1.5 minutes)"
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$dir" "$mirror" >"$dir.log" 2>&1 || { tail -n 30 "$dir.log" >&2; die "debootstrap failed (log: $dir.log)"; }
rm -f "$dir.log"
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb

ctr=$(bah from scratch)
mnt=$(bah mount "$ctr")
tar -C "$dir" -cf - . | tar -C "$mnt" -xf -
bah umount "$ctr" >/dev/null
bah config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 "$ctr"
bah commit --quiet "$ctr" "$LOCAL_BASE_IMAGE" >/dev/null
bah rm "$ctr" >/dev/null
say "local base $LOCAL_BASE_IMAGE: $(image_size "$LOCAL_BASE_IMAGE"), $((SECONDS - start)) s"
