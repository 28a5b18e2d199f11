# syntax=docker/dockerfile:1
# cntr-sync in a container: a wheel built in the first stage, installed into a
# venv of a clean slim image, run as a non-root user.
#
#   docker build -t cntr-sync .
#   docker run --rm -e OPENAI_API_KEY -v "$PWD/project:/data:ro" cntr-sync \
#       sync /data --container my-project
#
# The daemon listens on 127.0.0.1:9464 unless http_listen says otherwise; set
# http_listen = "0.0.0.0:9464" to reach /metrics from outside the container.
#
# Labels: VERSION must match src/cntr_sync/_version.py (tests/test_deploy.py checks
# the default); SOURCE is where your copy of the repository lives:
#   docker build --build-arg SOURCE=https://git.example.com/you/cntr-sync -t cntr-sync .

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir build==1.6.1
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim
ARG VERSION=0.1.0
ARG SOURCE=""
LABEL org.opencontainers.image.title="cntr-sync" \
      org.opencontainers.image.description="Mirror a local directory into an OpenAI container" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE}"
ENV PATH=/opt/cntr-sync/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_STATE_HOME=/var/lib
# The base image's pip installs into a venv that has none; the wheel comes from
# the build stage without leaving a layer behind. No compiler, no build.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    python -m venv --without-pip /opt/cntr-sync \
    && pip --python /opt/cntr-sync/bin/python install --no-cache-dir /dist/*.whl \
    && groupadd --system --gid 10001 cntr-sync \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin cntr-sync \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/cntr-sync
# The index's default place ($XDG_STATE_HOME/cntr-sync); mount a volume on it to keep it.
VOLUME ["/var/lib/cntr-sync"]
USER 10001:10001
# /livez of `cntr-sync run` at http_listen, read from the same settings: give them
# as CNTR_SYNC_CONFIG or CNTR_SYNC_* variables (the check does not see `run
# --config`). A one-shot command (sync, ls, ...) runs no daemon: nothing listens,
# the connection is refused and --absent-ok counts that healthy, so a long
# `sync` is not marked unhealthy; its exit status says how it went.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["cntr-sync", "healthcheck", "--absent-ok"]
ENTRYPOINT ["cntr-sync"]
CMD ["--help"]
