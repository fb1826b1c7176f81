# One image for every Crossbook service (docker-compose.yml picks the command per service).
# python:3.11-slim for the services, Node 20 from Debian's packages for the pinned npm toolchain
# (anvil, forge, cast, solc-js): the same registries `make setup` uses, nothing else downloaded.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CROSSBOOK_HOME=/state \
    CROSSBOOK_LOG_FORMAT=json \
    CROSSBOOK_METRICS_HOST=0.0.0.0

# gcc and libc headers: mypyc compiles the matcher's engine core (make build does the same)
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm ca-certificates gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# toolchain first: it changes least, so this layer is cached across code changes
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

COPY pyproject.toml README.md ./
COPY crossbook ./crossbook
COPY matcher ./matcher
COPY settlement ./settlement
COPY keeper ./keeper
COPY bench ./bench
COPY examples ./examples
COPY contracts ./contracts
COPY tools ./tools
RUN pip install -e . "mypy>=1.10" "setuptools>=68" \
 && python -m matcher.native \
 && cd contracts && ../node_modules/.bin/forge build --offline > /dev/null

VOLUME ["/state"]
ENTRYPOINT ["crossbook"]
CMD ["--help"]
