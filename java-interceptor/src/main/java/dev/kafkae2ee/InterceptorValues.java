package dev.kafkae2ee;

import java.util.Map;
import org.apache.kafka.common.config.ConfigException;

/**
 * Which value types the interceptors handle, from the client's value serde: byte[] (Kafka's
 * console and perf tools force ByteArraySerializer/ByteArrayDeserializer) or String. Ciphertext
 * is arbitrary bytes, so a String value carries it only if the String serde maps bytes to chars
 * one to one: {@code value.serializer.encoding=ISO-8859-1} (producer) and {@code
 * value.deserializer.encoding=ISO-8859-1} (consumer). The plaintext itself is encrypted as UTF-8.
 */
enum InterceptorValues {
    BYTES,
    STRING;

    static InterceptorValues of(Map<String, ?> configs, String serdeProperty, String stringSerde,
            String bytesSerde, String recommended) {
        Object v = configs.get(serdeProperty);
        String name = v instanceof Class ? ((Class<?>) v).getName() : v == null ? "" : String.valueOf(v).trim();
        if (name.equals(bytesSerde)) {
            return BYTES;
        }
        if (name.equals(stringSerde)) {
            String encodingProperty = serdeProperty + ".encoding";
            Object enc = configs.get(encodingProperty);
            if (enc == null) {
                enc = configs.get(serdeProperty.startsWith("value.serializer") ? "serializer.encoding"
                        : "deserializer.encoding");
            }
            if (enc == null || !String.valueOf(enc).trim().equalsIgnoreCase("ISO-8859-1")) {
                throw new ConfigException(encodingProperty, enc == null ? "(UTF-8)" : enc,
                        "the kafka-e2ee interceptor carries ciphertext in String values only with "
                                + encodingProperty + "=ISO-8859-1; set it, or use " + recommended);
            }
            return STRING;
        }
        throw new ConfigException(serdeProperty, name,
                "the kafka-e2ee interceptors handle byte[] and String values only (" + bytesSerde + " or "
                        + stringSerde + "); for other value types use " + recommended);
    }
}
