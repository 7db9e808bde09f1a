package dev.kafkae2ee;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

class NativeLibraryTest {
    @Test
    void theJarCarriesTheNativeLibraryUnderItsVersionedName() {
        assertEquals("/native/linux/x86_64/libkafka_e2ee-" + Version.get() + ".so", NativeLibrary.resourcePath());
        assertTrue(NativeLibrary.class.getResource(NativeLibrary.resourcePath()) != null,
                "run scripts/build-native before the Maven build");
    }

    @Test
    void loadsAndTheNativeVersionIsTheJarVersion() {
        NativeLibrary.load();
        assertEquals(Version.get(), Engine.nativeVersion());
    }

    /** Loads in a fresh JVM with -Dkafka.e2ee.native.path=path; returns its output. */
    private static String loadIn(String path) throws IOException, InterruptedException {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
                        "-D" + NativeLibrary.PATH_PROPERTY + "=" + path, LoadMain.class.getName())
                .redirectErrorStream(true)
                .start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        p.waitFor();
        return out;
    }

    @Test
    void aMissingOverrideFailsSayingWhatWasTried() throws Exception {
        String out = loadIn("/nonexistent/libkafka_e2ee.so");
        assertTrue(out.contains("cannot load the kafka-e2ee native library"), out);
        assertTrue(out.contains("Tried: /nonexistent/libkafka_e2ee.so (system property kafka.e2ee.native.path)"), out);
    }

    @Test
    void aLibraryThatIsNotKafkaE2eeIsRefused() throws Exception {
        Path other = null;
        for (String candidate : List.of("/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1",
                System.getProperty("java.home") + "/lib/libzip.so")) {
            if (Files.exists(Path.of(candidate))) {
                other = Path.of(candidate);
                break;
            }
        }
        assertNotEquals(null, other, "no shared library to try");
        String out = loadIn(other.toString());
        assertTrue(out.contains("not a kafka-e2ee JNI library"), out);
    }

    /** The fresh JVM's program. */
    static final class LoadMain {
        public static void main(String[] args) {
            try {
                NativeLibrary.load();
                System.out.println("LOADED " + Engine.nativeVersion());
            } catch (E2eeException e) {
                System.out.println(e.getMessage());
            }
        }
    }
}
