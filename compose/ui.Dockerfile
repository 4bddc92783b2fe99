# syntax=docker/dockerfile:1
# The Streamlit UI's image for docker-compose.yml: Python with the requirements of this
# project's `ui` extra (streamlit, altair, pandas, httpx, numpy, soundfile), read from
# pyproject.toml. The UI talks to the service over HTTP only (ASR_URL) and imports nothing
# from serve_app: no Ray, no model, not even the project's package.
#
# The build context is the repository, whose .dockerignore lets only pyproject.toml,
# README.md and serve_app/ in (for the service's image); this one copies pyproject.toml alone.
# docker-compose.yml mounts ui/ itself read-only at /opt/vi-asr/ui.
FROM python:3.11.13-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /opt/vi-asr
COPY pyproject.toml /tmp/ui-build/
RUN python -c 'import tomllib; p = tomllib.load(open("/tmp/ui-build/pyproject.toml", "rb")); \
        print(*p["project"]["optional-dependencies"]["ui"], sep="\n")' \
        > /tmp/ui-build/requirements.txt \
    && pip install --no-cache-dir -r /tmp/ui-build/requirements.txt \
    && rm -rf /tmp/ui-build \
    && useradd --uid 1000 --no-create-home --home-dir /tmp ui
USER 1000
EXPOSE 8501
HEALTHCHECK --interval=15s --timeout=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]
# Run from /opt/vi-asr: `python -m` puts the working directory on sys.path, so `ui.*` imports
# from the mounted folder.
CMD ["python", "-m", "streamlit", "run", "ui/app.py", "--server.address=0.0.0.0", \
     "--server.port=8501", "--server.headless=true", "--browser.gatherUsageStats=false", \
     "--client.toolbarMode=viewer"]
