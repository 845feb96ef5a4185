"""The in-process twin of :class:`hjcag.client.http.Client`: the same requests answered by a
:class:`~hjcag.serve.predictor.Predictor` in this process, no server. It loads what ``--model`` names: a ``.mar``
archive (unpacked to a temporary folder, as TorchServe unpacks it), an unpacked serving bundle, or a training run
directory (with the feature-extractor config and media bounds that `hjcag package` would put in its archive)."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hjcag.artifacts import FEATURES_FILE, MODEL_CONFIG_FILE, SERVING_FILE, features_meta_path, read_json
from hjcag.client.body import request_json
from hjcag.client.conversation import Answer, DialogueClient, EndpointError
from hjcag.errors import HjcagError
from hjcag.serve.predictor import Predictor
from hjcag.serve.request import RequestError


class LocalClient(DialogueClient):
    """Answers through `predictor`, exactly as the endpoint serving the same model does (the request goes in as the
    JSON text TorchServe hands the handler); a refusal is the same :class:`EndpointError` with the same status."""

    def __init__(self, predictor: Predictor, keep: Any = None) -> None:
        """`keep`: what must live as long as the client (the unpacked archive's temporary folder)."""
        super().__init__(predictor.sent_turns)
        self.predictor = predictor
        self._keep = keep

    @classmethod
    def load(cls, path: str | Path, params_path: str | Path | None = "params.yaml",
             profile: str | None = None) -> LocalClient:
        """From a ``.mar``, a serving bundle folder or a run directory (whose raw inputs are extracted with the
        ``features:`` of `params_path` under the run's profile, as `hjcag package` does)."""
        path = Path(path)
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise HjcagError(f"'{path}' is not a model archive (.mar, a zip file written by `hjcag package`).")
            folder = tempfile.TemporaryDirectory(prefix="hjcag-model-")
            with zipfile.ZipFile(path) as archive:
                archive.extractall(folder.name)
            if not (Path(folder.name) / SERVING_FILE).exists():
                folder.cleanup()
                raise HjcagError(f"'{path}' holds no {SERVING_FILE}: it is not an archive written by `hjcag package`.")
            return cls(Predictor.load(folder.name), keep=folder)
        if not path.is_dir():
            raise HjcagError(f"model '{path}' not found; pass a .mar archive (`hjcag package`) or a run directory.")
        if (path / MODEL_CONFIG_FILE).exists() and not (path / SERVING_FILE).exists():
            return cls(run_predictor(path, params_path, profile))
        return cls(Predictor.load(path))

    def close(self) -> None:
        if isinstance(self._keep, tempfile.TemporaryDirectory):
            self._keep.cleanup()

    def answer(self, body: Mapping[str, Any]) -> Answer:
        try:
            return self.predictor.predict(request_json(body))
        except RequestError as exc:
            raise EndpointError(f"the model answered {exc.status}: {exc.message}", exc.status, exc.message) from None


def run_predictor(run_dir: Path, params_path: str | Path | None, profile: str | None) -> Predictor:
    """A run directory's default model with what its archive would carry: the extractor config and media bounds of
    the run's params, and what the training features were extracted with (when the run records it)."""
    from hjcag.serve.package import default_features_config, default_media_config, read_features_meta, run_params

    doc = read_json(run_dir / MODEL_CONFIG_FILE)
    params = run_params(run_dir, params_path, profile)
    config = default_features_config(params, int(doc["seq_len"])).replace(cache_dir=None, progress=False)
    meta = features_meta_path(run_dir / FEATURES_FILE)
    trained_with = read_features_meta(meta, doc) if meta.exists() else None
    return Predictor.from_run(run_dir, features_config=config, trained_with=trained_with,
                              media=default_media_config(params))
