"""The watch half of FakeKubeAPI: the history of changes, and the streams that follow it as kube-apiserver serves a
watch (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes):
- `GET <collection>?watch=1` answers 200 with `Transfer-Encoding: chunked`, one JSON event per line,
  `{"type": "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR", "object": ...}`. Objects carry kind, apiVersion
  and the resourceVersion of the change (a DELETED object: the version of its deletion).
- `resourceVersion` unset or "0": a synthetic ADDED event for every object there is, then the changes; any other
  version: every change after it. A version older than the history kept (`compact()`, as etcd compaction) is
  answered as the watch cache answers it: one ERROR event whose object is the Status 410 Expired
  `too old resource version: RV (OLDEST)`, then the end of the stream.
- `timeoutSeconds` ends the stream cleanly (the terminating chunk) after that long, as the server does.
  `allowWatchBookmarks=true` lets `bookmark()` send BOOKMARK events, whose object holds only kind, apiVersion and
  metadata.resourceVersion.
- a namespaced path watches that namespace only; `labelSelector` filters events as it filters a list.
Not implemented: `sendInitialEvents` (streaming lists), field selectors on a watch.
Test hooks (on FakeKubeAPI.watches): `end()` (every open stream ends cleanly, as at the server's timeout),
`drop()` (every open connection is cut mid-stream, without the terminating chunk), `compact()`, `bookmark()`,
`wait_for_streams(n)`.
"""
from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.kubeapi_rules import ApiError, ResourceType, parse_label_selector


@dataclass(frozen=True)
class Event:
    version: int
    type: str
    resource: ResourceType
    namespace: str
    object: dict


@dataclass
class _Stream:
    resource: ResourceType
    namespace: str | None
    labels: list[Callable[[dict], bool]]
    bookmarks: bool
    ending: str = ""  # "end": clean end; "drop": cut the connection
    bookmark_due: bool = False

    def wants(self, event: Event) -> bool:
        return (event.resource == self.resource and self.namespace in (None, event.namespace)
                and all(test(event.object.get("metadata", {}).get("labels") or {}) for test in self.labels))


@dataclass
class History:
    """Every change FakeKubeAPI stored, in order, and the open watch streams. Shares the server's lock."""

    lock: threading.RLock
    events: list[Event] = field(default_factory=list)
    oldest: int = 0  # a watch from a version below this is too old: the changes after it were compacted away
    streams: list[_Stream] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def record(self, event_type: str, resource: ResourceType, namespace: str | None, obj: dict) -> None:
        """Called under the lock, with the object as stored (its resourceVersion is the change's)."""
        version = int(obj["metadata"]["resourceVersion"])
        self.events.append(Event(version, event_type, resource, namespace or "", copy.deepcopy(obj)))
        self.changed.notify_all()

    # ---- test hooks ----
    def compact(self, through: int | None = None) -> None:
        """Forget the changes up to version `through` (default: all so far), as etcd compaction does: a watch from an
        older version gets 410."""
        with self.lock:
            through = self._latest() if through is None else through
            self.events = [e for e in self.events if e.version > through]
            self.oldest = through

    def end(self) -> None:
        self._finish("end")

    def drop(self) -> None:
        self._finish("drop")

    def bookmark(self) -> None:
        with self.lock:
            for stream in self.streams:
                stream.bookmark_due = stream.bookmarks
            self.changed.notify_all()

    def wait_for_streams(self, count: int, timeout: float = 10.0) -> None:
        """Block until `count` watch streams are open (a client has (re)connected), or fail the test."""
        with self.lock:
            if not self.changed.wait_for(lambda: len(self.streams) >= count, timeout):
                raise AssertionError(f"expected {count} open watch streams, have {len(self.streams)}")

    def _finish(self, how: str) -> None:
        with self.lock:
            for stream in self.streams:
                stream.ending = how
            self.changed.notify_all()

    # ---- serving ----
    def serve(self, handler: BaseHTTPRequestHandler, resource: ResourceType, namespace: str | None,
              query: dict[str, list[str]], snapshot: Callable[[], tuple[list[dict], int]],
              stopping: threading.Event) -> None:
        """Answer one watch request on `handler`'s connection until the stream ends. `snapshot()` gives the objects
        the watch covers and the current version (called under the lock)."""
        labels = parse_label_selector(query.get("labelSelector", [""])[0])
        requested = query.get("resourceVersion", [""])[0]
        timeout = float(query.get("timeoutSeconds", ["0"])[0] or 0)
        deadline = time.monotonic() + timeout if timeout > 0 else None
        stream = _Stream(resource, namespace, labels, query.get("allowWatchBookmarks", [""])[0] in ("true", "1"))
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        with self.lock:
            if requested in ("", "0"):
                objects, seen = snapshot()
                first = [{"type": "ADDED", "object": obj} for obj in objects
                         if all(test(obj.get("metadata", {}).get("labels") or {}) for test in labels)]
            elif int(requested) < self.oldest:
                expired = ApiError(410, "Expired", f"too old resource version: {requested} ({self.oldest})").status()
                first, seen = [{"type": "ERROR", "object": expired}], -1
            else:
                first, seen = [], int(requested)
            self.streams.append(stream)
            self.changed.notify_all()
        try:
            if not self._send(handler, first) or seen < 0:
                self._close(handler, "end")
                return
            while True:
                with self.lock:
                    def due(after: int = seen) -> bool:
                        return bool(stream.ending or stream.bookmark_due or stopping.is_set() or (
                            deadline is not None and time.monotonic() >= deadline) or any(
                            e.version > after for e in self.events))
                    self.changed.wait_for(due, None if deadline is None else max(0.0, deadline - time.monotonic()))
                    batch = [e for e in self.events if e.version > seen]
                    seen = max([seen, *(e.version for e in batch)])
                    events = [{"type": e.type, "object": copy.deepcopy(e.object)} for e in batch if stream.wants(e)]
                    if stream.bookmark_due:
                        stream.bookmark_due = False
                        events.append({"type": "BOOKMARK", "object": {
                            "kind": resource.kind, "apiVersion": resource.api_version,
                            "metadata": {"resourceVersion": str(max(seen, self._latest()))}}})
                    ending = stream.ending or ("end" if stopping.is_set() or (
                        deadline is not None and time.monotonic() >= deadline) else "")
                if not self._send(handler, events):
                    return
                if ending:
                    self._close(handler, ending)
                    return
        finally:
            with self.lock:
                self.streams.remove(stream)
                self.changed.notify_all()

    def _latest(self) -> int:
        return max([self.oldest, *(e.version for e in self.events)])

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, events: list[dict[str, Any]]) -> bool:
        """Write each event as one chunk (a JSON line); False when the client went away."""
        try:
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                handler.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            handler.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
            return False

    @staticmethod
    def _close(handler: BaseHTTPRequestHandler, how: str) -> None:
        handler.close_connection = True
        try:
            if how == "drop":  # no terminating chunk: the client reads a stream that ended in the middle
                handler.connection.shutdown(socket.SHUT_RDWR)
            else:
                handler.wfile.write(b"0\r\n\r\n")
                handler.wfile.flush()
        except OSError:
            pass
