#!/usr/bin/env python3
"""A client framed exactly like SPDK's rpc.py (JSONRPCClient in python/spdk/rpc/client.py).

It sends json.dumps(request, indent=2) with no trailing newline (several queued requests are
joined by "\\n" and sent with one sendall, as rpc.py's flush() does), and decodes responses with
json.JSONDecoder().raw_decode on an accumulating buffer after lstrip(), receiving 4096 bytes at
a time.

Usage: rpc_mimic_client.py SOCKET < calls.json
  calls.json: {"pipelined": [[method, params-or-null], ...], "sequential": [[...], ...]}
Prints a JSON object {"pipelined": [responses...], "sequential": [responses...]}.
"""
import json
import socket
import sys


class MimicClient:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(10.0)
        self.request_id = 0
        self.recv_buf = ""
        self.reqs = []

    def add_request(self, method, params):
        self.request_id += 1
        req = {"jsonrpc": "2.0", "method": method, "id": self.request_id}
        if params:
            req["params"] = params
        self.reqs.append(req)

    def flush(self):
        reqstr = "\n".join(json.dumps(req, indent=2) for req in self.reqs)
        self.reqs = []
        self.sock.sendall(reqstr.encode("utf-8"))

    def decode_one_response(self):
        try:
            buf = self.recv_buf.lstrip()
            obj, idx = json.JSONDecoder().raw_decode(buf)
            self.recv_buf = buf[idx:]
            return obj
        except ValueError:
            return None

    def recv(self):
        response = self.decode_one_response()
        while not response:
            newdata = self.sock.recv(4096)
            if not newdata:
                raise RuntimeError("connection closed with partial response: %r" % self.recv_buf)
            self.recv_buf += newdata.decode("utf-8")
            response = self.decode_one_response()
        return response


def main():
    calls = json.load(sys.stdin)
    client = MimicClient(sys.argv[1])
    out = {"pipelined": [], "sequential": []}
    for method, params in calls.get("pipelined", []):
        client.add_request(method, params)
    if client.reqs:
        n = len(client.reqs)
        client.flush()
        out["pipelined"] = [client.recv() for _ in range(n)]
    for method, params in calls.get("sequential", []):
        client.add_request(method, params)
        client.flush()
        out["sequential"].append(client.recv())
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
