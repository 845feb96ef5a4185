#!/usr/bin/env bash
# Run a command in an image as a container runtime would: the image's user, working directory and environment.
#
#   images/in_image.sh IMAGE [-v HOST:CONTAINER[:ro]]... [-e NAME=VALUE]... -- COMMAND [ARGS...]
#
# buildah (no daemon): a throw-away working container and `buildah run --isolation chroot`, which shares the
# host's network (podman run cannot set rlimits here); docker: `docker run --rm --network host`.
. "$(dirname "$0")/lib.sh"

(($# >= 3)) || die "usage: $0 IMAGE [-v SPEC]... [-e NAME=VALUE]... -- COMMAND [ARGS...]"
image=$1; shift
opts=()
while (($#)) && [[ $1 != -- ]]; do
    case $1 in
        -v|-e) opts+=("$1" "$2"); shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ ${1:-} == -- ]] || die "missing -- before the command"
shift

if [[ $HJCAG_BUILDER == docker ]]; then
    exec docker run --rm --network host "${opts[@]}" "$image" "$@"
fi
ctr=$(bah from --pull-never --quiet "$image")
trap 'bah rm "$ctr" >/dev/null' EXIT
run_opts=()
for ((i = 0; i < ${#opts[@]}; i += 2)); do
    if [[ ${opts[i]} == -v ]]; then run_opts+=(--volume "${opts[i + 1]}")
    else run_opts+=(--env "${opts[i + 1]}")
    fi
done
bah run --isolation chroot "${run_opts[@]}" "$ctr" -- "$@"
