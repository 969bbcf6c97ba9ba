"""What a rollout or a retire raises: the step that could not be done, and why."""


class RolloutError(Exception):
    """A step of ``nrtrec models rollout`` or ``retire`` could not be done; rerun to resume."""
