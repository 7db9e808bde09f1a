package dev.kafkae2ee;

import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;

import java.util.Map;
import org.junit.jupiter.api.Test;

/** Which consumers never drop: the client.id Streams gives its restore and global consumers. */
class StreamsRestoreTest {
    private static StreamsRestore of(String clientId) {
        return StreamsRestore.of(Map.of("client.id", clientId), null);
    }

    @Test
    void streamsRestoreAndGlobalConsumersAreRecognised() {
        assertNotNull(of("app-7c1e-StreamThread-1-restore-consumer"));
        assertNotNull(of("app-7c1e-StateUpdater-1-restore-consumer"));
        assertNotNull(of("app-7c1e-global-consumer"));
    }

    @Test
    void otherConsumersKeepDropping() {
        assertNull(of("app-7c1e-StreamThread-1-consumer"));
        assertNull(of("console-consumer"));
        assertNull(StreamsRestore.of(Map.of(), null));
    }
}
