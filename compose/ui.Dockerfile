# syntax=docker/dockerfile:1
# The Streamlit UI's image for docker-compose.yml: Python with this project's core and its
# `ui` extra (streamlit, altair, pandas, httpx). The UI talks to the service over HTTP only
# (ASR_URL); no Ray, no model.
#
# The build context is the repository, whose .dockerignore lets only pyproject.toml,
# README.md and serve_app/ in (ui/results.py imports serve_app.formats): docker-compose.yml
# mounts ui/ itself read-only at /opt/vi-asr/ui.
FROM python:3.11.13-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /opt/vi-asr
COPY pyproject.toml README.md ./
COPY serve_app ./serve_app
# Installed, then the sources removed: the package lives in site-packages.
RUN pip install --no-cache-dir '.[ui]' \
    && rm -rf /opt/vi-asr/pyproject.toml /opt/vi-asr/README.md /opt/vi-asr/serve_app \
    && useradd --uid 1000 --no-create-home --home-dir /tmp ui
USER 1000
EXPOSE 8501
HEALTHCHECK --interval=15s --timeout=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]
# ui/app.py puts /opt/vi-asr on sys.path, so `ui.*` imports work from the mounted folder.
CMD ["streamlit", "run", "ui/app.py", "--server.address=0.0.0.0", "--server.port=8501", \
     "--server.headless=true", "--browser.gatherUsageStats=false", "--client.toolbarMode=viewer"]
