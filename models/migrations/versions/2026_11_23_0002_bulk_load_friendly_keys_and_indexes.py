"""bulk-load friendly keys and indexes

Why: a row-level foreign key checks and locks its parent row (FOR KEY SHARE) once per
inserted row: 12 of the 16 seconds of a million-party target import. The per-party tables
are only written by set-based SQL joined to their parents, so they drop those keys and keep
ON DELETE CASCADE's meaning through statement-level triggers on the parent tables.
The index on party.kind goes too: five values over millions of rows, never chosen by the
planner, and 0.6 s of every million-party import.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 15:14:40.254559
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

CASCADES = {
    "party": "cascade_party_delete",
    "contact": "cascade_contact_delete",
    "operation": "cascade_operation_delete",
    "step": "cascade_step_delete",
}
# TRUNCATE fires no delete trigger: a truncated parent empties its per-party tables too
# (with DELETE: a TRUNCATE listing those tables as well may be running)
TRUNCATED = {
    "party": ("operation_target", "operation_target_contact", "step_target", "step_target_contact"),
    "contact": ("operation_target_contact", "step_target_contact"),
    "operation": ("operation_target", "operation_target_contact", "step_target", "step_target_contact"),
    "step": ("step_target", "step_target_contact"),
}
CASCADE_BODIES = {
    "party": """
        delete from operation_target where party_id in (select id from deleted);
        delete from operation_target_contact where party_id in (select id from deleted);
        delete from step_target where party_id in (select id from deleted);
        delete from step_target_contact where party_id in (select id from deleted);""",
    "contact": """
        delete from operation_target_contact where contact_id in (select id from deleted);
        delete from step_target_contact where contact_id in (select id from deleted);""",
    "operation": """
        delete from operation_target where operation_id in (select id from deleted);
        delete from operation_target_contact where operation_id in (select id from deleted);
        delete from step_target where operation_id in (select id from deleted);""",
    "step": """
        delete from step_target where step_id in (select id from deleted);
        delete from step_target_contact where step_id in (select id from deleted);""",
}


def upgrade() -> None:
    op.drop_index("ix_party_kind", table_name="party")
    op.drop_constraint(op.f('fk_operation_target_operation_id_operation'), 'operation_target', type_='foreignkey')
    op.drop_constraint(op.f('fk_operation_target_party_id_party'), 'operation_target', type_='foreignkey')
    op.drop_constraint(op.f('fk_operation_target_contact_operation_id_operation'), 'operation_target_contact', type_='foreignkey')
    op.drop_constraint(op.f('fk_operation_target_contact_contact_id_contact'), 'operation_target_contact', type_='foreignkey')
    op.drop_constraint(op.f('fk_operation_target_contact_party_id_party'), 'operation_target_contact', type_='foreignkey')
    op.drop_constraint(op.f('fk_step_target_operation_id_operation'), 'step_target', type_='foreignkey')
    op.drop_constraint(op.f('fk_step_target_party_id_party'), 'step_target', type_='foreignkey')
    op.drop_constraint(op.f('fk_step_target_step_id_step'), 'step_target', type_='foreignkey')
    op.drop_constraint(op.f('fk_step_target_contact_step_id_step'), 'step_target_contact', type_='foreignkey')
    op.drop_constraint(op.f('fk_step_target_contact_party_id_party'), 'step_target_contact', type_='foreignkey')
    op.drop_constraint(op.f('fk_step_target_contact_contact_id_contact'), 'step_target_contact', type_='foreignkey')
    for parent, function in CASCADES.items():
        op.execute(f"""
            create function {function}() returns trigger language plpgsql as $$
            begin
                {CASCADE_BODIES[parent]}
                return null;
            end $$""")
        op.execute(f"""
            create trigger {function} after delete on {parent}
            referencing old table as deleted for each statement execute function {function}()""")
        op.execute(f"""
            create function {function}_all() returns trigger language plpgsql as $$
            begin
                {" ".join(f"delete from {table};" for table in TRUNCATED[parent])}
                return null;
            end $$""")
        op.execute(f"create trigger {function}_all after truncate on {parent} "
                   f"for each statement execute function {function}_all()")


def downgrade() -> None:
    op.create_index("ix_party_kind", "party", ["kind"], unique=False)
    for parent, function in CASCADES.items():
        op.execute(f"drop trigger {function}_all on {parent}")
        op.execute(f"drop function {function}_all()")
        op.execute(f"drop trigger {function} on {parent}")
        op.execute(f"drop function {function}()")
    op.create_foreign_key(op.f('fk_step_target_contact_contact_id_contact'), 'step_target_contact', 'contact', ['contact_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key(op.f('fk_step_target_contact_party_id_party'), 'step_target_contact', 'party', ['party_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key(op.f('fk_step_target_contact_step_id_step'), 'step_target_contact', 'step', ['step_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key(op.f('fk_step_target_step_id_step'), 'step_target', 'step', ['step_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key(op.f('fk_step_target_party_id_party'), 'step_target', 'party', ['party_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key(op.f('fk_step_target_operation_id_operation'), 'step_target', 'operation', ['operation_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key(op.f('fk_operation_target_contact_party_id_party'), 'operation_target_contact', 'party', ['party_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key(op.f('fk_operation_target_contact_contact_id_contact'), 'operation_target_contact', 'contact', ['contact_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key(op.f('fk_operation_target_contact_operation_id_operation'), 'operation_target_contact', 'operation', ['operation_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key(op.f('fk_operation_target_party_id_party'), 'operation_target', 'party', ['party_id'], ['id'], ondelete='CASCADE')
    op.create_foreign_key(op.f('fk_operation_target_operation_id_operation'), 'operation_target', 'operation', ['operation_id'], ['id'], ondelete='CASCADE')
