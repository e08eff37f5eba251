# Stand-in for the official haproxy image on a machine that can pull no image: Debian
# bookworm's HAProxy 2.6 (ROOTFS, made by scripts/docker-local-images.sh with debootstrap),
# started the way the official image starts it: the configuration at
# /usr/local/etc/haproxy/haproxy.cfg, master-worker mode in the foreground, as user haproxy.
# compose.yaml mounts the configuration there and the web client at /usr/local/web.
ARG ROOTFS
FROM ${ROOTFS}
RUN mkdir -p /usr/local/etc/haproxy /usr/local/web
WORKDIR /var/lib/haproxy
USER haproxy
# SIGUSR1: the soft stop, finishing the requests in flight (as the official image).
STOPSIGNAL SIGUSR1
EXPOSE 5000 8404
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
