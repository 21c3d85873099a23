#!/usr/bin/env python3
"""Write mmx/serve/openapi.json (what ``GET /v1/openapi.json`` serves) from docs/openapi.yaml.

    python scripts/gen_openapi.py           # (re)write it
    python scripts/gen_openapi.py --check   # exit 1 when it is stale

docs/openapi.yaml is the source (YAML reads and diffs better); the package ships the JSON so
that `mmx serve` needs no YAML parser. tests/test_openapi.py fails when the two differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "docs" / "openapi.yaml"
TARGET = ROOT / "mmx" / "serve" / "openapi.json"


def render() -> str:
    """The JSON text of docs/openapi.yaml (2-space indent, keys in document order)."""
    doc = yaml.safe_load(SOURCE.read_text(encoding="utf-8"))
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run python scripts/gen_openapi.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
