"""``inline::code-scanner``'s rules: insecure-code findings in text (usually model output), by rules of our own.

The shield that runs them (its config and provider, what the stack builds at start) is the package,
:mod:`underlay.providers.inline.safety.code_scanner`, which imports this module when first used.

CodeShield needs packages and rule files that are not available offline, so these are hand-written
line rules. Each names the CWE entry (MITRE's Common Weakness Enumeration) it detects an instance of;
the languages are Python first, with the few rules that read the same in JavaScript, PHP or shell.
They look for the unsafe *pattern*, not data flow, so they err towards flagging: a finding means
"a reviewer should look", which is the right default for code an assistant hands to a user.

Where a piece of the text (the whole of it, or one fenced block of a Markdown answer) parses as Python,
the SQL and YAML rules read its syntax tree instead of its lines: SQL built over several lines or kept
in a variable is only visible there, and which argument is the loader is known exactly. Comments and
bare string statements (docstrings) are left out of the line rules there, since quoting a
secret-looking assignment in prose is not writing one. Text that does not parse (fragments, other
languages: what models often emit) keeps the plain line rules, minus lines that are wholly a comment.
"""

from __future__ import annotations

import ast
import io
import re
import textwrap
import tokenize
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    rule_id: str
    cwe: str
    description: str
    pattern: re.Pattern[str]


def _r(rule_id: str, cwe: str, description: str, pattern: str) -> Rule:
    return Rule(rule_id, cwe, description, re.compile(pattern, re.IGNORECASE))


RULES: tuple[Rule, ...] = (
    _r(
        "eval-of-input",
        "CWE-95",
        "eval/exec of user-controlled input (code injection)",
        r"\b(?:eval|exec)\s*\(\s*(?:input\s*\(|request\.|sys\.argv|req\.(?:body|query|params)|\$_(?:GET|POST|REQUEST))",
    ),
    _r(
        "shell-true-formatted",
        "CWE-78",
        "a shell command built by string formatting and run with shell=True (OS command injection)",
        r"subprocess\.\w+\([^)\n]*(?:f[\"']|%\s*\(|\.format\(|\+\s*\w)[^)\n]*shell\s*=\s*True",
    ),
    _r(
        "os-system-formatted",
        "CWE-78",
        "os.system/os.popen with a formatted string (OS command injection)",
        r"\bos\.(?:system|popen)\s*\(\s*(?:f[\"']|[\"'][^\"'\n]*[\"']\s*(?:%|\+|\.format))",
    ),
    _r(
        "sql-string-formatting",
        "CWE-89",
        "SQL built by string formatting instead of bound parameters (SQL injection)",
        r"\.execute(?:many)?\s*\(\s*(?:f[\"'](?:select|insert|update|delete|drop)\b"
        r"|([\"'])(?:select|insert|update|delete|drop)\b(?:(?!\1)[^\\\n]|\\.)*\1\s*(?:%|\+|\.format))",
    ),
    _r(
        "hardcoded-secret",
        "CWE-798",
        "a credential written into the source",
        r"(?:password|passwd|secret|api_?key|access_?token|private_?key)\w*[\"']?\s*[:=]\s*[\"'][^\"'\s]{6,}[\"']"
        r"|\bAKIA[0-9A-Z]{16}\b|-----BEGIN (?:RSA |EC )?PRIVATE KEY-----",
    ),
    _r(
        "weak-password-hash",
        "CWE-916",
        "a fast, unsalted hash (MD5/SHA-1) used for passwords",
        r"hashlib\.(?:md5|sha1)\s*\([^)\n]*pass|(?:md5|sha1)\s*\(\s*\$?pass",
    ),
    _r(
        "tls-verification-disabled",
        "CWE-295",
        "TLS certificate verification switched off",
        r"verify\s*=\s*False|ssl\._create_unverified_context|CERT_NONE|rejectUnauthorized\s*:\s*false"
        r"|NODE_TLS_REJECT_UNAUTHORIZED\s*=\s*[\"']?0",
    ),
    _r(
        "ssh-host-key-not-verified",
        "CWE-295",
        "an SSH client that accepts unknown host keys (paramiko AutoAddPolicy/WarningPolicy): no server authentication",
        r"set_missing_host_key_policy\s*\(\s*(?:[\w.]*\.)?(?:AutoAddPolicy|WarningPolicy)\b",
    ),
    _r(
        "pickle-untrusted",
        "CWE-502",
        "unpickling data that may come from outside (deserialization of untrusted data)",
        r"\b(?:pickle|cPickle|dill)\.loads?\s*\(\s*(?!open\()[^)\n]*(?:request|recv|data|body|payload|input|socket)",
    ),
    _r(
        "yaml-unsafe-load",
        "CWE-502",
        "yaml.load without a safe loader (arbitrary object construction)",
        r"\byaml\.load\s*\((?![^)\n]*(?:Loader\s*=|,)\s*(?:yaml\.)?(?:Safe|CSafe)Loader\b)[^)\n]*\)",
    ),
    _r(
        "flask-debug",
        "CWE-489",
        "a web app run with the debugger on (remote code execution through the debug console)",
        r"\.run\([^)\n]*debug\s*=\s*True",
    ),
    _r(
        "insecure-random-token",
        "CWE-338",
        "random (not secrets) used for a token, password or key",
        r"(?:token|password|secret|key)\w*\s*=\s*[^\n]*\brandom\.(?:random|randint|choice|choices)\b",
    ),
)


@dataclass(frozen=True)
class CodeFinding:
    rule_id: str
    cwe: str
    description: str
    line: int
    snippet: str


# -- syntax-tree pass (Python that parses) -------------------------------------------------------------

# The shape of a whole SQL statement at the start of a string (placeholders already stand in for the
# interpolated parts), so that prose such as f"Delete {n} files?" is not mistaken for a query.
_SQL_SHAPE = re.compile(
    r"^\s*(?:select\s.*?\bfrom\b|insert\s+into\s|update\s+\S+\s+set\s|delete\s+from\s"
    r"|with\s+\w+\s+as\s*\(\s*select\s|drop\s+(?:table|view|database|index)\s)",
    re.IGNORECASE | re.DOTALL,
)
_SAFE_YAML_LOADERS = frozenset({"SafeLoader", "CSafeLoader"})
_AST_RULES = frozenset({"sql-string-formatting", "yaml-unsafe-load"})  # replace their line rules on parsed code


def _text(node: ast.AST) -> str | None:
    """The value of a string literal, else None."""
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _sql(text: str | None) -> bool:
    return text is not None and bool(_SQL_SHAPE.match(text))


def _constant(node: ast.AST) -> bool:
    """True when ``node`` is a literal (or a tuple/list/dict of literals): formatting it in is no injection."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, (ast.Tuple, ast.List)):
        return all(_constant(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _constant(k) for k in node.keys) and all(_constant(v) for v in node.values)
    return False


def _is_add(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)


def _add_operands(node: ast.AST) -> list[ast.AST]:
    """The operands of a chain ``a + b + c``, left to right (iteratively: generated code can chain thousands)."""
    out: list[ast.AST] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.BinOp) and isinstance(current.op, ast.Add):
            stack.extend((current.right, current.left))
        else:
            out.append(current)
    return out


def _formatted_sql(node: ast.AST) -> bool:
    """Does ``node`` build a SQL statement by pasting a non-literal value into its text?"""
    if isinstance(node, ast.JoinedStr):  # f"SELECT ... {x}"
        values = [v for v in node.values if isinstance(v, ast.FormattedValue)]
        text = "".join(_text(v) or "?" for v in node.values)
        return any(not _constant(v.value) for v in values) and _sql(text)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):  # "SELECT ... %s" % x
        return _sql(_text(node.left)) and not _constant(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):  # "SELECT ... " + x
        parts = _add_operands(node)
        texts = [_text(p) for p in parts]
        return None in texts and any(t is not None for t in texts) and _sql("".join(t or "?" for t in texts))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in {"format", "replace"}:
        args = [*node.args, *(k.value for k in node.keywords)]  # "SELECT ... {}".format(x)
        return _sql(_text(node.func.value)) and any(not _constant(a) for a in args)
    return False


def _loader_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _unsafe_yaml_load(node: ast.AST) -> bool:
    """``yaml.load(...)`` whose loader, by keyword or second argument, is not a safe one."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "yaml"
    ):
        return False
    loaders = [k.value for k in node.keywords if k.arg == "Loader"] + node.args[1:2]
    return not any(_loader_name(loader) in _SAFE_YAML_LOADERS for loader in loaders)


def _tree_hits(tree: ast.AST) -> list[tuple[str, int]]:
    """(rule id, 1-based line) for the syntax-tree rules; a statement is reported at the line it starts on."""
    hits: list[tuple[str, int]] = []
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.expr)]
    # only the top of an ``a + b + c`` chain is judged, once, on its whole text
    chains = [n for n in nodes if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add)]
    inner = {id(child) for n in chains for child in (n.left, n.right) if _is_add(child)}
    for node in nodes:
        if id(node) in inner:
            continue
        if _formatted_sql(node):
            hits.append(("sql-string-formatting", node.lineno))
        elif _unsafe_yaml_load(node):
            hits.append(("yaml-unsafe-load", node.lineno))
    return hits


def _blank_prose(code: str) -> list[str]:
    """``code``'s lines with comments and bare string statements (docstrings) replaced by spaces.

    Tokens give exact character spans, so code sharing a line with a comment is still scanned.
    """
    lines = code.splitlines()
    spans: list[tuple[tuple[int, int], tuple[int, int]]] = []
    statement: list[tokenize.TokenInfo] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.COMMENT:
                spans.append((tok.start, tok.end))
            elif tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                if statement and all(t.type == tokenize.STRING for t in statement):
                    spans.extend((t.start, t.end) for t in statement)
                statement = []
            elif tok.type not in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
                statement.append(tok)
    except (tokenize.TokenError, SyntaxError):
        return lines
    for (row, col), (end_row, end_col) in spans:
        for r in range(row, end_row + 1):
            if r > len(lines):
                break
            line = lines[r - 1]
            start = col if r == row else 0
            stop = end_col if r == end_row else len(line)
            lines[r - 1] = line[:start] + " " * (stop - start) + line[stop:]
    return lines


# -- scanning -------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*(?:```|~~~)")
_LINE_COMMENT = re.compile(r"^\s*(?:#|//|--\s)")


def _segments(text: str) -> list[tuple[int, list[str]]]:
    """The text cut at Markdown code fences: (offset of the first line, lines) for prose and code alike."""
    out: list[tuple[int, list[str]]] = []
    start, current = 0, []
    for index, line in enumerate(text.splitlines()):
        if _FENCE.match(line):
            out.append((start, current))
            start, current = index + 1, []
        else:
            current.append(line)
    out.append((start, current))
    return [(offset, lines) for offset, lines in out if any(line.strip() for line in lines)]


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _line_hits(lines: list[str], rules: tuple[Rule, ...], first: int = 1) -> set[tuple[str, int]]:
    return {(r.rule_id, n) for n, line in enumerate(lines, start=first) for r in rules if r.pattern.search(line)}


def scan(text: str, rules: tuple[Rule, ...] = RULES) -> list[CodeFinding]:
    """Every rule hit in ``text``, by line (1-based), at most one per rule and line."""
    original = text.splitlines()
    active = {r.rule_id for r in rules}
    hits: set[tuple[str, int]] = set()
    for offset, lines in _segments(text):
        code = textwrap.dedent("\n".join(lines))  # an indented block (in a list item) still parses
        tree = _parse(code)
        if tree is not None:
            hits.update((rule, offset + line) for rule, line in _tree_hits(tree) if rule in active)
            line_rules = tuple(r for r in rules if r.rule_id not in _AST_RULES)
            candidates = _line_hits(code.splitlines(), line_rules)
            if candidates:  # tokenizing costs more than the rules: only when a line needs a second look
                blanked = _blank_prose(code)
                rechecked = {n: _line_hits([blanked[n - 1]], line_rules, n) for _, n in candidates}
                candidates = {hit for hit in candidates if hit in rechecked[hit[1]]}
        else:  # a fragment or another language: line rules, minus lines that are wholly a comment
            candidates = _line_hits(["" if _LINE_COMMENT.match(line) else line for line in lines], rules)
        hits.update((rule, offset + n) for rule, n in candidates)
    by_id = {r.rule_id: r for r in rules}
    order = {r.rule_id: i for i, r in enumerate(rules)}
    return [
        CodeFinding(rule, by_id[rule].cwe, by_id[rule].description, line, original[line - 1].strip()[:200])
        for rule, line in sorted(hits, key=lambda h: (h[1], order[h[0]]))
    ]
