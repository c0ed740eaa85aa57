"""``remote::azure-openai`` through a real ``underlay run``, driven by the ``openai`` SDK.

Azure OpenAI cannot be reached from here, so the providers point at the loopback STAND-IN of
``wire_azure.py`` (deployment paths with ``api-version``, the ``/openai/v1`` form, ``api-key`` or Entra ID
bearer auth, a client-credentials token endpoint, Azure's content-filter error and its streams'
``prompt_filter_results`` preamble). The tests assert what Underlay sent (path, query, auth header, the
deployment name) and what the client got, and how failures reach it: the content filter 400 naming the
category, throttling 429 with Retry-After, a refused key 502 naming the provider and never the key, and
a stream cut mid-way an error event.

``test_real_azure_openai`` runs against a real resource when its endpoint, key and a deployment are in
the environment, and is skipped otherwise with a reason saying so.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.integration.harness import RunningServer, start_server
from tests.integration.wire_azure import (
    API_KEY,
    CHAT_DEPLOYMENT,
    CLIENT_ID,
    CLIENT_SECRET,
    EMBED_DEPLOYMENT,
    TENANT,
    AzureStandIn,
)
from tests.integration.wire_standins import Failure
from underlay.api.errors import RateLimitedError, UpstreamError
from underlay.api.inference import ChatCompletion, ChatCompletionRequest
from underlay.providers.remote.inference.azure_openai import AzureOpenAIInferenceProvider, Config

WRONG_KEY = "azure-wrong-key-0f0f0f0f"
CHAT_PATH = f"/openai/deployments/{CHAT_DEPLOYMENT}/chat/completions"
DEPLOYMENTS = {"gpt-4o-mini": CHAT_DEPLOYMENT, "text-embedding-3-small": EMBED_DEPLOYMENT}


@pytest.fixture(scope="module")
def azure() -> Iterator[AzureStandIn]:
    stand_in = AzureStandIn().start()
    yield stand_in
    stand_in.stop()


def _provider(provider_id: str, url: str, **config: Any) -> dict[str, Any]:
    quick = {"max_retries": 0, "timeout": {"connect": 2, "read": 10}}
    return {
        "provider_id": provider_id,
        "provider_type": "remote::azure-openai",
        "config": {"azure_endpoint": url, "deployments": DEPLOYMENTS, **quick, **config},
    }


@pytest.fixture(scope="module")
def server(azure: AzureStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    entra = {"tenant_id": TENANT, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token_url": azure.token_url}
    config = {
        "apis": ["inference", "models"],
        "providers": {
            "inference": [
                _provider("azure", azure.root, api_key=API_KEY, api_version="2024-10-21"),
                _provider("azure-entra", azure.root, entra=entra),
                _provider(
                    "azure-v1",
                    azure.root,
                    api_key=API_KEY,
                    api_style="v1",
                    deployments=f"gpt-4o-mini={CHAT_DEPLOYMENT}",
                ),
                _provider("azure-badkey", azure.root, api_key=WRONG_KEY),
            ]
        },
    }
    running = start_server(config, tmp_path_factory.mktemp("azure"), env={"AZURE_OPENAI_API_KEY": ""})
    yield running
    running.stop()


def _client(server: RunningServer) -> openai.OpenAI:
    return server.openai()  # no retries: each failure reaches the test as sent


def test_deployments_are_listed(server: RunningServer) -> None:
    listed = {m.id for m in _client(server).models.list().data}
    assert {"azure/gpt-4o-mini", "azure/text-embedding-3-small", "azure-v1/gpt-4o-mini"} <= listed


def test_chat_goes_to_the_deployment_with_api_version_and_api_key(server: RunningServer, azure: AzureStandIn) -> None:
    completion = _client(server).chat.completions.create(
        model="azure/gpt-4o-mini", messages=[{"role": "user", "content": "hello azure"}], max_tokens=20
    )
    seen = azure.standin.requests_to(CHAT_PATH)[-1]
    assert seen.query == {"api-version": "2024-10-21"}
    assert seen.headers["api-key"] == API_KEY and "authorization" not in seen.headers
    assert seen.body["model"] == CHAT_DEPLOYMENT and seen.body["max_tokens"] == 20
    assert completion.model == "azure/gpt-4o-mini"
    assert completion.choices[0].message.content == "Azure echo: hello azure"
    usage = completion.usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (7, 4, 11)


def test_streaming_drops_the_filter_preamble(server: RunningServer) -> None:
    chunks = list(
        _client(server).chat.completions.create(
            model="azure/gpt-4o-mini",
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices and chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Azure echo: stream me "
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 7


def test_tool_round_trip(server: RunningServer, azure: AzureStandIn) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    client = _client(server)
    first = client.chat.completions.create(
        model="azure/gpt-4o-mini",
        messages=[{"role": "user", "content": "find it"}],
        tools=[tool],  # type: ignore[list-item]
    )
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"
    second = client.chat.completions.create(
        model="azure/gpt-4o-mini",
        messages=[
            {"role": "user", "content": "find it"},
            first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "42"},
        ],
        tools=[tool],  # type: ignore[list-item]
    )
    assert azure.standin.requests_to(CHAT_PATH)[-1].body["messages"][2]["tool_call_id"] == call.id
    assert second.choices[0].message.content == "Tool result was: 42"


def test_embeddings(server: RunningServer, azure: AzureStandIn) -> None:
    answer = _client(server).embeddings.create(
        model="azure/text-embedding-3-small", input=["a b", "c"], dimensions=16, encoding_format="float"
    )
    seen = azure.standin.requests_to(f"/openai/deployments/{EMBED_DEPLOYMENT}/embeddings")[-1]
    assert seen.body == {"model": EMBED_DEPLOYMENT, "input": ["a b", "c"], "dimensions": 16, "encoding_format": "float"}
    assert [len(d.embedding) for d in answer.data] == [16, 16] and answer.usage.prompt_tokens == 3
    assert answer.model == "azure/text-embedding-3-small"


def test_entra_client_credentials_token_is_fetched_once_and_sent_as_bearer(
    server: RunningServer, azure: AzureStandIn
) -> None:
    before = azure.token_requests
    client = _client(server)
    for word in ("one", "two"):
        reply = client.chat.completions.create(
            model="azure-entra/gpt-4o-mini", messages=[{"role": "user", "content": word}]
        )
        assert reply.choices[0].message.content == f"Azure echo: {word}"
    assert azure.token_requests - before <= 1  # cached until shortly before it expires
    seen = azure.standin.requests_to(CHAT_PATH)[-1]
    assert seen.headers["authorization"].startswith("Bearer eyJ0eXAi.standin.") and "api-key" not in seen.headers


def test_v1_form_sends_the_deployment_as_model(server: RunningServer, azure: AzureStandIn) -> None:
    reply = _client(server).chat.completions.create(
        model="azure-v1/gpt-4o-mini", messages=[{"role": "user", "content": "new style"}]
    )
    seen = azure.standin.requests_to("/openai/v1/chat/completions")[-1]
    assert seen.body["model"] == CHAT_DEPLOYMENT and seen.query == {}
    assert reply.choices[0].message.content == "Azure echo: new style"


def test_content_filter_is_400_naming_the_category(server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _client(server).chat.completions.create(
            model="azure/gpt-4o-mini", messages=[{"role": "user", "content": "FORBIDDEN request"}]
        )
    assert caught.value.code == "content_filter"
    assert "violence (medium)" in caught.value.message and "hate" not in caught.value.message


def test_throttling_is_429_with_retry_after(server: RunningServer, azure: AzureStandIn) -> None:
    body = {
        "error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation have exceeded the rate limit.",
        }
    }
    azure.standin.fail(CHAT_PATH, Failure(429, body, headers={"retry-after": "12"}))
    with pytest.raises(openai.RateLimitError) as caught:
        _client(server).chat.completions.create(model="azure/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.response.headers["retry-after"] == "12"
    assert "Provider 'azure'" in caught.value.message


def test_refused_key_is_502_naming_the_provider_not_the_key(server: RunningServer) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        _client(server).chat.completions.create(
            model="azure-badkey/gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 502
    assert "Provider 'azure-badkey'" in caught.value.message and "Access denied" in caught.value.message
    assert WRONG_KEY not in caught.value.response.text


def test_stream_cut_mid_way_is_an_error_event(server: RunningServer) -> None:
    stream = _client(server).chat.completions.create(
        model="azure/gpt-4o-mini", messages=[{"role": "user", "content": "CUTSTREAM please"}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "Azure " in "".join(received)
    assert "Provider 'azure'" in caught.value.message


# -- the provider on its own: Entra ID tokens, throttling without Retry-After --------------------------


def _chat(model: str = "gpt-4o-mini") -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": model, "messages": [{"role": "user", "content": "hi"}]})


def _entra_provider(stand_in: AzureStandIn, secret: str = CLIENT_SECRET) -> AzureOpenAIInferenceProvider:
    entra = {"tenant_id": TENANT, "client_id": CLIENT_ID, "client_secret": secret, "token_url": stand_in.token_url}
    config = Config.model_validate(
        {"azure_endpoint": stand_in.root, "deployments": DEPLOYMENTS, "entra": entra, "max_retries": 0}
    )
    return AzureOpenAIInferenceProvider("azure-entra", config)


async def test_entra_token_is_renewed_before_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_AD_TOKEN", raising=False)
    stand_in = AzureStandIn(token_lifetime=63).start()  # good for three seconds past the 60 s renewal margin
    provider = _entra_provider(stand_in)
    await provider.initialize()
    try:
        await provider.openai_chat_completion(_chat())
        await provider.openai_chat_completion(_chat())
        assert stand_in.token_requests == 1
        await asyncio.sleep(3.2)
        await provider.openai_chat_completion(_chat())
        assert stand_in.token_requests == 2
        bearers = [s.headers["authorization"] for s in stand_in.standin.requests_to(CHAT_PATH)]
        assert bearers[0] == bearers[1] != bearers[2]
    finally:
        await provider.shutdown()
        stand_in.stop()


async def test_refused_client_secret_is_502_quoting_entra_not_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_AD_TOKEN", raising=False)
    stand_in = AzureStandIn().start()
    provider = _entra_provider(stand_in, secret="wrong-entra-secret-1234")
    await provider.initialize()
    try:
        with pytest.raises(UpstreamError) as caught:
            await provider.openai_chat_completion(_chat())
    finally:
        await provider.shutdown()
        stand_in.stop()
    assert caught.value.status_code == 502 and caught.value.code == "upstream_auth_failed"
    assert "AADSTS7000215" in caught.value.message and "wrong-entra-secret-1234" not in caught.value.message
    assert stand_in.standin.requests_to(CHAT_PATH) == []


async def test_throttling_without_retry_after_still_says_when(azure: AzureStandIn) -> None:
    config = Config.model_validate(
        {"azure_endpoint": azure.root, "api_key": API_KEY, "deployments": DEPLOYMENTS, "max_retries": 0}
    )
    provider = AzureOpenAIInferenceProvider("azure", config)
    azure.standin.fail(CHAT_PATH, Failure(429, {"error": {"code": "429", "message": "Rate limit is exceeded."}}))
    await provider.initialize()
    try:
        with pytest.raises(RateLimitedError) as caught:
            await provider.openai_chat_completion(_chat())
    finally:
        await provider.shutdown()
    assert caught.value.headers == {"Retry-After": "1"}


@pytest.mark.skipif(
    not (
        os.environ.get("AZURE_OPENAI_ENDPOINT")
        and os.environ.get("AZURE_OPENAI_API_KEY")
        and os.environ.get("UNDERLAY_TEST_AZURE_DEPLOYMENT")
    ),
    reason="real Azure OpenAI needs AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY and UNDERLAY_TEST_AZURE_DEPLOYMENT in "
    "the environment; they are not set, so only the stand-in was tested",
)
def test_real_azure_openai() -> None:
    deployment = os.environ["UNDERLAY_TEST_AZURE_DEPLOYMENT"]

    async def run() -> None:
        provider = AzureOpenAIInferenceProvider("azure", Config(deployments={deployment: deployment}))
        await provider.initialize()
        try:
            request = ChatCompletionRequest.model_validate(
                {"model": deployment, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 10}
            )
            answer = await provider.openai_chat_completion(request)
            assert isinstance(answer, ChatCompletion) and answer.choices[0].message.content
        finally:
            await provider.shutdown()

    asyncio.run(run())
