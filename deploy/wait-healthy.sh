#!/bin/sh
# wait-healthy.sh TIMEOUT COMPOSE-COMMAND...
#
# Waits until every service of a compose project has a running container whose health check
# passes (docker-compose 1.x has no `up --wait`). COMPOSE-COMMAND is the docker-compose
# invocation with its project options, e.g. `docker-compose -p cairn -f compose.yaml`.
# After TIMEOUT seconds it prints the services still waiting with their last log lines and
# exits 1.
set -eu

timeout=$1
shift
services=$("$@" config --services | sort)
want=$(printf '%s\n' "$services" | wc -l)
start=$(date +%s)

while :; do
	ids=$("$@" ps -q)
	report=""
	if [ -n "$ids" ]; then
		# shellcheck disable=SC2086 # one argument per container id
		report=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' $ids | sort)
	fi
	ready=$(printf '%s\n' "$report" | grep -c -E ' running (healthy|no-healthcheck)$' || true)
	now=$(date +%s)
	if [ "$ready" -eq "$want" ]; then
		echo "all $want services healthy after $((now - start))s"
		exit 0
	fi
	if [ $((now - start)) -ge "$timeout" ]; then
		echo "after ${timeout}s, $ready of $want services healthy; waiting for:" >&2
		for s in $services; do
			line=$(printf '%s\n' "$report" | grep "^$s " || echo "$s no container")
			case $line in
			*" running healthy" | *" running no-healthcheck") ;;
			*)
				echo "  $line" >&2
				"$@" logs --no-color --tail 20 "$s" >&2 || true
				;;
			esac
		done
		exit 1
	fi
	sleep 1
done
