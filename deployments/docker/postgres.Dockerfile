# conveyor-postgres: Debian bookworm's PostgreSQL 15 behind the official postgres image's variables
# (POSTGRES_PASSWORD, POSTGRES_USER, POSTGRES_DB, PGDATA), for engines that cannot pull that image.
# Built by `deployments/docker/build.sh postgres`: ROOTFS is a mmdebstrap minbase with postgresql-15,
# imported with `docker import`; the context holds only postgres-entrypoint.sh.
# Compose uses it with CONVEYOR_POSTGRES_IMAGE=conveyor-postgres:15-bookworm.
ARG ROOTFS=conveyor-postgres:15-bookworm-rootfs
FROM ${ROOTFS}
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# Fast shutdown (SIGTERM would wait for every client to disconnect).
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=3s --retries=20 \
    CMD ["sh", "-c", "pg_isready --quiet --username=\"${POSTGRES_USER:-postgres}\" --dbname=\"${POSTGRES_DB:-${POSTGRES_USER:-postgres}}\""]
# The entrypoint creates the cluster as root, then runs postgres as the postgres user.
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
