"""The framework-free predictor and the model archive, in process: requests -> aligned tensors + presence mask ->
the trained model -> responses; validation with clear 4xx messages; raw text / wav / mp4 through the real
extractors; batches and KServe bodies; `package_model` (archive layout, record, self-contained code, registry URI).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import media_fixtures
import serve_fixtures as sf
from hjcag.artifacts import file_digest
from hjcag.data.features_file import align_to_length
from hjcag.errors import ConfigError, HjcagError
from hjcag.serve.package import package_model, read_archive_record, served_sources
from hjcag.serve.predictor import Predictor
from hjcag.serve.reproducible import MANIFEST_ENTRY, normalise_archive
from hjcag.serve.request import RequestError, pack_array

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tiny models: torch on one thread (tests/conftest.py)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The text extractor must fall back to MiniLM at once, whatever the machine's network."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sf.train_tiny_run(tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture(scope="module")
def predictor(run_dir: Path) -> Predictor:
    return Predictor.from_run(run_dir, features_config=sf.features_config())


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    return {
        "wav": media_fixtures.write_wav(root / "a.wav", duration_s=0.5, freq=300.0),
        "mp4": media_fixtures.write_video(root / "v.mp4", duration_s=0.5, freq=500.0),
        "mp4_silent": media_fixtures.write_video(root / "s.mp4", duration_s=0.5, audio=False, seed=3),
        "long_wav": media_fixtures.write_wav(root / "long.wav", duration_s=3.0),
    }


def direct(predictor: Predictor, arrays: dict[str, np.ndarray]) -> torch.Tensor:
    """The model's probabilities computed by hand: align like the features file, zeros + mask for the rest."""
    inputs, present = {}, []
    for m in predictor.modalities:
        x = arrays.get(m)
        present.append(x is not None)
        x = np.zeros((predictor.input_dims[m],), np.float32) if x is None else x
        inputs[m] = torch.from_numpy(align_to_length(np.asarray(x, np.float32)[None], predictor.seq_len))
    with torch.inference_mode():
        out = predictor.model(inputs, torch.tensor([present]))
    return torch.softmax(out.logits, dim=1)[0]


def probs(response: dict[str, Any]) -> np.ndarray:
    return np.array(list(response["probabilities"].values()))


# ------------------------------------------------------------------------------------------ features path


def test_features_request_gives_label_probabilities_gate_model_and_version(predictor: Predictor) -> None:
    response = predictor.predict(sf.feature_request(0))
    assert set(response) == {"label", "probabilities", "gate", "modalities", "model", "version"}
    assert list(response["probabilities"]) == list(sf.LABELS)
    assert probs(response).sum() == pytest.approx(1.0, abs=1e-5)
    assert response["label"] == max(response["probabilities"], key=response["probabilities"].get)
    assert set(response["gate"]) == {"text", "audio", "visual"} and sum(response["gate"].values()) == pytest.approx(1)
    assert response["model"] == "hjcag" and response["version"].startswith("run-")


def test_features_are_aligned_like_training_and_match_the_model(predictor: Predictor) -> None:
    rng = np.random.default_rng(1)
    text = rng.normal(size=(9, 384)).astype(np.float32)  # longer than L: cropped
    audio = rng.normal(size=88).astype(np.float32)  # a vector: broadcast over L
    visual = rng.normal(size=(2, 32)).astype(np.float32)  # shorter: zero-padded
    response = predictor.predict({"features": {"text": text.tolist(), "audio": audio.tolist(),
                                               "visual": visual.tolist()}})
    expected = direct(predictor, {"t": text, "a": audio, "v": visual}).numpy()
    np.testing.assert_allclose(probs(response), expected, atol=1e-6)
    # a vector is the same as that vector repeated at every step
    repeated = predictor.predict({"features": {"audio": np.tile(audio, (sf.SEQ_LEN, 1)).tolist()}})
    assert probs(repeated) == pytest.approx(probs(predictor.predict({"features": {"audio": audio.tolist()}})))


def test_missing_modalities_are_masked_in_the_gate(predictor: Predictor) -> None:
    request = sf.feature_request(2, "ta")
    response = predictor.predict(request)
    assert response["gate"]["visual"] == 0.0 and response["modalities"] == ["text", "audio"]
    assert response["gate"]["text"] + response["gate"]["audio"] == pytest.approx(1.0)
    arrays = {"t": np.array(request["features"]["text"]), "a": np.array(request["features"]["audio"])}
    np.testing.assert_allclose(probs(response), direct(predictor, arrays).numpy(), atol=1e-6)
    only_text = predictor.predict(sf.feature_request(2, "t"))
    assert only_text["gate"] == {"text": 1.0, "audio": 0.0, "visual": 0.0} and only_text["modalities"] == ["text"]


def test_packed_features_answer_like_the_same_numbers_as_lists(predictor: Predictor) -> None:
    """{"dtype", "shape", "b64"}: float32 gives the very numbers of the list form; float16 the numbers rounded to
    float16, both for (d,) vectors and (T, d) sequences, mixed freely with lists."""
    request = sf.feature_request(4, steps=5)
    arrays = {k: np.array(v, dtype=np.float32) for k, v in request["features"].items()}
    listed = probs(predictor.predict(request))
    as_float32 = {"features": {k: sf.packed(v, "float32") for k, v in arrays.items()}}
    assert np.array_equal(probs(predictor.predict(json.dumps(as_float32))), listed)
    halves = {k: v.astype(np.float16) for k, v in arrays.items()}
    as_float16 = {"features": {"text": sf.packed(halves["text"], "float16"), "audio": sf.packed(halves["audio"][0],
                               "float16"), "visual": halves["visual"].astype(np.float32).tolist()}}
    rounded = {"features": {"text": halves["text"].astype(np.float32).tolist(),
                            "audio": halves["audio"][0].astype(np.float32).tolist(),
                            "visual": halves["visual"].astype(np.float32).tolist()}}
    assert np.array_equal(probs(predictor.predict(json.dumps(as_float16))), probs(predictor.predict(rounded)))
    assert np.abs(probs(predictor.predict(json.dumps(as_float16))) - listed).max() < 1e-2
    # the public encoder (what a client calls) writes exactly this wire format
    for dtype in ("float16", "float32"):
        assert pack_array(arrays["text"], dtype) == sf.packed(arrays["text"], dtype)


_AUDIO = np.zeros(88, np.float32)
_PACKED = sf.packed(_AUDIO)

BAD_REQUESTS = [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"", "body is empty"),
    ([1, 2], "must be a JSON object"),
    ({}, "the request has no input"),
    ({"features": {}}, "the request has no input"),
    ({"txt": "hi"}, "unknown key(s) ['txt']"),
    ({"features": {"smell": [1.0]}}, "unknown modality 'smell'"),
    ({"features": {"audio": [0.5] * 87}}, "audio features have 87 dims, the model expects 88."),
    ({"features": {"text": [[0.5] * 384, [0.5] * 3]}}, "a ragged or mixed list"),
    ({"features": {"audio": ["a"] * 88}}, "non-numbers"),
    ({"features": {"audio": [[[0.0] * 88]]}}, "an array of shape [1, 1, 88]"),
    ({"features": {"audio": 3}}, "got a JSON number"),
    ({"features": [1.0]}, "'features' must be an object"),
    ({"features": {"audio": [float("nan")] * 88}}, "NaN or infinite"),
    ({"features": {"audio": [1e39] * 88}}, "NaN or infinite"),
    ({"text": 5}, "'text' must be a string"),
    ({"text": "   "}, "'text' is empty"),
    ({"audio": "%%% not base64 %%%"}, "'audio' is not valid base64"),
    ({"video": ""}, "'video' is empty"),
    ({"text": "hi", "features": {"text": [0.0] * 384}}, "given both raw and as features.text"),
    ({"features": {"audio": {"shape": [88], "b64": _PACKED["b64"]}}},
     "features.audio as an object must be {\"dtype\""),
    ({"features": {"audio": {**_PACKED, "dtype": "float64"}}}, 'features.audio.dtype must be "float16" or "float32"'),
    ({"features": {"audio": {**_PACKED, "shape": [1, 1, 88]}}}, "features.audio.shape must be [d] or [T, d]"),
    ({"features": {"audio": {**_PACKED, "shape": [0]}}}, "features.audio.shape must be [d] or [T, d]"),
    ({"features": {"audio": {**_PACKED, "shape": [44]}}},
     "features.audio.b64 holds 352 bytes; shape [44] of float32 takes 176"),
    ({"features": {"audio": {**_PACKED, "b64": "%%%"}}}, "'features.audio.b64' is not valid base64"),
    ({"features": {"audio": sf.packed(_AUDIO[:87])}}, "audio features have 87 dims, the model expects 88."),
    ({"features": {"audio": sf.packed(np.full(88, np.inf, np.float32))}}, "NaN or infinite"),
]


@pytest.mark.parametrize(("body", "message"), BAD_REQUESTS, ids=[m for _, m in BAD_REQUESTS])
def test_bad_requests_get_a_400_that_says_what_is_wrong(predictor: Predictor, body: Any, message: str) -> None:
    if isinstance(body, dict | list):
        body = json.dumps(body)  # as it arrives over HTTP (NaN as the non-standard token json accepts)
    with pytest.raises(RequestError) as info:
        predictor.predict(body)
    assert info.value.status == 400
    assert message in info.value.message


def test_limits_answer_413(run_dir: Path, media: dict[str, Path]) -> None:
    from hjcag.params import MediaConfig
    from hjcag.serve.request import Limits

    small = Predictor.from_run(run_dir, features_config=sf.features_config(), media=MediaConfig(max_duration_s=1.0),
                               limits=Limits(max_text_chars=10, max_feature_steps=3))
    cases = [({"text": "x" * 11}, "'text' has 11 characters"),
             ({"audio": sf.b64(media["long_wav"])}, "audio lasts 3.0 s; the limit is 1 s"),
             ({"features": {"audio": [[0.0] * 88] * 4}}, "has 4 time steps; the limit is 3")]
    for body, message in cases:
        with pytest.raises(RequestError) as info:
            small.predict(body)
        assert info.value.status == 413 and message in info.value.message


# --------------------------------------------------------------------------------------------- raw path


def test_raw_text_wav_and_mp4_are_extracted_like_training(predictor: Predictor, media: dict[str, Path]) -> None:
    from hjcag.features.extract import build_extractor
    from hjcag.features.media_io import MediaRef

    response = predictor.predict({"text": "I can't believe it!", "audio": sf.b64(media["wav"]),
                                  "video": sf.b64(media["mp4"])})
    assert all(w > 0 for w in response["gate"].values())
    config = sf.features_config()
    arrays = {
        "t": build_extractor("t", config).extract(["I can't believe it!"])[0],
        "a": build_extractor("a", config).extract([MediaRef(media["wav"])])[0],
        "v": build_extractor("v", config).extract([MediaRef(media["mp4"])])[0],
    }
    np.testing.assert_allclose(probs(response), direct(predictor, arrays).numpy(), atol=1e-5)


def test_video_gives_audio_from_its_sound_track_unless_it_has_none(predictor: Predictor,
                                                                   media: dict[str, Path]) -> None:
    with_track = predictor.predict({"video": sf.b64(media["mp4"])})
    assert with_track["gate"]["audio"] > 0 and with_track["gate"]["visual"] > 0 and with_track["gate"]["text"] == 0
    silent = predictor.predict({"video": sf.b64(media["mp4_silent"])})
    assert silent["gate"]["audio"] == 0.0 and silent["gate"]["visual"] == pytest.approx(1.0)
    # a separate wav wins over the clip's track
    both = predictor.predict({"video": sf.b64(media["mp4"]), "audio": sf.b64(media["wav"])})
    assert probs(both) != pytest.approx(probs(with_track))


def test_media_that_validation_refuses_is_refused_with_validations_bounds(run_dir: Path, predictor: Predictor,
                                                                          tmp_path: Path) -> None:
    """A 4 kHz wav, a 0.05 s wav, a clip whose sound track is at 4 kHz: validation refuses each (the same probe
    and bounds, `validation.media`), so the endpoint answers 400 saying which bound and setting; a model whose
    archive carries wider bounds takes the same wav."""
    import pandas as pd

    from hjcag.features.media_rules import media_bounds
    from hjcag.params import MediaConfig
    from hjcag.validate.media_checks import check_media

    files = {"low_rate": media_fixtures.write_wav(tmp_path / "low.wav", duration_s=0.5, sample_rate=4000),
             "short": media_fixtures.write_wav(tmp_path / "short.wav", duration_s=0.05),
             "clip": media_fixtures.write_video(tmp_path / "clip.avi", duration_s=0.5, sample_rate=4000)}
    cases = [({"audio": sf.b64(files["low_rate"])},
              "audio: audio sample rate is 4000 Hz; valid media has 8000 to 96000 Hz (validation.media."
              "min_sample_rate / max_sample_rate)"),
             ({"audio": sf.b64(files["short"])}, "audio: audio duration is 0.05 s; valid media has 0.1 to 60 s"),
             ({"video": sf.b64(files["clip"])}, "the video's sound track: audio sample rate is 4000 Hz")]
    for body, message in cases:
        with pytest.raises(RequestError) as info:
            predictor.predict(body)
        assert info.value.status == 400 and message in info.value.message, info.value.message

    # what validation makes of the same files with the same config: each row outside the same bound
    rows = pd.DataFrame({"audio_path": [str(files[k]) for k in ("low_rate", "short", "clip")]})
    checked = check_media(rows, ["a"], predictor.media)
    outside = [[b.check for b in media_bounds(predictor.media, "a") if b.violated_by(row[b.column])]
               for _, row in checked.iterrows()]
    assert outside == [["audio_sample_rate"], ["audio_duration"], ["audio_sample_rate"]]

    lenient = Predictor.from_run(run_dir, features_config=sf.features_config(), media=MediaConfig(min_sample_rate=4000))
    assert lenient.predict({"audio": sf.b64(files["low_rate"])})["gate"]["audio"] == 1.0


def test_corrupt_media_gets_a_400_without_server_paths(predictor: Predictor, media: dict[str, Path]) -> None:
    garbage = sf.b64(media["wav"])[:60]  # a truncated wav header
    for key in ("audio", "video"):
        with pytest.raises(RequestError) as info:
            predictor.predict({key: garbage if key == "audio" else sf.b64(media["wav"])[:40] + "AAAA" * 50})
        assert info.value.status == 400 and "could not be decoded" in info.value.message
        assert "/tmp" not in info.value.message and "hjcag-serve-" not in info.value.message


def test_raw_input_whose_extractor_does_not_fit_the_model_is_refused(run_dir: Path) -> None:
    wrong_audio = Predictor.from_run(run_dir, features_config=sf.features_config().replace(audio_set="ComParE_2016"))
    status = wrong_audio.load_extractors()
    assert status["text"] == "ok" and status["visual"] == "ok"
    assert "gives 6373-dim features but the model expects 88" in status["audio"]
    with pytest.raises(RequestError, match=r"Send pre-extracted features as features\.audio instead"):
        wrong_audio.predict({"audio": "UklGRg=="})
    assert wrong_audio.predict(sf.feature_request(3, "a"))["gate"]["audio"] == 1.0  # features still work

    other_text = Predictor.from_run(run_dir, features_config=sf.features_config(),
                                    trained_with={"text": {"model": "hub:roberta-large", "layer": "last_hidden_state"}})
    with pytest.raises(RequestError, match="differs from the one the training features came from"):
        other_text.predict({"text": "hello"})

    no_config = Predictor.from_run(run_dir)
    with pytest.raises(RequestError, match="no feature-extractor configuration"):
        no_config.predict({"text": "hello"})


# ------------------------------------------------------------------------------------- batches, KServe


def test_a_batch_answers_each_body_in_order_and_bad_ones_alone(predictor: Predictor, media: dict[str, Path]) -> None:
    bodies: list[Any] = [sf.feature_request(10), b"{oops", {"text": "good morning"}, sf.feature_request(11, "v"),
                         {"audio": sf.b64(media["wav"])[:50]}, {"features": {"audio": [0.0] * 5}}]
    results = predictor.predict_many(bodies)
    assert len(results) == len(bodies)
    assert [isinstance(r, RequestError) for r in results] == [False, True, False, False, True, True]
    for body, result in zip(bodies, results, strict=True):
        if not isinstance(result, RequestError):
            assert probs(result) == pytest.approx(probs(predictor.predict(body)), abs=1e-6)


def test_kserve_instances_body(predictor: Predictor) -> None:
    a, b = sf.feature_request(20), sf.feature_request(21, "ta")
    answer = predictor.predict({"instances": [a, b]})
    assert [probs(p) for p in answer["predictions"]] == [pytest.approx(probs(predictor.predict(x))) for x in (a, b)]
    with pytest.raises(RequestError, match=r"instances\[1\]: unknown key"):
        predictor.predict({"instances": [a, {"nope": 1}]})
    with pytest.raises(RequestError, match="at least one request"):
        predictor.predict({"instances": []})


# ---------------------------------------------------------------------------------------------- archive


@pytest.fixture(scope="module")
def archive(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(hjcag.mar, the directory it unpacks to)."""
    store = tmp_path_factory.mktemp("store")
    mar = package_model(run_dir, store, features_config=sf.features_config())
    unpacked = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(mar) as z:
        z.extractall(unpacked)
    return mar, unpacked


def test_archive_layout_and_record(run_dir: Path, archive: tuple[Path, Path]) -> None:
    mar, unpacked = archive
    assert mar.name == "hjcag.mar"
    names = {p.name for p in unpacked.iterdir()}
    assert {"handler.py", "model-config.yaml", "model.safetensors", "model_config.json", "index_to_name.json",
            "features.json", "serving.json", "hjcag", "MAR-INF"} <= names
    carried = sorted(p.relative_to(unpacked / "hjcag") for p in (unpacked / "hjcag").rglob("*") if p.is_file())
    assert carried == served_sources() and Path("serve/predictor.py") in carried
    assert not {p.parts[0] for p in carried} & {"client", "predict", "pipeline", "cli.py", "stages.py"}
    manifest = json.loads((unpacked / "MAR-INF" / "MANIFEST.json").read_text())["model"]
    record = read_archive_record(mar)
    assert manifest["modelName"] == "hjcag" and manifest["modelVersion"] == record["version"]
    assert manifest["configFile"] == "model-config.yaml" and manifest["serializedFile"] == "model.safetensors"
    assert record["sha256"] == file_digest(mar) and record["version"] == json.loads(
        (unpacked / "serving.json").read_text())["version"]
    assert json.loads((unpacked / "index_to_name.json").read_text()) == {"0": "neutral", "1": "joy", "2": "anger"}
    features = json.loads((unpacked / "features.json").read_text())
    assert features["config"]["audio_set"] == "eGeMAPSv02" and features["config"]["seq_len"] == sf.SEQ_LEN
    media = json.loads((unpacked / "media.json").read_text())  # the params' validation.media travels along
    assert media["min_sample_rate"] == 8000 and media["max_duration_s"] == 60.0
    default = json.loads((run_dir / "model_config.json").read_text())["weights"]["default"]
    assert (unpacked / "model.safetensors").read_bytes() == (run_dir / default).read_bytes()


def test_unpacked_archive_predicts_like_the_run(predictor: Predictor, archive: tuple[Path, Path],
                                                media: dict[str, Path]) -> None:
    served = Predictor.load(archive[1])
    for request in (sf.feature_request(30), {"text": "so happy", "video": sf.b64(media["mp4"])}):
        assert probs(served.predict(request)) == pytest.approx(probs(predictor.predict(request)), abs=1e-6)


def test_the_archive_carries_the_media_bounds_the_endpoint_uses(run_dir: Path, tmp_path: Path,
                                                                 media: dict[str, Path]) -> None:
    from hjcag.params import MediaConfig

    mar = package_model(run_dir, tmp_path / "store", features_config=sf.features_config(),
                        media=MediaConfig(max_duration_s=2.0))
    with zipfile.ZipFile(mar) as z:
        z.extractall(tmp_path / "unpacked")
    served = Predictor.load(tmp_path / "unpacked")
    assert served.media.max_duration_s == 2.0 and served.describe()["valid_media"]["max_duration_s"] == 2.0
    with pytest.raises(RequestError, match=r"audio lasts 3\.0 s; the limit is 2 s") as info:
        served.predict({"audio": sf.b64(media["long_wav"])})
    assert info.value.status == 413


def test_archive_code_runs_without_hjcag_installed(archive: tuple[Path, Path]) -> None:
    """Site-packages on the path without its .pth files: the editable hjcag install is invisible, only the
    archive's copy can be imported (third-party packages still come from site-packages)."""
    unpacked = archive[1]
    script = (
        "import sys, json; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import hjcag, handler\n"
        "assert hjcag.__file__.startswith(sys.argv[1]), hjcag.__file__\n"
        "from hjcag.serve.predictor import Predictor\n"
        "r = Predictor.load(sys.argv[1]).predict({'features': {'audio': [0.1] * 88}})\n"
        "print(json.dumps(r))\n"
    )
    site = sysconfig.get_paths()["purelib"]
    result = subprocess.run([sys.executable, "-S", "-c", script, str(unpacked), site], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["gate"]["audio"] == 1.0


def test_package_checks_its_inputs(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(HjcagError, match=r"has no model_config\.json"):
        package_model(tmp_path, tmp_path / "store")
    meta = tmp_path / "features.meta.json"
    meta.write_text(json.dumps({"modalities": {"audio": {"feature_set": "IS10_paraling", "dim": 1582}}}))
    with pytest.raises(ConfigError, match="describes 1582-dim audio features but the model was trained on 88"):
        package_model(run_dir, tmp_path / "store", features_config=sf.features_config(), features_meta=meta)
    with pytest.raises(ConfigError, match="version"):
        package_model(run_dir, tmp_path / "store", features_config=sf.features_config(), version="1 0")


def test_package_from_a_registry_alias(run_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`--model-uri models:/name@alias`: the run directory registered in MLflow (SQLite store) is downloaded."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run(client.create_experiment("serve", artifact_location=str(tmp_path / "artifacts")))
    client.log_artifacts(run.info.run_id, str(run_dir), "run")
    client.create_registered_model("hjcag-demo")
    version = client.create_model_version("hjcag-demo", f"runs:/{run.info.run_id}/run", run_id=run.info.run_id)
    client.set_registered_model_alias("hjcag-demo", "champion", version.version)
    capfd.readouterr()
    mar = package_model("models:/hjcag-demo@champion", tmp_path / "store", features_config=sf.features_config(),
                        tracking_uri=uri)
    assert "Downloading artifacts" not in capfd.readouterr().err  # MLflow's bar, one per file, stays off
    record = read_archive_record(mar)
    assert record["model"] == "hjcag-demo" and record["version"] == "1" and record["registered_version"] == "1"
    assert record["source"] == "models:/hjcag-demo@champion"
    again = package_model("models:/hjcag-demo@champion", tmp_path / "elsewhere" / "store",
                          features_config=sf.features_config(), tracking_uri=uri)
    assert read_archive_record(again) == record  # the same model, the same bytes, in another folder


def _zip(path: Path, entries: list[tuple[str, bytes, tuple[int, ...]]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data, when in entries:
            z.writestr(zipfile.ZipInfo(name, date_time=when), data)  # type: ignore[arg-type]
    return path


def test_an_archive_is_normalised_to_its_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What torch-model-archiver varies from build to build: entry times and order, MANIFEST's createdOn."""
    def manifest(created: str) -> bytes:
        return json.dumps({"createdOn": created, "model": {"modelName": "hjcag"}}).encode()

    a = _zip(tmp_path / "a.mar", [("model.safetensors", b"w" * 100, (2026, 1, 2, 3, 4, 6)),
                                  ("hjcag/x.py", b"x = 1\n", (2026, 1, 2, 3, 4, 6)),
                                  (MANIFEST_ENTRY, manifest("02/01/2026 03:04:06"), (2026, 1, 2, 3, 4, 6))])
    b = _zip(tmp_path / "b.mar", [(MANIFEST_ENTRY, manifest("02/12/2026 11:49:04"), (2026, 12, 2, 11, 49, 4)),
                                  ("hjcag/x.py", b"x = 1\n", (2026, 12, 2, 11, 49, 2)),
                                  ("model.safetensors", b"w" * 100, (2026, 12, 2, 11, 49, 0))])
    assert a.read_bytes() != b.read_bytes()
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert normalise_archive(a).read_bytes() == normalise_archive(b).read_bytes()
    with zipfile.ZipFile(a) as z:
        assert z.namelist() == sorted(z.namelist()) and {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert json.loads(z.read(MANIFEST_ENTRY))["createdOn"] == "01/01/1980 00:00:00"
        assert z.read("model.safetensors") == b"w" * 100
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767323045")  # 2026-01-02 03:04:05 UTC
    with zipfile.ZipFile(normalise_archive(a)) as z:
        assert json.loads(z.read(MANIFEST_ENTRY))["createdOn"] == "02/01/2026 03:04:05"
        assert {i.date_time for i in z.infolist()} == {(2026, 1, 2, 3, 4, 4)}  # zip times are even seconds


def test_package_takes_the_extractor_config_from_params_under_the_runs_profile(run_dir: Path, tmp_path: Path) -> None:
    from hjcag.params import load_params

    mar = package_model(run_dir, tmp_path / "store", params_path=sf.ROOT / "params.yaml", version="7")
    with zipfile.ZipFile(mar) as z:
        features = json.loads(z.read("features.json"))
        serving = json.loads(z.read("serving.json"))
        media = json.loads(z.read("media.json"))
    assert media == dataclasses.asdict(load_params(sf.ROOT / "params.yaml", "demo").validation.media)
    expected = load_params(sf.ROOT / "params.yaml", "demo").features
    assert features["config"]["text_model"] == expected.text_model
    assert features["config"]["audio_set"] == expected.audio_set
    assert features["config"]["seq_len"] == sf.SEQ_LEN and features["config"]["cache_dir"] is None
    assert features["trained_with"] is None
    assert serving["version"] == "7" and read_archive_record(mar)["version"] == "7"


def test_features_meta_of_the_training_extraction_is_carried_and_accepted(run_dir: Path, tmp_path: Path,
                                                                          media: dict[str, Path]) -> None:
    """A real `extract_features` meta (same extractor config) goes into the archive, and the served predictor
    accepts raw input because its extractors describe themselves exactly as the training ones did."""
    import pandas as pd

    from hjcag.artifacts import features_meta_path as meta_path
    from hjcag.features.extract import extract_features

    manifest = pd.DataFrame([{"utterance_id": "u0", "label": "joy", "dialogue_id": "d0", "text": "hello there",
                              "video_path": str(media["mp4"]), "audio_path": None, "start_s": None, "end_s": None}])
    out = extract_features(manifest, sf.features_config(), "t,a,v", tmp_path / "features.npz")
    mar = package_model(run_dir, tmp_path / "store", features_config=sf.features_config(),
                        features_meta=meta_path(out))
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(mar) as z:
        z.extractall(unpacked)
    trained_with = json.loads((unpacked / "features.json").read_text())["trained_with"]
    assert trained_with["audio"]["feature_set"] == "eGeMAPSv02" and trained_with["text"]["fallback"] is True
    served = Predictor.load(unpacked)
    assert served.load_extractors() == {"text": "ok", "audio": "ok", "visual": "ok"}
    assert served.predict({"text": "hello there", "video": sf.b64(media["mp4"])})["gate"]["visual"] > 0
