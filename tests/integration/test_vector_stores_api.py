"""The Vector Stores API end to end: the openai SDK against a real server with the embedded MiniLM
embedding model, the Files API on local disk, sqlite-vec (and FAISS) as vector backends, and
ingestion running as durable jobs.

One server (module scope) serves most tests; the crash test runs its own server on its own state
directory so it can SIGKILL it mid-ingestion and start it again.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.documents import encrypt_pdf, make_docx, make_pdf, make_pptx, make_xlsx
from tests.integration.harness import MINILM, SMOLLM2, RunningServer, local_config, start_server

pytestmark = pytest.mark.slow

SMALL_CHUNKS = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}}

CATS = (
    "Cats are small domesticated felines kept as companions. A cat purrs when it is content and sleeps "
    "up to sixteen hours a day. Kittens learn to hunt by playing with their littermates, pouncing on "
    "anything that moves. Whiskers help a cat measure gaps in the dark."
)
ROCKETS = (
    "# Rockets\n\nA rocket reaches orbit by burning propellant in stages. Multistage launch vehicles drop "
    "their empty tanks to shed mass on the way up. Orbital velocity around Earth is about 7.8 kilometres "
    "per second, and the engines must push the payload sideways, not just upward."
)
BREAD = (
    "<html><head><title>Baking bread</title><script>var secret = 'zebracode';</script></head><body>"
    "<h1>Baking bread at home</h1><p>Knead the dough of flour, water, yeast and salt for ten minutes. "
    "Let it rise for an hour, shape the loaf, then bake it in a hot oven until the crust is golden.</p>"
    "</body></html>"
)


def _config(**overrides: Any) -> dict[str, Any]:
    config = local_config()
    inference = [p for p in config["providers"]["inference"] if p["provider_id"] == "sentence-transformers"]
    inference.append(
        {
            "provider_id": "llama-cpp",
            "provider_type": "inline::llama-cpp",
            "config": {"models": [{"name": SMOLLM2, "packaged": SMOLLM2, "n_ctx": 2048}]},
        }
    )
    config["apis"] = ["inference", "models", "files", "vector_io", "vector_stores"]
    config["providers"] = {
        "inference": inference,
        "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
        "vector_io": [
            {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "vector_io.db"}},
            {"provider_id": "faiss", "provider_type": "inline::faiss", "config": {}},
        ],
    }
    config["jobs"] = {"workers": 2, "lease_seconds": 2, "poll_seconds": 0.1}
    config["vector_stores"] = {"rewrite_model": SMOLLM2}
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(_config(), tmp_path_factory.mktemp("vector-stores"), timeout=300)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return server.openai(timeout=120)


def _upload(client: openai.OpenAI, name: str, data: bytes | str) -> str:
    content = data.encode() if isinstance(data, str) else data
    return client.files.create(file=(name, content), purpose="assistants").id


def _wait(predicate: Callable[[], Any], timeout: float = 180.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _wait_store(client: openai.OpenAI, store_id: str, timeout: float = 180.0) -> Any:
    def done() -> Any:
        store = client.vector_stores.retrieve(store_id)
        return store if store.status == "completed" else None

    return _wait(done, timeout, f"vector store {store_id} to complete")


def _wait_file(client: openai.OpenAI, store_id: str, file_id: str, timeout: float = 180.0) -> Any:
    def done() -> Any:
        item = client.vector_stores.files.retrieve(file_id, vector_store_id=store_id)
        return item if item.status != "in_progress" else None

    return _wait(done, timeout, f"file {file_id} in {store_id}")


def _search(server: RunningServer, store_id: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.v1}/vector_stores/{store_id}/search", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def topics(client: openai.OpenAI) -> dict[str, Any]:
    """A store with three files on three topics, created with file_ids and polled to completed."""
    ids = {
        "cats": _upload(client, "cats.txt", CATS),
        "rockets": _upload(client, "rockets.md", ROCKETS),
        "bread": _upload(client, "bread.html", BREAD),
    }
    store = client.vector_stores.create(
        name="topics", file_ids=list(ids.values()), chunking_strategy=SMALL_CHUNKS, metadata={"suite": "e2e"}
    )
    assert store.id.startswith("vs_") and store.object == "vector_store"
    assert store.file_counts.total == 3
    return {"store": _wait_store(client, store.id), "ids": ids}


# ---------------------------------------------------------------------------------------------------


def test_create_with_file_ids_completes(client: openai.OpenAI, topics: dict[str, Any]) -> None:
    store = topics["store"]
    assert store.status == "completed" and store.name == "topics" and store.metadata == {"suite": "e2e"}
    counts = store.file_counts
    assert (counts.completed, counts.failed, counts.in_progress, counts.cancelled, counts.total) == (3, 0, 0, 0, 3)
    assert store.usage_bytes > 0
    extra = store.model_extra or {}
    assert extra["embedding_model"].endswith(MINILM) and extra["embedding_dimension"] == 384
    assert extra["provider_id"] == "sqlite-vec"
    files = client.vector_stores.files.list(store.id)
    assert {f.id for f in files.data} == set(topics["ids"].values())
    for item in files.data:
        assert item.object == "vector_store.file" and item.status == "completed" and item.usage_bytes > 0
        assert item.chunking_strategy is not None and item.chunking_strategy.type == "static"
        assert item.chunking_strategy.static.max_chunk_size_tokens == 100


def test_vector_search_finds_the_topic(client: openai.OpenAI, server: RunningServer, topics: dict[str, Any]) -> None:
    store, ids = topics["store"], topics["ids"]
    page = client.vector_stores.search(store.id, query="How does a spacecraft get into orbit around the Earth?")
    assert page.data[0].file_id == ids["rockets"] and page.data[0].filename == "rockets.md"
    assert page.data[0].content[0].type == "text" and "orbit" in page.data[0].content[0].text
    scores = [r.score for r in page.data]
    assert scores == sorted(scores, reverse=True)
    raw = _search(server, store.id, query="sleepy pets that purr", max_num_results=1)
    assert raw["object"] == "vector_store.search_results.page"
    assert raw["search_query"] == ["sleepy pets that purr"]
    assert len(raw["data"]) == 1 and raw["data"][0]["file_id"] == ids["cats"]


def test_keyword_and_hybrid_modes(server: RunningServer, topics: dict[str, Any]) -> None:
    store, ids = topics["store"], topics["ids"]
    keyword = _search(server, store.id, query="purrs", search_mode="keyword")
    assert [r["file_id"] for r in keyword["data"]] == [ids["cats"]]
    assert _search(server, store.id, query="zebracode", search_mode="keyword")["data"] == []  # script text dropped
    hybrid = _search(server, store.id, query="knead the dough", search_mode="hybrid")
    assert hybrid["data"][0]["file_id"] == ids["bread"]
    weighted = _search(
        server,
        store.id,
        query="knead the dough",
        search_mode="hybrid",
        ranking_options={"ranker": "weighted", "vector_weight": 0.3, "keyword_weight": 0.7},
    )
    assert weighted["data"][0]["file_id"] == ids["bread"]


def test_query_list_and_score_threshold(server: RunningServer, topics: dict[str, Any]) -> None:
    store, ids = topics["store"], topics["ids"]
    both = _search(server, store.id, query=["rocket engines", "kittens hunting"], max_num_results=5)
    assert both["search_query"] == ["rocket engines", "kittens hunting"]
    assert {ids["rockets"], ids["cats"]} <= {r["file_id"] for r in both["data"]}
    everything = _search(server, store.id, query="rocket engines")
    top = everything["data"][0]["score"]
    strict = _search(server, store.id, query="rocket engines", ranking_options={"score_threshold": top - 1e-6})
    assert [r["score"] for r in strict["data"]] == [top]


def test_rewrite_query_uses_a_chat_model(server: RunningServer, topics: dict[str, Any]) -> None:
    result = _search(
        server, topics["store"].id, query="hey, could you tell me how rockets get to orbit?", rewrite_query=True
    )
    (rewritten,) = result["search_query"]
    assert isinstance(rewritten, str) and rewritten.strip()
    assert result["data"]


def test_file_content_is_the_chunks(client: openai.OpenAI, topics: dict[str, Any]) -> None:
    store, ids = topics["store"], topics["ids"]
    pieces = list(client.vector_stores.files.content(file_id=ids["rockets"], vector_store_id=store.id))
    assert len(pieces) >= 1 and all(p.type == "text" for p in pieces)
    text = " ".join(p.text for p in pieces)
    assert "Multistage launch vehicles" in text and "7.8 kilometres" in text


def test_attributes_filters_and_update(client: openai.OpenAI, server: RunningServer) -> None:
    docs = {
        "2019": ("old.txt", "The 2019 annual report covers solar panel installations across the region."),
        "2021": ("mid.txt", "The 2021 annual report covers wind turbine construction along the coast."),
        "2023": ("new.txt", "The 2023 annual report covers battery storage for solar and wind farms."),
    }
    store = client.vector_stores.create(name="reports")
    ids: dict[str, str] = {}
    for year, (name, text) in docs.items():
        ids[year] = _upload(client, name, text)
        attached = client.vector_stores.files.create(
            vector_store_id=store.id,
            file_id=ids[year],
            attributes={"year": int(year), "kind": "report", "draft": year == "2023"},
        )
        assert attached.status == "in_progress" and attached.attributes["year"] == int(year)
    _wait_store(client, store.id)

    def found(filters: dict[str, Any], mode: str = "vector") -> set[str]:
        result = _search(server, store.id, query="annual report", filters=filters, search_mode=mode)
        return {r["file_id"] for r in result["data"]}

    assert found({"type": "gte", "key": "year", "value": 2021}) == {ids["2021"], ids["2023"]}
    assert found({"type": "eq", "key": "draft", "value": True}, "keyword") == {ids["2023"]}
    either = {
        "type": "or",
        "filters": [{"type": "eq", "key": "year", "value": 2019}, {"type": "eq", "key": "draft", "value": True}],
    }
    assert found(either, "hybrid") == {ids["2019"], ids["2023"]}
    assert found({"type": "in", "key": "year", "value": [2019, 2021]}) == {ids["2019"], ids["2021"]}
    result = _search(server, store.id, query="wind turbines", filters={"type": "eq", "key": "year", "value": 2021})
    assert result["data"][0]["attributes"] == {"year": 2021, "kind": "report", "draft": False}

    updated = client.vector_stores.files.update(
        file_id=ids["2019"], vector_store_id=store.id, attributes={"year": 2019, "kind": "archive"}
    )
    assert updated.attributes == {"year": 2019, "kind": "archive"}
    assert found({"type": "eq", "key": "kind", "value": "archive"}) == {ids["2019"]}
    assert ids["2019"] not in found({"type": "eq", "key": "kind", "value": "report"})


def test_delete_file_from_store_and_files_delete(client: openai.OpenAI, server: RunningServer) -> None:
    keep = _upload(client, "keep.txt", "Giraffes have long necks to reach the leaves of tall acacia trees.")
    drop = _upload(client, "drop.txt", "Penguins cannot fly but swim fast through icy Antarctic water.")
    gone = _upload(client, "gone.txt", "Octopuses have three hearts and blue blood.")
    store = client.vector_stores.create(name="animals", file_ids=[keep, drop, gone])
    other = client.vector_stores.create(name="animals-2", file_ids=[gone])
    _wait_store(client, store.id)
    _wait_store(client, other.id)
    assert _search(server, store.id, query="penguins", search_mode="keyword")["data"]

    deleted = client.vector_stores.files.delete(file_id=drop, vector_store_id=store.id)
    assert deleted.deleted and deleted.id == drop and deleted.object == "vector_store.file.deleted"
    assert _search(server, store.id, query="penguins", search_mode="keyword")["data"] == []
    assert drop not in {r["file_id"] for r in _search(server, store.id, query="birds that swim in ice")["data"]}
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(drop, vector_store_id=store.id)
    assert client.files.retrieve(drop).id == drop  # the File itself stays

    client.files.delete(gone)  # the Files API's delete removes it from every store
    for store_id in (store.id, other.id):
        assert gone not in {f.id for f in client.vector_stores.files.list(store_id).data}
        assert _search(server, store_id, query="three hearts", search_mode="keyword")["data"] == []
    assert client.vector_stores.retrieve(store.id).file_counts.total == 1
    assert client.vector_stores.retrieve(other.id).file_counts.total == 0


def test_unparseable_files_fail_with_last_error(client: openai.OpenAI) -> None:
    binary = _upload(client, "blob.bin", bytes(range(256)) * 16)
    locked = _upload(client, "locked.pdf", encrypt_pdf(make_pdf([["classified"]])))
    empty_pdf = _upload(client, "scan.pdf", make_pdf([[]]))
    fine = _upload(client, "fine.txt", "This one is fine.")
    store = client.vector_stores.create(name="broken", file_ids=[binary, locked, empty_pdf, fine])
    store = _wait_store(client, store.id)
    assert store.file_counts.failed == 3 and store.file_counts.completed == 1
    failed = {f.id: f for f in client.vector_stores.files.list(store.id, filter="failed").data}
    assert set(failed) == {binary, locked, empty_pdf}
    assert failed[binary].last_error.code == "unsupported_file"
    assert failed[locked].last_error.code == "invalid_file" and "password" in failed[locked].last_error.message
    assert "no extractable text" in failed[empty_pdf].last_error.message
    assert [f.id for f in client.vector_stores.files.list(store.id, filter="completed").data] == [fine]


def test_office_and_pdf_documents(client: openai.OpenAI, server: RunningServer) -> None:
    files = {
        "report.pdf": make_pdf([["The aquifer survey measured groundwater in wells."], ["Page two: nitrate levels."]]),
        "memo.docx": make_docx(["The cafeteria menu changes every Tuesday."], table=[["dish", "price"], ["soup", "4"]]),
        "deck.pptx": make_pptx([("Quarterly roadmap", "Launch the telescope calibration service")]),
        "budget.xlsx": make_xlsx({"Costs": [["item", "amount"], ["microscopes", 1200]]}),
    }
    ids = {name: _upload(client, name, data) for name, data in files.items()}
    store = _wait_store(client, client.vector_stores.create(name="office", file_ids=list(ids.values())).id)
    assert store.file_counts.completed == 4, client.vector_stores.files.list(store.id)
    for name, word in [
        ("report.pdf", "nitrate"),
        ("memo.docx", "cafeteria"),
        ("deck.pptx", "telescope"),
        ("budget.xlsx", "microscopes"),
    ]:
        result = _search(server, store.id, query=word, search_mode="keyword")
        assert [r["filename"] for r in result["data"]] == [name], (name, result)
    table = " ".join(
        p.text for p in client.vector_stores.files.content(file_id=ids["memo.docx"], vector_store_id=store.id)
    )
    assert "dish: soup; price: 4" in table


def test_file_batches_create_poll_list_and_cancel(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="batches")
    small = [_upload(client, f"note-{i}.txt", f"Note number {i} about topic {i}.") for i in range(3)]
    batch = client.vector_stores.file_batches.create(
        vector_store_id=store.id, file_ids=small, attributes={"source": "notes"}
    )
    assert batch.object == "vector_store.files_batch" and batch.file_counts.total == 3
    done = client.vector_stores.file_batches.poll(batch.id, vector_store_id=store.id, poll_interval_ms=100)
    assert done.status == "completed" and done.file_counts.completed == 3
    listed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    assert {f.id for f in listed.data} == set(small)
    assert all(f.attributes == {"source": "notes"} for f in listed.data)

    big_text = " ".join(f"Paragraph {i} of a long manual about industrial pumps and valves." for i in range(3000))
    big = [_upload(client, f"manual-{i}.txt", big_text) for i in range(4)]
    slow = client.vector_stores.file_batches.create(
        vector_store_id=store.id,
        files=[{"file_id": f, "chunking_strategy": SMALL_CHUNKS, "attributes": {"n": i}} for i, f in enumerate(big)],
    )
    cancelled = client.vector_stores.file_batches.cancel(slow.id, vector_store_id=store.id)
    assert cancelled.status == "cancelled"

    def settled() -> Any:
        b = client.vector_stores.file_batches.retrieve(slow.id, vector_store_id=store.id)
        return b if b.file_counts.in_progress == 0 else None

    final = _wait(settled, 120, "the cancelled batch to settle")
    assert final.status == "cancelled" and final.file_counts.cancelled >= 1
    assert final.file_counts.cancelled + final.file_counts.completed == 4
    cancelled_files = client.vector_stores.file_batches.list_files(
        slow.id, vector_store_id=store.id, filter="cancelled"
    )
    assert all(f.status == "cancelled" for f in cancelled_files.data)


def test_list_pagination_update_and_delete(client: openai.OpenAI) -> None:
    made = [client.vector_stores.create(name=f"page-{i}", metadata={"i": str(i)}).id for i in range(5)]
    seen: list[str] = []
    page = client.vector_stores.list(limit=2, order="asc")
    while True:
        seen.extend(s.id for s in page.data)
        if not page.has_more:
            break
        page = client.vector_stores.list(limit=2, order="asc", after=page.data[-1].id)
    ours = [s for s in seen if s in made]
    assert ours == made and len(seen) == len(set(seen))
    newest = client.vector_stores.list(limit=2)
    assert [s.id for s in newest.data] == made[::-1][:2] and newest.has_more
    before = client.vector_stores.list(limit=2, order="asc", before=made[3])
    assert [s.id for s in before.data] == made[1:3]

    updated = client.vector_stores.update(
        made[0], name="renamed", metadata={"k": "v"}, expires_after={"anchor": "last_active_at", "days": 3}
    )
    assert updated.name == "renamed" and updated.metadata == {"k": "v"}
    assert updated.expires_after.days == 3 and updated.expires_at == updated.last_active_at + 3 * 86400
    for store_id in made:
        result = client.vector_stores.delete(store_id)
        assert result.deleted and result.object == "vector_store.deleted"
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(made[0])


def test_validation_and_not_found(client: openai.OpenAI, server: RunningServer, topics: dict[str, Any]) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.vector_stores.create(name="x", file_ids=["file-doesnotexist"])
    assert "file-doesnotexist" in info.value.body["message"]
    bad = {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 150}}
    with pytest.raises(openai.BadRequestError) as info:
        client.vector_stores.create(name="x", chunking_strategy=bad)  # type: ignore[arg-type]
    assert "chunking_strategy" in (info.value.body.get("param") or "")
    response = httpx.post(
        f"{server.v1}/vector_stores/{topics['store'].id}/search", json={"query": "x", "max_num_results": 51}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "max_num_results"
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.search("vs_missing", query="x")
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.create(name="x", extra_body={"provider_id": "nope"})


def test_low_level_vector_io_routes(client: openai.OpenAI, server: RunningServer) -> None:
    store = client.vector_stores.create(name="raw")
    inserted = httpx.post(
        f"{server.v1}/vector-io/insert",
        json={
            "vector_store_id": store.id,
            "chunks": [
                {"chunk_id": "c1", "document_id": "manual", "content": "Turn the valve clockwise to close it."},
                {"chunk_id": "c2", "document_id": "manual", "content": "Volcanoes erupt molten rock called lava."},
            ],
        },
        timeout=60,
    )
    assert inserted.status_code == 200, inserted.text
    result = httpx.post(
        f"{server.v1}/vector-io/query",
        json={"vector_store_id": store.id, "query": "how to shut a valve", "max_num_results": 1},
        timeout=60,
    ).json()
    assert [d["chunk"]["chunk_id"] for d in result["data"]] == ["c1"]
    wrong = httpx.post(
        f"{server.v1}/vector-io/insert",
        json={
            "vector_store_id": store.id,
            "chunks": [{"chunk_id": "c3", "document_id": "d", "content": "x", "embedding": [0.1, 0.2]}],
        },
    )
    assert wrong.status_code == 400 and "384" in wrong.json()["error"]["message"]


def test_faiss_gives_the_same_top_results(client: openai.OpenAI) -> None:
    texts = {
        "volcano.txt": "Volcanoes erupt when magma rises through cracks in the crust.",
        "glacier.txt": "Glaciers carve valleys as they slowly slide downhill under their own weight.",
        "desert.txt": "Deserts receive less than 250 millimetres of rain each year.",
        "reef.txt": "Coral reefs are built by tiny animals that secrete limestone skeletons.",
    }
    ids = [_upload(client, name, text) for name, text in texts.items()]
    results = {}
    for backend in ("sqlite-vec", "faiss"):
        store = client.vector_stores.create(name=backend, file_ids=ids, extra_body={"provider_id": backend})
        assert (store.model_extra or {})["provider_id"] == backend
        _wait_store(client, store.id)
        page = client.vector_stores.search(store.id, query="ice moving down a mountain", max_num_results=4)
        results[backend] = [(r.filename, round(r.score, 4)) for r in page.data]
    assert results["sqlite-vec"][0][0] == "glacier.txt"
    assert [name for name, _ in results["faiss"]] == [name for name, _ in results["sqlite-vec"]]
    for (_, a), (_, b) in zip(results["faiss"], results["sqlite-vec"], strict=True):
        assert abs(a - b) < 1e-3


# ---------------------------------------------------------------------------------------------------
# A server killed mid-ingestion
# ---------------------------------------------------------------------------------------------------


def _job(state_dir: Path, file_id: str) -> tuple[float, int, str]:
    """The newest ingestion job of a file, read from the server's SQL store: progress, attempts, status."""
    with sqlite3.connect(state_dir / "sqlstore.db", timeout=30) as conn:
        row = conn.execute(
            "SELECT progress, attempts, status FROM jobs WHERE reference LIKE ? ORDER BY created_ns DESC LIMIT 1",
            (f"%/{file_id}",),
        ).fetchone()
    return (float(row[0] or 0), int(row[1] or 0), str(row[2])) if row else (0.0, 0, "missing")


def test_killed_mid_ingestion_resumes_and_search_never_sees_partial_content(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workdir = tmp_path_factory.mktemp("crash")
    first = start_server(_config(), workdir, timeout=300)
    config_path = first.config_path
    try:
        client = first.openai(timeout=120)
        marker = "quokkamarker"
        big = "\n".join(
            f"Section {i}: the {marker} maintenance log entry number {i} describes pump {i % 17} and valve {i % 23}."
            for i in range(4000)
        )
        file_id = _upload(client, "big-log.txt", big)
        small = _upload(client, "small.txt", f"A short unrelated note that mentions no {marker[:5]}.")
        store = client.vector_stores.create(name="crash", file_ids=[small])
        _wait_store(client, store.id)
        client.vector_stores.files.create(vector_store_id=store.id, file_id=file_id, chunking_strategy=SMALL_CHUNKS)
        state_dir = workdir / "state"
        saw_progress = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            hits = _search(first, store.id, query=marker, search_mode="keyword")["data"]
            hits += _search(first, store.id, query="pump maintenance log", max_num_results=5)["data"]
            status = client.vector_stores.files.retrieve(file_id, vector_store_id=store.id).status  # after: see below
            if status == "in_progress":
                assert all(h["file_id"] != file_id for h in hits), "search returned a half-indexed file"
            if _job(state_dir, file_id)[0] >= 0.2:
                saw_progress = True
                break
            time.sleep(0.1)
        assert saw_progress, "ingestion never got going"
        assert client.vector_stores.files.retrieve(file_id, vector_store_id=store.id).status == "in_progress"
    finally:
        first.stop(signal.SIGKILL)

    second = start_server(str(config_path), workdir, timeout=300)
    try:
        client = second.openai(timeout=120)
        while True:
            hits = _search(second, store.id, query=marker, search_mode="keyword")["data"]
            # Read after searching: still in progress now means it was in progress during the search.
            item = client.vector_stores.files.retrieve(file_id, vector_store_id=store.id)
            if item.status == "in_progress":
                assert all(h["file_id"] != file_id for h in hits), "search returned a half-indexed file after restart"
                time.sleep(0.2)
                continue
            break
        assert item.status in ("completed", "failed")
        _, attempts, job_status = _job(workdir / "state", file_id)
        assert attempts == 2 and job_status in ("succeeded", "failed")  # re-claimed after the kill
        if item.status == "failed":
            assert item.last_error is not None and item.last_error.message
        else:
            hits = _search(second, store.id, query=marker, search_mode="keyword")["data"]
            assert hits and hits[0]["file_id"] == file_id
            chunks = list(client.vector_stores.files.content(file_id=file_id, vector_store_id=store.id))
            texts = [c.text for c in chunks]
            assert len(texts) == len(set(texts)) > 100  # redone from scratch: no duplicated partial chunks
            assert texts[0].startswith("Section 0:") and "Section 3999:" in texts[-1]
        store_after = client.vector_stores.retrieve(store.id)
        assert store_after.status == "completed" and store_after.file_counts.in_progress == 0
    finally:
        second.stop()
