"""The container image recipe and the Kubernetes manifests, checked without a container runtime or cluster.

- ``Containerfile``: parsed with ``dockerfile-parse``; the rules a reviewer would check by eye
  (multi-stage, slim Python 3.11 pinned by tag, CPU-only torch, non-root user, health check, entry point).
- ``deploy/k8s/overlays/*``: built with ``kubectl kustomize`` (kubectl ships kustomize) and every object
  validated against the Kubernetes OpenAPI schemas of a pinned version with ``kubernetes-validate``
  (strict: unknown fields are errors), then checked for what the deployment promises (probes,
  resources, non-root read-only pods, secrets by reference, replicas) and for a run config that loads.
"""

from __future__ import annotations

import copy
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from underlay.cli.main import build_parser
from underlay.core.config import load_run_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.32.0"
OVERLAYS = ["local", "postgres"]


# ---- Containerfile ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def containerfile() -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO((ROOT / "Containerfile").read_bytes()))


def _instructions(parser: DockerfileParser, name: str) -> list[str]:
    return [i["value"] for i in parser.structure if i["instruction"] == name]


def _final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    starts = [n for n, i in enumerate(parser.structure) if i["instruction"] == "FROM"]
    return parser.structure[starts[-1] :]


def test_image_is_multi_stage_on_a_pinned_slim_python_311(containerfile: DockerfileParser) -> None:
    assert containerfile.is_multistage
    assert len(containerfile.parent_images) == 2
    for image in containerfile.parent_images:
        name, _, tag = image.partition(":")
        assert name == "python" and tag.startswith("3.11.") and "slim" in tag, image
        assert tag != "latest" and tag.count(".") >= 2  # a patch release, never a moving tag
    assert not any("latest" in value for value in _instructions(containerfile, "FROM"))


def test_torch_comes_from_the_cpu_index_and_nothing_from_cuda(containerfile: DockerfileParser) -> None:
    runs = " ".join(_instructions(containerfile, "RUN"))
    args = " ".join(_instructions(containerfile, "ARG"))
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in args
    assert '--index-url ${TORCH_INDEX} "torch==${TORCH_VERSION}+cpu"' in runs
    assert "--constraint /opt/constraints.txt" in runs  # the CPU build cannot be swapped out later
    assert "assert not torch.version.cuda" in runs  # the build fails if a CUDA torch slipped in anyway
    assert not any(word in (runs + args).lower() for word in ("whl/cu1", "nvidia", "cudnn"))
    assert '".[local,postgres,redis,s3]"' in runs


def test_final_stage_runs_as_a_numeric_non_root_user_with_a_health_check(containerfile: DockerfileParser) -> None:
    final = _final_stage(containerfile)
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    assert users, "the runtime stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so Kubernetes runAsNonRoot can verify it
    health = [i["value"] for i in final if i["instruction"] == "HEALTHCHECK"]
    assert len(health) == 1 and "/v1/health" in health[0] and "UNDERLAY_PORT" in health[0]
    entry = [i["value"] for i in final if i["instruction"] == "ENTRYPOINT"]
    assert yaml.safe_load(entry[-1]) == ["underlay", "run"]
    assert not any(
        i["instruction"] == "RUN" and "apt-get install" in i["value"] and "build-essential" in i["value"] for i in final
    )  # no compilers in the image that runs


def test_environment_picks_the_distribution_and_binds_only_inside_the_container(
    containerfile: DockerfileParser,
) -> None:
    env = containerfile.envs
    assert env["UNDERLAY_DISTRO"] == "local"
    assert env["UNDERLAY_HOST"] == "0.0.0.0"  # consumed by the distributions' ${env.UNDERLAY_HOST}
    assert env["HF_HUB_OFFLINE"] == "1"
    assert _instructions(containerfile, "EXPOSE") == [env["UNDERLAY_PORT"]]


def test_underlay_distro_picks_what_underlay_run_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNDERLAY_DISTRO", "postgres")
    assert build_parser().parse_args(["run"]).config == "postgres"
    monkeypatch.delenv("UNDERLAY_DISTRO")
    assert build_parser().parse_args(["run"]).config == "local"
    assert build_parser().parse_args(["run", "/etc/underlay/run.yaml"]).config == "/etc/underlay/run.yaml"


def test_build_context_leaves_out_local_state() -> None:
    ignored = {line.strip() for line in (ROOT / ".containerignore").read_text().splitlines()}
    assert {".git", ".venv", "tests", "**/__pycache__"} <= ignored


# ---- Kubernetes ---------------------------------------------------------------------------------------


def _render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to build the kustomize overlays (apt-get install kubectl).", pytrace=False)
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, _render(request.param)


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def test_every_object_validates_against_the_pinned_kubernetes_schemas(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    import kubernetes_validate

    _, objects = rendered
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_deployment(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    import kubernetes_validate

    broken = copy.deepcopy(_one(rendered[1], "Deployment"))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = copy.deepcopy(_one(rendered[1], "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/v1/health"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_pods_are_probed_sized_and_locked_down(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/v1/health", "port": "http"}, probe
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]] and "emptyDir" in volumes[mounts["/var/lib/underlay"]]
    image = container["image"]
    assert ":" in image and not image.endswith(":latest")
    port = container["ports"][0]
    service = _one(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"] and port["containerPort"] == 8321
    assert not [o for o in objects if o["kind"] == "Secret"]  # secrets are created by the operator, not shipped


def test_the_mounted_run_config_loads_and_listens_on_the_pod_network(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, objects = rendered
    config_map = _one(objects, "ConfigMap")
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert container["args"] == ["/etc/underlay/run.yaml"]
    for name in ("POSTGRES_HOST", "POSTGRES_PASSWORD"):
        monkeypatch.setenv(name, "from-the-secret")
    path = tmp_path / "run.yaml"
    path.write_text(config_map["data"]["run.yaml"])
    config = load_run_config(str(path))
    assert config.server.host == "0.0.0.0" and config.server.port == 8321
    assert config.state_dir.startswith("/var/lib/underlay")


def test_local_is_one_pod_with_throwaway_state() -> None:
    objects = _render("local")
    deployment = _one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    run = yaml.safe_load(_one(objects, "ConfigMap")["data"]["run.yaml"])
    assert run["storage"]["sqlstore"]["type"] == "sqlite"


def test_postgres_runs_replicas_on_shared_state_with_credentials_from_secrets() -> None:
    objects = _render("postgres")
    deployment = _one(objects, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = _one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert _one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    for name in ("POSTGRES_HOST", "POSTGRES_PASSWORD"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "underlay-postgres" and not ref.get("optional")
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert not any("value" in e for e in container["env"])  # no literal credentials in the manifests
    claim = _one(objects, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    run = yaml.safe_load(_one(objects, "ConfigMap")["data"]["run.yaml"])
    assert run["storage"]["kvstore"]["type"] == run["storage"]["sqlstore"]["type"] == "postgres"
    assert run["providers"]["vector_io"][0]["provider_type"] == "remote::pgvector"
    assert run["providers"]["files"][0]["config"]["root"] == "/var/lib/underlay/files"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/var/lib/underlay/files"] == "files"
