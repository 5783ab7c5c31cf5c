package dev.shale.checks;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.*;

import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.sink.SinkConnector;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTask;
import org.apache.kafka.connect.source.SourceConnector;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.source.SourceTask;

/**
 * A source and a sink connector for Kafka Connect, as small as the
 * FileStream ones (which Maven Central does not serve here): the source
 * sends a file's lines to a topic, keeping its place as a source offset (in
 * Connect's offset topic); the sink appends a topic's records to a file.
 */
public final class Lines {
    private Lines() {}

    static final ConfigDef CONFIG = new ConfigDef()
            .define("file", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "the file")
            .define("topic", ConfigDef.Type.STRING, "", ConfigDef.Importance.HIGH, "the source's topic");

    public static final class Source extends SourceConnector {
        private Map<String, String> props;

        @Override public void start(Map<String, String> props) { this.props = props; }
        @Override public Class<? extends Task> taskClass() { return SourceLines.class; }
        @Override public List<Map<String, String>> taskConfigs(int max) { return List.of(props); }
        @Override public void stop() {}
        @Override public ConfigDef config() { return CONFIG; }
        @Override public String version() { return "1"; }
    }

    public static final class SourceLines extends SourceTask {
        private Path file;
        private String topic;
        private Map<String, String> partition;
        private long next;

        @Override public String version() { return "1"; }

        @Override
        public void start(Map<String, String> props) {
            file = Path.of(props.get("file"));
            topic = props.get("topic");
            partition = Map.of("file", file.toString());
            Map<String, Object> offset = context.offsetStorageReader().offset(partition);
            next = offset == null ? 0 : ((Number) offset.get("line")).longValue();
        }

        @Override
        public List<SourceRecord> poll() throws InterruptedException {
            List<String> lines;
            try {
                lines = Files.exists(file) ? Files.readAllLines(file, StandardCharsets.UTF_8) : List.of();
            } catch (IOException e) {
                throw new org.apache.kafka.connect.errors.ConnectException(e);
            }
            if (lines.size() <= next) {
                Thread.sleep(200);
                return null;
            }
            List<SourceRecord> out = new ArrayList<>();
            for (; next < lines.size(); next++) {
                out.add(new SourceRecord(partition, Map.of("line", next + 1), topic, null, null,
                        Schema.STRING_SCHEMA, lines.get((int) next)));
            }
            return out;
        }

        @Override public void stop() {}
    }

    public static final class Sink extends SinkConnector {
        private Map<String, String> props;

        @Override public void start(Map<String, String> props) { this.props = props; }
        @Override public Class<? extends Task> taskClass() { return SinkLines.class; }
        @Override public List<Map<String, String>> taskConfigs(int max) { return List.of(props); }
        @Override public void stop() {}
        @Override public ConfigDef config() { return CONFIG; }
        @Override public String version() { return "1"; }
    }

    public static final class SinkLines extends SinkTask {
        private Path file;

        @Override public String version() { return "1"; }
        @Override public void start(Map<String, String> props) { file = Path.of(props.get("file")); }

        @Override
        public void put(Collection<SinkRecord> records) {
            StringBuilder text = new StringBuilder();
            for (SinkRecord r : records) text.append(r.value()).append('\n');
            try {
                Files.writeString(file, text, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
            } catch (IOException e) {
                throw new org.apache.kafka.connect.errors.ConnectException(e);
            }
        }

        @Override public void stop() {}
    }
}
