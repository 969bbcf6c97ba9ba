"""The shared ground every nrtrec package stands on: settings, logs, web helpers, Kafka helpers,
data sets. Imports nothing of nrtrec's but ``schemas``."""
