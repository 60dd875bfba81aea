"""Kinds whose parties are processed by people: statuses come from `status set` or imports.

The e-mail, mailing and fax kinds are registered here as manual until their channels exist,
so an operation using them runs its other steps; their parties wait as `to_process`.
"""

from tasks.registry import StepKind, register

for name in ("phoning", "phoning_contact", "other", "emailing", "mass_emailing",
             "document_mailing", "label_mailing", "faxing"):
    register(StepKind(name=name, run=None, automated=False))
