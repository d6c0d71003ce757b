package messages

// ServiceVersion is the version of this build of Cairn that every Cairn micro service
// reports in its info (configsvc's cairn-config, the coordinator's cairn-coordinator and
// the operator runtime's cairn-operator), as `nats micro ls` shows it. It is the release
// version, not the schema version (SchemaVersion).
const ServiceVersion = "0.3.0"
