#!/usr/bin/env bash
# `make images`: the KFP component image (components/Dockerfile) and the serving images (serving/Dockerfile:
# runtime, model, and the default target with the archive baked in), with `docker build` when a Docker daemon
# answers and `buildah bud` otherwise. Prints each image's size and build time.
#
# Where no container registry is reachable (HJCAG_BASE=auto finds out; force with HJCAG_BASE=local|upstream), the
# bases are a locally made Debian bookworm (images/base.sh), and what this machine's pip is configured with is
# lent to the build: its CA bundle (mounted read-only, named by PIP_CERT) and, when one of its find-links folders
# holds the CPU torch wheel, that folder (TORCH_FIND_LINKS). The Dockerfiles themselves stay machine-neutral.
#
# The serving image's archive is model-store/hjcag.mar; when there is none, the tiny demo archive is written there
# (images/demo_archive.py, seconds).
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

TORCH_VERSION=$(sed -nE 's/^ARG TORCH_VERSION=(.*)/\1/p' serving/Dockerfile | head -n1)
MOUNT_DIR=/run/hjcag-build  # where the lent files appear during RUN steps (never in a layer)
SUMMARY=build/images/summary.txt

registry_reachable() {
    command -v curl >/dev/null 2>&1 || return 1
    curl -s -m 8 -o /dev/null https://registry-1.docker.io/v2/
}

base=${HJCAG_BASE:-auto}
if [[ $base == auto ]]; then
    if [[ $HJCAG_BUILDER == docker ]] || registry_reachable; then base=upstream; else base=local; fi
fi

pip_setting() {  # the value this machine's pip has for a setting (cert, find-links), from its env or its config
    python3 -m pip config list 2>/dev/null | sed -nE "s/^[^.]*\.$1='(.*)'$/\1/p" | head -n1
}

summary_row() {  # summary_row NAME TAG SECONDS: one line of build/images/summary.txt
    printf '%-12s %-40s %9s %6d s\n' "$1" "$2" "$(image_size "$2")" "$3" | tee -a "$SUMMARY"
}

mkdir -p "$(dirname "$SUMMARY")"
printf '%-12s %-40s %9s %8s\n' image tag size build | tee "$SUMMARY"
total=$SECONDS
common=() component=() serving=()
if [[ $base == local ]]; then
    [[ $HJCAG_BUILDER == buildah ]] || die "HJCAG_BASE=local needs buildah (HJCAG_BUILDER=buildah)"
    start=$SECONDS
    "$ROOT/images/base.sh"  # seconds when the store already holds it
    summary_row base "$LOCAL_BASE_IMAGE" $((SECONDS - start))
    component+=(--build-arg "CUDA_IMAGE=$LOCAL_BASE_IMAGE")
    serving+=(--build-arg "PYTHON_IMAGE=$LOCAL_BASE_IMAGE" --build-arg "BUSYBOX_IMAGE=$LOCAL_BASE_IMAGE")
    cert=${PIP_CERT:-$(pip_setting cert)}
    if [[ -n $cert && -f $cert ]]; then
        common+=(-v "$cert:$MOUNT_DIR/ca.pem:ro" --build-arg "PIP_CERT=$MOUNT_DIR/ca.pem")
    fi
    for links in ${HJCAG_TORCH_FIND_LINKS:-} ${PIP_FIND_LINKS:-} $(pip_setting find-links); do
        if compgen -G "$links/torch-$TORCH_VERSION+cpu-cp311-*.whl" >/dev/null; then
            common+=(-v "$links:$MOUNT_DIR/wheels:ro" --build-arg "TORCH_FIND_LINKS=$MOUNT_DIR/wheels")
            break
        fi
    done
    # No GPU here: the component image gets CPU torch too (from the wheel above, else from the CPU index).
    component+=(--build-arg "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu")
fi

build() {  # build NAME DOCKERFILE TAG [ARGS...]
    local name=$1 file=$2 tag=$3; shift 3
    local start=$SECONDS
    say "building $name: $tag ($file, $HJCAG_BUILDER, $base bases)"
    if [[ $HJCAG_BUILDER == docker ]]; then
        # docker build cannot mount host files: the lent CA bundle and wheels are buildah-only (local bases).
        local args=() skip=0 a
        for a in "$@"; do
            if ((skip)); then skip=0; continue; fi
            if [[ $a == -v ]]; then skip=1; continue; fi
            args+=("$a")
        done
        DOCKER_BUILDKIT=1 docker build -f "$file" -t "$tag" "${args[@]}" .
    else
        bah bud --isolation chroot --layers --force-rm --format docker -f "$file" -t "$tag" "$@" .
    fi
    summary_row "$name" "$tag" $((SECONDS - start))
}

build components components/Dockerfile "$COMPONENT_IMAGE" "${common[@]}" "${component[@]}"
build serving serving/Dockerfile "$SERVING_RUNTIME_IMAGE" --target runtime "${common[@]}" "${serving[@]}"
if [[ ! -f model-store/hjcag.mar ]]; then
    [[ -x .venv/bin/python ]] || die "model-store/hjcag.mar is missing and so is .venv: run make install first"
    say "no model-store/hjcag.mar: writing the tiny demo archive there"
    .venv/bin/python images/demo_archive.py --out model-store
fi
build model serving/Dockerfile "$MODEL_IMAGE" --target model "${common[@]}" "${serving[@]}"
build serving-all serving/Dockerfile "$SERVING_IMAGE" "${common[@]}" "${serving[@]}"
echo "all images built in $((SECONDS - total)) s (sizes as the builder reports them, uncompressed)" | tee -a "$SUMMARY"
