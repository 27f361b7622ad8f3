"""Prints the runtime part of requirements.lock: the image installs this, with the lock's hashes.

    python runtime_requirements.py requirements.lock pyproject.toml > runtime.lock

requirements.lock is one lock for runtime and dev tools (`uv pip compile --extra dev`); the image
needs only the closure of `[project].dependencies`. uv annotates every entry with the packages
that require it (`# via ...`), so the closure is found by following those annotations from the
runtime roots. An annotation cannot say which extra pulled a package in, so this may keep a few
packages too many, never too few; pip's resolver and `pip check` in the Dockerfile verify that.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==")
_VIA_ONE = re.compile(r"^\s+# via (.+)$")
_VIA_MORE = re.compile(r"^\s+#\s{3}(.+)$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Entry:
    name: str
    lines: list[str] = field(default_factory=list)
    required_by: set[str] = field(default_factory=set)


def parse_lock(text: str) -> list[Entry]:
    entries: list[Entry] = []
    for line in text.splitlines():
        match = _ENTRY.match(line)
        if match:
            entries.append(Entry(normalize(match.group(1)), [line]))
            continue
        if not entries:
            continue
        current = entries[-1]
        via = _VIA_ONE.match(line) or _VIA_MORE.match(line)
        if via:
            # "servicecall-mesh (pyproject.toml)" names the project itself: not a package.
            parent = via.group(1).strip()
            if "(" not in parent:
                current.required_by.add(normalize(parent))
        elif line.strip().startswith("--hash="):
            current.lines.append(line)
    return entries


def runtime_roots(pyproject: str) -> set[str]:
    dependencies: list[str] = tomllib.loads(pyproject)["project"]["dependencies"]
    return {normalize(re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0]) for dep in dependencies}


def runtime_closure(entries: list[Entry], roots: set[str]) -> list[Entry]:
    names = {entry.name for entry in entries}
    missing = roots - names
    if missing:
        raise SystemExit(f"runtime dependencies not in the lock: {sorted(missing)}")
    keep = set(roots)
    changed = True
    while changed:
        changed = False
        for entry in entries:
            if entry.name not in keep and entry.required_by & keep:
                keep.add(entry.name)
                changed = True
    return [entry for entry in entries if entry.name in keep]


def render(entries: list[Entry]) -> str:
    header = "# Runtime closure of requirements.lock (k8s/image/runtime_requirements.py)\n"
    return header + "".join("\n".join(entry.lines) + "\n" for entry in entries)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    lock, pyproject = (Path(arg).read_text() for arg in argv)
    sys.stdout.write(render(runtime_closure(parse_lock(lock), runtime_roots(pyproject))))


if __name__ == "__main__":
    main(sys.argv[1:])
