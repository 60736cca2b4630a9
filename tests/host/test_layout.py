"""The layout's rules, checked on the source: which package may import what (each package's __init__ says it)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST = ROOT / "host" / "meterkit"
FIRMWARE = ROOT / "firmware"

# package -> the meterkit packages it may import (besides itself)
MAY_IMPORT = {
    "wire": {"timefmt"},
    "store": {"wire", "timefmt"},
    "billing": {"wire", "store", "timefmt"},
    "headend": {"wire", "store", "timefmt"},
    "dr": {"wire", "store", "headend", "timefmt"},
    "integrations": {"wire", "store", "headend", "dr", "billing", "timefmt"},
    "device": set(),
    "firmware": {"wire", "store", "headend", "timefmt"},
    "testing": {"wire", "store", "headend", "device", "timefmt"},
    "sim": {"wire", "store", "headend", "billing", "dr", "device", "testing", "timefmt"},
    "bench": {"wire", "store", "headend", "billing", "device", "firmware", "sim", "testing", "timefmt"},
}


def _imports(path: Path) -> list[str]:
    """Every module a file imports (absolute names), at any depth (imports inside functions count too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


def _package(path: Path) -> str:
    rel = path.relative_to(HOST).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def test_host_packages_import_only_what_their_docstring_allows():
    wrong = []
    for path in sorted(HOST.rglob("*.py")):
        pkg = _package(path)
        if pkg not in MAY_IMPORT:
            continue
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "meterkit" or len(parts) < 2 or parts[1] in ("__version__",):
                continue
            other = parts[1]
            if other != pkg and other not in MAY_IMPORT[pkg]:
                wrong.append(f"{path.relative_to(ROOT)} imports meterkit.{other}")
    assert wrong == []


def test_argparse_only_in_the_cli_and_nothing_imports_the_cli():
    argparse_users = [str(p.relative_to(ROOT)) for p in HOST.rglob("*.py")
                      if "argparse" in _imports(p) and _package(p) != "cli"]
    cli_importers = [str(p.relative_to(ROOT)) for p in HOST.rglob("*.py")
                     if _package(p) != "cli" and any(n.startswith("meterkit.cli") for n in _imports(p))]
    assert argparse_users == []
    assert cli_importers == []


def test_sqlite3_only_in_the_store_and_the_tests_one_sql_helper():
    users = [str(p.relative_to(ROOT)) for p in HOST.rglob("*.py") if "sqlite3" in _imports(p)]
    assert all(u.startswith("host/meterkit/store/") or u == "host/meterkit/testing/sqlfile.py" for u in users), users
    test_users = [str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py") if "sqlite3" in _imports(p)]
    assert test_users == []


def test_only_hal_touches_the_hardware_and_nothing_in_meter_knows_the_simulator():
    hardware = {"machine", "esp32", "network"}
    wrong = []
    for path in sorted((FIRMWARE / "meter").glob("*.py")):
        for name in _imports(path):
            root = name.split(".")[0]
            if (root in hardware and path.name != "hal.py") or root == "sim":
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert wrong == []
