"""The content renderer's files: Floating UI as its VERSION.md names it, imported
relatively (no build step, no bare specifier a browser cannot resolve), loaded
only through render()'s dynamic import, and everything render() loads within
its size budget (docs/clients.md, "Rendering content")."""

import gzip
import hashlib
import re
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "stepstream" / "static"
VENDORED = STATIC / "vendor" / "floating-ui"
BUDGET_GZIPPED = 30 * 1024

VENDORED_SHA256 = {
    "floating-ui.core.browser.min.js": (
        "895286af18d41dd1d59d8bca70f5d6ccee1c0d3c8ae41b8e5075758bf8c13f7e"
    ),
    "floating-ui.dom.browser.min.js": (
        "162fcd665c13c253ffc18378d957a2e08ccd7858a41fa62ade8f880671facb3d"
    ),
}


def test_floating_ui_is_the_version_its_note_names():
    note = (VENDORED / "VERSION.md").read_text()
    assert "`@floating-ui/core` 1.8.0" in note and "`@floating-ui/dom` 1.8.0" in note
    for name, digest in VENDORED_SHA256.items():
        assert hashlib.sha256((VENDORED / name).read_bytes()).hexdigest() == digest, name
        assert digest in note, name
    assert (VENDORED / "LICENSE").read_text().startswith("MIT License")
    assert {p.name for p in VENDORED.iterdir()} == {*VENDORED_SHA256, "LICENSE", "VERSION.md"}


def imports(path: Path) -> list[str]:
    """The modules `path` imports, statically or dynamically (comments left out)."""
    code = [
        ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith(("//", "*", "/*"))
    ]
    text = "\n".join(code)
    return re.findall(r"""(?:from|import)\s*\(?\s*["']([^"']+)["']""", text)


def test_every_import_is_relative_and_the_renderer_loads_only_on_render():
    loaded = [STATIC / "stepstream-render.js"]
    seen: set[Path] = set()
    while loaded:
        path = loaded.pop()
        if path in seen:
            continue
        seen.add(path)
        for spec in imports(path):
            assert spec.startswith("./"), f"{path.name} imports {spec!r}: not relative"
            loaded.append((path.parent / spec).resolve())
    assert {p.name for p in seen} == {"stepstream-render.js", *VENDORED_SHA256}
    sdk = (STATIC / "stepstream.js").read_text()
    assert imports(STATIC / "stepstream.js") == []  # no static import: nothing more loads
    assert 'import(new URL("./stepstream-render.js", import.meta.url).href)' in sdk
    gzipped = sum(len(gzip.compress(p.read_bytes(), 9)) for p in seen)
    assert gzipped <= BUDGET_GZIPPED, f"render() loads {gzipped} bytes gzipped"
