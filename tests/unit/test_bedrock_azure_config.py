"""Config of ``remote::bedrock`` and ``remote::azure-openai``: the starter toggles, env-shaped values, secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from underlay.api.errors import InvalidRequestError
from underlay.api.inference import EmbeddingsRequest
from underlay.core.config import load_run_config
from underlay.core.registry import available_providers
from underlay.providers.remote.inference import azure_openai
from underlay.providers.remote.inference.bedrock import provider as bedrock


def _remote(env: dict[str, str]) -> list[tuple[str, str, dict[str, object]]]:
    starter = load_run_config("starter", env=env)
    return [
        (p.provider_id, p.provider_type, dict(p.config))
        for p in starter.providers["inference"]
        if p.provider_type.startswith("remote::")
    ]


def test_both_are_registered() -> None:
    registry = available_providers()
    assert ("inference", "remote::bedrock") in registry and ("inference", "remote::azure-openai") in registry


def test_starter_turns_bedrock_on_by_region() -> None:
    env = {"AWS_BEDROCK_REGION": "eu-west-3", "AWS_BEDROCK_MODELS": "amazon.nova-lite-v1:0, cohere.embed-english-v3"}
    [(provider_id, provider_type, raw)] = _remote(env)
    assert (provider_id, provider_type) == ("bedrock", "remote::bedrock")
    config = bedrock.Config.model_validate(raw)
    assert config.region == "eu-west-3" and config.endpoint_url is None and config.discover_models is False
    assert [m.model_id for m in config.models] == ["amazon.nova-lite-v1:0", "cohere.embed-english-v3"]


def test_starter_turns_azure_on_by_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com/",
        "AZURE_OPENAI_API_KEY": "k-123456",
        "AZURE_OPENAI_DEPLOYMENTS": "gpt-4o-mini=prod-mini, text-embedding-3-small",
    }
    [(provider_id, provider_type, raw)] = _remote(env)
    assert (provider_id, provider_type) == ("azure-openai", "remote::azure-openai")
    config = azure_openai.Config.model_validate(raw)
    assert config.endpoint() == "https://res.openai.azure.com/openai"
    assert config.api_version == "2024-10-21" and config.configured_api_key() == "k-123456"
    assert config.deployments == {"gpt-4o-mini": "prod-mini", "text-embedding-3-small": "text-embedding-3-small"}
    assert "k-123456" not in config.model_dump_json()


def test_starter_leaves_both_off_when_unset() -> None:
    assert _remote({}) == []


def test_azure_needs_an_endpoint_and_builds_both_url_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    with pytest.raises(ValidationError, match="AZURE_OPENAI_ENDPOINT"):
        azure_openai.Config()
    provider = azure_openai.AzureOpenAIInferenceProvider(
        "az", azure_openai.Config(azure_endpoint="https://r.openai.azure.com/openai", deployments={"m": "dep/1"})
    )
    assert provider._operation_url("chat/completions", "m") == (
        "https://r.openai.azure.com/openai/deployments/dep%2F1/chat/completions?api-version=2024-10-21"
    )
    v1 = azure_openai.AzureOpenAIInferenceProvider(
        "az", azure_openai.Config(azure_endpoint="https://r.openai.azure.com", api_style="v1")
    )
    assert v1._operation_url("embeddings", "m") == "https://r.openai.azure.com/openai/v1/embeddings"


def test_bedrock_config_rejects_typos_and_hides_secrets() -> None:
    with pytest.raises(ValidationError):
        bedrock.Config(regoin="x")  # type: ignore[call-arg]
    config = bedrock.Config(access_key_id="AKIDXXXX", secret_access_key="s3cr3t-value")
    assert "s3cr3t-value" not in config.model_dump_json()


@pytest.mark.parametrize(
    ("model", "given", "param"),
    [
        ("amazon.titan-embed-text-v2:0", ["x"] * 2049, "input"),
        ("amazon.titan-embed-text-v2:0", [[1, 2]], "input"),
        ("meta.llama3-8b-instruct-v1:0", "x", "model"),
    ],
)
async def test_bedrock_embeddings_refuse_before_calling(model: str, given: object, param: str) -> None:
    provider = bedrock.BedrockInferenceProvider("bedrock", bedrock.Config())  # never initialized: no call is made
    with pytest.raises(InvalidRequestError) as caught:
        await provider.openai_embeddings(EmbeddingsRequest.model_validate({"model": model, "input": given}))
    assert caught.value.param == param
