"""What ``/mcp`` offers besides tools: the caller's files as resources, vector-store search as a resource
template, two prompts built on them, and argument completion for both.

Why resources and not more tools: an MCP host lets its user *attach* a resource or pick a prompt, and
puts the content in front of the model itself; a tool only helps if the model thinks of calling it.

Everything here goes through the same routers as the REST API, inside the HTTP request's context, so
the access policy applies unchanged: a principal lists, reads, searches and completes only what the
policy lets it see (its own files and stores by default). A resource the caller may not see reads as
"not found", exactly like one that never existed.

URIs:

- ``underlay://files/{file_id}``: a file's content (text when it is text, base64 otherwise), up to
  :data:`MAX_READ_BYTES`; larger files point the caller at ``GET /v1/files/{id}/content``.
- ``underlay://vector_stores/{vector_store_id}/search{?query,max_num_results}``: search results as JSON.

Upstream resources and prompts: the resources, resource templates and prompts of every registered MCP
tool group the caller can see are offered too, as their servers sent them (tagged with the group in
``_meta["underlay/toolgroup_id"]``), through the tool-runtime router and so with the same per-caller
credentials, visibility and error masking as proxied tools. A URI is read from the group that lists it
(or a template matching it); a prompt name goes to the group that lists it, the first group winning as
for tool names. The ``underlay:`` scheme and this server's own prompt names are Underlay's: an
upstream resource under that scheme is left out, and an upstream prompt with an own prompt's name is
hidden, so nothing upstream can stand in for Underlay's own resources.

Every client-sent string is bounded before any work is done: URIs by :data:`MAX_URI_CHARS`, ids by
their pattern, prompt arguments by :data:`MAX_ARGUMENT_CHARS` (and :data:`MAX_ARGUMENTS` of them),
listings by page size.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import mcp_types as types
from mcp.shared.exceptions import MCPError

from underlay.api.errors import NotFoundError, UnderlayError
from underlay.api.files import FileListQuery, FileObject
from underlay.api.vector_stores import SearchRequest, SearchResultsPage, VectorStoreListQuery
from underlay.core.routers.files import guess_media_type
from underlay.server.mcp_prompts import get_stored_prompt, stored_prompts

FILE_URI_PREFIX = "underlay://files/"
FILE_TEMPLATE = "underlay://files/{file_id}"
SEARCH_TEMPLATE = "underlay://vector_stores/{vector_store_id}/search{?query,max_num_results}"
MAX_READ_BYTES = 8 * 1024 * 1024
"""The largest file read through MCP (its base64 form is a third larger); the REST API has no such cap."""
MAX_URI_CHARS = 4096
MAX_ARGUMENT_CHARS = 8192
MAX_ARGUMENTS = 64
OWN_SCHEME = "underlay:"
PAGE_SIZE = 100
COMPLETION_SCAN = 100
"""How many of the caller's newest files or stores a completion looks through."""
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SEARCH_PATH = re.compile(r"^/([A-Za-z0-9_-]{1,128})/search$")
_TEXT_TYPES = ("application/json", "application/xml", "application/yaml", "application/x-yaml", "application/x-ndjson")

SUMMARIZE_FILE = "summarize_file"
ANSWER_FROM_VECTOR_STORE = "answer_from_vector_store"


def invalid(message: str) -> MCPError:
    """A JSON-RPC "invalid params" error: what the client sent cannot be served, and why."""
    return MCPError(types.INVALID_PARAMS, message)


def from_underlay(exc: UnderlayError) -> MCPError:
    """A router's error as a protocol error: the client's mistakes as invalid params, the rest as internal
    errors that keep the router's message (which names the provider, never a secret or a traceback)."""
    code = types.INVALID_PARAMS if 400 <= exc.status_code < 500 else types.INTERNAL_ERROR
    return MCPError(code, exc.message)


def _check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise invalid(f"'{value[:64]}' is not a valid {what} id.")
    return value


# -- resources ----------------------------------------------------------------------------------------


def file_uri(file_id: str) -> str:
    return FILE_URI_PREFIX + file_id


def search_uri(vector_store_id: str, query: str, max_num_results: int | None = None) -> str:
    uri = f"underlay://vector_stores/{vector_store_id}/search?query={quote(query, safe='')}"
    return uri if max_num_results is None else f"{uri}&max_num_results={max_num_results}"


def _file_resource(file: FileObject) -> types.Resource:
    return types.Resource(
        uri=file_uri(file.id),
        name=file.filename,
        mime_type=guess_media_type(file.filename),
        size=file.bytes,
        description=f"Uploaded file ({file.purpose}), {file.bytes} bytes.",
    )


async def list_resources(routers: dict[str, Any], cursor: str | None) -> types.ListResourcesResult:
    """The caller's files, newest first, a page at a time (the cursor is the last file id sent)."""
    after = _check_id(cursor, "cursor") if cursor else None
    upstream: list[types.Resource] = []
    if after is None:  # the tool groups' resources come first, on the first page
        listing = await _upstream_resources(routers)
        upstream = [types.Resource.model_validate(r) for r in listing["resources"]]
    files = routers.get("files")
    if files is None:
        return types.ListResourcesResult(resources=upstream)
    try:
        page = await files.list_files(FileListQuery(after=after, limit=PAGE_SIZE))
    except UnderlayError as exc:
        raise from_underlay(exc) from None
    data: list[FileObject] = page["data"]
    return types.ListResourcesResult(
        resources=[*upstream, *(_file_resource(f) for f in data)],
        next_cursor=page["last_id"] if page["has_more"] else None,
    )


async def _upstream_resources(routers: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The registered MCP tool groups' resources and templates (none without the tool runtime)."""
    runtime = routers.get("tool_runtime")
    if runtime is None:
        return {"resources": [], "resource_templates": []}
    try:
        listing: dict[str, list[dict[str, Any]]] = await runtime.list_upstream_resources()
    except UnderlayError as exc:
        raise from_underlay(exc) from None
    return listing


async def list_resource_templates(routers: dict[str, Any]) -> types.ListResourceTemplatesResult:
    """Underlay's own templates, then the tool groups' (as their servers list them)."""
    own = own_resource_templates(routers)
    upstream = (await _upstream_resources(routers))["resource_templates"]
    return types.ListResourceTemplatesResult(
        resource_templates=[*own, *(types.ResourceTemplate.model_validate(t) for t in upstream)]
    )


def own_resource_templates(routers: dict[str, Any]) -> list[types.ResourceTemplate]:
    templates: list[types.ResourceTemplate] = []
    if "files" in routers:
        templates.append(
            types.ResourceTemplate(
                uri_template=FILE_TEMPLATE,
                name="file",
                title="A file",
                description=f"The content of one of your files (up to {MAX_READ_BYTES} bytes).",
            )
        )
    if "vector_stores" in routers:
        templates.append(
            types.ResourceTemplate(
                uri_template=SEARCH_TEMPLATE,
                name="vector_store_search",
                title="Vector store search",
                description="The passages of one of your vector stores that best match a query, as JSON.",
                mime_type="application/json",
            )
        )
    return templates


async def read_resource(routers: dict[str, Any], uri: str) -> types.ReadResourceResult:
    if len(uri) > MAX_URI_CHARS:
        raise invalid(f"The resource URI is longer than {MAX_URI_CHARS} characters.")
    if uri.startswith(FILE_URI_PREFIX) and "files" in routers:
        return types.ReadResourceResult(contents=[await read_file(routers, uri[len(FILE_URI_PREFIX) :])])
    parts = urlsplit(uri)
    match = _SEARCH_PATH.match(parts.path)
    if parts.scheme == "underlay" and parts.netloc == "vector_stores" and match and "vector_stores" in routers:
        try:
            args = parse_qs(parts.query, max_num_fields=4)
        except ValueError:
            raise invalid("The search URI takes two parameters: query and max_num_results.") from None
        query = (args.get("query") or [""])[0]
        raw_max = (args.get("max_num_results") or ["10"])[0]
        if not raw_max.isdigit():
            raise invalid("max_num_results must be a whole number from 1 to 50.")
        page = await search(routers, match.group(1), query, int(raw_max))
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type="application/json", text=search_json(page))]
        )
    if not uri.startswith(OWN_SCHEME) and "tool_runtime" in routers:
        return await _read_upstream(routers, uri)
    offered = [t.uri_template for t in own_resource_templates(routers)]
    raise invalid(f"Unknown resource '{uri[:200]}'. This server offers: {', '.join(offered) or 'no resources'}.")


async def _read_upstream(routers: dict[str, Any], uri: str) -> types.ReadResourceResult:
    """A resource of a registered MCP tool group, as its server sent it."""
    try:
        contents = await routers["tool_runtime"].read_upstream_resource(uri)
    except NotFoundError:
        offered = [t.uri_template for t in own_resource_templates(routers)]
        raise invalid(
            f"Unknown resource '{uri[:200]}': no registered tool group lists it. This server offers: "
            f"{', '.join([*offered, 'the resources resources/list shows'])}."
        ) from None
    except UnderlayError as exc:
        raise from_underlay(exc) from None
    return types.ReadResourceResult.model_validate({"contents": contents})


async def read_file(routers: dict[str, Any], file_id: str) -> types.TextResourceContents | types.BlobResourceContents:
    """One of the caller's files as resource contents: text if it decodes as UTF-8 text, else base64."""
    _check_id(file_id, "file")
    files = routers["files"]
    try:
        file: FileObject = await files.get_file(file_id)
        if file.bytes > MAX_READ_BYTES:
            raise invalid(
                f"File '{file_id}' is {file.bytes} bytes; MCP reads files up to {MAX_READ_BYTES} bytes. "
                f"Download it from GET /v1/files/{file_id}/content instead."
            )
        data = bytearray()
        stream = await files.open_content(file_id)
        try:
            async for chunk in stream:
                data += chunk
                if len(data) > MAX_READ_BYTES:  # the stored size was wrong: never hold more than the cap
                    raise invalid(f"File '{file_id}' is larger than {MAX_READ_BYTES} bytes; download it instead.")
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
    except NotFoundError:
        raise invalid(f"No file '{file_id}' (or it is not yours).") from None
    except UnderlayError as exc:
        raise from_underlay(exc) from None
    mime = guess_media_type(file.filename)
    uri = file_uri(file_id)
    if mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith(("+json", "+xml")):
        try:
            return types.TextResourceContents(uri=uri, mime_type=mime, text=data.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    return types.BlobResourceContents(uri=uri, mime_type=mime, blob=base64.b64encode(bytes(data)).decode("ascii"))


async def search(routers: dict[str, Any], vector_store_id: str, query: str, max_num_results: int) -> SearchResultsPage:
    _check_id(vector_store_id, "vector store")
    if not query.strip():
        raise invalid("The search needs a non-empty query.")
    if len(query) > MAX_ARGUMENT_CHARS:
        raise invalid(f"The query is longer than {MAX_ARGUMENT_CHARS} characters.")
    if not 1 <= max_num_results <= 50:
        raise invalid("max_num_results must be a whole number from 1 to 50.")
    request = SearchRequest(query=query, max_num_results=max_num_results)
    try:
        page: SearchResultsPage = await routers["vector_stores"].search_vector_store(vector_store_id, request)
    except NotFoundError:
        raise invalid(f"No vector store '{vector_store_id}' (or it is not yours).") from None
    except UnderlayError as exc:
        raise from_underlay(exc) from None
    return page


def search_results(page: SearchResultsPage) -> list[dict[str, Any]]:
    return [
        {
            "file_id": r.file_id,
            "filename": r.filename,
            "score": r.score,
            "attributes": r.attributes or {},
            "text": "\n".join(c.text for c in r.content),
        }
        for r in page.data
    ]


def search_json(page: SearchResultsPage) -> str:
    return json.dumps({"search_query": page.search_query, "results": search_results(page)}, ensure_ascii=False)


# -- prompts ------------------------------------------------------------------------------------------


async def list_prompts(routers: dict[str, Any]) -> types.ListPromptsResult:
    """Underlay's own prompts and the caller's stored ones (see :mod:`.mcp_prompts`), then the tool
    groups' (one with an own prompt's name is hidden)."""
    own = [*own_prompts(routers), *await stored_prompts(routers)]
    taken = {p.name for p in own}
    upstream: list[types.Prompt] = []
    runtime = routers.get("tool_runtime")
    if runtime is not None:
        try:
            listed = await runtime.list_upstream_prompts()
        except UnderlayError as exc:
            raise from_underlay(exc) from None
        for item in listed:
            if item["name"] not in taken:
                taken.add(item["name"])
                upstream.append(types.Prompt.model_validate(item))
    return types.ListPromptsResult(prompts=[*own, *upstream])


def own_prompts(routers: dict[str, Any]) -> list[types.Prompt]:
    prompts: list[types.Prompt] = []
    if "files" in routers:
        prompts.append(
            types.Prompt(
                name=SUMMARIZE_FILE,
                title="Summarize a file",
                description="Attach one of your files and ask for a summary of it.",
                arguments=[
                    types.PromptArgument(name="file_id", description="The file to summarize.", required=True),
                    types.PromptArgument(name="focus", description="What the summary should focus on."),
                ],
            )
        )
    if "vector_stores" in routers:
        prompts.append(
            types.Prompt(
                name=ANSWER_FROM_VECTOR_STORE,
                title="Answer from a vector store",
                description="Search one of your vector stores and ask for an answer grounded in the passages found.",
                arguments=[
                    types.PromptArgument(name="vector_store_id", description="The store to search.", required=True),
                    types.PromptArgument(name="question", description="The question to answer.", required=True),
                ],
            )
        )
    return prompts


def _argument(arguments: dict[str, str], name: str, *, required: bool) -> str:
    value = arguments.get(name) or ""
    if len(value) > MAX_ARGUMENT_CHARS:
        raise invalid(f"The '{name}' argument is longer than {MAX_ARGUMENT_CHARS} characters.")
    if required and not value.strip():
        raise invalid(f"The prompt needs the '{name}' argument.")
    return value


async def get_prompt(routers: dict[str, Any], name: str, arguments: dict[str, str]) -> types.GetPromptResult:
    if len(arguments) > MAX_ARGUMENTS:
        raise invalid(f"A prompt takes at most {MAX_ARGUMENTS} arguments.")
    for key, value in arguments.items():
        _argument(arguments, key, required=False)
        if len(key) > 256 or not isinstance(value, str):
            raise invalid("Prompt arguments are strings named by up to 256 characters.")
    stored = await get_stored_prompt(routers, name, arguments)
    if stored is not None:
        return stored
    own = {p.name for p in own_prompts(routers)}
    if name not in own:
        return await _get_upstream_prompt(routers, name, arguments, own)
    if name == SUMMARIZE_FILE:
        file_id = _argument(arguments, "file_id", required=True)
        focus = _argument(arguments, "focus", required=False)
        contents = await read_file(routers, file_id)
        ask = "Summarize the file above" + (f", focusing on: {focus}" if focus else "") + "."
        return types.GetPromptResult(
            description=f"Summarize {file_id}",
            messages=[
                types.PromptMessage(role="user", content=types.EmbeddedResource(type="resource", resource=contents)),
                types.PromptMessage(role="user", content=types.TextContent(type="text", text=ask)),
            ],
        )
    store_id = _argument(arguments, "vector_store_id", required=True)
    question = _argument(arguments, "question", required=True)
    page = await search(routers, store_id, question, 5)
    passages = "\n\n".join(
        f"[{n}] {r['filename']} ({r['file_id']})\n{r['text']}" for n, r in enumerate(search_results(page), start=1)
    )
    found = types.TextResourceContents(
        uri=search_uri(store_id, question, 5), mime_type="text/plain", text=passages or "No passages matched."
    )
    ask = (
        "Answer the question below using only the passages above, and cite them by their [number]. "
        f"If they do not contain the answer, say so.\n\nQuestion: {question}"
    )
    return types.GetPromptResult(
        description=f"Answer from {store_id}",
        messages=[
            types.PromptMessage(role="user", content=types.EmbeddedResource(type="resource", resource=found)),
            types.PromptMessage(role="user", content=types.TextContent(type="text", text=ask)),
        ],
    )


async def _get_upstream_prompt(
    routers: dict[str, Any], name: str, arguments: dict[str, str], own: set[str]
) -> types.GetPromptResult:
    """A prompt of a registered MCP tool group, filled in by its server."""
    runtime = routers.get("tool_runtime")
    try:
        if runtime is None:
            raise NotFoundError("Prompt", name[:100])
        result = await runtime.get_upstream_prompt(name, arguments)
    except NotFoundError:
        offered = sorted(own) + ["the prompts prompts/list shows"] if runtime is not None else sorted(own)
        raise invalid(f"Unknown prompt '{name[:100]}'. This server offers: {', '.join(offered) or 'none'}.") from None
    except UnderlayError as exc:
        raise from_underlay(exc) from None
    return types.GetPromptResult.model_validate(result)


# -- completion ---------------------------------------------------------------------------------------


async def complete(routers: dict[str, Any], params: types.CompleteRequestParams) -> types.CompleteResult:
    """Ids of the caller's files or stores that start with what was typed, for the arguments that take one.

    Any other reference or argument completes to nothing (completion is a hint, never an error)."""
    argument, typed = params.argument.name, params.argument.value[:MAX_ARGUMENT_CHARS]
    values: list[str] = []
    try:
        if argument == "file_id" and "files" in routers:
            page = await routers["files"].list_files(FileListQuery(limit=COMPLETION_SCAN))
            values = [f.id for f in page["data"] if f.id.startswith(typed) or f.filename.startswith(typed)]
        elif argument == "vector_store_id" and "vector_stores" in routers:
            stores = await routers["vector_stores"].list_vector_stores(VectorStoreListQuery(limit=COMPLETION_SCAN))
            values = [s.id for s in stores.data if s.id.startswith(typed) or (s.name or "").startswith(typed)]
    except UnderlayError as exc:
        raise from_underlay(exc) from None
    return types.CompleteResult(completion=types.Completion(values=values[:100], total=len(values), has_more=False))
