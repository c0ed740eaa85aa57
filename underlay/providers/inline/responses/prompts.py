"""``prompt`` on a Responses request: a stored prompt rendered into the response's instructions.

The prompt is read through the prompts router as the caller, so a response can use only prompts its
caller may read; another tenant's prompt id is a 404, the same as a missing one. Variables are strings
or content parts: ``input_text`` gives its text and ``input_file`` the file's extracted text (the same
reading, and the same size limit, as an attached file in ``input``); an ``input_image`` cannot become
instructions, which are text, so it is refused with the fix. Every failure is a 400 or 404 naming the
field, raised before any model time is spent.
"""

from __future__ import annotations

from typing import Any

from underlay.api.errors import InvalidRequestError, NotFoundError
from underlay.api.prompts import Prompt, PromptsApi, RetrievePromptQuery, render_template
from underlay.api.responses import PromptReference
from underlay.providers.inline.responses.input_files import file_text


def _version(ref: PromptReference) -> int | None:
    if ref.version is None or ref.version == "":
        return None
    if not ref.version.isdigit() or int(ref.version) < 1:
        raise InvalidRequestError(
            f"prompt.version must be a version number such as \"2\", not '{ref.version}'.", param="prompt.version"
        )
    return int(ref.version)


async def _value(name: str, value: str | dict[str, Any], files: Any, max_bytes: int) -> str:
    if isinstance(value, str):
        return value
    where = f"prompt.variables.{name}"
    kind = value.get("type")
    if kind == "input_text":
        return str(value.get("text", ""))
    if kind == "input_file":
        return await file_text(value, files, max_bytes, where)
    raise InvalidRequestError(
        f"Variable '{name}' is an {kind} part; a prompt renders into instructions, which are text. Send the "
        "image as an input_image part of input instead.",
        param=where,
    )


async def render_prompt(
    ref: PromptReference, prompts: PromptsApi | None, files: Any, max_bytes: int
) -> tuple[str, Prompt]:
    """The rendered instructions and the prompt version they came from."""
    if prompts is None:
        raise InvalidRequestError(
            "prompt needs the prompts API; add prompts to apis in the run config.", param="prompt"
        )
    try:
        prompt = await prompts.retrieve_prompt(ref.id, RetrievePromptQuery(version=_version(ref)))
    except NotFoundError as exc:
        exc.param = "prompt.version" if exc.kind == "Prompt version" else "prompt.id"
        raise
    what = f"prompt '{prompt.id}' version {prompt.version}"
    given = ref.variables or {}
    # Names first (unknown or missing is a 400 before any file is read), then the values.
    render_template(prompt.prompt, prompt.variables, dict.fromkeys(given, ""), param="prompt.variables", what=what)
    values = {name: await _value(name, value, files, max_bytes) for name, value in given.items()}
    return render_template(prompt.prompt, prompt.variables, values, param="prompt.variables", what=what), prompt
