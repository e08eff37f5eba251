# Stand-in for python:3.11-slim on a machine that can pull no image: Debian bookworm's
# Python 3.11 (ROOTFS, made by scripts/docker-local-images.sh with debootstrap), and a
# wheelhouse of requirements.lock downloaded on the host, so that the project's Dockerfile
# installs its dependencies with its usual `pip install --require-hashes -r requirements.lock`,
# offline.
ARG ROOTFS
FROM ${ROOTFS}
COPY wheels/ /wheels/
ENV LANG=C.UTF-8 \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheels
CMD ["python3"]
