"""The Docker image and compose file describe the deployment README promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def test_compose_has_postgres_migrate_api_and_scalable_workers() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "api", "worker"}
    assert "pgdata" in compose["volumes"]
    assert any("pgdata:" in v for v in services["postgres"]["volumes"])
    assert services["migrate"]["command"] == ["db", "upgrade"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert "INFERPRUNE_DB_URL" in services[name]["environment"]
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["api"]["command"][:1] == ["serve"] and "0" in services["api"]["command"]
    assert all(p.startswith("127.0.0.1:") for p in services["api"]["ports"])


def test_dockerfile_is_cpu_non_root_with_a_healthcheck_and_installs_only_the_project() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^USER inferprune$", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
    installs = re.findall(r"pip install ([^\n\\]+)", text)
    assert installs == ["--extra-index-url https://download.pytorch.org/whl/cpu . "]


@pytest.mark.skipif(
    not (shutil.which("docker-compose") or shutil.which("docker")),
    reason="no docker compose client on this machine",
)
def test_compose_file_validates_with_the_docker_compose_client() -> None:
    command = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
    probe = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"{' '.join(command)} cannot run here: {probe.stderr.strip()[:200]}")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "POSTGRES_PASSWORD": "test"},
        timeout=60,
    )
    if "unknown command" in result.stderr:
        pytest.skip("docker client without the compose plugin")
    assert result.returncode == 0, result.stderr
