"""``underlay agent init|run|chat|eval``: an agent folder from the command line.

Without a server (no ``--env`` naming one with a ``base_url``) ``run``, ``chat`` and ``eval`` start the
embedded ``local`` stack in this process, so a fresh folder works offline with nothing else running.
Expected failures (a spec mistake, an unreachable server, a failed response) print one line and exit
non-zero, as every other command does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_agent_parser"]

MAX_EVAL_CASES = 1000


def add_agent_parser(sub: Any) -> None:
    agent = sub.add_parser("agent", help="portable agents: init, run, chat, eval an agent folder")
    verbs = agent.add_subparsers(dest="agent_command", required=True)

    init = verbs.add_parser("init", help="write a working agent folder")
    init.add_argument("dir", nargs="?", default=".", help="the folder (default: here)")
    init.add_argument("--template", choices=["rag", "mcp", "support"], default="rag")
    init.set_defaults(func=_cmd_init)

    for verb, helptext in (("run", "one turn, streamed"), ("chat", "a session; one stdin line per turn"),
                           ("eval", "run evals/*.jsonl and print the pass rate")):  # fmt: skip
        parser = verbs.add_parser(verb, help=helptext)
        parser.add_argument("dir", help="the agent folder")
        if verb == "run":
            parser.add_argument("question")
        parser.add_argument("--env", default="local", help="an environment of agent.yaml (default: local)")
        if verb == "eval":
            parser.add_argument("--min-pass-rate", type=float, default=0.0, help="exit 1 below it (0..1)")
            parser.add_argument(
                "--client-side",
                action="store_true",
                help="ask each case from here instead of running an eval job on the server",
            )
        parser.set_defaults(func={"run": _cmd_run, "chat": _cmd_chat, "eval": _cmd_eval}[verb])

    from underlay.cli.agent_deploy_cmd import add_deploy_verbs

    add_deploy_verbs(verbs)


def _cmd_init(args: argparse.Namespace) -> int:
    from underlay.agents.templates import write_template

    folder = Path(args.dir)
    try:
        written = write_template(folder, args.template)
    except (FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    print(f'next: underlay agent run {folder} "your question"', file=sys.stderr)
    return 0


def _open(args: argparse.Namespace) -> Any:
    from underlay.agents import Agent

    return Agent.from_dir(args.dir, args.env)


def _guarded(body: Any) -> int:
    """Run ``body``; expected failures become one line on stderr."""
    import openai

    from underlay.core.config import ConfigError

    try:
        return int(body())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except openai.APIStatusError as exc:
        message = exc.body.get("message") if isinstance(exc.body, dict) else None
        print(f"error: the server answered {exc.status_code}: {message or exc.message}", file=sys.stderr)
        return 1
    except (openai.APIConnectionError, RuntimeError, TimeoutError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _show(agent: Any, question: str, conversation: str | None = None) -> str:
    """Stream one turn to stdout: text as it comes, tool calls on stderr as they happen."""
    from underlay.agents import TextDelta, ToolCall, ToolResult, TurnDone

    text = ""
    for event in agent.stream(question, conversation=conversation):
        if isinstance(event, TextDelta):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, ToolCall):
            print(f"[tool] {event.name}({event.arguments})", file=sys.stderr, flush=True)
        elif isinstance(event, ToolResult):
            print(f"[tool] {event.name} -> {event.output[:200]}", file=sys.stderr, flush=True)
        elif isinstance(event, TurnDone):
            text = event.text
    sys.stdout.write("\n")
    return text


def _cmd_run(args: argparse.Namespace) -> int:
    def body() -> int:
        with _open(args) as agent:
            _show(agent, args.question)
        return 0

    return _guarded(body)


def _cmd_chat(args: argparse.Namespace) -> int:
    def body() -> int:
        with _open(args) as agent:
            conversation = agent.client.conversations.create(metadata={"underlay_agent": agent.name}).id
            print(f"conversation {conversation}; one line per turn, end with Ctrl-D", file=sys.stderr)
            for line in sys.stdin:
                if line.strip():
                    _show(agent, line.strip(), conversation=conversation)
        return 0

    return _guarded(body)


def load_cases(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every case of ``folder/*.jsonl``: ``{"input", "expected"}`` (a substring) or ``"expected_regex"``."""
    cases = []
    for path in sorted(folder.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                case = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc.msg}); write one JSON object per line") from None
            if not isinstance(case, dict) or not isinstance(case.get("input"), str):
                raise ValueError(f'{where}: input: required string; write {{"input": "...", "expected": "..."}}')
            if not isinstance(case.get("expected", case.get("expected_regex")), str):
                raise ValueError(f"{where}: expected: give expected (a substring) or expected_regex")
            if "expected_regex" in case:
                try:
                    re.compile(case["expected_regex"])
                except re.error as exc:
                    raise ValueError(f"{where}: expected_regex: invalid ({exc}); fix the pattern") from None
            cases.append((where, case))
            if len(cases) > MAX_EVAL_CASES:
                raise ValueError(f"{where}: more than {MAX_EVAL_CASES} cases; split the suite")
    return cases


Verdict = tuple[str, str, str, bool, Any]
"""(where, question, answer, passed, error) of one case."""


def _eval_on_server(agent: Any, cases: list[tuple[str, dict[str, Any]]]) -> list[Verdict] | None:
    """The cases as one job of the server's eval API; None (after saying why) when it cannot run there."""
    from underlay.agents.eval_job import EvalApiUnavailable, run_eval_job

    if agent.functions:
        print("note: client-side function tools run here, so the cases are asked from here", file=sys.stderr)
        return None
    shown = [-1]

    def progress(done: int, total: int) -> None:
        if done != shown[0] and total and sys.stderr.isatty():  # a live count on a terminal, not in logs
            shown[0] = done
            print(f"\r{done}/{total} cases", end="", file=sys.stderr, flush=True)

    try:
        outcome = run_eval_job(agent, cases, on_progress=progress)
    except EvalApiUnavailable as exc:
        print(f"note: {exc}; asking the cases from here", file=sys.stderr)
        return None
    line_start = "\r" if shown[0] >= 0 else ""  # over the live count, when one was shown
    print(f"{line_start}eval job {outcome.job_id} on benchmark {outcome.benchmark_id}", file=sys.stderr)
    return [(r.where, r.input, r.answer, r.passed, r.error) for r in outcome.results]


def passes(case: dict[str, Any], answer: str) -> bool:
    if "expected_regex" in case:
        return re.search(case["expected_regex"], answer) is not None
    return str(case["expected"]).lower() in answer.lower()


def _cmd_eval(args: argparse.Namespace) -> int:
    from underlay.agents import load_spec

    def body() -> int:
        spec = load_spec(args.dir)
        try:
            cases = load_cases(spec.root / spec.eval)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not cases:
            print(f"error: {spec.root / spec.eval}: no *.jsonl cases; add some", file=sys.stderr)
            return 2
        with _open(args) as agent:
            verdicts = None if args.client_side else _eval_on_server(agent, cases)
            if verdicts is None:
                verdicts = []
                for where, case in cases:
                    answer = agent.run(case["input"]).text
                    verdicts.append((where, case["input"], answer, passes(case, answer), None))
        passed = 0
        for where, question, answer, ok, error in verdicts:
            passed += ok
            shown = f"error: {error}" if error else repr(answer.strip()[:80])
            print(f"{'PASS' if ok else 'FAIL'}  {where}  {question[:60]!r} -> {shown}")
        rate = passed / len(cases)
        print(f"pass rate {passed}/{len(cases)} = {rate:.0%}")
        return 0 if rate >= args.min_pass_rate else 1

    return _guarded(body)
