"""`other`: a manual action; its statuses are set by hand (`status set`) or by an import."""

from campflow.core.kinds import StepKind, register

register(StepKind(name="other", run=None, automated=False))
