"""The 400 messages built from pydantic's validation errors name the field a person must fix."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from underlay.server.errors import validation_message


class _Rows(BaseModel):
    type: Literal["rows"]
    rows: list[dict[str, str]]


class _Uri(BaseModel):
    type: Literal["uri"]
    uri: str


class _Register(BaseModel):
    dataset_id: str
    source: Annotated[_Rows | _Uri, Field(discriminator="type")]


def _message(body: object) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as caught:
        _Register.model_validate(body)
    return validation_message(list(caught.value.errors()))


def test_a_union_member_without_its_type_names_the_missing_field() -> None:
    message, param = _message({"dataset_id": "d", "source": {"rows": []}})
    assert param == "source.type"
    assert message.startswith("Missing required parameter: 'source.type'") and "discriminator" not in message


def test_an_unknown_type_lists_the_expected_ones() -> None:
    message, param = _message({"dataset_id": "d", "source": {"type": "ftp"}})
    assert param == "source" and "'rows'" in message and "'uri'" in message


def test_a_missing_plain_field_is_named() -> None:
    assert _message({"source": {"type": "uri", "uri": "x"}}) == (
        "Missing required parameter: 'dataset_id'.",
        "dataset_id",
    )
