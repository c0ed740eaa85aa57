"""Telemetry end to end: a real ``underlay run`` in front of the echo server, a real OTLP/HTTP receiver.

client → Underlay (remote::openai adapter, JSON logs, OTLP export) → echo Underlay → echo provider.
The trace of one chat completion must hold route → router → provider → upstream HTTP spans, be
readable through /v1/telemetry, reach the OTLP receiver, and move the /metrics counters; log lines
must be JSON with the request id and never a secret.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests.integration.harness import RunningServer, free_port, start_server

API_KEY = "sk-front-secret-4f9a8b7c6d"
URL_PASSWORD = "hunter2-url-password"
HEADER_KEY = "sk-caller-header-key-77aa55"


class OtlpReceiver:
    """An OTLP/HTTP collector on loopback: decodes protobuf export requests with the official classes."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.metric_names: set[str] = set()
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                encoding = self.headers.get("content-encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                receiver.paths.append(self.path)
                if self.path == "/v1/traces":
                    request = trace_service_pb2.ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    for resource_spans in request.resource_spans:
                        for scope_spans in resource_spans.scope_spans:
                            receiver.spans.extend(scope_spans.spans)
                elif self.path == "/v1/metrics":
                    request = metrics_service_pb2.ExportMetricsServiceRequest()
                    request.ParseFromString(body)
                    for resource_metrics in request.resource_metrics:
                        for scope_metrics in resource_metrics.scope_metrics:
                            receiver.metric_names.update(m.name for m in scope_metrics.metrics)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    yield otlp
    otlp.close()


@pytest.fixture(scope="module")
def front(
    echo_server: RunningServer, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    down = f"http://telemetry:{URL_PASSWORD}@127.0.0.1:{free_port()}/v1"
    config = {
        "apis": ["inference", "models", "telemetry"],
        "providers": {
            "inference": [
                {
                    "provider_id": "oa",
                    "provider_type": "remote::openai",
                    "config": {"base_url": echo_server.v1, "api_key": API_KEY},
                },
                {
                    "provider_id": "down",
                    "provider_type": "remote::passthrough",
                    "config": {"base_url": down, "max_retries": 1, "backoff": 0.01},
                },
            ]
        },
        "models": [{"model_id": "down-model", "provider_id": "down", "provider_model_id": "anything"}],
        "server": {"log_format": "json", "log_level": "info"},
        "telemetry": {
            "flush_seconds": 0.2,
            "otlp": {"endpoint": receiver.endpoint, "metrics_interval_seconds": 0.5},
        },
    }
    server = start_server(config, tmp_path_factory.mktemp("telemetry"))
    yield server
    server.stop()


def _spans(server: RunningServer, trace_id: str, layers: set[str]) -> list[dict[str, Any]]:
    """The trace's spans once every layer in ``layers`` is stored (the route span ends after the body)."""
    deadline = time.monotonic() + 10
    while True:
        response = httpx.get(f"{server.v1}/telemetry/traces/{trace_id}/spans", timeout=10)
        if response.status_code == 200:
            spans = response.json()["data"]
            if layers <= {s["layer"] for s in spans} or time.monotonic() > deadline:
                return spans
        elif time.monotonic() > deadline:
            raise AssertionError(f"trace {trace_id} never appeared: {response.text}")
        time.sleep(0.1)


def _by_layer(spans: list[dict[str, Any]], layer: str) -> dict[str, Any]:
    found = [s for s in spans if s["layer"] == layer]
    assert len(found) == 1, f"expected one {layer} span in {[(s['name'], s['layer']) for s in spans]}"
    return found[0]


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_chat_completion_trace_has_every_layer(front: RunningServer) -> None:
    raw = front.openai().chat.completions.with_raw_response.create(
        model="oa/echo/echo", messages=[{"role": "user", "content": "trace me please"}]
    )
    assert raw.parse().choices[0].message.content == "echo: trace me please"
    trace_id = raw.headers["x-trace-id"]
    spans = _spans(front, trace_id, {"route", "router", "provider", "upstream"})
    route, router = _by_layer(spans, "route"), _by_layer(spans, "router")
    provider, upstream = _by_layer(spans, "provider"), _by_layer(spans, "upstream")
    assert route["parent_span_id"] is None
    assert router["parent_span_id"] == route["span_id"]
    assert provider["parent_span_id"] == router["span_id"]
    assert upstream["parent_span_id"] == provider["span_id"]
    assert {s["trace_id"] for s in spans} == {trace_id}

    assert route["name"] == "POST /v1/chat/completions" and route["kind"] == "server"
    assert route["attributes"]["http.response.status_code"] == 200
    assert route["attributes"]["underlay.request_id"] == raw.headers["x-request-id"]
    assert router["attributes"]["gen_ai.request.model"] == "oa/echo/echo"
    assert provider["attributes"]["underlay.provider_id"] == "oa"
    assert provider["attributes"]["gen_ai.request.model"] == "echo/echo"
    usage = raw.parse().usage
    assert provider["attributes"]["gen_ai.usage.input_tokens"] == usage.prompt_tokens > 0
    assert provider["attributes"]["gen_ai.usage.output_tokens"] == usage.completion_tokens > 0
    assert provider["attributes"]["underlay.latency_ms"] > 0
    assert upstream["kind"] == "client" and upstream["attributes"]["url.path"] == "/v1/chat/completions"
    assert upstream["attributes"]["http.response.status_code"] == 200
    for inner in (router, provider, upstream):  # children lie inside their parents in time
        assert route["start_time_ns"] <= inner["start_time_ns"] <= inner["end_time_ns"] <= route["end_time_ns"]

    summary = httpx.get(f"{front.v1}/telemetry/traces/{trace_id}", timeout=10).json()
    assert summary["id"] == trace_id and summary["root_span_id"] == route["span_id"]
    assert summary["route"] == "/v1/chat/completions" and summary["http_status"] == 200
    assert summary["status"] == "ok" and summary["principal"] == "anonymous"

    tree = httpx.get(f"{front.v1}/telemetry/spans/{route['span_id']}/tree", timeout=10).json()
    chain = []
    node = tree
    while node:
        chain.append(node["span"]["layer"])
        node = node["children"][0] if node["children"] else None
    assert chain == ["route", "router", "provider", "upstream"]
    shallow = httpx.get(f"{front.v1}/telemetry/spans/{route['span_id']}/tree?max_depth=1", timeout=10).json()
    assert shallow["children"][0]["span"]["layer"] == "router" and shallow["children"][0]["children"] == []


def test_stream_records_time_to_first_token(front: RunningServer) -> None:
    with front.openai().chat.completions.with_streaming_response.create(
        model="oa/echo/echo",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        trace_id = response.headers["x-trace-id"]
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: one two three"
    provider = _by_layer(_spans(front, trace_id, {"route", "provider"}), "provider")
    attributes = provider["attributes"]
    assert 0 < attributes["underlay.time_to_first_token_ms"] <= attributes["underlay.latency_ms"]
    assert attributes["underlay.stream.chunks"] == len(chunks)
    assert attributes["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens


def test_trace_list_filters_and_pages(front: RunningServer) -> None:
    client = front.openai()
    made = set()
    for word in ("first", "second", "third"):
        raw = client.chat.completions.with_raw_response.create(
            model="oa/echo/echo", messages=[{"role": "user", "content": word}]
        )
        made.add(raw.headers["x-trace-id"])
    route = "/v1/chat/completions"
    deadline = time.monotonic() + 15  # spans reach the store in batches, off the request path
    while True:
        listed = httpx.get(f"{front.v1}/telemetry/traces", params={"route": route, "limit": 100}, timeout=10).json()
        if made <= {t["id"] for t in listed["data"]} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert made <= {t["id"] for t in listed["data"]}, "the three traces never reached the store"
    assert {t["route"] for t in listed["data"]} == {route}
    starts = [t["start_time_ns"] for t in listed["data"]]
    assert starts == sorted(starts, reverse=True)

    first = httpx.get(f"{front.v1}/telemetry/traces", params={"route": route, "limit": 1}, timeout=10).json()
    assert first["has_more"] is True and first["data"][0]["id"] == listed["data"][0]["id"]
    second = httpx.get(
        f"{front.v1}/telemetry/traces", params={"route": route, "limit": 1, "after": first["last_id"]}, timeout=10
    ).json()
    assert second["data"][0]["id"] == listed["data"][1]["id"]

    later = time.time() + 3600
    empty = httpx.get(f"{front.v1}/telemetry/traces", params={"start_time": later}, timeout=10).json()
    assert empty["data"] == [] and empty["has_more"] is False
    models = httpx.get(f"{front.v1}/telemetry/traces", params={"route": "/v1/models"}, timeout=10).json()
    assert all(t["route"] == "/v1/models" for t in models["data"])
    nobody = httpx.get(f"{front.v1}/telemetry/traces", params={"principal": "someone-else"}, timeout=10).json()
    assert nobody["data"] == []


def test_failed_request_is_an_error_trace(front: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        front.openai().chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    trace_id = info.value.response.headers["x-trace-id"]
    _spans(front, trace_id, {"route"})
    errors = httpx.get(
        f"{front.v1}/telemetry/traces", params={"status": "error", "http_status": 404, "limit": 100}, timeout=10
    ).json()
    assert trace_id in {t["id"] for t in errors["data"]}
    assert all(t["status"] == "error" and t["http_status"] == 404 for t in errors["data"])


def test_a_long_path_is_cut_in_its_span(front: RunningServer) -> None:
    # A 40,000-character id was stored whole in the route span's name and url.path of every such trace.
    answer = httpx.get(f"{front.v1}/vector_stores/vs_{'a' * 40_000}", timeout=20)
    assert answer.status_code == 404
    route = _by_layer(_spans(front, answer.headers["x-trace-id"], {"route"}), "route")
    assert len(route["attributes"]["url.path"]) <= 513 and route["attributes"]["url.path"].endswith("…")
    assert len(route["name"]) <= 520


def test_telemetry_api_errors_use_the_envelope(front: RunningServer) -> None:
    cases = [
        (f"{front.v1}/telemetry/traces/{'0' * 32}", 404, "trace_id"),
        (f"{front.v1}/telemetry/traces/{'0' * 32}/spans", 404, "trace_id"),
        (f"{front.v1}/telemetry/spans/{'0' * 16}/tree", 404, "span_id"),
        (f"{front.v1}/telemetry/traces?limit=0", 400, "limit"),
        (f"{front.v1}/telemetry/traces?status=bad", 400, "status"),
        (f"{front.v1}/telemetry/traces?after={'f' * 32}", 404, "after"),
    ]
    for url, status, param in cases:
        response = httpx.get(url, timeout=10)
        assert response.status_code == status, url
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, error
        assert error["message"]


def test_metrics_counters_move(front: RunningServer) -> None:
    before = httpx.get(f"{front.base_url}/metrics", timeout=10)
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
    labels = {"http_route": "/v1/chat/completions", "http_response_status_code": "200"}
    requests_before = _metric(before.text, "underlay_requests_total", **labels)
    tokens_before = _metric(before.text, "underlay_inference_tokens_total", provider="oa", type="completion")
    client = front.openai()
    answers = [
        client.chat.completions.create(model="oa/echo/echo", messages=[{"role": "user", "content": f"n {i}"}])
        for i in range(3)
    ]
    after = httpx.get(f"{front.base_url}/metrics", timeout=10).text
    assert _metric(after, "underlay_requests_total", **labels) == requests_before + 3
    completion_tokens = sum(a.usage.completion_tokens for a in answers)
    assert _metric(after, "underlay_inference_tokens_total", provider="oa", type="completion") == (
        tokens_before + completion_tokens
    )
    assert _metric(after, "underlay_request_duration_seconds_count", **labels) == requests_before + 3
    assert _metric(after, "underlay_inference_tokens_per_second_count", provider="oa") > 0
    assert "# TYPE underlay_request_duration_seconds histogram" in after


def test_otlp_receiver_gets_spans_and_metrics(front: RunningServer, receiver: OtlpReceiver) -> None:
    raw = front.openai().chat.completions.with_raw_response.create(
        model="oa/echo/echo", messages=[{"role": "user", "content": "to the collector"}]
    )
    trace_id = bytes.fromhex(raw.headers["x-trace-id"])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        names = {s.name for s in receiver.spans if s.trace_id == trace_id}
        if "POST /v1/chat/completions" in names and "underlay.requests" in receiver.metric_names:
            break
        time.sleep(0.2)
    names = {s.name for s in receiver.spans if s.trace_id == trace_id}
    assert {"POST /v1/chat/completions", "router inference.openai_chat_completion"} <= names, names
    assert "provider oa.openai_chat_completion" in names
    assert {"underlay.requests", "underlay.request.duration"} <= receiver.metric_names
    assert "/v1/traces" in receiver.paths and "/v1/metrics" in receiver.paths


def test_json_logs_carry_the_request_id_and_no_secret(front: RunningServer) -> None:
    headers = {"X-Underlay-Provider-Data": json.dumps({"openai_api_key": HEADER_KEY})}
    response = httpx.post(
        f"{front.v1}/chat/completions",
        json={"model": "down-model", "messages": [{"role": "user", "content": "x"}]},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert URL_PASSWORD not in message and HEADER_KEY not in message
    request_id = response.headers["x-request-id"]
    trace_id = response.headers["x-trace-id"]

    deadline = time.monotonic() + 10
    while request_id not in front.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in front.log().splitlines() if line.strip()]
    entries = []
    for line in lines:
        if line.startswith("Underlay "):  # the start-up banner is printed, not logged
            continue
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry), entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
        entries.append(entry)
    mine = [e for e in entries if e.get("request_id") == request_id]
    assert mine, f"no log line for {request_id}"
    assert all(e["trace_id"] == trace_id for e in mine)
    assert any("retry" in e["message"] and e["level"] == "warning" for e in mine), mine
    text = front.log()
    for secret in (API_KEY, URL_PASSWORD, HEADER_KEY):
        assert secret not in text


def test_providers_listing_hides_secrets(front: RunningServer) -> None:
    text = httpx.get(f"{front.v1}/providers", timeout=10).text
    assert API_KEY not in text and URL_PASSWORD not in text
    data = {p["provider_id"]: p for p in json.loads(text)["data"]}
    assert data["oa"]["config"]["api_key"] == "********"


def test_disabled_telemetry_serves_no_metrics_and_says_why(echo_server: RunningServer, tmp_path: Path) -> None:
    config = {
        "apis": ["inference", "models", "telemetry"],
        "providers": {
            "inference": [
                {"provider_id": "oa", "provider_type": "remote::passthrough", "config": {"base_url": echo_server.v1}}
            ]
        },
        "telemetry": {"enabled": False},
    }
    server = start_server(config, tmp_path)
    try:
        reply = server.openai().chat.completions.with_raw_response.create(
            model="oa/echo/echo", messages=[{"role": "user", "content": "quiet"}]
        )
        assert "x-trace-id" not in reply.headers
        assert httpx.get(f"{server.base_url}/metrics", timeout=10).status_code == 404
        response = httpx.get(f"{server.v1}/telemetry/traces", timeout=10)
        assert response.status_code == 503
        assert "telemetry.enabled" in response.json()["error"]["message"]
    finally:
        server.stop()


def test_an_absent_collector_costs_requests_nothing(echo_server: RunningServer, tmp_path: Path) -> None:
    config = {
        "apis": ["inference", "models", "telemetry"],
        "providers": {
            "inference": [
                {"provider_id": "oa", "provider_type": "remote::passthrough", "config": {"base_url": echo_server.v1}}
            ]
        },
        "telemetry": {
            "flush_seconds": 0.2,
            "otlp": {
                "endpoint": f"http://127.0.0.1:{free_port()}",
                "timeout_seconds": 1,
                "metrics_interval_seconds": 0.5,
            },
        },
    }
    server = start_server(config, tmp_path)
    try:
        client = server.openai()
        for _ in range(3):
            answer = client.chat.completions.create(model="oa/echo/echo", messages=[{"role": "user", "content": "hi"}])
            assert answer.choices[0].message.content == "echo: hi"
        listed = httpx.get(f"{server.v1}/telemetry/traces", params={"route": "/v1/chat/completions"}, timeout=10)
        assert len(listed.json()["data"]) == 3  # the SQL store still has every trace
    finally:
        assert server.stop() == 0  # a graceful stop, exporters' flush bounded by their timeout


def test_traces_belong_to_the_authenticated_caller(
    echo_server: RunningServer, tmp_path: Path, external_provider_path: Path
) -> None:
    keys = {"alice": "alice-key-0123456789", "bob": "bob-key-9876543210"}
    config = {
        "apis": ["inference", "models", "telemetry"],
        "providers": {"inference": [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}]},
        "server": {
            "auth": {
                "providers": [
                    {
                        "type": "api_keys",
                        "keys": [
                            {"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": name}
                            for name, key in keys.items()
                        ],
                    }
                ]
            }
        },
        "telemetry": {"flush_seconds": 0.2},
    }
    server = start_server(config, tmp_path, extra_pythonpath=[external_provider_path])
    try:
        headers = {name: {"Authorization": f"Bearer {key}"} for name, key in keys.items()}
        reply = httpx.post(
            f"{server.v1}/chat/completions",
            json={"model": "echo/echo", "messages": [{"role": "user", "content": "mine"}]},
            headers=headers["alice"],
            timeout=10,
        )
        assert reply.status_code == 200
        trace_id = reply.headers["x-trace-id"]
        url = f"{server.v1}/telemetry/traces/{trace_id}"
        deadline = time.monotonic() + 10
        while (seen := httpx.get(url, headers=headers["alice"], timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, seen.text
            time.sleep(0.1)
        assert seen.json()["principal"] == "alice"
        spans = httpx.get(f"{url}/spans", headers=headers["alice"], timeout=10).json()["data"]
        route = next(s for s in spans if s["layer"] == "route")
        assert route["attributes"]["enduser.id"] == "alice"
        assert httpx.get(url, headers=headers["bob"], timeout=10).status_code == 404
        bobs = httpx.get(f"{server.v1}/telemetry/traces", headers=headers["bob"], timeout=10).json()["data"]
        assert trace_id not in {t["id"] for t in bobs}
        assert httpx.get(f"{server.v1}/telemetry/traces", timeout=10).status_code == 401
        refused = httpx.get(f"{server.base_url}/metrics", timeout=10)
        assert refused.status_code == 401 and refused.json()["error"]["type"]
        assert httpx.get(f"{server.base_url}/metrics", headers=headers["bob"], timeout=10).status_code == 200
    finally:
        server.stop()
