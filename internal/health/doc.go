// Package health is the liveness and readiness probe of Cairn's services: Serve answers
// GET /healthz from a readiness function, and Check is the client side that `cairn health`
// runs as a container health check, so images built FROM scratch need no curl or shell.
//
// Check works against any endpoint that answers 200 when healthy, such as nats-server's
// monitoring endpoint http://127.0.0.1:8222/healthz?js-enabled-only=true.
package health
