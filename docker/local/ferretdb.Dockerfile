# The embedded default database in a container: FerretDB (the binary scripts/ferretdb.sh
# builds) on its SQLite backend, data in /data/db (where mongo:7 keeps its data, so the same
# named volume serves either). ROOTFS is Debian bookworm minbase (scripts/docker-local-images.sh).
ARG ROOTFS
FROM ${ROOTFS}
COPY ferretdb /usr/local/bin/ferretdb
RUN groupadd --system --gid 10002 ferretdb \
    && useradd --system --uid 10002 --gid ferretdb --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin ferretdb \
    && mkdir -p /data/db /data/state \
    && chown ferretdb:ferretdb /data/db /data/state
# Every flag has its FERRETDB_* variable; compose may change any of them.
ENV FERRETDB_HANDLER=sqlite \
    FERRETDB_SQLITE_URL=file:/data/db/ \
    FERRETDB_STATE_DIR=/data/state \
    FERRETDB_LISTEN_ADDR=:27017 \
    FERRETDB_DEBUG_ADDR=127.0.0.1:8088 \
    FERRETDB_TELEMETRY=disable \
    FERRETDB_LOG_LEVEL=warn
# Go's collector at 4x the live heap: less of FerretDB's CPU (scripts/lib/common.sh, FERRETDB_GOGC).
ENV GOGC=400
USER ferretdb
VOLUME /data/db
EXPOSE 27017
ENTRYPOINT ["/usr/local/bin/ferretdb"]
