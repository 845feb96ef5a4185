"""Training throughput of HJCAG (or a baseline) at the paper's dimensions on this machine's device.

Prints samples/s for forward + backward + Adam step, the FLOPs per sample (analytic, and torch's
FlopCounterMode as a cross-check), the achieved FLOP/s and its share of the device's peak, the parameter
count and the peak memory. Synthetic inputs: the speed of a step does not depend on the values.

Two kinds of input: sequences of L steps per modality (the paper's; also what utterance vectors cost when they were
repeated L times), and utterance vectors, one per modality, which training reads as one step (docs/model.md,
"Inputs"). ``--inputs both`` measures the two and prints the vectors' speed-up.

    python benchmarks/train_throughput.py                       # HJCAG, auto device, float32
    python benchmarks/train_throughput.py --model mult --dtype bfloat16 --batch 128 --steps 50
    python benchmarks/train_throughput.py --inputs both         # sequences, vectors, and the speed-up
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import results_file
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from hjcag.device import resolve_device
from hjcag.errors import HjcagError
from hjcag.model.factory import MODEL_NAMES, build_model
from hjcag.model.hjcag import JointCrossAttention
from hjcag.params import ModelConfig, parse_modalities

PAPER_DIMS = {"t": 1024, "a": 1582, "v": 512}  # d_t, d_a, d_v (IEMOCAP features, section 4.1)
PAPER_SEQ_LEN = 30
PAPER_CLASSES = 6
INPUTS = ("sequences", "vectors")  # --inputs: L steps per modality, or one utterance vector (one step)

# Dense (no sparsity) peak TFLOP/s from NVIDIA's data sheets: bf16 tensor core, tf32 tensor core, fp32 (CUDA cores).
# Matched in order against torch.cuda.get_device_name(); the first substring that matches wins.
GPU_PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9}),
    ("H100 PCIe", {"bfloat16": 756.5, "tf32": 378.0, "float32": 51.2}),
    ("H100 NVL", {"bfloat16": 835.5, "tf32": 417.8, "float32": 60.0}),
    ("H100", {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9}),  # SXM5 (e.g. "NVIDIA H100 80GB HBM3")
    ("A100", {"bfloat16": 312.0, "tf32": 156.0, "float32": 19.5}),
    ("L40S", {"bfloat16": 362.1, "tf32": 183.0, "float32": 91.6}),
    ("L4", {"bfloat16": 121.0, "tf32": 60.0, "float32": 30.3}),
)


@dataclass(frozen=True)
class Peak:
    tflops: float | None
    source: str  # how the number was obtained, printed next to it


# --------------------------------------------------------------------------- FLOPs


def _linear_flops(module: nn.Module, args: tuple[Any, ...], _: Any) -> int:
    x = args[0]
    return 2 * x.numel() * module.out_features  # (tokens x in) @ (in x out)


def _conv1d_flops(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> int:
    batch, c_out, length = out.shape
    return 2 * batch * length * c_out * (module.in_channels // module.groups) * module.kernel_size[0]


def _mha_flops(module: nn.Module, args: tuple[Any, ...], _: Any) -> int:
    """nn.MultiheadAttention (batch_first, kdim = vdim = embed_dim): in-projections, QK^T, AV, out-projection."""
    q, k = args[0], args[1]
    batch, lq, width = q.shape
    lk = k.shape[1]
    projections = 2 * batch * (lq * width * width + 2 * lk * width * width + lq * width * width)
    attention = 2 * batch * lq * lk * width * 2  # scores and weighted sum, summed over heads
    return projections + attention


def _joint_cross_attention_flops(module: nn.Module, args: tuple[Any, ...], _: Any) -> int:
    """HJCAG's joint block (eq 4-12) beyond its joint FCs, which are nn.Linear and counted on their own."""
    xs: Mapping[str, torch.Tensor] = args[0]
    batch, length = next(iter(xs.values())).shape[:2]
    widths = {m: x.shape[-1] for m, x in xs.items()}
    flops = 0
    for joint in module.joints:
        w_joint = sum(widths[m] for m in joint)
        for m in joint:
            flops += 2 * batch * length * widths[m] * w_joint  # X_m W_{m,J}: (L x d_m) @ (d_m x w_J)
            flops += 2 * batch * length * length * w_joint  # (.) J^T: (L x w_J) @ (w_J x L)
    for m in module.modalities:
        flops += 2 * batch * length**3  # C^T W_c^T: (L x L) @ (L x L)
        flops += 2 * batch * length * length * widths[m]  # (.) X_m: (L x L) @ (L x d_m)
        flops += 2 * batch * length * length * widths[m]  # W_h^T H: (L x L) @ (L x d_m)
    return flops


FLOP_RULES: tuple[tuple[type[nn.Module], Callable[[nn.Module, tuple[Any, ...], Any], int]], ...] = (
    (nn.Linear, _linear_flops),
    (nn.Conv1d, _conv1d_flops),
    (nn.MultiheadAttention, _mha_flops),
    (JointCrossAttention, _joint_cross_attention_flops),
)


@dataclass(frozen=True)
class Flops:
    forward: int
    backward: int

    @property
    def train(self) -> int:
        return self.forward + self.backward


def analytic_flops(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> Flops:
    """Matmul FLOPs (2 m n k each) of one forward pass and of its backward pass, from the shapes each layer sees.

    Each Linear / Conv1d / MultiheadAttention / JointCrossAttention adds its closed-form count; the shapes come
    from a forward hook, so the count follows the model's real structure. Backward: every matmul costs twice its
    forward (gradient of each operand), except that a Linear / Conv1d whose input needs no gradient (the raw
    features) only computes its weight gradient. Element-wise work (activations, softmax, LayerNorm, the Adam
    update) is left out, as is conventional.
    """
    forward = backward = 0
    handles = []

    def hook_for(rule: Callable[[nn.Module, tuple[Any, ...], Any], int], weight_layer: bool) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            nonlocal forward, backward
            flops = rule(module, args, out)
            forward += flops
            backward += flops * (1 + bool(args[0].requires_grad)) if weight_layer else 2 * flops

        return hook

    for module in model.modules():
        for kind, rule in FLOP_RULES:
            if isinstance(module, kind):
                weight_layer = kind in (nn.Linear, nn.Conv1d)
                handles.append(module.register_forward_hook(hook_for(rule, weight_layer)))
                break
    try:
        with torch.enable_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return Flops(forward, backward)


def counted_flops(model: nn.Module, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor,
                  autocast: torch.autocast) -> tuple[int, int]:
    """(forward, forward + backward) FLOPs of one batch as torch's FlopCounterMode measures them."""
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        with autocast:
            loss = F.cross_entropy(model(inputs).logits.float(), labels)
        forward = counter.get_total_flops()
        loss.backward()
    model.zero_grad(set_to_none=True)
    return forward, counter.get_total_flops()


# --------------------------------------------------------------------------- device peak


def _cpu_flags() -> tuple[str, set[str], float | None]:
    vendor, flags, mhz = platform.processor() or "unknown", set(), None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id":
                    vendor = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "cpu MHz":
                    mhz = max(mhz or 0.0, float(value))
    except OSError:
        pass
    return vendor, flags, mhz


def cpu_peak(dtype: str) -> Peak:
    """cores x clock x FLOPs/cycle/core, with the assumptions spelled out in `source`."""
    cores = torch.get_num_threads()
    vendor, flags, mhz = _cpu_flags()
    if mhz is None:
        return Peak(None, "CPU clock unknown (no /proc/cpuinfo); pass --peak-tflops")
    if "avx512f" in flags:
        # Intel server cores: two 512-bit FMA ports. AMD Zen 4 runs AVX-512 on two 256-bit FMA pipes.
        per_cycle, isa = (32, "AVX-512 on 2x256-bit FMA (AMD Zen 4)") if vendor == "AuthenticAMD" else (
            64, "AVX-512, 2x512-bit FMA ports")
    elif "avx2" in flags and "fma" in flags:
        per_cycle, isa = 32, "AVX2, 2x256-bit FMA"
    elif "avx" in flags:
        per_cycle, isa = 16, "AVX, no FMA"
    else:
        per_cycle, isa = 8, "SSE"
    note = f"fp32 {per_cycle} FLOP/cycle/core ({isa})"
    if dtype == "bfloat16":
        if "amx_bf16" in flags:
            per_cycle, note = 1024, "bf16 1024 FLOP/cycle/core (Intel AMX)"
        elif "avx512_bf16" in flags:
            per_cycle, note = 2 * per_cycle, f"bf16 {2 * per_cycle} FLOP/cycle/core (AVX512_BF16 dot products)"
        else:
            note += "; no native bf16, fp32 rate assumed"
    tflops = cores * mhz * 1e6 * per_cycle / 1e12
    return Peak(tflops, f"assumed: {cores} threads x {mhz / 1000:.2f} GHz x {note}; override with --peak-tflops")


def gpu_peak(device: torch.device, dtype: str) -> Peak:
    name = torch.cuda.get_device_name(device)
    key = dtype if dtype == "bfloat16" else ("tf32" if torch.backends.cuda.matmul.allow_tf32 else "float32")
    for pattern, peaks in GPU_PEAKS:
        if pattern in name:
            return Peak(peaks[key], f"{pattern} data sheet, dense {key}")
    return Peak(None, f"no table entry for '{name}'; pass --peak-tflops")


def device_peak(device: torch.device, dtype: str, override: float | None) -> Peak:
    if override is not None:
        return Peak(override, "--peak-tflops")
    return gpu_peak(device, dtype) if device.type == "cuda" else cpu_peak(dtype)


# --------------------------------------------------------------------------- benchmark


def synthetic_batch(dims: Mapping[str, int], batch: int, seq_len: int, classes: int,
                    device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    inputs = {m: torch.randn(batch, seq_len, d, generator=gen).to(device) for m, d in dims.items()}
    labels = torch.randint(0, classes, (batch,), generator=gen).to(device)
    return inputs, labels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return rss * scale / 2**20, "process max RSS (includes Python and torch)"


def run(args: argparse.Namespace, inputs_kind: str = "sequences") -> dict[str, Any]:
    """Time training steps on synthetic `inputs_kind` inputs: sequences of --seq-len steps, or utterance vectors,
    which a model reads as one step (it is built with seq_len 1, as training builds it: train/fit.py)."""
    seq_len = args.seq_len if inputs_kind == "sequences" else 1
    device = resolve_device(args.device)
    if device.type == "cuda" and args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    steps = args.steps if args.steps is not None else (50 if device.type == "cuda" else 3)
    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 1)
    modalities = parse_modalities(args.modalities)
    dims = {m: PAPER_DIMS[m] for m in modalities}
    config = ModelConfig(name=args.model, seq_len=seq_len, widths=dict(PAPER_DIMS), gate_width=512)
    torch.manual_seed(0)
    model = build_model(args.model, dims, args.classes, config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, betas=(0.9, 0.99), weight_decay=1e-5)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    params = sum(p.numel() for p in model.parameters())

    one_inputs, _ = synthetic_batch(dims, 1, seq_len, args.classes, device)
    analytic = analytic_flops(model, one_inputs)
    model.zero_grad(set_to_none=True)
    count_batch = min(args.batch, 4)
    count_inputs, count_labels = synthetic_batch(dims, count_batch, seq_len, args.classes, device)
    counted_fwd, counted_train = counted_flops(model, count_inputs, count_labels, autocast)
    del one_inputs, count_inputs, count_labels

    inputs, labels = synthetic_batch(dims, args.batch, seq_len, args.classes, device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(inputs).logits.float(), labels)
        loss.backward()
        optimizer.step()

    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in tqdm(range(warmup), desc="warm-up", leave=False, disable=warmup == 0):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc="timed steps", leave=False):
        step()
    _sync(device)
    elapsed = time.perf_counter() - start

    samples_per_s = args.batch * steps / elapsed
    achieved = samples_per_s * analytic.train  # the matmul work a step really does
    peak = device_peak(device, args.dtype, args.peak_tflops)
    memory, memory_source = peak_memory_mib(device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU {_cpu_flags()[0]}, {torch.get_num_threads()} threads")
    return {
        "model": args.model,
        "modalities": "".join(modalities),
        "device": str(device),
        "device_name": device_name,
        "dtype": args.dtype + (" (tf32 matmul)" if device.type == "cuda" and args.tf32 else ""),
        "torch": torch.__version__,
        "dims": dims,
        "inputs": inputs_kind,
        "seq_len": seq_len,
        "classes": args.classes,
        "batch": args.batch,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "seconds": elapsed,
        "step_ms": 1000 * elapsed / steps,
        "samples_per_s": samples_per_s,
        "parameters": params,
        "flops_per_sample_forward_analytic": analytic.forward,
        "flops_per_sample_train_analytic": analytic.train,
        "flops_per_sample_train_3x_forward": 3 * analytic.forward,
        "flops_per_sample_forward_counted": counted_fwd / count_batch,
        "flops_per_sample_train_counted": counted_train / count_batch,
        "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak.tflops,
        "peak_source": peak.source,
        "fraction_of_peak": None if not peak.tflops else achieved / (peak.tflops * 1e12),
        "peak_memory_mib": memory,
        "peak_memory_source": memory_source,
    }


def _si(value: float, unit: str) -> str:
    if value == 0:
        return f"0 {unit}"
    prefixes = ["", "K", "M", "G", "T", "P"]
    power = min(int(math.log10(abs(value)) // 3), len(prefixes) - 1)
    return f"{value / 10 ** (3 * power):.3f} {prefixes[power]}{unit}"


def report(r: dict[str, Any]) -> str:
    fraction = "n/a" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.2f} %"
    peak = "unknown" if r["peak_tflops"] is None else f"{r['peak_tflops']:.2f} TFLOP/s"
    dims = ", ".join(f"d_{m}={d}" for m, d in r["dims"].items())
    lines = [
        f"model            {r['model']} ({r['modalities']}), {dims}, L={r['seq_len']}, {r['classes']} classes",
        f"inputs           {_INPUT_LINES[r.get('inputs', 'sequences')]}",
        f"device           {r['device']}: {r['device_name']}; dtype {r['dtype']}; torch {r['torch']}",
        f"batch / steps    {r['batch']} / {r['timed_steps']} timed after {r['warmup_steps']} warm-up",
        f"parameters       {r['parameters']:,}",
        f"step time        {r['step_ms']:.1f} ms (forward + backward + Adam)",
        f"throughput       {r['samples_per_s']:.1f} samples/s",
        f"FLOPs/sample     analytic: {_si(r['flops_per_sample_forward_analytic'], 'FLOP')} forward, "
        f"{_si(r['flops_per_sample_train_analytic'], 'FLOP')} forward + backward "
        f"(3x-forward convention: {_si(r['flops_per_sample_train_3x_forward'], 'FLOP')})",
        f"                 FlopCounterMode: {_si(r['flops_per_sample_forward_counted'], 'FLOP')} forward, "
        f"{_si(r['flops_per_sample_train_counted'], 'FLOP')} forward + backward",
        f"achieved         {r['achieved_tflops'] * 1000:.2f} GFLOP/s (analytic forward + backward FLOPs x samples/s)",
        f"device peak      {peak} [{r['peak_source']}]",
        f"share of peak    {fraction}",
        f"peak memory      {r['peak_memory_mib']:.1f} MiB [{r['peak_memory_source']}]",
    ]
    return "\n".join(lines)


_INPUT_LINES = {"sequences": "sequences of L steps per modality",
                "vectors": "utterance vectors, one step each (as training reads them)"}


def speedup_report(sequences: dict[str, Any], vectors: dict[str, Any]) -> str:
    flops = sequences["flops_per_sample_train_analytic"] / vectors["flops_per_sample_train_analytic"]
    return (f"vectors          {vectors['samples_per_s'] / sequences['samples_per_s']:.1f}x the samples/s of "
            f"L={sequences['seq_len']} sequences ({vectors['samples_per_s']:.1f} against "
            f"{sequences['samples_per_s']:.1f}; repeated vectors cost what sequences cost), "
            f"{flops:.1f}x fewer FLOPs per sample")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=MODEL_NAMES, default="hjcag")
    p.add_argument("--modalities", default="t,a,v", help="subset of t,a,v (default: all three)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 50 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 on CUDA, 1 on CPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="bfloat16 runs the forward under torch.autocast")
    p.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 for float32 matmuls (and use its peak)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, overriding the estimate")
    p.add_argument("--seq-len", type=int, default=PAPER_SEQ_LEN)
    p.add_argument("--inputs", choices=(*INPUTS, "both"), default="sequences",
                   help="sequences of --seq-len steps, utterance vectors (one step), or both and the speed-up")
    p.add_argument("--classes", type=int, default=PAPER_CLASSES)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    results_file.add_argument(p)
    args = p.parse_args(argv)
    if args.batch < 1 or (args.steps is not None and args.steps < 1) or (args.warmup or 0) < 0:
        p.error("--batch and --steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    record = results_file.start("train_throughput")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    # Vectors first: on a CPU the peak memory is the process's maximum so far, and theirs is the smaller.
    kinds = ("vectors", "sequences") if args.inputs == "both" else (args.inputs,)
    try:
        results = {kind: run(args, kind) for kind in kinds}
    except HjcagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n\n".join(report(results[kind]) for kind in INPUTS if kind in results))
    result: dict[str, Any] = results[kinds[0]]
    if len(kinds) > 1:
        print("\n" + speedup_report(results["sequences"], results["vectors"]))
        result = {**results, "vector_speedup": results["vectors"]["samples_per_s"]
                  / results["sequences"]["samples_per_s"]}
    results_file.write(record, result, args.results, seeds=[0], threads=torch.get_num_threads())
    return 0


if __name__ == "__main__":
    sys.exit(main())
