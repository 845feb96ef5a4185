"""Quality gates: a run is registered only when its mean fold scores reach the thresholds in params.yaml.

A failed gate raises :class:`GateFailed` naming every threshold that failed, the run's value and the shortfall,
so the log of a stopped pipeline says why it stopped and by how much.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hjcag.artifacts import METRICS_FILE, write_json
from hjcag.errors import HjcagError
from hjcag.params import GateConfig

# GateConfig field -> the metrics.json entry it bounds from below.
GATED_METRICS = {"min_accuracy": "accuracy", "min_weighted_f1": "weighted_f1"}


@dataclass(frozen=True)
class GateCheck:
    """One threshold: `value` (mean over folds) must be >= `threshold`."""

    gate: str
    metric: str
    value: float | None
    threshold: float

    @property
    def passed(self) -> bool:
        return self.value is not None and math.isfinite(self.value) and self.value >= self.threshold

    @property
    def shortfall(self) -> float:
        """How far below the threshold the value is (0 when it passed; the whole threshold when undefined)."""
        if self.value is None or not math.isfinite(self.value):
            return self.threshold
        return max(0.0, self.threshold - self.value)

    def describe(self) -> str:
        value = "undefined" if self.value is None or not math.isfinite(self.value) else f"{self.value:.4f}"
        if self.passed:
            return f"{self.gate}: {self.metric} {value} >= {self.threshold:.4f} (passed)"
        return (f"{self.gate}: {self.metric} {value} < {self.threshold:.4f} "
                f"(short by {self.shortfall:.4f}, i.e. {100 * self.shortfall:.2f} percentage points)")


@dataclass(frozen=True)
class GateResult:
    checks: tuple[GateCheck, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[GateCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def summary(self) -> str:
        head = "gates passed" if self.passed else f"{len(self.failures)} gate(s) failed"
        return head + ":\n" + "\n".join(f"  {c.describe()}" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "checks": [{**asdict(c), "passed": c.passed, "shortfall": c.shortfall} for c in self.checks],
        }


class GateFailed(HjcagError):
    """The run is below at least one quality gate; nothing was registered."""

    def __init__(self, result: GateResult, where: str = "the run") -> None:
        self.result = result
        lines = "\n".join(f"  {c.describe()}" for c in result.failures)
        super().__init__(
            f"{where} failed {len(result.failures)} quality gate(s); nothing was registered:\n{lines}\n"
            "Improve the model or data, or change the thresholds under `gates:` in params.yaml if they are wrong."
        )


def _mean(metrics: dict[str, Any], name: str) -> float | None:
    if name not in metrics:
        raise HjcagError(f"metrics have no '{name}' entry, so the gate on it cannot be checked. "
                         f"Is this a {METRICS_FILE} written by `hjcag train`?")
    value = metrics[name]
    if isinstance(value, dict):
        value = value.get("mean")
    return None if value is None else float(value)


def check_gates(metrics: dict[str, Any], gates: GateConfig) -> GateResult:
    """Compare the mean fold scores in `metrics` (metrics.json, or flat {name: value}) with `gates`."""
    return GateResult(tuple(
        GateCheck(gate=gate, metric=metric, value=_mean(metrics, metric), threshold=float(getattr(gates, gate)))
        for gate, metric in GATED_METRICS.items()
    ))


def read_run_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        raise HjcagError(f"'{run_dir}' has no {METRICS_FILE}; finish the run with `hjcag train` first.")
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise HjcagError(f"'{path}' is not valid JSON ({exc}); re-run `hjcag train` to rewrite it.") from exc


def gate_run(run_dir: str | Path, gates: GateConfig, report: str | Path | None = None,
             raise_on_failure: bool = True) -> GateResult:
    """Check a finished run directory; write the result and its summary to `report` (JSON) if given; raise
    GateFailed on failure unless told not to (a pipeline branches on the result instead).

    The report is written before raising, so a pipeline keeps the numbers of a failed gate too.
    """
    result = check_gates(read_run_metrics(run_dir), gates)
    if report is not None:
        write_json(report, {**result.to_dict(), "summary": result.summary()})
    if not result.passed and raise_on_failure:
        raise GateFailed(result, where=f"run '{run_dir}'")
    return result
