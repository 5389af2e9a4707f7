"""A run's write lease on a warehouse that is not a local folder (where there is no flock).

A writer puts its own small object `ROOT/.locks/<run_id>/<token>.lease` (owner, since, expires_at), then
lists the folder. If it sees another lease that has not expired, it deletes its own and gives up; else it
holds the run and rewrites its object every ttl/3 from a background thread until release() deletes it.

Two writers can never both hold a run on a store with read-after-write and list-after-write consistency
(S3, GCS, Azure, fsspec's memory://): each lists after its own put, so whichever lists second sees the
other's lease. Two that start together may both see each other and both give up: the loser's retry
settles it (each tries three times with a random pause), or the CLI says another process writes the run.
A killed writer's lease blocks the run until it expires (PVDATA_LEASE_SECONDS, default 120 s), then the
next attempt takes over. Expiry compares the writer's clock with the reader's: hosts must agree within a
few seconds. A writer paused for longer than the ttl (a suspended laptop) can lose its lease while it
still writes; `Lease.lost` says so, and Run refuses to record success then.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from typing import Any

from pvdata.errors import WarehouseError
from pvdata.warehouse.store import Store

log = logging.getLogger("pvdata.warehouse")

DEFAULT_TTL_S = 120.0
_ATTEMPTS = 3


def lease_ttl() -> float:
    text = os.environ.get("PVDATA_LEASE_SECONDS")
    if not text:
        return DEFAULT_TTL_S
    try:
        ttl = float(text)
    except ValueError:
        raise WarehouseError(f"PVDATA_LEASE_SECONDS={text!r} is not a number of seconds; e.g. 120") from None
    if ttl < 1:
        raise WarehouseError(f"PVDATA_LEASE_SECONDS={text!r} is too short; give at least 1 (default 120)")
    return ttl


class Lease:
    """The write lease of one run on a Store (the flock of a local warehouse, for object stores)."""

    def __init__(self, store: Store, run_id: str, ttl: float | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.dir = store.path(".locks", run_id)
        self.ttl = ttl if ttl is not None else lease_ttl()
        self.owner = f"pid {os.getpid()} on {socket.gethostname()}"
        self.path: str | None = None
        self.lost = False
        self._since = 0.0
        self._expires = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Lease({self.store.display(self.dir)!r}, held={self.path is not None})"

    def _body(self, expires: float) -> bytes:
        doc = {"owner": self.owner, "since": self._since, "expires_at": expires, "ttl": self.ttl}
        return json.dumps(doc).encode()

    def acquire(self) -> None:
        """Hold the run, or raise a WarehouseError naming the live holder."""
        for attempt in range(_ATTEMPTS):
            self._since = time.time()
            token = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
            path = f"{self.dir}/{token}.lease"
            expires = time.time() + self.ttl
            self.store.write_bytes(path, self._body(expires))
            self._expires = expires
            others = self.live_leases(exclude=path)
            if not others:
                self.path, self.lost = path, False
                self._stop.clear()
                self._thread = threading.Thread(target=self._renew, name=f"lease-{self.run_id}", daemon=True)
                self._thread.start()
                return
            self.store.delete(path)
            holder = min(others, key=lambda d: d.get("since", 0.0))
            settled = self._since - float(holder.get("since", 0.0)) > 5.0  # not a writer racing us
            if settled or attempt == _ATTEMPTS - 1:
                until = time.strftime("%H:%M:%S", time.gmtime(float(holder.get("expires_at", 0.0))))
                raise WarehouseError(
                    f"run {self.run_id} is being written by {holder.get('owner', 'another process')} "
                    f"(its lease in {self.store.display(self.dir)} runs until {until} UTC unless renewed); "
                    "wait for it to finish, or pass --force to start a separate run"
                )
            time.sleep(random.uniform(0.2, 1.0))

    def live_leases(self, exclude: str | None = None) -> list[dict[str, Any]]:
        """The unexpired leases in the run's folder (expired ones are deleted on the way)."""
        out = []
        now = time.time()
        for e in self.store.list_dir(self.dir):
            if e.is_dir or not e.name.endswith(".lease") or e.path == exclude:
                continue
            data = self.store.read_bytes(e.path)
            if data is None:
                continue
            try:
                doc = json.loads(data)
                expires = float(doc["expires_at"])
            except (ValueError, KeyError, TypeError):
                doc, expires = {"owner": f"an unreadable lease {e.name}"}, now + 1
            if expires > now:
                out.append(doc)
            else:
                self.store.delete(e.path)  # a dead writer's; nobody renews it any more
        return out

    def is_held_elsewhere(self) -> bool:
        """True when a live writer (this process included) holds the run."""
        return bool(self.live_leases())

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            path = self.path
            if path is None:
                return
            if time.time() > self._expires:
                self.lost = True  # another writer may have taken the run meanwhile: stop claiming it
                log.warning("run %s: its lease expired before it was renewed", self.run_id)
                return
            expires = time.time() + self.ttl
            try:
                self.store.write_bytes(path, self._body(expires))
                self._expires = expires
            except Exception as exc:  # keep trying: the lease is still ours until it expires
                log.warning("could not renew the lease of run %s: %s", self.run_id, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.path is not None:
            path, self.path = self.path, None
            try:
                self.store.delete(path)
            except Exception as exc:  # it expires on its own
                log.warning("could not delete the lease of run %s: %s", self.run_id, exc)
