# nrtrec's own services (query nodes, gateway; jobs and the app as they land).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends g++ default-jre-headless \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir .
