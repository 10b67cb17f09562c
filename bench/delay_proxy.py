#!/usr/bin/env python3
"""A userspace TCP delay proxy for khard's benchmark (the kernel's netem is
not available where the benchmark runs).

Usage:
  delay_proxy.py serve --delay-ms D --map-file FILE [--ready-file F]
      FILE: one "LISTEN_ADDR:PORT TARGET_ADDR:PORT" per line. One process
      serves every mapping. Each chunk read in either direction is stamped
      with its arrival time and written out when arrival + D ms has come, in
      order (one FIFO per direction and connection; connections never wait
      for each other). The upstream connection itself is opened D ms after
      the client connected (the SYN's one-way trip), so the server's first
      bytes (the SSH banner) reach the client one full round trip after
      connect(), as on a real link with RTT = 2 D. Touches F once listening.
  delay_proxy.py selftest --delay-ms D [--rtt]
      Runs an echo server and the proxy in this process on 127.0.0.1 (free
      ports) and prints the median echo round trip, direct and through the
      proxy, over 50 pings on one connection, in ms ("direct proxied").
  delay_proxy.py rtt ADDR:PORT [--count N]
      Connects N times (default 7) and prints the median milliseconds from
      connect() to the first line the server sends (sshd's banner): about 0
      direct, about 2 D through the proxy.

Standard library only (asyncio); Python 3.8+.
"""

import argparse
import asyncio
import signal
import socket
import statistics
import sys
import time


def split_addr(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad address {s!r} (want ADDR:PORT)")
    return host, int(port)


def nodelay(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class Proxy:
    def __init__(self, delay_s):
        self.delay = delay_s
        self.loop = asyncio.get_running_loop()
        self.conns = 0

    async def rx(self, reader, queue):
        """Reads chunks as they come, stamping each with its arrival time."""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                queue.put_nowait((self.loop.time(), data))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait((self.loop.time(), None))  # EOF, delayed like data

    async def tx(self, writer_fut, queue):
        """Writes each chunk once its arrival time + delay has come, in order."""
        writer = None
        try:
            while True:
                t, data = await queue.get()
                wait = t + self.delay - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if writer is None:
                    writer = await writer_fut
                    if writer is None:  # upstream connect failed
                        return
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass

    async def handle(self, creader, cwriter, target):
        self.conns += 1
        nodelay(cwriter)
        up_fut = self.loop.create_future()
        to_up = asyncio.Queue()
        to_client = asyncio.Queue()
        done_client = self.loop.create_future()
        done_client.set_result(cwriter)
        tasks = [
            asyncio.ensure_future(self.rx(creader, to_up)),
            asyncio.ensure_future(self.tx(up_fut, to_up)),
        ]
        uwriter = None
        try:
            # The SYN's one-way trip to the server.
            await asyncio.sleep(self.delay)
            try:
                ureader, uwriter = await asyncio.open_connection(*target)
            except OSError as e:
                print(f"delay_proxy: connect {target[0]}:{target[1]}: {e}", file=sys.stderr)
                up_fut.set_result(None)
                return
            nodelay(uwriter)
            up_fut.set_result(uwriter)
            tasks += [
                asyncio.ensure_future(self.rx(ureader, to_client)),
                asyncio.ensure_future(self.tx(done_client, to_client)),
            ]
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for t in tasks:
                t.cancel()
            for w in (cwriter, uwriter):
                if w is not None:
                    try:
                        w.close()
                    except Exception:
                        pass


async def serve(args):
    maps = []
    with open(args.map_file) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                listen, target = line.split()
                maps.append((split_addr(listen), split_addr(target)))
    if not maps:
        sys.exit("delay_proxy: empty map file")
    proxy = Proxy(args.delay_ms / 2000.0 if args.rtt else args.delay_ms / 1000.0)
    servers = []
    for (lh, lp), target in maps:
        async def cb(r, w, target=target):
            await proxy.handle(r, w, target)

        servers.append(await asyncio.start_server(cb, lh, lp, backlog=1024, reuse_address=True))
    if args.ready_file:
        open(args.ready_file, "w").close()
    print(f"delay_proxy: {len(maps)} mapping(s), one-way delay {proxy.delay * 1000:.1f} ms", file=sys.stderr)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    await stop
    for s in servers:
        s.close()
    print(f"delay_proxy: served {proxy.conns} connection(s)", file=sys.stderr)


async def selftest(args):
    delay = args.delay_ms / 2000.0 if args.rtt else args.delay_ms / 1000.0

    async def echo(r, w):
        nodelay(w)
        while True:
            d = await r.read(65536)
            if not d:
                break
            w.write(d)
            await w.drain()
        w.close()

    esrv = await asyncio.start_server(echo, "127.0.0.1", 0)
    eport = esrv.sockets[0].getsockname()[1]
    proxy = Proxy(delay)
    psrv = await asyncio.start_server(lambda r, w: proxy.handle(r, w, ("127.0.0.1", eport)), "127.0.0.1", 0)
    pport = psrv.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()

    def pings(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            xs = []
            for _ in range(51):
                t = time.perf_counter()
                s.sendall(b"ping")
                got = b""
                while len(got) < 4:
                    got += s.recv(16)
                xs.append((time.perf_counter() - t) * 1000)
            return statistics.median(xs[1:])  # the first includes the delayed connect

    direct = await loop.run_in_executor(None, pings, eport)
    proxied = await loop.run_in_executor(None, pings, pport)
    print(f"{direct:.2f} {proxied:.2f}")
    await asyncio.sleep(2 * delay + 0.1)  # let both connections wind down
    esrv.close()
    psrv.close()


def rtt(args):
    host, port = split_addr(args.addr)
    samples = []
    for _ in range(args.count):
        t0 = time.perf_counter()
        with socket.create_connection((host, port), timeout=10) as s:
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            samples.append((time.perf_counter() - t0) * 1000)
    print(f"{statistics.median(samples):.2f}")


def main():
    p = argparse.ArgumentParser(description="TCP delay proxy (see the module doc)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--delay-ms", type=float, required=True,
                   help="one-way delay in ms (with --rtt: the round-trip time)")
    s.add_argument("--rtt", action="store_true", help="--delay-ms is the RTT; each way gets half")
    s.add_argument("--map-file", required=True)
    s.add_argument("--ready-file")
    t = sub.add_parser("selftest")
    t.add_argument("--delay-ms", type=float, required=True)
    t.add_argument("--rtt", action="store_true")
    r = sub.add_parser("rtt")
    r.add_argument("addr")
    r.add_argument("--count", type=int, default=7)
    args = p.parse_args()
    if args.cmd == "serve":
        asyncio.run(serve(args))
    elif args.cmd == "selftest":
        asyncio.run(selftest(args))
    else:
        rtt(args)


if __name__ == "__main__":
    main()
