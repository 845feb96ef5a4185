# Shared by images/build.sh and images/test.sh (sourced, not run).
#
# Builder: `docker` when a Docker daemon answers, otherwise `buildah` (daemonless, as root) with the project's own
# image store under $HJCAG_IMAGE_STORE, so these images never mix with (or clean up) anyone else's.
# Override with HJCAG_BUILDER=docker|buildah.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=${HJCAG_IMAGE_VERSION:-0.1.0}
COMPONENT_IMAGE=${HJCAG_COMPONENT_IMAGE:-localhost/hjcag-pipeline:$VERSION}
SERVING_RUNTIME_IMAGE=${HJCAG_SERVING_RUNTIME_IMAGE:-localhost/hjcag-serving:$VERSION}
SERVING_IMAGE=${HJCAG_SERVING_IMAGE:-localhost/hjcag-serving-all:$VERSION}
MODEL_IMAGE=${HJCAG_MODEL_IMAGE:-localhost/hjcag-model:$VERSION}
LOCAL_BASE_IMAGE=localhost/hjcag-debian-base:bookworm
STORE=${HJCAG_IMAGE_STORE:-/var/tmp/hjcag-images}

die() { echo "error: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

if [[ -z ${HJCAG_BUILDER:-} ]]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then HJCAG_BUILDER=docker
    else HJCAG_BUILDER=buildah
    fi
fi

need() {  # need TOOL DEBIAN_PACKAGE WHY
    command -v "$1" >/dev/null 2>&1 && return 0
    die "$1 not found ($3). Install it: apt-get install -y $2   (Debian/Ubuntu; root needed)"
}

if [[ $HJCAG_BUILDER == buildah ]]; then
    need buildah buildah "no Docker daemon here, and buildah builds and runs the images without one"
    [[ $(id -u) == 0 ]] || die "buildah needs root here (chroot isolation); run as root or with a Docker daemon"
fi

# buildah with the project's own storage (overlay, root-owned).
bah() { buildah --root "$STORE/storage" --runroot "$STORE/run" --storage-driver overlay "$@"; }

image_exists() {
    if [[ $HJCAG_BUILDER == docker ]]; then docker image inspect "$1" >/dev/null 2>&1
    else bah inspect --type image "$1" >/dev/null 2>&1
    fi
}

image_size() {  # the image's (uncompressed) size, as "1.23 GB"
    if [[ $HJCAG_BUILDER == docker ]]; then
        python3 -c "import sys; print(f'{int(sys.argv[1]) / 1e9:.2f} GB')" "$(docker image inspect --format '{{.Size}}' "$1")"
    else bah images --noheading --format '{{.Size}}' "$1"
    fi
}

image_config() {  # the image's config as JSON (Entrypoint, Cmd, Healthcheck, User, WorkingDir, Env, ...)
    if [[ $HJCAG_BUILDER == docker ]]; then docker image inspect --format '{{json .Config}}' "$1"
    else bah inspect --type image "$1" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["Docker"]["config"]))'
    fi
}
