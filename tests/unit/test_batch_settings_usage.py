"""The ``batches:`` run-config section's bounds, and how a batch's ``usage`` adds up its lines' usage
(every endpoint names its tokens its own way: chat/completions, Responses, embeddings, moderations)."""

from __future__ import annotations

from typing import Any

import pytest

from underlay.core.config import ConfigError, parse_run_config
from underlay.core.routers.batches import _usage


def test_batches_settings_default_and_bounds() -> None:
    config = parse_run_config({}, env={})
    assert (config.batches.concurrency, config.batches.max_lines) == (4, 50_000)
    assert parse_run_config({"batches": {"concurrency": 16}}, env={}).batches.concurrency == 16
    for bad, field in [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 65}, "concurrency"),
        ({"max_lines": 50_001}, "max_lines"),
        ({"paralel": 2}, "paralel"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_run_config({"batches": bad}, source="my.yaml", env={})
        assert f"batches.{field}" in str(info.value)


def _done(body: dict[str, Any], ok: bool = True) -> tuple[bool, dict[str, Any]]:
    return ok, {"custom_id": "x", "response": {"status_code": 200 if ok else 400, "body": body}, "error": None}


def test_usage_sums_every_shape() -> None:
    chat = {
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 7,
            "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 3},
        }
    }
    responses = {
        "usage": {
            "input_tokens": 4,
            "output_tokens": 6,
            "total_tokens": 10,
            "input_tokens_details": {"cached_tokens": 1},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
    }
    embeddings = {"usage": {"prompt_tokens": 9, "total_tokens": 9}}
    moderation = {"id": "modr-1", "results": []}
    failed = {"error": {"message": "no", "usage": {"prompt_tokens": 100}}}
    usage = _usage([_done(chat), _done(responses), _done(embeddings), _done(moderation), _done(failed, ok=False)])
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (18, 13, 31)
    assert (usage.input_tokens_details.cached_tokens, usage.output_tokens_details.reasoning_tokens) == (3, 3)


def test_no_usage_until_a_line_reports_some() -> None:
    assert _usage([]) is None
    assert _usage([_done({"results": []}), (False, {"custom_id": "e", "response": None, "error": {}})]) is None
    junk = {"usage": {"prompt_tokens": "lots", "completion_tokens": -4}}  # a provider's odd usage costs nothing
    usage = _usage([_done(junk)])
    assert usage is not None and usage.total_tokens == 0
