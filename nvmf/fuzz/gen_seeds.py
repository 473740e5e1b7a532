#!/usr/bin/env python3
"""Writes small seed corpora: valid NVMe/TCP PDU streams for the `deframe` target (two
configuration bytes, see fuzz_targets/deframe.rs, then PDUs), and step programs for the
`qpair_seq` target (one configuration byte, then steps, see fuzz_targets/qpair_seq.rs).
"""
import os
import struct

POLY = 0x82F63B78
TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    TABLE.append(c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def pdu(ptype, psh, data=b"", hd=False, dd=False, flags=0, pda=0):
    hlen = 8 + len(psh)
    end = hlen + (4 if hd else 0)
    align = (pda + 1) * 4
    pdo = ((end + align - 1) // align) * align if data else 0
    head_space = pdo if data else end
    ddg = dd and bool(data)
    plen = head_space + len(data) + (4 if ddg else 0)
    f = flags | (1 if hd else 0) | (2 if ddg else 0)
    ch = struct.pack("<BBBBI", ptype, f, hlen, pdo, plen)
    out = ch + psh
    if hd:
        out += struct.pack("<I", crc32c(out))
    out += b"\0" * (head_space - len(out))
    out += data
    if ddg:
        out += struct.pack("<I", crc32c(data))
    return out


def sqe(opcode, cid, sgl_type, length, cdw10=0):
    s = struct.pack("<BBHI", opcode, 0x40, cid, 1) + b"\0" * 16
    s += struct.pack("<QI3xB", 0, length, sgl_type)
    s += struct.pack("<IIIIII", cdw10, 0, 7, 0, 0, 0)
    assert len(s) == 64
    return s


def seeds():
    icreq = pdu(0x00, struct.pack("<HBBI", 0, 0, 3, 0) + b"\0" * 112)
    icresp = pdu(0x01, struct.pack("<HBBI", 0, 0, 3, 131072) + b"\0" * 112)
    for hd, dd, pda in [(False, False, 0), (True, True, 0), (True, False, 3), (False, True, 7)]:
        cfg0 = (2 if hd else 0) | (4 if dd else 0)
        cfg = bytes([cfg0, pda])
        write = pdu(0x04, sqe(0x01, 1, 0x01, 16), bytes(range(16)), hd, dd, pda=pda)
        read = pdu(0x04, sqe(0x02, 2, 0x5A, 4096), b"", hd, dd, pda=pda)
        h2c = pdu(0x06, struct.pack("<HHII4x", 3, 1, 0, 32), b"\xAB" * 32, hd, dd, 0x04, pda)
        term = pdu(0x02, struct.pack("<HI10x", 1, 2), write[:24])
        yield f"ctrl_{int(hd)}{int(dd)}_{pda}", cfg + write + read + h2c + term
        resp = pdu(0x05, struct.pack("<IIHHHH", 0, 0, 1, 1, 2, 0), b"", hd, dd)
        c2h = pdu(0x07, struct.pack("<HHII4x", 2, 0, 0, 64), b"\xCD" * 64, hd, dd, 0x0C, pda)
        r2t = pdu(0x09, struct.pack("<HHII4x", 1, 5, 0, 4096), b"", hd, dd)
        yield f"host_{int(hd)}{int(dd)}_{pda}", bytes([cfg0 | 1, pda]) + c2h + resp + r2t
    yield "ctrl_ic", bytes([8, 0]) + icreq + pdu(0x04, sqe(0x18, 9, 0x5A, 0))
    yield "host_ic", bytes([9, 0]) + icresp + pdu(0x05, struct.pack("<IIHHHH", 0, 0, 1, 0, 9, 0))


here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "seeds", "deframe")
os.makedirs(out, exist_ok=True)
for name, blob in seeds():
    with open(os.path.join(out, name), "wb") as f:
        f.write(blob)


def qpair_seeds():
    """Step programs for qpair_seq: set up an admin and an I/O queue, then do I/O."""
    ADMIN, IO = 0, 1

    def ic(q, flags):
        return bytes([q, 0, 1, flags])

    def connect(q, cid):
        return bytes([q, 1, cid, 3, 1, 0])

    def cc(q, cid, en):
        return bytes([q, 2, cid, en])

    def io(cid, opsel, nlb, length, in_capsule=False):
        # opsel indexes [read, write, compare, flush, write zeroes, dsm, read, write]
        mode = 1 if in_capsule else 0
        head = bytes([IO, 5, cid, opsel, 1, 0, 0, 0, nlb - 1, 0]) + struct.pack("<H", length)
        return head + bytes([mode]) + (b"\xAB" * length if in_capsule else b"")

    def complete(i=0, ok=1):
        return bytes([IO, 13, 0, i, ok])

    def h2c(i=0, skew=0):
        return bytes([IO, 9, 0, i, skew])

    for name, flags in (("plain", 0), ("digests", 3)):
        setup = ic(ADMIN, flags) + connect(ADMIN, 1) + cc(ADMIN, 2, 1) + ic(IO, flags) + connect(IO, 1)
        rw = (io(3, 0, 8, 4096) + complete() + io(4, 1, 8, 4096) + h2c() + complete()
              + io(5, 1, 2, 1024, True) + complete() + io(6, 2, 2, 1024) + h2c() + complete())
        yield f"rw_{name}", bytes([0x51]) + setup + rw
        yield f"small_h2c_{name}", bytes([0x40]) + setup + io(7, 1, 64, 32768) + h2c() + h2c() + h2c() + h2c() + complete()
        yield f"admin_{name}", bytes([0x51]) + setup + bytes([ADMIN, 8, 9, 0, 0, 1, 0, 0, 0, 0, 0, 0x10, 0, 0])


out = os.path.join(here, "seeds", "qpair_seq")
os.makedirs(out, exist_ok=True)
for name, blob in qpair_seeds():
    with open(os.path.join(out, name), "wb") as f:
        f.write(blob)
