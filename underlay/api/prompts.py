"""The Prompts API: versioned instruction templates with declared ``{{variable}}`` placeholders.

A prompt is a template (``"You are a helpful assistant for {{ company }}."``) plus the names of the
variables it takes. Editing one adds a version (1, 2, 3, ...) rather than overwriting, and one version is
the default: the one a caller gets when it names no version. The Responses API renders a prompt into a
response's instructions (``prompt: {id, version, variables}``, as OpenAI defines the parameter), and
agents refer to prompts by id and version.

Why a tiny substitution and not a template engine: templates are written by clients, and a client's
string must cost bounded work and never run code. A placeholder is ``{{ name }}`` (a Python-style
identifier, optional spaces) and nothing else; every other character, other braces included, is text.
Rendering is one regular-expression pass whose output size is checked before it is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from underlay.api.base import ApiModel
from underlay.api.errors import InvalidRequestError
from underlay.api.omit import omit_when_none
from underlay.api.pagination import ListQuery
from underlay.api.response_items import check_metadata
from underlay.api.routes import Handler, Route

__all__ = [
    "CreatePromptRequest",
    "CreatePromptVersionRequest",
    "MAX_RENDERED_CHARS",
    "MAX_TEMPLATE_CHARS",
    "MAX_VARIABLES",
    "Prompt",
    "PromptDeleted",
    "PromptList",
    "PromptsApi",
    "ROUTES",
    "RetrievePromptQuery",
    "SetDefaultVersionRequest",
    "VersionListQuery",
    "placeholders",
    "render_template",
]

MAX_TEMPLATE_CHARS = 100_000
"""A template's length limit: instructions, not documents (those belong in a vector store)."""
MAX_VARIABLES = 64
MAX_RENDERED_CHARS = 1_000_000
"""What one rendering may produce, checked before it is built (a long value used many times)."""

_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_NAME_PATTERN = re.compile(rf"^{_NAME}$")
# Bounded quantifiers only, so a failed match costs at most ~100 characters of scanning per "{{".
_PLACEHOLDER = re.compile(rf"\{{\{{[ \t]{{0,16}}({_NAME})[ \t]{{0,16}}\}}\}}")


def placeholders(template: str) -> list[str]:
    """The variable names ``template`` uses, each once, in order of first use."""
    return list(dict.fromkeys(match.group(1) for match in _PLACEHOLDER.finditer(template)))


def _listing(names: list[str]) -> str:
    return ", ".join(names) if names else "(none)"


def render_template(
    template: str, declared: list[str], values: Mapping[str, str], *, param: str = "variables", what: str = "prompt"
) -> str:
    """``template`` with each ``{{ name }}`` replaced by ``values[name]``.

    Every declared variable must be given and nothing else may be: a clear 400 naming the variable (at
    ``param.<name>``) for a missing or unknown one. The result's size is computed first and refused
    above :data:`MAX_RENDERED_CHARS`, so a large value used many times cannot make the server build a
    huge string.
    """
    for name in values:
        if name not in declared:
            raise InvalidRequestError(
                f"'{name[:64]}' is not a variable of {what}; it declares: {_listing(declared)}.",
                param=f"{param}.{name[:64]}",
                code="unknown_variable",
            )
    for name in declared:
        if name not in values:
            raise InvalidRequestError(
                f"Variable '{name}' of {what} is missing; give a value for each of: {_listing(declared)}.",
                param=f"{param}.{name}",
                code="missing_variable",
            )
    matches = list(_PLACEHOLDER.finditer(template))
    size = len(template) + sum(len(values[m.group(1)]) - (m.end() - m.start()) for m in matches)
    if size > MAX_RENDERED_CHARS:
        raise InvalidRequestError(
            f"{what} would render to {size} characters; at most {MAX_RENDERED_CHARS} are allowed. Send long "
            "text as input (or a file through file_search) rather than as a variable.",
            param=param,
            code="prompt_too_large",
        )
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


# ---------------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------------


class Prompt(ApiModel):
    """One version of a prompt. ``id`` is the prompt's (every version shares it); ``version`` counts from 1."""

    id: str
    object: Literal["prompt"] = "prompt"
    version: int
    prompt: str
    variables: list[str] = Field(default_factory=list)
    is_default: bool
    created_at: int
    metadata: dict[str, str] = Field(default_factory=dict)


class PromptList(ApiModel):
    object: Literal["list"] = "list"
    data: list[Prompt]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    _omit = omit_when_none("first_id", "last_id")


class PromptDeleted(ApiModel):
    id: str
    object: Literal["prompt.deleted"] = "prompt.deleted"
    deleted: bool = True


# ---------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------


class _TemplateRequest(ApiModel):
    """A template and its variables: every placeholder must be declared (left out: the ones it uses)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_TEMPLATE_CHARS)
    variables: list[str] | None = Field(default=None, max_length=MAX_VARIABLES)
    metadata: dict[str, str] | None = None

    _metadata = field_validator("metadata")(check_metadata)

    @field_validator("variables")
    @classmethod
    def _names(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return None
        for name in value:
            if not _NAME_PATTERN.fullmatch(name):
                raise ValueError(
                    f"'{name[:64]}' is not a variable name; use letters, digits and _ (not first), "
                    "at most 64 characters"
                )
        if len(set(value)) != len(value):
            raise ValueError("each variable is declared once")
        template = info.data.get("prompt")
        if isinstance(template, str):
            for name in placeholders(template):
                if name not in value:
                    raise ValueError(
                        f"the template uses {{{{{name}}}}}, which is not declared; add '{name}' to variables"
                    )
        return value

    @model_validator(mode="after")
    def _infer(self) -> _TemplateRequest:
        if self.variables is None:
            used = placeholders(self.prompt)
            if len(used) > MAX_VARIABLES:
                raise ValueError(f"the template uses {len(used)} variables; at most {MAX_VARIABLES} are allowed")
            self.variables = used
        return self


class CreatePromptRequest(_TemplateRequest):
    """``POST /v1/prompts``: version 1, which is the default."""


class CreatePromptVersionRequest(_TemplateRequest):
    """``POST /v1/prompts/{id}/versions``: the next version. ``metadata``, when given, replaces the prompt's."""

    set_as_default: bool = True


class SetDefaultVersionRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)


class RetrievePromptQuery(ApiModel):
    """``version`` unset: the default version (the one the Responses API uses when none is named)."""

    version: int | None = Field(default=None, ge=1)


class VersionListQuery(ApiModel):
    """A prompt's versions, by number: ``after`` is a version number (the cursor), ``desc`` newest first."""

    after: int | None = Field(default=None, ge=0)
    limit: int = Field(default=20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"

    @field_validator("after", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return None if value == "" else value


# ---------------------------------------------------------------------------------------------------
# The router's contract and the routes
# ---------------------------------------------------------------------------------------------------


class PromptsApi(Protocol):
    """The prompts router: one method per route below (as the current principal).

    The Responses engine calls :meth:`retrieve_prompt` to render ``prompt`` into instructions;
    :class:`underlay.core.routers.prompts.PromptsRouter` implements it.
    """

    async def create_prompt(self, params: CreatePromptRequest) -> Prompt: ...

    async def list_prompts(self, query: ListQuery) -> PromptList:
        """Each prompt once, at its default version."""
        ...

    async def retrieve_prompt(self, prompt_id: str, query: RetrievePromptQuery) -> Prompt: ...

    async def list_prompt_versions(self, prompt_id: str, query: VersionListQuery) -> PromptList: ...

    async def create_prompt_version(self, prompt_id: str, params: CreatePromptVersionRequest) -> Prompt: ...

    async def set_default_version(self, prompt_id: str, params: SetDefaultVersionRequest) -> Prompt: ...

    async def delete_prompt(self, prompt_id: str) -> PromptDeleted:
        """The prompt and every version of it."""
        ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("prompts",), **kwargs)


_P = "/v1/prompts/{prompt_id}"

ROUTES: list[Route] = [
    _route(
        "POST", "/v1/prompts", PromptsApi.create_prompt, "Create a prompt", body=CreatePromptRequest, response=Prompt
    ),
    _route("GET", "/v1/prompts", PromptsApi.list_prompts, "List prompts", query=ListQuery, response=PromptList),
    _route(
        "GET",
        _P,
        PromptsApi.retrieve_prompt,
        "Retrieve a prompt (its default version, or ?version=N)",
        query=RetrievePromptQuery,
        response=Prompt,
    ),
    _route(
        "GET",
        f"{_P}/versions",
        PromptsApi.list_prompt_versions,
        "List a prompt's versions",
        query=VersionListQuery,
        response=PromptList,
    ),
    _route(
        "POST",
        f"{_P}/versions",
        PromptsApi.create_prompt_version,
        "Add a version to a prompt",
        body=CreatePromptVersionRequest,
        response=Prompt,
    ),
    _route(
        "POST",
        f"{_P}/set_default_version",
        PromptsApi.set_default_version,
        "Make a version the prompt's default",
        body=SetDefaultVersionRequest,
        response=Prompt,
    ),
    _route("DELETE", _P, PromptsApi.delete_prompt, "Delete a prompt and all its versions", response=PromptDeleted),
]
