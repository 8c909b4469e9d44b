"""The workspace's `rust-version` is its true minimum: no dependency in
Cargo.lock declares a newer one. (Clippy's `incompatible_msrv` lint, run by
.ci/run with warnings denied, checks that our own code calls no standard
library API newer than it.)"""

import json
import subprocess
import sys


def version(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
members = set(meta["workspace_members"])
ours = {p["rust_version"] for p in meta["packages"] if p["id"] in members}
if len(ours) != 1 or None in ours:
    sys.exit(f"every workspace member must inherit one rust-version, found {ours}")
ours = ours.pop()
newer = [
    f"{p['name']} {p['version']} needs Rust {p['rust_version']}"
    for p in meta["packages"]
    if p["id"] not in members
    and p.get("rust_version")
    and version(p["rust_version"]) > version(ours)
]
if newer:
    sys.exit(f"rust-version is {ours}, but:\n  " + "\n  ".join(newer))
print(f"rust-version {ours}: no dependency needs a newer Rust")
