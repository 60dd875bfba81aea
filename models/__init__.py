"""SQLAlchemy models, spec schemas and Alembic migrations of campflow."""

from models.accounts import Account, AuditEvent
from models.base import Base
from models.catalog import (
    Collaborator,
    CustomField,
    EntityType,
    EventCode,
    Family,
    FieldAlias,
    Question,
    Questionnaire,
    State,
)
from models.network import (
    Distribution,
    DistributionRule,
    Entity,
    LocalApproval,
    LocalApprovalContact,
    LocalApprovalParty,
    Order,
    OrderEvent,
    Package,
    PackageAudience,
)
from models.operation import Condition, Folder, Operation, Route, Step
from models.outbox import Outbox
from models.party import Contact, Party
from models.targeting import (
    Answer,
    Event,
    OperationTarget,
    OperationTargetContact,
    StepTarget,
    StepTargetContact,
)

__all__ = [
    "Account",
    "AuditEvent",
    "Distribution",
    "DistributionRule",
    "Entity",
    "LocalApproval",
    "LocalApprovalContact",
    "LocalApprovalParty",
    "Order",
    "OrderEvent",
    "Package",
    "PackageAudience",
    "Answer",
    "Base",
    "Collaborator",
    "Condition",
    "Contact",
    "CustomField",
    "EntityType",
    "Event",
    "EventCode",
    "Family",
    "FieldAlias",
    "Folder",
    "Operation",
    "OperationTarget",
    "OperationTargetContact",
    "Outbox",
    "Party",
    "Question",
    "Questionnaire",
    "Route",
    "State",
    "Step",
    "StepTarget",
    "StepTargetContact",
]
