"""Feature extractors on tiny real media written with PyAV: decode helpers, openSMILE, the MiniLM fallback,
ResNet features, the per-utterance cache (hits, resume after interruption) and the .npz output."""

from __future__ import annotations

import fractions
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import pytest
import torch

from hjcag import stages
from hjcag.artifacts import features_meta_path as meta_path
from hjcag.artifacts import features_run_path as run_stats_path
from hjcag.data.features_file import load_features
from hjcag.data.manifest import manifest_frame
from hjcag.errors import ConfigError, DataError
from hjcag.features import text as text_module
from hjcag.features.audio import AudioExtractor
from hjcag.features.cache import FeatureCache, cache_key
from hjcag.features.extract import extract_features
from hjcag.features.media_io import MediaRef, load_audio, media_duration, sample_frames
from hjcag.features.text import TextExtractor, finetune_text_encoder
from hjcag.features.visual import VisualExtractor
from hjcag.params import FeaturesConfig, params_from_dict

SR = 16_000
FPS = 24
TINY_ARCH = {"depths": [1, 1], "hidden_sizes": [16, 32], "embedding_size": 8}
NO_MODEL = "hjcag-tests/no-such-model"  # never in any cache: forces the offline fallback


# ----------------------------------------------------------------------------------------------- media


def _tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _encode_audio(container: Any, stream: Any, signal: np.ndarray) -> None:
    for lo in range(0, len(signal), 1024):
        frame = av.AudioFrame.from_ndarray(signal[None, lo : lo + 1024], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SR, lo, fractions.Fraction(1, SR)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_wav(path: Path, seconds: float, freq: float = 220.0) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=SR)
        stream.layout = "mono"
        _encode_audio(container, stream, _tone(seconds, freq))
    return path


def write_clip(path: Path, seconds: float, freq: float = 330.0, audio: bool = True) -> Path:
    """An h264 + AAC mp4 whose frame i has brightness 3 * i (so sampling positions can be checked)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        astream = container.add_stream("aac", rate=SR) if audio else None
        if astream is not None:
            astream.layout = "mono"
        for i in range(round(seconds * FPS)):
            img = np.full((48, 64, 3), 3 * i, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if astream is not None:
            _encode_audio(container, astream, _tone(seconds, freq))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    return {
        "clip0": write_clip(root / "dia0_utt0.mp4", 1.0, 300.0),
        "clip1": write_clip(root / "dia0_utt1.mp4", 1.3, 500.0),
        "dialog": write_clip(root / "Ses01F_impro01.mp4", 3.0, 250.0, audio=False),
        "wav": write_wav(root / "Ses01F_impro01_F000.wav", 0.8),
    }


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the hub unreachable whatever the machine's network (the code must not try to download)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_audio_from_clip_is_trimmed_to_true_duration_and_span_cut(media: dict[str, Path]) -> None:
    signal = load_audio(media["clip1"])
    assert signal.dtype == np.float32 and signal.ndim == 1
    assert len(signal) == round(1.3 * SR)  # AAC padding removed
    assert len(load_audio(media["wav"])) == round(0.8 * SR)
    assert len(load_audio(media["clip1"], 0.2, 0.7)) == round(0.5 * SR)
    # the span is cut from the right place: the 500 Hz tone's zero crossings rate over the cut
    cut = load_audio(media["clip1"], 0.2, 0.7)
    crossings = np.count_nonzero(np.diff(np.signbit(cut)))
    assert abs(crossings / 0.5 / 2 - 500) < 25


def test_frames_are_sampled_uniformly_in_clip_and_span(media: dict[str, Path]) -> None:
    frames = sample_frames(media["clip1"], 4, size=32)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    brightness = frames.mean(axis=(1, 2, 3))
    assert np.all(np.diff(brightness) > 0)  # later frames are brighter
    # span [1, 2] s of the 3 s dialog video: targets at 1.125 .. 1.875 s -> frames 27 .. 45
    span = sample_frames(media["dialog"], 4, 1.0, 2.0, size=32).mean(axis=(1, 2, 3))
    whole = sample_frames(media["dialog"], 4, size=32).mean(axis=(1, 2, 3))
    assert np.all(np.diff(span) > 0) and span[0] > whole[0] and span[-1] < whole[-1]
    assert sample_frames(media["clip0"], 40, size=16).shape[0] == 40  # fewer frames than targets: repeats
    assert media_duration(media["dialog"]) == pytest.approx(3.0, abs=0.05)


def test_bad_media_raise_data_errors(media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"span starts at 5\.000 s"):
        sample_frames(media["clip0"], 2, 5.0, 6.0)
    with pytest.raises(DataError, match="no audio stream"):
        load_audio(media["dialog"])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError, match=r"junk\.mp4"):
        sample_frames(junk, 2)
    with pytest.raises(DataError, match="not found"):
        load_audio(tmp_path / "missing.wav")


# ----------------------------------------------------------------------------------------------- cache


def test_cache_roundtrip_is_atomic_and_ignores_damaged_entries(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    key = cache_key("abc", {"model": "m", "L": 4})
    assert key != cache_key("abc", {"model": "m", "L": 5}) and cache.get("text", key) is None
    cache.put("text", key, np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(cache.get("text", key), np.arange(6).reshape(2, 3))
    assert not list(tmp_path.rglob(".tmp-*"))
    next(tmp_path.rglob(f"{key}.npy")).write_bytes(b"truncated")
    assert cache.get("text", key) is None
    assert FeatureCache(None).get("text", key) is None


# ------------------------------------------------------------------------------------------- extractors


@pytest.fixture(scope="module")
def minilm() -> TextExtractor:
    from huggingface_hub import constants

    saved, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        return TextExtractor(NO_MODEL, seq_len=4, batch_size=2, device="cpu")
    finally:
        constants.HF_HUB_OFFLINE = saved


def test_text_falls_back_loudly_to_minilm(offline: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        extractor = TextExtractor(NO_MODEL, seq_len=4, device="cpu")
    assert extractor.source.fallback and extractor.dim == 384
    assert [r.levelname for r in caplog.records if "FALLING BACK" in r.getMessage()] == ["WARNING"]  # said once
    with pytest.raises(ConfigError, match="text_fallback"):
        TextExtractor(NO_MODEL, fallback="none", device="cpu")


def test_loading_an_encoder_says_in_one_line_what_it_lacks(offline: None, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    """transformers' load report (a colour-coded table, 'MISSING' for the head fine-tuning is about to train) is not
    shown; a new head is expected and named, a checkpoint that lacks weights of the encoder itself is said loudly."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoModelForSequenceClassification

    from hjcag.features.text import resolve_text_encoder

    source, _ = resolve_text_encoder(NO_MODEL, "minilm")
    caplog.clear()  # the fallback's own warning
    with caplog.at_level(logging.WARNING, logger="hjcag"):
        _, head = source.load_model(AutoModelForSequenceClassification.from_pretrained, num_labels=3)
    assert head == ["classifier.bias", "classifier.weight"]
    assert not [r for r in caplog.records if r.name.startswith("hjcag")]  # nothing of the encoder's own is missing
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "not sharded" not in err  # (the latter: a logger level set to quiet it)

    damaged = tmp_path / "damaged"
    shutil.copytree(source.source, damaged)
    weights = load_file(damaged / "model.safetensors")
    # no pooler is no loss (features are token states; RoBERTa and MPNet fine-tuned for classification have none)
    save_file({k: v for k, v in weights.items() if "pooler" not in k}, damaged / "model.safetensors")
    no_pooler, _ = resolve_text_encoder(str(damaged), "minilm")
    caplog.clear()
    no_pooler.load_model(AutoModel.from_pretrained)
    assert not [r for r in caplog.records if r.name.startswith("hjcag")]
    lost = sorted(k for k in weights if ".layer.0.attention.self.query." in k)
    save_file({k: v for k, v in weights.items() if k not in lost}, damaged / "model.safetensors")
    broken, _ = resolve_text_encoder(str(damaged), "minilm")
    with caplog.at_level(logging.WARNING, logger="hjcag"):
        _, head = broken.load_model(AutoModel.from_pretrained)
    assert head == []
    [warning] = [r.getMessage() for r in caplog.records if "lacks" in r.getMessage()]
    assert f"lacks {len(lost)} weight(s) of the encoder itself" in warning and str(damaged) in warning
    assert "LOAD REPORT" not in capfd.readouterr().err


def test_text_states_are_cropped_to_L_with_cls_first(minilm: TextExtractor) -> None:
    long_text, short_text = "I really cannot believe you did that again today", "Okay."
    out = minilm.extract([long_text, short_text, long_text])
    assert [o.shape for o in out] == [(4, 384), (4, 384), (4, 384)]  # "okay ." = [CLS] okay . [SEP]
    assert all(np.isfinite(o).all() for o in out)
    np.testing.assert_allclose(out[0], out[2], atol=1e-5)  # padding in the batch does not change states
    assert not np.allclose(out[0][0], out[1][0])
    assert minilm.extract(["Hi"])[0].shape == (3, 384)  # [CLS] hi [SEP]: shorter than L, padded later


def test_opensmile_sets_have_their_dimensions(media: dict[str, Path]) -> None:
    for feature_set, dim in (("IS10_paraling", 1582), ("eGeMAPSv02", 88)):
        extractor = AudioExtractor(feature_set)
        out = extractor.extract([MediaRef(media["wav"]), MediaRef(media["clip0"])])
        assert extractor.dim == dim and [o.shape for o in out] == [(dim,), (dim,)]
        assert all(np.isfinite(o).all() for o in out) and not np.allclose(out[0], out[1])
    threaded = AudioExtractor("eGeMAPSv02", workers=2).extract([MediaRef(media["wav"]), MediaRef(media["clip0"])])
    np.testing.assert_array_equal(np.stack(threaded), np.stack(out))
    short = AudioExtractor("eGeMAPSv02").features_of_signal(np.zeros(400, np.float32) + 0.01 * _tone(0.025, 200))
    assert np.isfinite(short).all()
    with pytest.raises(ConfigError, match="audio_set"):
        AudioExtractor("IS99")


def test_resnet50_offline_is_random_with_a_warning(offline: None, media: dict[str, Path],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        extractor = VisualExtractor(NO_MODEL, seq_len=2, device="cpu")
    assert [r.levelname for r in caplog.records if "RANDOMLY INITIALISED" in r.getMessage()] == ["WARNING"]
    assert extractor.weights["pretrained"] is False
    out = extractor.extract([MediaRef(media["clip0"])])
    assert out[0].shape == (2, 2048) and np.isfinite(out[0]).all()
    with pytest.raises(ConfigError, match="visual_weights_dir"):
        VisualExtractor(weights_dir="/no/such/dir", seq_len=2, device="cpu")


def test_a_saved_image_classifier_loads_as_the_visual_encoder_without_a_load_report(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    """What a user downloads (microsoft/resnet-50 is an image classifier) has a head the bare ResNet does not read:
    no news, so nothing is said; a checkpoint lacking the ResNet's own weights is said loudly."""
    from safetensors.torch import load_file, save_file
    from transformers import ResNetConfig, ResNetForImageClassification

    from hjcag.features.visual import RESNET50_ARCH, load_resnet

    torch.manual_seed(0)
    saved = tmp_path / "resnet"
    ResNetForImageClassification(ResNetConfig(**{**RESNET50_ARCH, **TINY_ARCH}, num_labels=3)).save_pretrained(saved)
    with caplog.at_level(logging.WARNING, logger="hjcag"):
        _, weights = load_resnet(weights_dir=str(saved))
    assert weights["pretrained"] is True and not [r for r in caplog.records if r.name.startswith("hjcag")]
    assert "LOAD REPORT" not in capfd.readouterr().err

    tensors = load_file(saved / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if "embedder" not in k}, saved / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="hjcag"):
        load_resnet(weights_dir=str(saved))
    [warning] = [r.getMessage() for r in caplog.records if "lacks" in r.getMessage()]
    assert "of the encoder itself" in warning and "features.visual_weights_dir" in warning
    assert "LOAD REPORT" not in capfd.readouterr().err


def test_fewer_visual_frames_are_repeated_to_L(media: dict[str, Path]) -> None:
    full = VisualExtractor(NO_MODEL, seq_len=4, device="cpu", arch=TINY_ARCH)
    fast = VisualExtractor(NO_MODEL, seq_len=4, device="cpu", arch=TINY_ARCH, frames=2)
    out = fast.extract([MediaRef(media["clip1"])])[0]
    assert out.shape == (4, 32) and np.allclose(out[0], out[1]) and np.allclose(out[2], out[3])
    assert not np.allclose(out[1], out[2])
    assert fast.cache_config() != full.cache_config()


def test_resnet_weights_load_from_a_local_directory(media: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from transformers import ResNetConfig, ResNetModel

    from hjcag.features.visual import RESNET50_ARCH

    torch.manual_seed(3)
    saved = ResNetModel(ResNetConfig(**{**RESNET50_ARCH, **TINY_ARCH})).eval()
    saved.save_pretrained(tmp_path / "resnet")
    extractor = VisualExtractor(weights_dir=str(tmp_path / "resnet"), seq_len=3, device="cpu")
    assert extractor.weights["pretrained"] is True and extractor.weights["weights"].startswith("local:")
    frames = extractor.frames(MediaRef(media["clip1"]))
    np.testing.assert_allclose(extractor.extract([MediaRef(media["clip1"])])[0],
                               extractor.embed(frames), atol=1e-5)
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(
        1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = saved(pixel_values=x).pooler_output.flatten(1).numpy()
    np.testing.assert_allclose(extractor.embed(frames), expected, atol=1e-4)


# ------------------------------------------------------------------------------------------ orchestration


class Counting:
    """Wraps a real extractor and counts the items it is asked to extract; optionally stops after `stop_after`
    calls (an interrupted run)."""

    def __init__(self, inner: Any, stop_after: int | None = None) -> None:
        self.inner, self.items, self.calls, self.stop_after = inner, 0, 0, stop_after

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def extract(self, items: Sequence[Any]) -> list[np.ndarray]:
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.items += len(items)
        return self.inner.extract(items)


def _manifest(media: dict[str, Path]) -> pd.DataFrame:
    """Two MELD-style clips (audio from the clip itself) and one IEMOCAP-style turn (own wav, span in the dialog
    video), in the normalised manifest schema; media paths relative to the media folder."""
    rows = [
        {"utterance_id": "dia0_utt0", "dialogue_id": "dia0", "speaker": "Joey", "label": "joy",
         "text": "Oh my God, you got the tickets!", "audio_path": media["clip0"].name,
         "video_path": media["clip0"].name, "split": "train", "dataset": "meld"},
        {"utterance_id": "dia0_utt1", "dialogue_id": "dia0", "speaker": "Ross", "label": "neutral", "text": "Yeah.",
         "audio_path": None, "video_path": media["clip1"].name, "split": "dev", "dataset": "meld"},
        {"utterance_id": "Ses01F_impro01_F000", "dialogue_id": "Ses01F_impro01", "session": "Session1",
         "speaker": "Ses01F", "label": "sadness", "text": "I don't know what to say.",
         "audio_path": media["wav"].name, "video_path": media["dialog"].name, "start_s": 1.0, "end_s": 1.8,
         "split": "test", "dataset": "iemocap"},
    ]
    return manifest_frame(rows)


def _config(tmp_path: Path, **changes: Any) -> FeaturesConfig:
    return FeaturesConfig(text_model=NO_MODEL, audio_set="eGeMAPSv02", visual_arch=TINY_ARCH, seq_len=4,
                          device="cpu", cache_dir=str(tmp_path / "cache"), progress=False, **changes)


def test_extract_features_writes_npz_and_rerun_hits_cache(offline: None, media: dict[str, Path], tmp_path: Path,
                                                          minilm: TextExtractor) -> None:
    manifest, config = _manifest(media), _config(tmp_path)
    out = extract_features(manifest, config, "t,a,v", tmp_path / "features.npz", media_root=media["wav"].parent)
    fs = load_features(out, seq_len=4)
    assert fs.dims == {"t": 384, "a": 88, "v": 32} and len(fs) == 3
    assert all(np.isfinite(x).all() for x in fs.features.values())
    assert fs.group.tolist() == ["dia0", "dia0", "Ses01F_impro01"] and fs.split.tolist() == ["train", "dev", "test"]
    assert not np.allclose(fs.features["a"][0], fs.features["a"][2])
    meta = json.loads(meta_path(out).read_text())
    assert meta["modalities"]["text"]["fallback"] is True
    stats = json.loads(run_stats_path(out).read_text())
    assert {m: (stats[m]["extracted"], stats[m]["cached"]) for m in ("text", "audio", "visual")} == {
        "text": (3, 0), "audio": (3, 0), "visual": (3, 0)}

    # a re-run extracts nothing: every extractor call is counted
    counting = {"t": Counting(minilm), "a": Counting(AudioExtractor("eGeMAPSv02")),
                "v": Counting(VisualExtractor(config.visual_model, seq_len=4, device="cpu", arch=TINY_ARCH))}
    again = extract_features(manifest, config, "t,a,v", tmp_path / "again.npz", media_root=media["wav"].parent,
                             extractors=counting)  # type: ignore[arg-type]
    assert [c.items for c in counting.values()] == [0, 0, 0]
    fs2 = load_features(again, seq_len=4)
    for m in "tav":
        np.testing.assert_allclose(fs2.features[m], fs.features[m], atol=1e-5)
    # what extracted them is recorded identically (a pipeline depending on it need not re-run); how it went is not
    assert meta_path(again).read_bytes() == meta_path(out).read_bytes()
    assert {m: s["cached"] for m, s in json.loads(run_stats_path(again).read_text()).items()} == {
        "text": 3, "audio": 3, "visual": 3}


def test_interrupted_run_resumes_without_redoing_work(media: dict[str, Path], tmp_path: Path) -> None:
    manifest = _manifest(media)
    config = _config(tmp_path, audio_batch_size=1)
    root = media["wav"].parent
    first = Counting(AudioExtractor("eGeMAPSv02"), stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        extract_features(manifest, config, "a", tmp_path / "a.npz", media_root=root, extractors={"a": first})
    assert first.items == 2 and not (tmp_path / "a.npz").exists()
    second = Counting(AudioExtractor("eGeMAPSv02"))
    extract_features(manifest, config, "a", tmp_path / "a.npz", media_root=root, extractors={"a": second})
    assert second.items == 1  # only the utterance the interrupted run had not reached
    # a different feature set is a different cache entry
    third = Counting(AudioExtractor("IS10_paraling"))
    extract_features(manifest, config.replace(audio_set="IS10_paraling"), "a", tmp_path / "b.npz",
                     media_root=root, extractors={"a": third})
    assert third.items == 3 and load_features(tmp_path / "b.npz", seq_len=4).dims == {"a": 1582}


def test_session_grouping_and_text_only_needs_no_media(media: dict[str, Path], tmp_path: Path,
                                                       minilm: TextExtractor) -> None:
    manifest = _manifest(media).drop(columns=["audio_path", "video_path"])
    manifest["session"] = ["Session1", "Session1", "Session2"]
    out = extract_features(manifest, _config(tmp_path, group_by="session"), "t", tmp_path / "t.npz",
                           extractors={"t": minilm})
    fs = load_features(out, seq_len=4)
    assert fs.group.tolist() == ["Session1", "Session1", "Session2"] and fs.modalities == ("t",)


def test_missing_and_undecodable_media_are_listed(media: dict[str, Path], tmp_path: Path) -> None:
    duplicated = _manifest(media)
    duplicated.loc[1, "utterance_id"] = "dia0_utt0"
    with pytest.raises(DataError, match="dia0_utt0"):
        extract_features(duplicated, _config(tmp_path), "t", tmp_path / "x.npz")
    manifest = _manifest(media)
    manifest.loc[1, "video_path"] = "no_such_clip.mp4"
    manifest.loc[2, "audio_path"] = None
    manifest.loc[2, "video_path"] = None
    manifest.loc[0, "audio_path"] = None  # falls back to the clip's own track: still fine
    with pytest.raises(DataError) as err:
        extract_features(manifest, _config(tmp_path), "a,v", tmp_path / "x.npz", media_root=media["wav"].parent)
    message = str(err.value)
    assert "dia0_utt1" in message and "no_such_clip.mp4 not found" in message
    assert "Ses01F_impro01_F000: no audio_path or video_path" in message and "dia0_utt0" not in message

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 50)
    manifest = _manifest(media)
    manifest.loc[0, ["audio_path", "video_path"]] = str(junk)
    counting = Counting(AudioExtractor("eGeMAPSv02"))
    with pytest.raises(DataError, match=r"1 utterance\(s\) could not be decoded[\s\S]*dia0_utt0"):
        extract_features(manifest, _config(tmp_path), "a", tmp_path / "x.npz", media_root=media["wav"].parent,
                         extractors={"a": counting})
    retry = Counting(AudioExtractor("eGeMAPSv02"))
    manifest.loc[0, ["audio_path", "video_path"]] = media["clip0"].name  # fixed: only that utterance is extracted now
    extract_features(manifest, _config(tmp_path), "a", tmp_path / "x.npz", media_root=media["wav"].parent,
                     extractors={"a": retry})
    assert retry.items == 1


def test_config_from_params() -> None:
    params = params_from_dict({"seed": 7, "model": {"seq_len": 12},
                               "features": {"audio_set": "eGeMAPSv02", "finetune": {"lr": 1e-5, "repeats": 1}}})
    config = params.features
    assert (config.seq_len, config.seed, config.audio_set, config.finetune_lr, config.finetune_repeats) == (
        12, 7, "eGeMAPSv02", 1e-5, 1)
    with pytest.raises(ConfigError, match="unknown key"):
        FeaturesConfig.from_dict({"text_modle": "x"})
    with pytest.raises(ConfigError, match="group_by"):
        FeaturesConfig.from_dict({"group_by": "speaker"})


@pytest.mark.slow
def test_finetune_text_encoder_runs_and_its_output_extracts(offline: None, tmp_path: Path) -> None:
    texts = ["I love this!", "This is awful.", "Great news, thanks!", "I hate waiting.", "Wonderful day.",
             "Terrible, just terrible.", "So happy for you.", "That makes me angry."]
    labels = ["joy", "anger"] * 4
    manifest = pd.DataFrame({"utterance_id": [f"u{i}" for i in range(8)], "text": texts, "label": labels,
                             "split": ["train"] * 6 + ["dev", "test"]})
    config = FeaturesConfig(text_model=NO_MODEL, device="cpu", finetune_repeats=1, finetune_batch_size=4,
                            finetune_epochs=1, finetune_max_steps=2)
    out = finetune_text_encoder(manifest, config, tmp_path / "ft")
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["labels"] == ["anger", "joy"] and summary["dev_rows"] == 1 and summary["train_rows"] == 6
    assert summary["select"] == "val_loss" and np.isfinite(summary["best"]["val_loss"])
    assert 0.0 <= summary["history"][0]["val_weighted_f1"] <= 1.0
    tuned = TextExtractor(str(out), seq_len=4, device="cpu")
    assert not tuned.source.fallback and tuned.source.identity.startswith("local:")
    assert tuned.extract(["I love this!"])[0].shape == (4, 384)
    with pytest.raises(DataError, match="split"):
        finetune_text_encoder(manifest.drop(columns=["split"]), config, tmp_path / "ft2")

    # leak guard: its features may be trained on under the holdout protocol only
    manifest["dialogue_id"] = [f"d{i}" for i in range(8)]
    features = extract_features(manifest, config.replace(text_model=str(out), seq_len=4, cache_dir=None), "t",
                                tmp_path / "tuned.npz")
    assert json.loads(meta_path(features).read_text())["modalities"]["text"]["finetuned"]["train_rows"] == 6
    cv5 = params_from_dict({"model": {"seq_len": 4}, "train": {"protocol": "cv5"}})
    copied = Path(shutil.copy(features, tmp_path / "copied.npz"))  # the mark travels inside the file
    fs = stages.load_features(copied, cv5)
    assert fs.text_finetuned is not None and fs.text_finetuned["train_rows"] == 6
    with pytest.raises(ConfigError, match="fine-tuned on the dataset's train rows"):
        stages.refuse_leaks(copied, fs, cv5, ("t",))
    stages.refuse_leaks(copied, fs, cv5.with_overrides(train={"protocol": "holdout"}), ("t",))


@pytest.mark.parametrize(("select", "epochs_run", "kept"), [("val_loss", 3, 1), ("val_weighted_f1", 2, 0)])
def test_finetune_select_picks_the_epoch_and_drives_the_patience(
    offline: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, select: str, epochs_run: int, kept: int
) -> None:
    """Dev scores are prescribed, so the outcome is certain: epoch 1 has the lowest loss but a lower weighted F1
    than epoch 0, so loss keeps epoch 1 (and stops after epoch 2, worse), weighted F1 keeps epoch 0 and stops
    after epoch 1 (patience 1)."""
    scores = iter([{"val_loss": 1.0, "val_weighted_f1": 0.5}, {"val_loss": 0.9, "val_weighted_f1": 0.4},
                   {"val_loss": 1.1, "val_weighted_f1": 0.3}, {"val_loss": 1.2, "val_weighted_f1": 0.2}])
    monkeypatch.setattr(text_module, "_validation_scores", lambda *args: next(scores))
    manifest = pd.DataFrame({"utterance_id": ["u0", "u1", "u2", "u3"], "text": ["yes", "no", "fine", "bad"],
                             "label": ["joy", "anger"] * 2, "split": ["train", "train", "dev", "test"]})
    config = FeaturesConfig(text_model=NO_MODEL, device="cpu", finetune_repeats=1, finetune_batch_size=2,
                            finetune_epochs=4, finetune_patience=1, finetune_select=select)
    summary = json.loads((finetune_text_encoder(manifest, config, tmp_path / "ft") / "finetune.json").read_text())
    assert summary["select"] == select and len(summary["history"]) == epochs_run
    assert summary["best"] == summary["history"][kept]
    with pytest.raises(ConfigError, match="select"):
        FeaturesConfig.from_dict({"finetune": {"select": "accuracy"}})
