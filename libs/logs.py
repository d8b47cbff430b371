"""Log setup shared by every talkserve process: level, text or JSON lines, quiet libraries, request ids.

`TALKSERVE_LOG_LEVEL` (default INFO) sets the level and `TALKSERVE_LOG_FORMAT` (`text`, the
default, or `json`: one object a line, for log collectors) the format. Each line names the
service and the request it belongs to (`REQUEST_ID`, set by the gateway from `X-Request-ID`
and by the services from the gRPC metadata that carries it). Libraries that log heavily at
DEBUG (numba's compiler writes some 10,000 lines while the engine starts) stay at WARNING,
so a debug level shows talkserve's own messages. (LiteRT's C++ side writes one line of its
own, "Created TensorFlow Lite XNNPACK delegate", straight to stderr when a face model loads.)
"""

from __future__ import annotations

import logging
import os
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")

# third-party loggers that would flood a DEBUG log
QUIET = ("numba", "urllib3", "botocore", "s3transfer", "httpx", "httpcore", "PIL", "matplotlib", "asyncio",
         "multipart", "python_multipart", "grpc", "aioice", "aiortc", "hpack", "websockets")


class _Context(logging.Filter):
    """Adds the service's name and the current request id to every record."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = REQUEST_ID.get()
        return True


def configure(service: str) -> None:
    """Send this process's logs to stderr as its settings say; call once at start."""
    level = logging.getLevelName(os.environ.get("TALKSERVE_LOG_LEVEL", "INFO").upper())
    if not isinstance(level, int):
        level = logging.INFO
    handler = logging.StreamHandler()
    handler.addFilter(_Context(service))
    if os.environ.get("TALKSERVE_LOG_FORMAT", "text").lower() == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(request_id)s",
                                           rename_fields={"asctime": "time", "levelname": "level",
                                                          "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(service)s %(name)s [%(request_id)s]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))
