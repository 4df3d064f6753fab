"""Reading policies from files, and the example policies shipped with the package."""

from __future__ import annotations

import json
from pathlib import Path

from policies.model import CoopPolicy
from policies.validation import FieldError, InvalidRequest, parse

EXAMPLES_DIR = Path(__file__).parent / "examples"


def load_policy(path: str | Path) -> CoopPolicy:
    """Load and validate a JSON policy file; errors name the file and each field's JSON path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"policy file {path}", [FieldError(f"byte {exc.start}", repr(exc.object[exc.start:exc.start + 8]),
                                                                 "a JSON file in UTF-8",
                                                                 str(EXAMPLES_DIR / "basic-cooperative.json"))]) from None
    except OSError as exc:
        raise InvalidRequest(f"policy file {path}", [FieldError("", str(path), "a readable JSON file",
                                                                 str(EXAMPLES_DIR / "basic-cooperative.json"))]) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"policy file {path}", [FieldError(
            f"line {exc.lineno} column {exc.colno}", repr(text[max(0, exc.pos - 20):exc.pos + 20]),
            f"valid JSON ({exc.msg})", '{"coop_id": "timebank:seattle"}')]) from None
    except RecursionError:  # nested deeper than the decoder's stack: bad input, not a crash
        raise InvalidRequest(f"policy file {path}", [FieldError("", "<JSON nested too deep>", "JSON nested at most "
                                                                 "a few dozen levels deep",
                                                                 '{"coop_id": "timebank:seattle"}')]) from None
    return parse(CoopPolicy, data, what=f"policy file {path}")


def example_names() -> list[str]:
    return sorted(p.stem for p in EXAMPLES_DIR.glob("*.json"))


def load_example(name: str) -> CoopPolicy:
    """One of the shipped examples by name, e.g. ``load_example("gdpr-compliant")``."""
    path = EXAMPLES_DIR / f"{name}.json"
    if not path.exists():
        raise InvalidRequest("example name", [FieldError("name", repr(name), ", ".join(example_names()),
                                                         "basic-cooperative")])
    return load_policy(path)
