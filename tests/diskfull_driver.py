"""Run two fetches on a tiny tmpfs, inside a private mount namespace (see test_reliability).

Invoked as ``unshare --mount [--map-root-user] python diskfull_driver.py CONFIG.json``: the
tmpfs exists only in this process's namespace, so nothing is left mounted on the machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path


def run(config: dict, out: Path) -> dict:  # type: ignore[type-arg]
    args = [sys.executable, "-m", "omar_bulk", "fetch", *config["args"], "--out", str(out)]
    env = {**os.environ, "OMAR_CERT_PASSWORD": config["password"]}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    files = {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".omar-bulk" not in p.parts
    }
    parts = [p.relative_to(out).as_posix() for p in out.rglob("*.part")]
    return {
        "code": done.returncode,
        "stderr": done.stderr,
        "files": files,
        "parts": parts,
        "journaled": journaled(out / ".omar-bulk" / "journal.sqlite3"),
        "report": report(out / ".omar-bulk" / "last-run.json"),
    }


def journaled(path: Path) -> list[str]:
    """The keys the journal stands for: rows that say downloaded, and files announced as
    landing (the next run settles those from the disk)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        keys = [row[0] for row in db.execute("SELECT path FROM items WHERE status='downloaded'")]
        with contextlib.suppress(sqlite3.OperationalError):  # a format without intents
            keys += [row[0] for row in db.execute("SELECT path FROM landing")]
        return keys
    finally:
        db.close()


def report(path: Path) -> dict:  # type: ignore[type-arg]
    try:
        data: dict = json.loads(path.read_text())  # type: ignore[type-arg]
    except (OSError, ValueError):
        return {}
    return data


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    mount = Path(config["mount"])
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={config['size']}", "tmpfs", str(mount)],
        check=True,
        timeout=30,
    )
    filler = mount / "filler"
    filler.write_bytes(b"\0" * config["filler"])
    out = mount / "out"
    first = run(config, out)
    filler.unlink()  # space freed
    second = run(config, out)
    Path(config["result"]).write_text(json.dumps({"first": first, "second": second}))


if __name__ == "__main__":
    main()
