"""A STAND-IN for OpenAI's Files and fine-tuning APIs on loopback, written from OpenAI's public API reference.

api.openai.com cannot be reached from a test machine, so this small aiohttp server answers what the
``remote::openai`` trainer (and the ``remote::openai`` inference provider that serves the tuned model)
calls, shaped as OpenAI documents it:

- ``GET /v1/models`` (the base model and every tuned model made here) and ``POST /v1/chat/completions``
  (a canned answer that names the model it came from, so a test sees which model answered);
- ``POST /v1/files`` (``multipart/form-data`` with ``purpose`` and ``file``) → a file object;
  ``GET /v1/files/{file_id}`` and ``GET /v1/files/{file_id}/content`` (a job's ``step_metrics.csv`` too);
- ``POST /v1/fine_tuning/jobs`` (``model``, ``training_file``, ``validation_file``, ``method``,
  ``hyperparameters``, ``suffix``, ``seed``, ``metadata``) → a job in ``validating_files``;
  ``GET /v1/fine_tuning/jobs`` (newest first, ``limit``, ``after``, ``has_more``);
  ``GET /v1/fine_tuning/jobs/{id}``; ``POST …/cancel``, ``…/pause``, ``…/resume``;
  ``GET …/events`` (newest first, ``after`` an event id) and ``GET …/checkpoints``;
- authentication by ``Authorization: Bearer``; a wrong key gets OpenAI's 401 ``invalid_api_key`` body.

A job moves one step each time it is retrieved: ``validating_files`` → ``queued`` → ``running`` (one
training step per retrieve, each with a ``metrics`` event, and a checkpoint at each epoch's end) →
``succeeded`` with ``fine_tuned_model`` (``ft:<base>:standin-org:<suffix>:<id>``), ``trained_tokens`` and a
``step_metrics.csv`` result file. ``auto`` hyperparameters resolve to ``n_epochs`` 2, ``batch_size`` 1 and
``learning_rate_multiplier`` 1.8, reported back on the job.

Test controls (plain attributes; the server runs in a thread): ``hold`` keeps running jobs where they
are; ``fail_next`` makes the next created jobs fail validation with an error whose message quotes the
caller's key (as some upstreams echo credentials), so a test sees it removed; ``slow_create`` makes a
create answer only after that many seconds (the job is made first, as when a client's timeout ends a
request the server completed); ``creates``, ``cancels``, ``pauses`` and ``resumes`` count calls.
Failures of a whole path go through :meth:`StandIn.fail`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.integration.wire_openai_batches import OpenAIFilesAPI, _error, _File, _Routes
from tests.integration.wire_standins import Handler, Seen, StandIn

API_KEY = "sk-standin-finetune-5b2e8f1c3d"
BASE_MODEL = "gpt-4o-mini-2024-07-18"
ORG = "standin-org"
CREATED = 1733500000
AUTO = {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 1.8}


@dataclass
class _Job:
    id: str
    request: dict[str, Any]
    examples: int
    key: str
    created_at: int
    status: str = "validating_files"
    step: int = 0
    fine_tuned_model: str | None = None
    error: dict[str, Any] | None = None
    finished_at: int | None = None
    result_files: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False

    @property
    def method(self) -> dict[str, Any]:
        given = self.request.get("method") or {"type": "supervised"}
        kind = given.get("type", "supervised")
        hyper = dict((given.get(kind) or {}).get("hyperparameters") or self.request.get("hyperparameters") or {})
        resolved = {k: (AUTO[k] if hyper.get(k, "auto") == "auto" else hyper[k]) for k in AUTO}
        if kind == "dpo":
            resolved["beta"] = 0.1 if hyper.get("beta", "auto") == "auto" else hyper["beta"]
        return {"type": kind, kind: {"hyperparameters": resolved}}

    @property
    def hyperparameters(self) -> dict[str, Any]:
        kind = self.method["type"]
        return {k: self.method[kind]["hyperparameters"][k] for k in AUTO}

    @property
    def per_epoch(self) -> int:
        return math.ceil(self.examples / int(self.hyperparameters["batch_size"]))

    @property
    def total_steps(self) -> int:
        return self.per_epoch * int(self.hyperparameters["n_epochs"])

    def view(self) -> dict[str, Any]:
        return {
            "object": "fine_tuning.job",
            "id": self.id,
            "model": self.request["model"],
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "fine_tuned_model": self.fine_tuned_model,
            "organization_id": ORG,
            "result_files": self.result_files,
            "status": self.status,
            "validation_file": self.request.get("validation_file"),
            "training_file": self.request["training_file"],
            "hyperparameters": self.hyperparameters,
            "method": self.method,
            "trained_tokens": self.step * 10 if self.status == "succeeded" else None,
            "error": self.error,
            "user_provided_suffix": self.request.get("suffix"),
            "seed": self.request.get("seed", 42),
            "estimated_finish": None,
            "integrations": [],
            "metadata": self.request.get("metadata"),
        }


class OpenAIFineTuneStandIn(OpenAIFilesAPI):
    """The stand-in: ``.v1`` is the base URL to give both ``remote::openai`` providers."""

    api_key = API_KEY

    def __init__(self) -> None:
        self.files: dict[str, _File] = {}
        self.jobs: dict[str, _Job] = {}
        self.hold = False
        self.fail_next = False
        self.slow_create = 0.0
        self.creates = self.cancels = self.pauses = self.resumes = 0
        self._ids = itertools.count(1)
        exact: dict[tuple[str, str], Handler] = {
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/files"): self._upload,
            ("POST", "/v1/fine_tuning/jobs"): self._create,
            ("GET", "/v1/fine_tuning/jobs"): self._list,
        }
        job = r"/v1/fine_tuning/jobs/[^/]+"
        templated: list[tuple[str, str, Handler]] = [
            ("GET", r"/v1/files/[^/]+", self._file),
            ("GET", r"/v1/files/[^/]+/content", self._content),
            ("GET", job, self._retrieve),
            ("POST", f"{job}/cancel", self._cancel),
            ("POST", f"{job}/pause", self._pause),
            ("POST", f"{job}/resume", self._resume),
            ("GET", f"{job}/events", self._events),
            ("GET", f"{job}/checkpoints", self._checkpoints),
        ]
        self.standin = StandIn("openai-finetune", _Routes(exact, templated))

    def start(self, port: int | None = None) -> OpenAIFineTuneStandIn:
        """Serve on a free loopback port, or on ``port`` (the docs' example picks it)."""
        if port is None:
            self.standin.start()
            return self
        stand_in = self.standin
        stand_in._thread.start()
        asyncio.run_coroutine_threadsafe(stand_in._start(port), stand_in._loop).result(10)
        stand_in.root = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.standin.stop()

    @property
    def v1(self) -> str:
        return f"{self.standin.root}/v1"

    def job_over(self, training_file_content: bytes) -> _Job:
        """The one upstream job created over a training file with this content."""
        found = [
            j for j in self.jobs.values() if self.files[j.request["training_file"]].content == training_file_content
        ]
        assert len(found) == 1, [j.id for j in found]
        return found[0]

    # -- helpers -----------------------------------------------------------------------------------

    def _job_of(self, seen: Seen) -> _Job | None:
        return self.jobs.get(seen.path.split("/")[4])

    def _event(self, job: _Job, message: str, *, data: dict[str, Any] | None = None, kind: str = "message") -> None:
        level = "error" if "failed" in message.lower() else "info"
        job.events.append(
            {
                "object": "fine_tuning.job.event",
                "id": self._new_id("ftevent-"),
                "created_at": int(time.time()),
                "level": level,
                "message": message,
                "data": data or {},
                "type": kind,
            }
        )

    # -- inference -----------------------------------------------------------------------------------

    def _served(self) -> list[str]:
        return [BASE_MODEL, *(j.fine_tuned_model for j in self.jobs.values() if j.fine_tuned_model)]

    async def _models(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        data = [{"id": m, "object": "model", "created": CREATED, "owned_by": ORG} for m in self._served()]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        model = seen.body.get("model") if isinstance(seen.body, dict) else None
        if model not in self._served():
            message = f"The model `{model}` does not exist or you do not have access to it."
            return _error(404, message, code="model_not_found")
        answer = f"An answer from {model}."
        return web.json_response(
            {
                "id": "chatcmpl-standin",
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
            }
        )

    # -- jobs ----------------------------------------------------------------------------------------

    async def _create(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        body = seen.body if isinstance(seen.body, dict) else {}
        if body.get("model") != BASE_MODEL:
            return _error(400, f"Model {body.get('model')} is not available for fine-tuning.", code="invalid_model")
        files = []
        for name in ("training_file", "validation_file"):
            if body.get(name) is None:
                continue
            source = self.files.get(str(body[name]))
            if source is None:
                return _error(400, f"invalid {name}: {body[name]}", code="invalid_file")
            if source.purpose != "fine-tune":
                return _error(400, f"File {source.id} must be uploaded with purpose 'fine-tune'.", code="invalid_file")
            files.append(source)
        if not files:
            return _error(400, "Missing required parameter: 'training_file'.")
        suffix = body.get("suffix")
        if suffix is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", str(suffix)):
            return _error(400, "suffix must be at most 64 characters of [A-Za-z0-9_-].")
        examples = sum(1 for line in files[0].content.splitlines() if line.strip())
        job = _Job(self._new_id("ftjob-"), body, examples, self._key(seen), int(time.time()), fail=self.fail_next)
        self.jobs[job.id] = job
        self.creates += 1
        self._event(job, f"Created fine-tuning job: {job.id}")
        if self.slow_create:
            await asyncio.sleep(self.slow_create)
        return web.json_response(job.view())

    async def _list(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        limit = max(1, min(100, int(seen.query.get("limit", "20"))))
        newest = list(reversed(self.jobs.values()))
        after = seen.query.get("after")
        if after:
            ids = [j.id for j in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        page = newest[:limit]
        return web.json_response({"object": "list", "data": [j.view() for j in page], "has_more": len(newest) > limit})

    async def _retrieve(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        job = self._job_of(seen)
        if job is None:
            return _error(404, f"Could not find fine-tune job: {seen.path.split('/')[4]}.", code="not_found")
        self._advance(job)
        return web.json_response(job.view())

    async def _cancel(self, seen: Seen) -> web.StreamResponse:
        return await self._change(seen, "cancel")

    async def _pause(self, seen: Seen) -> web.StreamResponse:
        return await self._change(seen, "pause")

    async def _resume(self, seen: Seen) -> web.StreamResponse:
        return await self._change(seen, "resume")

    async def _change(self, seen: Seen, action: str) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        job = self._job_of(seen)
        if job is None:
            return _error(404, f"Could not find fine-tune job: {seen.path.split('/')[4]}.", code="not_found")
        allowed = {
            "cancel": ("validating_files", "queued", "running", "paused"),
            "pause": ("running",),
            "resume": ("paused",),
        }[action]
        if job.status not in allowed:
            return _error(400, f"Cannot {action} a job with status '{job.status}'.", code="invalid_state")
        if action == "cancel":
            self.cancels += 1
            job.status, job.finished_at = "cancelled", int(time.time())
            self._event(job, "Fine-tuning job cancelled")
        elif action == "pause":
            self.pauses += 1
            job.status = "paused"
            self._event(job, "Fine-tuning job paused")
        else:
            self.resumes += 1
            job.status = "running"
            self._event(job, "Fine-tuning job resumed")
        return web.json_response(job.view())

    async def _events(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        job = self._job_of(seen)
        if job is None:
            return _error(404, "Could not find fine-tune job.", code="not_found")
        limit = max(1, min(100, int(seen.query.get("limit", "20"))))
        newest = list(reversed(job.events))
        after = seen.query.get("after")
        if after:
            ids = [e["id"] for e in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        return web.json_response({"object": "list", "data": newest[:limit], "has_more": len(newest) > limit})

    async def _checkpoints(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        job = self._job_of(seen)
        if job is None:
            return _error(404, "Could not find fine-tune job.", code="not_found")
        data = list(reversed(job.checkpoints))
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": False,
            }
        )

    def _advance(self, job: _Job) -> None:
        """One step of the job's life per retrieve (none while ``hold`` is set and it runs)."""
        now = int(time.time())
        if job.status == "validating_files":
            if job.fail:
                message = f"Training file has too few examples for this organization (key {job.key})."
                job.status, job.finished_at = "failed", now
                job.error = {"code": "invalid_training_file", "message": message, "param": "training_file"}
                self._event(job, f"Fine-tuning job failed: {message}")
                return
            job.status = "queued"
            self._event(job, "Files validated, moving job to queued state")
        elif job.status == "queued":
            job.status = "running"
            self._event(job, "Fine-tuning job started")
        elif job.status == "running" and not self.hold:
            if job.step < job.total_steps:
                job.step += 1
                loss = round(2.0 / job.step, 4)
                data = {"step": job.step, "total_steps": job.total_steps, "train_loss": loss}
                self._event(job, f"Step {job.step}/{job.total_steps}: training loss={loss}", data=data, kind="metrics")
                if job.step % job.per_epoch == 0:
                    name = f"ft:{BASE_MODEL}:{ORG}:{job.request.get('suffix') or ''}:{job.id}:ckpt-step-{job.step}"
                    job.checkpoints.append(
                        {
                            "object": "fine_tuning.job.checkpoint",
                            "id": self._new_id("ftckpt_"),
                            "created_at": now,
                            "fine_tuned_model_checkpoint": name,
                            "fine_tuning_job_id": job.id,
                            "step_number": job.step,
                            "metrics": {"step": float(job.step), "train_loss": loss, "train_mean_token_accuracy": 0.5},
                        }
                    )
                    self._event(job, f"Checkpoint created at step {job.step}")
            else:
                rows = "".join(f"{s},{round(2.0 / s, 4)}\n" for s in range(1, job.total_steps + 1))
                csv = f"step,train_loss\n{rows}".encode()
                result = _File(self._new_id("file-"), "step_metrics.csv", "fine-tune-results", csv, now)
                self.files[result.id] = result
                job.result_files = [result.id]
                job.fine_tuned_model = f"ft:{BASE_MODEL}:{ORG}:{job.request.get('suffix') or ''}:{job.id}"
                job.status, job.finished_at = "succeeded", now
                self._event(job, f"New fine-tuned model created: {job.fine_tuned_model}")
                self._event(job, "The job has successfully completed")


def uploaded(stand_in: OpenAIFineTuneStandIn, file_id: str) -> list[dict[str, Any]]:
    """The JSON lines of an uploaded file."""
    return [json.loads(line) for line in stand_in.files[file_id].content.splitlines() if line.strip()]


def main() -> None:
    """``python -m tests.integration.wire_openai_finetune --port N``: serve until interrupted (for the docs)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    stand_in = OpenAIFineTuneStandIn().start(parser.parse_args().port)
    print(f"stand-in listening on {stand_in.v1}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stand_in.stop()


if __name__ == "__main__":
    main()
