"""The container files can't be run here (no Docker engine), so check them against the code they start."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from app.cli import build_parser
from app.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _services(compose: dict[str, object]) -> dict[str, dict[str, object]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def test_compose_has_the_expected_services_with_healthchecks(compose: dict[str, object]) -> None:
    services = _services(compose)
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker"}
    for name in ("postgres", "redis", "api"):
        assert "healthcheck" in services[name], name
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"  # type: ignore[index]


def test_compose_commands_are_real_cli_commands(compose: dict[str, object]) -> None:
    parser = build_parser()
    for name in ("migrate", "api", "worker"):
        command = _services(compose)[name]["command"]
        assert isinstance(command, list)
        assert command[0] == "contactsync"
        parser.parse_args(command[1:])  # SystemExit on an unknown command or flag


def _compose_env(
    compose: dict[str, object], service: str, outer: dict[str, str] | None = None
) -> dict[str, str]:
    """A service's environment as compose resolves it: ``${VAR:-default}`` takes VAR from ``outer`` if set."""
    outer = outer or {}
    env = _services(compose)[service]["environment"]
    assert isinstance(env, dict)
    return {
        key: re.sub(r"\$\{([A-Z_]+):-([^}]*)\}", lambda m: outer.get(m.group(1)) or m.group(2), str(value))
        for key, value in env.items()
    }


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("CONTACTSYNC_") and not key.startswith("CONTACTSYNC_TEST_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_compose_environment_names_are_settings_and_a_plain_up_is_a_valid_trial(
    compose: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = {f"CONTACTSYNC_{name.upper()}" for name in Settings.model_fields}
    for name in ("migrate", "api", "worker"):
        env = _compose_env(compose, name)
        unknown = set(env) - fields
        assert not unknown, f"{name}: unknown settings {unknown}"
        settings = _settings_from(env, monkeypatch)
        # Development: the public fallback secrets are allowed for a local trial, nowhere else.
        assert settings.env.value == "development"
        assert settings.database_url
        assert "@postgres:" in settings.database_url
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.effective_log_format == "json"


def test_compose_in_production_refuses_its_fallback_secrets_naming_them(
    compose: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("migrate", "api", "worker"):
        env = _compose_env(compose, name, {"CONTACTSYNC_ENV": "production"})
        with pytest.raises(ConfigError) as info:
            _settings_from(env, monkeypatch)
        message = str(info.value)
        assert "CONTACTSYNC_ADMIN_TOKEN is a published example" in message
        assert "CONTACTSYNC_SECRET_KEYS: key #1 is a published example key" in message
        for variable in ("CONTACTSYNC_ADMIN_TOKEN", "CONTACTSYNC_SECRET_KEYS"):
            assert env[variable] not in message


def test_compose_in_production_starts_with_real_secrets(
    compose: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    outer = {
        "CONTACTSYNC_ENV": "production",
        "CONTACTSYNC_SECRET_KEYS": Fernet.generate_key().decode(),
        "CONTACTSYNC_ADMIN_TOKEN": secrets.token_urlsafe(32),
    }
    settings = _settings_from(_compose_env(compose, "api", outer), monkeypatch)
    assert settings.env.value == "production"
    assert settings.admin_token.get_secret_value() == outer["CONTACTSYNC_ADMIN_TOKEN"]


def test_compose_production_with_fallbacks_fails_fast_from_the_command_line(
    compose: dict[str, object], tmp_path: Path
) -> None:
    env = _compose_env(compose, "worker", {"CONTACTSYNC_ENV": "production"})
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "configuration error" in r.stderr
    assert "CONTACTSYNC_ADMIN_TOKEN" in r.stderr
    assert "CONTACTSYNC_SECRET_KEYS" in r.stderr


def test_dockerfile_is_multistage_non_root_and_runs_the_cli() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) >= 2, "multi-stage build expected"
    final = stages[-1]
    assert "build-essential" not in final
    assert "gcc" not in final
    assert re.search(r"^USER (?!root)\S+", final, flags=re.M)
    cmd = re.search(r'^CMD \["contactsync", "serve"', final, flags=re.M)
    assert cmd, "final image runs `contactsync serve`"
    for path in ("alembic.ini", "migrations", "app"):
        assert f"COPY --chown=contactsync:contactsync {path}" in final
        assert (ROOT / path).exists()


def test_cli_help_explains_each_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("serve", "worker", "migrate", "sandbox"):
        assert re.search(rf"^\s+{command}\s+\S", out, flags=re.M), command


def test_serve_without_database_url_explains_what_to_do(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert r.returncode == 2
    assert "--embedded" in r.stderr
    assert "CONTACTSYNC_DATABASE_URL" in r.stderr


def test_production_without_secrets_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CONTACTSYNC_ENV": "production"}
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert r.returncode == 2
    assert "configuration error" in r.stderr
    assert "CONTACTSYNC_SECRET_KEYS" in r.stderr


# --- The production image carries app only; the simulators stay in the checkout ------------------------------


def _hide(package: str) -> str:
    """Code that makes ``package`` unimportable in a subprocess, as if it were not installed."""
    return f"""
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name == {package!r} or name.startswith({package + "."!r}):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Hide())
"""


# The production image has no sandbox package at all.
HIDE_SANDBOX = _hide("sandbox")


def _dockerfile_copies() -> list[tuple[str, list[str]]]:
    """(stage name, sources) of every COPY from the build context, in order; ``--from`` copies are skipped."""
    copies: list[tuple[str, list[str]]] = []
    stage = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if m := re.match(r"FROM \S+(?: AS (\S+))?", line):
            stage = m.group(1) or "final"
        elif line.startswith("COPY ") and "--from=" not in line:
            words = [w for w in line.split()[1:] if not w.startswith("--")]
            copies.append((stage, words[:-1]))
    return copies


def _build_context() -> set[str]:
    """Top-level names of the checkout that `docker build .` sends (.dockerignore applied)."""
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    return {path.name for path in ROOT.iterdir() if path.name not in ignored}


def _packages_found(where: Path) -> list[str]:
    """The packages `pip install .` puts in the wheel from ``where``: setuptools' find with our include."""
    import tomllib

    from setuptools import find_namespace_packages

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"
    ]
    return sorted(find_namespace_packages(where=str(where), include=include))


def test_a_checkout_installs_both_app_and_the_sandboxes() -> None:
    found = _packages_found(ROOT)
    assert {"app", "sandbox", "sandbox.kommo", "sandbox.unisender"} <= set(found), found


def test_the_image_build_steps_leave_the_sandboxes_out(tmp_path: Path) -> None:
    context = _build_context()
    assert "sandbox" not in context, ".dockerignore must keep the simulators out of the build context"
    copies = _dockerfile_copies()
    assert copies
    for _, sources in copies:
        for source in sources:
            assert source in context, f"COPY {source}: not in the build context"
            assert not source.startswith(("sandbox", ".")), f"COPY {source} would bring the simulators"
    # Replay the build stage's COPY steps, then see what its `pip install .` would package.
    src = tmp_path / "src"
    src.mkdir()
    for _, sources in (c for c in copies if c[0] == "build"):
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, src / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(origin, src / source)
    found = _packages_found(src)
    assert "app" in found
    assert [p for p in found if not (p == "app" or p.startswith("app."))] == []
    # The final stage adds only the venv built above and these files: no sandbox there either.
    final = {source for stage, sources in copies if stage == "final" for source in sources}
    assert final == {"alembic.ini", "migrations", "app"}


def test_app_imports_every_module_without_the_sandboxes(tmp_path: Path) -> None:
    code = HIDE_SANDBOX + (
        "import importlib, pkgutil, app\n"
        "for m in pkgutil.walk_packages(app.__path__, 'app.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert not [n for n in sys.modules if n.split('.')[0] == 'sandbox']\n"
        "print('imported', m.name)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "imported app." in r.stdout


def test_the_sandboxes_import_nothing_from_app(tmp_path: Path) -> None:
    """The simulators are written from the providers' docs on their own: every module imports with app hidden."""
    code = _hide("app") + (
        "import importlib, pkgutil, sandbox\n"
        "names = [m.name for m in pkgutil.walk_packages(sandbox.__path__, 'sandbox.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names), 'modules')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[0]) > 20, r.stdout


@pytest.mark.parametrize("argv", [["sandbox", "kommo"], ["sandbox", "unisender"], ["demo", "--edits", "1"]])
def test_sandbox_and_demo_without_the_sandboxes_exit_2_with_a_clear_message(
    argv: list[str], tmp_path: Path
) -> None:
    code = HIDE_SANDBOX + "from app.cli import main\nraise SystemExit(main(sys.argv[1:]))\n"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip() == (
        "contactsync: the sandboxes are not installed in this image; run from a source checkout"
    )
    assert r.stdout == ""
    assert not (tmp_path / ".contactsync").exists()  # the demo stopped before creating anything
