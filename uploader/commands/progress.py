"""Progress for work a person watches (`replay`, `export`): count, rate and ETA.

On a terminal tqdm draws a bar; when stderr is not a terminal (a log, a pipe, systemd) a plain
line is written every few seconds and once at the end, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

__all__ = ["Progress"]


class Progress:
    """``with Progress("replay", total=120, unit="batches") as p: p.update(1)``."""

    def __init__(
        self, label: str, total: int | None, unit: str, out: TextIO | None = None, every_s: float = 5.0,
        scale: bool = False,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.out = out or sys.stderr
        self.every_s = every_s
        self.scale = scale
        self.done = 0
        self._started = time.monotonic()
        self._said = self._started
        self._bar: tqdm | None = None
        if self.out.isatty():
            self._bar = tqdm(total=total, unit=unit if not scale else "B", unit_scale=scale,
                             unit_divisor=1024 if scale else 1000, desc=label, file=self.out,
                             dynamic_ncols=True, leave=True)

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._said >= self.every_s:
            self._said = now
            self.out.write(self.line() + "\n")
            self.out.flush()

    def line(self) -> str:
        """The plain-text form: done/total, percent, rate, ETA."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta = f", ETA {left:.0f} s" if left != float("inf") else ""
            unit = "" if self.scale else f" {self.unit}"
            return (f"{self.label}: {self._amount(self.done)}/{self._amount(self.total)}{unit} "
                    f"({100 * self.done / self.total:.0f}%), {self._amount(rate)}/s{eta}")
        return f"{self.label}: {self._amount(self.done)} {self.unit}, {self._amount(rate)}/s"

    def _amount(self, value: float) -> str:
        if not self.scale:
            return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
        for unit in ("B", "KiB", "MiB", "GiB"):
            if abs(value) < 1024 or unit == "GiB":
                return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
            value /= 1024
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self.out.write(self.line() + "\n")
            self.out.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None and issubclass(kind, BrokenPipeError):
            # The reader of the output went away (`| head`): the command ends quietly, no summary.
            if self._bar is not None:
                self._bar.close()
            return
        self.close()
