// Read lark-bridge's helpdesk tickets from Kafka with kafkajs and the CloudEvents SDK.
//
// Handles both content modes the bridge publishes (sink.mode): structured (the whole CloudEvent
// as JSON, header content-type only) and binary (data as the value, attributes in ce_ headers).
// The SDK's Kafka.toEvent tells them apart by the content type.
//
//   npm ci
//   node kafka-consumer.mjs --brokers 127.0.0.1:9092 --count 10
//
// Prints one line per ticket and exits after --count events or --timeout seconds (status 1 when
// fewer arrived). Kafka delivers at least once: a real consumer is idempotent on the event id.
import { parseArgs } from "node:util";
import { Kafka as CloudEventsKafka } from "cloudevents";
import { Kafka, logLevel } from "kafkajs";

const env = process.env;
const { values: args } = parseArgs({
  options: {
    brokers: { type: "string", default: env.KAFKA_BROKERS ?? "127.0.0.1:9092" },
    topic: { type: "string", default: env.KAFKA_TOPIC ?? "lark.helpdesk.ticket.created.v1" },
    group: { type: "string", default: env.KAFKA_GROUP ?? "helpdesk-tickets-example-node" },
    count: { type: "string", default: env.COUNT ?? "10" },
    timeout: { type: "string", default: env.TIMEOUT ?? "60" },
  },
});
const count = Number(args.count);
const timeoutMs = Number(args.timeout) * 1000;

const kafka = new Kafka({
  clientId: "helpdesk-tickets-example",
  brokers: args.brokers.split(","),
  logLevel: logLevel.WARN,
});
const consumer = kafka.consumer({ groupId: args.group, sessionTimeout: 6000, heartbeatInterval: 1000 });

// Your business logic. `data` is the normalized ticket (schemas/helpdesk.ticket.created.v1.json).
function handle(event) {
  const { ticket_id, helpdesk_id } = event.data;
  console.log(`ticket id=${event.id} type=${event.type} ticket_id=${ticket_id} helpdesk_id=${helpdesk_id}`);
}

let seen = 0;
let finish;
const done = new Promise((resolve) => (finish = resolve));
const timer = setTimeout(() => finish(), timeoutMs);

await consumer.connect();
await consumer.subscribe({ topic: args.topic, fromBeginning: true });
await consumer.run({
  // kafkajs commits the offset after eachMessage returns: at-least-once.
  eachMessage: async ({ message }) => {
    if (seen >= count) return;
    // kafkajs hands out Buffers; the CloudEvents SDK reads strings.
    const headers = Object.fromEntries(
      Object.entries(message.headers ?? {}).map(([k, v]) => [k, v?.toString()]),
    );
    const event = CloudEventsKafka.toEvent({
      headers,
      key: message.key?.toString(),
      value: message.value.toString(),
    });
    handle(event);
    if (++seen >= count) finish();
  },
});
await done;
clearTimeout(timer);
await consumer.disconnect();
if (seen < count) {
  console.error(`only ${seen} of ${count} events within ${args.timeout} s`);
  process.exit(1);
}
