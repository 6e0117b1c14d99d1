"""Every module and setting that README.md and docs/*.md name exists.

Modules move and settings get renamed; a doc that still names the old one
sends a reader to nothing. Three kinds of name are resolved:

* file paths ending in `.py`: `stepstream/engine/log.py` from the repository's
  root, `delivery/hub.py` (a path within the package) from `stepstream/`, its
  `http/` or the root; a bare `hub.py` in a directory its line names
  (`stepstream/delivery/`, or the directory of a path such as
  `stepstream/engine/rules.py`: architecture.md's module map), else anywhere in
  the repository; and directories such as `stepstream/ws/`;
* dotted names: `stepstream.http.asgi` (a module), `stepstream.models.ApiKey`
  (a module, then attributes), or a logger's name that the code spells out;
* settings: every `STEPSTREAM_*` variable is read somewhere in `stepstream/` (by its
  full name, as stepstream.config's helpers take it), or, for the few that tune the
  test suite, read from the environment by `tests/` or `bench/`.
"""

import importlib
import importlib.util
import re
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SEARCHED = ("stepstream", "bench", "tests", "clients")  # where a bare file name may live

PATH = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.py)\b")
DOTTED = re.compile(r"(?<![\w/.-])(stepstream(?:\.[A-Za-z_]\w*)+)(?![\w(-]|\.\w)")
DIRECTORY = re.compile(r"(?<![\w/.-])((?:stepstream|clients)/(?:[\w-]+/)*)(?![\w.])")
SETTING = re.compile(r"\bSTEPSTREAM_[A-Z0-9_]*[A-Z0-9]\b")
# `stepstream.js`, `stepstream.sqlite3…`, `api.stepstream.example.com`: files and hosts
STDLIB = Path(sysconfig.get_paths()["stdlib"])  # `concurrent/futures/thread.py`
NOT_MODULES = {"js", "mjs", "css", "html", "json", "log", "sqlite3", "example", "com", "lock"}


def _code() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "stepstream").rglob("*.py"))


def _suite() -> str:
    return "\n".join(
        p.read_text() for top in ("tests", "bench") for p in (ROOT / top).rglob("*.py")
    )


def _files() -> set[Path]:
    return {p for top in SEARCHED for p in (ROOT / top).rglob("*.py")}


def names(pattern: re.Pattern) -> list[tuple[str, str]]:
    """(name, where: 'docs/x.md:line') for every match in the docs."""
    found = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for match in pattern.finditer(line):
                found.append((match.group(1) if pattern.groups else match.group(0), number, doc))
    return [(name, f"{doc.relative_to(ROOT)}:{number}") for name, number, doc in found]


def path_exists(name: str, where: str, files: set[Path]) -> bool:
    if "/" not in name:
        places = _directories_on(where)
        if places:
            return any((ROOT / place / name).is_file() for place in places)
        return any(p.name == name for p in files)
    bases = (ROOT, ROOT / "stepstream", ROOT / "stepstream" / "http", STDLIB)
    return any((base / name).is_file() for base in bases)


def _line(where: str) -> str:
    doc, number = where.rsplit(":", 1)
    return (ROOT / doc).read_text().splitlines()[int(number) - 1]


def _directories_on(where: str) -> list[str]:
    """The directories a line names, and those of the package paths it names."""
    line = _line(where)
    places = [m.group(1) for m in DIRECTORY.finditer(line)]
    places += [
        str(Path(m.group(1)).parent)
        for m in PATH.finditer(line)
        if m.group(1).startswith(("stepstream/", "clients/"))
    ]
    return places


def dotted_exists(name: str, code: str) -> bool:
    """A module (found, not imported), or a module's attribute, or a name the code spells."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:cut]))
        except ImportError:  # a parent is a module, not a package
            spec = None
        if spec is None:
            continue
        if cut == len(parts):
            return True
        target = importlib.import_module(".".join(parts[:cut]))
        try:
            for attribute in parts[cut:]:
                target = getattr(target, attribute)
        except AttributeError:
            break
        return True
    return f'"{name}"' in code or f"'{name}'" in code  # a logger's name, as code spells it


def test_the_docs_name_enough_to_be_worth_checking():
    assert len(names(PATH)) >= 100
    assert len(names(DOTTED)) >= 5
    assert len({n for n, _ in names(SETTING)}) >= 50


def test_every_file_path_the_docs_name_exists():
    files = _files()
    missing = [
        f"{where}: {name}" for name, where in names(PATH) if not path_exists(name, where, files)
    ]
    assert not missing, "\n".join(missing)


def test_every_package_directory_the_docs_name_exists():
    missing = [f"{where}: {name}" for name, where in names(DIRECTORY) if not (ROOT / name).is_dir()]
    assert not missing, "\n".join(missing)


def test_every_dotted_module_name_the_docs_use_resolves():
    code = _code()
    modules = [
        (name, where) for name, where in names(DOTTED) if not NOT_MODULES & set(name.split(".")[1:])
    ]
    missing = [f"{where}: {name}" for name, where in modules if not dotted_exists(name, code)]
    assert not missing, "\n".join(missing)


def read(name: str, code: str, suite: str) -> bool:
    if f'"{name}"' in code:
        return True
    return re.search(rf"(environ\.get\(|getenv\(|environ\[)\s*[\"']{name}[\"']", suite) is not None


def test_every_setting_the_docs_name_is_read_by_the_code():
    code, suite = _code(), _suite()
    missing = [f"{where}: {name}" for name, where in names(SETTING) if not read(name, code, suite)]
    assert not missing, "\n".join(missing)
