"""The widget archive Kommo accepts: ``manifest.json``, ``script.js``, ``style.css``, ``i18n/*.json`` and
``images/*.png`` at the root of a zip, with our service's URL baked into the script (the widget calls it
from the account's Kommo pages). The same inputs give the same bytes: entries are sorted and dated alike."""

from __future__ import annotations

import io
import ipaddress
import json
import zipfile
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from app.errors import Unprocessable
from app.widget.images import LOGO_SIZES, logo_png

URL_PLACEHOLDER = '"__CONTACTSYNC_SERVICE_URL__"'
_SOURCES = ("manifest.json", "script.js", "style.css")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class InvalidWidgetUrl(Unprocessable):
    code = "invalid_widget_url"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def service_url(url: str) -> str:
    """``url`` without a trailing slash, if the widget can call it from Kommo's https pages: https, or http
    on loopback (which browsers count as secure, for trying the widget locally)."""
    value = url.strip().rstrip("/")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise InvalidWidgetUrl(f"Not a URL: {url!r}.") from exc
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host or parts.query or parts.fragment:
        raise InvalidWidgetUrl(f"The widget needs an http(s) URL without query or fragment, not {url!r}.")
    if any(c.isspace() or c in "\"'\\<>" for c in value) or parts.username or parts.password:
        raise InvalidWidgetUrl(f"The widget URL may not contain quotes, spaces or credentials: {url!r}.")
    if parts.scheme == "http" and not _is_loopback(host):
        raise InvalidWidgetUrl(
            f"Kommo's pages are https, so browsers block calls to {url!r}: use an https URL."
        )
    return value


def _bundle_files() -> dict[str, bytes]:
    root = resources.files("app.widget").joinpath("bundle")
    files = {name: root.joinpath(name).read_bytes() for name in _SOURCES}
    for entry in root.joinpath("i18n").iterdir():
        if entry.name.endswith(".json"):
            files[f"i18n/{entry.name}"] = entry.read_bytes()
    return files


def widget_files(url: str) -> dict[str, bytes]:
    """Every file of the archive by its path inside it, the script pointing at ``url``."""
    base = service_url(url)
    files = _bundle_files()
    script = files["script.js"].decode()
    if script.count(URL_PLACEHOLDER) != 1:
        raise RuntimeError("script.js must hold the service URL placeholder exactly once")
    files["script.js"] = script.replace(URL_PLACEHOLDER, json.dumps(base)).encode()
    for name, (width, height) in LOGO_SIZES.items():
        files[f"images/{name}"] = logo_png(width, height)
    return files


def build_widget(url: str) -> bytes:
    """The widget archive (zip bytes) calling the service at ``url``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(widget_files(url).items()):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return out.getvalue()


def write_widget(path: Path, url: str) -> int:
    """Write the archive to ``path`` (replacing it whole: written aside, then renamed); its size in bytes."""
    data = build_widget(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
    return len(data)
