"""Structured mutation fuzzing of the controller stack: framing, connection, session/controller.

Inputs are host-to-controller message sequences: the corpus entries and a few valid
sequences (:mod:`.seeds`), mutated structurally (common header fields, ICReq / SQE /
H2CData fields set to boundary values, digests recomputed or broken, PDUs dropped,
duplicated, swapped, truncated, spliced from another seed) or replaced by raw bytes, and
fed in random chunks.  A ``random.Random`` drives every choice, so the same mutator serves
the seeded 100k-input loop of bench/fuzz_target.py and Hypothesis (``st.randoms()``).

Each layer runner raises :class:`Crash` when an invariant breaks: an exception other than
the typed protocol outcomes escaped, an output is not a whole well-formed C2H PDU, a
terminated connection sent anything after its C2HTermReq (or a TermReq whose FES is not the
error's), a handler hit an internal error, or buffers grew beyond their bound.
"""

from __future__ import annotations

import logging
import random
import struct
from collections.abc import Callable
from typing import Any

from nvmeof.controller.model import Namespace, Subsystem, Target
from nvmeof.controller.session import QueueSession
from nvmeof.errors import PduError, PeerTerminated
from nvmeof.transport.connection import ConnectionState, Terminated
from nvmeof.transport.controller_side import CommandReceived, ControllerConnection
from nvmeof.transport.framing import PduReader
from nvmeof.wire.constants import Csi, Fes
from nvmeof.wire.pdu import HOST_TO_CONTROLLER

from . import harness
from . import wire as w
from .seeds import FuzzBlockBackend, FuzzKvBackend, valid_sequences

I8 = [0, 1, 2, 3, 4, 7, 8, 0x1F, 0x20, 0x40, 0x7F, 0x80, 0xFE, 0xFF]
I16 = [0, 1, 2, 0x1F, 0x20, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xF000, 0xFFFE, 0xFFFF]
I32 = [0, 1, 3, 4, 8, 23, 24, 72, 76, 128, 152, 153, 511, 512, 4095, 4096, 8192, 8193, 131072, 131076,
       1 << 20, (1 << 20) + 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]
I64 = [0, 1, 0xFFFFFFFF, 1 << 32, (1 << 21) - 1, 1 << 21, (1 << 63), (1 << 64) - 1]
CH_FIELDS = [(0, "B"), (1, "B"), (2, "B"), (3, "B"), (4, "I")]
ICREQ_FIELDS = [(8, "H"), (10, "B"), (11, "B"), (12, "I")]
H2C_FIELDS = [(8, "H"), (10, "H"), (12, "I"), (16, "I")]
# SQE fields at their offset in the capsule (SQE starts at byte 8): OPC, FLAGS, CID, NSID/FCTYPE,
# CDW2, CDW3, SGL address/length/identifier, CDW10..15, Connect QID/SQSIZE/CATTR
SQE_FIELDS = [(8, "B"), (9, "B"), (10, "H"), (12, "I"), (12, "B"), (16, "I"), (20, "I"), (32, "Q"), (40, "I"),
              (47, "B"), (48, "I"), (52, "I"), (56, "I"), (60, "I"), (64, "I"), (68, "I"), (50, "H"), (52, "H"),
              (54, "B")]
SIZES = {"B": I8, "H": I16, "I": I32, "Q": I64}
MASKS = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF, "Q": (1 << 64) - 1}
MAX_READ_ANSWER = 65536
MAX_TERM_PLEN = 152
BUFFER_SLACK = 512 * 1024


class Crash(Exception):
    """An invariant of the stack under fuzzing broke (or an unexpected exception escaped)."""


def _fields_for(m: bytes) -> list[tuple[int, str]]:
    t = m[0] if m else 0
    extra = {w.ICREQ: ICREQ_FIELDS, w.CAPSULE_CMD: SQE_FIELDS, w.H2C_DATA: H2C_FIELDS}.get(t, [])
    return CH_FIELDS + extra


def _set_field(rnd: random.Random, m: bytearray, at: int, code: str) -> None:
    size = struct.calcsize("<" + code)
    if at + size > len(m):
        return
    if rnd.random() < 0.7:
        value = rnd.choice(SIZES[code])
    elif rnd.random() < 0.5:
        (old,) = struct.unpack_from("<" + code, m, at)
        value = (old + rnd.choice([-4, -1, 1, 4, 512])) & MASKS[code]
    else:
        value = rnd.getrandbits(size * 8)
    struct.pack_into("<" + code, m, at, value)


def mutate(rnd: random.Random, msgs: list[bytes], donors: list[list[bytes]]) -> list[bytes]:
    """1-4 structured mutations of a message sequence."""
    out = [bytes(m) for m in msgs] or [w.icreq()]
    for _ in range(rnd.randint(1, 4)):
        i = rnd.randrange(len(out))
        orig = out[i]
        m = bytearray(orig)
        op = rnd.randrange(12)
        if op <= 3:  # a header / SQE / H2CData / ICReq field set to a boundary value
            _set_field(rnd, m, *rnd.choice(_fields_for(orig)))
        elif op == 4 and m:  # bit flips
            for _ in range(rnd.randint(1, 8)):
                j = rnd.randrange(len(m))
                m[j] ^= 1 << rnd.randrange(8)
        elif op == 5 and len(m) > 1:  # truncate
            del m[rnd.randrange(1, len(m)):]
        elif op == 6:  # drop, duplicate or swap PDUs
            kind = rnd.randrange(3)
            if kind == 0 and len(out) > 1:
                del out[i]
                continue
            if kind == 1:
                out.insert(i, orig)
                continue
            j = rnd.randrange(len(out))
            out[i], out[j] = out[j], out[i]
            continue
        elif op == 7:  # splice a message from another sequence
            donor = rnd.choice(donors)
            if donor:
                out.insert(rnd.randrange(len(out) + 1), rnd.choice(donor))
            continue
        elif op == 8:  # random bytes inserted or appended
            blob = rnd.randbytes(rnd.choice([1, 7, 8, 24, 72, 200]))
            j = rnd.randrange(len(m) + 1)
            m[j:j] = blob
        elif op == 9 and len(m) >= 8:  # break a digest (or the byte where one would be)
            j = rnd.choice([min(len(m) - 1, m[2]), len(m) - 1])
            m[j] ^= 0xFF
            out[i] = bytes(m)
            continue
        elif op == 10:  # PLEN grows or shrinks with the data
            extra = rnd.choice([-4, 4, 8, 512, 8192])
            if extra > 0:
                m += bytes(extra)
            else:
                del m[max(8, len(m) + extra):]
            if len(m) >= 8:
                struct.pack_into("<I", m, 4, len(m))
        else:  # whole raw garbage message
            m = bytearray(rnd.randbytes(rnd.randint(0, 300)))
        out[i] = w.redigest(orig, m) if rnd.random() < 0.8 and len(m) >= 8 and len(orig) >= 8 else bytes(m)
    return out


class Input:
    """One fuzz input: the messages of the connection under test (and its association)."""

    __slots__ = ("msgs", "association", "cut_seed")

    def __init__(self, msgs: list[bytes], association: list[bytes] | None, cut_seed: int) -> None:
        self.msgs = msgs
        self.association = association
        self.cut_seed = cut_seed

    def stream(self) -> bytes:
        return b"".join(self.msgs)


class Generator:
    """Seeds (corpus + valid sequences) and the mutator."""

    def __init__(self) -> None:
        self.seeds: list[tuple[list[bytes], list[bytes] | None, list[dict[str, Any]]]] = []
        for e in harness.load_entries():
            self.seeds.append((harness.messages(e), harness.messages(e, "association") or None,
                               e.get("patches", [])))
        for msgs, assoc, patches in valid_sequences():
            self.seeds.append((msgs, assoc, patches))
        self.donors = [s[0] for s in self.seeds]

    def draw(self, rnd: random.Random) -> tuple[Input, list[dict[str, Any]]]:
        msgs, assoc, patches = rnd.choice(self.seeds)
        kind = rnd.random()
        if kind < 0.08:
            msgs, patches = [rnd.randbytes(rnd.randint(0, 400))], []
        elif kind < 0.16:
            msgs, patches = [w.icreq(), rnd.randbytes(rnd.randint(0, 400))], []
        elif kind < 0.9:
            msgs = mutate(rnd, msgs, self.donors)
        return Input(list(msgs), assoc, rnd.getrandbits(32)), patches


def _chunks(data: bytes, rnd: random.Random) -> list[bytes]:
    if not data:
        return []
    cuts = sorted({rnd.randrange(1, len(data) + 1) for _ in range(rnd.randint(0, 6))} | {len(data)})
    out, prev = [], 0
    for c in cuts:
        out.append(data[prev:c])
        prev = c
    return out


def _check_output(out: bytes, error: Exception | None) -> list[bytes]:
    pdus, used = harness.split_pdus(out)
    if used != len(out):
        raise Crash("output ends inside a PDU")
    for pdu in pdus:
        if pdu[0] not in harness.C2H_TYPES:
            raise Crash(f"controller sent PDU type {pdu[0]:#x}")
    terms = [k for k, p in enumerate(pdus) if p[0] == w.C2H_TERM]
    if isinstance(error, PduError):
        if terms != [len(pdus) - 1]:
            raise Crash(f"PduError {error} but TermReqs at {terms} of {len(pdus)} PDUs")
        term = pdus[-1]
        if struct.unpack_from("<H", term, 8)[0] != int(error.fes) or not 24 <= len(term) <= MAX_TERM_PLEN:
            raise Crash("C2HTermReq does not carry the error's FES or has a bad length")
        if error.fes not in set(Fes):
            raise Crash(f"FES {error.fes} is not defined")
    elif terms:
        raise Crash("C2HTermReq without a PduError")
    return pdus


# --- layer 1: framing --------------------------------------------------------------------------


def run_framing(inp: Input, rnd: random.Random) -> None:
    reader = PduReader(HOST_TO_CONTROLLER, max_data=rnd.choice([4096, 8192, 131072]))
    reader.hdgst, reader.ddgst = rnd.random() < 0.5, rnd.random() < 0.5
    fed = 0
    for piece in _chunks(inp.stream(), rnd):
        if rnd.random() < 0.5:
            reader.receive_data(piece)
        else:
            view = reader.get_buffer(len(piece))
            view[:len(piece)] = piece
            view.release()
            reader.buffer_updated(len(piece))
        fed += len(piece)
        try:
            while (pdu := reader.next_pdu()) is not None:
                if pdu.pdu_type not in HOST_TO_CONTROLLER or len(pdu.header) != pdu.hlen or pdu.plen < pdu.hlen:
                    raise Crash(f"framing delivered a malformed PDU {pdu!r}")
                if pdu.data is not None and len(pdu.data) > max(reader.max_data, MAX_TERM_PLEN):
                    raise Crash("framing delivered more data than its limit")
        except PduError as exc:
            if not reader.dead or len(exc.header) > 128:
                raise Crash(f"PduError left the reader alive or copied {len(exc.header)} bytes") from exc
            return
        if reader.buffered > fed or len(reader._buf) > 2 * (fed + BUFFER_SLACK):
            raise Crash(f"framing buffer grew to {len(reader._buf)} for {fed} bytes")


# --- layer 2: connection -----------------------------------------------------------------------


def run_connection(inp: Input, rnd: random.Random) -> None:
    conn = ControllerConnection(maxh2cdata=rnd.choice([4096, 8192, 131072]),
                                in_capsule_size=rnd.choice([4096, 8192]), max_transfer=rnd.choice([65536, 1 << 20]),
                                c2h_chunk=rnd.choice([4096, 131072]), c2h_success=rnd.random() < 0.5)
    out = bytearray()
    error: Exception | None = None
    fed = 0
    for piece in _chunks(inp.stream(), rnd):
        events = conn.receive_data(piece)
        fed += len(piece)
        for ev in events:
            if isinstance(ev, CommandReceived):
                if ev.sqe[0] & 3 == 2 and rnd.random() < 0.7:
                    length = min(struct.unpack_from("<I", ev.raw, 32)[0], MAX_READ_ANSWER)
                    conn.complete_with_data(ev.cid, bytes(length), status=rnd.choice([0, 0, 0x4]))
                else:
                    conn.complete(ev.cid, rnd.choice([0, 0x4]))
            elif isinstance(ev, Terminated):
                if error is not None:
                    raise Crash("two Terminated events")
                error = ev.error
        out += b"".join(bytes(p) for p in conn.data_to_send())
        if len(conn.reader._buf) > 2 * (fed + BUFFER_SLACK):
            raise Crash("connection buffer unbounded")
    _check_output(bytes(out), error)
    if error is not None:
        if conn.state is not ConnectionState.TERMINATING:
            raise Crash(f"terminated connection in state {conn.state}")
        if conn.receive_data(w.icreq()) or conn.data_to_send():
            raise Crash("a terminated connection accepted input or sent more")


# --- layer 3: session + controller ---------------------------------------------------------------


class _ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def fuzz_target() -> Target:
    target = Target()
    sub = target.add_subsystem(Subsystem(w.SUBNQN))
    sub.add_namespace(Namespace(1, FuzzBlockBackend(4096), num_blocks=4096))
    sub.add_namespace(Namespace(2, FuzzKvBackend(), csi=Csi.KV, block_size=4096, max_value_size=65536,
                                capacity_bytes=1 << 24))
    return target


class SessionFuzzer:
    """One Target for many inputs; fresh sessions per input, all closed at its end."""

    def __init__(self) -> None:
        self.target = fuzz_target()
        self.errors = _ErrorCounter()
        for name in ("nvmeof.session", "nvmeof.controller", "nvmeof.target"):
            logging.getLogger(name).addHandler(self.errors)

    def close(self) -> None:
        for name in ("nvmeof.session", "nvmeof.controller", "nvmeof.target"):
            logging.getLogger(name).removeHandler(self.errors)

    def run(self, inp: Input, rnd: random.Random, patches: list[dict[str, Any]]) -> None:
        self.errors.records.clear()
        sessions: list[QueueSession] = []
        try:
            self._run(inp, rnd, patches, sessions)
        finally:
            for s in sessions:
                s.connection_lost()
        if self.errors.records:
            raise Crash(f"internal error: {self.errors.records[0].getMessage()}")
        stale = sum(len(sub.controllers) for sub in self.target.subsystems.values())
        if stale:
            raise Crash(f"{stale} controllers outlived their connections")

    def _session(self, sessions: list[QueueSession], closed: list[bool]) -> QueueSession:
        s = QueueSession(self.target)
        s.close = lambda reason: closed.__setitem__(0, True)
        sessions.append(s)
        return s

    def _run(self, inp: Input, rnd: random.Random, patches: list[dict[str, Any]],
             sessions: list[QueueSession]) -> None:
        cntlid = None
        if inp.association:
            admin = self._session(sessions, [False])
            for m in inp.association:
                admin.receive_data(m)
            answers = harness.Answers()
            for pdu in harness.split_pdus(b"".join(bytes(p) for p in admin.data_to_send()))[0]:
                answers.add(pdu)
            cntlid = harness.cntlid_from(answers)
        closed = [False]
        s = self._session(sessions, closed)
        msgs = list(inp.msgs)
        for p in patches:  # the CNTLID of the association; TTAGs stay as generated (the first is 0)
            if p["field"] == "cntlid" and isinstance(p["msg"], int) and p["msg"] < len(msgs) and cntlid is not None:
                try:
                    msgs[p["msg"]] = w.patch_u16(msgs[p["msg"]], p["at"], cntlid)
                except struct.error:  # the mutation cut the message short of the field: leave it
                    pass
        out = bytearray()
        for piece in _chunks(b"".join(msgs), rnd):
            if closed[0]:
                break
            s.receive_data(piece)
            out += b"".join(bytes(x) for x in s.data_to_send())
        error = s.terminated
        pdus = _check_output(bytes(out), error if isinstance(error, PduError) else None)
        if isinstance(error, (PduError, PeerTerminated)):
            if not closed[0]:
                raise Crash("terminated session did not ask the edge to close")
            s.receive_data(w.icreq())
            if s.data_to_send():
                raise Crash("a terminated session sent more")
        elif error is not None:
            raise Crash(f"session terminated by {error!r}")
        del pdus


LAYERS: dict[str, Callable[..., None]] = {"framing": run_framing, "connection": run_connection}
