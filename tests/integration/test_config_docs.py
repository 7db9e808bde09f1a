"""docs/CONFIGURATION.md cannot drift: its Java section is exactly what the
Java client's ConfigDef prints (the native section is checked by the CLI's
tests against `kafka-e2ee config docs`). Fix: scripts/gen-config-docs."""

from __future__ import annotations

import subprocess

from java_clients import JAR, ROOT
from test_java import built  # noqa: F401  (pytest fixture)


def test_configuration_doc_java_section_matches_the_configdef(built):
    out = subprocess.run(["java", "-cp", built, "dev.kafkae2ee.ConfigDocs"],
                         capture_output=True, text=True, check=True).stdout
    doc = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    assert "\n## Java clients (ConfigDef)" in doc, "run scripts/gen-config-docs"
    java_section = doc[doc.index("\n## Java clients (ConfigDef)"):]
    assert java_section == out, "docs/CONFIGURATION.md is stale: run scripts/gen-config-docs"
    for name in ("e2ee.credential", "e2ee.inner.value.serializer", "e2ee.bind.key", "e2ee.key.wait.ms"):
        assert f"`{name}`" in java_section
