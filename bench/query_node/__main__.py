"""``python -m bench.query_node``: see ``bench.query_node.main``."""

from bench.query_node.main import app

if __name__ == "__main__":
    app()
