"""How an agent folder's eval cases become an eval-API benchmark: patterns and stable suite ids.

The job itself runs on real servers in ``tests/integration/test_agents.py`` and
``test_agent_environments.py`` (and falls back to client-side on a server without the eval API).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from underlay.agents import Agent
from underlay.agents.eval_job import _candidate, case_pattern, suite_id


def test_an_expected_substring_becomes_an_escaped_case_insensitive_pattern() -> None:
    pattern = case_pattern({"input": "q", "expected": "6:40 a.m. (sharp)"})
    assert pattern == "(?i)" + re.escape("6:40 a.m. (sharp)")
    assert re.search(pattern, "We open at 6:40 A.M. (SHARP).") and not re.search(pattern, "6:40 am sharp")
    assert case_pattern({"input": "q", "expected_regex": r"\b(rye|spelt)\b"}) == r"\b(rye|spelt)\b"


def test_the_suite_id_follows_the_cases_and_is_a_valid_benchmark_id() -> None:
    cases: list[tuple[str, dict[str, Any]]] = [("a.jsonl:1", {"input": "Hi?", "expected": "hello"})]
    first = suite_id("support agent/ü", cases)
    assert first == suite_id("support agent/ü", [("moved.jsonl:9", {"input": "Hi?", "expected": "hello"})])
    assert first != suite_id("support agent/ü", [("a.jsonl:1", {"input": "Hi?", "expected": "hi"})])
    assert re.fullmatch(r"agent-support-agent---[0-9a-f]{12}", first)
    assert re.fullmatch(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", suite_id("x" * 300, cases))


def test_the_candidate_carries_what_the_agent_sends_to_responses() -> None:
    agent = Agent(
        None,
        model="llama-cpp/qwen",
        instructions="Answer from the handbook.",
        tools=[{"type": "file_search", "vector_store_ids": ["vs_1"]}],
        max_infer_iters=4,
        guardrails=["llama-guard"],
        temperature=0.0,
        max_output_tokens=200,
    )
    assert _candidate(agent) == {
        "type": "agent",
        "model": "llama-cpp/qwen",
        "instructions": "Answer from the handbook.",
        "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}],
        "max_infer_iters": 4,
        "guardrails": ["llama-guard"],
        "sampling_params": {"temperature": 0.0, "max_tokens": 200},
    }


def test_an_agent_candidates_responses_fields_are_checked_when_the_job_is_made() -> None:
    from underlay.api.errors import InvalidRequestError
    from underlay.api.eval import AgentCandidate
    from underlay.core.routers.eval import _check_agent_request

    _check_agent_request(AgentCandidate(model="m", prompt={"id": "pmpt_1", "version": "2"}, guardrails=["g"]))
    with pytest.raises(InvalidRequestError) as bad_prompt:
        _check_agent_request(AgentCandidate(model="m", prompt={"version": "2"}))  # no id
    assert bad_prompt.value.param == "benchmark_config.eval_candidate.prompt.id"
    with pytest.raises(InvalidRequestError) as bad_tool:
        _check_agent_request(AgentCandidate(model="m", tools=[{"type": "teleport"}]))
    assert "eval_candidate.tools" in bad_tool.value.message
