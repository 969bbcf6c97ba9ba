from bench.recommender_app.main import cli

cli()
