"""An agent folder's eval cases run as a job of the server's eval API (``/v1alpha/eval``).

``underlay agent eval`` prefers this to asking the cases one by one from the client: the job is durable
(it survives a server restart and resumes without redoing finished rows), runs the rows concurrently on
the server, is scored by the same functions as every other benchmark, and stays listed with its per-row
results for later comparison. The cases become a dataset and a benchmark whose ids are derived from the
agent's name and the cases' content, so running the same suite again reuses them and a changed suite
gets new ones.

A case is ``{"input", "expected"}`` (a case-insensitive substring) or ``{"input", "expected_regex"}``;
both are scored by ``basic::regex_match`` (the substring as an escaped ``(?i)`` pattern).

The server runs the agent as a Responses configuration (model, instructions or prompt reference, tools,
shields); client-side function tools cannot run there, so an agent with them is evaluated client-side.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SCORING_FUNCTION = "basic::regex_match"
POLL_SECONDS = 0.5
JOB_TIMEOUT_SECONDS = 3600.0


class EvalApiUnavailable(Exception):
    """The server has no eval API (or no datasets API); the message says what is missing."""


@dataclass
class CaseResult:
    where: str
    input: str
    answer: str
    passed: bool
    error: str | None = None


@dataclass
class EvalOutcome:
    benchmark_id: str
    job_id: str
    results: list[CaseResult]


def case_pattern(case: dict[str, Any]) -> str:
    """The pattern a case's answer must match: its ``expected_regex``, or its ``expected`` ignoring case."""
    if "expected_regex" in case:
        return str(case["expected_regex"])
    return "(?i)" + re.escape(str(case["expected"]))


def suite_id(agent_name: str, cases: list[tuple[str, dict[str, Any]]]) -> str:
    """``agent-<name>-<12 hex of the cases>``: the same suite maps to the same dataset and benchmark."""
    digest = hashlib.sha256(
        json.dumps([[c["input"], case_pattern(c)] for _, c in cases], ensure_ascii=False).encode()
    ).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", agent_name)[:80] or "agent"
    return f"agent-{name}-{digest}"


class _Api:
    """The few calls made, on the agent's own ``openai`` client: same server, same API key."""

    def __init__(self, client: Any) -> None:
        root = str(client.base_url).rstrip("/")
        self.root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.client = client.with_options(max_retries=0)  # a 409 here means "already there", not "retry"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        import openai

        try:
            if method == "GET":
                return 200, self.client.get(self.root + path, cast_to=object)
            return 200, self.client.post(self.root + path, body=body, cast_to=object)
        except openai.APIStatusError as exc:
            return exc.status_code, exc.body


def _error_text(payload: Any, status: int) -> str:
    error = payload.get("error", payload) if isinstance(payload, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return f"the server answered {status}: {message or 'no error message'}"


def run_eval_job(
    agent: Any,
    cases: list[tuple[str, dict[str, Any]]],
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> EvalOutcome:
    """Register (or reuse) the suite's dataset and benchmark, run it as one eval job, wait, and return each
    case's answer and verdict. Raises :class:`EvalApiUnavailable` when the server cannot run it."""
    api = _Api(agent.client)
    status, payload = api.call("GET", "/v1alpha/eval/benchmarks")
    if status == 404:
        raise EvalApiUnavailable("the server has no eval API (/v1alpha/eval)")
    if status >= 400:
        raise RuntimeError(_error_text(payload, status))
    ident = suite_id(agent.name or "agent", cases)
    status, payload = api.call("GET", f"/v1alpha/eval/benchmarks/{ident}")
    if status == 404:
        _register(api, ident, cases)
    elif status >= 400:
        raise RuntimeError(_error_text(payload, status))
    candidate = _candidate(agent)
    status, payload = api.call(
        "POST",
        f"/v1alpha/eval/benchmarks/{ident}/jobs",
        {"benchmark_config": {"eval_candidate": candidate, "pass_threshold": 1.0}},
    )
    if status >= 400:
        raise RuntimeError(_error_text(payload, status))
    job_id = str(payload["job_id"])
    job = _wait(api, ident, job_id, on_progress)
    if job["status"] != "completed":
        error = (job.get("error") or {}).get("message") or job["status"]
        raise RuntimeError(f"eval job {job_id} {job['status']}: {error}")
    status, payload = api.call("GET", f"/v1alpha/eval/benchmarks/{ident}/jobs/{job_id}/result")
    if status >= 400:
        raise RuntimeError(_error_text(payload, status))
    generations = sorted(payload["generations"], key=lambda g: g["row_index"])
    results = [
        CaseResult(
            where=where,
            input=str(case["input"]),
            answer=str(g.get("generated_answer") or ""),
            passed=g.get("status") == "pass",
            error=g.get("error"),
        )
        for (where, case), g in zip(cases, generations, strict=True)
    ]
    return EvalOutcome(ident, job_id, results)


def _register(api: _Api, ident: str, cases: list[tuple[str, dict[str, Any]]]) -> None:
    rows = [
        {"input_query": str(case["input"]), "expected_answer": case_pattern(case), "case": where}
        for where, case in cases
    ]
    body = {
        "dataset_id": ident,
        "purpose": "eval/question-answer",
        "source": {"type": "rows", "rows": rows},
        "metadata": {"made_by": "underlay agent eval"},
    }
    status, payload = api.call("POST", "/v1beta/datasets", body)
    if status == 404:
        raise EvalApiUnavailable("the server has no datasets API (/v1beta/datasets), which eval jobs read rows from")
    if status >= 400 and status != 409:  # 409: the same suite's dataset is already there
        raise RuntimeError(_error_text(payload, status))
    benchmark = {"benchmark_id": ident, "dataset_id": ident, "scoring_functions": [SCORING_FUNCTION]}
    status, payload = api.call("POST", "/v1alpha/eval/benchmarks", benchmark)
    if status >= 400 and status != 409:
        raise RuntimeError(_error_text(payload, status))


_SAMPLING = {"temperature": "temperature", "max_output_tokens": "max_tokens"}
"""Responses fields that an eval candidate carries in ``sampling_params``, and their names there."""


def _candidate(agent: Any) -> dict[str, Any]:
    """The agent as an eval ``agent`` candidate: exactly what its own turns send to Responses (from the
    agent's request builder, so a field added there reaches evals too), without input or turn state."""
    body = agent._request("", None, None, agent.tool_choice)
    body.pop("input")
    extra = body.pop("extra_body", {})  # Underlay's own Responses fields: top-level in a candidate
    candidate: dict[str, Any] = {"type": "agent", **body, **extra}
    sampling = {name: candidate.pop(field) for field, name in _SAMPLING.items() if field in candidate}
    if sampling:
        candidate["sampling_params"] = sampling
    return candidate


def _wait(api: _Api, ident: str, job_id: str, on_progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    while True:
        status, job = api.call("GET", f"/v1alpha/eval/benchmarks/{ident}/jobs/{job_id}")
        if status >= 400:
            raise RuntimeError(_error_text(job, status))
        progress = job.get("progress") or {}
        if on_progress is not None:
            on_progress(int(progress.get("rows_done", 0)), int(progress.get("rows_total", 0)))
        if job["status"] in ("completed", "failed", "cancelled"):
            return dict(job)
        if time.monotonic() > deadline:
            raise TimeoutError(f"eval job {job_id} did not finish in {JOB_TIMEOUT_SECONDS:.0f}s")
        time.sleep(POLL_SECONDS)
