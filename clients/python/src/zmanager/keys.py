"""CURVE keys for a node with ``[security]`` (docs/security.md).

``zmanager keys new NAME`` writes ``NAME.key`` (``public_key`` and
``secret_key``, TOML, mode 0600) and ``NAME.pub`` (``public_key`` only). A
service needs its own ``.key`` and the node's public key (its ``.pub``, or
the 40 Z85 characters of it)::

    keys = CurveKeys.from_files("ada.key", "node.pub")
    service = Service.connect(intake, publish, service_id="ada", keys=keys)

Every function here raises :class:`~zmanager.errors.KeyFileError`, saying
what is wrong and with which file, for a key it cannot use.
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass
from typing import Any, Dict, Tuple, Union

import zmq
from zmq.utils import z85

from .errors import KeyFileError

__all__ = ["CurveKeys", "read_key_file", "read_server_key", "check_key"]

# Z85 (ZeroMQ RFC 32): a CURVE key is 32 bytes, 40 of these characters.
_Z85_CHARS = frozenset(string.digits + string.ascii_letters + ".-:+=^!/*?&<>()[]{}@%$#")

PathLike = Union[str, "os.PathLike[str]"]


def check_key(text: str, what: str) -> str:
    """``text`` as a Z85 CURVE key (stripped), or :class:`KeyFileError`
    saying what is wrong with it; ``what`` names it in the message."""
    key = text.strip()
    if len(key) != 40:
        raise KeyFileError(f"{what}: a key is 40 Z85 characters, this one is {len(key)}")
    bad = [c for c in key if c not in _Z85_CHARS]
    if bad:
        raise KeyFileError(f"{what}: not Z85: {bad[0]!r} is not a Z85 character")
    try:
        z85.decode(key)
    except Exception:  # noqa: BLE001 - a 5-character group above 2**32
        raise KeyFileError(f"{what}: not Z85: it does not decode to 32 bytes") from None
    return key


def _parse_key_lines(text: str) -> Dict[str, Any]:
    """The ``name = "value"`` lines of a key file, for a Python without
    ``tomllib`` (before 3.11). Z85 has no quote or backslash, so a value
    needs no unescaping."""
    fields: Dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.partition("=")
        value = value.strip()
        quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'"
        if not eq or not quoted or value[0] in value[1:-1]:
            raise KeyFileError(f"line {number} is not `name = \"value\"`")
        fields[name.strip()] = value[1:-1]
    return fields


def _read_fields(path: PathLike) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise KeyFileError(f"key file {os.fspath(path)}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {os.fspath(path)}: not UTF-8 text") from None
    try:
        import tomllib  # Python 3.11 and later
    except ImportError:
        tomllib = None  # type: ignore[assignment]
    try:
        if tomllib is None:
            return _parse_key_lines(text)
        return tomllib.loads(text)
    except (KeyFileError, ValueError) as e:  # TOMLDecodeError is a ValueError
        raise KeyFileError(f"key file {os.fspath(path)}: {e}") from None


def read_key_file(path: PathLike) -> Tuple[str, str]:
    """``(public, secret)`` Z85 keys of a service's ``.key`` file, checked:
    both present, both keys, and the public one the secret one's."""
    fields = _read_fields(path)
    where = f"key file {os.fspath(path)}"
    for name in ("public_key", "secret_key"):
        if not isinstance(fields.get(name), str):
            raise KeyFileError(
                f"{where}: no {name}; give the `.key` file that `zmanager keys new` "
                f"writes (the `.pub` file has only the public key)"
            )
    public = check_key(fields["public_key"], f"{where}: public_key")
    secret = check_key(fields["secret_key"], f"{where}: secret_key")
    if zmq.curve_public(secret.encode()).decode() != public:
        raise KeyFileError(f"{where}: public_key is not the public half of secret_key")
    return public, secret


def read_server_key(value: PathLike) -> str:
    """The node's public key: ``value`` itself when it is 40 Z85
    characters, else the ``public_key`` of the file it names (the node's
    ``.pub`` or ``.key``)."""
    text = os.fspath(value)
    if os.path.isfile(text):
        key = _read_fields(text).get("public_key")
        if not isinstance(key, str):
            raise KeyFileError(f"server key file {text}: no public_key (give the node's `.pub` file)")
        return check_key(key, f"server key file {text}: public_key")
    if len(text.strip()) != 40:
        raise KeyFileError(f"server key {text!r}: no such file, nor a 40-character Z85 key")
    return check_key(text, "server key")


@dataclass(frozen=True)
class CurveKeys:
    """The three keys a CURVE client needs, in Z85: the node's public key
    (``server``) and this service's pair."""

    server: str
    public: str
    secret: str

    def __post_init__(self) -> None:
        check_key(self.server, "server key")
        check_key(self.public, "public key")
        check_key(self.secret, "secret key")
        if zmq.curve_public(self.secret.encode()).decode() != self.public.strip():
            raise KeyFileError("the public key is not the public half of the secret key")

    @classmethod
    def from_files(cls, key_file: PathLike, server_key: PathLike) -> "CurveKeys":
        """This service's ``.key`` file and the node's public key (a file or
        the key itself)."""
        if not zmq.has("curve"):
            raise KeyFileError(f"this libzmq ({zmq.zmq_version()}) was built without CURVE")
        public, secret = read_key_file(key_file)
        return cls(server=read_server_key(server_key), public=public, secret=secret)

    def apply(self, socket: zmq.Socket) -> None:  # type: ignore[type-arg]
        """Gives ``socket`` the keys; call it before ``connect``."""
        socket.curve_serverkey = self.server.strip().encode()
        socket.curve_publickey = self.public.strip().encode()
        socket.curve_secretkey = self.secret.strip().encode()
