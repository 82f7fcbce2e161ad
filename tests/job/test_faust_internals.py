"""The faust/mode/aiokafka private names ttbridge relies on (app/job/faust_internals.py): each
still exists and does what the module says, on the pinned versions — and nowhere else in app/
uses a private name of theirs. An upgrade that moves one of them fails here first."""
import re
from importlib.metadata import version
from pathlib import Path

import pytest

from app.job import faust_internals
from app.job.worker import build_app
from app.settings import load

REPO = Path(__file__).resolve().parents[2]


def test_the_versions_these_were_written_against_are_installed_and_pinned():
    pins = (REPO / "pyproject.toml").read_text()
    for package, pinned in (("faust-streaming", "0.15.3"), ("mode-streaming", "0.7.1"),
                            ("aiokafka", "0.14.0")):
        assert version(package) == pinned
        assert f'"{package}=={pinned}"' in pins


# A private attribute of a faust/mode/aiokafka object, or a private import from them.
PRIVATE = re.compile(r"from (faust|mode|aiokafka)[\w.]* import [^\n]*\b_[a-z]"
                     r"|\.(_get|_encode_key|_decode_value|_ensure_producer|_client|_current_event"
                     r"|_schedule_shutdown|_setup_spinner_handler|_db_for_partition)\b"
                     r"|producer\.buffer\b|\.(recovery|rocksdb_options|partition_path|offset_key)\b")


def private_uses() -> dict[str, int]:
    counts = {str(f.relative_to(REPO)): len(PRIVATE.findall(f.read_text()))
              for f in (REPO / "app").rglob("*.py")}
    return {f: n for f, n in counts.items() if n}


def test_private_names_appear_only_in_the_internals_module():
    uses = private_uses()
    assert set(uses) == {"app/job/faust_internals.py"}
    assert uses["app/job/faust_internals.py"] >= 2  # the pattern sees what it is meant to see


@pytest.fixture
def app(tmp_path):
    settings = load({"TIKTOK_PIXEL_CODE": "INTERNALS", "TIKTOK_ACCESS_TOKEN": "internals-token-0",
                     "TTBRIDGE_DATA_DIR": str(tmp_path)}, partitions=2)
    return build_app(settings, run_retrier=False)


def test_recovery_completed_is_the_recovery_services_event(app):
    assert faust_internals.recovery_completed(app) is False
    app.tables.recovery.completed.set()
    assert faust_internals.recovery_completed(app) is True
