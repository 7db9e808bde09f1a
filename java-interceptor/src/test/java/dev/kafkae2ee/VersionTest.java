package dev.kafkae2ee;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class VersionTest {
    @Test
    void versionIsTheMavenProjectVersion() {
        // surefire passes the pom's version in; the jar's resource must agree.
        String expected = System.getProperty("kafkae2ee.expected.version");
        assertTrue(expected != null && !expected.isEmpty(), "surefire must set kafkae2ee.expected.version");
        assertEquals(expected, Version.get());
    }

    @Test
    void versionLooksLikeSemver() {
        assertTrue(Version.get().matches("\\d+\\.\\d+\\.\\d+(-[0-9A-Za-z.-]+)?"), Version.get());
    }
}
