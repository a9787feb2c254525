"""Progress lines for the long steps (shard cache, evaluation, export, tuner trials).

One implementation for every step, at the bottom layer (no TensorFlow import):

* :class:`Progress`: a counted loop (images, batches): ``done/total``, rate and ETA.
  On a terminal the line is rewritten in place a few times a second; in a log file
  (not a TTY) a new line is written every ``log_interval_s``; either way a closing
  line gives the total, the time and the rate. ``verbose=0`` prints nothing.
* :class:`Steps`: a fixed sequence of named steps (export): one line per step with
  the time since the start.
* :func:`rate_and_eta`: the "N/s, ETA" text both use, also for the tuner's trials.

Lines go to stderr, so a command's result on stdout (cskd-eval's JSON, the cache
folder build_cache prints) stays machine-readable. They are plain prints, not
logging: the CLI sets absl's level to WARNING, which would hide INFO messages.
"""

from __future__ import annotations

import sys
import time

TTY_INTERVAL_S = 0.2
LOG_INTERVAL_S = 30.0


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _number(value: float) -> str:
    """Three significant digits, without exponents: 0.125, 12.5, 1250."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _singular(unit: str) -> str:
    """"batches" -> "batch", "images" -> "image", "trials" -> "trial"."""
    if unit.endswith(("ches", "shes", "sses", "xes")):
        return unit[:-2]
    return unit[:-1] if unit.endswith("s") else unit


def rate_and_eta(done: float, total: float | None, elapsed_s: float, unit: str) -> str:
    """``"120.5 images/s, ETA 1m20s"`` (no ETA when ``total`` is unknown or reached)."""
    if done <= 0 or elapsed_s <= 0:
        return f"- {unit}/s"
    rate = done / elapsed_s
    if rate >= 1:
        text = f"{_number(rate)} {unit}/s"
    else:  # slow steps (trials) read better as time per item
        text = f"{_number(elapsed_s / done)} s/{_singular(unit)}"
    if total and done < total:
        text += f", ETA {format_duration((total - done) / rate)}"
    return text


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Progress of a counted loop; use as a context manager and call :meth:`update`.

    Args:
      label: what is being done ("building the shard cache train").
      total: the count at the end, or None when unknown (no ETA, no percentage).
      unit: what is counted, plural ("images").
      verbose: 0 prints nothing.
      stream: where to write (default: sys.stderr at the time of writing).
    """

    def __init__(self, label: str, total: int | None = None, unit: str = "images",
                 verbose: int = 1, stream=None, log_interval_s: float = LOG_INTERVAL_S):
        self.label = label
        self.total = int(total) if total else None
        self.unit = unit
        self.verbose = int(verbose)
        self.stream = stream
        self.log_interval_s = float(log_interval_s)
        self.done = 0
        self.start = self._last = time.monotonic()
        self._open_line = False

    def _out(self):
        return self.stream if self.stream is not None else sys.stderr

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(failed=exc_type is not None)
        return False

    def _text(self, now) -> str:
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        return (f"{self.label}: {count} {self.unit} "
                f"({rate_and_eta(self.done, self.total, now - self.start, self.unit)})")

    def update(self, n: int = 1):
        self.done += int(n)
        if not self.verbose:
            return
        now = time.monotonic()
        out = self._out()
        tty = _is_tty(out)
        if now - self._last < (TTY_INTERVAL_S if tty else self.log_interval_s):
            return
        self._last = now
        if tty:
            out.write("\r" + self._text(now) + "\033[K")
            self._open_line = True
        else:
            out.write(self._text(now) + "\n")
        out.flush()

    def close(self, failed: bool = False):
        """The closing line: total, time and rate (or where it stopped, on an error)."""
        if not self.verbose:
            return
        now = time.monotonic()
        out = self._out()
        elapsed = now - self.start
        if failed:
            line = f"{self.label}: stopped after {self.done} {self.unit}"
        else:
            line = (f"{self.label}: {self.done} {self.unit} in {format_duration(elapsed)} "
                    f"({rate_and_eta(self.done, None, elapsed, self.unit)})")
        out.write(("\r" if self._open_line else "") + line + ("\033[K" if self._open_line else "")
                  + "\n")
        out.flush()
        self.verbose = 0  # closed: later updates print nothing


class Steps:
    """Numbered steps of one job: ``label [2/4] what (12s)``, one line each."""

    def __init__(self, label: str, total: int, verbose: int = 1, stream=None):
        self.label = label
        self.total = int(total)
        self.verbose = int(verbose)
        self.stream = stream
        self.count = 0
        self.start = time.monotonic()

    def next(self, what: str):
        self.count += 1
        if not self.verbose:
            return
        out = self.stream if self.stream is not None else sys.stderr
        out.write(f"{self.label} [{self.count}/{self.total}] {what} "
                  f"({format_duration(time.monotonic() - self.start)})\n")
        out.flush()


def say(text: str, verbose: int = 1, stream=None):
    """One line to stderr (unless ``verbose`` is 0): what a long step is about to do."""
    if verbose:
        out = stream if stream is not None else sys.stderr
        out.write(text + "\n")
        out.flush()
