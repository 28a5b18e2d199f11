"""systemd's sd_notify protocol, on our own: one datagram to ``$NOTIFY_SOCKET``.

Owns reading ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` and
sending the notification datagrams (READY, STATUS, WATCHDOG, STOPPING,
RELOADING). The protocol is small enough that a dependency is not worth it.

Must not raise, block or log: a missing or dead manager socket is normal
(not under systemd, under Kubernetes, in tests), so every send answers a bool.
Must not read ``os.environ`` after construction or change it: pass a mapping
to test, and decide what to send in the daemon.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from types import TracebackType

from cntr_sync.errors import one_line

# The manager keeps STATUS for `systemctl status`; a long one only wraps there.
STATUS_LIMIT = 200


class Notifier:
    """Sends sd_notify datagrams when ``NOTIFY_SOCKET`` is set; otherwise a no-op.

    Each message goes through a fresh non-blocking socket, so a Notifier is
    safe to share between threads and has nothing to leak; ``close`` and the
    context manager exist so callers need not care.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")

    @property
    def enabled(self) -> bool:
        """True when there is a manager socket to notify."""
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` as one datagram (``"A=1\\nB=2"``); False when not sent."""
        if self._address is None or not fields:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # A manager that stops reading must not stall the daemon:
                # a full queue fails the send (EAGAIN) instead of waiting.
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError:
            return False
        return True

    def ready(self) -> bool:
        """Start-up (or a reload) finished: READY=1."""
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """One line for ``systemctl status``: STATUS=..., newlines flattened, bounded."""
        return self.notify(f"STATUS={one_line(text, STATUS_LIMIT)}")

    def watchdog(self) -> bool:
        """Still alive: WATCHDOG=1; send every ``watchdog_interval()`` seconds."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """Graceful stop began: STOPPING=1."""
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        """A reload began: RELOADING=1 with MONOTONIC_USEC; send ``ready()`` when done.

        systemd 253+ (``Type=notify-reload``) matches the timestamp against the
        reload it asked for, so it must be CLOCK_MONOTONIC, as time.monotonic is
        on Linux.
        """
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of WATCHDOG_USEC), or None when off.

        None too when WATCHDOG_PID names another process: the watchdog was set
        up for a parent (e.g. a wrapper script), not for us.
        """
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                pid = int(self._watchdog_pid)
            except ValueError:
                return None
            if pid != os.getpid():
                return None
        # Half the timeout, as sd_watchdog_enabled(3) advises, leaves room for
        # a ping that comes late because the loop was busy.
        return usec / 2 / 1_000_000

    def close(self) -> None:
        """Nothing to release (a socket lives only for one send); kept for symmetry."""

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _socket_address(value: str) -> str | None:
    """The AF_UNIX address for a NOTIFY_SOCKET value, None when unusable.

    "@name" is Linux's abstract namespace (a leading NUL byte). Relative paths
    and other schemes (systemd's "vsock:") are not ours to guess at.
    """
    if not hasattr(socket, "AF_UNIX"):
        return None
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None
