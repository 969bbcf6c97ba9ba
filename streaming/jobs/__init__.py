"""PyFlink job scripts, submitted with ``bin/flink run -py`` (see ``nrtrec.streaming.submit``)."""
