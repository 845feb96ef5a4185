"""Visual features: ResNet-50 (transformers ``ResNetModel``) on L frames sampled uniformly, 2048-d per frame.

Weights come from a local directory (``visual_weights_dir``) or a hub id (``visual_model``, default
microsoft/resnet-50). Offline with neither available, the network is built from the ResNet-50 configuration with
random (seeded) weights and the run says so loudly: such features carry no pretrained visual knowledge.
The 2048 -> 512 projection of the paper is the fusion model's input projection, not part of extraction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hjcag.errors import ConfigError
from hjcag.features.cache import dir_fingerprint
from hjcag.features.media_io import MediaRef, sample_frames, thread_map
from hjcag.features.pretrained import (
    PretrainedUnavailable,
    announce,
    inference_mode,
    load_pretrained,
    new_head_weights,
    resolve_device,
    without_load_report,
)

log = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# microsoft/resnet-50's architecture, so the network can be built without the hub.
RESNET50_ARCH: dict[str, Any] = {
    "depths": [3, 4, 6, 3],
    "hidden_sizes": [256, 512, 1024, 2048],
    "layer_type": "bottleneck",
    "embedding_size": 64,
}


def load_resnet(
    model: str = "microsoft/resnet-50",
    weights_dir: str | None = None,
    arch: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """The ResNet and a description of where its weights came from (used in cache keys and run metadata).

    `arch` replaces the ResNet-50 configuration with a custom (e.g. smaller) one; its weights are then random.
    """
    from transformers import ResNetConfig, ResNetModel

    if weights_dir is not None and not Path(weights_dir).expanduser().is_dir():
        raise ConfigError(
            f"features.visual_weights_dir '{weights_dir}' is not a directory. Point it at a saved ResNetModel "
            f"(config.json + weights), or set it to null to use features.visual_model."
        )
    if arch is None:
        source = weights_dir or model
        try:
            with without_load_report():  # a classifier checkpoint's head, read as a bare ResNet, is no news
                (net, loading_info), _ = load_pretrained(ResNetModel.from_pretrained, source, output_loading_info=True)
            # for its warning only: a bare ResNetModel has no head, so the list it returns is empty
            new_head_weights(net, loading_info, source, "features.visual_weights_dir" if weights_dir else
                             "features.visual_model")
            identity = f"local:{dir_fingerprint(Path(source).expanduser())}" if weights_dir else f"hub:{model}"
            return net, {"weights": identity, "pretrained": True}
        except PretrainedUnavailable as exc:
            announce(
                f"visual model {exc}; using RANDOMLY INITIALISED ResNet-50 weights (seed {seed}). Visual "
                f"features will carry no pretrained knowledge. Set features.visual_weights_dir to a local copy "
                f"of {model} to use real weights."
            )
    torch.manual_seed(seed)
    config = ResNetConfig(**{**RESNET50_ARCH, **dict(arch or {})})
    return ResNetModel(config), {"weights": f"random:{seed}", "pretrained": False, "arch": dict(arch or {})}


class VisualExtractor:
    """(MediaRef) -> (L, d) pooled ResNet features of L frames sampled uniformly in the clip or span.

    `frames` < L decodes and embeds only that many frames (a speed knob for CPUs); step j of L then takes frame
    floor(j * frames / L), as if the clip had been sampled at a lower frame rate.
    """

    modality = "v"
    namespace = "visual"

    def __init__(
        self,
        model: str = "microsoft/resnet-50",
        weights_dir: str | None = None,
        seq_len: int = 30,
        batch_size: int = 4,
        image_size: int = 224,
        device: str = "auto",
        arch: Mapping[str, Any] | None = None,
        seed: int = 0,
        workers: int = 1,
        frames: int | None = None,
    ) -> None:
        self.seq_len = seq_len
        self.n_frames = min(frames or seq_len, seq_len)
        self.workers = max(1, workers)
        self.batch_size = batch_size
        self.image_size = image_size
        self.device = resolve_device(device)
        net, self.weights = load_resnet(model, weights_dir, arch, seed)
        self.net = net.to(self.device).eval()
        self.requested = weights_dir or model
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @property
    def dim(self) -> int:
        return int(self.net.config.hidden_sizes[-1])

    def describe(self) -> dict[str, Any]:
        return {
            **self.weights,
            "requested_model": self.requested,
            "steps": self.seq_len,
            "frames": self.n_frames,
            "image_size": self.image_size,
            "sampling": "uniform-centres",
            "resize": "full-frame",
            "normalise": "imagenet",
        }

    def cache_config(self) -> dict[str, Any]:
        return {"extractor": "resnet", **{k: v for k, v in self.describe().items() if k != "requested_model"}}

    def content_hash(self, item: MediaRef) -> str:
        return item.content_hash()

    def frames(self, item: MediaRef) -> np.ndarray:
        return sample_frames(item.path, self.n_frames, item.start_s, item.end_s, size=self.image_size)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """(F, H, W, 3) uint8 -> (F, d) float32 pooled features."""
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - self._mean) / self._std
        with inference_mode(self.device):
            pooled = self.net(pixel_values=x).pooler_output
        return pooled.float().flatten(1).cpu().numpy()

    def extract(self, items: Sequence[MediaRef]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for lo in range(0, len(items), self.batch_size):
            chunk = items[lo : lo + self.batch_size]
            # PyAV decodes without the GIL: threads keep the GPU fed with frames.
            clips = thread_map(self.frames, chunk, self.workers)
            feats = self.embed(np.concatenate(clips))
            out.extend(np.split(feats, len(clips)))
        if self.n_frames < self.seq_len:
            steps = (np.arange(self.seq_len) * self.n_frames) // self.seq_len
            out = [f[steps] for f in out]
        return [np.ascontiguousarray(f, dtype=np.float32) for f in out]
