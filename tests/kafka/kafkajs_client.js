// Shale's Kafka listener against kafkajs: an admin client, a gzip round
// trip and a consumer group. Run by tests/tests/kafka.rs with
// KAFKA_BOOTSTRAP set (KAFKA_SASL_TOKEN and KAFKA_CA for SASL over TLS).
const fs = require('fs');
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const run = String(Date.now()).slice(-9);
const topic = `js-${run}`;
const options = { clientId: 'shale-test', brokers: [process.env.KAFKA_BOOTSTRAP], logLevel: logLevel.NOTHING };
if (process.env.KAFKA_SASL_TOKEN) {
  options.sasl = { mechanism: 'plain', username: 'token', password: process.env.KAFKA_SASL_TOKEN };
  options.ssl = { ca: [fs.readFileSync(process.env.KAFKA_CA)] };
}
const kafka = new Kafka(options);

function check(ok, what) {
  if (!ok) throw new Error(what);
}

(async () => {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }] });
  check((await admin.listTopics()).includes(topic), 'the new topic is listed');
  const offsets = await admin.fetchTopicOffsets(topic);
  check(offsets.length === 2 && offsets.every((o) => o.high === '0'), `empty topic offsets: ${JSON.stringify(offsets)}`);
  await admin.disconnect();

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = Array.from({ length: 30 }, (_, i) => ({ key: `k${i}`, value: `v${i}`, headers: { i: String(i) } }));
  const acks = await producer.send({ topic, compression: CompressionTypes.GZIP, messages });
  check(acks.every((a) => a.errorCode === 0), `acks: ${JSON.stringify(acks)}`);
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: `js-group-${run}`, sessionTimeout: 6000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Map();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${seen.size} of 30`)), 30000);
    consumer.run({
      eachMessage: async ({ message }) => {
        seen.set(message.key.toString(), [message.value.toString(), message.headers.i.toString()]);
        if (seen.size === 30) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  await consumer.disconnect();
  for (let i = 0; i < 30; i++) {
    const got = seen.get(`k${i}`);
    check(got && got[0] === `v${i}` && got[1] === String(i), `record k${i}: ${got}`);
  }
  console.log('kafkajs: admin, idempotent gzip produce of 30 records, group consume');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
