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

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir build==1.6.1
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim
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
# /livez of `cntr-sync run` on its default address; slim has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9464/livez', timeout=4)"]
ENTRYPOINT ["cntr-sync"]
CMD ["--help"]
