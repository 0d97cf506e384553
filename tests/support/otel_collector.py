"""A real OpenTelemetry collector for the tests: rotel, from PyPI (``rotel``, dev extra).

rotel is a collector written in Rust (Apache-2.0); its wheel carries the binary. It
receives OTLP over HTTP (and gRPC), and its debug log prints every span it receives in
the OpenTelemetry Collector's ``debug`` exporter layout, which ``spans`` reads back:

    Span #0
        Trace ID       : 043d6cb09edbf17fc6779f8cc8f22350
        Parent ID      : fe929351bfff4308
        ID             : cbd6bdeb7732718c
        Name           : child
        Kind           : SPAN_KIND_INTERNAL
    Attributes:
         -> gen_ai.request.model: Str(m)

Arize Phoenix (the other collector on PyPI) installs 860 MB into its own venv; the
Collector's own binary is on no registry this project can reach.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ANSI = re.compile(r"\x1b\[[0-9;]*m")
FIELD = re.compile(r"^\s*(Trace ID|Parent ID|ID|Name|Kind|Status code)\s*:\s?(.*)$")
ATTRIBUTE = re.compile(r"^\s*-> ([^:]+): (\w+)\((.*)\)$")


def rotel_binary() -> Path | None:
    spec = importlib.util.find_spec("rotel")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "rotel-agent"
    return binary if binary.is_file() else None


@dataclass
class ReceivedSpan:
    """One span as the collector printed it; attribute values as ``Type(value)`` text
    parsed to str, int, float or bool (lists stay text)."""

    trace_id: str = ""
    parent_id: str = ""
    span_id: str = ""
    name: str = ""
    kind: str = ""
    status: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)


def _value(kind: str, text: str) -> Any:
    if kind == "Int":
        return int(text)
    if kind == "Double":
        return float(text)
    if kind == "Bool":
        return text == "true"
    return text


def parse_debug_log(text: str) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    resource: dict[str, Any] = {}
    target: dict[str, Any] | None = None
    span: ReceivedSpan | None = None
    for raw in text.splitlines():
        line = ANSI.sub("", raw)
        if line.startswith("ResourceSpans #"):
            resource, target, span = {}, None, None
        elif line.startswith("Resource attributes:"):
            target = resource
        elif line.startswith("Span #"):
            span = ReceivedSpan(resource=resource)
            spans.append(span)
            target = None
        elif line.startswith("Attributes:") and span is not None:
            target = span.attributes
        elif line.startswith(("Events:", "Links:", "SpanEvent #", "ScopeSpans #")):
            target = None
        elif (m := ATTRIBUTE.match(line)) and target is not None:
            target[m.group(1)] = _value(m.group(2), m.group(3))
        elif (m := FIELD.match(line)) and span is not None:
            key = {
                "Trace ID": "trace_id",
                "Parent ID": "parent_id",
                "ID": "span_id",
                "Name": "name",
                "Kind": "kind",
                "Status code": "status",
            }[m.group(1)]
            setattr(span, key, m.group(2).strip())
    return spans


class Collector:
    """rotel on loopback: OTLP/HTTP at ``url``, received spans printed to ``log`` (or,
    ``debug_log=False``, only counted and dropped: a benchmark's sink)."""

    def __init__(
        self, binary: Path, log: Path, http_port: int, grpc_port: int, *, debug_log: bool = True
    ) -> None:
        self.url = f"http://127.0.0.1:{http_port}"
        self.log = log
        command = [
            str(binary),
            "start",
            "--otlp-http-endpoint",
            f"127.0.0.1:{http_port}",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{grpc_port}",
            "--exporter",
            "blackhole",
        ]
        if debug_log:
            command += ["--debug-log", "traces", "--debug-log-verbosity", "detailed"]
        self._out = log.open("wb")
        self.proc = subprocess.Popen(command, stdout=self._out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rotel exited: {self.log.read_text()[-2000:]}")
            if "Starting Rotel" in ANSI.sub("", self.log.read_text(errors="replace")):
                return
            time.sleep(0.1)
        raise RuntimeError("rotel did not start")

    def spans(self) -> list[ReceivedSpan]:
        return parse_debug_log(self.log.read_text(errors="replace"))

    def wait_for(self, names: set[str], timeout: float = 20) -> list[ReceivedSpan]:
        """The spans received once every name in ``names`` is among them."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if names <= {s.name for s in spans} or time.monotonic() > deadline:
                return spans
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
