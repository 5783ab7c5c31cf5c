package dev.shale.checks;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.utils.internals.Exit;

/**
 * Kafka's own command-line tools (kafka-topics, kafka-consumer-groups),
 * run in this JVM through their main classes, with their output compared
 * with what Shale's HTTP API says.
 */
final class Tools {
    /** The code of a tool's last call of Kafka's Exit (which would end the JVM). */
    static volatile int exitCode;

    interface Main { void run(String[] args) throws Exception; }

    /** Runs a tool; its standard output, or a failure if it exits non-zero. */
    static String tool(String name, Main main, String... args) throws Exception {
        PrintStream out = System.out;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        System.setOut(new PrintStream(captured, true, StandardCharsets.UTF_8));
        exitCode = 0;
        try {
            main.run(args);
        } finally {
            System.setOut(out);
        }
        int code = exitCode;
        String text = captured.toString(StandardCharsets.UTF_8);
        System.out.println("$ " + name + " " + String.join(" ", args) + "\n" + text.strip());
        Checks.check(code == 0, name + " exited " + code + ": " + text);
        return text;
    }

    static String topics(String bootstrap, String... args) throws Exception {
        List<String> all = new ArrayList<>(List.of("--bootstrap-server", bootstrap));
        all.addAll(List.of(args));
        return tool("kafka-topics", org.apache.kafka.tools.TopicCommand::main, all.toArray(String[]::new));
    }

    static String groups(String bootstrap, String... args) throws Exception {
        List<String> all = new ArrayList<>(List.of("--bootstrap-server", bootstrap));
        all.addAll(List.of(args));
        return tool("kafka-consumer-groups", org.apache.kafka.tools.consumer.group.ConsumerGroupCommand::main,
                all.toArray(String[]::new));
    }

    static String configs(String bootstrap, String... args) throws Exception {
        List<String> all = new ArrayList<>(List.of("--bootstrap-server", bootstrap));
        all.addAll(List.of(args));
        return tool("kafka-configs", org.apache.kafka.tools.ConfigCommand::main, all.toArray(String[]::new));
    }

    /** kafka-configs, the console producer and consumer, kafka-delete-records and --delete-offsets. */
    static void admin(String bootstrap, String run) throws Exception {
        Exit.setExitProcedure((code, message) -> exitCode = code);
        String topic = "admin-" + run, group = "admin-" + run;
        topics(bootstrap, "--create", "--topic", topic, "--partitions", "1");
        configs(bootstrap, "--alter", "--entity-type", "topics", "--entity-name", topic, "--add-config", "retention.ms=7200000");
        Checks.check(Checks.http("GET", "/v1/topics/" + topic, null).contains("\"retention_ms\":7200000"),
                "HTTP shows retention_ms set by kafka-configs");
        String described = configs(bootstrap, "--describe", "--entity-type", "topics", "--entity-name", topic, "--all");
        Checks.check(described.contains("retention.ms=7200000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=7200000, DEFAULT_CONFIG:log.retention.ms=-1}"),
                "kafka-configs shows retention.ms as set on the topic, with its default: " + described);
        Checks.check(described.contains("cleanup.policy=delete sensitive=false synonyms={DEFAULT_CONFIG:log.cleanup.policy=delete}"),
                "kafka-configs shows cleanup.policy at its default: " + described);
        String broker = configs(bootstrap, "--describe", "--entity-type", "brokers", "--entity-name", "0", "--all");
        Checks.check(broker.contains("num.partitions=1") && broker.contains("auto.create.topics.enable=false"),
                "kafka-configs shows the broker's settings: " + broker);

        // the console producer reads lines from standard input; --sync, as its
        // producer is closed only by a JVM shutdown hook
        java.io.InputStream in = System.in;
        System.setIn(new java.io.ByteArrayInputStream("c0\nc1\nc2\nc3\n".getBytes(StandardCharsets.UTF_8)));
        try {
            tool("kafka-console-producer", org.apache.kafka.tools.ConsoleProducer::main,
                    "--bootstrap-server", bootstrap, "--topic", topic, "--sync");
        } finally {
            System.setIn(in);
        }
        String fetched = Checks.http("GET", "/v1/topics/" + topic + "/partitions/0/records?offset=0", null);
        Checks.check(fetched.contains("\"c0\"") && fetched.contains("\"c3\""), "HTTP reads the console producer's lines: " + fetched);
        String consumed = tool("kafka-console-consumer", org.apache.kafka.tools.consumer.ConsoleConsumer::main,
                "--bootstrap-server", bootstrap, "--topic", topic, "--from-beginning", "--max-messages", "4",
                "--timeout-ms", "30000", "--group", group);
        Checks.check(consumed.lines().toList().equals(List.of("c0", "c1", "c2", "c3")),
                "kafka-console-consumer prints the four lines in order: " + consumed);

        // kafka-consumer-groups --delete-offsets, once the console consumer's group is empty
        Checks.check(Checks.http("GET", "/v1/groups/" + group + "/offsets", null).contains("\"offset\":4"),
                "the console consumer committed offset 4");
        groups(bootstrap, "--delete-offsets", "--group", group, "--topic", topic);
        Checks.check(!Checks.http("GET", "/v1/groups/" + group + "/offsets", null).contains("\"offset\":4"),
                "--delete-offsets removed the committed offset");

        // kafka-delete-records moves the log start, as HTTP shows
        java.nio.file.Path json = java.nio.file.Files.createTempFile("delete-records", ".json");
        java.nio.file.Files.writeString(json,
                "{\"partitions\":[{\"topic\":\"" + topic + "\",\"partition\":0,\"offset\":2}],\"version\":1}");
        String deleted = tool("kafka-delete-records", org.apache.kafka.tools.DeleteRecordsCommand::main,
                "--bootstrap-server", bootstrap, "--offset-json-file", json.toString());
        Checks.check(deleted.contains("low_watermark: 2"), "kafka-delete-records reports the new low watermark: " + deleted);
        Checks.check(Checks.http("GET", "/v1/topics/" + topic, null).contains("\"log_start_offset\":2"),
                "HTTP shows the log start at 2");
        Checks.check(Checks.send("GET", "/v1/topics/" + topic + "/partitions/0/records?offset=0", null).statusCode() == 416,
                "HTTP refuses to read below the log start");
        topics(bootstrap, "--delete", "--topic", topic);
    }

    static void run(String bootstrap, String url, String run) throws Exception {
        Exit.setExitProcedure((code, message) -> exitCode = code);
        String topic = "tools-" + run, group = "tools-" + run;
        topics(bootstrap, "--create", "--topic", topic, "--partitions", "2");
        Checks.check(topics(bootstrap, "--list").lines().anyMatch(topic::equals), "kafka-topics --list shows the topic");
        Checks.check(topics(bootstrap, "--describe", "--topic", topic).contains("PartitionCount: 2"),
                "kafka-topics --describe shows 2 partitions");
        topics(bootstrap, "--alter", "--topic", topic, "--partitions", "4");
        String described = Checks.http("GET", "/v1/topics/" + topic, null);
        Checks.check(described.split("\"partition\":").length - 1 == 4, "HTTP shows 4 partitions after --alter: " + described);

        // topic configs through the Admin API, as kafka-configs sends them
        try (org.apache.kafka.clients.admin.Admin admin = org.apache.kafka.clients.admin.Admin.create(Checks.props())) {
            var resource = new org.apache.kafka.common.config.ConfigResource(
                    org.apache.kafka.common.config.ConfigResource.Type.TOPIC, topic);
            var set = new org.apache.kafka.clients.admin.AlterConfigOp(
                    new org.apache.kafka.clients.admin.ConfigEntry("retention.ms", "3600000"),
                    org.apache.kafka.clients.admin.AlterConfigOp.OpType.SET);
            admin.incrementalAlterConfigs(Map.of(resource, List.of(set))).all().get();
            Checks.check(Checks.http("GET", "/v1/topics/" + topic, null).contains("\"retention_ms\":3600000"),
                    "HTTP shows retention_ms set by IncrementalAlterConfigs");
            var delete = new org.apache.kafka.clients.admin.AlterConfigOp(
                    new org.apache.kafka.clients.admin.ConfigEntry("retention.ms", null),
                    org.apache.kafka.clients.admin.AlterConfigOp.OpType.DELETE);
            admin.incrementalAlterConfigs(Map.of(resource, List.of(delete))).all().get();
            Checks.check(!Checks.http("GET", "/v1/topics/" + topic, null).contains("\"retention_ms\":3600000"),
                    "retention_ms back to its default after DELETE");
            var cluster = admin.describeCluster();
            Checks.check(cluster.nodes().get().size() == 1 && cluster.clusterId().get().equals("shale"),
                    "describeCluster shows one broker of cluster shale");
        }
        // a group that read everything and committed
        try (KafkaProducer<String, String> p = Checks.producer()) {
            for (int i = 0; i < 40; i++) p.send(new ProducerRecord<>(topic, i % 4, null, "t" + i));
        }
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(Checks.props("group.id", group,
                "auto.offset.reset", "earliest", "key.deserializer", StringDeserializer.class.getName(),
                "value.deserializer", StringDeserializer.class.getName()))) {
            c.subscribe(List.of(topic));
            int read = 0;
            long deadline = System.currentTimeMillis() + 60_000;
            while (read < 40 && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(300))) read++;
            }
            Checks.check(read == 40, "the group read " + read + " of 40");
            c.commitSync();
        }
        Checks.check(groups(bootstrap, "--list").lines().anyMatch(group::equals), "kafka-consumer-groups --list shows the group");
        String lag = groups(bootstrap, "--describe", "--group", group);
        long rows = lag.lines().filter(l -> l.startsWith(group) && l.contains(topic)).count();
        Checks.check(rows == 4, "--describe shows 4 partitions: " + lag);
        Checks.check(lag.lines().filter(l -> l.startsWith(group)).allMatch(l -> l.split("\\s+")[5].equals("0")),
                "--describe shows no lag: " + lag);
        Checks.check(Checks.http("GET", "/v1/groups/" + group, null).contains("\"total_lag\":0"), "HTTP agrees: no lag");
        groups(bootstrap, "--reset-offsets", "--group", group, "--topic", topic, "--to-earliest", "--execute");
        String offsets = Checks.http("GET", "/v1/groups/" + group + "/offsets", null);
        Checks.check(!offsets.contains("\"offset\":1"), "HTTP shows the offsets reset to 0: " + offsets);
        Checks.check(Checks.http("GET", "/v1/groups/" + group, null).contains("\"total_lag\":40"), "HTTP shows a lag of 40");
        groups(bootstrap, "--delete", "--group", group);
        Checks.check(!groups(bootstrap, "--list").lines().anyMatch(group::equals), "the group is gone");
        topics(bootstrap, "--delete", "--topic", topic);
        Checks.check(!topics(bootstrap, "--list").lines().anyMatch(topic::equals), "the topic is gone");
    }
}
