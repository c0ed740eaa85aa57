"""Every OpenAI endpoint Underlay implements, through the openai SDK with strict response validation.

``_strict_response_validation=True`` makes the SDK check each response against its own types (a
missing required field or a value of the wrong type raises ``APIResponseValidationError``), so these
tests fail on any shape the SDK would only tolerate. Strict validation cannot see a field sent as
``null`` that OpenAI leaves out, so the raw JSON is checked for those too, next to the SDK call.

One server, the embedded models (SmolLM2 through llama.cpp, MiniLM for embeddings), sqlite-vec, local
files, the pii shield and the builtin Responses provider. Token budgets are tiny: the point is the
wire shape, not the text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.integration.harness import MINILM, SMOLLM2, RunningServer, local_config, start_server

pytestmark = pytest.mark.slow

NOTES = (
    "The lighthouse keeper logs the weather every morning at six. Fog horns sound every thirty seconds "
    "when visibility drops below one mile. The lamp is cleaned on Sundays."
)


def _config() -> dict[str, Any]:
    config = local_config()
    config["apis"] = [
        "inference", "models", "files", "vector_io", "vector_stores", "safety", "conversations", "responses",
    ]  # fmt: skip
    config["providers"] = {
        "inference": [
            {
                "provider_id": "llama-cpp",
                "provider_type": "inline::llama-cpp",
                "config": {"models": [{"name": SMOLLM2, "packaged": SMOLLM2, "n_ctx": 2048}]},
            },
            *(p for p in config["providers"]["inference"] if p["provider_id"] == "sentence-transformers"),
        ],
        "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
        "vector_io": [
            {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "v.db"}}
        ],
        "safety": [{"provider_id": "pii", "provider_type": "inline::pii"}],
        "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}],
    }
    config["shields"] = [{"shield_id": "pii", "provider_id": "pii"}]
    config["safety"] = {"default_moderation_shield": "pii"}
    config["jobs"] = {"workers": 1, "lease_seconds": 5, "poll_seconds": 0.1}
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(_config(), tmp_path_factory.mktemp("strict-sdk"), timeout=300)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return server.openai(timeout=300, _strict_response_validation=True)


def _get(server: RunningServer, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{server.v1}{path}", params=params, timeout=60)
    assert response.status_code == 200, f"GET {path} {params}: {response.status_code} {response.text}"
    return response.json()


def _post(server: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.v1}{path}", json=body, timeout=300)


def _wait(predicate: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _chat(**kwargs: Any) -> dict[str, Any]:
    return {"model": SMOLLM2, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, **kwargs}


# ---- models ---------------------------------------------------------------------------------------------


def test_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert f"llama-cpp/{SMOLLM2}" in ids and f"sentence-transformers/{MINILM}" in ids
    assert client.models.retrieve(f"llama-cpp/{SMOLLM2}").object == "model"


# ---- chat completions, stored ones included -----------------------------------------------------------


def test_chat_completion_and_its_stored_copy(client: openai.OpenAI, server: RunningServer) -> None:
    reply = client.chat.completions.create(**_chat(store=True, metadata={"suite": "strict"}))
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.usage is not None and reply.usage.completion_tokens >= 1

    stored = client.chat.completions.retrieve(reply.id)
    assert stored.id == reply.id and stored.metadata == {"suite": "strict"}
    page = client.chat.completions.list(metadata={"suite": "strict"})
    assert [c.id for c in page.data] == [reply.id]
    # The SDK types every stored message as the model's reply (role "assistant" only), so a user
    # message fails its strict check even as OpenAI itself sends it; this one call is checked loosely.
    messages = server.openai(timeout=60).chat.completions.messages.list(reply.id)
    assert [(m.role, m.content) for m in messages.data] == [("user", "Say hi.")] and messages.data[0].id

    updated = client.chat.completions.update(reply.id, metadata={"suite": "strict", "round": "2"})
    assert updated.id == reply.id and updated.metadata == {"suite": "strict", "round": "2"}
    assert client.chat.completions.retrieve(reply.id).metadata == {"suite": "strict", "round": "2"}
    assert [c.id for c in client.chat.completions.list(metadata={"round": "2"}).data] == [reply.id]

    deleted = client.chat.completions.delete(reply.id)
    assert deleted.deleted and deleted.id == reply.id
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.update(reply.id, metadata={"a": "b"})


def test_chat_completion_update_validates_and_clears(client: openai.OpenAI, server: RunningServer) -> None:
    reply = client.chat.completions.create(**_chat(store=True, metadata={"k": "v"}))
    too_many = {f"k{i}": "v" for i in range(17)}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.update(reply.id, metadata=too_many)
    assert info.value.body["param"] == "metadata"
    with pytest.raises(openai.BadRequestError) as info:  # the same limits on create
        client.chat.completions.create(**_chat(store=True, metadata={"k": "v" * 513}))
    assert info.value.body["param"] == "metadata"
    bad = _post(server, f"/chat/completions/{reply.id}", {"metadata": {}, "model": "other"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "model"
    cleared = client.chat.completions.update(reply.id, metadata=None)
    assert not cleared.metadata
    client.chat.completions.delete(reply.id)


def test_streamed_chat_completion_is_stored(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(**_chat(stream=True, store=True, stream_options={"include_usage": True}))
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    stored = _wait(lambda: _stored(client, chunks[0].id), "the streamed completion to be stored", 30)
    assert stored.choices[0].message.content == "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    client.chat.completions.delete(stored.id)


def _stored(client: openai.OpenAI, completion_id: str) -> Any:
    try:
        return client.chat.completions.retrieve(completion_id)
    except openai.NotFoundError:
        return None


def test_chat_omits_what_openai_omits(server: RunningServer) -> None:
    """No ``tool_calls``, ``system_fingerprint`` or ``service_tier`` keys holding ``null``."""
    body = _post(server, "/chat/completions", _chat(store=True)).json()
    message = body["choices"][0]["message"]
    assert "tool_calls" not in message and "content" in message and "refusal" in message
    assert isinstance(body.get("system_fingerprint", ""), str) and "service_tier" not in body
    stored = _get(server, f"/chat/completions/{body['id']}")
    assert "tool_calls" not in stored["choices"][0]["message"] and "request_id" not in stored
    assert httpx.delete(f"{server.v1}/chat/completions/{body['id']}", timeout=60).status_code == 200
    with httpx.stream("POST", f"{server.v1}/chat/completions", json=_chat(stream=True), timeout=300) as stream:
        frames = [line[6:] for line in stream.iter_lines() if line.startswith("data: {")]
    assert frames and all('"system_fingerprint":null' not in f and '"tool_calls":null' not in f for f in frames)


# ---- completions and embeddings ----------------------------------------------------------------------


def test_completions(client: openai.OpenAI, server: RunningServer) -> None:
    reply = client.completions.create(model=SMOLLM2, prompt="The sky is", max_tokens=4)
    assert reply.object == "text_completion" and reply.choices[0].text
    # The SDK types a streamed chunk as a whole Completion, whose finish_reason is required; OpenAI sends
    # null on every chunk but the last (a value there would end a client's read early), as we do, so the
    # stream is read by a loose client and the finish reasons are checked here instead.
    loose = server.openai(timeout=300)
    streamed = list(loose.completions.create(model=SMOLLM2, prompt="The sky is", max_tokens=4, stream=True))
    assert streamed and all(c.object == "text_completion" for c in streamed)
    reasons = [choice.finish_reason for c in streamed for choice in c.choices]
    assert reasons[-1] in ("stop", "length") and set(reasons[:-1]) <= {None}
    assert (
        "system_fingerprint"
        not in _post(server, "/completions", {"model": SMOLLM2, "prompt": "x", "max_tokens": 1}).json()
    )


def test_completion_with_null_prompt_starts_a_new_document(client: openai.OpenAI) -> None:
    """OpenAI's reference: prompt may be null; the model then writes from the start of a document."""
    reply = client.completions.create(model=SMOLLM2, prompt=None, max_tokens=4)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.prompt_tokens <= 1


def test_embeddings(client: openai.OpenAI, server: RunningServer) -> None:
    floats = client.embeddings.create(model=MINILM, input=["one", "two"], encoding_format="float")
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 384
    # Left to itself the SDK asks for base64 and decodes it after parsing, but strict validation runs
    # before the decoding and wants a list of floats, so base64 is read by a loose client.
    packed = server.openai(timeout=60).embeddings.create(model=MINILM, input="one")
    assert len(packed.data[0].embedding) == 384 and packed.data[0].embedding[:3] != [0.0, 0.0, 0.0]


# ---- files ----------------------------------------------------------------------------------------------


def test_files(client: openai.OpenAI, server: RunningServer) -> None:
    created = client.files.create(file=("notes.txt", NOTES.encode()), purpose="assistants")
    assert created.object == "file" and created.bytes == len(NOTES) and created.status == "processed"
    raw = _get(server, f"/files/{created.id}")
    assert "expires_at" not in raw and "status_details" not in raw
    assert client.files.retrieve(created.id).filename == "notes.txt"
    assert created.id in [f.id for f in client.files.list(purpose="assistants")]
    assert client.files.content(created.id).read() == NOTES.encode()
    expiring = client.files.create(
        file=("x.txt", b"x"), purpose="user_data", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert expiring.expires_at == expiring.created_at + 3600
    assert client.files.delete(created.id).deleted and client.files.delete(expiring.id).deleted
    empty = _get(server, "/files", purpose="vision")
    assert empty["data"] == [] and "first_id" not in empty and "last_id" not in empty


# ---- vector stores ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(client: openai.OpenAI) -> dict[str, Any]:
    """A store with one file ingested (through ``file_ids``) and a second file attached by a batch."""
    first = client.files.create(file=("notes.txt", NOTES.encode()), purpose="assistants").id
    second = client.files.create(file=("more.txt", b"Seagulls nest on the cliffs."), purpose="assistants").id
    created = client.vector_stores.create(name="strict", file_ids=[first], metadata={"suite": "strict"})
    assert created.object == "vector_store" and created.file_counts.total == 1
    batch = client.vector_stores.file_batches.create(vector_store_id=created.id, file_ids=[second])
    assert batch.object == "vector_store.files_batch"

    def ready() -> Any:
        shown = client.vector_stores.retrieve(created.id)
        return shown if shown.status == "completed" else None

    shown = _wait(ready, "the vector store to finish ingesting")
    assert shown.file_counts.completed == 2
    return {"id": created.id, "first": first, "second": second, "batch": batch.id}


def test_vector_stores(client: openai.OpenAI, server: RunningServer, store: dict[str, Any]) -> None:
    vs = store["id"]
    assert vs in [s.id for s in client.vector_stores.list()]
    assert "expires_after" not in _get(server, f"/vector_stores/{vs}")
    updated = client.vector_stores.update(vs, name="strict-2", metadata={"suite": "strict", "n": "2"})
    assert updated.name == "strict-2" and updated.metadata == {"suite": "strict", "n": "2"}
    results = client.vector_stores.search(vs, query="When does the fog horn sound?", max_num_results=2)
    assert results.data and results.data[0].file_id == store["first"]
    assert results.data[0].content[0].type == "text"

    files = client.vector_stores.files.list(vector_store_id=vs)
    assert sorted(f.id for f in files.data) == sorted([store["first"], store["second"]])
    one = client.vector_stores.files.retrieve(store["first"], vector_store_id=vs)
    assert one.status == "completed" and one.object == "vector_store.file"
    content = client.vector_stores.files.content(store["first"], vector_store_id=vs)
    assert "lighthouse" in "".join(part.text or "" for part in content)
    batch = client.vector_stores.file_batches.retrieve(store["batch"], vector_store_id=vs)
    assert batch.status == "completed" and batch.file_counts.completed == 1
    batch_files = client.vector_stores.file_batches.list_files(store["batch"], vector_store_id=vs)
    assert [f.id for f in batch_files.data] == [store["second"]]
    failed = _get(server, f"/vector_stores/{vs}/files", filter="failed")
    assert failed["data"] == [] and "first_id" not in failed and "last_id" not in failed


def test_vector_store_file_delete_and_store_delete(client: openai.OpenAI) -> None:
    file_id = client.files.create(file=("gone.txt", b"temporary"), purpose="assistants").id
    vs = client.vector_stores.create(name="doomed", expires_after={"anchor": "last_active_at", "days": 1})
    assert vs.expires_after is not None and vs.expires_after.days == 1 and vs.expires_at
    attached = client.vector_stores.files.create(vector_store_id=vs.id, file_id=file_id)
    assert attached.id == file_id
    assert client.vector_stores.files.delete(file_id, vector_store_id=vs.id).deleted
    assert client.vector_stores.delete(vs.id).deleted


def test_empty_file_ids_are_400_naming_the_item(server: RunningServer, store: dict[str, Any]) -> None:
    """Once a 500: the batch's ``file_ids`` items were only checked inside the handler."""
    vs = store["id"]
    for path, body, param in [
        (f"/vector_stores/{vs}/file_batches", {"file_ids": [""]}, "file_ids[0]"),
        (f"/vector_stores/{vs}/file_batches", {"file_ids": [store["first"], ""]}, "file_ids[1]"),
        (f"/vector_stores/{vs}/file_batches", {"files": [{"file_id": ""}]}, "files[0].file_id"),
        (f"/vector_stores/{vs}/files", {"file_id": ""}, "file_id"),
        ("/vector_stores", {"file_ids": [""]}, "file_ids[0]"),
    ]:
        response = _post(server, path, body)
        assert response.status_code == 400, (path, body, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param, (path, error)


# ---- moderations ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["omni-moderation-latest", "omni-moderation-2024-09-26", "text-moderation-latest", "text-moderation-007"]
)
def test_openai_moderation_models_use_the_default_shield(client: openai.OpenAI, model: str) -> None:
    result = client.moderations.create(model=model, input=["hello", "mail me at ann@example.com"])
    assert result.model == "pii" and [r.flagged for r in result.results] == [False, True]


def test_unknown_moderation_model_is_still_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.moderations.create(model="omni-moderation-someday", input="x")
    assert info.value.body["param"] == "model"


# ---- conversations -----------------------------------------------------------------------------------


def test_conversations(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "hello"}], metadata={"suite": "strict"}
    )
    assert conversation.object == "conversation"
    assert client.conversations.retrieve(conversation.id).metadata == {"suite": "strict"}
    assert client.conversations.update(conversation.id, metadata={"n": "2"}).metadata == {"n": "2"}
    added = client.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "assistant", "content": "hi"}]
    )
    assert len(added.data) == 1
    items = client.conversations.items.list(conversation.id)
    assert len(items.data) == 2
    item = client.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    assert item.id == added.data[0].id
    client.conversations.items.delete(added.data[0].id, conversation_id=conversation.id)
    assert client.conversations.delete(conversation.id).deleted


# ---- responses ---------------------------------------------------------------------------------------


def test_responses(client: openai.OpenAI) -> None:
    response = client.responses.create(model=SMOLLM2, input="Name a colour.", max_output_tokens=8, temperature=0)
    assert response.object == "response" and response.status in ("completed", "incomplete")
    assert client.responses.retrieve(response.id).id == response.id
    assert client.responses.input_items.list(response.id).data
    events = list(client.responses.create(model=SMOLLM2, input="Name a fruit.", max_output_tokens=8, stream=True))
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")
    client.responses.delete(response.id)
    client.responses.delete(events[-1].response.id)


# ---- lists: an empty cursor is no cursor ----------------------------------------------------------------


def test_empty_cursor_is_no_cursor_on_every_list(
    client: openai.OpenAI, server: RunningServer, store: dict[str, Any]
) -> None:
    """``?after=`` was a 400 on some lists and a 404 on others; now every list ignores it."""
    completion = client.chat.completions.create(**_chat(store=True))
    conversation = client.conversations.create(items=[{"type": "message", "role": "user", "content": "hi"}])
    response = client.responses.create(model=SMOLLM2, input="Hi.", max_output_tokens=2)
    vs = store["id"]
    lists = [
        "/chat/completions",
        f"/chat/completions/{completion.id}/messages",
        "/files",
        "/vector_stores",
        f"/vector_stores/{vs}/files",
        f"/vector_stores/{vs}/file_batches/{store['batch']}/files",
        f"/conversations/{conversation.id}/items",
        f"/responses/{response.id}/input_items",
    ]
    for path in lists:
        assert _get(server, path, after="")["data"], path
    for path in ("/vector_stores", f"/vector_stores/{vs}/files"):
        assert _get(server, path, before="")["data"], path
    client.chat.completions.delete(completion.id)
    client.conversations.delete(conversation.id)
    client.responses.delete(response.id)


def test_unknown_before_cursor_names_before(server: RunningServer, store: dict[str, Any]) -> None:
    """A ``before`` naming no object was reported as a bad ``after``."""
    for path in ("/vector_stores", f"/vector_stores/{store['id']}/files"):
        response = httpx.get(f"{server.v1}{path}", params={"before": "vs_nope"}, timeout=60)
        assert response.status_code == 400 and response.json()["error"]["param"] == "before", response.text
        assert "'vs_nope' to list before" in response.json()["error"]["message"]


@pytest.fixture(scope="module")
def bare_safety(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Safety alone, with no default moderation shield configured."""
    config = {
        "apis": ["safety"],
        "providers": {"safety": [{"provider_id": "pii", "provider_type": "inline::pii"}]},
        "shields": [{"shield_id": "pii", "provider_id": "pii"}],
    }
    running = start_server(config, tmp_path_factory.mktemp("bare-safety"))
    yield running
    running.stop()


def test_openai_moderation_name_without_a_default_is_400(bare_safety: RunningServer) -> None:
    client = bare_safety.openai(_strict_response_validation=True)
    with pytest.raises(openai.BadRequestError) as info:
        client.moderations.create(model="omni-moderation-latest", input="x")
    assert info.value.body["param"] == "model" and "default_moderation_shield" in info.value.body["message"]
    # a shield registered under OpenAI's name is that shield
    registered = httpx.post(
        f"{bare_safety.v1}/shields", json={"shield_id": "omni-moderation-latest", "provider_id": "pii"}, timeout=30
    )
    assert registered.status_code == 200, registered.text
    result = client.moderations.create(model="omni-moderation-latest", input="mail ann@example.com")
    assert result.model == "omni-moderation-latest" and result.results[0].flagged
