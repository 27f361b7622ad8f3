"""Wrote tests/golden/orchestrator/state_v1/*.json with the codec of the day (format version
1: the reflective codec, no version field), from the values in
tests/stored_state_cases.py.

Run once, at commit bb60b5d ("golden files of the stored state as written today (v1)", before the
codec changed; the v1 files are frozen since: they stand for rows already in databases, which
no later code can write any more. Kept as the record of how they were made:

    PYTHONPATH=.:gen .venv/bin/python tests/golden/orchestrator/make_state_v1.py
"""

from __future__ import annotations

import json

from orchestrator.adapters import codec
from tests.stored_state_cases import CASES, GOLDEN


def main() -> None:
    if getattr(codec, "FORMAT_VERSION", 1) != 1:
        raise SystemExit("the version 1 golden files are frozen: today's codec writes a newer one")
    out = GOLDEN / "state_v1"
    out.mkdir(parents=True, exist_ok=True)
    for name, state in CASES.items():
        text = json.dumps(codec.encode(state), indent=2, sort_keys=True, ensure_ascii=False)
        (out / f"{name}.json").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
