"""Generate the malformed-input corpus: one JSON file per entry in tests/corpus/entries/.

Run ``python tests/corpus/make_corpus.py`` to (re)write the entries; ``--check`` only
verifies the files on disk equal what this script produces (CI runs that through
tests/unit/test_corpus.py).  Bytes come from :mod:`corpus.wire` (hand-built with
struct from the spec's offsets, never nvmeof's encoder).

Entry format::

    id, category, description, spec       what is wrong and which rule says so
    queue        "none" | "admin" | "io"  which queue the sequence opens
    association  hex PDUs of an admin association the harness opens first (io entries);
                 its Connect response gives the CNTLID patched into the I/O Connect
    send         hex messages the host sends, in order (may start with ICReq/Connect)
    patches      [{"msg": i | "followup", "at": offset, "field": "cntlid" | "ttag"}]: values
                 only the controller knows (its CNTLID, the TTAG of its R2T) are filled in
                 by the harness; "ttag" means: wait for the R2T first
    half_close   the host shuts its sending side after the last message
    expect       {"termreq": {"fes", "fei"}}  C2HTermReq with that FES (FEI if not null),
                                             nothing after it, connection closed
                 {"status": {"cid", "sct", "sc"}} that command's completion status; the
                                             connection stays up and ``followup`` succeeds
                 {"close": true}              connection closed, no C2HTermReq
    followup     hex of a valid command (CID F0F0h) that must then complete with success
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the ``corpus`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus import corpus_admin, corpus_io, corpus_transport  # noqa: E402
from corpus.entry import Builder  # noqa: E402

ENTRIES_DIR = Path(__file__).with_name("entries")


def build() -> list[dict[str, Any]]:
    b = Builder()
    corpus_transport.add_all(b)
    corpus_admin.add_all(b)
    corpus_io.add_all(b)
    return b.entries


def render(entry: dict[str, Any]) -> str:
    return json.dumps(entry, indent=1) + "\n"


def main(argv: list[str]) -> int:
    entries = build()
    wanted = {f"{e['id']}.json": render(e) for e in entries}
    if "--check" in argv:
        have = {p.name: p.read_text() for p in ENTRIES_DIR.glob("*.json")}
        if have != wanted:
            print("corpus entries are stale: run python tests/corpus/make_corpus.py", file=sys.stderr)
            return 1
        return 0
    ENTRIES_DIR.mkdir(exist_ok=True)
    for old in ENTRIES_DIR.glob("*.json"):
        if old.name not in wanted:
            old.unlink()
    for name, text in wanted.items():
        (ENTRIES_DIR / name).write_text(text)
    print(f"{len(entries)} entries in {ENTRIES_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
