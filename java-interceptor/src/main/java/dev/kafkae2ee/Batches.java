package dev.kafkae2ee;

import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

/**
 * Builds the ConsumerRecords the consumer interceptor returns, on every kafka-clients version it
 * supports: 4.x carries {@code nextOffsets} (which must be kept, or the consumer would not move
 * past dropped records); 3.x has neither the method nor the constructor, and needs neither.
 */
final class Batches {
    private static final MethodHandle NEXT_OFFSETS;
    private static final MethodHandle WITH_OFFSETS;
    private static final MethodHandle WITHOUT_OFFSETS;

    static {
        MethodHandles.Lookup lookup = MethodHandles.publicLookup();
        NEXT_OFFSETS = find(() -> lookup.findVirtual(ConsumerRecords.class, "nextOffsets",
                MethodType.methodType(Map.class)));
        WITH_OFFSETS = find(() -> lookup.findConstructor(ConsumerRecords.class,
                MethodType.methodType(void.class, Map.class, Map.class)));
        WITHOUT_OFFSETS = find(() -> lookup.findConstructor(ConsumerRecords.class,
                MethodType.methodType(void.class, Map.class)));
    }

    private interface Finder {
        MethodHandle find() throws ReflectiveOperationException;
    }

    private static MethodHandle find(Finder f) {
        try {
            return f.find();
        } catch (ReflectiveOperationException e) {
            return null;
        }
    }

    private Batches() {}

    /** The batch's next offsets (4.x), or an empty map (3.x). */
    @SuppressWarnings("unchecked")
    static Map<TopicPartition, OffsetAndMetadata> nextOffsets(ConsumerRecords<?, ?> records) throws Throwable {
        return NEXT_OFFSETS == null ? Map.of() : (Map<TopicPartition, OffsetAndMetadata>) NEXT_OFFSETS.invoke(records);
    }

    @SuppressWarnings("unchecked")
    static <K, V> ConsumerRecords<K, V> of(Map<TopicPartition, List<ConsumerRecord<K, V>>> records,
            Map<TopicPartition, OffsetAndMetadata> nextOffsets) throws Throwable {
        if (WITH_OFFSETS != null) {
            return (ConsumerRecords<K, V>) WITH_OFFSETS.invoke(records, nextOffsets);
        }
        return (ConsumerRecords<K, V>) WITHOUT_OFFSETS.invoke(records);
    }
}
