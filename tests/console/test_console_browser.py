"""The console in a real Chromium against a real server with auth on and two tenants.

Alice signs in with her key, chats with the embedded SmolLM2 and sees the answer stream in, opens the
chat's trace, uploads a file and finds it by search. Bob, signed in with his own key, sees none of
alice's stores, files or traces, even when he types their URLs. Every page is captured at a laptop and
a phone width (``.cache/console-screenshots/``) with no horizontal overflow and no console error (a
CSP violation is one).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.conftest import KEYS, WIDTHS
from tests.integration.harness import SMOLLM2, RunningServer

pytestmark = pytest.mark.slow

MODEL = f"llama-cpp/{SMOLLM2}"
DOC = (
    "Otters hold hands while they sleep so they do not drift apart. A group of otters resting in the water "
    "is called a raft. The harbour inspection code for the otter raft survey is ZEPHYRINE-42."
)
PAGES = ["playground", "vectors", "traces", "safety", "providers"]


def _page(browser: Any, server: RunningServer, key: str | None, width: str = "laptop") -> tuple[Any, list[str]]:
    """A fresh tab (own sessionStorage) at ``width``, signed in with ``key``; console errors are collected."""
    w, h = WIDTHS[width]
    context = browser.new_context(viewport={"width": w, "height": h})
    if key is not None:
        context.add_init_script(f"sessionStorage.setItem('underlay.apiKey', {key!r});")
    page = context.new_page()
    errors: list[str] = []
    # A 4xx the console expects (the sign-in probe's 401, an API that is switched off) is logged by
    # Chromium as "Failed to load resource"; anything else (a script error, a CSP refusal) counts.
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


@pytest.fixture(scope="module")
def alice_data(console_server: RunningServer) -> Iterator[dict[str, str]]:
    """Alice's store, file and a chat trace, made through the API with her key (bob must never see them)."""
    headers = {"Authorization": f"Bearer {KEYS['alice']}"}
    with httpx.Client(base_url=console_server.base_url, headers=headers, timeout=120) as http:
        file = http.post("/v1/files", files={"file": ("otters.txt", DOC.encode())}, data={"purpose": "assistants"})
        file.raise_for_status()
        store = http.post("/v1/vector_stores", json={"name": "alice-secret-store", "file_ids": [file.json()["id"]]})
        store.raise_for_status()
        chat = http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8},
        )
        chat.raise_for_status()
        trace_id = chat.headers["x-trace-id"]
        deadline = time.monotonic() + 30
        while http.get(f"/v1/telemetry/traces/{trace_id}").status_code != 200:
            assert time.monotonic() < deadline, "the chat's trace was never stored"
            time.sleep(0.2)
        yield {"store": store.json()["id"], "file": file.json()["id"], "trace": trace_id}


def test_sign_in_refuses_a_wrong_key_then_accepts_the_right_one(
    browser: Any, console_server: RunningServer, screenshots: Path
) -> None:
    page, errors = _page(browser, console_server, None)
    page.goto(console_server.base_url + "/")
    key = page.get_by_label("API key", exact=True)
    key.wait_for()
    assert key.evaluate("el => el === document.activeElement"), "the key field should have focus"
    key.fill("sk-not-a-real-key")
    key.press("Enter")
    page.get_by_text("That key was not accepted.").wait_for()
    page.screenshot(path=str(screenshots / "login-laptop.png"))
    page.set_viewport_size({"width": WIDTHS["phone"][0], "height": WIDTHS["phone"][1]})
    page.screenshot(path=str(screenshots / "login-phone.png"))
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    key = page.get_by_label("API key", exact=True)
    key.fill(KEYS["alice"])
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_role("heading", name="Playground").wait_for()
    assert page.evaluate("sessionStorage.getItem('underlay.apiKey')") == KEYS["alice"]
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.get_by_label("API key", exact=True).wait_for()
    assert page.evaluate("sessionStorage.getItem('underlay.apiKey')") is None
    assert not errors, errors
    page.context.close()


def test_chat_streams_tokens_and_links_to_its_trace(browser: Any, console_server: RunningServer) -> None:
    page, errors = _page(browser, console_server, KEYS["alice"])
    _goto(page, console_server, "playground")
    page.get_by_label("Model or agent", exact=True).select_option(MODEL)
    page.get_by_label("Temperature", exact=True).fill("0")
    page.get_by_label("Max tokens", exact=True).fill("40")
    # Count the answer's text changes while the answer is still marked busy: streamed tokens arrive as
    # many small updates before the end, a buffered answer as one.
    page.evaluate(
        """() => {
        window.__streamed = [];
        new MutationObserver(() => {
          const a = document.querySelector('article.msg.assistant[aria-busy="true"] .text');
          if (a && a.textContent) window.__streamed.push(a.textContent.length);
        }).observe(document.querySelector('.transcript'), {subtree: true, childList: true, characterData: true});
      }"""
    )
    page.get_by_label("Message", exact=True).fill("Name three colours of the rainbow.")
    page.get_by_role("button", name="Send", exact=True).click()
    link = page.get_by_role("link", name="View trace")
    link.wait_for(timeout=120_000)
    updates = page.evaluate("window.__streamed")
    assert len(updates) >= 3 and updates == sorted(updates), updates
    answer = page.locator("article.msg.assistant .text").last.text_content() or ""
    assert answer.strip(), "the answer is empty"
    meta = page.locator("article.msg.assistant .meta").last.text_content() or ""
    assert re.search(r"\d+ in / \d+ out tokens", meta), meta
    link.click()
    page.get_by_role("heading", name=re.compile("Trace")).wait_for()
    page.locator(".waterfall li").nth(1).wait_for()
    assert "/v1/chat/completions" in (page.locator("main h1").text_content() or "")
    page.locator(".waterfall .span-row").first.click()
    page.get_by_text("Attributes").wait_for()
    assert not errors, errors
    page.context.close()


def test_a_guardrail_refusal_is_shown_in_the_chat(browser: Any, console_server: RunningServer) -> None:
    page, errors = _page(browser, console_server, KEYS["alice"])
    _goto(page, console_server, "playground")
    page.get_by_label("Model or agent", exact=True).select_option(MODEL)
    page.get_by_label("pii", exact=True).check()
    page.get_by_label("Message", exact=True).fill("My email is jane.doe@example.com, remember it.")
    page.get_by_role("button", name="Send", exact=True).click()
    refusal = page.get_by_role("note")
    refusal.wait_for(timeout=60_000)
    assert (refusal.text_content() or "").startswith("Refused by a guardrail:")
    assert not errors, errors
    page.context.close()


def test_upload_a_file_and_find_it_by_search(browser: Any, console_server: RunningServer, tmp_path: Path) -> None:
    page, errors = _page(browser, console_server, KEYS["alice"])
    _goto(page, console_server, "vectors")
    page.get_by_label("New store name", exact=True).fill("otter-notes")
    page.get_by_role("button", name="Create", exact=True).click()
    page.get_by_role("heading", name="otter-notes").wait_for()
    note = tmp_path / "otter-notes.txt"
    note.write_text(DOC)
    page.locator("#upload-input").set_input_files(str(note))
    page.locator(".uploads .ok", has_text="completed").wait_for(timeout=60_000)
    assert page.locator(".uploads progress").get_attribute("value") == "1"
    page.get_by_role("cell", name="otter-notes.txt").wait_for()
    page.get_by_role("button", name="Browse", exact=True).first.click()
    page.get_by_text("Chunks of otter-notes.txt").wait_for()
    page.get_by_label("Query", exact=True).fill("ZEPHYRINE-42")
    page.get_by_role("button", name="Search", exact=True).click()
    for mode in ("vector", "keyword", "hybrid"):
        column = page.get_by_role("region", name=f"{mode} results")
        column.wait_for()
        assert "otter-notes.txt" in (column.text_content() or ""), mode
        assert re.search(r"\d\.\d{3}", column.text_content() or ""), f"{mode}: no score shown"
    assert not errors, errors
    page.context.close()


def test_bob_never_sees_alices_store_file_or_trace(
    browser: Any, console_server: RunningServer, alice_data: dict[str, str]
) -> None:
    # Alice's own browser shows them (so the checks below can fail for the right reason).
    page, _ = _page(browser, console_server, KEYS["alice"])
    _goto(page, console_server, "vectors")
    page.get_by_text("alice-secret-store").first.wait_for()
    _goto(page, console_server, f"traces/{alice_data['trace']}")
    page.locator(".waterfall li").first.wait_for()
    page.context.close()

    page, _ = _page(browser, console_server, KEYS["bob"])
    responses: list[Any] = []
    page.on("response", lambda r: responses.append(r) if r.url.startswith(console_server.v1) and r.ok else None)
    _goto(page, console_server, "vectors")
    page.wait_for_load_state("networkidle")
    assert page.get_by_text("alice-secret-store").count() == 0
    _goto(page, console_server, f"vectors/{alice_data['store']}")
    page.get_by_role("alert").wait_for()
    assert "not found" in (page.get_by_role("alert").text_content() or "")
    _goto(page, console_server, "traces")
    page.wait_for_load_state("networkidle")
    assert page.locator(f"a[href='#/traces/{alice_data['trace']}']").count() == 0
    _goto(page, console_server, "playground")
    page.wait_for_load_state("networkidle")
    assert page.locator(f"option[value='{alice_data['store']}']").count() == 0
    page.goto(f"{console_server.base_url}/#/traces/{alice_data['trace']}")
    page.get_by_role("alert").wait_for(timeout=15_000)
    assert responses, "bob's browser made no API calls"
    body = " ".join(r.text() for r in responses)
    for secret in (alice_data["store"], alice_data["file"], alice_data["trace"], "alice-secret-store"):
        assert secret not in body, f"bob's browser received {secret}"
    page.context.close()


@pytest.mark.parametrize("width", list(WIDTHS))
def test_every_page_fits_the_width_and_is_captured(
    browser: Any, console_server: RunningServer, alice_data: dict[str, str], screenshots: Path, width: str
) -> None:
    page, errors = _page(browser, console_server, KEYS["alice"], width)
    routes = {
        "playground": "playground",
        "vectors": f"vectors/{alice_data['store']}",
        "traces": "traces",
        "trace": f"traces/{alice_data['trace']}",
        "safety": "safety",
        "providers": "providers",
    }
    for name, route in routes.items():
        _goto(page, console_server, route)
        page.wait_for_load_state("networkidle")
        if name == "playground":  # chat completions at the laptop width, Responses at the phone's
            responses = width == "phone"
            page.get_by_label("Model or agent", exact=True).select_option(MODEL)
            if responses:
                page.get_by_label("Responses", exact=True).check()
            page.get_by_label("Max tokens", exact=True).fill("16")
            page.get_by_label("Message", exact=True).fill("Say hello in French.")
            page.get_by_role("button", name="Send", exact=True).click()
            page.get_by_role("link", name="View trace").wait_for(timeout=120_000)
            page.get_by_role("button", name="View as code", exact=True).click()
            code = page.get_by_label("Equivalent Python code", exact=True).text_content() or ""
            call = "client.responses.create(" if responses else "client.chat.completions.create("
            assert call in code and f'model="{MODEL}"' in code, code
            assert re.search(
                r"\d+ in / \d+ out tokens", page.locator("article.msg.assistant .meta").text_content() or ""
            )
        if name == "vectors":
            page.get_by_label("Query", exact=True).fill("otters sleeping")
            page.get_by_role("button", name="Search", exact=True).click()
            page.get_by_role("region", name="hybrid results").wait_for()
        if name == "trace":
            page.locator(".waterfall .span-row").first.click()
        if name == "safety":
            page.get_by_label("Text", exact=True).fill("Mail me at jane.doe@example.com or call 555-0100.")
            page.get_by_role("button", name="Run shield", exact=True).click()
            page.locator(".verdict .bad, .verdict .warn").wait_for()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        page.screenshot(path=str(screenshots / f"{name}-{width}.png"), full_page=True)
        assert overflow <= 0, f"{name} at {width}: {overflow}px wider than the window"
    assert not errors, errors
    page.context.close()


def test_keyboard_reaches_the_skip_link_then_the_pages_in_order(browser: Any, console_server: RunningServer) -> None:
    page, _ = _page(browser, console_server, KEYS["alice"])
    _goto(page, console_server, "playground")
    page.locator("body").focus()
    order = []
    for _ in range(6):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.textContent.trim()"))
    assert order == ["Skip to content", "Playground", "Vector stores", "Traces", "Safety", "Providers"], order
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # "Safety" → the page, by keyboard alone
    page.get_by_role("heading", name="Safety").wait_for()
    assert page.locator("#nav a[aria-current='page']").text_content() == "Safety"
    page.context.close()
