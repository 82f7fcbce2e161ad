"""The README names exactly the dead-letter reasons the code can emit, and the DLQ schema names
none it cannot.

What the code can emit is derived from the code: the mapping's refusal tuples (every tuple named
REASONS or *_REASONS in an app.mapping module: events.REASONS, decode.DECODE_REASONS,
sources.REASONS, ...; SKIP_REASONS and CLICK_SKIP_REASONS are counted skips, never dead-lettered), every TikTok verdict that
dead-letters a request (app.tiktok.outcomes), and the reasons the job writes itself, read from the
source of every dead_letter(...) call in app/. A reason added to any of these without a line in
the README fails here; so does a README entry nothing emits any more, and a Refusal("...") whose
reason is in no tuple.
"""
import ast
import importlib
import json
import pkgutil
import re
from pathlib import Path

import app.mapping
from app.tiktok import facts
from app.tiktok.outcomes import TOO_LARGE, TRANSPORT, Action, verdict_for_code

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app"

# An unknown 4xxxx code is dead-lettered as tiktok_<code>: documented under that one name.
UNKNOWN_CODE = 40999
UNKNOWN_CODE_REASON = "tiktok_<code>"

# Callables that write a dead letter, and the position of their reason argument.
EMITTERS = {"dead_letter": 0, "dead_letter_from_retry": 1, "_refused": 1}
# Reason arguments that are not literals, and where what they carry is collected instead.
DERIVED = {
    "r.reason": "a Refusal: refusal_reasons()",
    "answer.verdict.reason": "a TikTok verdict: send_reasons()",
}


def refusal_reasons(skips: bool = False) -> dict[str, tuple[str, ...]]:
    """module.NAME -> the tuple, for every REASONS / *_REASONS tuple of app.mapping; the
    *SKIP_REASONS ones (counted skips, never dead-lettered) only with `skips`."""
    out = {}
    for info in pkgutil.iter_modules(app.mapping.__path__):
        module = importlib.import_module(f"app.mapping.{info.name}")
        for name, value in vars(module).items():
            if (re.fullmatch(r"([A-Z]+_)*REASONS", name) and (skips or not name.endswith("SKIP_REASONS"))
                    and isinstance(value, tuple)):
                out[f"{info.name}.{name}"] = value
    return out


def send_reasons() -> set[str]:
    """Verdicts that dead-letter: DEAD ones, and ISOLATE/SPLIT ones once a single event is left
    (app.tiktok.sender.deliver). RETRY and HOLD end as retries_exhausted / hold_expired."""
    codes = [v for k, v in vars(facts.Code).items() if not k.startswith("_") and isinstance(v, int)]
    verdicts = [verdict_for_code(c) for c in codes] + [TOO_LARGE, TRANSPORT]
    reasons = {v.reason for v in verdicts if v.action in (Action.DEAD, Action.ISOLATE, Action.SPLIT)}
    assert verdict_for_code(UNKNOWN_CODE).reason == f"tiktok_{UNKNOWN_CODE}"
    return reasons | {UNKNOWN_CODE_REASON}


def _enclosing_functions(tree: ast.AST) -> dict[ast.AST, ast.FunctionDef]:
    """Each node -> the innermost function around it (ast.walk yields outer functions first)."""
    owner = {}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            owner.update((node, fn) for node in ast.walk(fn) if node is not fn)
    return owner


def job_reasons() -> set[str]:
    """The reasons the job passes to dead_letter(...) and the like, read from their call sites
    (app/devtools writes no dead letters: the job never imports it)."""
    found: set[str] = set()
    unexplained: list[str] = []
    for path in APP.rglob("*.py"):
        if path.is_relative_to(APP / "devtools"):
            continue
        tree = ast.parse(path.read_text())
        owner = _enclosing_functions(tree)
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            name = getattr(call.func, "id", None) or getattr(call.func, "attr", None)
            if name not in EMITTERS:
                continue
            keyword = {k.arg: k.value for k in call.keywords}
            arg = keyword.get("reason") or (call.args[EMITTERS[name]] if len(call.args) > EMITTERS[name] else None)
            where = f"{path.relative_to(REPO)}:{call.lineno}"
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
            elif arg is not None and ast.unparse(arg) in DERIVED:
                pass
            elif isinstance(arg, ast.Name):
                fn = owner.get(call)
                params = {a.arg for a in fn.args.args + fn.args.kwonlyargs} if fn else set()
                if fn is not None and arg.id in params and fn.name in EMITTERS:
                    continue  # an emitter passing its own parameter on: its callers are read
                assigned = [n.value for n in ast.walk(fn or tree) if isinstance(n, ast.Assign)
                            and any(isinstance(t, ast.Name) and t.id == arg.id for t in n.targets)]
                literals = {c.value for value in assigned for c in ast.walk(value)
                            if isinstance(c, ast.Constant) and isinstance(c.value, str)}
                if literals:
                    found |= literals
                else:
                    unexplained.append(f"{where}: {ast.unparse(arg)}")
            else:
                unexplained.append(f"{where}: {ast.unparse(arg) if arg is not None else '?'}")
    assert not unexplained, f"reasons this test cannot follow (add them to DERIVED, or pass a literal): {unexplained}"
    return found


def refusal_literals() -> dict[str, str]:
    """Every Refusal("literal", ...) raised or built in app/, with where."""
    out = {}
    for path in APP.rglob("*.py"):
        for call in ast.walk(ast.parse(path.read_text())):
            if (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Refusal" and call.args
                    and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
                out[call.args[0].value] = f"{path.relative_to(REPO)}:{call.lineno}"
    return out


def emitted() -> set[str]:
    refusals = {r for reasons in refusal_reasons().values() for r in reasons}
    return refusals | send_reasons() | job_reasons()


def readme_reasons() -> list[str]:
    """The reasons in the README's list under 'Dead-letter reasons, by stage': its items
    ("- stage: `a`, `b` (what b means)") and their continuation lines, indented deeper. A reason
    is a backticked name outside parentheses; what is in them explains it."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "Dead-letter reasons, by stage" in line)
    indent = len(lines[start + 1]) - len(lines[start + 1].lstrip())
    assert lines[start + 1].lstrip().startswith("- ") and indent > 0, "the list follows the line"
    text = []
    for line in lines[start + 1:]:
        depth = len(line) - len(line.lstrip())
        if not ((depth == indent and line.lstrip().startswith("- ")) or depth > indent):
            break
        text.append(line.strip())
    listed = " ".join(text)
    while True:  # innermost parentheses first, until none is left
        listed, n = re.subn(r"\([^()]*\)", "", listed)
        if not n:
            break
    return re.findall(r"`([a-z][a-z0-9_]*(?:<code>)?)`", listed)


def test_every_refusal_the_code_raises_is_in_the_reason_tuples():
    known = {r for reasons in refusal_reasons(skips=True).values() for r in reasons}
    missing = {r: where for r, where in refusal_literals().items() if r not in known}
    assert not missing, f"add these to a REASONS tuple of their module: {missing}"


def test_the_collectors_see_what_they_are_meant_to():
    tuples = refusal_reasons()
    assert {"events.REASONS", "decode.DECODE_REASONS"} <= set(tuples)
    assert "decode.CLICK_SKIP_REASONS" not in tuples and "decode.CLICK_SKIP_REASONS" in refusal_reasons(skips=True)
    assert "invalid_currency" in tuples["events.REASONS"] and "invalid_json" in tuples["decode.DECODE_REASONS"]
    # A floor, so that a collector that silently stops working cannot make the comparison pass.
    assert {"no_permission", "invalid_parameter", "pii_not_hashed", "payload_too_large"} <= send_reasons()
    assert {"internal_error", "no_identifier", "no_route", "invalid_retry_record", "unknown_pixel",
            "retries_exhausted", "hold_expired"} <= job_reasons()
    assert "rate_limited" not in send_reasons() and "token_expired" not in send_reasons()  # retried, held


def test_the_readme_lists_exactly_the_reasons_the_code_emits():
    listed = readme_reasons()
    assert len(listed) == len(set(listed)), f"listed twice: {sorted({r for r in listed if listed.count(r) > 1})}"
    code = emitted()
    assert sorted(set(listed) - code) == [], "the README names reasons the code never emits"
    assert sorted(code - set(listed)) == [], "the code emits reasons the README does not name"


def test_the_dlq_schema_names_only_emitted_reasons():
    spec = json.loads((REPO / "app" / "topics" / "tiktok-dlq.json").read_text())
    reason = spec["value_schema"]["properties"]["reason"]
    code = emitted()
    if "enum" in reason:
        assert set(reason["enum"]) == code
    named = set(re.findall(r"\b[a-z]+(?:_[a-z0-9]+)+\b", reason.get("description", "")))
    assert named <= code, f"the schema names reasons the code never emits: {sorted(named - code)}"
    for example in spec["examples"]["good"]:
        assert example["reason"] in code, example["reason"]
