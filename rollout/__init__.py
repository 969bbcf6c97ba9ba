"""The model lifecycle across services: roll a new encoder version out, retire an old one.

One module per workflow (``roll_out``, ``retire``), the user-store passes both make
(``users``), and where a rollout stands (``journal``). Above the services: it drives Triton
(``inference.lifecycle``), the query API, the bulk backfill and the user store.
"""

from nrtrec.rollout.errors import RolloutError
from nrtrec.rollout.retire import RetireReport, retire
from nrtrec.rollout.roll_out import RolloutReport, roll_out

__all__ = ["RetireReport", "RolloutError", "RolloutReport", "retire", "roll_out"]
