"""The Evaluations and Fine-tuning pages in a real Chromium against a real server with auth on.

The server is the console tests' (``conftest.console_config``) plus the evals, eval, datasets, scoring and
fine-tuning APIs. Runs are cheap: inline rows that carry their own sample, graded by a ``string_check``,
and one two-row run sampled from the embedded SmolLM2 (eight tokens a row). No training worker is
reserved (``jobs.reserved_workers.training: 0``), so a fine-tuning job stays queued: its page is checked
without waiting for a training run. Its loss curve is fed through the path a trainer's reports take in
a worker process: ``FineTuningRouter._on_report`` over the server's own SQL store (a SQLite file that
several processes may share), which turns each ``TrainingReport`` into the job's ``metrics`` event; the
page, refreshing every few seconds, must draw them without a reload. Bob never sees Alice's evals or
jobs. Each page is captured at 1280 and 390 pixels wide under the pytest temporary directory, with no
horizontal overflow and no console error.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.console.conftest import KEYS, WIDTHS, console_config
from tests.integration.harness import SMOLLM2, RunningServer, start_server

pytestmark = pytest.mark.slow

MODEL = f"llama-cpp/{SMOLLM2}"
POLL_SECONDS = 3  # the fine-tuning page's refresh period (POLL_MS in pages/fine_tuning.js)
SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "expected": {"type": "string"}},
    "required": ["question", "expected"],
}
EXACT = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.expected}}",
    "operation": "eq",
}


def _rows(count: int, failing: set[int]) -> list[dict[str, Any]]:
    """Rows with their own sample: row i answers ``a<i>``, except the ``failing`` ones, which answer wrong."""
    return [
        {
            "item": {"question": f"q{i}", "expected": f"a{i}"},
            "sample": {"output_text": "wrong" if i in failing else f"a{i}"},
        }
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def eval_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = console_config()
    config["apis"] = [*config["apis"], "evals", "eval", "datasets", "scoring", "fine_tuning"]
    config["providers"]["datasets"] = [{"provider_id": "datasets-localfs", "provider_type": "inline::localfs"}]
    config["providers"]["scoring"] = [{"provider_id": "basic", "provider_type": "inline::basic"}]
    config["providers"]["fine_tuning"] = [
        {"provider_id": "huggingface", "provider_type": "inline::huggingface", "config": {}}
    ]
    # No training worker: a fine-tuning job stays queued (no multi-minute CPU run in a browser test).
    config["jobs"] = {**config["jobs"], "reserved_workers": {"interactive": 1, "training": 0}}
    server = start_server(config, tmp_path_factory.mktemp("console-evals"), timeout=300)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-eval-screens")


def _http(server: RunningServer, who: str = "alice") -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {KEYS[who]}"}, timeout=120)


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.is_success, response.text
    body: dict[str, Any] = response.json()
    return body


def _settle(http: httpx.Client, path: str, field: str = "status", done: tuple[str, ...] = ()) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while True:
        body = _ok(http.get(path))
        if body[field] in (done or ("completed", "failed", "canceled", "cancelled")):
            return body
        assert time.monotonic() < deadline, f"{path} still {body[field]}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def alice_evals(eval_server: RunningServer) -> dict[str, str]:
    """Alice's eval with three finished runs (80%, 50% and a SmolLM2-sampled one) and a benchmark job."""
    with _http(eval_server) as http:
        ev = _ok(
            http.post(
                "/v1/evals",
                json={
                    "name": "console-qa-eval",
                    "data_source_config": {"type": "custom", "item_schema": SCHEMA, "include_sample_schema": True},
                    "testing_criteria": [EXACT],
                },
            )
        )
        runs: dict[str, str] = {}
        for name, rows in (("inline-25", _rows(25, {4, 9, 14, 19, 24})), ("inline-4", _rows(4, {2, 3}))):
            source = {"type": "jsonl", "source": {"type": "file_content", "content": rows}}
            runs[name] = _ok(http.post(f"/v1/evals/{ev['id']}/runs", json={"name": name, "data_source": source}))["id"]
        sampled = {
            "type": "completions",
            "model": MODEL,
            "source": {
                "type": "file_content",
                "content": [
                    {"item": {"question": "Say yes.", "expected": "yes"}},
                    {"item": {"question": "Say no.", "expected": "no"}},
                ],
            },
            "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]},
            "sampling_params": {"max_completion_tokens": 8, "temperature": 0},
        }
        runs["smollm2"] = _ok(
            http.post(f"/v1/evals/{ev['id']}/runs", json={"name": "smollm2", "data_source": sampled})
        )["id"]
        for run_id in runs.values():
            assert _settle(http, f"/v1/evals/{ev['id']}/runs/{run_id}")["status"] == "completed"

        rows = [{"input_query": "Reply with the word Paris.", "expected_answer": "Paris"}]
        dataset = {
            "dataset_id": "eval-console-qa",
            "purpose": "eval/question-answer",
            "source": {"type": "rows", "rows": rows},
        }
        _ok(http.post("/v1beta/datasets", json=dataset))
        benchmark = {
            "benchmark_id": "console-qa",
            "dataset_id": "eval-console-qa",
            "scoring_functions": ["basic::subset_of"],
        }
        _ok(http.post("/v1alpha/eval/benchmarks", json=benchmark))
        candidate = {"type": "model", "model": MODEL, "sampling_params": {"max_tokens": 8, "temperature": 0}}
        job = _ok(
            http.post(
                "/v1alpha/eval/benchmarks/console-qa/jobs", json={"benchmark_config": {"eval_candidate": candidate}}
            )
        )
        _settle(http, f"/v1alpha/eval/benchmarks/console-qa/jobs/{job['job_id']}")
        return {"eval": ev["id"], **runs, "benchmark_job": job["job_id"]}


def _training_file(http: httpx.Client) -> str:
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"{2 * i}."},
            ]
        }
        for i in range(3)
    ]
    raw = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return _ok(http.post("/v1/files", files={"file": ("adder.jsonl", raw)}, data={"purpose": "fine-tune"}))["id"]


def _create_job(http: httpx.Client, file_id: str, suffix: str) -> dict[str, Any]:
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
    body = {"model": SMOLLM2, "training_file": file_id, "suffix": suffix, "method": method, "seed": 7}
    return _ok(http.post("/v1/fine_tuning/jobs", json=body))


@pytest.fixture(scope="module")
def alice_jobs(eval_server: RunningServer) -> dict[str, str]:
    """Alice's queued job (no training worker takes it) and a cancelled one."""
    with _http(eval_server) as http:
        file_id = _training_file(http)
        queued = _create_job(http, file_id, "console")
        cancelled = _create_job(http, file_id, "gone")
        _ok(http.post(f"/v1/fine_tuning/jobs/{cancelled['id']}/cancel"))
        return {"file": file_id, "queued": queued["id"], "cancelled": cancelled["id"]}


# ---- the trainer's path, from another process on the same SQL store -------------------------------------


def _as_trainer(server: RunningServer, job_id: str, reports: list[dict[str, Any]], checkpoint_step: int = 0) -> None:
    """What a worker process running the job does with its trainer's reports: the job goes ``running`` and
    each report becomes an event (``FineTuningRouter._on_report``), on the server's own SQLite store."""
    from underlay.api.fine_tuning import CheckpointMetrics, FineTuningJobCheckpoint, TrainingReport
    from underlay.core.identity import Principal, principal_var
    from underlay.core.routers.fine_tuning import TERMINAL, FineTuningRouter
    from underlay.core.storage.sqlstore import sqlstore_from_config
    from underlay.core.stores.fine_tuning import FineTuningStore

    state = Path(yaml.safe_load(server.config_path.read_text())["state_dir"])

    async def report() -> None:
        sql = await sqlstore_from_config({"type": "sqlite", "path": str(state / "sqlstore.db")})
        token = principal_var.set(
            Principal("alice", {"teams": ["team-alice"]})
        )  # the job's owner, as the worker runs it
        try:
            store = FineTuningStore(sql)
            await store.initialize()
            # Only the store is used on the report path; files, jobs and serving are for runs and publishing.
            router = FineTuningRouter(store, None, None, {}, state / "fine_tuning", None)  # type: ignore[arg-type]
            job = (await store.get(job_id)).job
            if job.status != "running":
                await store.save(job.model_copy(update={"status": "running"}), unless=TERMINAL)
            for item in reports:
                await router._on_report(job_id, TrainingReport(kind="metrics", **item))
            if checkpoint_step:
                metrics = next(r["metrics"] for r in reports if r["step"] == checkpoint_step)
                checkpoint = FineTuningJobCheckpoint(
                    id=f"ftckpt-console{checkpoint_step}",
                    created_at=int(time.time()),
                    fine_tuned_model_checkpoint=f"ft:{SMOLLM2}:console:{job_id[-8:]}:ckpt-step-{checkpoint_step}",
                    fine_tuning_job_id=job_id,
                    metrics=CheckpointMetrics(step=checkpoint_step, **metrics),
                    step_number=checkpoint_step,
                )
                await store.add_checkpoint(checkpoint, str(state / "fine_tuning" / job_id / f"step-{checkpoint_step}"))
        finally:
            principal_var.reset(token)
            await sql.close()

    # Playwright's sync API holds this thread's event loop; the store's coroutines run on their own.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, report()).result(timeout=60)


# ---- browser helpers --------------------------------------------------------------------------------------


def _page(browser: Any, key: str, width: str = "laptop") -> tuple[Any, list[str]]:
    w, h = WIDTHS[width]
    context = browser.new_context(viewport={"width": w, "height": h})
    context.add_init_script(f"sessionStorage.setItem('underlay.apiKey', {key!r});")
    page = context.new_page()
    errors: list[str] = []
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def _goto(page: Any, server: RunningServer, route: str) -> None:
    page.goto(f"{server.base_url}/#/{route}")
    page.locator("main h1").first.wait_for()


def _fits(page: Any, what: str) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{what}: {overflow}px wider than the window"


def _capture(page: Any, screens: Path, name: str) -> None:
    """The page at both widths, full length, each checked for horizontal overflow."""
    for width, (w, h) in WIDTHS.items():
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_timeout(100)
        page.screenshot(path=str(screens / f"{name}-{width}.png"), full_page=True)
        _fits(page, f"{name} at {width}")
    page.set_viewport_size({"width": WIDTHS["laptop"][0], "height": WIDTHS["laptop"][1]})


# ---- evaluations -------------------------------------------------------------------------------------------


def test_evals_page_shows_runs_pass_rates_and_rows(
    browser: Any, eval_server: RunningServer, alice_evals: dict[str, str], screens: Path
) -> None:
    page, errors = _page(browser, KEYS["alice"])
    _goto(page, eval_server, "evals")
    assert page.locator("#nav a[aria-current='page']").text_content() == "Evaluations"
    # The index lists the benchmark eval jobs of /v1alpha/eval.
    jobs = page.get_by_role("region", name="Benchmark eval jobs")
    jobs.get_by_text(alice_evals["benchmark_job"]).wait_for()
    row = jobs.locator("tr", has_text=alice_evals["benchmark_job"])
    assert "console-qa" in (row.text_content() or "") and MODEL in (row.text_content() or "")
    assert "completed" in (row.text_content() or "")
    _capture(page, screens, "evals-index")

    page.get_by_role("link", name=re.compile("console-qa-eval")).click()
    page.get_by_role("heading", name="console-qa-eval").wait_for()
    runs = page.locator("table tbody tr")
    runs.nth(2).wait_for()
    assert runs.count() == 3
    by_name = {
        name: page.locator("tr", has=page.get_by_role("link", name=name, exact=True))
        for name in ("inline-25", "inline-4", "smollm2")
    }
    assert by_name["inline-25"].locator(".rate-cell").text_content() == "80%"
    assert by_name["inline-4"].locator(".rate-cell").text_content() == "50%"
    assert "20 passed · 5 failed · 0 errored · 25 rows" in (by_name["inline-25"].text_content() or "")
    chart = page.locator("figure.chart svg[role='img']")
    assert chart.locator("rect.rate").count() == 3
    label = chart.get_attribute("aria-label") or ""
    assert "inline-25 80%" in label and "inline-4 50%" in label, label
    assert label.index("inline-25") < label.index("smollm2"), "the chart runs oldest first"
    _capture(page, screens, "evals-eval")

    page.get_by_role("link", name="inline-25", exact=True).click()
    page.get_by_role("heading", name="Run inline-25").wait_for()
    assert page.locator(".pass-rate").text_content() == "80%"
    criterion = page.locator("table", has_text="Per testing criterion").locator("tbody tr")
    assert [c.strip() for c in criterion.locator("td").all_text_contents()] == ["exact", "20", "5", "80%"]
    items = page.locator("ol.items > li.item")
    items.nth(19).wait_for()
    assert items.count() == 20
    first = items.first.text_content() or ""
    assert "Row 0" in first and '"question":"q0"' in first and "a0" in first and "exact: pass" in first
    page.get_by_role("button", name="Load 20 more rows").click()
    items.nth(24).wait_for()
    assert items.count() == 25
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Row 20: pass"
    assert page.get_by_role("button", name=re.compile("Load .* more rows")).count() == 0
    fifth = items.nth(4).text_content() or ""
    assert "Row 4" in fifth and "exact: fail" in fifth and "wrong" in fifth
    _capture(page, screens, "evals-run")
    page.get_by_label("Rows", exact=True).select_option("fail")
    page.wait_for_function("() => document.querySelectorAll('ol.items > li.item').length === 5")
    assert items.locator(".item-head > .badge").all_text_contents() == ["fail"] * 5

    _goto(page, eval_server, f"evals/{alice_evals['eval']}/{alice_evals['smollm2']}")
    items.nth(1).wait_for()
    sampled = items.first.text_content() or ""
    assert "Say yes." in sampled and "user" in sampled, sampled  # the prompt the model was sent
    assert items.first.get_by_role("region", name="Output").locator(".role").first.text_content() == "assistant"
    assert "Model usage" in (page.locator("main").text_content() or "")
    assert not errors, errors
    page.context.close()


# ---- fine-tuning -------------------------------------------------------------------------------------------


def _requests_to(page: Any, fragment: str) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if fragment in r.url else None)
    return seen


def test_fine_tuning_job_shows_status_events_and_a_live_loss_curve(
    browser: Any, eval_server: RunningServer, alice_jobs: dict[str, str], screens: Path
) -> None:
    with _http(eval_server) as http:
        job = _create_job(http, alice_jobs["file"], "curve")
    page, errors = _page(browser, KEYS["alice"])
    _goto(page, eval_server, f"fine-tuning/{job['id']}")
    header = page.locator("main .detail h2")
    header.get_by_text("queued").wait_for()
    facts = page.locator("main .detail dl.facts")
    text = facts.text_content() or ""
    assert "Epochs2" in text and "Batch size3" in text and "Learning rate multiplier1" in text, text
    assert f"Base model{SMOLLM2}" in text and "Seed7" in text
    events = page.locator("ol.events li")
    assert "Created fine-tuning job" in (events.last.text_content() or "")
    assert "Validated training file" in (page.locator("ol.events").text_content() or "")
    assert "No training metrics yet" in (page.locator("figure.loss").text_content() or "")
    assert "refreshing every 3 s" in (page.locator(".live").text_content() or "")

    # The trainer reports four of eight steps (validation at step 4) and a checkpoint at step 4; the
    # page, still open, draws them on its next refresh.
    losses = [2.5, 2.0, 1.6, 1.1]
    steps = [
        {
            "step": i + 1,
            "total_steps": 8,
            "metrics": {"train_loss": loss, "learning_rate": 1e-4, "tokens_per_second": 40.0},
        }
        for i, loss in enumerate(losses)
    ]
    steps[3]["metrics"]["valid_loss"] = 1.4
    _as_trainer(eval_server, job["id"], steps, checkpoint_step=4)
    curve = page.locator("figure.loss svg polyline.series.s0")
    curve.wait_for(timeout=POLL_SECONDS * 1000 * 3)
    header.get_by_text("running").wait_for()
    assert len((curve.get_attribute("points") or "").split()) == 4
    label = page.locator("figure.loss svg").get_attribute("aria-label") or ""
    assert "over 4 steps: from 2.5 to 1.1 at step 4 of 8; validation loss 1.4" in label, label
    assert page.locator("figure.loss svg circle.dot.s1").count() == 1  # the one validation point
    assert page.locator("figure.loss svg line.marker").count() == 1  # the checkpoint
    assert "step 4 of 8" in (facts.text_content() or "")
    assert page.locator("progress[aria-label='Training steps done']").get_attribute("value") == "4"
    checkpoint = page.locator("table", has_text="ckpt-step-4")
    assert "train 1.1" in (checkpoint.text_content() or "") and "valid 1.4" in (checkpoint.text_content() or "")
    assert "Step 4/8: train_loss=1.1" in (page.locator("ol.events").text_content() or "")

    more = [
        {"step": 5, "total_steps": 8, "metrics": {"train_loss": 0.9}},
        {"step": 6, "total_steps": 8, "metrics": {"train_loss": 0.8}},
    ]
    _as_trainer(eval_server, job["id"], more)
    page.wait_for_function(
        "() => document.querySelector('figure.loss svg polyline.s0').getAttribute('points').split(' ').length === 6",
        timeout=POLL_SECONDS * 1000 * 3,
    )
    page.locator("figure.loss summary").click()
    assert page.locator("figure.loss details tbody tr").count() == 6
    _capture(page, screens, "fine-tuning-running")

    # Cancelled through the API: the page shows it on its next refresh, then stops refreshing.
    with _http(eval_server) as http:
        _ok(http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel"))
    header.get_by_text("cancelled").wait_for(timeout=POLL_SECONDS * 1000 * 3)
    assert (page.locator(".live").text_content() or "") == ""
    assert page.locator("figure.loss details").get_attribute("open") is not None, "a refresh keeps the table open"
    polled = _requests_to(page, "/v1/fine_tuning/")
    page.wait_for_timeout(POLL_SECONDS * 1000 + 1500)
    assert polled == [], f"the page kept polling a finished job: {polled}"
    assert not errors, errors
    page.context.close()


def test_fine_tuning_list_and_leaving_the_page_stops_polling(
    browser: Any, eval_server: RunningServer, alice_jobs: dict[str, str], screens: Path
) -> None:
    page, errors = _page(browser, KEYS["alice"])
    _goto(page, eval_server, "fine-tuning")
    jobs = page.get_by_role("list", name="Fine-tuning jobs")
    jobs.get_by_text(alice_jobs["queued"]).wait_for()
    assert "cancelled" in (jobs.locator("li", has_text=alice_jobs["cancelled"]).text_content() or "")
    _capture(page, screens, "fine-tuning-index")

    jobs.locator("li", has_text=alice_jobs["cancelled"]).get_by_role("link").click()
    page.locator("main .detail h2").get_by_text("cancelled").wait_for()
    assert "Fine-tuning job cancelled" in (page.locator("ol.events").text_content() or "")

    _goto(page, eval_server, f"fine-tuning/{alice_jobs['queued']}")
    page.locator("main .detail h2").get_by_text("queued").wait_for()
    page.locator(".live").get_by_text("refreshing").wait_for()
    _capture(page, screens, "fine-tuning-queued")
    # The queued job is refreshed while its page is open, and no longer once another page is shown.
    polled = _requests_to(page, f"/v1/fine_tuning/jobs/{alice_jobs['queued']}")
    page.wait_for_timeout(POLL_SECONDS * 1000 + 1000)
    assert polled, "the page did not refresh an unfinished job"
    page.get_by_role("link", name="Evaluations", exact=True).click()
    page.get_by_role("heading", name="Evaluations").wait_for()
    polled.clear()
    page.wait_for_timeout(POLL_SECONDS * 1000 + 1500)
    assert polled == [], f"polling went on after the page was left: {polled}"
    assert not errors, errors
    page.context.close()


# ---- auth and keyboard ---------------------------------------------------------------------------------------


def test_bob_sees_none_of_alices_evals_or_jobs(
    browser: Any, eval_server: RunningServer, alice_evals: dict[str, str], alice_jobs: dict[str, str]
) -> None:
    page, _ = _page(browser, KEYS["bob"])
    bodies: list[Any] = []
    page.on("response", lambda r: bodies.append(r) if r.url.startswith(eval_server.base_url + "/v1") and r.ok else None)
    _goto(page, eval_server, "evals")
    page.get_by_text("No evals yet").wait_for()
    page.get_by_role("region", name="Benchmark eval jobs").get_by_text("No eval jobs yet").wait_for()
    _goto(page, eval_server, f"evals/{alice_evals['eval']}")
    page.get_by_role("alert").wait_for()
    assert "not found" in (page.get_by_role("alert").text_content() or "")
    _goto(page, eval_server, f"evals/{alice_evals['eval']}/{alice_evals['inline-25']}")
    page.get_by_role("alert").wait_for()
    _goto(page, eval_server, "fine-tuning")
    page.get_by_text("No fine-tuning jobs yet").wait_for()
    _goto(page, eval_server, f"fine-tuning/{alice_jobs['queued']}")
    page.get_by_role("alert").wait_for()
    assert "not found" in (page.get_by_role("alert").text_content() or "")
    assert bodies, "bob's browser made no API calls"
    seen = " ".join(r.text() for r in bodies)
    for secret in (*alice_evals.values(), *alice_jobs.values(), "console-qa-eval"):
        assert secret not in seen, f"bob's browser received {secret}"
    page.context.close()


def test_keyboard_reaches_the_new_pages_after_the_others(browser: Any, eval_server: RunningServer) -> None:
    page, _ = _page(browser, KEYS["alice"])
    _goto(page, eval_server, "playground")
    page.locator("body").focus()
    order = []
    for _ in range(8):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.textContent.trim()"))
    assert order[-3:] == ["Providers", "Evaluations", "Fine-tuning"], order
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # "Evaluations" → the page, by keyboard alone
    page.get_by_role("heading", name="Evaluations", exact=True).wait_for()
    assert page.locator("#nav a[aria-current='page']").text_content() == "Evaluations"
    page.context.close()
