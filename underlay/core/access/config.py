"""The ``access_policy`` section of the run config (see :mod:`underlay.core.access`).

Left out (or with no ``rules``), the built-in default applies: each principal reaches only the rows it
owns, and registered resources (models, shields, tool groups) are open to everyone. Once ``rules`` is
given, those rules are the whole policy: the first rule that matches decides, and an action no rule
permits is refused.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from underlay.core.access.conditions import parse_condition

ACTIONS = ("create", "read", "update", "delete")
RESOURCE_TYPES = (
    "model",
    "shield",
    "tool_group",
    "vector_store",
    "file",
    "response",
    "conversation",
    "prompt",
    "agent",
    "batch",
    "dataset",
    "eval",
    "scoring_function",
    "chat_completion",
    "job",
    "trace",
)
"""Resource types rules may name (globs over these are allowed, e.g. ``"*"``)."""

Action = Literal["create", "read", "update", "delete", "*"]


def _check_conditions(values: list[str], *, principal_only: bool = False) -> list[str]:
    for text in values:
        condition = parse_condition(text)  # ValueError with the syntax on a typo
        if principal_only and not condition.principal_only:
            raise ValueError(
                f"route rules see no resource, so {text!r} cannot apply; use 'user with <value> in <attr>', "
                "'user without <value> in <attr>', 'user is anonymous' or 'user is authenticated'"
            )
    return values


def _check_resource_types(values: list[str]) -> list[str]:
    from fnmatch import fnmatchcase

    for value in values:
        if not any(fnmatchcase(kind, value) for kind in RESOURCE_TYPES):
            raise ValueError(f"unknown resource type {value!r}; use one of: {', '.join(RESOURCE_TYPES)} or '*'")
    return values


class AccessRule(BaseModel):
    """Permit or forbid ``actions`` on resources of ``resources`` types whose id matches ``ids``.

    The rule matches when the principal's id matches ``principals``, every ``when`` condition holds and
    no ``unless`` condition does.
    """

    model_config = ConfigDict(extra="forbid")

    effect: Literal["permit", "forbid"]
    actions: list[Action] = Field(default_factory=lambda: list[Action](["*"]), min_length=1)
    resources: list[str] = Field(
        default_factory=lambda: ["*"], min_length=1, description="Resource types (globs), e.g. [file, vector_store]."
    )
    ids: list[str] = Field(
        default_factory=lambda: ["*"], min_length=1, description="Resource id globs, e.g. ['secret-*']."
    )
    principals: list[str] = Field(
        default_factory=lambda: ["*"], min_length=1, description="Principal id globs, e.g. [alice, 'svc-*']."
    )
    when: list[str] = Field(default_factory=list, description="Conditions that must all hold.")
    unless: list[str] = Field(default_factory=list, description="Conditions none of which may hold.")
    description: str | None = None

    @field_validator("resources")
    @classmethod
    def _types(cls, values: list[str]) -> list[str]:
        return _check_resource_types(values)

    @field_validator("ids", "principals")
    @classmethod
    def _globs(cls, values: list[str]) -> list[str]:
        for value in values:
            if "[" in value or "]" in value:
                raise ValueError(f"glob {value!r} uses brackets; only '*' and '?' are wildcards here")
        return values

    @field_validator("when", "unless")
    @classmethod
    def _conditions(cls, values: list[str]) -> list[str]:
        return _check_conditions(values)


class RouteRule(BaseModel):
    """Permit or forbid requests by method and path glob, before they reach any API.

    Routes are checked in order and the first matching rule decides; a request no route rule matches
    goes on to the resource rules. Conditions may only look at the principal.
    """

    model_config = ConfigDict(extra="forbid")

    effect: Literal["permit", "forbid"]
    path: str = Field(min_length=1, description="Path glob, e.g. '/v1/models*'.")
    methods: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    principals: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    when: list[str] = Field(default_factory=list)
    unless: list[str] = Field(default_factory=list)
    description: str | None = None

    @field_validator("methods")
    @classmethod
    def _methods(cls, values: list[str]) -> list[str]:
        known = {"*", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
        upper = [v.upper() for v in values]
        for value in upper:
            if value not in known:
                raise ValueError(f"unknown HTTP method {value!r}; use one of: {', '.join(sorted(known))}")
        return upper

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") and value != "*":
            raise ValueError(f"route path {value!r} must start with '/' (e.g. '/v1/models*')")
        return value

    @field_validator("when", "unless")
    @classmethod
    def _conditions(cls, values: list[str]) -> list[str]:
        return _check_conditions(values, principal_only=True)


class AccessPolicyConfig(BaseModel):
    """Resource rules (first match wins; unmatched is refused) and route rules (unmatched passes)."""

    model_config = ConfigDict(extra="forbid")

    rules: list[AccessRule] | None = Field(
        default=None, description="Leave out for the default: own rows only, registered resources open to all."
    )
    routes: list[RouteRule] = Field(default_factory=list)
