"""Raw request media -> features: the feature extractors of one served model, built lazily and only when they
match the training features, and the staging of decoded text / wav / mp4 into files the extractors read.

A request whose media cannot be served gets a :class:`~hjcag.serve.request.RequestError` on it (a 4xx status and a
message saying what is wrong); a modality whose extractor cannot be served here is refused once and for all.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hjcag.errors import DataError, HjcagError
from hjcag.features.text_context import ContextText, recorded_text_context
from hjcag.params import MODALITIES, MODALITY_NAMES, MediaConfig
from hjcag.serve.request import Request, RequestError, SpokenTurn, media_error

if TYPE_CHECKING:
    from hjcag.features.extract import Extractor
    from hjcag.params import FeaturesConfig

log = logging.getLogger(__name__)

# Extractor description keys that do not change the features (compared between training and serving).
_NOT_IDENTITY = {"requested_model", "dim", "extracted", "cached", "failed", "seconds"}

# (modality, array, what) -> the (L, d) features of the request: RequestParser.aligned
Align = Callable[[str, np.ndarray, str], np.ndarray]


class _NoSoundTrack(Exception):
    """A clip's sound track is missing or does not decode: its audio is masked, not an error."""


class RawMedia:
    """The extractors of a model with `input_dims` (modality -> feature width), configured by `features_config`
    (None: raw input is refused), checked against `trained_with` (what the training features were extracted with)
    and `media` (what valid media is: validation's definition, see hjcag.features.media_rules).

    Safe to share between threads: extractors are built once under a lock and extraction is serialised (extractors
    are not assumed to be thread-safe).
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        features_config: FeaturesConfig | None,
        trained_with: Mapping[str, Mapping[str, Any]],
        media: MediaConfig,
    ) -> None:
        self.input_dims = dict(input_dims)
        self.modalities: tuple[str, ...] = tuple(m for m in MODALITIES if m in self.input_dims)
        self.features_config = features_config
        self.trained_with = {k: dict(v) for k, v in trained_with.items()}
        self.media = media
        self._extractors: dict[str, Extractor] = {}
        self._refused: dict[str, str] = {}  # modality -> why its raw input is refused
        self._build_lock = threading.Lock()
        self._extract_lock = threading.Lock()

    @property
    def refused(self) -> dict[str, str]:
        """{modality name: why raw input of it is refused}, for the modalities found unservable so far."""
        return {MODALITY_NAMES[m]: problem for m, problem in self._refused.items()}

    def load_extractors(self) -> dict[str, str]:
        """Build every extractor now; {modality name: "ok" | why raw input of that modality is refused}."""
        status: dict[str, str] = {}
        for m in self.modalities:
            try:
                self.extractor(m)
                status[MODALITY_NAMES[m]] = "ok"
            except RequestError as exc:
                status[MODALITY_NAMES[m]] = exc.message
        return status

    def extractor(self, m: str) -> Extractor:
        """The (lazily built) extractor of modality `m`; RequestError when raw `m` cannot be served."""
        with self._build_lock:
            if m in self._refused:
                raise RequestError(self._refused[m])
            if m in self._extractors:
                return self._extractors[m]
            problem, extractor = self._build(m)
            if problem is not None:
                log.warning("raw %s input disabled: %s", MODALITY_NAMES[m], problem)
                self._refused[m] = problem
                raise RequestError(problem)
            assert extractor is not None
            self._extractors[m] = extractor
            return extractor

    def extract(self, requests: Sequence[Request], aligned: Align) -> None:
        """Give each of `requests` (those with raw media) its features, aligned by `aligned`, or an error."""
        with self._extract_lock, tempfile.TemporaryDirectory(prefix="hjcag-serve-") as tmp:
            for i, request in enumerate(requests):
                self._stage(request, Path(tmp) / f"r{i}")
            self._extract(requests, aligned)

    def _build(self, m: str) -> tuple[str | None, Extractor | None]:
        name = MODALITY_NAMES[m]
        fallback = f"Send pre-extracted features as features.{name} instead."
        if self.features_config is None:
            return f"raw {name} cannot be served: the model has no feature-extractor configuration. {fallback}", None
        from hjcag.features.extract import build_extractor

        try:
            extractor = build_extractor(m, self.features_config)
        except HjcagError as exc:
            return f"raw {name} cannot be served: its extractor does not load here ({exc}). {fallback}", None
        info = extractor.describe()
        dim, expected = int(extractor.dim), self.input_dims[m]
        if dim != expected:
            return (f"raw {name} cannot be served by this model: the {name} extractor ({_summary(info)}) gives "
                    f"{dim}-dim features but the model expects {expected}; it was trained on other {name} features. "
                    f"{fallback}"), None
        trained = self.trained_with.get(name)
        if trained:
            if m == "t":  # a record without text_context read each utterance alone (recorded_text_context)
                info = {**info, "text_context": recorded_text_context(info)}
                trained = {**trained, "text_context": recorded_text_context(trained)}
            differ = sorted(k for k, v in info.items() if k not in _NOT_IDENTITY and k in trained and trained[k] != v)
            if differ:
                detail = "; ".join(f"{k}: trained {trained[k]!r}, serving {info[k]!r}" for k in differ)
                return (f"raw {name} cannot be served: the serving {name} extractor differs from the one the "
                        f"training features came from ({detail}). {fallback}"), None
        return None, extractor

    def _stage(self, request: Request, folder: Path) -> None:
        """Write decoded media to files (the extractors read files) and refuse media that validation would refuse
        (duration, sample rate, frames: the model's MediaConfig); a clip without a usable sound track gives no
        audio (masked) rather than an error."""
        from hjcag.features.media_io import MediaRef

        folder.mkdir(parents=True)
        written: dict[int, MediaRef] = {}
        for m, value in list(request.raw.items()):
            if not isinstance(value, bytes):
                continue
            key = id(value)
            if key not in written:  # video used for both visual and audio: one file
                path = folder / ("audio.wav" if m == "a" and not request.audio_from_video else "video.mp4")
                path.write_bytes(value)
                written[key] = MediaRef(path)
            try:
                request.error = self._invalid_media(m, written[key].path, m == "a" and request.audio_from_video)
            except _NoSoundTrack:
                log.info("video without a usable sound track: audio masked")
                del request.raw[m]
                continue
            if request.error is not None:
                return
            request.raw[m] = written[key]

    def _invalid_media(self, m: str, path: Path, track: bool) -> RequestError | None:
        """Why the media file `path` of modality `m` is not valid media, or None: the same probe and bounds as
        the pipeline's validation. `track`: `path` is a clip giving its sound track (raises _NoSoundTrack when
        it has none that decodes)."""
        from hjcag.features.media_rules import media_bounds, probe_audio, probe_video, probed_values

        cfg = self.media
        if m == "a":
            probe = probe_audio(path, cfg.full_decode)
        else:
            probe = probe_video(path, None, None, cfg.min_frames, cfg.full_decode)
        if probe.error is not None:
            if track:
                raise _NoSoundTrack(probe.error)
            return media_error(probe.error, path)
        what = "the video's sound track" if track else ("audio" if m == "a" else "video")
        values = probed_values(probe, m)
        for bound in media_bounds(cfg, m):
            value = values[bound.column]
            if value is None or not bound.violated_by(value):
                continue
            if bound.unit == "s" and bound.too_large(value):
                return RequestError(f"{what} lasts {value:.1f} s; the limit is {bound.high:g} s per utterance "
                                    f"(validation.media.max_duration_s of the model's params).", 413)
            return RequestError(f"{what}: {bound.explain(value)}. The pipeline's validation refuses such media, "
                                "so the model never saw any: send media within these bounds.")
        return None

    def _extract(self, requests: Sequence[Request], aligned: Align) -> None:
        """Run each modality's extractor once over the batch; a failing batch is retried item by item."""
        for m in MODALITIES:
            todo = [r for r in requests if r.error is None and m in r.raw]
            if not todo:
                continue
            extractor = self.extractor(m)
            try:
                values: list[np.ndarray | RequestError] = list(extractor.extract([r.raw[m] for r in todo]))
            except DataError:
                values = [_extract_one(extractor, r.raw[m]) for r in todo]
            for request, value in zip(todo, values, strict=True):
                if isinstance(value, RequestError):
                    if m == "a" and request.audio_from_video and "v" in request.raw:
                        log.info("video without a usable sound track: audio masked (%s)", value.message)
                    else:
                        request.error = value
                    continue
                try:
                    request.features[m] = aligned(m, value, f"{MODALITY_NAMES[m]} features extracted from the request")
                except RequestError as exc:
                    request.error = exc


def attach_spoken(request: Request, k: int) -> None:
    """Give `request` (and each of its turns sent as inputs) its raw text's encoder input: the text with the last
    `k` turns before it (from the last state sent, then the turns sent as inputs after it), and record the last k
    turns up to it (`request.spoken`, what its state carries). A turn without raw text adds its speaker alone."""
    history: list[SpokenTurn] = []
    for turn in request.turns:
        if turn.request is None:
            history = list(turn.spoken or ())
            continue
        history = _spoken_turn(turn.request, history, k)
    request.spoken = tuple(_spoken_turn(request, history, k))


def _spoken_turn(request: Request, history: list[SpokenTurn], k: int) -> list[SpokenTurn]:
    """`history` with `request` appended (its raw text wrapped with the turns before it), the last k kept."""
    text = request.raw.get("t")
    if isinstance(text, str):
        before = tuple((s, t) for s, t in history[-k:] if t is not None)
        request.raw["t"] = ContextText(text, request.speaker, before)
        request.text_turns = len(before)
    return [*history, (request.speaker, text if isinstance(text, str) else None)][-k:]


def _extract_one(extractor: Extractor, item: Any) -> np.ndarray | RequestError:
    try:
        return extractor.extract([item])[0]
    except DataError as exc:
        return media_error(exc, item.path) if hasattr(item, "path") else RequestError(str(exc))


def warn_text_context_mismatch(trained_with: Mapping[str, Mapping[str, Any]], config: FeaturesConfig,
                                reads_text: bool) -> None:
    """Say at packaging, not at the first request, that the archive will refuse raw text: its text features were
    read with another number of preceding turns than the serving config reads (RawMedia refuses it)."""
    trained = recorded_text_context(trained_with.get("text"))
    if reads_text and trained != config.text_context:
        log.warning("the archive will refuse raw text: the model's text features were read with %d preceding turn(s) "
                    "(features.text_context %d in their record) but the serving config reads %d. Package with the "
                    "training's profile or set features.text_context: %d; feature requests are served either way",
                    trained, trained, config.text_context, trained)


def _summary(info: Mapping[str, Any]) -> str:
    keys = ("model", "feature_set", "weights", "arch")
    return ", ".join(f"{k} {info[k]}" for k in keys if info.get(k) not in (None, {}, "")) or "configured"
