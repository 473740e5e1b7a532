#!/usr/bin/env python3
"""Cut the power of a pfail bdev, at the first moment its cache holds something.

Polls bdev_get_bdevs for the pfail device's cached_blocks (every few milliseconds, on one
connection to shoald's JSON-RPC socket, so that the cut follows the observation within about a
millisecond) and calls bdev_pfail_cut as soon as it is above zero, or after --wait seconds
anyway. A cut of an empty cache loses nothing and tests little: the crash tests use this to cut
at a random instant that has writes in flight. Prints one JSON line: the cut's answer plus
"cached_seen" (the cached_blocks observed just before) and "waited_ms".
"""
import argparse
import json
import socket
import sys
import time


class Rpc:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(65)
        self.s.connect(path)
        self.buf = ""
        self.dec = json.JSONDecoder()
        self.id = 0

    def call(self, method, params):
        self.id += 1
        req = {"jsonrpc": "2.0", "id": self.id, "method": method, "params": params}
        self.s.sendall(json.dumps(req).encode())
        while True:
            text = self.buf.lstrip()
            if text:
                try:
                    obj, end = self.dec.raw_decode(text)
                    self.buf = text[end:]
                    if "error" in obj:
                        raise RuntimeError(f"{method}: {obj['error']}")
                    return obj["result"]
                except ValueError:
                    pass
            chunk = self.s.recv(65536)
            if not chunk:
                raise RuntimeError("shoald closed the RPC connection")
            self.buf += chunk.decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--keep", required=True, choices=["none", "all", "random"])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--wait", type=float, default=3.0)
    a = ap.parse_args()
    rpc = Rpc(a.socket)
    t0 = time.monotonic()
    cached = 0
    while True:
        b = rpc.call("bdev_get_bdevs", {"name": a.name})
        cached = b[0]["driver_specific"]["pfail"]["cached_blocks"]
        if cached > 0 or time.monotonic() - t0 > a.wait:
            break
        time.sleep(0.002)
    waited = int((time.monotonic() - t0) * 1000)
    out = rpc.call("bdev_pfail_cut", {"name": a.name, "keep": a.keep, "seed": a.seed})
    out["cached_seen"] = cached
    out["waited_ms"] = waited
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - one line for the calling script
        print(f"pfail-cut: {e}", file=sys.stderr)
        sys.exit(1)
