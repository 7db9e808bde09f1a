package dev.kafkae2ee;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The JNI exports get null, malformed, out-of-range and random arguments, and closed, stale and
 * forged handles, through Engine and straight through its private natives: every call must return
 * or throw a Java exception; none may crash the JVM (a crash fails the whole Maven run).
 */
class EngineRobustnessTest {
    private static final Path CLI = Path.of("..", "target", "release", "kafka-e2ee");
    private static final Random RANDOM = new Random(20261127L); // fixed: a failure reproduces
    private static final AtomicLong CLUSTERS = new AtomicLong();

    @TempDir
    static Path dir;

    private static Map<String, String> props;

    @BeforeAll
    static void credentials() throws Exception {
        assertTrue(Files.isExecutable(CLI), CLI + " is missing: run cargo build --release -p kafka-e2ee-cli");
        cli("authority", "init", "--out", dir.resolve("auth").toString());
        cli("credential", "issue", "--authority", dir.resolve("auth").toString(), "--name", "w", "--produce", "*",
                "--consume", "*", "--out", dir.resolve("w.cred").toString());
        props = Map.of("e2ee.credential", dir.resolve("w.cred").toString(),
                "e2ee.trust", dir.resolve("auth").resolve("trust").toString());
    }

    private static void cli(String... args) throws Exception {
        List<String> argv = new ArrayList<>(List.of(CLI.toString()));
        argv.addAll(List.of(args));
        Process p = new ProcessBuilder(argv).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), out);
    }

    /** An engine of its own (the native registry shares one per cluster and credential). */
    private static Engine engine() {
        return Engine.create("robustness-" + CLUSTERS.incrementAndGet() + ":9092", props);
    }

    private static byte[] random(int n) {
        byte[] b = new byte[n];
        RANDOM.nextBytes(b);
        return b;
    }

    /** Runs a call that must throw a Java exception (any RuntimeException; never a crash). */
    private static void throwsJava(Runnable call) {
        assertThrows(RuntimeException.class, call::run);
    }

    @Test
    void nullAndMalformedArgumentsThrow() {
        try (Engine e = engine()) {
            byte[] value = "secret".getBytes(StandardCharsets.UTF_8);
            throwsJava(() -> e.seal(null, Engine.BIND_UNBOUND, null, value));
            throwsJava(() -> e.seal("t", Engine.BIND_UNBOUND, null, null));
            throwsJava(() -> e.seal("t", Engine.BIND_BYTES, null, value)); // bound key, but null
            for (int binding : new int[] {-1, 3, 99, Integer.MIN_VALUE, Integer.MAX_VALUE}) {
                throwsJava(() -> e.seal("t", binding, new byte[1], value));
                throwsJava(() -> e.open("t", new byte[34], binding, new byte[1], value));
            }
            byte[] header = e.seal("t", Engine.BIND_NULL, null, value);
            assertEquals(34, header.length);
            throwsJava(() -> e.open(null, header, Engine.BIND_NULL, null, value));
            throwsJava(() -> e.open("t", header, Engine.BIND_NULL, null, null));
            throwsJava(() -> e.open("t", null, Engine.BIND_NULL, null, value)); // no header: injection
            throwsJava(() -> e.wantStatus("t", null));
            throwsJava(() -> e.wantStatus(null, header));
            throwsJava(() -> e.isProtected(null));
            throwsJava(() -> e.handleControl(0, null));
            // Out-of-range times are taken as they come; no crash, an answer or a reason.
            for (long now : new long[] {-1, Long.MIN_VALUE, Long.MAX_VALUE, 0}) {
                e.handleTimeout(now);
                assertNotNull(e.handleControl(now, new byte[0]));
            }
            // The sealed value still opens: nothing above disturbed the engine.
            assertTrue(e.open("t", header, Engine.BIND_NULL, null, value));
            assertArrayEquals("secret".getBytes(StandardCharsets.UTF_8), value);
        }
    }

    @Test
    void wrongLengthsAndTamperedRecordsThrowAndLeaveTheValueAlone() {
        try (Engine e = engine()) {
            byte[] plain = "a value of some length".getBytes(StandardCharsets.UTF_8);
            byte[] sealed = plain.clone();
            byte[] header = e.seal("t", Engine.BIND_BYTES, "k".getBytes(StandardCharsets.UTF_8), sealed);
            // Headers of every wrong length, and the right length with random bytes.
            for (int n : new int[] {0, 1, 18, 33, 35, 68, 4096}) {
                byte[] v = sealed.clone();
                throwsJava(() -> e.open("t", random(n), Engine.BIND_UNBOUND, null, v));
                assertArrayEquals(sealed, v, "a failed open changed the value");
                throwsJava(() -> e.wantStatus("t", random(n)));
            }
            // The value one byte short, one byte long, empty; each header byte flipped.
            for (byte[] v : new byte[][] {java.util.Arrays.copyOf(sealed, sealed.length - 1),
                java.util.Arrays.copyOf(sealed, sealed.length + 1), new byte[0]}) {
                throwsJava(() -> e.open("t", header, Engine.BIND_BYTES, "k".getBytes(StandardCharsets.UTF_8), v));
            }
            for (int i = 0; i < header.length; i++) {
                byte[] h = header.clone();
                h[i] ^= 0x5a;
                byte[] v = sealed.clone();
                throwsJava(() -> e.open("t", h, Engine.BIND_BYTES, "k".getBytes(StandardCharsets.UTF_8), v));
                assertArrayEquals(sealed, v);
            }
            // Another key, another topic, no key: all rejected.
            throwsJava(() -> e.open("t", header, Engine.BIND_BYTES, "K".getBytes(StandardCharsets.UTF_8),
                    sealed.clone()));
            throwsJava(() -> e.open("u", header, Engine.BIND_BYTES, "k".getBytes(StandardCharsets.UTF_8),
                    sealed.clone()));
            throwsJava(() -> e.open("t", header, Engine.BIND_NULL, null, sealed.clone()));
            byte[] v = sealed.clone();
            assertTrue(e.open("t", header, Engine.BIND_BYTES, "k".getBytes(StandardCharsets.UTF_8), v));
            assertArrayEquals(plain, v);
        }
    }

    @Test
    void randomRecordsAndControlMessagesAreRejected() {
        try (Engine e = engine()) {
            for (int i = 0; i < 2000; i++) {
                byte[] header = random(i % 3 == 0 ? 34 : RANDOM.nextInt(80));
                if (header.length == 34) {
                    header[0] = 1; // the version, so the codec looks further in
                }
                byte[] value = random(RANDOM.nextInt(300));
                byte[] before = value.clone();
                throwsJava(() -> e.open("t", header, RANDOM.nextInt(3), random(RANDOM.nextInt(8)), value));
                assertArrayEquals(before, value);
                // A random control message is refused with a reason, never accepted.
                assertNotNull(e.handleControl(System.currentTimeMillis(), random(RANDOM.nextInt(2000))));
            }
            assertTrue(e.metrics()[5] >= 2000, "control-messages-rejected counts them");
        }
    }

    @Test
    void useAfterCloseAndDoubleCloseThrowOrDoNothing() {
        Engine e = engine();
        byte[] header = e.seal("t", Engine.BIND_NULL, null, new byte[4]);
        e.close();
        e.close(); // a second close is a no-op
        throwsJava(() -> e.seal("t", Engine.BIND_NULL, null, new byte[4]));
        throwsJava(() -> e.open("t", header, Engine.BIND_NULL, null, new byte[4]));
        throwsJava(() -> e.wantStatus("t", header));
        throwsJava(() -> e.isProtected("t"));
        throwsJava(e::keyGeneration);
        throwsJava(() -> e.handleControl(0, new byte[1]));
        throwsJava(() -> e.handleTimeout(0));
        throwsJava(e::pollTimeout);
        throwsJava(e::pollTransmit);
        throwsJava(e::instanceId);
        throwsJava(e::metrics);
    }

    /** Calls a private native of Engine; returns what it threw, or null if it returned. */
    private static Throwable callNative(String name, Object... args) {
        for (Method m : Engine.class.getDeclaredMethods()) {
            if (m.getName().equals(name)) {
                m.setAccessible(true);
                try {
                    m.invoke(null, args);
                    return null;
                } catch (InvocationTargetException ite) {
                    return ite.getCause();
                } catch (IllegalAccessException iae) {
                    throw new AssertionError(iae);
                }
            }
        }
        throw new AssertionError("no native " + name);
    }

    private static long handleOf(Engine e) throws Exception {
        var f = Engine.class.getDeclaredField("handle");
        f.setAccessible(true);
        return f.getLong(e);
    }

    @Test
    void theNativesThemselvesRefuseClosedStaleAndForgedHandles() throws Exception {
        Engine e = engine();
        long live = handleOf(e);
        byte[] header = e.seal("t", Engine.BIND_NULL, null, new byte[4]);
        e.close();
        // Past Engine.java's guard: destroy0 again, and every call on the stale handle.
        List<Long> bad = new ArrayList<>(List.of(live, 0L, -1L, 1L << 40, Long.MAX_VALUE, Long.MIN_VALUE,
                0x7f00_0000_1000L)); // the last looks like a pointer
        for (int i = 0; i < 20; i++) {
            bad.add(RANDOM.nextLong());
        }
        byte[] topic = "t".getBytes(java.nio.charset.StandardCharsets.UTF_8);
        for (long h : bad) {
            assertTrue(callNative("destroy0", h) instanceof E2eeException, "destroy0(" + h + ")");
            for (Object[] call : new Object[][] {
                {"seal0", h, topic, Engine.BIND_NULL, null, new byte[4], new byte[Engine.HEADER_LEN]},
                {"open0", h, topic, null, header, Engine.BIND_NULL, null, new byte[4]},
                {"open0", h, topic, topic, header, Engine.BIND_NULL, null, new byte[4]},
                {"wantStatus0", h, topic, header},
                {"isProtected0", h, "t"},
                {"keyGeneration0", h},
                {"handleControl0", h, 0L, new byte[1]},
                {"handleTimeout0", h, 0L},
                {"pollTimeout0", h},
                {"pollTransmit0", h},
                {"instanceId0", h},
                {"metrics0", h},
            }) {
                Object[] args = java.util.Arrays.copyOfRange(call, 1, call.length);
                Throwable t = callNative((String) call[0], args);
                assertTrue(t instanceof E2eeException, call[0] + "(" + h + ") threw " + t);
            }
        }
    }

    @Test
    void theMirrorNativesRefuseMalformedArguments() {
        NativeLibrary.load();
        assertTrue(callNative("sourceTopic0", null, "t") instanceof E2eeException);
        assertTrue(callNative("sourceTopic0", "A.", null) instanceof E2eeException);
        assertTrue(callNative("checkProperties0", (Object) null) instanceof RuntimeException);
        assertTrue(callNative("checkProperties0", (Object) new String[] {null, "x"}) instanceof RuntimeException);
        assertTrue(callNative("checkProperties0", (Object) new String[] {"e2ee.topic.source.prefix", "A/"})
                instanceof E2eeException);
        for (int i = 0; i < 50; i++) {
            String junk = new String(random(1 + RANDOM.nextInt(40)), StandardCharsets.ISO_8859_1);
            assertEquals(junk, Engine.sourceTopic("", junk));
            Engine.sourceTopic(junk, junk + junk); // any string: an answer or a Java exception
        }
    }

    @Test
    void createRefusesMalformedArguments() {
        NativeLibrary.load();
        String[] good = {"e2ee.credential", props.get("e2ee.credential"), "e2ee.trust", props.get("e2ee.trust")};
        assertTrue(callNative("create0", null, good) instanceof RuntimeException);
        assertTrue(callNative("create0", "c:1", null) instanceof RuntimeException);
        assertTrue(callNative("create0", "c:1", (Object) new String[] {"e2ee.credential", null})
                instanceof RuntimeException);
        assertTrue(callNative("create0", "c:1", (Object) new String[] {null, "x"}) instanceof RuntimeException);
        assertTrue(callNative("create0", "c:1", (Object) new String[] {"e2ee.nonsense", "1",
            good[0], good[1], good[2], good[3]}) instanceof E2eeException);
        assertTrue(callNative("create0", "c:1", (Object) new String[] {"e2ee.key.rotation.ms", "-5",
            good[0], good[1], good[2], good[3]}) instanceof E2eeException);
        assertTrue(callNative("create0", "c:1", (Object) new String[] {"e2ee.credential"}) instanceof E2eeException,
                "an odd-length array lacks the required properties");
        assertTrue(callNative("create0", "c:1", (Object) new String[] {"e2ee.credential", "/nonexistent",
            good[2], good[3]}) instanceof E2eeException);
    }

    @Test
    void closeWhileOtherThreadsCallNeverCrashes() throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(4);
        try {
            for (int round = 0; round < 20; round++) {
                Engine e = engine();
                List<Future<?>> calls = new ArrayList<>();
                for (int t = 0; t < 3; t++) {
                    calls.add(pool.submit(() -> {
                        for (int i = 0; i < 200; i++) {
                            try {
                                e.seal("t", Engine.BIND_NULL, null, new byte[64]);
                                e.metrics();
                            } catch (E2eeException | IllegalStateException closed) {
                                return;
                            }
                        }
                    }));
                }
                // Close as soon as no call is in flight; until then close refuses (in use).
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                while (true) {
                    try {
                        e.close();
                        break;
                    } catch (IllegalStateException inUse) {
                        if (System.nanoTime() > deadline) {
                            fail("close never found the engine idle");
                        }
                        Thread.onSpinWait();
                    }
                }
                for (Future<?> f : calls) {
                    f.get(60, TimeUnit.SECONDS);
                }
            }
        } finally {
            pool.shutdownNow();
        }
    }
}
