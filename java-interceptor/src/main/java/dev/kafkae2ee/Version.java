package dev.kafkae2ee;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Properties;

/** The version of this jar, as Maven built it. */
public final class Version {
    private static final String RESOURCE = "version.properties";
    private static final String VERSION = load();

    private Version() {}

    /** The project version, e.g. {@code 0.1.0}. */
    public static String get() {
        return VERSION;
    }

    private static String load() {
        Properties props = new Properties();
        try (InputStream in = Version.class.getResourceAsStream(RESOURCE)) {
            if (in == null) {
                throw new IllegalStateException(
                        "dev/kafkae2ee/" + RESOURCE + " is missing from the kafka-e2ee jar");
            }
            props.load(in);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read dev/kafkae2ee/" + RESOURCE, e);
        }
        String version = props.getProperty("version", "");
        if (version.isEmpty() || version.contains("${")) {
            throw new IllegalStateException(
                    "dev/kafkae2ee/" + RESOURCE + " was not filtered by Maven: version='" + version + "'");
        }
        return version;
    }
}
