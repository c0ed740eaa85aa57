"""A ``remote::openai`` fine-tuning job on a real server killed mid-job, against a loopback stand-in for OpenAI.

The in-process tests (``tests/inprocess/test_fine_tuning_openai.py``) cover the API; this one checks what
only a process can show: a server killed with SIGKILL while the upstream trains (its lease on the job
simply stops being renewed) is replaced by a new one on the same state, which follows the same upstream
job to the end without creating it again, copies each upstream event once, lists the tuned model, and
never writes the upstream key to its log.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.integration.harness import start_server
from tests.integration.wire_openai_finetune import API_KEY, BASE_MODEL, OpenAIFineTuneStandIn


@pytest.fixture
def stand_in() -> Iterator[OpenAIFineTuneStandIn]:
    server = OpenAIFineTuneStandIn().start()
    yield server
    server.stop()


def _config(stand_in: OpenAIFineTuneStandIn) -> dict[str, Any]:
    upstream = {"base_url": stand_in.v1, "api_key": API_KEY, "max_retries": 0}
    trainer = {**upstream, "models": [BASE_MODEL], "poll_seconds": 0.05}
    return {
        "apis": ["inference", "models", "files", "fine_tuning"],
        "providers": {
            "inference": [{"provider_id": "openai", "provider_type": "remote::openai", "config": upstream}],
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
            "fine_tuning": [{"provider_id": "openai-ft", "provider_type": "remote::openai", "config": trainer}],
        },
        "jobs": {"lease_seconds": 1, "poll_seconds": 0.05},
    }


def _until(client: openai.OpenAI, job_id: str, *wanted: str, within: float = 30) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in wanted:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not become {wanted}")


def test_a_killed_server_is_followed_by_one_that_finishes_the_same_upstream_job(
    stand_in: OpenAIFineTuneStandIn, tmp_path: Path
) -> None:
    data = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n' * 2
    stand_in.hold = True
    first = start_server(_config(stand_in), tmp_path)
    try:
        client = first.openai(_strict_response_validation=True)
        training = client.files.create(file=("train.jsonl", data), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training.id, suffix="killed")
        _until(client, job.id, "running")
        assert stand_in.creates == 1
    finally:
        first.stop(signal.SIGKILL)
    stand_in.hold = False  # the upstream trains on while no server follows it

    second = start_server(_config(stand_in), tmp_path)
    try:
        client = second.openai(_strict_response_validation=True)
        done = _until(client, job.id, "succeeded", "failed", "cancelled")
        remote = stand_in.job_over(data)
        assert done.status == "succeeded" and done.fine_tuned_model == remote.fine_tuned_model
        assert stand_in.creates == 1, "the new server created the upstream job again"
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        steps = [e.data["step"] for e in reversed(events) if e.type == "metrics"]  # type: ignore[index]
        assert steps == list(range(1, remote.total_steps + 1))
        assert f"openai/{done.fine_tuned_model}" in [m.id for m in client.models.list().data]
        assert API_KEY not in first.log() and API_KEY not in second.log()
    finally:
        second.stop()
