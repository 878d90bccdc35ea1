# syntax=docker/dockerfile:1
# One image for the webhook, the cache and the certs helper (and the cluster tools, `python -m clustertools`):
#   python -m webhook serve ...   python -m cache ...   python -m certs bootstrap|watch ...
# (the same as the console scripts localdns-webhook, localdns-cache, localdns-certs).
# Build: docker build -t REGISTRY/localdns:0.1.0 .   then set `image:` in deploy/cluster/cluster.yaml.
# For reproducible builds pin the base by digest: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: wheels for the project and every runtime dependency, at the versions in requirements.lock ----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Compilers only here, for a dependency that has no wheel for the target platform; none reach the final image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.lock pyproject.toml setup.py README.md ./
COPY webhook/ webhook/
COPY cache/ cache/
COPY certs/ certs/
COPY clustertools/ clustertools/
COPY localdns/ localdns/
# The cache's hot path compiled with mypyc (setup.py, LOCALDNS_COMPILE=1; pyproject.toml lists the modules): mypy
# and setuptools are build tools of this stage only. The wheel keeps every module's source beside its compiled form.
RUN pip install --constraint requirements.lock mypy setuptools \
 && LOCALDNS_COMPILE=1 pip wheel --no-build-isolation --wheel-dir /wheels --constraint requirements.lock .

# ---- final: slim Python, the wheels, iptables for the cache's node setup; no compiler, no pip cache ----
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# iptables provides both backends (iptables-nft, iptables-legacy); the cache picks the node's own, as kube-proxy
# does. Only the cache's DaemonSet uses it, with the capabilities it grants (deploy/base/cache/daemonset.yaml).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels --constraint /tmp/requirements.lock localdns \
 && rm /tmp/requirements.lock
# Non-root by default (a numeric id, so runAsNonRoot can verify it). The cache's DaemonSet runs as uid 0 with
# NET_ADMIN and NET_BIND_SERVICE only; the webhook and certs run as this user.
USER 65532:65532
WORKDIR /
ENTRYPOINT ["python", "-m"]
CMD ["webhook", "--help"]
