"""The provider boundary: one handle per provider maps foreign exceptions, traces, and stays the provider.

The providers here are small classes of the shapes real providers have (an async method, one that
returns a stream, an async-generator method, lifecycle methods, plain attributes); the last test builds
a real stack with the real ``inline::localfs`` files provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from underlay.api.errors import (
    InvalidRequestError,
    ServiceUnavailableError,
    UnderlayError,
    UpstreamError,
    UpstreamTimeoutError,
)
from underlay.api.inference import ChatCompletionChunk, ChatCompletionRequest, ChoiceDelta, ChunkChoice, Usage
from underlay.core.boundary import MAX_DETAIL, ProviderHandle, unwrap, wrap_provider
from underlay.core.quotas.usage import UsageLedger, ledger_var
from underlay.core.telemetry.config import TelemetryConfig
from underlay.core.telemetry.runtime import Telemetry


class Backend:
    """A provider whose calls raise whatever the test sets in ``fault``."""

    def __init__(self) -> None:
        self.provider_id = "p1"
        self.fault: BaseException | None = None
        self.initialized = False

    async def initialize(self) -> None:
        self.initialized = True

    async def shutdown(self) -> None:
        if self.fault is not None:
            raise self.fault

    async def call(self) -> str:
        if self.fault is not None:
            raise self.fault
        return "ok"

    async def stream(self) -> AsyncIterator[str]:
        return self._items()

    async def _items(self) -> AsyncIterator[str]:
        yield "a"
        if self.fault is not None:
            raise self.fault
        yield "b"

    async def words(self) -> AsyncIterator[str]:
        yield "x"
        if self.fault is not None:
            raise self.fault

    def label(self) -> str:
        return f"backend {self.provider_id}"


FOREIGN = [
    (ValueError("bad json"), UpstreamError, 502, "ValueError: bad json"),
    (KeyError("choices"), UpstreamError, 502, "KeyError: 'choices'"),
    (TimeoutError(), UpstreamTimeoutError, 504, "TimeoutError"),
    (httpx.ReadTimeout("read timed out"), UpstreamTimeoutError, 504, "ReadTimeout: read timed out"),
    (ConnectionRefusedError(111, "refused"), ServiceUnavailableError, 503, "ConnectionRefusedError"),
    (httpx.ConnectError("all connection attempts failed"), ServiceUnavailableError, 503, "ConnectError"),
]


def _telemetry() -> tuple[Telemetry, InMemorySpanExporter]:
    telemetry = Telemetry(TelemetryConfig(store_spans=False), None)
    exporter = InMemorySpanExporter()
    telemetry.provider.add_span_processor(SimpleSpanProcessor(exporter))
    return telemetry, exporter


@pytest.mark.parametrize("traced", [False, True], ids=["plain", "traced"])
@pytest.mark.parametrize(("fault", "kind", "status", "detail"), FOREIGN)
async def test_foreign_exceptions_become_typed_errors_naming_the_provider(
    traced: bool, fault: Exception, kind: type[UnderlayError], status: int, detail: str
) -> None:
    backend = Backend()
    telemetry = _telemetry()[0] if traced else None
    provider = wrap_provider(backend, api="inference", provider_id="p1", telemetry=telemetry)
    backend.fault = fault
    with pytest.raises(kind) as caught:
        await provider.call()
    assert caught.value.status_code == status
    assert caught.value.message.startswith("Provider 'p1': ") and detail in caught.value.message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained traceback text


@pytest.mark.parametrize("traced", [False, True], ids=["plain", "traced"])
async def test_a_stream_failing_midway_is_mapped_the_same(traced: bool) -> None:
    backend = Backend()
    telemetry = _telemetry()[0] if traced else None
    provider = wrap_provider(backend, api="inference", provider_id="p1", telemetry=telemetry)
    backend.fault = httpx.ReadError("connection reset by peer")  # the upstream went away mid-stream
    for stream in (await provider.stream(), provider.words()):
        seen = []
        with pytest.raises(ServiceUnavailableError) as caught:
            async for item in stream:
                seen.append(item)
        assert seen in (["a"], ["x"]) and "Provider 'p1'" in caught.value.message


@pytest.mark.parametrize("traced", [False, True], ids=["plain", "traced"])
async def test_our_own_errors_pass_through_untouched(traced: bool) -> None:
    backend = Backend()
    telemetry = _telemetry()[0] if traced else None
    provider = wrap_provider(backend, api="inference", provider_id="p1", telemetry=telemetry)
    backend.fault = InvalidRequestError("temperature is out of range", param="temperature")
    with pytest.raises(InvalidRequestError) as caught:
        await provider.call()
    assert caught.value is backend.fault
    with pytest.raises(InvalidRequestError) as caught:
        [item async for item in await provider.stream()]
    assert caught.value is backend.fault


async def test_contract_exceptions_and_pass_through_apis_keep_their_exceptions() -> None:
    files = Backend()
    files.fault = FileNotFoundError("no such key")  # the files contract: content missing from storage
    with pytest.raises(FileNotFoundError):
        await wrap_provider(files, api="files", provider_id="localfs").call()
    files.fault = PermissionError("read-only file system")
    with pytest.raises(UpstreamError, match="Provider 'localfs': PermissionError"):
        await wrap_provider(files, api="files", provider_id="localfs").call()
    tools = Backend()  # the tool-runtime router turns a tool's own failure into a tool result
    tools.fault = RuntimeError("tool bug")
    with pytest.raises(RuntimeError):
        await wrap_provider(tools, api="tool_runtime", provider_id="mcp").call()


async def test_a_huge_exception_text_is_bounded() -> None:
    backend = Backend()
    backend.fault = ValueError("x" * 1_000_000)
    with pytest.raises(UpstreamError) as caught:
        await wrap_provider(backend, api="inference", provider_id="p1").call()
    assert len(caught.value.message) < MAX_DETAIL + 100 and "(1000000 characters)" in caught.value.message


async def test_the_handle_stands_for_the_provider() -> None:
    backend = Backend()
    provider = wrap_provider(backend, api="inference", provider_id="p1")
    assert isinstance(provider, Backend) and isinstance(provider, ProviderHandle)
    assert unwrap(provider) is backend and provider.inner is backend and unwrap(backend) is backend
    assert provider.label() == "backend p1" and provider.provider_id == "p1"
    provider.provider_id = "renamed"  # writes reach the provider itself
    assert backend.provider_id == "renamed" and provider.label() == "backend renamed"
    await provider.initialize()  # lifecycle methods are the provider's own: no mapping, no span
    assert backend.initialized
    backend.fault = ValueError("shutdown hiccup")
    with pytest.raises(ValueError):
        await provider.shutdown()


async def test_the_span_keeps_the_original_error_and_the_caller_gets_the_mapped_one() -> None:
    telemetry, exporter = _telemetry()
    backend = Backend()
    provider = wrap_provider(backend, api="inference", provider_id="p1", telemetry=telemetry)
    backend.fault = httpx.ConnectError("all connection attempts failed")
    with pytest.raises(ServiceUnavailableError):
        [item async for item in await provider.stream()]
    (span,) = exporter.get_finished_spans()
    assert span.name == "provider p1.stream" and span.attributes["underlay.stream.chunks"] == 1
    assert span.status.status_code.name == "ERROR" and span.events[0].attributes["exception.type"] == "ConnectError"
    text = telemetry.metrics.prometheus_text().decode()
    assert 'underlay_call_duration_seconds_count{api="inference",method="stream",outcome="error",provider="p1"}' in text


def _remove_stored(root: Path, name: str) -> int:
    found = list(root.rglob(name))
    for path in found:
        path.unlink()
    return len(found)


async def test_the_stack_puts_every_provider_behind_the_boundary(tmp_path: Path) -> None:
    from underlay.core.config import parse_run_config
    from underlay.core.stack import Stack
    from underlay.providers.inline.files.localfs import LocalFSFilesProvider

    config = parse_run_config(
        {
            "state_dir": str(tmp_path),
            "apis": ["files"],
            "providers": {"files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}]},
            "telemetry": {"enabled": False},
        }
    )
    stack = Stack(config)
    await stack.start()
    try:
        provider = stack.providers["files"]["localfs"]
        assert type(provider) is ProviderHandle and isinstance(provider, LocalFSFilesProvider)
        assert stack.routers["files"].providers["localfs"] is provider

        async def content() -> AsyncIterator[bytes]:
            yield b"hello"

        file = await stack.routers["files"].create_file("a.txt", "user_data", content())
        assert _remove_stored(tmp_path, file.id) == 1  # the bytes vanish from storage behind the server's back
        with pytest.raises(UpstreamError) as caught:  # the contract's FileNotFoundError reached the router
            await stack.routers["files"].retrieve_file_content(file.id)
        assert caught.value.code == "file_content_missing"
    finally:
        await stack.stop()


class Model:
    """An inference provider that records the request it got and streams one chunk, then its usage."""

    def __init__(self) -> None:
        self.provider_id = "llm"
        self.seen: list[ChatCompletionRequest] = []

    async def openai_chat_completion(self, params: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        self.seen.append(params)
        return self._chunks(params)

    async def _chunks(self, params: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        yield ChatCompletionChunk(
            id="c", created=0, model="m", choices=[ChunkChoice(index=0, delta=ChoiceDelta(content="hi"))]
        )
        if params.stream_options is not None and params.stream_options.include_usage:
            usage = Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)
            yield ChatCompletionChunk(id="c", created=0, model="m", choices=[], usage=usage)


@pytest.mark.parametrize("traced", [False, True], ids=["plain", "traced"])
async def test_the_boundary_charges_reported_usage_to_the_request(traced: bool) -> None:
    telemetry = _telemetry()[0] if traced else None
    backend = Model()
    provider = wrap_provider(backend, api="inference", provider_id="llm", telemetry=telemetry)
    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    ledger = UsageLedger()
    token = ledger_var.set(ledger)
    try:
        chunks = [c async for c in await provider.openai_chat_completion(request)]
    finally:
        ledger_var.reset(token)
    assert backend.seen[0].stream_options is not None  # the quota asked the model for its usage chunk...
    assert [c.choices[0].delta.content for c in chunks] == ["hi"]  # ...which the client, not asking, never sees
    assert ledger.tokens == 7 and request.stream_options is None
    if telemetry is not None:  # the span and the token metrics still saw the usage chunk
        text = telemetry.metrics.prometheus_text().decode()
        assert 'underlay_inference_tokens_total{model="m",provider="llm",type="completion"} 4.0' in text
    outside = [c async for c in await provider.openai_chat_completion(request)]  # no metered request: as is
    assert backend.seen[1] is request and len(outside) == 1 and ledger.tokens == 7
