#!/usr/bin/env python3
"""Hostile and broken NVMe/TCP hosts, for hack/soak-hostile.sh (issue 19).

    hostile.py ADDR PORT SUBNQN SECONDS

Runs, side by side until SECONDS pass, one thread per kind of misbehaviour, each in a loop
with a pause so that the hostile hosts do not simply take the CPU from the healthy load:

  flood      admin + I/O queue, 4,000 reads of 16 KiB without ever reading the socket; holds
             the connection 5 s, then vanishes (close with unread data: a reset)
  churn      admin + I/O queue, a read, Disconnect, close: as a reconnecting host does
  no_icreq   20 connections that never send an ICReq, held 3 s (the target closes them
             after ic_timeout_ms, 2 s in the soak's configuration)
  mid_r2t    admin + I/O queue, 16 writes of 128 KiB that get their R2Ts and never the data;
             the host vanishes after 1 s
  mid_pdu    admin + I/O queue, half a command capsule, then vanishes
  garbage    64 random bytes instead of an ICReq (the target answers with a C2HTermReq)

Prints one line per kind at the end with how many rounds it ran and how many failed
unexpectedly (a refused Connect, a socket error where none was expected).
"""

import os
import socket
import struct
import sys
import threading
import time

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:19191919-1919-1919-1919-191919191919"


def pdu(ptype, psh, data=b""):
    """A PDU without digests: common header, PDU-specific header, data."""
    hlen = 8 + len(psh)
    pdo = hlen if data else 0
    return struct.pack("<BBBBI", ptype, 0, hlen, pdo, hlen + len(data)) + psh + data


def icreq():
    return pdu(0x00, struct.pack("<HBBI", 0, 0, 0, 0) + bytes(112))


def sqe(opcode, cid, nsid=0, cdw10=0, cdw11=0, cdw12=0, sgl_len=0, in_capsule=False):
    sgl_id = 0x01 if in_capsule else 0x5A
    dptr = struct.pack("<QI3xB", 0, sgl_len, sgl_id)
    return struct.pack("<BBHI", opcode, 0x40, cid, nsid) + bytes(16) + dptr + struct.pack(
        "<IIIIII", cdw10, cdw11, cdw12, 0, 0, 0
    )


def capsule(cmd, data=b""):
    return pdu(0x04, cmd, data)


def fabrics(fctype, cid, cdw10=0, cdw11=0, cdw12=0, sgl_len=0):
    # FCTYPE is byte 4 (the NSID field of a fabrics command).
    return sqe(0x7F, cid, nsid=fctype, cdw10=cdw10, cdw11=cdw11, cdw12=cdw12, sgl_len=sgl_len,
               in_capsule=sgl_len > 0)


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            raise ConnectionError("closed by the target")
        out += b
    return out


def recv_pdu(s):
    ch = recv_exact(s, 8)
    ptype, _, hlen, _, plen = struct.unpack("<BBBBI", ch)
    rest = recv_exact(s, plen - 8)
    return ptype, ch + rest


def response(s, cid):
    """Reads PDUs until the response capsule for `cid`; returns (status, dw0)."""
    while True:
        ptype, p = recv_pdu(s)
        if ptype == 0x05:
            dw0, _, _, _, rcid, status = struct.unpack("<IIHHHH", p[8:24])
            if rcid == cid:
                return status >> 1, dw0
        elif ptype == 0x07 and p[1] & 0x08:  # C2HData with SUCCESS
            return 0, 0


class Queue:
    def __init__(self, addr, port, subnqn, qid, cntlid=0xFFFF):
        self.s = socket.create_connection((addr, port), timeout=10)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.cid = 0
        self.s.sendall(icreq())
        ptype, _ = recv_pdu(self.s)
        if ptype != 0x01:
            raise RuntimeError("no ICResp")
        data = bytearray(1024)
        data[0:16] = os.urandom(16)
        struct.pack_into("<H", data, 16, cntlid)
        data[256:256 + len(subnqn)] = subnqn.encode()
        data[512:512 + len(HOSTNQN)] = HOSTNQN.encode()
        # SQSIZE 31, CATTR: SQ flow control disabled; KATO 0.
        st, dw0 = self.command(fabrics(0x01, self.next(), cdw10=qid << 16,
                                       cdw11=31 | (4 << 16), sgl_len=1024), bytes(data))
        if st != 0:
            raise RuntimeError(f"Connect QID {qid}: status {st:#x}")
        self.cntlid = dw0 & 0xFFFF

    def next(self):
        self.cid = (self.cid + 1) % 0xFFFF
        return self.cid

    def command(self, cmd, data=b""):
        cid = struct.unpack_from("<H", cmd, 2)[0]
        self.s.sendall(capsule(cmd, data))
        return response(self.s, cid)

    def read_cmd(self, slba, nlb):
        return sqe(0x02, self.next(), nsid=1, cdw10=slba & 0xFFFFFFFF, cdw11=slba >> 32,
                   cdw12=nlb - 1, sgl_len=nlb * 4096)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def admin_and_io(addr, port, subnqn):
    a = Queue(addr, port, subnqn, 0)
    # CC: EN=1, IOSQES=6, IOCQES=4; then one I/O queue.
    st, _ = a.command(fabrics(0x00, a.next(), cdw11=0x14, cdw12=1 | (6 << 16) | (4 << 20)))
    if st != 0:
        raise RuntimeError(f"CC.EN=1: status {st:#x}")
    st, _ = a.command(sqe(0x09, a.next(), cdw10=0x07, cdw11=0))
    if st != 0:
        raise RuntimeError(f"Set Features Number of Queues: {st:#x}")
    q = Queue(addr, port, subnqn, 1, a.cntlid)
    return a, q


def flood(addr, port, subnqn):
    a, q = admin_and_io(addr, port, subnqn)
    burst = b"".join(capsule(q.read_cmd((i * 8) % 60000, 4)) for i in range(100))
    q.s.settimeout(2)
    for _ in range(40):
        try:
            q.s.sendall(burst)
        except (socket.timeout, OSError):
            break  # the target stopped reading: back-pressure
        time.sleep(0.002)
    time.sleep(5)
    q.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    q.close()
    a.close()


def churn(addr, port, subnqn):
    a, q = admin_and_io(addr, port, subnqn)
    st, _ = q.command(q.read_cmd(0, 1))
    if st != 0:
        raise RuntimeError(f"read: {st:#x}")
    st, _ = q.command(fabrics(0x08, q.next()))
    if st != 0:
        raise RuntimeError(f"Disconnect: {st:#x}")
    q.close()
    a.close()
    time.sleep(0.05)


def no_icreq(addr, port, subnqn):
    socks = [socket.create_connection((addr, port), timeout=10) for _ in range(20)]
    time.sleep(3)  # beyond the soak's ic_timeout_ms (2 s): the target closes them
    for s in socks:
        s.close()


def mid_r2t(addr, port, subnqn):
    a, q = admin_and_io(addr, port, subnqn)
    for i in range(16):
        q.s.sendall(capsule(sqe(0x01, q.next(), nsid=1, cdw10=i * 32, cdw12=31,
                                sgl_len=131072)))
    for _ in range(16):
        ptype, _ = recv_pdu(q.s)
        if ptype != 0x09:
            raise RuntimeError(f"expected an R2T, got PDU type {ptype:#x}")
    time.sleep(1)
    q.close()
    a.close()


def mid_pdu(addr, port, subnqn):
    a, q = admin_and_io(addr, port, subnqn)
    c = capsule(q.read_cmd(0, 1))
    q.s.sendall(c[: len(c) // 2])
    time.sleep(0.1)
    q.close()
    a.close()


def garbage(addr, port, subnqn):
    s = socket.create_connection((addr, port), timeout=10)
    s.sendall(os.urandom(64))
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    s.close()
    time.sleep(0.05)


KINDS = [flood, churn, no_icreq, mid_r2t, mid_pdu, garbage]


def main():
    addr, port, subnqn, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    end = time.monotonic() + secs
    stats = {k.__name__: [0, 0, ""] for k in KINDS}

    def loop(kind):
        st = stats[kind.__name__]
        while time.monotonic() < end:
            try:
                kind(addr, port, subnqn)
                st[0] += 1
            except Exception as e:  # noqa: BLE001 - counted and reported
                st[1] += 1
                st[2] = repr(e)
                time.sleep(0.2)

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in KINDS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, (ok, failed, last) in stats.items():
        print(f"hostile {name:9s} {ok:6d} rounds, {failed} failed" + (f" (last: {last})" if failed else ""))


if __name__ == "__main__":
    main()
