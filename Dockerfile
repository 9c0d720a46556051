# chatlane: one process serving every configured channel (`chatlane serve`).
# Build: docker build -t chatlane .   Run: docker run -p 8080:8080 --env-file .env chatlane
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8080 \
    CHATLANE_DATA_DIR=/data

WORKDIR /app

# Dependencies first, in a layer of their own: a change to the code does not reinstall them.
COPY requirements.txt ./
RUN grep -v '^\.$' requirements.txt > /tmp/deps.txt && pip install -r /tmp/deps.txt

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY channels ./channels
COPY config ./config
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 chatlane \
    && mkdir -p /data \
    && chown chatlane /data

USER chatlane
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8080\")}/healthz', timeout=4)"
CMD ["chatlane", "serve"]
