"""Real nodes for the tests: ``zmanager up`` from ``$ZMANAGER_BIN``.

Each node gets a fresh temporary directory (short, under the system's temp
directory: ipc paths are limited to about 100 bytes) holding its
configuration, its catalog (the flows below, on the components linked
into every node: Text, Greeter, Echo, Probe), its data directory (the
journal: on, as by default) and its ipc sockets, and a log file. The
endpoints are ipc files, so that a node restarted on the same directory
is where its services expect it, and no port can be taken by another
test. The node runs in a process group of its own: :meth:`Node.kill`
SIGKILLs the node and its workers at once, as a crash of the machine
would.

Without ``ZMANAGER_BIN`` the tests are skipped, except when ``CI`` is set,
where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

FLOWS = """\
[Greeting]
?Greeting?Push
?Greeting?trim
?Greeting?greet
?Greeting?upper
??done

[Echo]
?Echo?Push
?Echo?echo
??done

; Probe.record appends a line to a file per call (how many times it ran),
; sleeps sleep_ms, then echoes.
[Record]
?Record?Push
?Record?record
??done

[Fail]
?Fail?Push
?Fail?fail
??done

[Announce]
?Announce?Push
Subject?Announce@PUBLISH?announced
??done

; @PUBLISH a question, wait at @ASYNC for a service's answer, echo it.
[Ask]
?Ask?Push
Subject?Ask@PUBLISH?question
?Ask@ASYNC?question_response
?Ask?echo
??done

; The middle step is given to service `moderator` (protocol.md §7c).
[Review]
?Review?Push
?Review?trim
?Review?moderate
?Review?upper
??done
"""

MAPPINGS = """\
[actionmapping]
?Greeting?trim = Text.trim
?Greeting?greet = Greeter.greet
?Greeting?upper = Text.upper
?Echo?echo = Echo.echo
?Record?record = Probe.record
?Fail?fail = Probe.fail
?Ask?echo = Echo.echo
?Review?trim = Text.trim
?Review?upper = Text.upper

[services]
?Review?moderate = moderator
"""


def zmanager_bin() -> str:
    path = os.environ.get("ZMANAGER_BIN")
    if not path:
        message = ("ZMANAGER_BIN is not set: point it at a built `zmanager` "
                   "(cargo build -p zmanager-cli; tests/tests/python_client.rs sets it)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if not os.access(path, os.X_OK):
        pytest.fail(f"ZMANAGER_BIN={path} is not an executable")
    return path


class Node:
    """A ``zmanager up`` in ``dir``; :meth:`start`, :meth:`kill`,
    :meth:`restart`, :meth:`stop`."""

    def __init__(self, directory: Path, *, extra: str = "", security: str = "") -> None:
        self.dir = directory
        self.bin = zmanager_bin()
        (directory / "flows").mkdir(exist_ok=True)
        (directory / "mappings").mkdir(exist_ok=True)
        (directory / "flows" / "test.ini").write_text(FLOWS)
        (directory / "mappings" / "test.ini").write_text(MAPPINGS)
        self.intake = f"ipc://{directory}/intake.sock"
        self.publish = f"ipc://{directory}/publish.sock"
        self.config = directory / "node.toml"
        self.config.write_text(
            f"workers = 1\n"
            f'data_dir = "{directory}/data"\n'
            f'service_step_timeout = "3s"\n'
            f"{extra}\n"
            f"[endpoints]\n"
            f'intake = "{self.intake}"\n'
            f'workers = "ipc://{directory}/workers.sock"\n'
            f'publish = "{self.publish}"\n'
            f"[catalog]\n"
            f'flows = "{directory}/flows"\n'
            f'mappings = "{directory}/mappings"\n'
            f"[http]\n"
            f"enabled = false\n"
            f"{security}"
        )
        self.log_path = directory / "node.log"
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self, timeout: float = 30.0) -> "Node":
        return self.spawn().ready(timeout)

    def spawn(self) -> "Node":
        """Starts ``zmanager up`` without waiting for it to listen (a
        standby listens only once it holds the journal): :meth:`ready`."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.bin, "up", "--config", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            start_new_session=True,  # its own group: kill() takes the workers too
        )
        log.close()
        return self

    def ready(self, timeout: float = 30.0) -> "Node":
        """Waits for the line a node prints once it listens, and for its
        worker."""
        assert self.proc is not None
        line: List[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        first = line[0].decode() if line else ""
        if "intake=" not in first:
            self.kill()
            raise RuntimeError(f"the node did not start: {first!r}\n{self.log()}")
        self.wait_for_workers()
        return self

    def wait_for_workers(self, n: int = 1, timeout: float = 20.0) -> None:
        """Until ``n`` worker processes of the node run (a request before
        that only waits longer)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(children_of(self.proc.pid)) >= n:
                return
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL to the node and its workers, all at once."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def restart(self) -> None:
        """Killed, then started again on the same directory: the same
        endpoints, configuration and journal."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """SIGTERM (drain), then SIGKILL if it is still there after 15 s."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def keys_new(self, name: str) -> Path:
        """``zmanager keys new NAME`` in the node's directory; NAME.key."""
        subprocess.run([self.bin, "keys", "new", name], cwd=self.dir, check=True,
                       capture_output=True)
        return self.dir / f"{name}.key"


def children_of(parent: int) -> List[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[0] != "Z" and fields[1] == str(parent):
            pids.append(int(entry))
    return pids


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A fresh, short temporary directory, removed after the test."""
    path = Path(tempfile.mkdtemp(prefix="zmpy-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def node(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Node]:
    """A running node on the test flows; its log is printed when the test
    fails."""
    n = Node(workdir).start()
    try:
        yield n
    finally:
        n.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"---- node log ----\n{n.log()}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:  # type: ignore[type-arg]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def read_public(path: Path) -> str:
    """The public_key line of a key file."""
    for line in path.read_text().splitlines():
        if line.startswith("public_key"):
            return line.split("=", 1)[1].strip().strip('"')
    raise AssertionError(f"no public_key in {path}")


@pytest.fixture
def secure_node(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Node]:
    """A node with ``[security]``: keys made by ``zmanager keys new`` for
    the node and for ``ada`` (every flow, service management, the Announce
    and Ask topics, the Ask answers) and ``moderator``; a ``stranger``'s
    pair the node does not list."""
    probe = Node(workdir)
    for name in ("node", "ada", "moderator", "stranger"):
        probe.keys_new(name)
    ada = read_public(workdir / "ada.key")
    moderator = read_public(workdir / "moderator.key")
    security = (
        '[security]\nkey_file = "node.key"\n'
        f'[[security.service]]\nid = "ada"\npublic_key = "{ada}"\npush = ["*"]\n'
        f'answer = ["Ask"]\nregister = true\nsubscribe = ["Announce~", "Ask~"]\n'
        f'[[security.service]]\nid = "moderator"\npublic_key = "{moderator}"\n'
    )
    n = Node(workdir, security=security).start()
    try:
        yield n
    finally:
        n.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"---- node log ----\n{n.log()}")


def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)


def record_lines(path: Path) -> List[str]:
    """The lines Probe.record appended to ``path`` (one per call)."""
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []

