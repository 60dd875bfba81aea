"""a package's own notification texts

Why: a head office words the e-mails of a package itself (published, order to review, decision,
cancellation, list to approve, reminder, report); the templates, checked when the spec is
applied, are kept with the package: {notice name: Jinja2 template}.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 00:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("package", sa.Column("notices", JSONB(), server_default="{}", nullable=False))


def downgrade() -> None:
    op.drop_column("package", "notices")
