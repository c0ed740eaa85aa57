"""``underlay agent deploy|ls|show|rollback``: agent folders as deployed, versioned server resources.

``deploy`` loads the folder through the same loader as ``agent run`` (:meth:`underlay.agents.Agent.from_dir`),
so the environment's model and vector-store mappings apply and the knowledge folder is synced by content
hash first (unchanged content uploads nothing, earlier content stays for earlier versions); then it sends
the resolved definition, whose ``file_search`` is filtered to this version's content hashes, to
``POST /v1/agents``, which makes the next version. ``--prune`` then detaches content no version names.
Client functions from ``tools.py`` are deployed as declared function tools: whoever calls the agent runs
them. ``ls``, ``show`` and ``rollback`` talk to the server of ``--base-url``
or of the folder's environment. All of it goes through the SDK over HTTP, like any other client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["add_deploy_verbs"]


def add_deploy_verbs(verbs: Any) -> None:
    """Add ``deploy``, ``ls``, ``show`` and ``rollback`` to ``underlay agent``."""
    deploy = verbs.add_parser("deploy", help="deploy an agent folder to an environment's server (a new version)")
    deploy.add_argument("dir", help="the agent folder")
    deploy.add_argument("--env", default="local", help="an environment of agent.yaml (default: local)")
    deploy.add_argument("--no-default", action="store_true", help="stage the version without making it the default")
    deploy.add_argument(
        "--prune",
        action="store_true",
        help="then detach knowledge files that no version of the agent (this one included) names",
    )
    deploy.set_defaults(func=_cmd_deploy)

    for verb, helptext in (("ls", "list deployed agents"), ("show", "show a deployed agent (default version)"),
                           ("rollback", "make an earlier version the default")):  # fmt: skip
        parser = verbs.add_parser(verb, help=helptext)
        if verb != "ls":
            parser.add_argument("name")
        if verb == "show":
            parser.add_argument("--version", type=int, default=None)
        if verb == "rollback":
            parser.add_argument("--to", type=int, default=None, help="the version (default: the one before)")
        parser.add_argument("--base-url", default=os.environ.get("UNDERLAY_BASE_URL"), help="a server's /v1 URL")
        parser.add_argument("--dir", default=".", help="an agent folder whose --env names the server")
        parser.add_argument("--env", default=None, help="an environment of that folder's agent.yaml")
        parser.set_defaults(func={"ls": _cmd_ls, "show": _cmd_show, "rollback": _cmd_rollback}[verb])


def _guarded(body: Any) -> int:
    from underlay.cli.agent_cmd import _guarded as guarded

    return guarded(body)


def definition_of(agent: Any) -> dict[str, Any]:
    """The ``POST /v1/agents`` body for a loaded, bound :class:`underlay.agents.Agent`."""
    from underlay.agents.sync import knowledge_files

    spec = agent.spec
    body: dict[str, Any] = {"name": agent.name, "model": agent.model, "tools": agent.tools}
    if spec is not None and spec.description:
        body["description"] = spec.description
    if agent.instructions is not None:
        body["instructions"] = agent.instructions
    if agent.prompt is not None:
        prompt = dict(agent.prompt)
        if prompt.get("version") is not None:
            prompt["version"] = int(prompt["version"])
        body["prompt"] = prompt
    if agent.guardrails:
        body["guardrails"] = agent.guardrails
    for name in ("temperature", "max_output_tokens", "tool_choice"):
        if getattr(agent, name) is not None:
            body[name] = getattr(agent, name)
    if agent.vector_store_id is not None and spec is not None:
        report = agent.sync_report
        if report is not None:
            files = dict(report.files)  # what the file_search filter admits, not a later re-read
        else:
            files = {f.path: f.sha256 for f in knowledge_files(spec.root, spec.knowledge)}
        body["knowledge"] = {"vector_store_id": agent.vector_store_id, "files": files}
    return body


def _path(handler: Any, **params: str) -> str:
    """The route of ``handler`` in the Agents API's table, relative to the client's ``/v1`` base."""
    from urllib.parse import quote

    from underlay.api.agents import ROUTES

    path = next(r.path for r in ROUTES if r.handler is handler).removeprefix("/v1")
    for name, value in params.items():
        path = path.replace(f"{{{name}}}", quote(value, safe=""))
    return path


def _agent_post(client: Any, handler: Any, body: dict[str, Any], **path: str) -> Any:
    from underlay.api.agents import AgentObject
    from underlay.client._wire import parsed

    url = _path(handler, **path)
    return client.post(url, body=body, cast_to=parsed(AgentObject))


def _cmd_deploy(args: argparse.Namespace) -> int:
    def body() -> int:
        from underlay.agents import Agent
        from underlay.api.agents import AgentsApi

        pruned: list[str] | None = None
        with Agent.from_dir(args.dir, args.env) as agent:
            definition = {**definition_of(agent), "set_as_default": not args.no_default}
            deployed = _agent_post(agent.client, AgentsApi.deploy_agent, definition)
            report = agent.sync_report
            if args.prune and report is not None:
                pruned = _prune(agent.client, deployed.name, report.vector_store_id)
        if report is not None:
            print(
                f"knowledge: {len(report.uploaded)} uploaded, {len(report.unchanged)} unchanged, "
                f"{len(report.detached)} removed, {len(report.superseded)} kept for earlier versions "
                f"(vector store {report.vector_store_id})"
            )
        if pruned is not None:
            print(f"pruned {len(pruned)} knowledge file(s) no version names")
        state = "default" if deployed.is_default else f"staged; default is {deployed.default_version}"
        print(f"deployed {deployed.name} version {deployed.version} ({state}): call it as model agent/{deployed.name}")
        return 0

    return _guarded(body)


def _prune(client: Any, name: str, store_id: str) -> list[str]:
    """Detach the files of ``store_id`` whose content no version of agent ``name`` synced into that
    store names (versions deployed into another environment's store do not count)."""
    from underlay.agents.sync import prune
    from underlay.api.agents import AgentsApi

    keep: set[str] = set()
    after: int | None = None
    while True:
        query: dict[str, Any] = {"limit": 100, "order": "asc"}
        if after is not None:
            query["after"] = after
        page = _get(client, AgentsApi.list_agent_versions, query, agent_name=name)
        for version in page.data:
            knowledge = version.definition.knowledge
            if knowledge is not None and knowledge.vector_store_id == store_id:
                keep.update(knowledge.files.values())
        if not page.has_more or not page.data:
            return prune(client, store_id, keep)
        after = page.data[-1].version


def _client(args: argparse.Namespace) -> Any:
    from underlay.agents.spec import load_spec
    from underlay.client import Underlay
    from underlay.core.config import ConfigError

    base_url, api_key = args.base_url, os.environ.get("UNDERLAY_API_KEY")
    if args.env is not None:
        environment = load_spec(args.dir, os.environ).environment(args.env, os.environ)
        base_url, api_key = environment.base_url or base_url, environment.api_key or api_key
    if not base_url:
        raise ConfigError(
            "underlay agent: no server named; pass --base-url URL (or set UNDERLAY_BASE_URL), or --env NAME "
            "of an agent folder (--dir) whose environment has a base_url"
        )
    return Underlay(base_url=base_url, api_key=api_key, timeout=60, max_retries=1)


def _get(client: Any, handler: Any, query: dict[str, Any] | None = None, **path: str) -> Any:
    from underlay.api.agents import AgentList, AgentObject
    from underlay.client._wire import options_of, parsed

    url = _path(handler, **path)
    model = AgentObject if path else AgentList
    if handler.__name__ == "list_agent_versions":
        model = AgentList
    return client.get(url, options=options_of({}, query), cast_to=parsed(model))


def _cmd_ls(args: argparse.Namespace) -> int:
    def body() -> int:
        from underlay.api.agents import AgentsApi

        with _client(args) as client:
            listed = _get(client, AgentsApi.list_agents, {"limit": 100})
        rows = [("NAME", "VERSION", "LATEST", "MODEL")] + [
            (a.name, str(a.version), str(a.latest_version), a.definition.model) for a in listed.data
        ]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, (24, 8, 8, 0), strict=True)).rstrip())
        return 0

    return _guarded(body)


def _cmd_show(args: argparse.Namespace) -> int:
    def body() -> int:
        from underlay.api.agents import AgentsApi

        query = {"version": args.version} if args.version is not None else None
        with _client(args) as client:
            agent = _get(client, AgentsApi.retrieve_agent, query, agent_name=args.name)
        print(json.dumps(agent.model_dump(mode="json", exclude_none=True), indent=2))
        return 0

    return _guarded(body)


def _cmd_rollback(args: argparse.Namespace) -> int:
    def body() -> int:
        from underlay.api.agents import AgentsApi

        with _client(args) as client:
            target = args.to
            if target is None:
                current = _get(client, AgentsApi.retrieve_agent, None, agent_name=args.name)
                if current.version <= 1:
                    print(f"error: {args.name} is at version 1; there is no earlier version", file=sys.stderr)
                    return 1
                target = current.version - 1
            agent = _agent_post(client, AgentsApi.set_default_agent_version, {"version": target}, agent_name=args.name)
        print(f"{agent.name}: default is now version {agent.version} (latest {agent.latest_version})")
        return 0

    return _guarded(body)
