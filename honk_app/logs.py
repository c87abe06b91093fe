"""structlog, configured once at start-up: JSON in production, readable in a terminal."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from honk_app.redact import Redactor, redacting_processor


def configure_logging(
    *, level: str, fmt: str, redactor: Redactor, stream: TextIO | None = None
) -> None:
    """`stream`: where the lines go (standard error unless given)."""
    stream = stream or sys.stderr
    numeric = logging.getLevelNamesMapping()[level.upper()]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redacting_processor(redactor),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    # Libraries (uvicorn, httpx, githubkit) log through the standard library.
    logging.basicConfig(
        level=max(numeric, logging.INFO),
        stream=stream,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
