"""Host work ahead of the device: a bounded background producer, and where a pass spent its time.

Tokenisation, chat templates and padding into tensors are host (Python/CPU) work; the forward pass is
device work. Run one after the other, the GPU idles while the host prepares the next batch. `prefetch`
runs the preparation in a background thread up to `depth` items ahead (a bounded queue, so memory stays
flat), in the same order, so the results are exactly those of the plain loop. An error in the producer
is raised in the caller with its original type and message; the thread is joined when the loop ends,
fails or is left early.

`PassTimings` records host preparation seconds (in the producer) and device seconds (around each
forward: CUDA events on a GPU, read once at the end, so no per-batch host sync; wall time on a CPU).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DEFAULT_DEPTH = 2
_ITEM, _END, _ERROR = "item", "end", "error"
_POLL_S = 0.05  # how often a producer blocked on a full queue checks whether the consumer left


@dataclass
class PassTimings:
    """Seconds of host preparation and of device forwards over one pass (thread-safe to add to).

    host_prep_s: producing items (tokenise, template, pad, pin); host_wait_s: the consumer blocked
    waiting for the next item (the device's share of that is idle time); device_s: forwards."""

    host_prep_s: float = 0.0
    host_wait_s: float = 0.0
    device_cpu_s: float = 0.0
    batches: int = 0
    _events: list[tuple[Any, Any]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_host(self, seconds: float) -> None:
        with self._lock:
            self.host_prep_s += seconds

    def add_wait(self, seconds: float) -> None:
        with self._lock:
            self.host_wait_s += seconds

    @contextlib.contextmanager
    def device(self, device: Any) -> Iterator[None]:
        """Around one forward: CUDA events (resolved by `device_s` after the work is done) or wall time."""
        self.batches += 1
        if getattr(device, "type", "cpu") == "cuda":
            import torch

            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((start, end))
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.device_cpu_s += time.perf_counter() - t0

    @property
    def device_s(self) -> float:
        """Device busy seconds (synchronises once on the recorded CUDA events, if any)."""
        gpu = 0.0
        if self._events:
            self._events[-1][1].synchronize()
            gpu = sum(s.elapsed_time(e) for s, e in self._events) / 1000.0
        return self.device_cpu_s + gpu

    def summary(self, wall_s: float) -> dict[str, float]:
        """host_prep_s, host_wait_s, device_s, wall_s and device_idle_share = 1 - device_s / wall_s."""
        device_s = self.device_s
        idle = max(0.0, 1.0 - device_s / wall_s) if wall_s > 0 else 0.0
        return {
            "host_prep_s": self.host_prep_s,
            "host_wait_s": self.host_wait_s,
            "device_s": device_s,
            "wall_s": wall_s,
            "device_idle_share": idle,
            "batches": float(self.batches),
        }


class Prefetcher(Generic[T]):
    """Iterates `source` in a daemon thread, at most `depth` items ahead; use as a context manager (or
    call close()) so that leaving the loop early stops and joins the thread."""

    def __init__(self, source: Iterable[T], depth: int = DEFAULT_DEPTH, timings: PassTimings | None = None):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._timings = timings
        self._finished = False
        self._thread = threading.Thread(
            target=self._produce, args=(iter(source),), name="pvdata-prefetch", daemon=True
        )
        self._thread.start()

    def _put(self, entry: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, it: Iterator[T]) -> None:
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    self._put((_END, None))
                    return
                if self._timings is not None:
                    self._timings.add_host(time.perf_counter() - t0)
                if not self._put((_ITEM, item)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((_ERROR, exc))
        finally:
            close = getattr(it, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        t0 = time.perf_counter()
        kind, value = self._queue.get()
        if self._timings is not None:
            self._timings.add_wait(time.perf_counter() - t0)
        if kind == _ITEM:
            return value  # type: ignore[no-any-return]
        self.close()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the producer and join it (idempotent)."""
        self._finished = True
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
            self._thread.join(timeout=_POLL_S)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Inline(Generic[T]):
    """The same interface without a thread: each item prepared when asked for (prefetch off)."""

    def __init__(self, source: Iterable[T], timings: PassTimings | None = None):
        self._it = iter(source)
        self._timings = timings

    def __iter__(self) -> Inline[T]:
        return self

    def __next__(self) -> T:
        t0 = time.perf_counter()
        item = next(self._it)
        if self._timings is not None:
            self._timings.add_host(time.perf_counter() - t0)
        return item

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Inline[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefetch(
    source: Iterable[T],
    *,
    enabled: bool = True,
    depth: int = DEFAULT_DEPTH,
    timings: PassTimings | None = None,
) -> Prefetcher[T] | Inline[T]:
    """`source`'s items in order, prepared `depth` ahead in a background thread (or inline when not
    enabled); use with `with`."""
    if enabled:
        return Prefetcher(source, depth, timings)
    return Inline(source, timings)
