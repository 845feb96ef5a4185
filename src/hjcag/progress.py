"""Progress reporting that suits where the output goes: a tqdm bar on a terminal, a few log lines elsewhere.

tqdm redraws its bar with carriage returns; in a file, a CI log or a pipeline pod's log every redraw becomes a line
of its own (over a thousand for ``make demo``). :func:`progress` therefore gives a bar only when stderr is a TTY,
and otherwise a :class:`LogProgress`: one INFO line on the ``hjcag.progress`` logger at every 10 % of the total
(or every 30 s when there is no total or it moves slowly), and one when it ends early.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

log = logging.getLogger("hjcag.progress")

STEP = 0.1  # a line at every tenth of the total
INTERVAL_S = 30.0  # and at least one every 30 s while something moves


class LogProgress:
    """The part of tqdm's interface the package uses (iterate, update, set_postfix, close, ``with``), reported
    as log lines: ``fold 1: 20/200 epoch (10 %), 3 s, train_loss=0.69``."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str = "",
                 unit: str = "it", disable: bool = False, initial: float = 0, step: float = STEP,
                 interval_s: float = INTERVAL_S) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.disable, self.n, self.step, self.interval_s = disable, initial, step, interval_s
        self.postfix = ""
        self._start = self._last_time = time.monotonic()
        self._last_n = initial
        self._last_mark = self._mark(initial)

    def _mark(self, n: float) -> int:
        return int(n / self.total / self.step) if self.total else 0

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LogProgress was created without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.disable:
            return
        now, mark = time.monotonic(), self._mark(self.n)
        if mark > self._last_mark or now - self._last_time >= self.interval_s:
            self._emit(now, mark)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.disable and self.n != self._last_n:  # ended between two marks (e.g. early stopping)
            self._emit(time.monotonic(), self._mark(self.n))
        self.disable = True

    def _emit(self, now: float, mark: int) -> None:
        done = f"{self.n:g}/{self.total:g} {self.unit}" if self.total else f"{self.n:g} {self.unit}"
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        log.info("%s: %s%s, %.0f s%s", self.desc or "progress", done, share, now - self._start, extra)
        self._last_n, self._last_time, self._last_mark = self.n, now, mark


def on_terminal(stream: IO[str] | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def progress(iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, initial: float = 0, stream: IO[str] | None = None, **bar_options: Any) -> Any:
    """A tqdm bar (with `bar_options`) when `stream` (default stderr) is a terminal, else a :class:`LogProgress`."""
    if on_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial, **bar_options)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial)


def quiet_library_bars(stream: IO[str] | None = None) -> None:
    """Hugging Face's own bars ("Loading weights", "Writing model shards") follow ours: off unless `stream`
    (default stderr) is a terminal. The CLI calls it before transformers is imported (which reads the switch once);
    the model loaders call it again, which turns transformers' bars off at run time in any other process that
    reaches them (a KFP component, a benchmark, a notebook writing to a file)."""
    if not on_terminal(stream):
        switch = os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # a user's own setting stands
        if switch.strip().lower() in ("1", "true", "yes", "on") and "transformers" in sys.modules:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
