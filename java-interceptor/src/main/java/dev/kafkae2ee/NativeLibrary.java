package dev.kafkae2ee;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Loads libkafka_e2ee.so once per class loader: from the path in the system property {@value
 * #PATH_PROPERTY} if set, else from the copy this jar carries under
 * {@code /native/<os>/<arch>/libkafka_e2ee-<version>.so}, extracted to a temporary file. The
 * native version must equal the jar's.
 */
final class NativeLibrary {
    static final String PATH_PROPERTY = "kafka.e2ee.native.path";

    private static boolean loaded;
    private static E2eeException failure;

    private NativeLibrary() {}

    static synchronized void load() {
        if (loaded) {
            return;
        }
        if (failure != null) {
            throw failure;
        }
        try {
            doLoad();
            loaded = true;
        } catch (E2eeException e) {
            failure = e;
            throw e;
        }
    }

    static String resourcePath() {
        return "/native/" + os() + "/" + arch() + "/libkafka_e2ee-" + Version.get() + ".so";
    }

    private static void doLoad() {
        List<String> tried = new ArrayList<>();
        String override = System.getProperty(PATH_PROPERTY, "").trim();
        if (!override.isEmpty()) {
            tried.add(override + " (system property " + PATH_PROPERTY + ")");
            try {
                System.load(Path.of(override).toAbsolutePath().toString());
            } catch (UnsatisfiedLinkError | SecurityException e) {
                throw fail(tried, e.getMessage());
            }
        } else {
            String resource = resourcePath();
            tried.add("jar resource " + resource);
            Path file;
            try (InputStream in = NativeLibrary.class.getResourceAsStream(resource)) {
                if (in == null) {
                    throw fail(
                            tried,
                            "this jar has no native library for " + os() + "/" + arch()
                                    + " (a jar built without scripts/build-native?)");
                }
                file = Files.createTempFile("libkafka_e2ee-" + Version.get() + "-", ".so");
                file.toFile().deleteOnExit();
                Files.copy(in, file, StandardCopyOption.REPLACE_EXISTING);
            } catch (IOException e) {
                throw fail(tried, "cannot extract it to a temporary file: " + e.getMessage());
            }
            tried.add("extracted to " + file);
            try {
                System.load(file.toString());
            } catch (UnsatisfiedLinkError | SecurityException e) {
                throw fail(tried, e.getMessage());
            }
        }
        String nativeVersion;
        try {
            nativeVersion = Engine.nativeVersion();
        } catch (UnsatisfiedLinkError e) {
            throw fail(tried, "it is not a kafka-e2ee JNI library: " + e.getMessage());
        }
        if (!Version.get().equals(nativeVersion)) {
            throw fail(
                    tried,
                    "the native library is version " + nativeVersion + " but this jar is version "
                            + Version.get() + "; use the library built with this jar");
        }
    }

    private static E2eeException fail(List<String> tried, String why) {
        return new E2eeException(
                E2eeException.Kind.NATIVE_LIBRARY,
                null,
                "cannot load the kafka-e2ee native library: " + why + ". Tried: "
                        + String.join(", ", tried) + ". Set -D" + PATH_PROPERTY
                        + "=/path/to/libkafka_e2ee.so to use another copy.");
    }

    static String os() {
        String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT);
        return os.startsWith("linux") ? "linux" : os.replace(' ', '_');
    }

    static String arch() {
        String arch = System.getProperty("os.arch", "").toLowerCase(Locale.ROOT);
        switch (arch) {
            case "amd64":
            case "x86_64":
                return "x86_64";
            case "aarch64":
            case "arm64":
                return "aarch64";
            default:
                return arch;
        }
    }
}
