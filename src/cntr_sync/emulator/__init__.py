"""A faithful local OpenAI Containers API, for tests, demos and benchmarks.

``Emulator`` holds the state and answers requests (in-process through
``httpx.MockTransport(emulator.handle)``); ``EmulatorServer``/``serve`` put it on a
real socket; ``FaultConfig`` and ``GatewayStyle`` shape how it misbehaves; and
``EmulatorControl`` drives the ``/_emulator/`` control surface of a server started
with ``control=True``.

    core        Emulator: state behind one lock, the nine operations, auth, counts
    store       containers, files, ids, pagination, expiry (called under the lock)
    multipart   streaming multipart parsing into spool files; filename decoding
    faults      scripted and seeded random faults, rate limiting, retry hints
    settings    FaultConfig, GatewayStyle, operation names
    wire        EmuRequest/EmuResponse, ApiError, the route table
    transport   httpx adapters: Emulator.handle, EmulatorTransport
    control     the /_emulator/ HTTP endpoints
    client      EmulatorControl, their Python client
    clock       ManualClock, a hand-driven clock for tests
    server      EmulatorServer and serve() on http.server
"""

from .client import EmulatorControl
from .clock import ManualClock
from .core import Emulator, RequestRecord
from .server import EmulatorServer, serve
from .settings import API_OPERATIONS, FaultConfig, GatewayStyle, Operation
from .transport import EmulatorTransport
from .wire import ApiError

__all__ = [
    "API_OPERATIONS",
    "ApiError",
    "Emulator",
    "EmulatorControl",
    "EmulatorServer",
    "EmulatorTransport",
    "FaultConfig",
    "GatewayStyle",
    "ManualClock",
    "Operation",
    "RequestRecord",
    "serve",
]
