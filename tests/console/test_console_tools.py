"""The console's playground tools, shield verdicts, trace model filter, provider health and page switching,
in a real Chromium against the console tests' server (auth on, two tenants, SmolLM2, the MCP fixture
registered as tool group ``calc``).

- A function tool: the user defines it (name, description, JSON schema), the model is made to call it,
  the call shows its arguments, the user types the result (by keyboard) and the console sends it back
  as a ``tool`` message; the next turn answers. A schema that is not JSON never leaves the page.
- The ``calc`` tool group through Responses (the server calls the MCP server: listing and call shown
  inline with their timing) and through chat completions (the console calls it through
  ``/v1/tool-runtime/invoke``).
- Shield verdicts on the input and the output of a passing answer and of a refused one.
- The traces page's model filter, and bob's view of it. The providers page's health column.
- Switching pages while the page left still waits for its data: the slow answer never shows.

SmolLM2 is small: the tool turns force the tool with ``tool_choice`` and keep token budgets short.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.console.conftest import KEYS, WIDTHS
from tests.integration.harness import MINILM, SMOLLM2, RunningServer

pytestmark = pytest.mark.slow

MODEL = f"llama-cpp/{SMOLLM2}"
EMBEDDER = f"sentence-transformers/{MINILM}"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TURN = 180_000  # ms: one model turn on a busy two-core machine


def _page(browser: Any, key: str, width: str = "laptop") -> tuple[Any, list[str]]:
    """A fresh tab signed in with ``key``; script errors and CSP refusals are collected."""
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


def _posts(page: Any, path: str) -> list[dict[str, Any]]:
    """The JSON bodies the page POSTs to ``path``, in order (filled as the page sends them)."""
    bodies: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: bodies.append(json.loads(r.post_data)) if r.method == "POST" and r.url.endswith(path) else None,
    )
    return bodies


def _settings(page: Any, *, responses: bool = False, max_tokens: int = 40) -> None:
    page.get_by_label("Model or agent", exact=True).select_option(MODEL)
    if responses:
        page.get_by_label("Responses", exact=True).check()
    page.get_by_label("Temperature", exact=True).fill("0")
    page.get_by_label("Max tokens", exact=True).fill(str(max_tokens))


def _idle(page: Any) -> None:
    """Wait until the playground can send again (the message's last turn has ended)."""
    page.locator("form.composer button[type=submit]:not([disabled])").wait_for(timeout=TURN)


def test_a_function_tool_call_is_answered_by_the_user(
    browser: Any, console_server: RunningServer, screenshots: Path
) -> None:
    page, errors = _page(browser, KEYS["alice"])
    sent = _posts(page, "/v1/chat/completions")
    _goto(page, console_server, "playground")
    _settings(page, max_tokens=60)
    page.get_by_role("button", name="Add function tool", exact=True).click()
    page.get_by_label("Function name", exact=True).fill("get_weather")
    page.get_by_label("Description", exact=True).fill("Current weather for a city")
    schema = page.get_by_label("Parameters (JSON schema)", exact=True)
    schema.fill('{"type": "object", "properties": {')  # not JSON yet: refused before anything is sent
    page.get_by_label("Message", exact=True).fill("What is the weather in Paris?")
    page.get_by_role("button", name="Send", exact=True).click()
    page.get_by_role("alert").filter(has_text="not valid JSON").wait_for()
    assert schema.evaluate("el => el === document.activeElement"), "the invalid schema should have focus"
    assert not sent and page.get_by_label("Message", exact=True).input_value() == "What is the weather in Paris?"

    schema.fill(json.dumps(WEATHER))
    page.get_by_label("Tool choice", exact=True).select_option("fn:get_weather")
    page.get_by_role("button", name="Send", exact=True).click()
    result = page.get_by_role("textbox", name="Result of get_weather")
    result.wait_for(timeout=TURN)
    card = page.locator("details.tool", has_text="Tool call: get_weather")
    assert "city" in json.loads(card.locator("pre").first.text_content() or "{}")
    assert "waiting for your result" in (card.locator("summary").text_content() or "")
    assert result.evaluate("el => el === document.activeElement"), "the result box should have focus"
    page.screenshot(path=str(screenshots / "function-call-laptop.png"), full_page=True)
    page.keyboard.type('{"sky": "clear", "celsius": 21}')
    page.keyboard.press("Control+Enter")  # the result goes back by keyboard alone
    page.get_by_role("link", name="View trace").nth(1).wait_for(timeout=TURN)
    _idle(page)
    assert re.search(r"answered after [\d.]+ m?s", card.locator("summary").text_content() or "")
    assert "celsius" in (card.locator("pre").nth(1).text_content() or "")

    first, second = sent
    assert first["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER},
        }
    ]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert "tool_choice" not in second, "after a result the model chooses freely again"
    call, answer = second["messages"][-2:]
    assert call["role"] == "assistant" and call["tool_calls"][0]["function"]["name"] == "get_weather"
    assert answer == {
        "role": "tool",
        "tool_call_id": call["tool_calls"][0]["id"],
        "content": '{"sky": "clear", "celsius": 21}',
    }
    page.screenshot(path=str(screenshots / "function-result-laptop.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    assert not errors, errors
    page.context.close()


def test_an_mcp_tool_group_runs_on_the_server_through_responses(
    browser: Any, console_server: RunningServer, screenshots: Path
) -> None:
    page, errors = _page(browser, KEYS["alice"], "phone")
    sent = _posts(page, "/v1/responses")
    _goto(page, console_server, "playground")
    _settings(page, responses=True)
    page.get_by_role("checkbox", name=re.compile(r"^calc")).check()
    page.locator("select[name=tool_choice] option[value='mcp:calc:add']").wait_for(state="attached")
    page.get_by_label("Tool choice", exact=True).select_option("mcp:calc:add")
    page.get_by_label("Message", exact=True).fill("Add 2 and 3.")
    page.get_by_role("button", name="Send", exact=True).click()
    call = page.locator("details.tool", has_text="Tool call: calc · add")
    call.locator("summary", has_text="completed").wait_for(timeout=TURN)
    arguments = json.loads(call.locator("pre").first.text_content() or "{}")
    assert (call.locator("pre").nth(1).text_content() or "").strip() == str(arguments["a"] + arguments["b"])
    assert re.search(r"completed · [\d.]+ m?s", call.locator("summary").text_content() or "")
    listing = page.locator("details.tool", has_text="Tool listing: calc")
    assert "add" in (listing.locator("pre").text_content() or "")
    _idle(page)
    assert sent[0]["tools"] == [{"type": "mcp", "server_label": "calc", "require_approval": "never"}]
    assert sent[0]["tool_choice"] == {"type": "mcp", "server_label": "calc", "name": "add"}
    call.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / "mcp-responses-phone.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    assert not errors, errors
    page.context.close()


def test_a_tool_group_in_chat_completions_is_called_by_the_console(browser: Any, console_server: RunningServer) -> None:
    page, errors = _page(browser, KEYS["alice"])
    invoked = _posts(page, "/v1/tool-runtime/invoke")
    sent = _posts(page, "/v1/chat/completions")
    _goto(page, console_server, "playground")
    _settings(page)
    page.get_by_role("checkbox", name=re.compile(r"^calc")).check()
    page.locator("select[name=tool_choice] option[value='mcp:calc:add']").wait_for(state="attached")
    page.get_by_label("Tool choice", exact=True).select_option("mcp:calc:add")
    page.get_by_label("Message", exact=True).fill("Add 2 and 3.")
    page.get_by_role("button", name="Send", exact=True).click()
    call = page.locator("details.tool", has_text="Tool call: calc · add")
    call.locator("summary", has_text="completed").wait_for(timeout=TURN)
    stop = page.get_by_role("button", name="Stop", exact=True)
    if stop.is_enabled():  # the model's next turn, with every calc tool in its prompt, is not needed here
        stop.click()
    _idle(page)
    arguments = json.loads(call.locator("pre").first.text_content() or "{}")
    assert (call.locator("pre").nth(1).text_content() or "").strip() == str(arguments["a"] + arguments["b"])
    assert invoked == [{"tool_name": "add", "kwargs": arguments, "toolgroup_id": "calc"}]
    tools = {t["function"]["name"] for t in sent[0]["tools"]}
    assert {"add", "echo"} <= tools, tools  # the group's tools, offered to the model as functions
    assert sent[0]["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert not errors, errors
    page.context.close()


def test_shield_verdicts_show_for_input_and_output(
    browser: Any, console_server: RunningServer, screenshots: Path
) -> None:
    page, errors = _page(browser, KEYS["alice"])
    _goto(page, console_server, "playground")
    _settings(page, max_tokens=12)
    page.get_by_label("pii", exact=True).check()
    page.get_by_label("Message", exact=True).fill("Say hello.")
    page.get_by_role("button", name="Send", exact=True).click()
    verdicts = page.get_by_role("group", name="Shield verdicts").last
    verdicts.get_by_text("input · pii: no violation").wait_for(timeout=TURN)
    verdicts.get_by_text(re.compile(r"^output · pii: ")).wait_for(timeout=TURN)
    _idle(page)
    page.screenshot(path=str(screenshots / "verdicts-pass-laptop.png"), full_page=True)
    page.get_by_role("button", name="New chat", exact=True).click()
    page.get_by_label("Message", exact=True).fill("My email is jane.doe@example.com, remember it.")
    page.get_by_role("button", name="Send", exact=True).click()
    page.get_by_role("note").wait_for(timeout=TURN)
    blocked = page.get_by_role("group", name="Shield verdicts").last.get_by_text(re.compile(r"^input · pii: error"))
    blocked.wait_for(timeout=TURN)
    assert "email" in (blocked.text_content() or "")
    _idle(page)
    page.screenshot(path=str(screenshots / "verdicts-refused-laptop.png"), full_page=True)
    assert not errors, errors
    page.context.close()


@pytest.fixture(scope="module")
def alice_traces(console_server: RunningServer) -> Iterator[dict[str, str]]:
    """A chat and an embeddings request of alice's, with their trace ids once stored."""
    headers = {"Authorization": f"Bearer {KEYS['alice']}"}
    with httpx.Client(base_url=console_server.base_url, headers=headers, timeout=120) as http:
        hello = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        chat = http.post("/v1/chat/completions", json=hello)
        embed = http.post("/v1/embeddings", json={"model": EMBEDDER, "input": "otters"})
        chat.raise_for_status()
        embed.raise_for_status()
        ids = {"chat": chat.headers["x-trace-id"], "embed": embed.headers["x-trace-id"]}
        deadline = time.monotonic() + 30
        for trace_id in ids.values():
            while http.get(f"/v1/telemetry/traces/{trace_id}").status_code != 200:
                assert time.monotonic() < deadline, "the traces were never stored"
                time.sleep(0.2)
        yield ids


@pytest.mark.parametrize("width", list(WIDTHS))
def test_traces_filter_by_model(
    browser: Any, console_server: RunningServer, alice_traces: dict[str, str], screenshots: Path, width: str
) -> None:
    page, errors = _page(browser, KEYS["alice"], width)
    _goto(page, console_server, "traces")
    chat = page.locator(f"a[href='#/traces/{alice_traces['chat']}']")
    embed = page.locator(f"a[href='#/traces/{alice_traces['embed']}']")
    chat.wait_for()
    assert embed.count() == 1
    for model, shown, hidden in ((MODEL, chat, embed), (EMBEDDER, embed, chat)):
        page.get_by_label("Model", exact=True).select_option(model)
        page.get_by_role("button", name="Apply", exact=True).click()
        hidden.wait_for(state="detached")
        shown.wait_for()
        cells = page.locator("table.stack tbody tr td:nth-child(3)").all_text_contents()
        assert cells and set(cells) == {model}, cells
    page.screenshot(path=str(screenshots / f"traces-by-model-{width}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    assert not errors, errors
    page.context.close()


def test_bob_filtering_by_alices_model_sees_only_his_own_traces(
    browser: Any, console_server: RunningServer, alice_traces: dict[str, str]
) -> None:
    page, _ = _page(browser, KEYS["bob"])
    answers: list[Any] = []
    page.on("response", lambda r: answers.append(r) if "/v1/telemetry/traces" in r.url and r.ok else None)
    _goto(page, console_server, "traces")
    page.get_by_label("Model", exact=True).select_option(MODEL)
    page.get_by_role("button", name="Apply", exact=True).click()
    page.get_by_text("No traces match.").wait_for()
    page.wait_for_load_state("networkidle")
    assert [a.url for a in answers][-1].count(f"model={MODEL.replace('/', '%2F')}") == 1
    body = " ".join(a.text() for a in answers)
    assert all(trace_id not in body for trace_id in alice_traces.values())
    page.context.close()


@pytest.mark.parametrize("width", list(WIDTHS))
def test_providers_show_their_health(
    browser: Any, console_server: RunningServer, screenshots: Path, width: str
) -> None:
    page, errors = _page(browser, KEYS["alice"], width)
    _goto(page, console_server, "providers")
    table = page.get_by_role("table", name="Providers per API")
    table.wait_for()
    health = {
        row.locator("td").nth(1).text_content(): row.locator("td").nth(3).locator(".badge").text_content()
        for row in table.locator("tbody tr").all()
    }
    assert health["llama-cpp"] == "ok" and health["mcp"] == "ok" and health["pii"] == "ok", health
    assert health["sqlite-vec"] == "not reported", health  # it has no health check of its own
    page.screenshot(path=str(screenshots / f"providers-health-{width}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    assert not errors, errors
    page.context.close()


def test_a_slow_page_left_behind_never_draws_over_the_next(browser: Any, console_server: RunningServer) -> None:
    page, errors = _page(browser, KEYS["alice"])
    _goto(page, console_server, "safety")
    held: list[Any] = []
    page.route("**/v1/providers", lambda route: held.append(route))  # held until the test lets it go
    page.evaluate("location.hash = '#/providers'")
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the providers page never asked for /v1/providers"
    page.evaluate("location.hash = '#/safety'")
    page.get_by_role("heading", name="Safety", exact=True).wait_for()
    try:
        held[0].continue_()  # the answer arrives after the user left (the page may have aborted it)
    except PlaywrightError:
        pass
    page.wait_for_timeout(1000)
    assert page.locator("main h1").all_text_contents() == ["Safety"]
    assert page.locator("#nav a[aria-current='page']").text_content() == "Safety"
    # and quickly there and back: the page shown is the last one asked for
    page.unroute("**/v1/providers")
    for route in ("providers", "traces", "playground", "vectors", "safety"):
        page.evaluate(f"location.hash = '#/{route}'")
    page.get_by_role("heading", name="Safety", exact=True).wait_for()
    page.wait_for_load_state("networkidle")
    assert page.locator("main h1").all_text_contents() == ["Safety"]
    assert not errors, errors
    page.context.close()
