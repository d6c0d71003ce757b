// Package authgen generates the NATS authorization of a Cairn deployment: from a Spec (the
// jobs and their instances, the coordinators, configsvc replicas, load generators and
// admins) it derives one nkey user per process with the least permissions that process
// needs, renders them as a nats-server accounts block (public keys only), writes each
// user's seed and environment, and can make a CA and a server certificate for TLS.
// `cairn auth` is its command; docs/security.md shows its rules as tables it renders.
//
// Every permission comes from one table, rules (rules.go): a subject template, the role it
// is granted to, whether to publish or subscribe, and why. A new stream or subject is one
// line there; nothing else lists subjects.
package authgen
