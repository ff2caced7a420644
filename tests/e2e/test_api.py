"""The library's public surface: what ``import omar_bulk`` promises a scheduler."""

from __future__ import annotations

import ast
import asyncio
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import omar_bulk
from omar_bulk import Settings, fetch, load_manifest
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import ServerThread

ROOT = Path(__file__).resolve().parents[2]


def test_the_public_names_are_pinned() -> None:
    assert omar_bulk.__all__ == [
        "Defaults",
        "Item",
        "ItemResult",
        "NullObserver",
        "Observer",
        "OmarBulkError",
        "Plan",
        "RunResult",
        "Settings",
        "Status",
        "StopSignal",
        "Summary",
        "__version__",
        "fetch",
        "fetch_async",
        "load_manifest",
        "planned_urls",
    ]
    for name in omar_bulk.__all__:
        assert getattr(omar_bulk, name) is not None


def _submodules() -> list[str]:
    """Every module of the package but ``__main__``, which runs the command when imported."""
    return [
        m.name
        for m in pkgutil.walk_packages(omar_bulk.__path__, "omar_bulk.")
        if m.name != "omar_bulk.__main__"
    ]


def test_every_module_declares_its_public_names_and_each_exists() -> None:
    """``__all__`` in every module (``__main__`` read, not run): what a module offers is said
    once, sorted, and names only what the module defines."""
    for name in [*_submodules(), "omar_bulk.__main__"]:
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        declared = [
            node
            for node in tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            and "__all__"
            in ast.unparse(node.targets[0] if isinstance(node, ast.Assign) else node.target)
        ]
        assert declared, f"{name} declares no __all__"
        if name == "omar_bulk.__main__":
            continue
        module = importlib.import_module(name)
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert missing == [], f"{name}.__all__ names what it lacks: {missing}"


def test_no_submodule_shadows_a_public_name() -> None:
    """Importing every module leaves ``omar_bulk.fetch`` the function (it once became the
    engine module after the engine was imported)."""
    for name in _submodules():
        importlib.import_module(name)
    short = {name.split(".")[1] for name in _submodules()}
    assert not short & set(omar_bulk.__all__)
    assert callable(omar_bulk.fetch) and callable(omar_bulk.fetch_async)
    assert omar_bulk.fetch.__module__ == "omar_bulk.run"


def _imports(module: str) -> set[str]:
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.rpartition(".")[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            if target in _MODULES:
                found.add(target)
            for alias in node.names:
                if f"{target}.{alias.name}" in _MODULES:
                    found.add(f"{target}.{alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module in _MODULES:
            found.add(node.module)
    found.discard(module)
    found.discard("omar_bulk")  # the package itself: only __version__, lazily
    return found


_MODULES = set(_submodules())


def test_the_package_has_no_import_cycle() -> None:
    """Counting imports inside functions too: a cycle there is a cycle all the same."""
    graph = {m: _imports(m) for m in _MODULES}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def _library_example() -> str:
    text = (ROOT / "docs" / "library.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert match, "docs/library.md has no python example"
    return match.group(1)


def test_the_library_example_in_the_docs_runs_as_written_twice(
    tmp_path: Path, pki: TestPKI, server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the example's host, paths and secret source are pointed at the stand-in; the
    code is docs/library.md's. Twice in one process, as a scheduler would."""
    code = _library_example()
    manifest = tmp_path / "backfill.toml"
    manifest.write_text(
        '[[pull]]\nmeters = ["M1", "M2"]\nstart = 2024-01-01\nend = 2024-02-29\n',
        encoding="utf-8",
    )
    replacements = {
        '"https://omar-online.caiso.com:444/"': repr(server.base_url),
        'Path("backfill.toml")': f"Path({str(manifest)!r})",
        'Path("/data/omar")': f"Path({str(tmp_path / 'omar')!r})",
        'Path("/etc/omar/mycert.p12")': f"Path({str(pki.client_p12)!r})",
    }
    for old, new in replacements.items():
        assert old in code, f"the library example no longer contains {old}"
        code = code.replace(old, new)
    # The stand-in's CA, trusted the way a system trust store would be.
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    printed: list[tuple[object, ...]] = []
    namespace = {
        "read_secret": lambda _name: DEMO_PASSWORD,
        "print": lambda *args: printed.append(args),
    }
    exec(compile(code, "docs/library.md", "exec"), dict(namespace))
    exec(compile(code, "docs/library.md", "exec"), dict(namespace))
    first, second = printed
    assert first[0] == 0 and second[0] == 0
    assert first[1].downloaded == 4 and second[1].skipped == 4  # type: ignore[attr-defined]
    assert len(server.state.downloads()) == 4


M1_Q1 = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-03-31"]


def test_fetch_called_inside_an_event_loop_says_to_use_fetch_async(
    pki: TestPKI, server: ServerThread, tmp_path: Path
) -> None:
    """README: "fetch(settings) # blocking; fetch_async() for event loops". Called from a
    coroutine, fetch raised asyncio's bare "Cannot run the event loop while another loop is
    running" and left a never-awaited ``fetch_async`` coroutine warning behind."""
    manifest = tmp_path / "m.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-01-01\nend = 2024-01-31\n')
    settings = Settings(
        plan=load_manifest(manifest),
        base_url=server.base_url,
        out_dir=tmp_path / "out",
        cert=pki.client_p12,
        ca_bundle=pki.ca,
        password=lambda _what: DEMO_PASSWORD,
    )

    async def inside() -> str:
        try:
            fetch(settings)
        except Exception as exc:  # the message is what is under test
            return str(exc)
        return ""

    assert "fetch_async" in asyncio.run(inside())
