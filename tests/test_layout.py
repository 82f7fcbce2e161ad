"""The tree is the architecture: each layer of app/ imports only the layers below it, and the job
never imports the development tools."""
import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"

# What each layer may import besides itself (DESIGN: the mapping is pure; the TikTok side knows
# nothing of Kafka; the dev tools sit on top and nothing imports them but the CLI).
ALLOWED = {
    "tiktok": {"settings"},
    "mapping": {"settings", "tiktok.facts"},
    "settings": {"mapping.config", "mapping.spec", "tiktok.facts"},
    "job": {"settings", "mapping", "tiktok"},
    "devtools": {"settings", "mapping", "tiktok", "job"},
    "cli": {"settings", "job", "devtools"},
    "__main__": {"cli"},
}


def layer_of(path: Path) -> str:
    parts = path.relative_to(APP).with_suffix("").parts
    return parts[0]


def imports(path: Path) -> set[str]:
    """The app modules `path` imports (as "job.worker", "tiktok.facts", ...)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "app":
            base = node.module.removeprefix("app").lstrip(".")
            out |= {f"{base}.{a.name}".lstrip(".") if not base else base for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("app.") for a in node.names if a.name.startswith("app.")}
    return out


MODULES = sorted(p for p in APP.rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(APP)))
def test_a_module_imports_only_its_own_layer_and_those_below(path):
    layer = layer_of(path)
    allowed = ALLOWED[layer]
    wrong = {m for m in imports(path) if m.split(".")[0] != layer
             and not any(m == a or m.startswith(a + ".") for a in allowed)}
    assert wrong == set()


def test_the_layers_are_the_tree():
    assert {layer_of(p) for p in MODULES} == set(ALLOWED)
    assert imports(APP / "job" / "worker.py") >= {"job.clicks", "job.forwarder", "tiktok.sender"}
