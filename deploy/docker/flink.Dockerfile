# Flink with Python, the Kafka connector and nrtrec itself, the same versions the local runner
# pins. The jobs' Python runs inside the TaskManagers, so they need nrtrec's packages there;
# the job scripts are at /opt/nrtrec/streaming/jobs/ (deploy/kubernetes names them).
FROM flink:2.2.1-java17
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir apache-flink==2.2.1
ENV PATH=/opt/venv/bin:$PATH
RUN wget -q -P /opt/flink/lib \
    https://repo1.maven.org/maven2/org/apache/flink/flink-sql-connector-kafka/5.0.0-2.2/flink-sql-connector-kafka-5.0.0-2.2.jar
COPY . /opt/nrtrec
RUN pip install --no-cache-dir /opt/nrtrec
