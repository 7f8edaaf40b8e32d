"""A minimal QMP client (QEMU's JSON monitor protocol) over a unix socket, with the standard library.

QMP answers a synchronous command only when it has finished, which HMP does not tell (pitfall 9):
that is what makes `dump-guest-memory` usable from a script.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from kdumpy.errors import LabError

__all__ = ["Qmp"]


class Qmp:
    """`with Qmp(path) as q: q.command("inject-nmi")`."""

    def __init__(self, path: Path, timeout: float = 30) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""

    def __enter__(self) -> Qmp:
        deadline = time.monotonic() + self.timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                break
            except OSError as e:
                sock.close()
                # QEMU creates the socket a moment after it starts.
                if time.monotonic() > deadline:
                    raise LabError(f"cannot connect to QMP at {self.path}: {e}") from e
                time.sleep(0.2)
        self._sock = sock
        self._receive(self.timeout)  # the greeting
        self.command("qmp_capabilities")
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _receive(self, timeout: float) -> dict[str, Any]:
        assert self._sock is not None
        self._sock.settimeout(timeout)
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError as e:
                raise LabError(f"QMP: no answer within {timeout:.0f} s") from e
            if not chunk:
                raise LabError("QMP: QEMU closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def command(self, name: str, timeout: float | None = None, **arguments: Any) -> Any:
        """Run one command; its "return" value, or a LabError carrying QMP's error description."""
        assert self._sock is not None
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        self._sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            # Asynchronous events (e.g. DUMP_COMPLETED, STOP) may come before the answer.
            message = self._receive(timeout or self.timeout)
            if "return" in message:
                return message["return"]
            if "error" in message:
                raise LabError(f"QMP {name}: {message['error'].get('desc', message['error'])}")
