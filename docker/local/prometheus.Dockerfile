# Stand-in for prom/prometheus and prom/node-exporter on a machine that can pull no image:
# Debian bookworm's prometheus and prometheus-node-exporter (ROOTFS, made by
# scripts/docker-local-images.sh with debootstrap), laid out as the official images are:
# /bin/prometheus and /bin/node_exporter, the data in /prometheus, run as user nobody, and
# wget for the healthchecks (busybox's in the official images). compose.prometheus.yaml
# names the entry point of each.
ARG ROOTFS
FROM ${ROOTFS}
# /bin is /usr/bin in bookworm: /bin/prometheus is already there.
RUN ln -s prometheus-node-exporter /usr/bin/node_exporter \
    && mkdir -p /prometheus \
    && chown nobody:nogroup /prometheus
WORKDIR /prometheus
USER nobody
EXPOSE 9090 9100
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
