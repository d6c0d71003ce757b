# Cairn: static binaries, FROM-scratch images and the compose stacks (docs/compose.md).
# Needs Go and a Docker engine with docker-compose; nothing is pulled from any registry.

GO      ?= go
DOCKER  ?= docker
COMPOSE ?= docker-compose
# Image tag of cairn:<TAG> and cairn-nats:<TAG>.
TAG     ?= dev
# Build context of the images: the two static binaries and nothing else.
DIST    ?= dist
# Compose project names of the single-node and the cluster stack.
PROJECT         ?= cairn
CLUSTER_PROJECT ?= cairn-cluster
# Ports and log level; `make up` creates .env from .env.example when it is missing.
ENV_FILE ?= .env
# The spec `cairn auth` generates the NATS users of the stacks from, where it writes them
# (never committed), and the names the server's TLS certificate is for.
AUTH_SPEC ?= deploy/auth.json
AUTH_DIR  ?= deploy/nats/generated
TLS_HOSTS ?= nats,nats-2,nats-3,localhost,127.0.0.1
# Seconds `make up` waits for every service to be healthy.
UP_TIMEOUT ?= 120

export CAIRN_TAG := $(TAG)

# down must work without a .env (compose reads one for its variables), and needs the
# generated env files compose.yaml names (`down` depends on `auth`).
DOWN_ENV = $(or $(wildcard $(ENV_FILE)),.env.example)
SINGLE  = -p $(PROJECT) -f compose.yaml
CLUSTER = -p $(CLUSTER_PROJECT) -f compose.yaml -f compose.cluster.yaml

.PHONY: build images auth up down up-cluster down-cluster e2e clean

## build: static binaries of cairn and of the pinned nats-server in $(DIST)/
build:
	mkdir -p $(DIST)/empty
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(DIST)/ ./cmd/cairn github.com/nats-io/nats-server/v2

## images: cairn:$(TAG) and cairn-nats:$(TAG), FROM scratch (no base image, no pull)
images: build
	$(DOCKER) build --pull=false -q -f deploy/cairn.Dockerfile -t cairn:$(TAG) $(DIST)
	$(DOCKER) build --pull=false -q -f deploy/nats.Dockerfile -t cairn-nats:$(TAG) $(DIST)

.env:
	@echo "no .env: copying .env.example (ports, log level, load; edit .env to change them)"
	cp .env.example .env

## auth: NATS users (nkeys, permissions) and TLS certificates of the stacks, from $(AUTH_SPEC)
auth: $(AUTH_DIR)/auth.conf

# Again when the spec changes; users keep their nkeys and the certificate stays (cairn auth
# --rotate replaces them). The nats containers run as uid 65532 and read the server key
# from the bind mount: it is made readable (the directory is for a local stack only).
$(AUTH_DIR)/auth.conf: $(AUTH_SPEC)
	$(GO) run ./cmd/cairn auth --spec $(AUTH_SPEC) --out $(AUTH_DIR) --tls-hosts $(TLS_HOSTS)
	chmod 0644 $(AUTH_DIR)/tls/server-key.pem

## up: build the images, start compose.yaml and wait until every service is healthy
up: images auth $(ENV_FILE)
	$(COMPOSE) --env-file $(ENV_FILE) $(SINGLE) up -d --remove-orphans
	deploy/wait-healthy.sh $(UP_TIMEOUT) $(COMPOSE) --env-file $(ENV_FILE) $(SINGLE)

## down: stop compose.yaml and remove its containers and volumes
down: auth
	$(COMPOSE) --env-file $(DOWN_ENV) $(SINGLE) down -v --remove-orphans

## up-cluster: the same on a 3-node NATS JetStream cluster with R3 resources
up-cluster: images auth $(ENV_FILE)
	$(COMPOSE) --env-file $(ENV_FILE) $(CLUSTER) up -d --remove-orphans
	deploy/wait-healthy.sh $(UP_TIMEOUT) $(COMPOSE) --env-file $(ENV_FILE) $(CLUSTER)

## down-cluster: stop the cluster stack and remove its containers and volumes
down-cluster: auth
	$(COMPOSE) --env-file $(DOWN_ENV) $(CLUSTER) down -v --remove-orphans

## e2e: the end-to-end tests against both stacks (needs a Docker engine)
e2e:
	$(GO) test -tags e2e -count=1 -timeout 15m ./tests/e2e/

## clean: remove the binaries and the generated users, keys and certificates
clean:
	rm -rf $(DIST) $(AUTH_DIR)
