"""A real `purellm serve` subprocess on a free loopback port, for the server tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]

TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n<tools>\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}</tools>"
    "<|im_end|>\n"
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}"
    "<|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'system' and loop.first %}"
    "{% elif m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n{{ m.content }}"
    "{% for tc in m.tool_calls %}<tool_call>\n"
    '{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}'
    "\n</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n"
    "</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RemoteServer:
    def __init__(self, args: list[str], api_key: str | None = None, env: dict | None = None):
        self.port = free_port()
        self.api_key = api_key
        self.base = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "purellm", "serve", *args, "--port", str(self.port)]
        if api_key:
            command += ["--api-key", api_key]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def health_codes(self, timeout: float = 180) -> list[int]:
        """Poll /health until 200; the status codes seen on the way (None: not up yet)."""
        seen: list = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.output}")
            try:
                code = httpx.get(self.url("/health"), timeout=5).status_code
            except httpx.TransportError:
                code = None
            if not seen or seen[-1] != code:
                seen.append(code)
            if code == 200:
                return seen
            time.sleep(0.1)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.output}")

    def client(self, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.url("/v1"), api_key=self.api_key or "none", **kwargs)

    def async_client(self, **kwargs):
        import openai

        return openai.AsyncOpenAI(
            base_url=self.url("/v1"), api_key=self.api_key or "none", **kwargs
        )

    def post(self, path: str, body=None, **kwargs) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 60)
        return httpx.post(self.url(path), json=body, headers=headers, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 60)
        return httpx.get(self.url(path), headers=headers, **kwargs)

    def metrics(self) -> dict[str, float]:
        """Metric samples without labels other than model_name: {name: value}."""
        out = {}
        for line in httpx.get(self.url("/metrics"), timeout=10).text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name_labels, value = line.rsplit(" ", 1)
            out[name_labels.split("{")[0] + _extra_labels(name_labels)] = float(value)
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _extra_labels(name_labels: str) -> str:
    """'{finished_reason="stop"}' etc.: the labels besides model_name, for metric keys."""
    if "{" not in name_labels:
        return ""
    labels = name_labels.split("{", 1)[1].rstrip("}").split(",")
    extra = [label for label in labels if not label.startswith("model_name=")]
    return "{" + ",".join(extra) + "}" if extra else ""


def next_events(lines, count: int) -> list[str]:
    """The next `count` `data:` lines from an iterator over a stream's lines."""
    out: list[str] = []
    while len(out) < count:
        line = next(lines)
        if line.startswith("data:"):
            out.append(line)
    return out


def sse_events(response: httpx.Response) -> list:
    """The `data:` payloads of a streamed response, JSON-decoded ("[DONE]" kept as text)."""
    import json

    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
