"""The recommendation app: personalized and similar items, click tracking, the homepage module.

``create_app(settings)`` (FastAPI) or ``nrtrec app``. It reads user vectors from the user-vector
store, searches the catalogue through the gateway, and publishes clicks and impressions to Kafka.
"""

from nrtrec.recommender_app.app import create_app

__all__ = ["create_app"]
