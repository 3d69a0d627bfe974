# The API and an executor in one image. Run `node` directly (not `npm start`):
# npm does not pass SIGTERM on, and graceful shutdown needs it.
FROM node:24-bookworm-slim

# GNU time, util-linux (prlimit, setpriv), bubblewrap and nftables sandbox the scripts
# (see docs/executor.md for what the container needs); python3 runs .py ones.
RUN apt-get update \
 && apt-get install -y --no-install-recommends time util-linux bubblewrap nftables python3 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY package.json package-lock.json ./
# npm ci's postinstall applies these to the driver (patch-package; see src/db/client.ts)
COPY src/db/driver-patches ./src/db/driver-patches
RUN npm ci --omit=dev --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY migrations ./migrations
COPY sql ./sql

ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000 STORAGE_DIR=/var/lib/dollarclub/storage
EXPOSE 3000
# Runs as root so that the executor can drop scripts to `nobody` (setpriv); the API
# itself holds no privilege it uses. Set EXECUTOR_ENABLED=false for an API-only container.
CMD ["node", "src/main.ts"]
