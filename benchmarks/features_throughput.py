"""Feature-extraction throughput on this machine's device: utterances/s per extractor, openSMILE's real-time factor.

Generates MELD-like clips (h264 video + AAC audio, --size, --seconds each) with PyAV, then times each extractor
on them with the cache off and models already loaded (loading is reported separately):

- text: the configured text model (RoBERTa-large, or the MiniLM fallback offline) on sentences of ~15 words;
- audio: decode the clip's track to 16 kHz mono + openSMILE functionals; the real-time factor is seconds of
  audio per second of compute (openSMILE alone, and decode + openSMILE);
- visual: decode L frames sampled uniformly + ResNet-50 (random weights offline: same speed).

    python benchmarks/features_throughput.py                     # auto device (CUDA when present)
    python benchmarks/features_throughput.py --clips 64 --visual-clips 32 --device cuda --results out.json
"""

from __future__ import annotations

import argparse
import fractions
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import results_file
import torch

from hjcag.features.audio import AudioExtractor
from hjcag.features.media_io import SAMPLE_RATE, MediaRef, load_audio, sample_frames
from hjcag.features.pretrained import resolve_device
from hjcag.features.text import TextExtractor
from hjcag.features.visual import VisualExtractor

SENTENCE = ("oh my god you got the tickets yeah I don't know what to say that is so great we should go tonight "
            "really no way I can't believe it okay fine whatever you want listen to me please")
WORDS = tuple(SENTENCE.split(" "))


def write_clip(path: Path, seconds: float, width: int, height: int, fps: int, rng: np.random.Generator) -> Path:
    """A clip with moving noise video and a modulated tone (AAC), like a short MELD utterance."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        for i in range(round(seconds * fps)):
            img = np.roll(base, 4 * i, axis=1)
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        f0 = rng.uniform(120, 300)
        signal = (0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.1 * np.sin(2 * np.pi * 2 * t)))
                  + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        for lo in range(0, signal.size, 1024):
            frame = av.AudioFrame.from_ndarray(signal[None, lo : lo + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, lo, fractions.Fraction(1, SAMPLE_RATE)
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_text(args: argparse.Namespace, rng: np.random.Generator) -> dict[str, Any]:
    t0 = time.perf_counter()
    extractor = TextExtractor(args.text_model, max_tokens=128, seq_len=args.frames,
                              batch_size=args.text_batch, device=args.device)
    extractor.extract(["warm up"])
    load_s = time.perf_counter() - t0
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(5, 26))) for _ in range(args.texts)]
    _sync(extractor.device)
    t0 = time.perf_counter()
    extractor.extract(texts)
    _sync(extractor.device)
    seconds = time.perf_counter() - t0
    return {"model": extractor.source.identity, "fallback": extractor.source.fallback, "dim": extractor.dim,
            "utterances": len(texts), "batch": args.text_batch, "seconds": seconds,
            "utt_per_s": len(texts) / seconds, "load_s": load_s}


def bench_audio(args: argparse.Namespace, clips: list[Path]) -> dict[str, Any]:
    extractor = AudioExtractor(args.audio_set)
    extractor.extract([MediaRef(clips[0])])  # warm up
    t0 = time.perf_counter()
    signals = [load_audio(c) for c in clips]
    decode_s = time.perf_counter() - t0
    extractor.audio_seconds = extractor.smile_seconds = 0.0
    for c, s in zip(clips, signals, strict=True):
        extractor.features_of_signal(s, str(c))
    total_s = decode_s + extractor.smile_seconds
    return {"feature_set": args.audio_set, "dim": extractor.dim, "utterances": len(clips),
            "audio_seconds": extractor.audio_seconds, "decode_s": decode_s, "opensmile_s": extractor.smile_seconds,
            "utt_per_s": len(clips) / total_s, "rtf_opensmile": extractor.audio_seconds / extractor.smile_seconds,
            "rtf_with_decode": extractor.audio_seconds / total_s}


def bench_visual(args: argparse.Namespace, clips: list[Path]) -> dict[str, Any]:
    t0 = time.perf_counter()
    extractor = VisualExtractor(seq_len=args.frames, batch_size=args.visual_batch, device=args.device)
    extractor.extract([MediaRef(clips[0])])  # warm up (cuDNN autotune, allocator)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames = [sample_frames(c, args.frames) for c in clips]
    decode_s = time.perf_counter() - t0
    _sync(extractor.device)
    t0 = time.perf_counter()
    for lo in range(0, len(frames), args.visual_batch):
        extractor.embed(np.concatenate(frames[lo : lo + args.visual_batch]))
    _sync(extractor.device)
    model_s = time.perf_counter() - t0
    n_frames = len(clips) * args.frames
    return {"weights": extractor.weights["weights"], "dim": extractor.dim, "utterances": len(clips),
            "frames_per_utt": args.frames, "batch_utts": args.visual_batch, "decode_s": decode_s,
            "resnet_s": model_s, "utt_per_s": len(clips) / (decode_s + model_s),
            "resnet_frames_per_s": n_frames / model_s, "decode_utt_per_s": len(clips) / decode_s, "load_s": load_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=16, help="generated clips for the audio benchmark")
    p.add_argument("--visual-clips", type=int, default=4, help="clips for the visual benchmark (slow on CPU)")
    p.add_argument("--texts", type=int, default=64)
    p.add_argument("--seconds", type=float, default=3.0, help="clip length (MELD's mean is about 3 s)")
    p.add_argument("--size", default="640x360", help="clip resolution WxH")
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--frames", type=int, default=30, help="L, frames per utterance (and text steps)")
    p.add_argument("--text-model", default="roberta-large")
    p.add_argument("--text-batch", type=int, default=32)
    p.add_argument("--visual-batch", type=int, default=4, help="utterances per ResNet forward pass")
    p.add_argument("--audio-set", default="IS10_paraling")
    p.add_argument("--device", default="auto")
    p.add_argument("--only", default="t,a,v", help="subset of t,a,v")
    results_file.add_argument(p)
    args = p.parse_args(argv)
    record = results_file.start("features_throughput")
    width, height = (int(x) for x in args.size.lower().split("x"))
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    only = set(args.only.replace(",", ""))
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__}
    results: dict[str, Any] = {"info": info}
    with tempfile.TemporaryDirectory() as tmp:
        n = max(args.clips, args.visual_clips) if {"a", "v"} & only else 0
        t0 = time.perf_counter()
        clips = [write_clip(Path(tmp) / f"clip{i}.mp4", args.seconds, width, height, args.fps, rng) for i in range(n)]
        if n:
            print(f"generated {n} clips ({args.seconds:.1f} s, {width}x{height}, {args.fps} fps) in "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if "t" in only:
            results["text"] = bench_text(args, rng)
        if "a" in only:
            results["audio"] = bench_audio(args, clips[: args.clips])
        if "v" in only:
            results["visual"] = bench_visual(args, clips[: args.visual_clips])
    print(f"\nfeature extraction on {device.type} ({info['device']}, {info['torch_threads']} torch threads)")
    if "text" in results:
        r = results["text"]
        print(f"  text   {r['model']:<28} {r['utt_per_s']:8.1f} utt/s  (d={r['dim']}, batch {r['batch']}, "
              f"{r['utterances']} utts{', OFFLINE FALLBACK' if r['fallback'] else ''})")
    if "audio" in results:
        r = results["audio"]
        print(f"  audio  openSMILE {r['feature_set']:<18} {r['utt_per_s']:8.1f} utt/s  (d={r['dim']}; real-time "
              f"factor {r['rtf_opensmile']:.0f}x openSMILE alone, {r['rtf_with_decode']:.0f}x with decode)")
    if "visual" in results:
        r = results["visual"]
        print(f"  visual ResNet-50 x {r['frames_per_utt']} frames{'':<9} {r['utt_per_s']:8.2f} utt/s  "
              f"({r['resnet_frames_per_s']:.1f} frames/s in ResNet, decode {r['decode_utt_per_s']:.1f} utt/s, "
              f"weights {r['weights']})")
    results_file.write(record, results, args.results, seeds=[0], threads=torch.get_num_threads())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
