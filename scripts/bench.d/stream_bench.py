#!/usr/bin/env python3
"""Streaming benchmarks for scripts/bench (standard library only).

ttfb:  sequential streamed chat completions over one keep-alive connection
       each to the upstream directly and through alou, interleaved (one
       direct, one alou, ...), so both paths see the same machine state.
       Reports, per path, the p50/p90 time to the first content chunk and,
       for streams whose upstream waits SLOW ms before each chunk, the mean
       gap between chunks (a relay that buffers or re-chunks shows up here).
hold:  opens N streams to alou at once whose upstream sends a chunk every
       second, prints READY when every one of them got its first chunk, and
       keeps them open until killed; the caller samples alou's RSS.

Usage:
  stream_bench.py ttfb --direct HOST:PORT --alou HOST:PORT --key-file F [--n 1000] [--slow-n 50]
  stream_bench.py hold --alou HOST:PORT --key-file F --n 10000
The key file holds the alou API key (mode 600); it never appears in argv.
"""
import argparse
import asyncio
import json
import socket
import statistics
import sys
import time

MODEL = "streamer"


def body_for(content):
    return json.dumps({"model": MODEL, "stream": True,
                       "messages": [{"role": "user", "content": content}]}).encode()


def request_bytes(host, content, key=None):
    body = body_for(content)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n")
    if key:
        head += f"Authorization: Bearer {key}\r\n"
    return (head + "\r\n").encode() + body


class Conn:
    """One keep-alive HTTP/1.1 connection reading chunked SSE responses."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.host = addr
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def stream(self, content, key=None):
        """Sends one streamed request; returns (t_first_chunk, [t of each data event], status)."""
        t0 = time.perf_counter()
        self.sock.sendall(request_bytes(self.host, content, key))
        status = int(self._line().split()[1])
        chunked = False
        length = 0
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            if name.lower() == "content-length":
                length = int(value.strip())
        times = []
        if not chunked:
            self._exact(length)
            return None, times, status
        pending = b""
        while True:
            size = int(self._line().split(b";")[0], 16)
            if size == 0:
                self._line()
                break
            data = self._exact(size)
            self._exact(2)
            now = time.perf_counter() - t0
            pending += data
            while b"\n\n" in pending:
                event, pending = pending.split(b"\n\n", 1)
                if event.startswith(b"data: ") and event != b"data: [DONE]":
                    times.append(now)
        return (times[0] if times else None), times, status


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def ttfb(args):
    key = open(args.key_file).read().strip()
    direct, alou = Conn(args.direct), Conn(args.alou)
    words = " ".join(f"w{i}" for i in range(20))
    first = {"direct": [], "alou": []}
    gaps = {"direct": [], "alou": []}
    for _ in range(50):  # warm-up: pools, caches
        direct.stream("hello there")
        alou.stream("hello there", key)
    for i in range(args.n):
        for name, conn, k in (("direct", direct, None), ("alou", alou, key)):
            t, _, status = conn.stream(f"hello there {i}", k)
            if status != 200 or t is None:
                print(f"void: {name} answered HTTP {status}", file=sys.stderr)
                return 1
            first[name].append(t * 1e6)
    for i in range(args.slow_n):
        for name, conn, k in (("direct", direct, None), ("alou", alou, key)):
            _, times, status = conn.stream(f"/slow {args.slow} {words}", k)
            if status != 200 or len(times) < 10:
                print(f"void: {name} slow stream HTTP {status}, {len(times)} chunks", file=sys.stderr)
                return 1
            gaps[name].extend((b - a) * 1e6 for a, b in zip(times[1:], times[2:]))
    out = {"n": args.n, "slow_n": args.slow_n, "slow_ms": args.slow}
    for name in ("direct", "alou"):
        out[name] = {"ttfb_p50_us": round(pct(first[name], 50), 1), "ttfb_p90_us": round(pct(first[name], 90), 1),
                     "gap_mean_us": round(statistics.mean(gaps[name]), 1)}
    out["added_ttfb_p50_us"] = round(out["alou"]["ttfb_p50_us"] - out["direct"]["ttfb_p50_us"], 1)
    out["added_gap_us"] = round(out["alou"]["gap_mean_us"] - out["direct"]["gap_mean_us"], 1)
    print(json.dumps(out))
    return 0


def markdown(j):
    d, a = j["direct"], j["alou"]
    print(f"- streaming, time to first chunk p50 (c1, {j['n']} streams per path, interleaved): "
          f"direct {d['ttfb_p50_us']:.0f} µs, alou {a['ttfb_p50_us']:.0f} µs: "
          f"**{j['added_ttfb_p50_us']:+.0f} µs** (p90 {d['ttfb_p90_us']:.0f} / {a['ttfb_p90_us']:.0f} µs)")
    print(f"- streaming, mean gap between chunks (upstream waits {j['slow_ms']} ms per chunk, "
          f"{j['slow_n']} streams of 20 chunks per path): direct {d['gap_mean_us']:.0f} µs, "
          f"alou {a['gap_mean_us']:.0f} µs: **{j['added_gap_us']:+.0f} µs per chunk**")
    return 0


async def hold(args):
    key = open(args.key_file).read().strip()
    host, port = args.alou.rsplit(":", 1)
    words = " ".join(f"w{i}" for i in range(120))
    req = request_bytes(args.alou, f"/slow 1000 {words}", key)
    ready = 0
    failed = 0
    gate = asyncio.Semaphore(256)  # connects in flight (the listen backlog)
    all_ready = asyncio.Event()
    writers = []

    async def one():
        nonlocal ready, failed
        try:
            async with gate:
                reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 16)
                writers.append(writer)
                writer.write(req)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
                buf = b""
                while b"data: " not in buf:
                    chunk = await reader.read(65536)
                    if not chunk:
                        raise ConnectionError("closed before the first chunk")
                    buf += chunk
            ready += 1
            if ready + failed == args.n:
                all_ready.set()
            while await reader.read(65536):
                pass
        except Exception as e:  # noqa: BLE001 - counted and reported
            failed += 1
            if failed <= 3:
                print(f"stream failed: {e!r}", file=sys.stderr)
            if ready + failed == args.n:
                all_ready.set()

    t0 = time.perf_counter()
    tasks = [asyncio.create_task(one()) for _ in range(args.n)]
    await all_ready.wait()
    print(f"READY open {ready} failed {failed} seconds {time.perf_counter() - t0:.1f}", flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["ttfb", "hold", "md"])
    ap.add_argument("--json", help="md: the ttfb result line to render as markdown")
    ap.add_argument("--direct")
    ap.add_argument("--alou")
    ap.add_argument("--key-file")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--slow-n", type=int, default=30)
    ap.add_argument("--slow", type=int, default=5)
    ap.add_argument("--model", default=MODEL)
    args = ap.parse_args()
    globals()["MODEL"] = args.model
    if args.mode == "md":
        return markdown(json.loads(args.json))
    if args.mode == "ttfb":
        return ttfb(args)
    return asyncio.run(hold(args))


if __name__ == "__main__":
    sys.exit(main())
