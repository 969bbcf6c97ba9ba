"""What nrtrec's HTTP services share: the ``{error, detail}`` answers and request timing.

The query node, the gateway and the recommender app each install these; none of them imports
another service's internals for it.
"""
