#!/usr/bin/env python3
"""The official Lark SDK's long-connection client (PyPI lark-oapi, lark.ws.Client) against
fake-lark, across a restart of fake-lark.

  1. start fake-lark on a free loopback port (--count N --ping-interval S);
  2. lark.ws.Client (any app_id/app_secret, domain = fake-lark's URL) with a handler for
     helpdesk.ticket.created_v1 must receive N events, and fake-lark must report exactly those
     event ids acknowledged with 200;
  3. kill fake-lark and start it again on the same port;
  4. the client must reconnect by itself (the ClientConfig of the discovery answer drives its
     reconnect loop) and receive the second fake-lark's N events, acknowledged likewise.

Prints one line per step, then `lark-oapi: PASS` or `lark-oapi: FAIL (reason)`; exits 0 or 1.
A crash of the client's reconnect loop (e.g. the TypeError of a ClientConfig with missing fields)
is caught and reported with the ClientConfig the client had adopted.

Usage: lark_oapi_reconnect.py --fake-lark "CMD [ARGS]" [--count N] [--timeout S]
"""

import argparse
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import lark_oapi as lark
from lark_oapi.core.log import logger as lark_logger

# The SDK logs to stdout; keep stdout for this harness's own lines.
for _h in lark_logger.handlers:
    if isinstance(_h, logging.StreamHandler):
        _h.setStream(sys.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(msg: str) -> None:
    print(msg, flush=True)


class FakeLark:
    """One fake-lark process; its stdout goes to a file we parse."""

    def __init__(self, cmd: list, port: int, count: int, ping: int, workdir: str, n: int):
        self.log_path = os.path.join(workdir, f"fake-lark-{n}.log")
        self.args = cmd + ["--listen", f"127.0.0.1:{port}", "--count", str(count),
                           "--ping-interval", str(ping)]
        self.port = port
        self.proc = None

    def start(self, deadline: float) -> None:
        # The port was just released by the previous process; retry a refused bind briefly.
        while True:
            log = open(self.log_path, "w")
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
            log.close()
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return
                except OSError:
                    time.sleep(0.05)
            if time.monotonic() >= deadline:
                raise RuntimeError(f"fake-lark did not listen on {self.port}: {self.output()[-500:]}")
            time.sleep(0.2)  # exited (e.g. address in use): try again

    def output(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def acked_ids(self) -> set:
        # "reply 200 for <message id> (<event id>) from <device id> in N ms"
        return set(re.findall(r"^reply 200 for \S+ \((\S+)\)", self.output(), re.M))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--fake-lark", required=True, help="fake-lark command line (shell words)")
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--ping-interval", type=int, default=5)
    p.add_argument("--timeout", type=float, default=30, help="seconds per phase")
    args = p.parse_args()

    workdir = tempfile.mkdtemp(prefix="lark-oapi-check.")
    port = free_port()
    cmd = shlex.split(args.fake_lark)
    fakes = [FakeLark(cmd, port, args.count, args.ping_interval, workdir, n) for n in (1, 2)]

    lock = threading.Lock()
    received = {1: [], 2: []}       # event ids the handler got, per fake-lark
    phase = {"n": 1}
    reconnect_errors = []
    reconnected = threading.Event()

    def on_ticket(data: lark.helpdesk.v1.P2HelpdeskTicketCreatedV1) -> None:
        with lock:
            received[phase["n"]].append(data.header.event_id)
        say(f"  client got ticket {data.event.ticket_id} (event {data.header.event_id}, helpdesk {data.event.helpdesk_id})")

    handler = (lark.EventDispatcherHandler.builder("", "")
               .register_p2_helpdesk_ticket_created_v1(on_ticket)
               .build())
    client = lark.ws.Client("cli_fake_app", "fake-secret", event_handler=handler,
                            domain=f"http://127.0.0.1:{port}", log_level=lark.LogLevel.INFO)
    client.on_reconnected = reconnected.set

    # Harness instrumentation only: an exception in the SDK's reconnect loop ends a background
    # task silently; record it so the failure says why.
    original_reconnect = client._reconnect

    async def traced_reconnect():
        try:
            await original_reconnect()
        except BaseException as e:
            reconnect_errors.append("".join(traceback.format_exception_only(type(e), e)).strip())
            raise

    client._reconnect = traced_reconnect

    def client_config() -> str:
        return (f"ReconnectCount={client._reconnect_count!r} ReconnectInterval={client._reconnect_interval!r} "
                f"ReconnectNonce={client._reconnect_nonce!r} PingInterval={client._ping_interval!r}")

    def finish(code: int, reason: str = "") -> None:
        for f in fakes:
            f.stop()
        if code:
            for f in fakes:
                out = f.output().strip()
                if out:
                    say(f"  --- {os.path.basename(f.log_path)} (last lines)")
                    for line in out.splitlines()[-8:]:
                        say(f"      {line}")
        say("lark-oapi: PASS" if code == 0 else f"lark-oapi: FAIL ({reason})")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def wait_phase(n: int, fake: FakeLark) -> str:
        """'' when N events arrived and fake-lark acknowledged exactly those; else why not."""
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            with lock:
                got = list(received[n])
            if reconnect_errors:
                return f"the client's reconnect loop crashed: {reconnect_errors[0]} (ClientConfig adopted: {client_config()})"
            if fake.proc.poll() is not None:
                return f"fake-lark {n} exited with {fake.proc.returncode}"
            if len(got) >= args.count and len(fake.acked_ids()) >= args.count:
                break
            time.sleep(0.1)
        else:
            with lock:
                got = list(received[n])
            more = f"; client reconnect errors: {reconnect_errors}" if reconnect_errors else ""
            return (f"within {args.timeout:g} s the client got {len(got)} of {args.count} events and fake-lark "
                    f"{n} saw {len(fake.acked_ids())} acknowledged (ClientConfig adopted: {client_config()}){more}")
        acked = fake.acked_ids()
        if set(got) != acked or len(got) != len(set(got)):
            return f"ids differ: client got {sorted(got)}, fake-lark {n} acknowledged {sorted(acked)}"
        return ""

    def orchestrate() -> None:
        try:
            why = wait_phase(1, fakes[0])
            if why:
                finish(1, f"first connection: {why}")
            say(f"ok  {args.count} events received and acknowledged; ClientConfig adopted: {client_config()}")
            with lock:
                phase["n"] = 2
            fakes[0].stop()
            say(f"ok  fake-lark killed; starting it again on 127.0.0.1:{port}")
            fakes[1].start(time.monotonic() + 10)
            why = wait_phase(2, fakes[1])
            if why:
                finish(1, f"after the restart: {why}")
            if not reconnected.is_set():
                finish(1, "events arrived but the client never reported a reconnect")
            say(f"ok  the client reconnected and received {args.count} more events, acknowledged")
            finish(0)
        except Exception as e:  # the harness itself failed
            finish(1, f"harness error: {e!r}")

    say(f"fake-lark: {' '.join(fakes[0].args)}")
    try:
        fakes[0].start(time.monotonic() + 10)
    except Exception as e:
        finish(1, str(e))
    threading.Thread(target=orchestrate, daemon=True).start()
    # Hard stop, whatever happens inside the SDK.
    threading.Timer(3 * args.timeout + 20, lambda: finish(1, "overall timeout")).start()
    try:
        client.start()  # blocks (the SDK runs its own event loop forever)
    except Exception as e:
        finish(1, f"lark.ws.Client.start raised {e!r}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
