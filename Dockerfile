# Slipway's container images. Targets:
#   orchestration-api     the API, orchestrator, health monitor and init-db roles (the default)
#   orchestration-worker  the worker role, with git for checkouts
#
#   docker build --network host --target orchestration-api -t slipway/orchestration-api .
#   docker build --network host --target orchestration-worker -t slipway/orchestration-worker .
#
# `--network host` lets the build reach the npm registry and Debian's mirror on engines whose
# default bridge network has no route out (dockerd --bridge=none); elsewhere it does no harm.
# Behind a TLS-inspecting proxy, put its CA certificate in docker/ca-certificates/*.crt; it is
# trusted during `npm ci` only and never reaches the final images.
#
# This Dockerfile builds with the classic builder (Docker 20.10 and later) and with BuildKit.

ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: compile TypeScript and the native better-sqlite3 addon -------------------------
FROM ${NODE_IMAGE} AS build

RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ tini \
  && rm -rf /var/lib/apt/lists/*

WORKDIR /build
# Outside /etc/ssl, because installing Debian's ca-certificates package rewrites that folder.
COPY docker/ca-certificates/ /usr/local/share/slipway-build-ca/

# node-gyp compiles better-sqlite3 against the headers in /usr/local/include/node instead of
# downloading them. Install scripts are skipped and only better-sqlite3 is compiled, so the
# build never tries to download a prebuilt binary and needs only the npm registry.
ENV npm_config_nodedir=/usr/local \
  npm_config_fund=false \
  npm_config_audit=false \
  npm_config_update_notifier=false \
  JOBS=max

COPY package.json package-lock.json ./
RUN set -e; \
  certificates=$(find /usr/local/share/slipway-build-ca -name '*.crt' -type f | sort); \
  if [ -n "$certificates" ]; then \
    cat $certificates > /usr/local/share/slipway-build-ca.pem; \
    export NODE_EXTRA_CA_CERTS=/usr/local/share/slipway-build-ca.pem; \
  fi; \
  npm ci --ignore-scripts; \
  (cd node_modules/better-sqlite3 && npm run build-release); \
  node -e "new (require('better-sqlite3'))(':memory:').prepare('select 1').get()"

COPY tsconfig.json tsconfig.build.json slipway.default.yml ./
COPY src ./src
RUN npm run build \
  && npm prune --omit=dev --ignore-scripts \
  && cd node_modules/better-sqlite3 \
  && rm -rf deps src build/Release/obj build/Release/obj.target build/Release/.deps \
    build/Release/sqlite3.a build/Release/test_extension.node

# --- runtime: what every role's image shares -------------------------------------------------
FROM ${NODE_IMAGE} AS runtime

# tini is PID 1: it forwards SIGTERM to Node.js, so `docker stop` lets running work finish, and
# it reaps the child processes that the local executor and git leave behind.
COPY --from=build /usr/bin/tini-static /usr/bin/tini

ENV NODE_ENV=production \
  API_HOST=0.0.0.0 \
  API_PORT=5000 \
  SLIPWAY_DATA_DIR=/var/lib/slipway/state \
  ORCHESTRATION_DB_PATH=/var/lib/slipway/state/orchestration.db \
  ORCHESTRATION_LOG_PATH=/var/lib/slipway/logs \
  ORCHESTRATION_ARTIFACTS_PATH=/var/lib/slipway/artifacts \
  ORCHESTRATION_WORKSPACE_PATH=/var/lib/slipway/workspaces \
  ORCHESTRATION_BACKUP_PATH=/var/lib/slipway/backups \
  SLIPWAY_MIRROR_PATH=/var/lib/slipway/mirrors

WORKDIR /app
COPY --from=build /build/package.json /build/slipway.default.yml ./
COPY --from=build /build/node_modules ./node_modules
COPY --from=build /build/dist ./dist

# Named volumes copy this ownership when they are first mounted, so the node user can write.
RUN ln -s /app/dist/cli/main.js /usr/local/bin/slipway \
  && chmod 0755 /app/dist/cli/main.js \
  && install -d -o node -g node -m 0750 /var/lib/slipway /var/lib/slipway/state \
    /var/lib/slipway/logs /var/lib/slipway/artifacts /var/lib/slipway/workspaces \
    /var/lib/slipway/backups /var/lib/slipway/mirrors

VOLUME ["/var/lib/slipway/state", "/var/lib/slipway/logs", "/var/lib/slipway/artifacts", "/var/lib/slipway/backups"]
EXPOSE 5000
USER node
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/cli/main.js"]

# --- orchestration-worker --------------------------------------------------------------------
FROM runtime AS orchestration-worker

USER root
RUN apt-get update \
  && apt-get install -y --no-install-recommends git ca-certificates openssh-client \
  && rm -rf /var/lib/apt/lists/*
USER node

ENV ORCHESTRATION_MODE=worker
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "/app/dist/cli/healthcheck.js"]
CMD ["worker"]

# --- orchestration-api (the default target) --------------------------------------------------
FROM runtime AS orchestration-api

ENV ORCHESTRATION_MODE=api
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "/app/dist/cli/healthcheck.js"]
CMD ["serve"]
