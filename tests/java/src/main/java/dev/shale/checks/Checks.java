package dev.shale.checks;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Apache Kafka's own Java client (the reference implementation) against
 * Shale's Kafka listener, checked against Shale's HTTP API. One JVM runs
 * every check it is given: {@code Checks BOOTSTRAP URL CHECK...}. Each
 * check throws on a failure; the process exits non-zero then.
 */
public final class Checks {
    private static final String RUN = Long.toString(System.nanoTime(), 36);
    private static String bootstrap;
    private static String url;
    private static final HttpClient HTTP = HttpClient.newHttpClient();

    public static void main(String[] args) throws Exception {
        bootstrap = args[0];
        url = args[1];
        for (String check : Arrays.copyOfRange(args, 2, args.length)) {
            long started = System.nanoTime();
            switch (check) {
                case "round_trip" -> roundTrip();
                case "cooperative_group" -> group(false);
                case "consumer_protocol_group" -> group(true);
                case "tools" -> Tools.run(bootstrap, url, RUN);
                case "tools_admin" -> Tools.admin(bootstrap, RUN);
                default -> throw new IllegalArgumentException("no check " + check);
            }
            System.out.printf("java check %s passed in %d ms%n", check, (System.nanoTime() - started) / 1_000_000);
        }
        System.exit(0);
    }

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static String http(String method, String path, String body) throws Exception {
        HttpResponse<String> r = send(method, path, body);
        check(r.statusCode() < 300, method + " " + path + " answered " + r.statusCode() + ": " + r.body());
        return r.body();
    }

    static HttpResponse<String> send(String method, String path, String body) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(url + path)).timeout(Duration.ofSeconds(30));
        b = body == null ? b.method(method, HttpRequest.BodyPublishers.noBody())
                : b.header("content-type", "application/json").method(method, HttpRequest.BodyPublishers.ofString(body));
        return HTTP.send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    static Properties props(Object... kv) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        for (int i = 0; i < kv.length; i += 2) p.put(kv[i], kv[i + 1]);
        return p;
    }

    static void createTopic(String name, int partitions) throws Exception {
        try (Admin admin = Admin.create(props())) {
            admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1))).all().get(30, TimeUnit.SECONDS);
        }
    }

    static KafkaProducer<String, String> producer() {
        // idempotent (the default) with acks=all
        return new KafkaProducer<>(props("key.serializer", StringSerializer.class.getName(),
                "value.serializer", StringSerializer.class.getName(), "linger.ms", "5"));
    }

    /** Produce with the Java producer, read the same records over HTTP and with the Java consumer. */
    static void roundTrip() throws Exception {
        String topic = "java-" + RUN;
        createTopic(topic, 3);
        List<RecordMetadata> acks = new ArrayList<>();
        try (KafkaProducer<String, String> p = producer()) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < 30; i++) sent.add(p.send(new ProducerRecord<>(topic, "key-" + (i % 7), "value-" + i)));
            for (Future<RecordMetadata> f : sent) acks.add(f.get(30, TimeUnit.SECONDS));
        }
        for (int i = 0; i < acks.size(); i++) {
            RecordMetadata m = acks.get(i);
            String body = http("GET", "/v1/topics/" + topic + "/partitions/" + m.partition() + "/records?offset="
                    + m.offset() + "&max_records=1", null);
            check(body.contains("\"key\":\"key-" + (i % 7) + "\"") && body.contains("\"value\":\"value-" + i + "\""),
                    "HTTP shows record " + i + " at " + m.partition() + "/" + m.offset() + ": " + body);
        }
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(props("group.id", "java-reader-" + RUN,
                "auto.offset.reset", "earliest", "key.deserializer", StringDeserializer.class.getName(),
                "value.deserializer", StringDeserializer.class.getName()))) {
            c.subscribe(List.of(topic));
            Set<String> seen = new HashSet<>();
            long deadline = System.currentTimeMillis() + 60_000;
            while (seen.size() < 30 && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) seen.add(r.value());
            }
            check(seen.size() == 30, "the Java consumer read " + seen.size() + " of 30");
            c.commitSync();
        }
        String offsets = http("GET", "/v1/groups/java-reader-" + RUN + "/offsets", null);
        check(offsets.contains("\"offset\""), "HTTP shows the group's commits: " + offsets);
    }

    /** A consumer in a group, reading on its own thread, recording what it was given and what it gave back. */
    static final class Member implements Runnable {
        final String name;
        final KafkaConsumer<String, String> consumer;
        final Set<String> read = ConcurrentHashMap.newKeySet();
        final Set<TopicPartition> owned = ConcurrentHashMap.newKeySet();
        /** Per revocation: how many it revoked, and how many it owned then. */
        final List<int[]> revocations = new CopyOnWriteArrayList<>();
        final AtomicBoolean stop = new AtomicBoolean();
        volatile Throwable failed;

        /** A member of Kafka's classic protocol with the cooperative-sticky assignor, or of KIP-848's. */
        Member(String name, String group, String topic, boolean kip848) {
            this.name = name;
            Properties p = props("group.id", group, "client.id", name, "auto.offset.reset", "earliest",
                    "enable.auto.commit", "false", "max.poll.records", "20",
                    "key.deserializer", StringDeserializer.class.getName(),
                    "value.deserializer", StringDeserializer.class.getName());
            if (kip848) {
                // the broker assigns and sets the session; the client may not
                p.put("group.protocol", "consumer");
            } else {
                p.put("partition.assignment.strategy", CooperativeStickyAssignor.class.getName());
                p.put("heartbeat.interval.ms", "500");
                p.put("session.timeout.ms", "10000");
            }
            consumer = new KafkaConsumer<>(p);
            consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                    if (!parts.isEmpty()) revocations.add(new int[] {parts.size(), owned.size()});
                    consumer.commitSync();
                    owned.removeAll(parts);
                }
                public void onPartitionsAssigned(Collection<TopicPartition> parts) { owned.addAll(parts); }
                public void onPartitionsLost(Collection<TopicPartition> parts) { owned.removeAll(parts); }
            });
        }

        public void run() {
            try {
                while (!stop.get()) {
                    ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                    for (ConsumerRecord<String, String> r : records) read.add(r.value());
                    if (!records.isEmpty()) consumer.commitSync();
                }
            } catch (Throwable t) {
                failed = t;
            } finally {
                consumer.close();
            }
        }
    }

    static void waitFor(String what, long ms, java.util.function.BooleanSupplier ok) throws InterruptedException {
        long deadline = System.currentTimeMillis() + ms;
        while (!ok.getAsBoolean()) {
            check(System.currentTimeMillis() < deadline, "timed out waiting for " + what);
            Thread.sleep(100);
        }
    }

    /**
     * Three members share six partitions; one leaves and one joins. Under
     * the classic protocol with the cooperative-sticky assignor, Shale
     * relays the assignor's incremental rebalances; under KIP-848's
     * (group.protocol=consumer) Shale's controller assigns incrementally
     * itself. Either way a member that stays only gives up the partitions
     * that move, every record is read, and a restart of the group resumes
     * from its commits.
     */
    static void group(boolean kip848) throws Exception {
        String kind = kip848 ? "java-848-" : "java-coop-";
        String topic = kind + RUN, group = kind + RUN;
        createTopic(topic, 6);
        try (KafkaProducer<String, String> p = producer()) {
            for (int i = 0; i < 300; i++) p.send(new ProducerRecord<>(topic, i % 6, null, "r" + i));
        }
        ExecutorService pool = Executors.newCachedThreadPool();
        List<Member> members = new ArrayList<>();
        for (String name : List.of("a", "b", "c")) {
            Member m = new Member(name, group, topic, kip848);
            members.add(m);
            pool.submit(m);
        }
        waitFor("three members holding 2 partitions each", 60_000,
                () -> members.stream().allMatch(m -> m.owned.size() == 2));
        if (kip848) {
            // the controller holds KIP-848 members as it holds HTTP ones
            String described = http("GET", "/v1/groups/" + group, null);
            check(described.split("\"member_id\"").length - 1 == 3, "HTTP shows three members: " + described);
        } else {
            // an HTTP member cannot split a group of classic Kafka members: a clear refusal
            HttpResponse<String> mixed = send("PUT", "/v1/groups/" + group + "/members/http-1",
                    "{\"topics\": [\"" + topic + "\"]}");
            check(mixed.statusCode() == 409 && mixed.body().contains("inconsistent_group_protocol"),
                    "an HTTP join of a Kafka group answered " + mixed.statusCode() + ": " + mixed.body());
        }
        Member leaving = members.get(0);
        leaving.stop.set(true);
        waitFor("two members holding 3 partitions each", 60_000,
                () -> members.subList(1, 3).stream().allMatch(m -> m.owned.size() == 3));
        Member joining = new Member("d", group, topic, kip848);
        members.add(joining);
        pool.submit(joining);
        waitFor("three members holding 2 partitions each again", 60_000,
                () -> members.subList(1, 4).stream().allMatch(m -> m.owned.size() == 2));
        try (KafkaProducer<String, String> p = producer()) {
            for (int i = 300; i < 600; i++) p.send(new ProducerRecord<>(topic, i % 6, null, "r" + i));
        }
        waitFor("600 records read", 60_000, () -> {
            Set<String> all = new HashSet<>();
            members.forEach(m -> all.addAll(m.read));
            return all.size() == 600;
        });
        for (Member m : members.subList(1, 3)) {
            // the stayers gave up one partition of three when d joined, never all they had
            check(m.revocations.stream().allMatch(r -> r[0] < r[1]),
                    "member " + m.name + " revoked everything it owned: incremental rebalancing is lost");
        }
        members.forEach(m -> m.stop.set(true));
        pool.shutdown();
        check(pool.awaitTermination(60, TimeUnit.SECONDS), "members closed");
        for (Member m : members) check(m.failed == null, "member " + m.name + " failed: " + m.failed);
        // everything was committed: a restarted member finds nothing to read
        Member again = new Member("e", group, topic, kip848);
        long deadline = System.currentTimeMillis() + 8_000;
        while (System.currentTimeMillis() < deadline) {
            for (ConsumerRecord<String, String> r : again.consumer.poll(Duration.ofMillis(200))) again.read.add(r.value());
        }
        check(again.owned.size() == 6, "the restarted member owns all 6 partitions, not " + again.owned.size());
        check(again.read.isEmpty(), "a resumed group re-read " + again.read.size() + " records");
        again.consumer.close();
        String described = http("GET", "/v1/groups/" + group, null);
        check(described.contains("\"total_lag\":0"), "HTTP shows no lag: " + described);
    }
}
