#!/usr/bin/python3
"""Test fixture: Debian's nginx on 127.0.0.1 plus a seeded fault-injecting HTTP proxy in front.

Run as a program (the C++ tests do, through tests/remote/fixture.h):
    fixture.py --root DIR [--rtt-ms 20] [--bandwidth BYTES_PER_S] [--seed 1]
prints one JSON line {"nginx": port, "proxy": port, "root": DIR} once both listen, and serves
until stdin closes or SIGTERM (then nginx is stopped). Or import it: `with Fixture(root) as f:`.

Everything lives in a temp dir (config, pid, logs, temp paths): no root config is touched and
nginx runs with `daemon off;` as a child of this process. Only loopback addresses are used.

The proxy speaks HTTP/1.1 keep-alive and handles one request at a time per connection. Faults
are drawn per request from random.Random(seed): `reset` closes the connection before answering,
`error` answers 503, `truncate` sends the headers and half the body, then closes. They can be
changed at run time with `GET /__faults?reset=0.1&error=0.1&truncate=0.1&seed=3`; `GET /__stats`
returns {"requests": n, "bytes": n, "faults": n} counted over the forwarded requests (stats
requests themselves excluded); `GET /__reset_stats` zeroes them. `--rtt-ms` delays each answer by
one round trip; `--bandwidth` caps the bytes/s of all answers together (one shared link).
"""
import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def die_with_parent():
    """nginx gets SIGKILL if this fixture dies without its cleanup (e.g. killed by a timeout)."""
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_config(tmp, root, port):
    # As root, nginx's workers switch to `user`; keep them root so they can read the temp dir.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""{user}daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log {tmp}/access.log;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  keepalive_requests 100000;
  etag on;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location /forbidden/ {{ return 403; }}
  }}
}}
"""


class Link:
    """A shared bandwidth cap: each chunk reserves the link's next free time slot."""

    def __init__(self, bytes_per_s):
        self.rate = bytes_per_s
        self.next_free = 0.0

    async def send(self, writer, data):
        if not self.rate:
            writer.write(data)
            await writer.drain()
            return
        step = 64 * 1024
        for i in range(0, len(data), step):
            chunk = data[i:i + step]
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + len(chunk) / self.rate
            await asyncio.sleep(self.next_free - now)
            writer.write(chunk)
            await writer.drain()


class Proxy:
    def __init__(self, upstream_port, rtt_ms=0.0, bandwidth=0, seed=1):
        self.upstream_port = upstream_port
        self.rtt = rtt_ms / 1000.0
        self.link = Link(bandwidth)
        self.faults = {"reset": 0.0, "error": 0.0, "truncate": 0.0}
        self.rng = random.Random(seed)
        self.stats = {"requests": 0, "bytes": 0, "faults": 0}

    async def read_head(self, reader):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return head, lines[0], headers

    def control(self, target):
        url = urllib.parse.urlparse(target)
        if url.path == "/__stats":
            return json.dumps(self.stats).encode()
        if url.path == "/__reset_stats":
            self.stats = {"requests": 0, "bytes": 0, "faults": 0}
            return b"{}"
        q = urllib.parse.parse_qs(url.query)
        for k in self.faults:
            if k in q:
                self.faults[k] = float(q[k][0])
        if "seed" in q:
            self.rng = random.Random(int(q["seed"][0]))
        if "rtt_ms" in q:
            self.rtt = float(q["rtt_ms"][0]) / 1000.0
        return json.dumps(self.faults).encode()

    def draw_fault(self):
        r = self.rng.random()
        for kind in ("reset", "error", "truncate"):
            if r < self.faults[kind]:
                return kind
            r -= self.faults[kind]
        return None

    async def handle(self, creader, cwriter):
        up = None
        try:
            while True:
                try:
                    head, request_line, headers = await self.read_head(creader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                parts = request_line.split(" ")
                method, target = parts[0], parts[1] if len(parts) > 1 else "/"
                if target.startswith("/__"):
                    body = self.control(target)
                    cwriter.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
                    await cwriter.drain()
                    continue
                self.stats["requests"] += 1
                fault = self.draw_fault()
                if fault:
                    self.stats["faults"] += 1
                if self.rtt:
                    await asyncio.sleep(self.rtt)
                if fault == "reset":
                    sock = cwriter.get_extra_info("socket")
                    if sock is not None:  # RST rather than FIN
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return
                if fault == "error":
                    cwriter.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                  b"Retry-After: 0\r\n\r\n")
                    await cwriter.drain()
                    continue
                if up is None:
                    up = await asyncio.open_connection("127.0.0.1", self.upstream_port)
                ureader, uwriter = up
                uwriter.write(head)
                await uwriter.drain()
                rhead, _, rheaders = await self.read_head(ureader)
                length = int(rheaders.get("content-length", "0"))
                body = b"" if method == "HEAD" else await ureader.readexactly(length)
                self.stats["bytes"] += len(body)
                if fault == "truncate" and body:
                    await self.link.send(cwriter, rhead + body[:len(body) // 2])
                    return
                await self.link.send(cwriter, rhead + body)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if up is not None:
                up[1].close()
            cwriter.close()


class Fixture:
    """nginx + proxy; `with Fixture(root) as f: f.url("x.ferry")`."""

    def __init__(self, root, rtt_ms=0.0, bandwidth=0, seed=1):
        self.root = os.path.abspath(root)
        self.args = [sys.executable, os.path.abspath(__file__), "--root", self.root,
                     "--rtt-ms", str(rtt_ms), "--bandwidth", str(bandwidth), "--seed", str(seed)]

    def __enter__(self):
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            raise RuntimeError("remote fixture failed to start (see its stderr)")
        info = json.loads(line)
        self.nginx_port, self.proxy_port = info["nginx"], info["proxy"]
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()  # the fixture exits when its stdin closes
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def url(self, name, direct=False):
        port = self.nginx_port if direct else self.proxy_port
        return f"http://127.0.0.1:{port}/{name}"

    def control(self, query):
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.proxy_port}/{query}",
                                    timeout=10) as r:
            return json.loads(r.read())

    def stats(self):
        return self.control("__stats")


def wait_for_port(port, proc, deadline_s=10.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on 127.0.0.1:{port} within {deadline_s}s")


async def serve(args, nginx_port):
    proxy = Proxy(nginx_port, args.rtt_ms, args.bandwidth, args.seed)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy_port = server.sockets[0].getsockname()[1]
    print(json.dumps({"nginx": nginx_port, "proxy": proxy_port, "root": args.root}), flush=True)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: done.done() or (
        not os.read(sys.stdin.fileno(), 4096) and done.set_result(None)))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: done.done() or done.set_result(None))
    await done
    server.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--rtt-ms", type=float, default=0.0)
    p.add_argument("--bandwidth", type=float, default=0, help="bytes/s cap, 0: none")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="ferry-nginx-")
    nginx = None
    try:
        for attempt in range(5):  # a free port may be taken before nginx binds it: try another
            port = free_port()
            with open(os.path.join(tmp, "nginx.conf"), "w") as f:
                f.write(nginx_config(tmp, os.path.abspath(args.root), port))
            nginx = subprocess.Popen([NGINX, "-p", tmp, "-e", os.path.join(tmp, "error.log"),
                                      "-c", os.path.join(tmp, "nginx.conf")],
                                     stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
            try:
                wait_for_port(port, nginx)
                break
            except RuntimeError:
                if nginx.poll() is None:
                    nginx.kill()
                nginx.wait()
                nginx = None
        if nginx is None:
            with open(os.path.join(tmp, "error.log")) as f:
                sys.stderr.write(f.read())
            sys.exit("fixture: nginx failed to start")
        asyncio.run(serve(args, port))
    finally:
        if nginx is not None:
            nginx.terminate()
            try:
                nginx.wait(timeout=5)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
