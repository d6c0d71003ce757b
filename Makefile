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
# Passwords and ports; `make up` creates .env from .env.example when it is missing.
ENV_FILE ?= .env
# Seconds `make up` waits for every service to be healthy.
UP_TIMEOUT ?= 120

export CAIRN_TAG := $(TAG)

# down must work without a .env (nothing to interpolate passwords from otherwise).
DOWN_ENV = $(or $(wildcard $(ENV_FILE)),.env.example)
SINGLE  = -p $(PROJECT) -f compose.yaml
CLUSTER = -p $(CLUSTER_PROJECT) -f compose.yaml -f compose.cluster.yaml

.PHONY: build images up down up-cluster down-cluster e2e clean

## build: static binaries of cairn and of the pinned nats-server in $(DIST)/
build:
	mkdir -p $(DIST)/empty
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(DIST)/ ./cmd/cairn github.com/nats-io/nats-server/v2

## images: cairn:$(TAG) and cairn-nats:$(TAG), FROM scratch (no base image, no pull)
images: build
	$(DOCKER) build --pull=false -q -f deploy/cairn.Dockerfile -t cairn:$(TAG) $(DIST)
	$(DOCKER) build --pull=false -q -f deploy/nats.Dockerfile -t cairn-nats:$(TAG) $(DIST)

.env:
	@echo "no .env: copying .env.example (sample passwords; edit .env to change them)"
	cp .env.example .env

## up: build the images, start compose.yaml and wait until every service is healthy
up: images $(ENV_FILE)
	$(COMPOSE) --env-file $(ENV_FILE) $(SINGLE) up -d --remove-orphans
	deploy/wait-healthy.sh $(UP_TIMEOUT) $(COMPOSE) --env-file $(ENV_FILE) $(SINGLE)

## down: stop compose.yaml and remove its containers and volumes
down:
	$(COMPOSE) --env-file $(DOWN_ENV) $(SINGLE) down -v --remove-orphans

## up-cluster: the same on a 3-node NATS JetStream cluster with R3 resources
up-cluster: images $(ENV_FILE)
	$(COMPOSE) --env-file $(ENV_FILE) $(CLUSTER) up -d --remove-orphans
	deploy/wait-healthy.sh $(UP_TIMEOUT) $(COMPOSE) --env-file $(ENV_FILE) $(CLUSTER)

## down-cluster: stop the cluster stack and remove its containers and volumes
down-cluster:
	$(COMPOSE) --env-file $(DOWN_ENV) $(CLUSTER) down -v --remove-orphans

## e2e: the end-to-end tests against both stacks (needs a Docker engine)
e2e:
	$(GO) test -tags e2e -count=1 -timeout 15m ./tests/e2e/

clean:
	rm -rf $(DIST)
