# The batchscore image the deploy examples (deploy/kubernetes/) run: the release binary at
# /usr/local/bin/batchscore, ONNX Runtime's libonnxruntime.so at /usr/local/lib (where the binary
# looks without ORT_DYLIB_PATH), the demo jobs and models at /app/jobs and /app/models, run as a
# non-root user. README "The container image" shows how to build and deploy it.
#
# Two stages make the two files the image needs, and the last stage is the image:
#   compiled     the Rust toolchain builds the binary: `cargo build --release --locked`
#   onnxruntime  scripts/install-onnxruntime.sh takes the library from the onnxruntime wheel on
#                PyPI (the version it pins is the one the binary's `ort` expects)
# `docker build .` (or `buildah bud .`) runs both. To put a binary and a library built elsewhere
# into the same image instead, name a directory holding out/batchscore and
# out/libonnxruntime.so as both stages: a build context named like a stage replaces it, and the
# stage is not built (BuildKit and buildah 1.28 alike):
#   docker buildx build --build-context compiled=DIR --build-context onnxruntime=DIR .
# The binary must be linked against a glibc no newer than bookworm's (2.36). scripts/image-test.sh
# builds this way, with the binary cargo built on the host (which has the toolchain the builder
# stage would pull) and the library the quick start installed.
#
# Build arguments, all optional; the labels say what the image holds:
#   VERSION   batchscore's version, from Cargo.toml
#   REVISION  the git commit built
#   SOURCE    where that commit can be fetched (the repository's URL)

FROM docker.io/library/rust:1.95-slim-bookworm AS compiled
WORKDIR /src
# Only what the build reads (.dockerignore keeps the rest out of the context): the manifest, the
# patched sqlx-core it points to, the sources, and the migrations that sqlx::migrate! embeds.
COPY Cargo.toml Cargo.lock build.rs ./
COPY vendor vendor
COPY migrations migrations
COPY src src
# The binary keeps its line tables (readable backtraces), compressed: 87 MB instead of 319.
RUN cargo build --release --locked \
 && mkdir -p /out \
 && objcopy --compress-debug-sections=zlib target/release/batchscore /out/batchscore

FROM docker.io/library/python:3.11-slim-bookworm AS onnxruntime
WORKDIR /src
COPY scripts/install-onnxruntime.sh scripts/
RUN scripts/install-onnxruntime.sh \
 && install -D .onnxruntime/lib/libonnxruntime.so /out/libonnxruntime.so

# Same Debian release as the builder, so the binary finds the glibc it was linked against. No
# compiler, pip or Python here: only what the two stages above made.
FROM docker.io/library/debian:bookworm-slim
# TLS to the database and to the MLflow registry verifies servers against the system's trust
# store (rustls with native roots), which slim images leave out.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric id, so that Kubernetes' runAsNonRoot can check it from the image. The home
# directory holds the MLflow model cache ($HOME/.cache/batchscore/models) unless
# BATCHSCORE_MODEL_CACHE says otherwise.
RUN groupadd --gid 10001 batchscore \
 && useradd --uid 10001 --gid batchscore --create-home --home-dir /home/batchscore \
      --shell /usr/sbin/nologin batchscore
COPY --from=onnxruntime /out/libonnxruntime.so /usr/local/lib/libonnxruntime.so
COPY --from=compiled /out/batchscore /usr/local/bin/batchscore
# The demo jobs and their models. Kubernetes mounts the job files from a ConfigMap over
# /app/jobs (deploy/kubernetes/configmap.yaml); a job's model path is relative to /app, the
# parent of the jobs directory, so an image for your own models copies them to /app/models.
COPY jobs /app/jobs
COPY models/*.onnx /app/models/
# Last, so that a new commit rebuilds nothing above.
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="batchscore" \
      org.opencontainers.image.description="Score database rows with an ONNX model on a schedule" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
WORKDIR /app
ENV BATCHSCORE_JOBS_DIR=/app/jobs
USER 10001:10001
ENTRYPOINT ["batchscore"]
CMD ["--help"]
