"""`import streambatch` must not import torch, ray, polars or pandas (DESIGN.md):
optional dependencies load lazily, only when a feature needs them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "ray", "polars", "pandas", "redis", "psycopg"]


def _loaded_after(code: str) -> list[str]:
    script = (
        "import json, sys\n"
        f"{code}\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_streambatch_does_not_import_heavy_dependencies():
    assert _loaded_after("import streambatch") == []


def test_building_a_lazy_plan_does_not_import_heavy_dependencies():
    code = (
        "import streambatch as sb\n"
        # (no pyarrow.compute expression here: building one imports pandas in pyarrow itself)
        "ds = sb.range(10).map(lambda r: r).filter(lambda r: r['id'] > 3)"
        ".map_batches(lambda b: b, batch_format='pyarrow').limit(2)\n"
        "assert ds is not None"
    )
    assert _loaded_after(code) == []


def test_the_check_itself_detects_a_heavy_import():
    """Guard against a vacuous check: importing pandas explicitly is seen."""
    assert _loaded_after("import streambatch\nimport pandas") == ["pandas"]
