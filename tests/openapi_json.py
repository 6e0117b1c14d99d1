"""Writes stepstream/http/api/openapi.json, the copy of openapi.yaml the server reads.

    python -m tests.openapi_json

openapi.yaml stays the document written by hand (comments, descriptions over
several lines); the server reads the JSON copy with orjson and needs no YAML
parser. tests/test_dependencies.py fails, naming this command, whenever the
copy is not exactly what the YAML says.
"""

import json
from pathlib import Path

import yaml

API = Path(__file__).resolve().parent.parent / "stepstream" / "http" / "api"
SOURCE, COPY = API / "openapi.yaml", API / "openapi.json"


def generated() -> str:
    """The JSON copy of the YAML: its keys in the YAML's order, two spaces, UTF-8."""
    document = yaml.safe_load(SOURCE.read_text(encoding="utf-8"))
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    COPY.write_text(generated(), encoding="utf-8")
    print(f"wrote {COPY.relative_to(Path.cwd()) if COPY.is_relative_to(Path.cwd()) else COPY}")
