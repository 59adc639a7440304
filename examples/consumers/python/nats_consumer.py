#!/usr/bin/env python3
"""Read lark-bridge's helpdesk tickets from NATS JetStream with nats-py and the CloudEvents SDK.

Handles both content modes the bridge publishes (sink.mode): structured (the whole CloudEvent
as JSON, headers Nats-Msg-Id and Content-Type only) and binary (data as the body, attributes
in ce- headers, percent-encoded). The CloudEvents NATS binding uses HTTP's header rules, so
the SDK's HTTP reader parses NATS messages: ce- headers mean binary mode, and their values
are percent-decoded.

    pip install cloudevents==2.2.0 nats-py==2.16.0
    python nats_consumer.py --url nats://127.0.0.1:4222 --count 10

Prints one line per ticket and exits after --count events or --timeout seconds (status 1 when
fewer arrived). Uses a durable pull consumer: run it again and it resumes after the last
acknowledged event.
"""

import argparse
import asyncio
import os
import sys
import time

import nats
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


async def main() -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=env("NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--stream", default=env("NATS_STREAM", "LARK_HELPDESK"))
    p.add_argument("--subject", default=env("NATS_SUBJECT", "lark.helpdesk.ticket.created.v1.>"))
    p.add_argument("--durable", default=env("NATS_DURABLE", "helpdesk-tickets-example"))
    p.add_argument("--count", type=int, default=int(env("COUNT", "10")), help="stop after N events")
    p.add_argument("--timeout", type=float, default=float(env("TIMEOUT", "60")), help="give up after S seconds")
    args = p.parse_args()

    nc = await nats.connect(args.url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        args.subject,
        durable=args.durable,
        stream=args.stream,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT),
    )
    seen = 0
    deadline = time.monotonic() + args.timeout
    try:
        while seen < args.count and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(min(10, args.count - seen), timeout=1)
            except NatsTimeout:
                continue
            for msg in msgs:
                event = from_http_event(HTTPMessage(headers=dict(msg.headers or {}), body=msg.data))
                handle(event)
                await msg.ack()
                seen += 1
    finally:
        await nc.drain()
    if seen < args.count:
        print(f"only {seen} of {args.count} events within {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


def handle(event) -> None:
    """Your business logic. `data` is the normalized ticket (schemas/helpdesk.ticket.created.v1.json)."""
    data = event.get_data()
    print(f"ticket id={event.get_id()} type={event.get_type()} "
          f"ticket_id={data['ticket_id']} helpdesk_id={data['helpdesk_id']}", flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
