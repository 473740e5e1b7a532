#!/usr/bin/env python3
"""A tiny HTTP front for shoald's JSON-RPC, so that a test guest can change the target.

GET /rpc/<method>?<key>=<value>... calls <method> with those params (values that parse as JSON
are sent as JSON, others as strings; nested keys use dots: namespace.bdev_name=Malloc2) on the
Unix socket given with --socket, and answers the JSON-RPC response. Bound to 127.0.0.1 only.
It prints "port N" on its first line.
"""
import argparse
import http.server
import json
import socket
import urllib.parse


def rpc(path, method, params):
    req = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params:
        req["params"] = params
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    s.sendall(json.dumps(req).encode())
    buf, dec = "", json.JSONDecoder()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("shoald closed the RPC connection")
        buf += chunk.decode()
        try:
            obj, _ = dec.raw_decode(buf.strip())
            s.close()
            return obj
        except ValueError:
            continue


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    args = ap.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) != 2 or parts[0] != "rpc":
                self.send_error(404)
                return
            params = {}
            for key, value in urllib.parse.parse_qsl(url.query):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
                node = params
                *path, last = key.split(".")
                for p in path:
                    node = node.setdefault(p, {})
                node[last] = value
            body = json.dumps(rpc(args.socket, parts[1], params)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *a):
            print("rpc-trigger:", fmt % a, flush=True)

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    print("port", srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
