"""Quota logic without a backend: limits resolution, windows, headers and the usage ledger."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from underlay.api.inference import ChatCompletionChunk, ChatCompletionRequest, ChoiceDelta, ChunkChoice, Usage
from underlay.core.config import ConfigError, parse_run_config
from underlay.core.quotas.config import QuotaConfig, QuotaLimits
from underlay.core.quotas.limiter import Decision, Subject, WindowUsage
from underlay.core.quotas.usage import UsageLedger, ledger_var, metered, usage_tokens, with_stream_usage
from underlay.core.quotas.windows import DAY, MINUTE, format_duration, retry_after


def test_override_replaces_only_the_fields_it_sets() -> None:
    config = QuotaConfig.model_validate(
        {
            "limits": {"requests_per_minute": 10, "tokens_per_day": 1000},
            "overrides": [
                {"principals": ["alice"], "limits": {"requests_per_minute": 100}},
                {"attributes": {"roles": ["premium"]}, "limits": {"requests_per_minute": 50, "tokens_per_day": None}},
            ],
        }
    )
    assert config.limits_for("bob", {}) == QuotaLimits(requests_per_minute=10, tokens_per_day=1000)
    assert config.limits_for("alice", {"roles": ["premium"]}) == QuotaLimits(
        requests_per_minute=100, tokens_per_day=1000
    )
    # An explicit null lifts the default limit for the tier.
    assert config.limits_for("carol", {"roles": ["basic", "premium"]}) == QuotaLimits(requests_per_minute=50)
    assert config.limits_for("dave", {"roles": "premium"}).requests_per_minute == 50
    assert config.limits_for("erin", {"roles": ["basic"]}).requests_per_minute == 10


def test_override_must_say_whom_it_applies_to() -> None:
    with pytest.raises(ValidationError, match="principals"):
        QuotaConfig.model_validate({"overrides": [{"limits": {"requests_per_minute": 1}}]})


def test_config_mistakes_are_one_line_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_config({"server": {"quotas": {"limits": {"requests_per_minut": 5}}}}, source="run.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("run.yaml: server.quotas.limits.requests_per_minut: unknown key")
    assert "requests_per_minute" in message
    with pytest.raises(ConfigError, match="server.quotas.backend"):
        parse_run_config({"server": {"quotas": {"backend": "memcached"}}}, source="run.yaml")


def test_windows_align_to_the_clock() -> None:
    now = 60 * 28_333_334 + 10.25  # 10.25 s past a minute boundary
    assert MINUTE.index(now) == int(now // 60)
    assert MINUTE.reset_in(now) == pytest.approx(49.75)
    assert DAY.reset_in(now) == pytest.approx(86_400 - now % 86_400)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.017, "17ms"),
        (0.0, "0ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (59.9994, "59.999s"),
        (360.0, "6m0s"),
        (3721, "1h2m1s"),
    ],
)
def test_reset_durations_read_like_openai(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_retry_after_is_never_zero() -> None:
    assert retry_after(0.01) == 1
    assert retry_after(41.2) == 42


def test_headers_report_the_tightest_window_and_retry_after_only_when_refused() -> None:
    subject = Subject.principal("alice", {})
    minute = WindowUsage("requests", MINUTE, 10, 4, 30.0)
    day = WindowUsage("requests", DAY, 100, 98, 5000.0)
    tokens = WindowUsage("tokens", MINUTE, 1000, 250, 30.0)
    headers = dict(Decision([minute, day, tokens], [], subject).headers())
    assert headers[b"x-ratelimit-limit-requests"] == b"100"
    assert headers[b"x-ratelimit-remaining-requests"] == b"2"
    assert headers[b"x-ratelimit-reset-requests"] == b"1h23m20s"
    assert headers[b"x-ratelimit-remaining-tokens"] == b"750"
    assert b"retry-after" not in headers
    refused = Decision([minute, day, tokens], [day], subject)
    assert dict(refused.headers())[b"retry-after"] == b"5000"
    error = refused.error()
    assert error.status_code == 429
    assert "principal 'alice'" in error.message and "requests_per_day" in error.message


def _chunk(usage: Usage | None = None, text: str | None = "hi") -> ChatCompletionChunk:
    choices = [] if text is None else [ChunkChoice(index=0, delta=ChoiceDelta(content=text))]
    return ChatCompletionChunk(id="c", created=0, model="m", choices=choices, usage=usage)


async def _stream(chunks: list[ChatCompletionChunk]) -> AsyncIterator[ChatCompletionChunk]:
    for chunk in chunks:
        yield chunk


async def _drain(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


async def test_usage_is_recorded_only_inside_a_metered_request() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)
    chunks = [_chunk(), _chunk(usage, text=None)]
    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    assert with_stream_usage(request) is request  # not metered: untouched
    assert len(await _drain(metered(_stream(chunks), request))) == 2

    ledger = UsageLedger()
    token = ledger_var.set(ledger)
    try:
        upstream = with_stream_usage(request)
        assert upstream.stream_options is not None and upstream.stream_options.include_usage
        assert request.stream_options is None
        relayed = await _drain(metered(_stream(chunks), request))
        assert relayed == chunks[:1]  # the usage chunk the client did not ask for is held back...
        assert ledger.tokens == 7  # ...but charged
        asked = request.model_copy(update={"stream_options": upstream.stream_options})
        assert await _drain(metered(_stream(chunks), asked)) == chunks
        assert ledger.tokens == 14
    finally:
        ledger_var.reset(token)


def test_usage_tokens_reads_every_usage_shape() -> None:
    assert usage_tokens(None) == 0
    assert usage_tokens(Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5)) == 5

    class ResponsesUsage:
        input_tokens = 4
        output_tokens = 6

    assert usage_tokens(ResponsesUsage()) == 10


def test_the_example_in_the_docs_is_valid() -> None:
    """docs/quotas.md promises its YAML example validates; hold it to that."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "quotas.md"
    blocks = re.findall(r"```yaml\n(.*?)```", docs.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1
    config = parse_run_config(yaml.safe_load(blocks[0]), source="docs/quotas.md")
    quotas = config.server.quotas
    assert quotas is not None and quotas.backend == "redis"
    assert quotas.limits_for("batch-robot", {}).tokens_per_day is None
    assert quotas.limits_for("x", {"roles": ["premium"]}).requests_per_day == 10000


def test_empty_limit_from_an_unset_variable_means_no_limit() -> None:
    from underlay.core.config import parse_run_config

    data = {"server": {"quotas": {"limits": {"requests_per_minute": "${env.RPM:=}", "requests_per_day": "${env.RPD}"}}}}
    config = parse_run_config(data, env={"RPD": "50"})
    assert config.server.quotas is not None
    assert config.server.quotas.limits.requests_per_minute is None
    assert config.server.quotas.limits.requests_per_day == 50
