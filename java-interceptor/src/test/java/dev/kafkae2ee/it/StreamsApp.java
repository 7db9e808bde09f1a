package dev.kafkae2ee.it;

import java.io.FileInputStream;
import java.io.InputStream;
import java.time.Duration;
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.processor.StateRestoreListener;

/**
 * The Kafka Streams app of tests/integration/test_streams.py: a stateful topology with a
 * repartition (groupBy a word taken from the value), a count and a reduce, configured by nothing
 * but a properties file (default.value.serde=dev.kafkae2ee.E2eeSerde and the interceptors).
 *
 * <pre>
 *   StreamsApp PROPS INPUT OUTPUT RECORDS   RECORDS: "alpha:3,beta:5" ("-" for none) are
 *                                           produced to INPUT first as values "VAL-alpha-3"
 *                                           (EncryptingSerializer, same e2ee.* settings)
 * </pre>
 *
 * Prints STATE, RESTORED store partition n, count WORD N, sum WORD VALUE and STREAMS-ERROR lines;
 * runs until stdin closes, then closes Streams (committing) and exits 0.
 */
public final class StreamsApp {
    private StreamsApp() {}

    private static synchronized void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (InputStream in = new FileInputStream(args[0])) {
            props.load(in);
        }
        String input = args[1];
        String output = args[2];

        Properties p = new Properties();
        for (String name : props.stringPropertyNames()) {
            if (name.startsWith("e2ee.") && !name.equals("e2ee.inner.value.serde")) {
                p.put(name, props.getProperty(name));
            }
        }
        p.put("bootstrap.servers", props.getProperty("bootstrap.servers"));
        p.put("key.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        if ("tokenize".equals(props.getProperty("e2ee.keys"))) {
            // Tokenizing producers wrap their key serializer too (its keys here are null).
            p.put("key.serializer", "dev.kafkae2ee.EncryptingSerializer");
            p.put("e2ee.inner.key.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        }
        p.put("value.serializer", "dev.kafkae2ee.EncryptingSerializer");
        p.put("e2ee.inner.value.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        // Kept open until the end: its engine is the one the Streams clients share.
        KafkaProducer<String, String> producer = new KafkaProducer<>(p);
        if (!args[3].equals("-")) {
            for (String r : args[3].split(",")) {
                String[] wordAndN = r.split(":");
                ProducerRecord<String, String> rec =
                        new ProducerRecord<>(input, null, "VAL-" + wordAndN[0] + "-" + wordAndN[1]);
                if ("tokenize".equals(props.getProperty("e2ee.keys"))) {
                    // An application header, which Streams carries onto every record it derives.
                    rec.headers().add("trace", ("TRACE-" + wordAndN[0] + "-" + wordAndN[1])
                            .getBytes(java.nio.charset.StandardCharsets.UTF_8));
                }
                producer.send(rec).get();
            }
        }
        say("PRODUCED");

        StreamsBuilder builder = new StreamsBuilder();
        // The grouping key comes from the value: it is plaintext on the repartition, changelog and
        // output topics (kafka-e2ee encrypts values only; docs/QUICKSTART.md).
        KGroupedStream<String, String> byWord = builder.<String, String>stream(input)
                .groupBy((k, v) -> v.split("-")[1], Grouped.as("words"));
        byWord.count(Materialized.as("counts"))
                .toStream()
                .peek((word, n) -> say("count " + word + " " + n))
                .mapValues(n -> "COUNT-" + n)
                .to(output);
        byWord.reduce((a, b) -> "VAL-" + a.split("-")[1] + "-"
                        + (Long.parseLong(a.split("-")[2]) + Long.parseLong(b.split("-")[2])),
                        Materialized.as("sums"))
                .toStream()
                .peek((word, v) -> say("sum " + word + " " + v))
                .to(output);

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setStateListener((now, before) -> say("STATE " + now));
        streams.setUncaughtExceptionHandler(e -> {
            say("STREAMS-ERROR " + e);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long start, long end) {}

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long batchEnd, long n) {}

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long total) {
                say("RESTORED " + store + " " + tp.partition() + " " + total);
            }
        });
        streams.start();
        while (System.in.read() >= 0) {
            // runs until stdin closes
        }
        boolean closed = streams.close(Duration.ofSeconds(30));
        producer.close(Duration.ofSeconds(30));
        say(closed ? "CLOSED" : "CLOSE-TIMED-OUT");
        System.exit(0);
    }
}
