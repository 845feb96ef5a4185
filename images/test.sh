#!/usr/bin/env bash
# `make image-test`: proves the images built by `make images` work, by running them (images/in_image.sh).
#
#   serving     the runtime image serves the tiny demo archive (mounted read-only at the model store, as
#               Kubernetes does) with its own entrypoint, command and config: images/serving_check.py
#   components  tasks of the compiled pipeline (pipelines/hjcag_training.yaml) run in the component image exactly
#               as KFP runs them, from the generated demo data through validation, stand-in features, the folds
#               (ParallelFor) and evaluation to the gate: images/kfp_run.py (IMAGE_TEST_UNTIL=task to change)
#   extractors  `hjcag --help`, the openSMILE IS10 config and the MiniLM fallback in the component image
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

PY=$ROOT/.venv/bin/python
[[ -x $PY ]] || die "no .venv: run make install first"
for image in "$COMPONENT_IMAGE" "$SERVING_RUNTIME_IMAGE" "$SERVING_IMAGE"; do
    image_exists "$image" || die "image $image not found: run make images first"
done
WORK=$ROOT/build/images/test
rm -rf "$WORK" && mkdir -p "$WORK"
timings=()
step() { timings+=("$(printf '%6d s  %s' $((SECONDS - $1)) "$2")"); }
total=$SECONDS

# ---- serving
t=$SECONDS
say "serving: the runtime image $SERVING_RUNTIME_IMAGE with the tiny demo archive"
"$PY" images/demo_archive.py --out "$WORK/store" --requests "$WORK/serving"
cp images/serving_check.py "$WORK/serving/"
chmod -R a+rX "$WORK"
config=$(image_config "$SERVING_RUNTIME_IMAGE")
mapfile -t command < <(python3 -c 'import json, sys; c = json.loads(sys.argv[1])
print(*(c.get("Entrypoint") or []) + c["Cmd"], sep="\n")' "$config")
probe=$(python3 -c 'import json, sys; h = (json.loads(sys.argv[1]).get("Healthcheck") or {}).get("Test") or []
print(json.dumps(h[1:]) if h[:1] == ["CMD"] else "")' "$config")
[[ -n $probe ]] || die "$SERVING_RUNTIME_IMAGE has no HEALTHCHECK (buildah keeps it only with --format docker)"
images/in_image.sh "$SERVING_RUNTIME_IMAGE" -v "$WORK/store:/home/model-server/model-store:ro" \
    -v "$WORK/serving:/run/hjcag-test:ro" -e HF_HUB_OFFLINE=1 -- \
    python3 /run/hjcag-test/serving_check.py --requests /run/hjcag-test --probe "$probe" -- "${command[@]}"
baked=$(images/in_image.sh "$SERVING_IMAGE" -- sha256sum /home/model-server/model-store/hjcag.mar | cut -d' ' -f1)
[[ $baked == $(sha256sum model-store/hjcag.mar | cut -d' ' -f1) ]] \
    || die "$SERVING_IMAGE does not hold model-store/hjcag.mar (rebuild with make images)"
echo "ok   $SERVING_IMAGE holds model-store/hjcag.mar (sha256 ${baked:0:12})"
step "$t" "serving"

# ---- extractors and the CLI in the component image
t=$SECONDS
say "components: hjcag --help, openSMILE config and MiniLM fallback in $COMPONENT_IMAGE"
images/in_image.sh "$COMPONENT_IMAGE" -- hjcag --help >/dev/null
echo "ok   hjcag --help"
images/in_image.sh "$COMPONENT_IMAGE" -v "$ROOT/images/extractors_check.py:/run/hjcag-test/extractors_check.py:ro" \
    -e HF_HUB_OFFLINE=1 -- python3 /run/hjcag-test/extractors_check.py
step "$t" "extractors"

# ---- KFP components
t=$SECONDS
until=${IMAGE_TEST_UNTIL:-gate}
say "components: the compiled pipeline's tasks in $COMPONENT_IMAGE, as KFP runs them, up to $until"
# The demo profile shrunk to seconds (as tests/test_kfp_pipeline.py does): tiny widths, 2 folds x 2 epochs, CPU.
"$PY" - "$WORK/params.yaml" <<'PYEOF'
import sys
import yaml
raw = yaml.safe_load(open("params.yaml"))
demo = raw["profiles"]["demo"]
demo["model"] = {**demo.get("model", {}), "seq_len": 6, "widths": {"t": 8, "a": 8, "v": 8}, "gate_width": 8,
                 "classifier_hidden": 8}
demo["train"] = {**demo.get("train", {}), "epochs": 2, "folds": 2, "patience": 2, "device": "cpu", "num_threads": 1}
demo["gates"] = {"min_accuracy": 0.0, "min_weighted_f1": 0.0}
open(sys.argv[1], "w").write(yaml.safe_dump(raw))
PYEOF
"$PY" images/kfp_run.py --image "$COMPONENT_IMAGE" --work "$WORK/kfp" --until "$until" \
    --arg profile=demo --arg standin_features=true --arg demo_size=tiny \
    --arg "params_yaml=$(cat "$WORK/params.yaml")"
step "$t" "components ($until)"

echo "image-test passed in $((SECONDS - total)) s:" | tee "$ROOT/build/images/test-summary.txt"
printf '%s\n' "${timings[@]}" | tee -a "$ROOT/build/images/test-summary.txt"
