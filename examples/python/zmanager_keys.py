"""CURVE keys for the Python examples (quickstart.py, moderator.py, durable.py).

Reads the key files `zmanager keys new` writes (docs/security.md) and puts
the keys on a socket. Only pyzmq: `tomllib` when the Python has it (3.11
and later), otherwise a reader of the files' two `name = "value"` lines.

    keys = curve_keys(args.key_file, args.server_key)  # None without keys
    apply(socket, keys)                                # before connect
"""

import os
import string

import zmq
from zmq.utils import z85

# Z85 (ZeroMQ RFC 32): a CURVE key is 32 bytes, 40 of these characters.
Z85_CHARS = string.digits + string.ascii_letters + ".-:+=^!/*?&<>()[]{}@%$#"


class SetupError(Exception):
    """An option or a key file that cannot be used (exit status 3)."""


def check_key(text, what):
    """A Z85 key as str, or SetupError saying what is wrong with it."""
    key = text.strip()
    if len(key) != 40:
        raise SetupError(f"{what}: a key is 40 Z85 characters, this one is {len(key)}")
    bad = [c for c in key if c not in Z85_CHARS]
    if bad:
        raise SetupError(f"{what}: not Z85: {bad[0]!r} is not a Z85 character")
    try:
        z85.decode(key)
    except Exception:  # noqa: BLE001 - a 5-character group above 2**32
        raise SetupError(f"{what}: not Z85: it does not decode to 32 bytes") from None
    return key


def parse_key_lines(text):
    """The `name = "value"` lines of a key file, for Pythons without tomllib.

    `zmanager keys new` writes a comment and two such lines; Z85 has no
    quote or backslash, so a value needs no unescaping.
    """
    fields = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.partition("=")
        value = value.strip()
        quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'"
        if not eq or not quoted or value[0] in value[1:-1]:
            raise SetupError(f"line {number} is not `name = \"value\"`")
        fields[name.strip()] = value[1:-1]
    return fields


def read_fields(path, what):
    """The fields of the TOML key file at path (tomllib when there is one)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SetupError(f"{what} {path}: {e.strerror}") from None
    try:
        import tomllib  # Python 3.11 and later
    except ImportError:
        tomllib = None
    try:
        if tomllib is None:
            return parse_key_lines(text)
        return tomllib.loads(text)
    except (SetupError, ValueError) as e:  # tomllib.TOMLDecodeError is a ValueError
        raise SetupError(f"{what} {path}: {e}") from None


def read_key_file(path):
    """(public, secret) Z85 keys of a service's `.key` file."""
    what = "--key-file"
    fields = read_fields(path, what)
    for name in ("public_key", "secret_key"):
        if not isinstance(fields.get(name), str):
            raise SetupError(
                f"{what} {path}: no {name}; give the `.key` file that "
                f"`zmanager keys new` writes (the `.pub` file has only the public key)"
            )
    public = check_key(fields["public_key"], f"{what} {path}: public_key")
    secret = check_key(fields["secret_key"], f"{what} {path}: secret_key")
    if zmq.curve_public(secret.encode()).decode() != public:
        raise SetupError(f"{what} {path}: public_key is not the public half of secret_key")
    return public, secret


def read_server_key(value):
    """The node's public key: value itself, or the public_key of file value."""
    what = "--server-key"
    if os.path.isfile(value):
        key = read_fields(value, what).get("public_key")
        if not isinstance(key, str):
            raise SetupError(f"{what} {value}: no public_key (give the node's `.pub` file)")
        return check_key(key, f"{what} {value}: public_key")
    if len(value.strip()) != 40:
        raise SetupError(
            f"{what} {value}: no such file, nor a 40-character Z85 key"
        )
    return check_key(value, what)


def curve_keys(key_file, server_key):
    """(server, public, secret) keys from --key-file and --server-key, or
    None when neither is given."""
    if (key_file is None) != (server_key is None):
        given, missing = (
            ("--key-file", "--server-key") if server_key is None
            else ("--server-key", "--key-file")
        )
        raise SetupError(
            f"{given} needs {missing} too: CURVE takes the service's key pair "
            f"(--key-file) and the node's public key (--server-key)"
        )
    if key_file is None:
        return None
    if not zmq.has("curve"):
        raise SetupError(f"this libzmq ({zmq.zmq_version()}) was built without CURVE")
    public, secret = read_key_file(key_file)
    return read_server_key(server_key), public, secret


def apply(socket, keys):
    """Gives socket the keys (from curve_keys; nothing if None). Call it
    before connect: the handshake of every connection uses them."""
    if keys is None:
        return
    server, public, secret = keys
    socket.curve_serverkey = server.encode()
    socket.curve_publickey = public.encode()
    socket.curve_secretkey = secret.encode()
