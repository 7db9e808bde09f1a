/* Links libkafka_e2ee.so through the committed header and checks that
 * kafka_e2ee_version() returns the version the build was told to expect.
 * Built with AddressSanitizer by tests/c/run. */
#include <stdio.h>
#include <string.h>

#include "kafka_e2ee.h"

#ifndef EXPECTED_VERSION
#error "build with -DEXPECTED_VERSION=\"x.y.z\""
#endif

int main(void) {
    const char *version = kafka_e2ee_version();
    if (version == NULL) {
        fprintf(stderr, "FAIL: kafka_e2ee_version() returned NULL\n");
        return 1;
    }
    /* Read it twice: the pointer must be stable and the bytes must not change. */
    if (strlen(version) == 0 || version != kafka_e2ee_version()) {
        fprintf(stderr, "FAIL: kafka_e2ee_version() is empty or not static\n");
        return 1;
    }
    if (strcmp(version, EXPECTED_VERSION) != 0) {
        fprintf(stderr, "FAIL: kafka_e2ee_version() = \"%s\", expected \"%s\"\n", version,
                EXPECTED_VERSION);
        return 1;
    }
    printf("ok: kafka_e2ee_version() = \"%s\"\n", version);
    return 0;
}
