"""The widget archive as Kommo takes it: its files at the root, a manifest whose texts and locales exist in
every i18n file, the service URL baked into the script, valid PNG logos of the documented sizes; and the
``contactsync widget build`` command that writes it."""

from __future__ import annotations

import glob
import io
import json
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from app.cli import main
from app.widget.build import InvalidWidgetUrl, build_widget, service_url
from app.widget.images import LOGO_SIZES, PNG_SIGNATURE

URL = "https://sync.example.com"
REPO = Path(__file__).resolve().parents[2]


def _archive(url: str = URL) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(build_widget(url))) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def _lookup(texts: dict[str, object], dotted: str) -> object:
    value: object = texts
    for part in dotted.split("."):
        assert isinstance(value, dict), dotted
        value = value.get(part)
    return value


def _keys(value: object, prefix: str = "") -> set[str]:
    if not isinstance(value, dict):
        return {prefix}
    return set().union(*(_keys(v, f"{prefix}.{k}" if prefix else k) for k, v in value.items()))


def test_the_archive_holds_kommos_files_at_its_root() -> None:
    files = _archive()
    assert set(files) == {
        "manifest.json",
        "script.js",
        "style.css",
        "i18n/en.json",
        "i18n/ru.json",
        *(f"images/{name}" for name in LOGO_SIZES),
    }
    assert all(len(data) <= 300 * 1024 for data in files.values())  # Kommo's cap per image
    assert build_widget(URL) == build_widget(URL)  # same inputs, same bytes


def test_manifest_texts_and_locales_match_the_i18n_files() -> None:
    files = _archive()
    manifest = json.loads(files["manifest.json"])
    widget = manifest["widget"]
    assert widget["interface_version"] == 2
    assert widget["installation"] is True
    assert re.fullmatch(r"\d+\.\d+\.\d+", widget["version"])
    assert "settings" in manifest["locations"]
    assert manifest["settings"]["api_key"] == {"name": "settings.api_key", "type": "pass", "required": True}
    locales = {name.removeprefix("i18n/").removesuffix(".json") for name in files if name.startswith("i18n/")}
    assert set(widget["locale"]) == locales == {"en", "ru"}
    texts = {locale: json.loads(files[f"i18n/{locale}.json"]) for locale in locales}
    assert _keys(texts["en"]) == _keys(texts["ru"])
    referenced = [widget[k] for k in ("name", "description", "short_description")]
    referenced += [field["name"] for field in manifest["settings"].values()]
    for locale, text in texts.items():
        for key in referenced:
            assert isinstance(_lookup(text, key), str), (locale, key)
        # Kommo's moderation rule: the user is told the key goes to our server.
        assert "{host}" in text["contactsync"]["consent"], locale
    # Every text the script asks for exists.
    script = files["script.js"].decode()
    used = set(re.findall(r"text\('(\w+)'", script))
    assert used
    assert used <= set(texts["en"]["contactsync"]), used - set(texts["en"]["contactsync"])


def test_the_service_url_is_baked_into_the_script() -> None:
    script = _archive("https://sync.example.com:8443/base/")["script.js"].decode()
    assert 'var SERVICE_URL = "https://sync.example.com:8443/base";' in script
    assert "__CONTACTSYNC_SERVICE_URL__" not in script
    assert script.lstrip().startswith("/*")
    assert "define(['jquery']" in script
    for callback in ("render", "init", "bind_actions", "settings", "onSave", "destroy"):
        assert re.search(rf"\b{callback}: function", script), callback


@pytest.mark.parametrize(
    "url",
    [
        "http://sync.example.com",  # Kommo's pages are https: the browser would block it
        "ftp://sync.example.com",
        "https://",
        "https://sync.example.com/?a=1",
        'https://sync.example.com/"+alert(1)+"',
        "https://user:pw@sync.example.com",
        "https://sync.example.com:99999",
    ],
)
def test_urls_the_widget_could_not_call_are_refused(url: str) -> None:
    with pytest.raises(InvalidWidgetUrl):
        service_url(url)


def test_loopback_may_be_plain_http() -> None:
    assert service_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert service_url("http://localhost:8000") == "http://localhost:8000"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    pos, chunks, idat = len(PNG_SIGNATURE), [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append(kind)
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    assert chunks[0] == b"IHDR"
    assert chunks[-1] == b"IEND"
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    assert (depth, color) == (8, 2)
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)
    return width, height


def test_images_are_valid_pngs_of_the_documented_sizes() -> None:
    files = _archive()
    for name, size in LOGO_SIZES.items():
        assert _png_size(files[f"images/{name}"]) == size, name


def test_cli_writes_the_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dist" / "widget.zip"
    assert main(["widget", "build", "--out", str(out), "--url", "https://cs.example.org/"]) == 0
    assert "https://cs.example.org" in capsys.readouterr().out
    with zipfile.ZipFile(out) as archive:
        assert 'SERVICE_URL = "https://cs.example.org"' in archive.read("script.js").decode()
    assert main(["widget", "build", "--out", str(tmp_path / "x.zip"), "--url", "http://cs.example.org"]) == 2
    assert not (tmp_path / "x.zip").exists()
    assert "https" in capsys.readouterr().err


def test_cli_defaults_to_the_configured_public_url(tmp_path: Path) -> None:
    out = tmp_path / "widget.zip"
    # A separate process: the default comes from the environment the service is configured with.
    env = {
        "CONTACTSYNC_PUBLIC_URL": "https://public.example.net",
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "widget", "build", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(out) as archive:
        assert 'SERVICE_URL = "https://public.example.net"' in archive.read("script.js").decode()


def test_the_bundle_ships_as_package_data() -> None:
    # A non-editable install carries only what package-data names; setuptools expands each pattern with
    # glob relative to the package, as here.
    text = (REPO / "pyproject.toml").read_text()
    found = re.search(r"^app = \[(.*)\]$", text, re.MULTILINE)
    assert found is not None
    shipped: set[Path] = set()
    for pattern in json.loads(f"[{found.group(1)}]"):
        shipped.update(Path(p) for p in glob.glob(str(REPO / "app" / pattern), recursive=True))
    bundle = {path for path in (REPO / "app" / "widget" / "bundle").rglob("*") if path.is_file()}
    assert len(bundle) >= 5
    assert bundle <= shipped, bundle - shipped
