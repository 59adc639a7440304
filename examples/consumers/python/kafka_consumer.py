#!/usr/bin/env python3
"""Read lark-bridge's helpdesk tickets from Kafka with the CloudEvents SDK and confluent-kafka.

Handles both content modes the bridge publishes (sink.mode): structured (the whole CloudEvent
as JSON, header content-type only) and binary (data as the value, attributes in ce_ headers).
The SDK's from_kafka_event tells them apart by the ce_ headers.

    pip install cloudevents==2.2.0 confluent-kafka==2.16.1
    python kafka_consumer.py --brokers 127.0.0.1:9092 --count 10

Prints one line per ticket and exits after --count events or --timeout seconds (status 1 when
fewer arrived). Kafka delivers at least once: a real consumer is idempotent on the event id.
"""

import argparse
import os
import sys
import time

from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka_event
from confluent_kafka import Consumer, KafkaError, KafkaException


def main() -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--brokers", default=env("KAFKA_BROKERS", "127.0.0.1:9092"))
    p.add_argument("--topic", default=env("KAFKA_TOPIC", "lark.helpdesk.ticket.created.v1"))
    p.add_argument("--group", default=env("KAFKA_GROUP", "helpdesk-tickets-example"))
    p.add_argument("--count", type=int, default=int(env("COUNT", "10")), help="stop after N events")
    p.add_argument("--timeout", type=float, default=float(env("TIMEOUT", "60")), help="give up after S seconds")
    args = p.parse_args()

    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        "auto.offset.reset": "earliest",  # a new group starts at the oldest event
        "enable.auto.commit": False,      # commit after handling: at-least-once
        "session.timeout.ms": 6000,
    })
    consumer.subscribe([args.topic])
    seen = 0
    deadline = time.monotonic() + args.timeout
    try:
        while seen < args.count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            event = from_kafka_event(KafkaMessage(
                headers={k: v for k, v in (msg.headers() or []) if v is not None},
                key=msg.key(),
                value=msg.value(),
            ))
            handle(event)
            consumer.commit(message=msg, asynchronous=False)
            seen += 1
    finally:
        consumer.close()
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
    sys.exit(main())
