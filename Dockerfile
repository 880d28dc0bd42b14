# The reactor worker as a container. Build your image on it with your handlers:
#
#   FROM reactor
#   COPY worker.py /app/
#   ENV REACTOR_APP=worker:app
#
# and run it with SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY set (docs/deploy.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 reactor
WORKDIR /app

# The runtime dependencies first, read from pyproject.toml alone, so this layer is rebuilt only
# when they change, not on every change to the code. No dev extras.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt

# Then reactor itself, leaving the dependencies as they are.
COPY README.md ./
COPY sql ./sql
COPY reactor ./reactor
RUN pip install --no-cache-dir --no-deps .

USER reactor
EXPOSE 8080
# Exec form below, so SIGTERM reaches the worker itself: it stops claiming, lets running jobs
# finish within REACTOR_GRACE_SECONDS and hands the rest back.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('REACTOR_HEALTH_PORT', '8080'), timeout=4)"]
# `docker run IMAGE module:app`, or REACTOR_APP=module:app with no argument.
ENTRYPOINT ["reactor", "run"]
CMD []
