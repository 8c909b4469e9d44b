"""CURVE keys against a node with ``[security]``: the right keys get their
results; a wrong server key, a key the node does not list, another
service's id and no keys at all get nothing, with the package's errors;
key files it cannot use raise KeyFileError before connecting."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import zmanager
from zmanager import CurveKeys
from conftest import Node, read_public


def keys(node: Node, name: str, server: str = "node.pub") -> CurveKeys:
    server_key = server if len(server) == 40 else str(node.dir / server)
    return CurveKeys.from_files(node.dir / f"{name}.key", server_key)


def test_the_right_keys_get_their_results(secure_node: Node) -> None:
    with zmanager.Service.connect(secure_node.intake, secure_node.publish, service_id="ada",
                                  keys=keys(secure_node, "ada")) as service:
        assert service.reply_to == "@reply~ada~"
        result = service.request("Greeting", {"name": "ada"}, timeout=30)
        assert result.payload == {"greeting": "HELLO, ADA!"}
        # The server key given as its 40 Z85 characters works the same.
    server = read_public(secure_node.dir / "node.pub")
    with zmanager.Service.connect(secure_node.intake, secure_node.publish, service_id="ada",
                                  keys=keys(secure_node, "ada", server)) as service:
        assert service.request("Echo", 5, timeout=30).payload == 5


def test_a_wrong_server_key_fails_the_handshake(secure_node: Node) -> None:
    # A real key, but the stranger's, not the node's.
    wrong = keys(secure_node, "ada", "stranger.pub")
    started = time.monotonic()
    with pytest.raises(zmanager.CurveHandshakeError) as caught:
        zmanager.Service.connect(secure_node.intake, secure_node.publish, service_id="ada",
                                 keys=wrong, handshake_timeout=2.0)
    assert time.monotonic() - started < 6
    error = caught.value
    assert isinstance(error, zmanager.HandshakeError)
    assert "CURVE handshake" in str(error)
    assert "server key" in str(error)


def test_a_key_the_node_does_not_list_fails_the_handshake(secure_node: Node) -> None:
    with pytest.raises(zmanager.CurveHandshakeError):
        zmanager.Service.connect(secure_node.intake, secure_node.publish, service_id="ada",
                                 keys=keys(secure_node, "stranger"), handshake_timeout=2.0)
    stranger = read_public(secure_node.dir / "stranger.key")
    log = secure_node.log()
    assert f"refused a connection: its key is not in [security] key={stranger}" in log, log


def test_another_services_id_or_no_keys_get_nothing(secure_node: Node) -> None:
    # ada's key as "bob": the node refuses its pings (code 19, told on
    # @reply~ada~, which bob does not hear).
    with pytest.raises(zmanager.HandshakeError):
        zmanager.Service.connect(secure_node.intake, secure_node.publish, service_id="bob",
                                 keys=keys(secure_node, "ada"), handshake_timeout=2.0)
    # No keys: the NULL mechanism, which a CURVE-only socket does not speak.
    with pytest.raises(zmanager.HandshakeError) as caught:
        zmanager.Service.connect(secure_node.intake, secure_node.publish, service_id="ada",
                                 handshake_timeout=1.0)
    assert "takes only clients with keys" in str(caught.value)


def test_key_files_it_cannot_use_raise_key_file_error(secure_node: Node, workdir: Path) -> None:
    ada = (workdir / "ada.key").read_text()
    pub = str(workdir / "node.pub")
    cases = {
        "missing.key": None,
        "short.key": _replace_value(ada, "secret_key", lambda v: v[:-1]),
        "not-z85.key": _replace_value(ada, "secret_key", lambda v: "~" + v[1:]),
        "other-half.key": _replace_value(
            ada, "public_key", lambda _: read_public(workdir / "stranger.key")),
        "garbage.key": "this is not = a key file [\n",
    }
    messages = {}
    for name, text in cases.items():
        if text is not None:
            (workdir / name).write_text(text)
        with pytest.raises(zmanager.KeyFileError) as caught:
            CurveKeys.from_files(workdir / name, pub)
        assert isinstance(caught.value, zmanager.ConfigError)
        messages[name] = str(caught.value)
    assert "No such file" in messages["missing.key"]
    assert "40 Z85 characters, this one is 39" in messages["short.key"]
    assert "not Z85" in messages["not-z85.key"]
    assert "not the public half" in messages["other-half.key"]
    # A .pub as the service's key file: no secret key.
    with pytest.raises(zmanager.KeyFileError, match="no secret_key"):
        CurveKeys.from_files(workdir / "ada.pub", pub)
    # A server key that is neither a file nor a key.
    with pytest.raises(zmanager.KeyFileError, match="nor a 40-character"):
        CurveKeys.from_files(workdir / "ada.key", "node-that-is-not-here.pub")


def _replace_value(text: str, field: str, change) -> str:  # type: ignore[no-untyped-def]
    out = []
    for line in text.splitlines():
        if line.startswith(field):
            value = line.split("=", 1)[1].strip().strip('"')
            line = f'{field} = "{change(value)}"'
        out.append(line)
    return "\n".join(out) + "\n"
