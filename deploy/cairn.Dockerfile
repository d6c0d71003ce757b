# Cairn's services: one static binary, nothing else. Built by `make images` with the
# context dist/ (only the binaries), so nothing is pulled: scratch is not an image.
FROM scratch
COPY cairn /cairn
USER 65532:65532
ENTRYPOINT ["/cairn"]
