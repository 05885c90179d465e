"""A repository's own AgentConfig subclass: imported from installed packages only."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from configsync.embedded import RedisServer
from configsync.errors import SchemaImportError
from configsync.repo import FolderSource
from configsync.schema import agent_json_schema, load_agent_model
from configsync.store import Store
from configsync.validate import check_tree

from .conftest import (
    SETTINGS,
    SUPPORT,
    GitTree,
    Remote,
    git,
    spawn_daemon,
    wait_until,
    write_tree,
)

MODELS = """\
from pydantic import Field

from configsync import AgentConfig


class SupportAgent(AgentConfig):
    framework: str = "langgraph"
    max_turns: int = Field(10, ge=1)


class NotAnAgent:
    pass
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable package outside any config repo, as if pip-installed."""
    name = f"acme_{uuid.uuid4().hex[:8]}"
    write_tree(tmp_path / "site", {f"{name}/__init__.py": "", f"{name}/models.py": MODELS})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield name
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def lines(root: Path) -> list[str]:
    report = check_tree(FolderSource(root), repo_root=root)
    return [f"{d.path}:{d.line}:{d.column}: {d.message}" for d in report.diagnostics]


def test_custom_fields_are_validated(tmp_path: Path, package: str) -> None:
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + f"schema: {package}.models:SupportAgent\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\nmax_turns: 0\nframwork: x\n",
        "agents/b.yaml": "system_prompt: hi\nmodel: gpt-4o\nframework: crewai\n",
    })
    assert lines(root) == [
        "agents/a.yaml:3:12: max_turns: must be at least 1 (got 0)",
        "agents/a.yaml:4:1: framwork: unknown key, did you mean `framework`?",
    ]
    config = check_tree(FolderSource(root)).configs["b"]
    assert (config["framework"], config["max_turns"]) == ("crewai", 10)


PORTABLE_MODELS = """\
import math
from typing import Any

from pydantic import Field

from configsync import AgentConfig


class Agent(AgentConfig):
    ratio: float = 0.5
    extra: dict[str, Any] = Field(default_factory=dict)
    budget: float = math.inf
"""


def test_custom_fields_hold_only_numbers_json_carries(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A float field takes .nan (pydantic allows it), an Any field would turn it into null
    silently, and a model's own default can be infinite: each is an error, never stored."""
    name = f"portable_{uuid.uuid4().hex[:8]}"
    write_tree(tmp_path / "site", {f"{name}.py": PORTABLE_MODELS})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    no_json = ("has no JSON form: JSON readers in other languages cannot represent it; quote "
               "it to keep it as text")
    try:
        root = write_tree(tmp_path / "repo", {
            "configsync.yaml": SETTINGS + f"schema: {name}:Agent\n",
            "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\nbudget: 1\nratio: .nan\n"
                             "extra:\n  deep: [1, {x: -.inf}]\n  big: 9007199254740992\n",
            "agents/b.yaml": "system_prompt: hi\nmodel: gpt-4o\n",
            "agents/c.yaml": "system_prompt: hi\nmodel: gpt-4o\nbudget: 9007199254740991\n"})
        assert lines(root) == [
            f"agents/a.yaml:4:8: ratio: .nan {no_json}",
            "agents/a.yaml:6:17: extra.deep[1].x: -.inf " + no_json,
            "agents/a.yaml:7:8: extra.big: 9007199254740992 is outside ±(2^53-1): JSON readers "
            "in other languages (JavaScript, Go's float64) cannot represent it exactly; quote it "
            "to keep it as text",
            "agents/b.yaml:1:1: budget: .inf has no JSON form: JSON readers in other languages "
            f"cannot represent it; {name}:Agent made it: change its default or validator",
        ]
        assert list(check_tree(FolderSource(root)).configs) == ["c"]
    finally:
        sys.modules.pop(name, None)


@pytest.mark.parametrize(("ref", "message"), [
    ("no_such_pkg.models:X", "schema: cannot import `no_such_pkg.models`: No module named "
                             "'no_such_pkg'"),
    ("{pkg}.models:Missing", "schema: `{pkg}.models` has no `Missing`"),
    ("{pkg}.models:NotAnAgent", "schema: `{pkg}.models:NotAnAgent` is not a subclass of "
                                "configsync.AgentConfig"),
])
def test_bad_schema_reference(tmp_path: Path, package: str, ref: str, message: str) -> None:
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + f"schema: {ref.format(pkg=package)}\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\n"})
    assert lines(root) == [f"configsync.yaml:6:9: {message.format(pkg=package)}"]


def test_never_imported_from_the_repository(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"evil_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + f"schema: {name}:Agent\n",
        f"{name}.py": f"open({str(marker)!r}, 'w').close()\n"
                      "from configsync import AgentConfig as Agent\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\n"})
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.syspath_prepend("")
    assert lines(root) == [
        f"configsync.yaml:6:9: schema: cannot import `{name}`: No module named '{name}'"]
    assert not marker.exists()
    assert name not in sys.modules


def test_module_already_imported_from_the_repository_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"inrepo_{uuid.uuid4().hex[:8]}"
    root = write_tree(tmp_path / "repo", {
        f"{name}.py": "from configsync import AgentConfig as Agent\n"})
    monkeypatch.syspath_prepend(str(root))
    __import__(name)
    try:
        with pytest.raises(SchemaImportError, match="inside the repository being validated"):
            load_agent_model(f"{name}:Agent", root)
    finally:
        del sys.modules[name]


def test_json_schema_of_a_subclass(package: str) -> None:
    schema = agent_json_schema(load_agent_model(f"{package}.models:SupportAgent"))
    assert schema["properties"]["max_turns"]["minimum"] == 1
    assert "required" not in schema


def test_schema_subclass_without_repo_root(package: str) -> None:
    model = load_agent_model(f"{package}.models:SupportAgent")
    assert model.__name__ == "SupportAgent"
    assert load_agent_model(None).__name__ == "AgentConfig"


def test_a_venv_committed_into_the_repository_is_not_trusted(tmp_path: Path) -> None:
    """The README's venv lives in the repository's checkout, so its site-packages are trusted;
    but a pull request can commit `.venv/lib/.../evilmod.py` (a checkout then makes the venv
    around it). Site-packages that the repository tracks files in are not trusted."""
    import os
    import subprocess
    import sysconfig

    from .conftest import GitTree, git

    repo = GitTree(tmp_path / "victim")
    marker = tmp_path / "pwned"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(repo.root / ".venv")],
                   check=True)
    python = repo.root / ".venv" / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    here = sysconfig.get_paths()["purelib"]  # configsync and its dependencies, for that venv
    (site / "outside.pth").write_text("\n".join([here, str(Path(__file__).parents[1])]) + "\n")
    (site / "evilmod.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nfrom configsync import AgentConfig\n"
        "class Model(AgentConfig):\n    pass\n")
    repo.write({"configsync.yaml": SETTINGS + "schema: evilmod:Model\n",
                "agents/a.yaml": "system_prompt: A\nmodel: gpt-4o\n"})
    # Python 3.13's venv writes a `.gitignore` of `*` into it, which `git add -A` obeys; a pull
    # request commits the files whatever made its venv (an older Python, `git add -f`).
    git(repo.root, "add", "-f", ".venv")
    repo.commit("a pull request that commits into the venv")
    tracked = git(repo.root, "ls-files", ".venv").splitlines()
    assert str((site / "evilmod.py").relative_to(repo.root)) in tracked
    for argv in (["validate", "."], ["validate", ".", "--ref", "HEAD"]):
        proc = subprocess.run([str(python), "-m", "configsync", *argv], cwd=repo.root,
                              capture_output=True, text=True, env={**os.environ}, timeout=60)
        assert not marker.exists(), proc.stderr
        assert proc.returncode == 1 and "cannot import `evilmod`" in proc.stdout, proc


# Issue 17: whatever a named module does when imported, the process that reads the repository
# goes on, and the commit (or the validation) is refused with one line.
AGENT_AFTER = "\nfrom configsync import AgentConfig as Agent\n"
MISBEHAVING = {
    "raises SystemExit": ("raise SystemExit(2)" + AGENT_AFTER,
                          "cannot import `{m}`: importing it raised SystemExit(2)"),
    "raises KeyboardInterrupt": ("raise KeyboardInterrupt" + AGENT_AFTER,
                                 "cannot import `{m}`: importing it raised KeyboardInterrupt"),
    "raises GeneratorExit": ("raise GeneratorExit('bye')" + AGENT_AFTER,
                             "cannot import `{m}`: importing it raised GeneratorExit(bye)"),
    "raises a BaseException subclass": (
        "class Odd(BaseException):\n    pass\nraise Odd()" + AGENT_AFTER,
        "cannot import `{m}`: importing it raised Odd"),
    "runs a CLI's main": ("import sys\nsys.exit(main())" + AGENT_AFTER,
                          "cannot import `{m}`: name 'main' is not defined"),
    "ends the process": ("import os\nos._exit(7)" + AGENT_AFTER,
                         "cannot import `{m}`: importing it ended the process (exit status 7)"),
    "kills itself": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)" + AGENT_AFTER,
                     "cannot import `{m}`: importing it ended the process (killed by signal 9)"),
    "reads stdin": ("input('password: ')" + AGENT_AFTER,
                    "cannot import `{m}`: EOF when reading a line"),
    "prints": ("print('hello from the schema')" + AGENT_AFTER,
               "`{m}` writes to standard output when imported; a schema module must only "
               "define classes"),
    # a module that is no schema (`this`, `antigravity`): never imported here at all
    "holds no such class": ("import sys\n", "`{m}` has no `Agent`"),
    "holds something else under the name": (
        "Agent = dict\n", "`{m}:Agent` is not a subclass of configsync.AgentConfig"),
    "starts a thread": ("import threading, time\n"
                        "threading.Thread(target=time.sleep, args=(60,)).start()" + AGENT_AFTER,
                        "`{m}` starts threads when imported; a schema module must only define "
                        "classes"),
}


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path outside any config repository, as if pip-installed into."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for module in set(sys.modules) - before:
        del sys.modules[module]


@pytest.mark.parametrize("kind", sorted(MISBEHAVING))
def test_a_module_that_misbehaves_when_imported_is_refused_and_never_runs_here(
        tmp_path: Path, site: Path, kind: str) -> None:
    body, message = MISBEHAVING[kind]
    name = f"bad_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "ran-here"
    (site / f"{name}.py").write_text(f"import os\nif os.getpid() == {os.getpid()}:\n"
                                     f"    open({str(marker)!r}, 'w').close()\n" + body)
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + f"schema: {name}:Agent\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\n"})
    assert lines(root) == [f"configsync.yaml:6:9: schema: {message.format(m=name)}"]
    assert not marker.exists()  # tried in a child process only
    assert name not in sys.modules


def test_an_import_that_never_ends_is_refused_at_the_deadline(tmp_path: Path,
                                                               site: Path) -> None:
    name = f"hangs_{uuid.uuid4().hex[:8]}"
    started = tmp_path / "started"
    (site / f"{name}.py").write_text(f"import time\nopen({str(started)!r}, 'w').close()\n"
                                     "while True:\n    time.sleep(1)\n")
    with pytest.raises(SchemaImportError) as caught:
        load_agent_model(f"{name}:Agent", timeout=1)
    assert str(caught.value) == f"cannot import `{name}`: importing it did not end within 1 s"
    assert started.exists()  # the child did start it, and was killed
    assert name not in sys.modules


@pytest.mark.parametrize("ref", ["configsync.__main__:AgentConfig", "__main__:AgentConfig",
                                 "pip.__main__:X", "configsync.__main__.x:Y"])
def test_a_programs_main_module_is_refused_by_name(tmp_path: Path, ref: str) -> None:
    module = ref.partition(":")[0]
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + f"schema: {ref}\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\n"})
    assert lines(root) == [
        f"configsync.yaml:6:9: schema: `{module}` is a program's `__main__`, which runs when "
        "imported; name the module that defines the class"]
    assert "configsync.__main__" not in sys.modules


def test_the_operators_allow_list_decides_which_modules_a_repository_may_name(
        tmp_path: Path, package: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = f"{package}.models:SupportAgent"
    monkeypatch.setenv("CONFIGSYNC_SCHEMA_MODULES", f"other_pkg, {package}x")
    with pytest.raises(SchemaImportError) as caught:
        load_agent_model(ref)
    assert str(caught.value) == (
        f"`{package}.models` is not in the packages this machine allows for schemas "
        f"(CONFIGSYNC_SCHEMA_MODULES=other_pkg,{package}x)")
    assert f"{package}.models" not in sys.modules
    for allowed in (package, f"{package}.models", f"other, {package} ,"):
        monkeypatch.setenv("CONFIGSYNC_SCHEMA_MODULES", allowed)
        assert load_agent_model(ref).__name__ == "SupportAgent"


def test_validate_says_a_refused_schema_in_one_line(tmp_path: Path) -> None:
    """The CLI path: `configsync validate` in a process of its own, exit 1, no traceback."""
    import subprocess

    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + "schema: configsync.__main__:AgentConfig\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\n"})
    proc = subprocess.run([sys.executable, "-m", "configsync", "validate", str(root)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 1, proc
    assert proc.stdout.splitlines()[0] == (
        f"{root}/configsync.yaml:6:9: error: schema: `configsync.__main__` is a program's "
        "`__main__`, which runs when imported; name the module that defines the class"), proc
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stdout + proc.stderr


@pytest.mark.slow  # a real daemon, restarted
def test_a_schema_that_stops_its_importer_is_a_rejected_commit_for_the_daemon(
        tmp_path: Path, remote: Remote, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 item 3: `schema: configsync.__main__:AgentConfig` re-ran the CLI inside the
    daemon, whose SystemExit stopped it, and again at every start, `git revert` or not."""
    import signal
    import subprocess

    name = f"exits_{uuid.uuid4().hex[:8]}"
    write_tree(tmp_path / "site", {f"{name}.py": "import os\nos._exit(2)\n",
                                   f"{name}_sys.py": "raise SystemExit(2)\n"})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(tmp_path / "site"), str(Path(__file__).parents[1])]))
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    good = git(remote.work, "rev-parse", "HEAD").strip()
    bad = []
    for ref in ("configsync.__main__:AgentConfig", f"{name}:Agent", f"{name}_sys:Agent"):
        bad.append(remote.commit_push(f"schema {ref}", {
            "configsync.yaml": SETTINGS + f"schema: {ref}\n",
            "agents/a.yaml": "system_prompt: You are A, now.\nmodel: gpt-4o\n"}))
    fixed = remote.commit_push("back to no schema", {"configsync.yaml": SETTINGS})

    def run() -> subprocess.Popen[bytes]:
        return spawn_daemon(remote, redis_server.url, "test", tmp_path / "wd")

    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0

    proc = run()  # a first start walks every bad commit (the rebuild)
    try:
        wait_until(lambda: store.state().get("commit") == fixed or proc.poll() is not None)
        assert proc.poll() is None
    finally:
        stop(proc)
    assert store.current()["a"].config["system_prompt"] == "You are A, now."
    assert store.current()["a"].version == 2
    log = (tmp_path / "wd" / "daemon.log").read_text()
    rejected = [line for line in log.splitlines() if "event=rejected" in line]
    assert [line.split("commit=")[1][:12] for line in rejected] == [b[:12] for b in bad]
    assert "is a program's `__main__`" in rejected[0]
    assert "ended the process (exit status 2)" in rejected[1]
    assert "importing it raised SystemExit(2)" in rejected[2]
    assert "Traceback" not in log

    store.redis.flushall()  # Redis loses its data; the daemon also walks them one by one live
    git(remote.work, "reset", "-q", "--hard", good)
    remote.push(force=True)
    proc = run()
    try:
        wait_until(lambda: store.state().get("commit") == good)
        for i, ref in enumerate(["configsync.__main__:AgentConfig", f"{name}:Agent",
                                 f"{name}_sys:Agent"]):
            sha = remote.commit_push(f"again {i}",
                                     {"configsync.yaml": SETTINGS + f"schema: {ref}\n"})
            wait_until(lambda sha=sha: store.state().get("seen") == sha or  # type: ignore[misc]
                       proc.poll() is not None)
            assert proc.poll() is None and store.state()["commit"] == good
            assert json.loads(store.state()["last_error"])["file"] == "configsync.yaml"
        head = remote.commit_push("revert", {"configsync.yaml": SETTINGS})
        wait_until(lambda: store.state().get("commit") == head)
    finally:
        stop(proc)


def test_a_standard_module_that_prints_is_refused_without_printing_here(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + "schema: this:Agent\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\n"})
    if "this" in sys.modules:
        pytest.skip("`this` was imported by something else in this process")
    assert lines(root) == ["configsync.yaml:6:9: schema: `this` writes to standard output when "
                           "imported; a schema module must only define classes"]
    assert capfd.readouterr().out == "" and "this" not in sys.modules


@pytest.mark.slow  # six CLI processes
@pytest.mark.parametrize("ref", [None, "pydantic:BaseSettings"], ids=["ends", "lazy-name"])
def test_every_command_that_reads_a_tree_survives_a_schema_that_ends_its_importer(
        git_tree: GitTree, tmp_path: Path, redis_server: RedisServer, ref: str | None) -> None:
    """The kind of item 3: each path that imports `schema:` (validate, diff, history,
    rollback, status) says so or skips the commit; none ends as the module asks (exit 5), nor
    with a traceback (red team finding 1: `pydantic:BaseSettings` raised at the lookup)."""
    import subprocess

    name = f"ends_{uuid.uuid4().hex[:8]}"
    write_tree(tmp_path / "site", {f"{name}.py": "import os\nos._exit(5)\n"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path / "site"), str(Path(__file__).parents[1])])}
    first = git(git_tree.root, "rev-parse", "HEAD").strip()
    git_tree.write({"configsync.yaml": SETTINGS + f"schema: {ref or name + ':Agent'}\n",
                    "agents/support.yaml": SUPPORT.replace("0.3", "0.4")})
    git_tree.commit("a schema that ends the process")
    said = (f"cannot import `{name}`: importing it ended the process (exit status 5)"
            if ref is None else "schema: `pydantic` has no `BaseSettings`")
    json_out = subprocess.run([sys.executable, "-m", "configsync", "validate", ".", "--format",
                               "json"], cwd=git_tree.root, capture_output=True, text=True,
                              timeout=60, env=env)
    assert json_out.returncode == 1 and said in json.loads(json_out.stdout)[0]["message"]
    for argv, codes in [(["validate", "."], {1}), (["validate", ".", "--ref", "HEAD"], {1}),
                        (["diff", first, "HEAD"], {1}), (["history", "support"], {0}),
                        (["rollback", "support", "--to", "1", "--branch", "back"], {0, 1}),
                        (["status", "--redis", redis_server.url], {0, 1, 2})]:
        proc = subprocess.run([sys.executable, "-m", "configsync", *argv], cwd=git_tree.root,
                              capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode in codes, (argv, proc)
        assert "Traceback" not in proc.stderr, (argv, proc.stderr)
        if argv[0] in ("validate", "diff"):
            assert said in proc.stdout, (argv, proc.stdout)


# -- issue 17, the red team's findings against items 3 and 4 ----------------------------------

LAZY_NAMES = ["pydantic:BaseSettings", "pydantic:ConstrainedInt", "pydantic:ConstrainedStr",
              "pydantic:Required", "pydantic:NoneStr", "pydantic:stricturl", "pydantic:Protocol",
              "pydantic.types:ConstrainedInt", "pydantic:PyObject", "pydantic.fields:Undefined"]


@pytest.mark.parametrize("ref", LAZY_NAMES)
def test_a_name_an_imported_module_resolves_by_raising_is_a_schema_error(
        tmp_path: Path, ref: str) -> None:
    """Finding 1: pydantic's module ``__getattr__`` raises PydanticImportError for names it
    moved away; the lookup ran it, uncaught (the daemon exited 3, validate printed nothing)."""
    import pydantic.types  # noqa: F401 - already imported here, as in the daemon

    module, _, name = ref.partition(":")
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + f"schema: {ref}\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\n"})
    assert lines(root) == [f"configsync.yaml:6:9: schema: `{module}` has no `{name}`"]


GETATTR_MODULES = {
    "raises": "def __getattr__(name):\n    raise RuntimeError('no ' + name)\n",
    "exits": "import sys\ndef __getattr__(name):\n    sys.exit(4)\n",
    "interrupts": "def __getattr__(name):\n    raise KeyboardInterrupt\n",
    "lazily provides": "def __getattr__(name):\n    from configsync import AgentConfig\n"
                       "    return type(name, (AgentConfig,), {})\n",
}


@pytest.mark.parametrize("imported", [False, True], ids=["not-imported", "imported"])
@pytest.mark.parametrize("kind", sorted(GETATTR_MODULES))
def test_a_module_getattr_never_runs_when_a_schema_is_looked_up(
        tmp_path: Path, site: Path, kind: str, imported: bool) -> None:
    """The kind of finding 1: a class is looked up in the module's own namespace only, so no
    module ``__getattr__`` runs here, whatever it does (a lazily made class is refused too)."""
    name = f"lazy_{uuid.uuid4().hex[:8]}"
    (site / f"{name}.py").write_text(GETATTR_MODULES[kind])
    if imported:
        __import__(name)
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + f"schema: {name}:Agent\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\n"})
    assert lines(root) == [f"configsync.yaml:6:9: schema: `{name}` has no `Agent`"]


def test_whatever_resolving_a_schema_raises_is_a_schema_error(tmp_path: Path,
                                                              site: Path) -> None:
    """Finding 1's rule: everything `schema:` resolution does is guarded (here the subclass
    check itself raises, through a metaclass)."""
    name = f"meta_{uuid.uuid4().hex[:8]}"
    (site / f"{name}.py").write_text(
        "class Meta(type):\n    @property\n    def __mro__(cls):\n        raise SystemExit(3)\n"
        "    def __subclasscheck__(cls, other):\n        raise SystemExit(3)\n"
        "class Base(metaclass=Meta):\n    pass\n"
        "def __getattr__(name):\n    raise SystemExit(3)\n")
    __import__(name)
    for cls in ("Base", "Missing"):
        with pytest.raises(SchemaImportError):
            load_agent_model(f"{name}:{cls}")


def test_a_validator_of_the_schema_model_that_raises_is_said_on_the_agent(
        tmp_path: Path, site: Path) -> None:
    name = f"val_{uuid.uuid4().hex[:8]}"
    (site / f"{name}.py").write_text(
        "from pydantic import field_validator\nfrom configsync import AgentConfig\n"
        "class Agent(AgentConfig):\n    @field_validator('model')\n    @classmethod\n"
        "    def check(cls, v):\n        raise RuntimeError('boom')\n")
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + f"schema: {name}:Agent\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\n"})
    assert lines(root) == [f"agents/a.yaml:1:1: schema: `{name}:Agent` raised RuntimeError "
                           "validating this agent: boom"]


@pytest.mark.parametrize(("ref", "message"), [
    ("configsync.holdings:_Lenient", "`configsync.holdings:_Lenient` is a private name"),
    ("acme._models:Agent", "`acme._models:Agent` is a private name"),
    ("_acme.models:Agent", "`_acme.models:Agent` is a private name"),
    ("acme:__class__", "`acme:__class__` is a private name"),
    ("configsync:AgentConfig", "`configsync:AgentConfig` is part of configsync itself"),
    ("configsync.holdings:Holding", "`configsync.holdings:Holding` is part of configsync "
                                    "itself"),
    ("configsync.model:RepoSettings", "`configsync.model:RepoSettings` is part of configsync "
                                      "itself"),
])
def test_private_names_and_configsyncs_own_classes_are_refused(
        tmp_path: Path, ref: str, message: str) -> None:
    """Finding 7: `schema: configsync.holdings:_Lenient` turned the unknown-key check off."""
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + f"schema: {ref}\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\nsurprise: 1\n"})
    found = lines(root)
    assert len(found) == 2 and found[0].startswith("agents/a.yaml:3:1: surprise: unknown key")
    assert found[1].startswith(f"configsync.yaml:6:9: schema: {message}"), found


def test_the_default_model_may_be_named(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + "schema: configsync.model:AgentConfig\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\n"})
    assert lines(root) == []


@pytest.mark.parametrize("value", ["", " ", ",", " , ,"])
def test_an_allow_list_that_names_no_package_is_a_usage_error(
        tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 6: a set CONFIGSYNC_SCHEMA_MODULES with no package in it allowed everything."""
    import subprocess

    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + "schema: this:Agent\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\n"})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),
           "CONFIGSYNC_SCHEMA_MODULES": value}
    for argv in (["validate", str(root)], ["sync", "--repo", str(root), "--once",
                                           "--redis", "redis://127.0.0.1:1"]):
        proc = subprocess.run([sys.executable, "-m", "configsync", *argv], capture_output=True,
                              text=True, timeout=60, env=env)
        assert proc.returncode == 2, proc
        assert proc.stderr == (f"configsync: error: CONFIGSYNC_SCHEMA_MODULES is set but names "
                               f"no package ({value!r}); name the packages schemas may come "
                               "from (comma-separated), or unset it\n"), proc
    monkeypatch.setenv("CONFIGSYNC_SCHEMA_MODULES", value)  # the library: a schema error
    with pytest.raises(SchemaImportError, match="names no package"):
        load_agent_model("this:Agent")


def test_a_module_is_tried_once_whatever_class_is_named(tmp_path: Path, site: Path) -> None:
    """Finding 3: a refused hanging import cost a deadline for every class name (`m:C`,
    `m:D`, `m:E`): the verdict on what a module's import does is kept per module."""
    name = f"hangs_{uuid.uuid4().hex[:8]}"
    runs = tmp_path / "runs"
    (site / f"{name}.py").write_text(f"import time\nopen({str(runs)!r}, 'a').write('x')\n"
                                     "while True:\n    time.sleep(1)\n")
    for cls in ("C", "D", "E"):
        with pytest.raises(SchemaImportError, match="did not end within 1 s"):
            load_agent_model(f"{name}:{cls}", timeout=1)
    assert runs.read_text() == "x"  # one trial child in all
    good = f"good_{uuid.uuid4().hex[:8]}"
    (site / f"{good}.py").write_text(f"open({str(tmp_path / 'good')!r}, 'a').write('x')\n"
                                     "from configsync import AgentConfig\n"
                                     "class A(AgentConfig):\n    pass\nclass B(A):\n    pass\n")
    for cls, fine in (("Missing", False), ("A", True), ("B", True)):
        if fine:
            assert load_agent_model(f"{good}:{cls}").__name__ == cls
        else:
            with pytest.raises(SchemaImportError, match="has no `Missing`"):
                load_agent_model(f"{good}:{cls}")
    assert (tmp_path / "good").read_text() == "xx"  # the trial child, then this process


def test_the_heartbeat_moves_while_a_trial_import_runs(site: Path) -> None:
    from configsync import schema

    name = f"hangs_{uuid.uuid4().hex[:8]}"
    (site / f"{name}.py").write_text("import time\nwhile True:\n    time.sleep(1)\n")
    beats: list[int] = []
    schema.tick_during_trials(lambda: beats.append(1))
    try:
        with pytest.raises(SchemaImportError):
            load_agent_model(f"{name}:Agent", timeout=3.5)
    finally:
        schema.tick_during_trials(None)
    assert len(beats) >= 2


def test_the_trial_kills_what_the_import_started(tmp_path: Path, site: Path) -> None:
    """Finding 5: the trial child's whole process group goes at the end (a process the import
    started and left running is killed; one that left the group is not: README says so)."""
    name = f"spawns_{uuid.uuid4().hex[:8]}"
    pidfile = tmp_path / "pid"
    (site / f"{name}.py").write_text(
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n")
    with pytest.raises(SchemaImportError, match="has no `Agent`"):
        load_agent_model(f"{name}:Agent")
    pid = int(pidfile.read_text())

    def gone() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().split(") ")[1].startswith("Z")
        except FileNotFoundError:
            return True

    wait_until(gone, timeout=10)


@pytest.mark.slow  # a real daemon, Redis flushed under it
def test_a_schema_whose_lookup_raises_or_a_check_that_crashes_rejects_the_commit(
        tmp_path: Path, remote: Remote, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 1: `schema: pydantic:BaseSettings` killed the daemon (exit 3) at every start,
    `git revert` or not. Now it is a rejected commit; and whatever else checking a commit
    raises (here a model whose model_dump raises: a bug, said with its traceback in the log)
    rejects that commit too, live and in the rebuild's walk, never stopping the daemon."""
    import signal

    name = f"bug_{uuid.uuid4().hex[:8]}"
    write_tree(tmp_path / "site", {f"{name}.py": (
        "from configsync import AgentConfig\nclass Agent(AgentConfig):\n"
        "    def model_dump(self, *args, **kwargs):\n        raise RuntimeError('boom')\n")})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(tmp_path / "site"), str(Path(__file__).parents[1])]))
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    refs = ["pydantic:BaseSettings", "pydantic.types:ConstrainedInt", f"{name}:Agent"]
    bad = [remote.commit_push(f"schema {ref}", {
        "configsync.yaml": SETTINGS + f"schema: {ref}\n",
        "agents/a.yaml": "system_prompt: You are A, now.\nmodel: gpt-4o\n"}) for ref in refs]
    fixed = remote.commit_push("back to no schema", {"configsync.yaml": SETTINGS})
    proc = spawn_daemon(remote, redis_server.url, "test", tmp_path / "wd")
    try:
        wait_until(lambda: store.state().get("commit") == fixed or proc.poll() is not None)
        assert proc.poll() is None
        store.redis.flushall()  # the rebuild walks them again
        wait_until(lambda: store.state().get("commit") == fixed or proc.poll() is not None)
        assert proc.poll() is None
        sha = remote.commit_push("again", {"configsync.yaml": SETTINGS
                                           + "schema: pydantic:BaseSettings\n"})
        wait_until(lambda: store.state().get("seen") == sha or proc.poll() is not None)
        assert proc.poll() is None and store.state()["commit"] == fixed
        assert json.loads(store.state()["last_error"])["message"] == (
            "schema: `pydantic` has no `BaseSettings`")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert store.current()["a"].config["system_prompt"] == "You are A, now."
    log = (tmp_path / "wd" / "daemon.log").read_text()
    rejected = [line for line in log.splitlines() if "event=rejected" in line]
    assert [line.split("commit=")[1][:12] for line in rejected] == [
        b[:12] for b in bad] * 2 + [sha[:12]], log
    assert "`pydantic` has no `BaseSettings`" in rejected[0]
    assert "`pydantic.types` has no `ConstrainedInt`" in rejected[1]
    assert "checking this commit failed (RuntimeError: boom)" in rejected[2]
    crashed = [line for line in log.splitlines() if "event=check_failed" in line]
    assert len(crashed) == 2 and all(f"commit={bad[2][:12]}" in c for c in crashed)
    assert log.count("Traceback") == 2 and "raise RuntimeError('boom')" in log
