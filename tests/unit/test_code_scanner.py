"""inline::code-scanner: every rule fires on the insecure form and stays quiet on the safe one."""

from __future__ import annotations

import asyncio

import pytest

from underlay.api.safety import Shield, ShieldMessage
from underlay.providers.inline.safety.code_scanner import CodeScannerSafetyProvider, Config
from underlay.providers.inline.safety.code_scanner.rules import RULES, scan

INSECURE = [
    ("eval-of-input", "CWE-95", "result = eval(input('expr: '))"),
    ("shell-true-formatted", "CWE-78", 'subprocess.run(f"tar xf {name}", shell=True)'),
    ("os-system-formatted", "CWE-78", 'os.system("ping -c 1 " + host)'),
    ("sql-string-formatting", "CWE-89", "cur.execute(f\"SELECT * FROM users WHERE name = '{name}'\")"),
    ("sql-string-formatting", "CWE-89", 'cur.execute("DELETE FROM t WHERE id = %s" % row_id)'),
    ("hardcoded-secret", "CWE-798", 'DB_PASSWORD = "hunter2hunter2"'),
    ("hardcoded-secret", "CWE-798", "aws_key = AKIAIOSFODNN7EXAMPLE"),
    ("weak-password-hash", "CWE-916", "digest = hashlib.md5(password.encode()).hexdigest()"),
    ("tls-verification-disabled", "CWE-295", "requests.get(url, verify=False)"),
    ("ssh-host-key-not-verified", "CWE-295", "client.set_missing_host_key_policy(paramiko.AutoAddPolicy())"),
    ("ssh-host-key-not-verified", "CWE-295", "client.set_missing_host_key_policy(WarningPolicy)"),
    ("pickle-untrusted", "CWE-502", "obj = pickle.loads(request.data)"),
    ("yaml-unsafe-load", "CWE-502", "cfg = yaml.load(stream)"),
    ("yaml-unsafe-load", "CWE-502", "cfg = yaml.load(stream, yaml.FullLoader)"),
    ("flask-debug", "CWE-489", "app.run(host='0.0.0.0', debug=True)"),
    ("insecure-random-token", "CWE-338", "token = ''.join(random.choice(alphabet) for _ in range(32))"),
]

SAFE = [
    "value = ast.literal_eval(text)",
    'subprocess.run(["tar", "xf", name], check=True)',
    'cur.execute("SELECT * FROM users WHERE name = ?", (name,))',
    'DB_PASSWORD = os.environ["DB_PASSWORD"]',
    "digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)",
    "requests.get(url, timeout=10)",
    "cfg = yaml.safe_load(stream)",
    "client.set_missing_host_key_policy(paramiko.RejectPolicy())",
    "token = secrets.token_urlsafe(32)",
]


@pytest.mark.parametrize(("rule_id", "cwe", "line"), INSECURE)
def test_rule_fires(rule_id: str, cwe: str, line: str) -> None:
    hits = scan(line)
    assert [(h.rule_id, h.cwe) for h in hits] == [(rule_id, cwe)]


@pytest.mark.parametrize("line", SAFE)
def test_safe_code_passes(line: str) -> None:
    assert scan(line) == []


def test_every_rule_has_a_cwe_and_a_test() -> None:
    assert all(r.cwe.startswith("CWE-") for r in RULES)
    assert {r.rule_id for r in RULES} == {rule for rule, _, _ in INSECURE}


def test_provider_scans_the_models_code_not_the_question() -> None:
    provider = CodeScannerSafetyProvider("code", Config())
    shield = Shield(identifier="code", provider_id="code", provider_resource_id="code")
    question = [ShieldMessage(role="user", content="Is eval(input()) dangerous?")]
    assert asyncio.run(provider.run_shield(shield, question, {})).violation is None
    answer = [*question, ShieldMessage(role="assistant", content="```python\nx = eval(input())\n```")]
    violation = asyncio.run(provider.run_shield(shield, answer, {})).violation
    assert violation is not None and violation.metadata["findings"][0]["line"] == 2
    moderated = asyncio.run(provider.run_shield(shield, question, {"source": "moderation"}))
    assert moderated.violation is not None
    disabled = CodeScannerSafetyProvider("code", Config(disabled_rules=["eval-of-input"]))
    assert asyncio.run(disabled.run_shield(shield, answer, {})).violation is None


# -- regressions from bench/safety.py: each defect with its near miss ---------------------------------


def _rules(text: str) -> list[tuple[str, int]]:
    return [(h.rule_id, h.line) for h in scan(text)]


@pytest.mark.parametrize("parses", [True, False])
def test_percent_s_with_a_separate_argument_is_a_bound_parameter(parses: bool) -> None:
    tail = "" if parses else "\n}"  # a stray brace: the text no longer parses, so the line rules decide
    bound = "cur.execute(\"SELECT * FROM foo WHERE id = '%s'\", identifier)" + tail
    formatted = "cur.execute(\"SELECT * FROM foo WHERE id = '%s'\" % identifier)" + tail
    assert _rules(bound) == []
    assert _rules(formatted) == [("sql-string-formatting", 1)]


@pytest.mark.parametrize("loader", ["SafeLoader", "yaml.SafeLoader", "CSafeLoader", "yaml.CSafeLoader"])
@pytest.mark.parametrize("parses", [True, False])
def test_yaml_load_with_a_safe_loader_by_position(loader: str, parses: bool) -> None:
    tail = "" if parses else "\n}"
    assert _rules(f"data = yaml.load(stream, {loader})" + tail) == []
    assert _rules(f"data = yaml.load(stream, Loader={loader})" + tail) == []
    assert _rules("data = yaml.load(stream, yaml.UnsafeLoader)" + tail) == [("yaml-unsafe-load", 1)]


def test_comments_and_docstrings_quoting_a_secret_are_not_secrets() -> None:
    code = '''"""Settings.

Never write password = "hunter2hunter2" here.
"""
# Possible hardcoded password: 'ajklawejrkl42348swfgkg'
# password = "hunter2hunter2"
DB_PASSWORD = os.environ["DB_PASSWORD"]  # not password = "hunter2hunter2"


def f():
    """api_key = 'sk-live-123456'"""
    return 1
'''
    assert _rules(code) == []
    leaked = code.replace('os.environ["DB_PASSWORD"]', '"hunter2hunter2"')
    assert _rules(leaked) == [("hardcoded-secret", 7)]
    shared = 'r = requests.get(u, verify=False)  # password = "hunter2hunter2"\n'
    assert _rules(shared) == [("tls-verification-disabled", 1)]  # the code before the comment is still read


def test_full_line_comments_are_skipped_in_text_that_does_not_parse() -> None:
    fragment = "// apiKey: 'abcdef123456' was the old value\n# password = 'hunter2hunter2'\nconst x = {"
    assert _rules(fragment) == []
    assert _rules("const cfg = { apiKey: 'abcdef123456' };\nconst x = {") == [("hardcoded-secret", 1)]


def test_sql_built_in_a_variable_then_executed() -> None:
    code = """query = "SELECT * FROM users WHERE name = '" + name + "'"\ncursor.execute(query)\n"""
    assert _rules(code) == [("sql-string-formatting", 1)]
    safe = 'query = "SELECT * FROM users WHERE name = %s"\ncursor.execute(query, (name,))\n'
    assert _rules(safe) == []


def test_sql_in_a_parenthesised_multi_line_f_string() -> None:
    code = 'cursor.execute(\n    f"SELECT id, name "\n    f"FROM users WHERE id = {user_id}"\n)\n'
    assert _rules(code) == [("sql-string-formatting", 2)]
    constant = 'cursor.execute(\n    f"SELECT id, name "\n    f"FROM users WHERE id = {42}"\n)\n'
    assert _rules(constant) == []  # nothing outside the literal reaches the query


def test_sql_over_several_lines_by_concatenation_format_and_percent() -> None:
    code = '''cur.execute("SELECT * "
            "FROM foo WHERE id = " + identifier)
sql = """
    UPDATE foo
    SET value = '{}'
""".format(value)
stmt = ("DELETE FROM foo "
        "WHERE id = %s" % identifier)
'''
    assert _rules(code) == [("sql-string-formatting", 1), ("sql-string-formatting", 3), ("sql-string-formatting", 7)]


def test_sql_looking_prose_and_literal_only_queries_pass() -> None:
    code = """print(f"Delete {count} files?")
print("Select a colour: " + colour)
cur.execute("SELECT * " "FROM foo")
cur.execute("SELECT * FROM foo WHERE id = %s" % 42)
"""
    assert _rules(code) == []


def test_markdown_code_blocks_are_parsed_separately_and_keep_their_line_numbers() -> None:
    answer = (
        'Here is the fix:\n\n```python\nq = (\n    f"SELECT * FROM t "\n    f"WHERE a = {a}"\n)\n'
        "# secret = 'abcdefgh1234'\n```\nDone."
    )
    assert _rules(answer) == [("sql-string-formatting", 5)]
    assert scan(answer)[0].snippet == 'f"SELECT * FROM t "'


def test_one_finding_per_rule_and_line() -> None:
    code = """cur.execute("SELECT * FROM t WHERE a = '" + a + "' AND b = '" + b + "'")\n"""
    assert _rules(code) == [("sql-string-formatting", 1)]
