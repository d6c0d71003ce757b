# nats-server, built from the version pinned in go.mod, plus the cairn binary for the health
# check (`cairn health --url http://127.0.0.1:8222/healthz`). The server config is mounted at
# /etc/nats by compose; /data is the JetStream store, owned by the non-root user so a fresh
# named volume inherits that ownership.
FROM scratch
COPY nats-server /nats-server
COPY cairn /cairn
COPY --chown=65532:65532 empty/ /data/
USER 65532:65532
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
CMD ["--config", "/etc/nats/single.conf"]
