"""The package's public face and the layout rules that keep it readable (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gateway

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 80


def test_every_public_name_resolves() -> None:
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None, name
    assert set(gateway.__all__) == set(gateway._EXPORTS) | {"__version__"}
    assert issubclass(gateway.DefinitionError, gateway.ActionGateError)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = gateway.nothing_here  # type: ignore[attr-defined]


def test_import_gateway_does_not_load_the_web_stack() -> None:
    code = "import sys, gateway; gateway.load_config; print('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_api_loads_and_exports_a_config() -> None:
    config = gateway.load_config(ROOT / "examples" / "support.yaml")
    tools = gateway.export_tools(gateway.to_tool_definitions(config.actions), "anthropic")
    assert {t["name"] for t in tools} >= {"get_customer_account"}


def _functions(path: Path) -> list[tuple[str, int, int]]:
    tree = ast.parse(path.read_text())
    return [
        (node.name, node.lineno, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno
    ]


def test_no_function_over_80_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for path in sorted((ROOT / "gateway").rglob("*.py"))
        for name, line, length in _functions(path)
        if length > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_every_logger_is_named_under_actiongate() -> None:
    names = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        names += re.findall(r"getLogger\(([^)]*)\)", path.read_text())
    assert names, "no logger found: the check itself is broken"
    for name in names:
        assert re.fullmatch(r'"actiongate(\.[a-z_]+)*"', name), name


def test_a_users_actiongate_logging_config_sees_dropped_record_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from gateway.stores import logs

    caplog.set_level(logging.WARNING, logger="actiongate")
    logs.logger.warning("records dropped")
    assert [r.name for r in caplog.records] == ["actiongate.logs"]


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(tool), "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("gateway/errors.py", "import gateway.app", "Layers"),  # the bottom reaching the top
        ("gateway/net/sse.py", "import gateway.engine.executor", "Layers"),
        ("adapters/openai.py", "import gateway.errors", "adapters/ is a leaf"),
        ("gateway/proxy/turns.py", "import gateway.proxy.loop", "No import circles"),
    ],
)
def test_layer_contracts_catch_an_upward_import_or_a_circle(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    import shutil

    for name in ("gateway", "adapters"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    assert _lint_imports(tmp_path).returncode == 0  # the tree as it is keeps every contract
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout
