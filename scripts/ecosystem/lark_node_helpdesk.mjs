// The official Lark SDK for Node (@larksuiteoapi/node-sdk) makes the helpdesk calls the bridge
// makes — tenant token, subscribe, unsubscribe, ticket detail — against fake-lark's open API.
// fake-lark checks both authorizations as Lark does, so a pass shows that the fake answers what
// the SDK expects and accepts what the SDK sends; scripts/check-lark-node-sdk.sh then compares
// these calls with the bridge's own.
//
// Usage: node lark_node_helpdesk.mjs DOMAIN APP_ID APP_SECRET HELPDESK_ID HELPDESK_TOKEN TICKET_ID
// Prints one line per call (`sdk <call>: ok …`); exits 1 on the first failure.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const lark = require('@larksuiteoapi/node-sdk');

const [domain, appId, appSecret, helpDeskId, helpDeskToken, ticketId] = process.argv.slice(2);
if (!ticketId) {
  console.error('usage: lark_node_helpdesk.mjs DOMAIN APP_ID APP_SECRET HELPDESK_ID HELPDESK_TOKEN TICKET_ID');
  process.exit(2);
}

const client = new lark.Client({
  appId,
  appSecret,
  domain,
  helpDeskId,
  helpDeskToken,
  loggerLevel: lark.LoggerLevel.error,
});
const helpdesk = lark.withHelpDeskCredential();

const events = [
  { type: 'helpdesk.ticket', subtype: 'ticket.created_v1' },
  { type: 'helpdesk.ticket', subtype: 'ticket.updated_v1' },
  { type: 'helpdesk.ticket_message', subtype: 'ticket_message.created_v1' },
  { type: 'helpdesk.notification', subtype: 'notification.approve_v1' },
];

function check(name, res) {
  if (!res || res.code !== 0) {
    console.log(`sdk ${name}: FAIL ${JSON.stringify(res)}`);
    process.exit(1);
  }
}

try {
  const sub = await client.helpdesk.event.subscribe({ data: { events } }, helpdesk);
  check('subscribe', sub);
  console.log('sdk subscribe: ok');

  const ticket = await client.helpdesk.ticket.get({ path: { ticket_id: ticketId } }, helpdesk);
  check('ticket.get', ticket);
  const fields = ticket.data?.ticket?.customized_fields ?? [];
  if (!Array.isArray(fields) || fields.length === 0 || !fields[0].key_name) {
    console.log(`sdk ticket.get: FAIL no customized_fields in ${JSON.stringify(ticket.data)}`);
    process.exit(1);
  }
  console.log(`sdk ticket.get: ok, ${fields.length} customized fields (${fields.map((f) => f.key_name).join(', ')})`);

  const unsub = await client.helpdesk.event.unsubscribe({ data: { events } }, helpdesk);
  check('unsubscribe', unsub);
  console.log('sdk unsubscribe: ok');
} catch (e) {
  const data = e?.response?.data;
  console.log(`sdk: FAIL ${e?.message ?? e}${data ? ' ' + JSON.stringify(data) : ''}`);
  process.exit(1);
}
