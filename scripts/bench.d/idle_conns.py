#!/usr/bin/env python3
"""Open N keep-alive connections to HOST:PORT, send one `GET /api/health` on each,
read the response, then keep them all open and idle until killed.

Prints "open <n> non2xx <n> error <text>" and then "READY" on stdout.
Sends `Authorization: Bearer $ALOU_ADMIN_KEY` when that variable is set (the key
never appears on a command line)."""
import os
import signal
import socket
import sys


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("connection closed before response headers")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip().lower()
    if b"content-length" in headers:
        left = int(headers[b"content-length"]) - len(body)
        while left > 0:
            chunk = s.recv(min(left, 65536))
            if not chunk:
                raise OSError("connection closed in response body")
            left -= len(chunk)
    elif headers.get(b"transfer-encoding") == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("connection closed in chunked body")
            body += chunk
    if headers.get(b"connection") == b"close":
        raise OSError("server closed the keep-alive connection (Connection: close)")
    return status


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    key = os.environ.get("ALOU_ADMIN_KEY", "")
    req = f"GET /api/health HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if key:
        req += f"Authorization: Bearer {key}\r\n"
    req = (req + "\r\n").encode()
    socks, non2xx, err = [], 0, None
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(req)
            status = read_response(s)
        except OSError as e:
            err = e
            break
        if not 200 <= status < 300:
            non2xx += 1
        socks.append(s)
    print(f"open {len(socks)} non2xx {non2xx} error {err}", flush=True)
    print("READY", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
