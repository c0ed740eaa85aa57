"""inline::code-scanner: every rule fires on the insecure form and stays quiet on the safe one."""

from __future__ import annotations

import asyncio

import pytest

from underlay.api.safety import Shield, ShieldMessage
from underlay.providers.inline.safety.code_scanner import RULES, CodeScannerSafetyProvider, Config, scan

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
    ("pickle-untrusted", "CWE-502", "obj = pickle.loads(request.data)"),
    ("yaml-unsafe-load", "CWE-502", "cfg = yaml.load(stream)"),
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
