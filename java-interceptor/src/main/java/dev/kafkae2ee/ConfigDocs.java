package dev.kafkae2ee;

import org.apache.kafka.common.config.ConfigDef;

/**
 * Prints the Java client's section of docs/CONFIGURATION.md from {@link E2eeConfig#CONFIG_DEF}, so
 * the page cannot drift from what the Java client accepts (scripts/gen-config-docs writes it;
 * tests/integration/test_config_docs.py checks it).
 */
public final class ConfigDocs {
    private ConfigDocs() {}

    public static void main(String[] args) {
        System.out.print(markdown());
    }

    static String markdown() {
        StringBuilder out = new StringBuilder();
        out.append("\n## Java clients (ConfigDef)\n\n")
                .append("What `dev.kafkae2ee.EncryptingSerializer`, `DecryptingDeserializer` and the\n")
                .append("interceptors accept, from their ConfigDef. A wrong or missing value fails client\n")
                .append("construction with a `ConfigException` naming the property.\n\n")
                .append("| property | type | default | importance | description |\n|---|---|---|---|---|\n");
        for (ConfigDef.ConfigKey key : E2eeConfig.CONFIG_DEF.configKeys().values()) {
            boolean empty = key.defaultValue == null || String.valueOf(key.defaultValue).isEmpty()
                    || (key.defaultValue instanceof java.util.List && ((java.util.List<?>) key.defaultValue).isEmpty());
            String dflt = key.hasDefault() && !empty
                    ? "`" + ConfigDef.convertToString(key.defaultValue, key.type) + "`"
                    : "(none)";
            out.append("| `").append(key.name).append("` | ")
                    .append(key.type.name().toLowerCase(java.util.Locale.ROOT)).append(" | ")
                    .append(dflt).append(" | ")
                    .append(key.importance.name().toLowerCase(java.util.Locale.ROOT)).append(" | ")
                    .append(key.documentation.replace("|", "\\|").replace("\n", " ")).append(" |\n");
        }
        return out.toString();
    }
}
